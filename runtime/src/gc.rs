//! Dead state: the directories of dispatchers whose interface is gone (the
//! interface deleted, alone or with its network namespace), freed with
//! every pin in them so that the kernel frees the dispatcher, its maps, its
//! links and the programs of persistent claims (docs/design.md, "Dead
//! state").
//!
//! Runs under the root lock, which every creation and removal of an
//! interface directory takes: `Runtime::clean` (waiting for each dead
//! directory's lock) and every attach, and so every claim (skipping a dead
//! directory whose lock another process holds).
use std::path::{Path, PathBuf};

use fs2::FileExt as _;
use serde::Serialize;

use crate::{
    attach::{Dropped, claims_in, remove_dir},
    error::{Error, Result},
    iface::{self, Hook},
    lock::DirLock,
    objects::Objects as _,
    pin,
    state::State,
    sys,
};

/// Why a state directory is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Dead {
    /// The kernel reports the dispatcher's XDP link attached to no
    /// interface: the interface was deleted, alone or with its network
    /// namespace.
    InterfaceGone,
    /// The directory has no link pin: a detach or clean died after
    /// unpinning it, before removing the rest.
    Unlinked,
}

impl Dead {
    /// Why, in a few words.
    pub fn as_str(self) -> &'static str {
        match self {
            Dead::InterfaceGone => "its interface is gone",
            Dead::Unlinked => "its removal did not finish",
        }
    }
}

impl std::fmt::Display for Dead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Is the state directory `dir` dead, and why? Only a directory that is
/// ours (its `CONTROL` pin has our layout) or empty can be: pins someone
/// else put under a name like ours are never touched. A link pin the
/// kernel cannot read is not taken for dead either: that is damaged state,
/// for `detach --force`. (Removal takes `CONTROL` last, so a removal that
/// died half-way leaves it; see `attach::remove_dir`.)
pub(crate) fn dead(dir: &Path) -> Option<Dead> {
    let link = dir.join(pin::LINK);
    let why = if !link.exists() {
        Dead::Unlinked
    } else if let Ok(Some(0)) = sys::xdp_link_ifindex(&link) {
        Dead::InterfaceGone
    } else {
        return None;
    };
    let empty = std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_none());
    (empty || State::open(dir, "").is_ok()).then_some(why)
}

/// A dead state directory, freed.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Freed {
    /// The directory, now removed.
    pub dir: PathBuf,
    /// The interface's name, as recorded at attach (empty if unreadable).
    pub iface: String,
    /// Its index in its namespace.
    pub ifindex: u32,
    /// Cookie of its network namespace.
    pub netns_cookie: u64,
    /// Why it was dead.
    pub why: Dead,
    /// The claims that went with it.
    pub dropped: Dropped,
}

/// What [`crate::Runtime::clean`] did.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Cleaned {
    /// The dead directories freed.
    pub freed: Vec<Freed>,
}

/// Wait for a dead directory's lock, or skip it while another process
/// holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Block,
    Skip,
}

/// The interface name recorded in a state directory's `CONTROL`.
pub(crate) fn recorded_name(dir: &Path) -> Option<String> {
    let c = State::open(dir, "").ok()?.control().ok()?;
    let end = c
        .ifname
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(c.ifname.len());
    Some(String::from_utf8_lossy(&c.ifname[..end]).into_owned())
}

/// Every state directory under `root`: (path, netns cookie, ifindex), by
/// namespace and index.
pub(crate) fn state_dirs(root: &Path) -> Result<Vec<(PathBuf, u64, u32)>> {
    let entries =
        std::fs::read_dir(root).map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let (hook, cookie, ifindex) = iface::parse_dir_name(&e.file_name().to_string_lossy())?;
            (hook == Hook::Xdp).then(|| (e.path(), cookie, ifindex))
        })
        .collect();
    out.sort_by_key(|(_, c, i)| (*c, *i));
    Ok(out)
}

/// Frees the dead state directories under `root` for which `pick` says
/// yes. The caller holds the root lock. Each directory is freed under its
/// own exclusive lock, waited for or skipped as `wait` says; a crash
/// half-way leaves it without its link pin, dead still, for the next run.
pub(crate) fn collect_dead(
    root: &Path,
    wait: Wait,
    pick: impl Fn(&Path, u64) -> bool,
) -> Result<Vec<Freed>> {
    let mut freed = Vec::new();
    for (dir, netns_cookie, ifindex) in state_dirs(root)? {
        if !pick(&dir, netns_cookie) || dead(&dir).is_none() {
            continue;
        }
        let _lock = match wait {
            Wait::Block => DirLock::exclusive(&dir)?,
            Wait::Skip => match try_exclusive(&dir)? {
                Some(l) => l,
                None => continue,
            },
        };
        // Under the lock: still dead (a directory is never brought back,
        // but read again what is freed).
        let Some(why) = dead(&dir) else { continue };
        let iface = recorded_name(&dir).unwrap_or_default();
        let dropped = claims_in(&dir, &iface);
        // In passing (an attach) it is news; a clean reports it itself.
        let level = match wait {
            Wait::Skip => log::Level::Info,
            Wait::Block => log::Level::Debug,
        };
        log::log!(
            level,
            "freeing {} ({}, ifindex {ifindex}, namespace {netns_cookie}): {why}; {dropped}",
            dir.display(),
            if iface.is_empty() { "?" } else { &iface },
        );
        remove_dir(&dir)?;
        freed.push(Freed {
            dir,
            iface,
            ifindex,
            netns_cookie,
            why,
            dropped,
        });
    }
    Ok(freed)
}

/// The exclusive lock on `dir` if no other process holds a lock on it.
fn try_exclusive(dir: &Path) -> Result<Option<DirLock>> {
    let file =
        std::fs::File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    match file.try_lock_exclusive() {
        Ok(()) => Ok(Some(DirLock::from_locked(file))),
        Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => Ok(None),
        Err(e) => Err(Error::io(format!("locking {}", dir.display()), e)),
    }
}
