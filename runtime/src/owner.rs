//! Who holds a claim: a process, named by pid and start time (a pid alone
//! can be reused). Used for display and for refusing to release another
//! holder's claim; the release itself is the kernel's job.
//!
//! The pid is the one the claimer had in its own pid namespace (a
//! container's first process is 1 there). The namespace is recorded too
//! (its inode, in the origins entry), and a holder is found from any
//! other namespace that sees it by its `NSpid` (the last is the pid in its
//! own namespace) and start time (ticks since boot, the same in every pid
//! namespace).
use std::os::unix::fs::MetadataExt as _;

use crate::record::Owner;

/// The calling process.
pub(crate) fn current() -> Owner {
    Owner {
        pid: std::process::id(),
        start: stat_start("/proc/self/stat").unwrap_or(0),
    }
}

/// Is the process still running? True when this pid namespace sees it,
/// whether it is in this namespace or a child one (a container's).
pub(crate) fn alive(o: Owner) -> bool {
    o.pid != 0 && (start_time(o.pid).is_some_and(|s| s == o.start) || find(o, None).is_some())
}

/// The inode of `pid`'s pid namespace.
pub(crate) fn pidns(pid: u32) -> Option<u64> {
    ns_inode(&format!("/proc/{pid}/ns/pid"))
}

/// The inode of this process's pid namespace (through /proc/self, which
/// is right even where /proc belongs to another pid namespace).
pub(crate) fn own_pidns() -> Option<u64> {
    ns_inode("/proc/self/ns/pid")
}

fn ns_inode(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A claim's holder as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Its pid in the caller's pid namespace.
    pub pid: u32,
    /// Its cgroup (v2 path), where readable.
    pub cgroup: Option<String>,
}

/// The running process `o` (of pid namespace `ns`, if known) as this pid
/// namespace sees it, if it does.
pub(crate) fn seen(o: Owner, ns: Option<u64>) -> Option<Seen> {
    if o.pid == 0 {
        return None;
    }
    let ours = own_pidns();
    // Another process's namespace is unreadable without ptrace access
    // (reduced capabilities): its pid and start time then decide.
    let here = (ns.is_none() || ns == ours)
        && start_time(o.pid) == Some(o.start)
        && pidns(o.pid).is_none_or(|p| ns.is_none_or(|n| n == p));
    let pid = if here { Some(o.pid) } else { find(o, ns) }?;
    Some(Seen {
        pid,
        cgroup: cgroup(pid),
    })
}

/// Searches /proc for the process whose pid in its own namespace (`ns`,
/// if known) is `o.pid` and whose start time is `o.start`.
fn find(o: Owner, ns: Option<u64>) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.filter_map(|e| e.ok()).find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if start_time(pid) != Some(o.start) || ns_pid(pid) != Some(o.pid) {
            return None;
        }
        if ns.is_some() && pidns(pid) != ns {
            return None;
        }
        Some(pid)
    })
}

/// `pid`'s pid in its own (innermost) pid namespace: the last of `NSpid`.
fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// `pid`'s cgroup v2 path (`0::/...`), where readable.
fn cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Field 22 of /proc/<pid>/stat; none for a process that has exited and
/// not been reaped yet (a zombie: its files, so its claim's fds, are
/// closed already).
fn start_time(pid: u32) -> Option<u64> {
    stat_start(&format!("/proc/{pid}/stat"))
}

/// [`start_time`] of the process whose stat file is `path`.
fn stat_start(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parens: skip past its
    // last ')'; the field after it is field 3, the state.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
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

    #[test]
    fn we_are_seen_as_ourselves() {
        let me = current();
        let ns = own_pidns();
        assert_eq!(ns, pidns(me.pid));
        assert!(ns.is_some());
        let s = seen(me, ns).expect("a running process is seen");
        assert_eq!(s.pid, me.pid);
        assert!(s.cgroup.is_some_and(|c| c.starts_with('/')));
        assert_eq!(seen(me, Some(1)), None, "not in another namespace");
    }
}
