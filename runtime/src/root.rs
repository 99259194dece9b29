//! The state root: the bpffs directory under which each interface has its
//! state directory.
use std::path::Path;

use crate::{
    error::{Error, Result},
    sys,
};

/// Checks privileges, that `root` is on bpffs (or can be made there), and
/// creates it.
pub(crate) fn ensure(root: &Path) -> Result<()> {
    if !sys::is_privileged() {
        // Checked first: an unprivileged user must not create (and so own)
        // the state root, even where /sys/fs/bpf is world-writable.
        return Err(Error::NotPrivileged {
            what: "managing XDP dispatchers".into(),
        });
    }
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if !sys::is_bpffs(&probe) {
        return Err(Error::BpffsNotMounted { path: probe });
    }
    if !root.exists() {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    }
    Ok(())
}
