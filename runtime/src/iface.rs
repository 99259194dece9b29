//! Interfaces are named per network namespace: every container has its own
//! `eth0`. An interface is identified by its namespace's cookie and its
//! ifindex, both read in the calling thread's namespace.
use crate::{
    error::{Error, Result},
    sys,
};

/// An interface, as seen from the calling thread's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
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

    /// Name of the interface's state directory under the bpffs root.
    /// (bpffs refuses names with dots; these have none.)
    pub fn dir_name(&self) -> String {
        dir_name(self.netns_cookie, self.ifindex)
    }
}

/// `ns<cookie>_if<ifindex>`.
pub fn dir_name(netns_cookie: u64, ifindex: u32) -> String {
    format!("ns{netns_cookie}_if{ifindex}")
}

/// Parses a state directory name back into (netns cookie, ifindex).
pub fn parse_dir_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("ns")?;
    let (cookie, ifindex) = rest.split_once("_if")?;
    Some((cookie.parse().ok()?, ifindex.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_round_trip() {
        assert_eq!(parse_dir_name(&dir_name(4096, 7)), Some((4096, 7)));
        assert_eq!(parse_dir_name("ns12_ifx"), None);
        assert_eq!(parse_dir_name("other"), None);
    }
}
