//! The whole node: every dispatcher under the state root, in any network
//! namespace, with the namespace it belongs to as far as it can be found
//! from here (`/run/netns` names, processes inside it).
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
};

use serde::Serialize;

use crate::{
    error::{Error, Result},
    gc,
    lock::DirLock,
    state::State,
    status::{self, Status},
    sys,
};

/// A network namespace, as found from the calling process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Namespace {
    /// Its cookie (never reused): the `ns<cookie>` of state directories.
    pub cookie: u64,
    /// Its name under `/run/netns` (`ip netns`), if it has one.
    pub name: Option<String>,
    /// A process inside it (the lowest pid, as the caller's pid namespace
    /// numbers it), if one was found.
    pub pid: Option<u32>,
    /// Is it the caller's own namespace?
    pub own: bool,
}

/// One dispatcher of the node.
#[derive(Debug)]
#[non_exhaustive]
pub struct NodeEntry {
    /// Its state directory.
    pub dir: PathBuf,
    /// Its interface's index in its namespace.
    pub ifindex: u32,
    /// Its interface's name as recorded at attach (`if<index>` if the
    /// state could not be read).
    pub iface: String,
    /// Its network namespace; only the cookie is known when the namespace
    /// was not found (gone, or reachable from no process or name here).
    pub namespace: Namespace,
    /// Why its state is dead, if it is (as [`Status::dead`], also known
    /// when the status could not be read).
    pub dead: Option<gc::Dead>,
    /// Its status, or why it could not be read.
    pub status: Result<Status>,
}

/// Where a namespace was seen: a `/run/netns` name or a process.
enum Seen {
    Name(String),
    Pid(u32),
}

/// A namespace file found: its path, its `/run/netns` name, a pid in it.
type Found = (PathBuf, Option<String>, Option<u32>);

/// Every network namespace this process can find, by cookie: those named
/// under `/run/netns` and those of running processes (`/proc/<pid>/ns/net`).
/// Each distinct namespace is entered once, in a thread of its own, to
/// read its cookie.
pub(crate) fn namespaces() -> HashMap<u64, Namespace> {
    // By namespace inode: what names it, and the lowest pid inside.
    let mut by_inode: BTreeMap<(u64, u64), Found> = BTreeMap::new();
    let mut seen = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.filter_map(|e| e.ok()) {
            seen.push((
                e.path(),
                Seen::Name(e.file_name().to_string_lossy().into_owned()),
            ));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        seen.extend(
            pids.into_iter()
                .map(|p| (PathBuf::from(format!("/proc/{p}/ns/net")), Seen::Pid(p))),
        );
    }
    for (path, how) in seen {
        // The namespace file itself (metadata follows the /proc link).
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        let entry = by_inode
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| (path, None, None));
        match how {
            Seen::Name(n) => {
                entry.1.get_or_insert(n);
            }
            Seen::Pid(p) => {
                entry.2.get_or_insert(p);
            }
        }
    }
    let own = sys::netns_cookie().ok();
    let mut out = HashMap::new();
    for (path, name, pid) in by_inode.into_values() {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(cookie) = sys::netns_cookie_of(&file) else {
            continue;
        };
        out.insert(
            cookie,
            Namespace {
                cookie,
                name,
                pid,
                own: Some(cookie) == own,
            },
        );
    }
    out
}

/// Every dispatcher under `root`, by namespace cookie and ifindex.
pub(crate) fn status(root: &std::path::Path) -> Result<Vec<NodeEntry>> {
    let dirs = gc::state_dirs(root)?;
    let found = if dirs.is_empty() {
        HashMap::new()
    } else {
        namespaces()
    };
    let mut out = Vec::new();
    for (dir, cookie, ifindex) in dirs {
        let iface = gc::recorded_name(&dir)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("if{ifindex}"));
        let status =
            DirLock::shared(&dir).and_then(|_lock| status::read(&State::open(&dir, &iface)?));
        // A directory removed since it was listed: gone, not an error.
        if matches!(&status, Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound)
        {
            continue;
        }
        out.push(NodeEntry {
            namespace: found.get(&cookie).cloned().unwrap_or(Namespace {
                cookie,
                ..Namespace::default()
            }),
            dead: gc::dead(&dir),
            dir,
            ifindex,
            iface,
            status,
        });
    }
    Ok(out)
}
