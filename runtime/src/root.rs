//! The state root: the bpffs directory under which each interface has its
//! state directory.
use std::path::Path;

use crate::{
    error::{Error, Result},
    privilege::{self, Access},
    sys,
};

/// Checks privileges, that `root` is on bpffs (or can be made there), and
/// creates it (to change state; a reader finds nothing in a root that is
/// not there).
pub(crate) fn ensure(root: &Path, access: Access) -> Result<()> {
    // Checked first: an unprivileged user must not create (and so own)
    // the state root, even where /sys/fs/bpf is world-writable.
    privilege::check(
        access,
        match access {
            Access::Read => "reading the XDP dispatchers' state",
            Access::Manage => "managing XDP dispatchers",
        },
    )?;
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if !sys::is_bpffs(&probe) {
        return Err(Error::BpffsNotMounted { path: probe });
    }
    if !root.exists() && access == Access::Manage {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    }
    Ok(())
}
