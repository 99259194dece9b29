//! A cpio archive in the "newc" format, the one the kernel unpacks as an
//! initramfs. Written here rather than with cpio(1) so that device nodes and
//! ownership need no privileges and the archive is the same on every run
//! (owner root, mtime 0, sorted).
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

enum Entry {
    Dir,
    File { src: Source, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// Entries by path (relative, no leading `/`); parents are added as
/// directories. Sorted order puts every directory before its contents.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn key(path: &str) -> String {
    path.trim_matches('/').to_string()
}

impl Archive {
    fn insert(&mut self, path: &str, entry: Entry) {
        let path = key(path);
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path, entry);
    }

    pub fn dir(&mut self, path: &str) {
        self.insert(path, Entry::Dir);
    }

    /// A regular file with the contents of `src` (symlinks followed).
    pub fn file(&mut self, path: &str, src: &Path, mode: u32) {
        self.insert(
            path,
            Entry::File {
                src: Source::Path(src.to_path_buf()),
                mode,
            },
        );
    }

    pub fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.insert(
            path,
            Entry::File {
                src: Source::Bytes(data.into()),
                mode,
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Entry::Symlink(target.to_string()));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.insert(path, Entry::CharDev { major, minor });
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&key(path))
    }

    pub fn write(&self, out: &mut impl Write) -> Result<()> {
        let mut ino = 1u32;
        for (path, entry) in &self.entries {
            ino += 1;
            match entry {
                Entry::Dir => header(out, ino, S_IFDIR | 0o755, 2, 0, (0, 0), path)?,
                Entry::File { src, mode } => {
                    let data = match src {
                        Source::Path(p) => {
                            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
                        }
                        Source::Bytes(b) => b,
                    };
                    header(out, ino, S_IFREG | mode, 1, data.len(), (0, 0), path)?;
                    out.write_all(data)?;
                    pad(out, data.len())?;
                }
                Entry::Symlink(target) => {
                    header(out, ino, S_IFLNK | 0o777, 1, target.len(), (0, 0), path)?;
                    out.write_all(target.as_bytes())?;
                    pad(out, target.len())?;
                }
                Entry::CharDev { major, minor } => {
                    header(out, ino, S_IFCHR | 0o600, 1, 0, (*major, *minor), path)?
                }
            }
        }
        header(out, 0, 0, 1, 0, (0, 0), "TRAILER!!!")
    }
}

fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> Result<()> {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        u32::try_from(size)?,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    write!(out, "070701")?;
    for f in fields {
        write!(out, "{f:08x}")?;
    }
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + name.len() + 1)
}

/// Pads to the next multiple of four bytes.
fn pad(out: &mut impl Write, len: usize) -> Result<()> {
    out.write_all(&[0; 3][..(4 - len % 4) % 4])?;
    Ok(())
}
