//! The interface lock: an `flock` on the interface's bpffs state directory.
//!
//! Every change to an interface's state happens under the exclusive lock;
//! readers take it shared and so see a consistent picture. The kernel drops
//! an flock when its holder dies, so a crashed client never wedges others.
use std::{fs::File, path::Path};

use fs2::FileExt;

use crate::error::{Error, Result};

/// A held lock; released on drop.
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Blocks until the exclusive lock on `dir` is ours.
    pub fn exclusive(dir: &Path) -> Result<Self> {
        let file = open(dir)?;
        FileExt::lock_exclusive(&file)
            .map_err(|e| Error::io(format!("locking {}", dir.display()), e))?;
        Ok(Self { file })
    }

    /// Wraps a file whose lock the caller has just taken.
    pub(crate) fn from_locked(file: File) -> Self {
        Self { file }
    }

    /// Blocks until a shared lock on `dir` is ours.
    pub fn shared(dir: &Path) -> Result<Self> {
        let file = open(dir)?;
        FileExt::lock_shared(&file)
            .map_err(|e| Error::io(format!("locking {}", dir.display()), e))?;
        Ok(Self { file })
    }
}

fn open(dir: &Path) -> Result<File> {
    File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}
