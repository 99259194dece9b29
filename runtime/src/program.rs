//! The user's program: an ordinary XDP object file (C `SEC("xdp")` or
//! aya-ebpf `#[xdp]`), possibly among programs of other types. Picks the
//! program, reads its run config, narrows the object to it
//! (`narrow.rs`) and loads it for a backend. Nothing here touches an
//! interface.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{Extension, ProgramError, ProgramFd, Xdp},
};
use aya_obj::{generated::bpf_map_type, maps::PinningType};

use crate::{
    claim::Prepared,
    error::{Error, ExtensionRefusal, Result},
    narrow::{Elf, Function, Unreadable},
    retry,
    run_config::{self, RunConfig},
    status::mask_names,
};

/// Where a program comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProgramSource {
    /// Shown in messages (a path, or a label for in-memory objects).
    pub label: String,
    /// The ELF object.
    pub bytes: Vec<u8>,
    /// The program to use; required when the object has several XDP
    /// programs.
    pub name: Option<String>,
    /// `max_entries` of maps by name, for maps the object leaves for its
    /// loader to size (declared with `max_entries` 0), or to override.
    pub map_sizes: BTreeMap<String, u32>,
}

impl ProgramSource {
    /// Reads an object file.
    pub fn file(path: impl AsRef<Path>, name: Option<&str>) -> Result<Self> {
        let path: PathBuf = path.as_ref().into();
        let bytes = std::fs::read(&path).map_err(|e| Error::BadObject {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(Self::bytes(path.display().to_string(), bytes, name))
    }

    /// An object already in memory.
    pub fn bytes(label: impl Into<String>, bytes: impl Into<Vec<u8>>, name: Option<&str>) -> Self {
        Self {
            label: label.into(),
            bytes: bytes.into(),
            name: name.map(Into::into),
            map_sizes: BTreeMap::new(),
        }
    }
}

/// The object bytes aya loads (shown by length only).
#[derive(Clone, Default)]
pub(crate) struct ObjectBytes(pub Vec<u8>);

impl std::fmt::Debug for ObjectBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A checked program: which one, what its metadata asks for, and the
/// object narrowed to it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inspected {
    /// The program's name in its object.
    pub name: String,
    /// An `xdp.frags` program.
    pub frags: bool,
    /// Its XDP_RUN_CONFIG, if it has one.
    pub run_config: Option<RunConfig>,
    /// It has XDP_RUN_CONFIG, but the object has no BTF to read it from.
    pub run_config_unreadable: bool,
    /// What aya loads: the object with this program and what it uses.
    pub object: ObjectBytes,
    /// Map sizes that apply to the maps loaded.
    pub map_sizes: Vec<(String, u32)>,
    /// The program's own program arrays that are not pinned by name.
    pub prog_arrays: Vec<String>,
    /// Where its maps pinned by name go (set for a claim, from its
    /// [`MapPins`](crate::MapPins)); `None`: libbpf's place.
    pub map_pin_dir: Option<PathBuf>,
    /// Does it have maps pinned by name?
    pub pins_maps: bool,
}

/// How a program section's name reads, by libbpf's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hook {
    /// XDP, with the section name aya knows it by.
    Xdp {
        frags: bool,
        canonical: &'static str,
    },
    /// Another program type: the name's first part (`tc`, `kprobe`, ...).
    Other(String),
}

/// The XDP section names libbpf 1.x and aya know, and whether each is
/// `xdp.frags`.
const XDP_SECTIONS: [(&str, bool); 6] = [
    ("xdp", false),
    ("xdp.frags", true),
    ("xdp/devmap", false),
    ("xdp/cpumap", false),
    ("xdp.frags/devmap", true),
    ("xdp.frags/cpumap", true),
];

