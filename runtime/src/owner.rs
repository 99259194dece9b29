//! Who holds a claim: a process, named by pid and start time (a pid alone
//! can be reused). Used for display and for refusing to release another
//! holder's claim; the release itself is the kernel's job.

/// (pid, start time in clock ticks since boot) of the calling process.
pub fn current() -> (u32, u64) {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0))
}

/// Is process `pid`, started at `start`, still running (as seen from our
/// pid namespace)?
pub fn alive(pid: u32, start: u64) -> bool {
    pid != 0 && start_time(pid).is_some_and(|s| s == start)
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
    #[test]
    fn we_are_alive() {
        let (pid, start) = super::current();
        assert!(start > 0);
        assert!(super::alive(pid, start));
        assert!(!super::alive(pid, start + 1));
    }
}
