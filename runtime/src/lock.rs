//! The interface lock: an `flock` on the interface's bpffs state directory.
//!
//! Every change to an interface's state happens under the exclusive lock;
//! readers take it shared and so see a consistent picture. The kernel drops
//! an flock when its holder dies, so a crashed client never wedges others.
//!
//! An upgrade swaps the directory at the interface's path for a new one
//! (docs/design.md, "Upgrade") while others may wait on the old one's lock:
//! a lock counts only if, once taken, its directory is still the one at the
//! path; otherwise it is taken again on the one there now.
use std::{fs::File, os::unix::fs::MetadataExt as _, path::Path};

use fs2::FileExt;

use crate::error::{Error, Result};

/// A held lock; released on drop.
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Blocks until the exclusive lock on `dir` is ours.
    pub fn exclusive(dir: &Path) -> Result<Self> {
        Self::take(dir, FileExt::lock_exclusive)
    }

    /// Wraps a file whose lock the caller has just taken.
    pub(crate) fn from_locked(file: File) -> Self {
        Self { file }
    }

    /// Blocks until a shared lock on `dir` is ours.
    pub fn shared(dir: &Path) -> Result<Self> {
        Self::take(dir, FileExt::lock_shared)
    }

    fn take(dir: &Path, lock: fn(&File) -> std::io::Result<()>) -> Result<Self> {
        loop {
            let file = open(dir)?;
            lock(&file).map_err(|e| Error::io(format!("locking {}", dir.display()), e))?;
            if still_at(&file, dir) {
                return Ok(Self { file });
            }
            // Swapped while we waited: lock the directory there now.
        }
    }
}

/// Is `file` (an open directory) still the one at `dir`? A directory
/// removed meanwhile counts as still there: the caller finds its pins gone.
fn still_at(file: &File, dir: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(dir)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => true,
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