fn hook(section: &str) -> Hook {
    if let Some(&(canonical, frags)) = XDP_SECTIONS.iter().find(|(n, _)| *n == section) {
        return Hook::Xdp { frags, canonical };
    }
    // libbpf before 1.0 matched section names by prefix: every name
    // starting with "xdp" was XDP (xdp-tutorial's "xdp_patch_ports",
    // aya-ebpf 0.1's "xdp/<name>"), "xdp_devmap/" and "xdp_cpumap/" for
    // those maps' programs.
    let legacy = |frags, canonical| Hook::Xdp { frags, canonical };
    if section.starts_with("xdp_devmap/") {
        legacy(false, "xdp/devmap")
    } else if section.starts_with("xdp_cpumap/") {
        legacy(false, "xdp/cpumap")
    } else if section.starts_with("xdp.frags") {
        legacy(true, "xdp.frags")
    } else if section.starts_with("xdp") {
        legacy(false, "xdp")
    } else {
        Hook::Other(section.split('/').next().unwrap_or(section).to_string())
    }
}

/// Map types whose `max_entries` is 0 by rule (local storage), or set by
/// aya itself (a perf event array gets one entry per CPU).
fn zero_size_is_fine(map_type: u32) -> bool {
    [
        bpf_map_type::BPF_MAP_TYPE_PERF_EVENT_ARRAY,
        bpf_map_type::BPF_MAP_TYPE_CGROUP_STORAGE_DEPRECATED,
        bpf_map_type::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE_DEPRECATED,
        bpf_map_type::BPF_MAP_TYPE_SK_STORAGE,
        bpf_map_type::BPF_MAP_TYPE_INODE_STORAGE,
        bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE,
        bpf_map_type::BPF_MAP_TYPE_CGRP_STORAGE,
    ]
    .iter()
    .any(|t| *t as u32 == map_type)
}

