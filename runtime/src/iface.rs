//! Interfaces are named per network namespace: every container has its own
//! `eth0`. An interface is identified by its namespace's cookie and its
//! ifindex, both read in the calling thread's namespace.
use crate::{
    error::{Error, Result},
    sys,
};

/// The hook a dispatcher sits on; part of the state directory's name so
/// that dispatchers of other hooks on the same interface never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// XDP.
    Xdp,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        (s == Hook::Xdp.as_str()).then_some(Hook::Xdp)
    }
}

/// An interface, as seen from the calling thread's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Cookie of its network namespace.
    pub netns_cookie: u64,
}

impl Iface {
    /// Resolves `name` in the current network namespace.
    pub fn resolve(name: &str) -> Result<Self> {
        let ifindex =
            sys::if_index(name).ok_or_else(|| Error::NoSuchInterface { name: name.into() })?;
        let netns_cookie = sys::netns_cookie()
            .map_err(|e| Error::io("reading the network namespace cookie", e))?;
        Ok(Self {
            name: name.into(),
            ifindex,
            netns_cookie,
        })
    }

    /// Name of the interface's XDP state directory under the bpffs root.
    /// (bpffs refuses names with dots; these have none.)
    pub fn dir_name(&self) -> String {
        dir_name(Hook::Xdp, self.netns_cookie, self.ifindex)
    }
}

/// `<hook>_ns<cookie>_if<ifindex>`.
pub(crate) fn dir_name(hook: Hook, netns_cookie: u64, ifindex: u32) -> String {
    format!("{}_ns{netns_cookie}_if{ifindex}", hook.as_str())
}

/// Parses a state directory name back into (hook, netns cookie, ifindex).
pub(crate) fn parse_dir_name(name: &str) -> Option<(Hook, u64, u32)> {
    let (hook, rest) = name.split_once('_')?;
    let rest = rest.strip_prefix("ns")?;
    let (cookie, ifindex) = rest.split_once("_if")?;
    Some((
        Hook::parse(hook)?,
        cookie.parse().ok()?,
        ifindex.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_round_trip() {
        assert_eq!(
            parse_dir_name(&dir_name(Hook::Xdp, 4096, 7)),
            Some((Hook::Xdp, 4096, 7))
        );
        assert_eq!(parse_dir_name("xdp_ns12_ifx"), None);
        assert_eq!(parse_dir_name("xdp_ns12_if3_new77"), None);
        assert_eq!(parse_dir_name("tc_ns12_if3"), None);
        assert_eq!(parse_dir_name("other"), None);
    }
}
