//! What each kind of operation needs of the process's capabilities, and
//! what it lacks, for errors that name them.
use crate::sys::{self, CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN};

/// A kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reading the pinned state (status, counters): CAP_BPF, to open
    /// pins and read maps. Without CAP_SYS_ADMIN the kernel's program
    /// list cannot be read (see `Status::programs_checked`).
    Read,
    /// Changing it: CAP_BPF (loading programs, maps), CAP_NET_ADMIN (XDP
    /// on an interface), CAP_SYS_ADMIN (extensions, program and map ids).
    Manage,
}

impl Access {
    /// The capabilities it needs, by bit.
    pub(crate) fn needs(self) -> &'static [u32] {
        match self {
            Self::Read => &[CAP_BPF],
            Self::Manage => &[CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN],
        }
    }
}

/// The capabilities' names.
pub(crate) fn names(caps: &[u32]) -> Vec<&'static str> {
    caps.iter()
        .map(|&c| match c {
            CAP_BPF => "CAP_BPF",
            CAP_NET_ADMIN => "CAP_NET_ADMIN",
            CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
            _ => "a capability",
        })
        .collect()
}

/// Does the effective set `eff` hold `cap`? CAP_SYS_ADMIN grants what
/// CAP_BPF does (kernels before 5.8 know only it).
fn has(eff: u64, cap: u32) -> bool {
    eff & (1 << cap) != 0 || (cap == CAP_BPF && eff & (1 << CAP_SYS_ADMIN) != 0)
}

/// What this process lacks of what `access` needs, and which of the three
/// capabilities it has.
pub(crate) fn missing(access: Access) -> (Vec<&'static str>, Vec<&'static str>) {
    let eff = sys::effective_caps();
    let lacks: Vec<u32> = access
        .needs()
        .iter()
        .copied()
        .filter(|&c| !has(eff, c))
        .collect();
    let all = [CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN];
    let have: Vec<u32> = all.into_iter().filter(|&c| eff & (1 << c) != 0).collect();
    (names(&lacks), names(&have))
}

/// Refuses `what` when the process lacks what `access` needs.
pub(crate) fn check(access: Access, what: &str) -> crate::Result<()> {
    if missing(access).0.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::not_privileged(what, access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_admin_grants_bpf() {
        assert!(has(1 << CAP_SYS_ADMIN, CAP_BPF));
        assert!(has(1 << CAP_BPF, CAP_BPF));
        assert!(!has(1 << CAP_NET_ADMIN, CAP_BPF));
        assert!(!has(1 << CAP_BPF, CAP_SYS_ADMIN));
    }
}
