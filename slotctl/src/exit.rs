//! slotctl's exit statuses: one per class of failure, so that a script can
//! tell "not attached" from "no permission" from "bad input" from
//! "conflict" without reading the message. Mapped from the library's
//! [`ErrorKind`] here and nowhere else.
use std::sync::LazyLock;

use slots_runtime::ErrorKind;

/// An exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok,
    /// Anything else: the environment (bpffs not mounted), file system
    /// errors.
    Failure,
    /// A usage error: unknown command or option, a value out of its range.
    Usage,
    /// The request or the object is wrong.
    BadInput,
    /// The interface, the dispatcher on it, or the claim is not there.
    NotFound,
    /// Not privileged.
    Permission,
    /// Something is in the way.
    Conflict,
    /// The kernel refused.
    KernelRefused,
    /// The interface's state is damaged or not ours.
    Damaged,
}

impl Exit {
    /// Every status, in code order.
    pub const ALL: [Exit; 9] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::BadInput,
        Exit::NotFound,
        Exit::Permission,
        Exit::Conflict,
        Exit::KernelRefused,
        Exit::Damaged,
    ];

    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::BadInput => 3,
            Exit::NotFound => 4,
            Exit::Permission => 5,
            Exit::Conflict => 6,
            Exit::KernelRefused => 7,
            Exit::Damaged => 8,
        }
    }

    /// What it means, for `--help`, the man page and the README.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "success",
            Exit::Failure => "any other failure: bpffs not mounted, a file system error",
            Exit::Usage => "usage: an unknown command or option, a value out of its range",
            Exit::BadInput => {
                "bad input: the object (not BPF, no XDP program, no such program), a claim name, a slot number, a file given to apply"
            }
            Exit::NotFound => {
                "not found: no such interface, the dispatcher not attached, no such claim"
            }
            Exit::Permission => {
                "permission: a capability missing (CAP_BPF; to change state also CAP_NET_ADMIN and CAP_SYS_ADMIN)"
            }
            Exit::Conflict => {
                "conflict or busy: a foreign XDP program or dispatcher, a name taken, slots full or claimed, a claim held by another process"
            }
            Exit::KernelRefused => {
                "kernel refused: the verifier, an extension or tail call, a backend this kernel lacks"
            }
            Exit::Damaged => {
                "damaged state: the interface's state is not ours or is damaged (status still shows the others)"
            }
        }
    }

    /// The status of a library error.
    pub fn of(kind: ErrorKind) -> Exit {
        match kind {
            ErrorKind::BadInput => Exit::BadInput,
            ErrorKind::NotFound => Exit::NotFound,
            ErrorKind::Permission => Exit::Permission,
            ErrorKind::Conflict => Exit::Conflict,
            ErrorKind::KernelRefused => Exit::KernelRefused,
            ErrorKind::Damaged => Exit::Damaged,
            _ => Exit::Failure,
        }
    }
}

/// What every refusal does, whatever its status.
pub const REFUSAL: &str =
    "A refusal prints one line on stderr (what failed, why, what to do) and changes nothing.";

/// The exit statuses as `--help` lists them.
pub static HELP: LazyLock<String> = LazyLock::new(|| {
    let mut s = String::from("Exit status:\n");
    for e in Exit::ALL {
        s.push_str(&format!("  {}  {}\n", e.code(), e.meaning()));
    }
    s.push_str(REFUSAL);
    s
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table says what `--help` says, status by status.
    #[test]
    fn the_readme_lists_every_exit_status() {
        let readme = include_str!("../../README.md");
        for e in Exit::ALL {
            let row = format!("| {} | {} |", e.code(), e.meaning());
            assert!(readme.contains(&row), "README lacks {row:?}");
        }
    }

    #[test]
    fn codes_are_distinct_and_in_order() {
        for (i, e) in Exit::ALL.iter().enumerate() {
            assert_eq!(e.code(), i as i32);
        }
    }
}