/// Parses the object, picks the XDP program and narrows the object to it.
pub(crate) fn inspect(src: &ProgramSource) -> Result<Inspected> {
    let bad = |source: crate::error::Cause| Error::BadObject {
        path: src.label.clone(),
        source,
    };
    let elf = Elf::parse(&src.bytes).map_err(|e| match e {
        Unreadable::Malformed(m) => bad(Box::new(m)),
        Unreadable::OtherMachine(machine) => Error::NotBpf {
            path: src.label.clone(),
            machine,
        },
    })?;
    let programs: Vec<(Function, Hook)> = elf
        .programs()
        .into_iter()
        .map(|f| {
            let h = hook(&f.section_name);
            (f, h)
        })
        .collect();
    let mut xdp: Vec<&(Function, Hook)> = programs
        .iter()
        .filter(|(_, h)| matches!(h, Hook::Xdp { .. }))
        .collect();
    xdp.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let available = || {
        xdp.iter()
            .map(|(f, _)| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match &src.name {
        Some(wanted) => match programs.iter().find(|(f, _)| &f.name == wanted) {
            Some((_, Hook::Other(kind))) => {
                return Err(Error::WrongProgramType {
                    path: src.label.clone(),
                    name: wanted.clone(),
                    kind: kind.clone(),
                });
            }
            Some(p) => p,
            None if xdp.is_empty() => return Err(no_xdp(src, &programs)),
            None => {
                return Err(Error::NoSuchProgram {
                    path: src.label.clone(),
                    name: wanted.clone(),
                    available: available(),
                });
            }
        },
        None => match xdp.as_slice() {
            [] => return Err(no_xdp(src, &programs)),
            [p] => *p,
            _ => {
                return Err(Error::AmbiguousProgram {
                    path: src.label.clone(),
                    available: available(),
                });
            }
        },
    };
    let (function, Hook::Xdp { frags, canonical }) = chosen else {
        unreachable!("the chosen program is XDP");
    };
    let narrowed = elf
        .narrow(function, canonical)
        .map_err(|e| bad(Box::new(e)))?;
    // What aya will make of it: the same parse its loader does.
    let obj = aya_obj::Object::parse(&narrowed.bytes).map_err(|e| bad(Box::new(e)))?;
    let mut maps: Vec<(&String, &aya_obj::Map)> = obj.maps.iter().collect();
    maps.sort_by_key(|(n, _)| *n);
    for wanted in src.map_sizes.keys() {
        if !obj.maps.contains_key(wanted) && !narrowed.unused_maps.contains(wanted) {
            let mut all: Vec<&str> = maps
                .iter()
                .map(|(n, _)| n.as_str())
                .chain(narrowed.unused_maps.iter().map(String::as_str))
                .filter(|n| !n.starts_with('.'))
                .collect();
            all.sort();
            return Err(Error::NoSuchMap {
                path: src.label.clone(),
                name: wanted.clone(),
                maps: if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                },
            });
        }
    }
    let unsized_maps: Vec<String> = maps
        .iter()
        .filter(|(n, m)| {
            m.max_entries() == 0
                && !zero_size_is_fine(m.map_type())
                && src.map_sizes.get(*n).is_none_or(|&s| s == 0)
        })
        .map(|(n, _)| (*n).clone())
        .collect();
    if !unsized_maps.is_empty() {
        return Err(Error::MapSizeNeeded {
            path: src.label.clone(),
            program: function.name.clone(),
            maps: unsized_maps,
        });
    }
    if !narrowed.unused_maps.is_empty() {
        log::debug!(
            "{}: maps {} are not used by {} and are not created",
            src.label,
            narrowed.unused_maps.join(", "),
            function.name
        );
    }
    let map_sizes = src
        .map_sizes
        .iter()
        .filter(|(n, s)| obj.maps.contains_key(*n) && **s > 0)
        .map(|(n, s)| (n.clone(), *s))
        .collect();
    let prog_arrays = maps
        .iter()
        .filter(|(_, m)| {
            m.map_type() == bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY as u32
                && m.pinning() == PinningType::None
        })
        .map(|(n, _)| (*n).clone())
        .collect();
    let (run_config, run_config_unreadable) = match run_config::find(&src.bytes, &function.name) {
        run_config::Found::Config(c) => (Some(c), false),
        run_config::Found::WithoutBtf => (None, true),
        run_config::Found::None => (None, false),
    };
    Ok(Inspected {
        name: function.name.clone(),
        frags: *frags,
        run_config,
        run_config_unreadable,
        object: ObjectBytes(narrowed.bytes),
        map_sizes,
        prog_arrays,
        map_pin_dir: None,
        pins_maps: maps.iter().any(|(_, m)| m.pinning() == PinningType::ByName),
    })
}

fn no_xdp(src: &ProgramSource, programs: &[(Function, Hook)]) -> Error {
    let mut found: Vec<String> = programs
        .iter()
        .map(|(f, h)| match h {
            Hook::Other(kind) => format!("{kind} program {}", f.name),
            Hook::Xdp { .. } => format!("xdp program {}", f.name),
        })
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

/// What a claim that was made should know about its object, logged as
/// warnings (after the claim, so that a refusal stays one line):
/// - XDP_RUN_CONFIG that could not be read, and what applies instead;
/// - for a persistent claim, the program's own program arrays: the kernel
///   empties a program array when its last user reference (an open fd or
///   a pin) goes, and once the claiming process exits nothing holds these
///   (the slot holds the program, which does not count). What another
///   process puts into them lasts only while it holds them open.
pub(crate) fn warn_claimed(src: &ProgramSource, prep: &Prepared, loaded: &Loaded) {
    let ins = &prep.ins;
    let label = &src.label;
    if prep.run_config_ignored {
        log::warn!(
            "{} in {label} has XDP_RUN_CONFIG metadata, but the object has no BTF to read it from (built without -g): priority {} and proceed-on {} apply instead",
            ins.name,
            prep.prio,
            mask_names(prep.proceed_on).join(",")
        );
    }
    if !prep.persistent {
        return;
    }
    for name in &ins.prog_arrays {
        let id = loaded
            .ebpf
            .map(name)
            .and_then(|m| match m {
                aya::maps::Map::ProgramArray(d) => d.info().ok().map(|i| i.id()),
                _ => None,
            })
            .map_or_else(|| "?".into(), |id| id.to_string());
        log::warn!(
            "{} in {label} has its own program array {name} (map id {id}): what is put into it lasts only while some process has it open or it is pinned, and a persistent claim leaves it open in no process; pin it before filling it (bpftool map pin id {id} /sys/fs/bpf/{name}), or hold the claim",
            ins.name
        );
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

/// aya's loader, with the map sizes the request gives.
fn loader(ins: &Inspected) -> EbpfLoader<'_> {
    let mut l = EbpfLoader::new();
    for (name, size) in &ins.map_sizes {
        l.map_max_entries(name, *size);
    }
    if let Some(dir) = &ins.map_pin_dir {
        l.default_map_pin_directory(dir);
    }
    l
}

/// Loads the program as plain XDP (tail-call backend).
pub(crate) fn load_xdp(src: &ProgramSource, ins: &Inspected) -> Result<Loaded> {
    let mut ebpf = loader(ins)
        .load(&ins.object.0)
        .map_err(|e| Error::kernel(format!("loading {}", src.label), e))?;
    let prog: &mut Xdp = ebpf
        .program_mut(&ins.name)
        .expect("inspected program exists")
        .try_into()
        .map_err(|e| Error::kernel(format!("loading {}", ins.name), e))?;
    retry::prog_load(&ins.name, || prog.load()).map_err(|e| load_error(&ins.name, e))?;
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
    let mut ebpf = loader(ins)
        .extension(&ins.name)
        .load(&ins.object.0)
        .map_err(|e| Error::kernel(format!("loading {}", src.label), e))?;
    let ext: &mut Extension = ebpf
        .program_mut(&ins.name)
        .expect("inspected program exists")
        .try_into()
        .map_err(|e| Error::kernel(format!("loading {}", ins.name), e))?;
    retry::prog_load(&ins.name, || ext.load(target.try_clone()?, func)).map_err(|e| match e {
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
            } else if log.contains("requires BTF") {
                ExtensionRefusal::NoBtf
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
    use super::{Hook, hook, summarize};

    #[test]
    fn section_names_read_as_libbpf_reads_them() {
        let xdp = |frags, canonical| Hook::Xdp { frags, canonical };
        for (section, want) in [
            ("xdp", xdp(false, "xdp")),
            ("xdp.frags", xdp(true, "xdp.frags")),
            ("xdp/devmap", xdp(false, "xdp/devmap")),
            ("xdp.frags/cpumap", xdp(true, "xdp.frags/cpumap")),
            // libbpf before 1.0: any name starting with "xdp".
            ("xdp_patch_ports", xdp(false, "xdp")),
            ("xdp/my_prog", xdp(false, "xdp")),
            ("xdp_devmap/forward", xdp(false, "xdp/devmap")),
            ("xdp_cpumap/spread", xdp(false, "xdp/cpumap")),
            ("tc", Hook::Other("tc".into())),
            ("tcx/ingress", Hook::Other("tcx".into())),
            ("kprobe/do_nanosleep", Hook::Other("kprobe".into())),
        ] {
            assert_eq!(hook(section), want, "{section}");
        }
    }

    #[test]
    fn summary_keeps_the_reason() {
        let log = "0: (61) r2 = *(u32 *)(r1 +0)\n1: (71) r0 = *(u8 *)(r2 +100)\ninvalid access to packet, off=100 size=1, R2(id=0,off=100,r=0)\nR2 offset is outside of the packet\nprocessed 2 insns (limit 1000000)\n";
        assert_eq!(
            summarize(log),
            "invalid access to packet, off=100 size=1, R2(id=0,off=100,r=0) / R2 offset is outside of the packet"
        );
    }
}
