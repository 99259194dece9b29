//! Where a claim's maps pinned by name go (`LIBBPF_PIN_BY_NAME`, or the
//! legacy `pinning` field), and what status says about a claim's maps.
//!
//! By default they are the claim's own: under its interface's state
//! directory, `<dir>/maps/<claim>/<map>` (see docs/design.md, "Maps
//! pinned by name"), so two namespaces, two interfaces or two claims never
//! share one, and they are removed with the claim. A claim may ask for
//! libbpf's place instead, the top of bpffs (shared with every program
//! that pins a map of that name), or a directory of its own choosing;
//! those pins are never removed by the runtime.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    error::{Error, Result},
    pin,
};

/// Where libbpf (and aya) pin maps by name unless told otherwise.
pub const SHARED_DIR: &str = "/sys/fs/bpf";

/// Where the maps a claim's program pins by name go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapPins {
    /// The claim's own directory under its interface's state; removed with
    /// the claim. A replace keeps them: the new program reuses the maps its
    /// predecessor pinned (libbpf's reuse by name).
    #[default]
    Scoped,
    /// libbpf's place, [`SHARED_DIR`]: shared with every program, in every
    /// namespace, that pins a map of the same name; left in place.
    Shared,
    /// A directory of the caller's (on bpffs): shared with whoever uses it;
    /// left in place.
    Dir(PathBuf),
}

impl MapPins {
    /// The policy's name in output: `scoped`, `shared` or `dir`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scoped => "scoped",
            Self::Shared => "shared",
            Self::Dir(_) => "dir",
        }
    }

    /// The directory pins go into, for a claim named `claim` on the
    /// interface whose state directory is `state_dir`.
    pub(crate) fn dir(&self, state_dir: &Path, claim: &str) -> PathBuf {
        match self {
            Self::Scoped => scoped_dir(state_dir, claim),
            Self::Shared => PathBuf::from(SHARED_DIR),
            Self::Dir(d) => d.clone(),
        }
    }
}

/// The scoped pin directory of the claim `claim`. bpffs refuses names
/// holding a '.', which claim names may hold and '@' never: each '.' is
/// written '@', so distinct claims keep distinct directories.
pub(crate) fn scoped_dir(state_dir: &Path, claim: &str) -> PathBuf {
    state_dir.join(pin::MAPS).join(claim.replace('.', "@"))
}

/// The claim name a scoped directory belongs to.
fn claim_of(dir_name: &str) -> String {
    dir_name.replace('@', ".")
}

/// Checks a claim's map pin policy before anything changes: a directory of
/// the caller's must be on bpffs (the nearest part of it that exists), and
/// is made absolute so that the record says where it is.
pub(crate) fn check(pins: &MapPins) -> Result<MapPins> {
    let MapPins::Dir(dir) = pins else {
        return Ok(pins.clone());
    };
    let not_bpffs = || Error::MapPinDirNotBpffs {
        dir: dir.display().to_string(),
    };
    let abs = std::path::absolute(dir).map_err(|_| not_bpffs())?;
    let existing = abs.ancestors().find(|a| a.exists()).ok_or_else(not_bpffs)?;
    if !crate::sys::is_bpffs(existing) {
        return Err(not_bpffs());
    }
    Ok(MapPins::Dir(abs))
}

/// Makes the directory a claim's program pins its maps into.
pub(crate) fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::io(
            format!("creating the map pin directory {}", dir.display()),
            e,
        )
    })
}

/// Removes the scoped map pins of every claim not in `live` (claim names
/// of the interface's records that are not free): a claim released,
/// collected, or that died before its record was written. Returns the
/// names whose pins went.
pub(crate) fn sweep(state_dir: &Path, live: &HashSet<String>) -> Result<Vec<String>> {
    let maps = state_dir.join(pin::MAPS);
    let entries = match std::fs::read_dir(&maps) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", maps.display()), e)),
    };
    let mut gone = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let claim = claim_of(&entry.file_name().to_string_lossy());
        if live.contains(&claim) {
            continue;
        }
        let path = entry.path();
        std::fs::remove_dir_all(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        gone.push(claim);
    }
    // Only pins live in bpffs: the directory goes once it holds none.
    let _ = std::fs::remove_dir(&maps);
    Ok(gone)
}

/// A map a claim's program uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClaimMap {
    /// Its name: the pin's name when it is pinned, else the kernel's
    /// (cut to 15 bytes).
    pub name: String,
    /// Its kernel id (`bpftool map show id N`).
    pub id: u32,
    /// Where it is pinned by name, if it is.
    pub pin: Option<String>,
}

/// Every map pinned in `dir` (a claim's own directory), when the maps'
/// ids cannot be listed.
pub(crate) fn pinned_in(dir: &Path) -> Vec<ClaimMap> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut maps: Vec<ClaimMap> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let id = aya::maps::MapInfo::from_pin(e.path()).ok()?.id();
            Some(ClaimMap {
                name: e.file_name().to_string_lossy().into_owned(),
                id,
                pin: Some(e.path().display().to_string()),
            })
        })
        .collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    maps
}

/// The map ids of each program in `progs`.
pub(crate) fn map_ids(progs: &HashSet<u32>) -> HashMap<u32, Vec<u32>> {
    let mut out = HashMap::new();
    for info in aya::programs::loaded_programs().filter_map(|i| i.ok()) {
        if progs.contains(&info.id())
            && let Ok(Some(ids)) = info.map_ids()
        {
            out.insert(info.id(), ids);
        }
    }
    out
}

/// The maps with ids `ids`, each with its pin in `pin_dir` (found by
/// name: the pin whose name starts with the kernel's name and that is
/// this very map).
pub(crate) fn describe(ids: &[u32], pin_dir: Option<&Path>) -> Vec<ClaimMap> {
    let pins: Vec<(String, PathBuf)> = pin_dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    ids.iter()
        .filter_map(|&id| {
            let info = aya::maps::MapInfo::from_id(id).ok()?;
            let kname = info.name_as_str().unwrap_or_default().to_string();
            let pinned = pins
                .iter()
                .filter(|(n, _)| {
                    !kname.is_empty()
                        && (n == &kname || (kname.len() >= 15 && n.starts_with(&kname)))
                })
                .find(|(_, p)| aya::maps::MapInfo::from_pin(p).is_ok_and(|i| i.id() == id));
            Some(match pinned {
                Some((n, p)) => ClaimMap {
                    name: n.clone(),
                    id,
                    pin: Some(p.display().to_string()),
                },
                None => ClaimMap {
                    name: kname,
                    id,
                    pin: None,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_dirs_are_distinct_and_dotless() {
        let d = Path::new("/sys/fs/bpf/xdp-slots/xdp_ns1_if2");
        let a = scoped_dir(d, "fw.v2");
        let b = scoped_dir(d, "fw_v2");
        assert_ne!(a, b);
        assert!(!a.file_name().unwrap().to_string_lossy().contains('.'));
        assert_eq!(claim_of(&a.file_name().unwrap().to_string_lossy()), "fw.v2");
        assert_eq!(a, d.join("maps/fw@v2"));
    }
}
