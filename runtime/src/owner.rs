//! Who holds a claim: a process, named by pid and start time (a pid alone
//! can be reused). Used for display and for refusing to release another
//! holder's claim; the release itself is the kernel's job.
use crate::record::Owner;

/// The calling process.
pub(crate) fn current() -> Owner {
    let pid = std::process::id();
    Owner {
        pid,
        start: start_time(pid).unwrap_or(0),
    }
}

/// Is the process still running (as seen from our pid namespace)?
pub(crate) fn alive(o: Owner) -> bool {
    o.pid != 0 && start_time(o.pid).is_some_and(|s| s == o.start)
}

/// Field 22 of /proc/<pid>/stat.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parens: skip past its
    // last ')'; the field after it is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn we_are_alive() {
        let me = current();
        assert!(me.start > 0);
        assert!(alive(me));
        assert!(!alive(Owner {
            start: me.start + 1,
            ..me
        }));
    }
}
