//! The user's program: an ordinary XDP object file (C `SEC("xdp")` or
//! aya-ebpf `#[xdp]`). Picks the program, reads its run config, and loads
//! it for a backend. Nothing here touches an interface.
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{Extension, ProgramError, ProgramFd, Xdp},
};
use aya_obj::ProgramSection;

use crate::{
    error::{Error, ExtensionRefusal, Result},
    run_config::{self, RunConfig},
};

/// Where a program comes from.
#[derive(Debug, Clone)]
pub struct ProgramSource {
    /// Shown in messages (a path, or a label for in-memory objects).
    pub label: String,
    /// The ELF object.
    pub bytes: Vec<u8>,
    /// The program to use; required when the object has several.
    pub name: Option<String>,
}

impl ProgramSource {
    /// Reads an object file.
    pub fn file(path: impl AsRef<Path>, name: Option<&str>) -> Result<Self> {
        let path: PathBuf = path.as_ref().into();
        let bytes = std::fs::read(&path).map_err(|e| Error::BadObject {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(Self {
            label: path.display().to_string(),
            bytes,
            name: name.map(Into::into),
        })
    }

    /// An object already in memory.
    pub fn bytes(label: impl Into<String>, bytes: impl Into<Vec<u8>>, name: Option<&str>) -> Self {
        Self {
            label: label.into(),
            bytes: bytes.into(),
            name: name.map(Into::into),
        }
    }
}

/// A checked program: which one, and what its metadata asks for.
#[derive(Debug, Clone)]
pub(crate) struct Inspected {
    /// The program's name in its object.
    pub name: String,
    /// An `xdp.frags` program.
    pub frags: bool,
    /// Its XDP_RUN_CONFIG, if it has one.
    pub run_config: Option<RunConfig>,
}

fn kind(section: &ProgramSection) -> String {
    let s = format!("{section:?}");
    s.split([' ', '{', '('])
        .next()
        .unwrap_or("unknown")
        .to_string()
}

/// Parses the object and picks the XDP program.
pub(crate) fn inspect(src: &ProgramSource) -> Result<Inspected> {
    let obj = aya_obj::Object::parse(&src.bytes).map_err(|e| Error::BadObject {
        path: src.label.clone(),
        source: Box::new(e),
    })?;
    let mut xdp: Vec<(&String, bool)> = obj
        .programs
        .iter()
        .filter_map(|(n, p)| match p.section {
            ProgramSection::Xdp { frags, .. } => Some((n, frags)),
            _ => None,
        })
        .collect();
    xdp.sort();
    let available = || {
        xdp.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, frags) = match &src.name {
        Some(wanted) => match obj.programs.get(wanted) {
            Some(p) => match p.section {
                ProgramSection::Xdp { frags, .. } => (wanted.clone(), frags),
                ref other => {
                    return Err(Error::WrongProgramType {
                        path: src.label.clone(),
                        name: wanted.clone(),
                        kind: kind(other),
                    });
                }
            },
            None if xdp.is_empty() => return Err(no_xdp(src, &obj)),
            None => {
                return Err(Error::NoSuchProgram {
                    path: src.label.clone(),
                    name: wanted.clone(),
                    available: available(),
                });
            }
        },
        None => match xdp.as_slice() {
            [] => return Err(no_xdp(src, &obj)),
            [(n, f)] => ((*n).clone(), *f),
            _ => {
                return Err(Error::AmbiguousProgram {
                    path: src.label.clone(),
                    available: available(),
                });
            }
        },
    };
    let run_config = run_config::read(&src.bytes, &name);
    Ok(Inspected {
        name,
        frags,
        run_config,
    })
}

fn no_xdp(src: &ProgramSource, obj: &aya_obj::Object) -> Error {
    let mut found: Vec<String> = obj
        .programs
        .iter()
        .map(|(n, p)| format!("{n} ({})", kind(&p.section)))
        .collect();
    found.sort();
    Error::NoXdpProgram {
        path: src.label.clone(),
        found: if found.is_empty() {
            "no programs".into()
        } else {
            found.join(", ")
        },
    }
}

/// A program loaded into the kernel, with the object that owns its maps.
pub(crate) struct Loaded {
    pub ebpf: Ebpf,
    pub name: String,
    /// An `xdp.frags` program.
    pub frags: bool,
}

impl Loaded {
    /// The program's fd.
    pub fn fd(&self) -> Result<&ProgramFd> {
        let p = self
            .ebpf
            .program(&self.name)
            .expect("loaded program is in its object");
        p.fd()
            .map_err(|e| Error::kernel("reading the program fd", e))
    }

    /// The kernel id of the program.
    pub fn id(&self) -> Result<u32> {
        let p = self
            .ebpf
            .program(&self.name)
            .expect("loaded program is in its object");
        Ok(p.info()
            .map_err(|e| Error::kernel("reading program info", e))?
            .id())
    }
}

/// Loads the program as plain XDP (tail-call backend).
pub(crate) fn load_xdp(src: &ProgramSource, ins: &Inspected) -> Result<Loaded> {
    let mut ebpf = EbpfLoader::new()
        .load(&src.bytes)
        .map_err(|e| Error::kernel(format!("loading {}", src.label), e))?;
    let prog: &mut Xdp = ebpf
        .program_mut(&ins.name)
        .expect("inspected program exists")
        .try_into()
        .map_err(|e| Error::kernel(format!("loading {}", ins.name), e))?;
    prog.load().map_err(|e| load_error(&ins.name, e))?;
    Ok(Loaded {
        ebpf,
        name: ins.name.clone(),
        frags: ins.frags,
    })
}

/// Loads the program as an extension of `func` in `target` (freplace).
pub(crate) fn load_extension(
    src: &ProgramSource,
    ins: &Inspected,
    target: ProgramFd,
    func: &str,
) -> Result<Loaded> {
    let mut ebpf = EbpfLoader::new()
        .extension(&ins.name)
        .load(&src.bytes)
        .map_err(|e| Error::kernel(format!("loading {}", src.label), e))?;
    let ext: &mut Extension = ebpf
        .program_mut(&ins.name)
        .expect("inspected program exists")
        .try_into()
        .map_err(|e| Error::kernel(format!("loading {}", ins.name), e))?;
    ext.load(target, func).map_err(|e| match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // EACCES with a log: the verifier refused the program's code,
            // as it would have as plain XDP; not a signature problem.
            if io_error.raw_os_error() == Some(libc::EACCES) && !log.trim().is_empty() {
                return load_error(
                    &ins.name,
                    ProgramError::LoadError {
                        io_error,
                        verifier_log,
                    },
                );
            }
            let reason = if log.trim().is_empty() && io_error.raw_os_error() == Some(libc::EPERM) {
                ExtensionRefusal::KernelRefusesExtensions
            } else if log.contains("changes packet data") {
                ExtensionRefusal::NotPacketChanging {
                    summary: summarize(&log),
                }
            } else {
                ExtensionRefusal::Other {
                    summary: format!("{io_error}: {}", summarize(&log)),
                }
            };
            Error::ExtensionRefused {
                name: ins.name.clone(),
                target: func.into(),
                reason,
            }
        }
        other => Error::kernel(format!("loading {} as an extension", ins.name), other),
    })?;
    Ok(Loaded {
        ebpf,
        name: ins.name.clone(),
        frags: ins.frags,
    })
}

/// Turns a load failure into a verifier error with the log's gist.
fn load_error(name: &str, e: ProgramError) -> Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if log.trim().is_empty() {
                return Error::kernel(format!("loading {name}"), io_error);
            }
            log::debug!("verifier log for {name}:\n{log}");
            Error::VerifierRejected {
                name: name.into(),
                summary: summarize(&log),
                log,
            }
        }
        other => Error::kernel(format!("loading {name}"), other),
    }
}

/// The verifier's own reason: the last lines before the statistics.
fn summarize(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with("-- END")
        })
        .collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    if tail.is_empty() {
        "no reason given".into()
    } else {
        tail.join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn summary_keeps_the_reason() {
        let log = "0: (61) r2 = *(u32 *)(r1 +0)\n1: (71) r0 = *(u8 *)(r2 +100)\ninvalid access to packet, off=100 size=1, R2(id=0,off=100,r=0)\nR2 offset is outside of the packet\nprocessed 2 insns (limit 1000000)\n";
        assert_eq!(
            summarize(log),
            "invalid access to packet, off=100 size=1, R2(id=0,off=100,r=0) / R2 offset is outside of the packet"
        );
    }
}
