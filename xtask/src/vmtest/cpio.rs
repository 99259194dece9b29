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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut a = Archive::default();
        a.bytes("/bin/x", "hello", 0o755);
        a.symlink("bin/sh", "busybox");
        a.char_dev("dev/console", 5, 1);
        let mut out = Vec::new();
        a.write(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        // Entries: bin (added as a parent), bin/sh, bin/x, dev, dev/console, trailer.
        let names: Vec<String> = headers(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["bin", "bin/sh", "bin/x", "dev", "dev/console", "TRAILER!!!"]
        );
        let modes: Vec<u32> = headers(&out).into_iter().map(|(_, m)| m).collect();
        assert_eq!(modes[0], S_IFDIR | 0o755);
        assert_eq!(modes[1], S_IFLNK | 0o777);
        assert_eq!(modes[2], S_IFREG | 0o755);
        assert_eq!(modes[4], S_IFCHR | 0o600);
    }

    /// (name, mode) of every header, walking the archive by its sizes.
    fn headers(data: &[u8]) -> Vec<(String, u32)> {
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let up4 = |n: usize| n.div_ceil(4) * 4;
        let mut found = Vec::new();
        let mut off = 0;
        while off < data.len() {
            let h = &data[off..];
            assert_eq!(&h[..6], b"070701");
            let (mode, size, namesize) = (field(h, 1), field(h, 6) as usize, field(h, 11) as usize);
            let name = String::from_utf8(h[110..110 + namesize - 1].to_vec()).unwrap();
            off += up4(110 + namesize) + up4(size);
            let done = name == "TRAILER!!!";
            found.push((name, mode));
            if done {
                break;
            }
        }
        assert_eq!(off, data.len());
        found
    }
}
