//! The user's object, narrowed to what one XDP program needs before aya
//! sees it.
//!
//! aya's loader (`EbpfLoader`, through `aya_obj::Object::parse`) reads
//! every section of an object: a single program section whose name it does
//! not know (`tc`, `tcx/ingress`, xdp-tutorial's `xdp_patch_ports`) fails
//! the whole file, the CO-RE relocations of every program are applied, and
//! every map the object declares is created, used or not (and fails when
//! its own loader was meant to size it). A slot needs one XDP program. So
//! the runtime finds the programs itself, from the ELF symbol table and
//! section names, and gives aya a copy of the object in which only that
//! program and what it needs are left:
//! - every other program section is blanked (type `SHT_NULL`, no flags, no
//!   name), with its relocation section: aya skips sections it does not
//!   recognise;
//! - the program's section gets the name aya knows (`xdp`, `xdp.frags`,
//!   ...) when it has a legacy one;
//! - maps in `.maps` that neither the program, a `.text` function nor
//!   another map refers to are taken out of BTF's `.maps` DATASEC, which
//!   is where aya finds them (maps in a legacy `maps` section all stay);
//! - `.BTF.ext` keeps the function, line and CO-RE records of the sections
//!   that are left (aya would look for the functions of the others, and
//!   fail), under the program section's new name.
//!
//! Why patch a copy rather than write a new ELF (e.g. with
//! `object::write`): section and symbol indices, relocations and BTF type
//! ids stay exactly as the compiler made them, so nothing aya resolves
//! through them can change. Only section headers are edited in place; a
//! table that changes (the section name strings, `.BTF`, `.BTF.ext`) is
//! appended whole at the end of the file and its header pointed at the
//! copy. An object that needs none of this is handed over as it is.
use std::collections::BTreeSet;

use object::{
    Architecture, LittleEndian as LE, Object as _, ObjectSection as _, ObjectSymbol as _,
    RelocationTarget, SectionIndex, SectionKind, SymbolKind,
    read::elf::{ElfFile64, FileHeader as _, SectionHeader as _},
};

use crate::btf::{Btf, BtfExt, SECINFO, u32_at};

/// Why a file is not a BPF object (the cause under the library's error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Malformed(pub String);

/// Why a file cannot be read as a BPF object.
#[derive(Debug)]
pub(crate) enum Unreadable {
    /// Not an ELF file, or a damaged one.
    Malformed(Malformed),
    /// An ELF file for another machine (named).
    OtherMachine(String),
}

/// A BPF ELF object, read.
pub(crate) struct Elf<'a> {
    bytes: &'a [u8],
    file: ElfFile64<'a, LE>,
}

/// A function in a program section: a program.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub name: String,
    pub section: SectionIndex,
    pub section_name: String,
}

/// The object as aya gets it.
pub(crate) struct Narrowed {
    pub bytes: Vec<u8>,
    /// Maps of `.maps` left out because the program does not use them.
    pub unused_maps: Vec<String>,
}

/// Section header fields, by byte offset in an `Elf64_Shdr`.
const SH_NAME: usize = 0;
const SH_TYPE: usize = 4;
const SH_FLAGS: usize = 8;
const SH_OFFSET: usize = 24;
const SH_SIZE: usize = 32;

fn machine(arch: Architecture) -> String {
    match arch {
        Architecture::X86_64 | Architecture::X86_64_X32 => "x86-64".into(),
        Architecture::I386 => "x86".into(),
        Architecture::Aarch64 | Architecture::Aarch64_Ilp32 => "arm64".into(),
        Architecture::Arm => "arm".into(),
        Architecture::Unknown => "an unknown machine".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl<'a> Elf<'a> {
    /// Reads `bytes` as a little-endian 64-bit BPF ELF object.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Unreadable> {
        let bad = |m: String| Unreadable::Malformed(Malformed(m));
        if bytes.is_empty() {
            return Err(bad("the file is empty".into()));
        }
        if !bytes.starts_with(b"\x7fELF") {
            return Err(bad("not an ELF file".into()));
        }
        let any = object::File::parse(bytes).map_err(|e| bad(format!("damaged ELF: {e}")))?;
        if any.architecture() != Architecture::Bpf {
            return Err(Unreadable::OtherMachine(machine(any.architecture())));
        }
        if !any.is_little_endian() || !any.is_64() {
            return Err(Unreadable::OtherMachine("big-endian BPF (bpfeb)".into()));
        }
        let file = ElfFile64::parse(bytes).map_err(|e| bad(format!("damaged ELF: {e}")))?;
        Ok(Self { bytes, file })
    }

    /// Is `s` a program section (aya's rule: executable code, not `.text`)?
    fn is_program_section(s: &object::read::elf::ElfSection64<'_, '_, LE>) -> bool {
        s.kind() == SectionKind::Text
            && s.size() > 0
            && s.name().is_ok_and(|n| !n.starts_with(".text"))
    }

    /// Every program: each function of each program section.
    pub fn programs(&self) -> Vec<Function> {
        let mut out = Vec::new();
        for s in self.file.sections().filter(Self::is_program_section) {
            let section_name = s.name().unwrap_or_default().to_string();
            for sym in self.file.symbols() {
                if sym.section_index() == Some(s.index())
                    && sym.kind() == SymbolKind::Text
                    && sym.name().is_ok_and(|n| !n.is_empty())
                {
                    out.push(Function {
                        name: sym.name().unwrap_or_default().to_string(),
                        section: s.index(),
                        section_name: section_name.clone(),
                    });
                }
            }
        }
        out
    }

    /// Names of the maps in `.maps` that code in `sections` refers to.
    fn maps_used_by(&self, sections: &[SectionIndex]) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        for &i in sections {
            let Ok(s) = self.file.section_by_index(i) else {
                continue;
            };
            for (_, rel) in s.relocations() {
                let RelocationTarget::Symbol(sym) = rel.target() else {
                    continue;
                };
                let Ok(sym) = self.file.symbol_by_index(sym) else {
                    continue;
                };
                let in_maps = sym
                    .section_index()
                    .and_then(|i| self.file.section_by_index(i).ok())
                    .is_some_and(|m| m.name() == Ok(".maps"));
                if in_maps && let Ok(name) = sym.name() {
                    used.insert(name.to_string());
                }
            }
        }
        used
    }

    /// Where section `i`'s header is in the file.
    fn header_at(&self, i: usize) -> usize {
        let h = self.file.elf_header();
        h.e_shoff(LE) as usize + i * h.e_shentsize(LE) as usize
    }

    /// The object with only `keep`'s section among the program sections,
    /// named `canonical`, and the maps its code uses.
    pub fn narrow(&self, keep: &Function, canonical: &str) -> Result<Narrowed, Malformed> {
        let sections: Vec<_> = self.file.sections().collect();
        let program_sections: Vec<_> = sections
            .iter()
            .filter(|s| Self::is_program_section(s))
            .collect();
        let blanked: BTreeSet<usize> = program_sections
            .iter()
            .map(|s| s.index().0)
            .filter(|&i| i != keep.section.0)
            .collect();
        let blanked_names: BTreeSet<&str> = program_sections
            .iter()
            .filter(|s| blanked.contains(&s.index().0))
            .filter_map(|s| s.name().ok())
            .collect();
        let code: Vec<SectionIndex> = sections
            .iter()
            .filter(|s| {
                s.index() == keep.section
                    || (s.kind() == SectionKind::Text
                        && s.name().is_ok_and(|n| n.starts_with(".text")))
            })
            .map(|s| s.index())
            .collect();
        let rename = keep.section_name != canonical;
        // Maps another map refers to (initial values of a map of maps, in
        // `.rel.maps`) count as used too: keeping one too many costs less
        // than missing one.
        let mut referring = code.clone();
        referring.extend(self.file.section_by_name(".maps").map(|s| s.index()));
        let used = self.maps_used_by(&referring);

        let mut unused_maps = Vec::new();
        let mut new_btf = None;
        let mut new_ext = None;
        let btf_section = self.file.section_by_name(".BTF");
        let btf_data = match &btf_section {
            Some(s) => Some(
                s.data()
                    .map_err(|e| Malformed(format!("reading .BTF: {e}")))?,
            ),
            None => None,
        };
        let btf = match btf_data {
            Some(d) => Some(Btf::parse(d).ok_or_else(|| Malformed("unreadable .BTF".into()))?),
            None => None,
        };
        if let Some(btf) = &btf {
            let mut types = btf.type_data.to_vec();
            let mut strings = btf.strings.to_vec();
            let mut changed = false;
            if let Some(ds) = btf.datasec(".maps") {
                let mut kept = Vec::new();
                for e in 0..ds.vlen {
                    let entry = &ds.extra[e * SECINFO..(e + 1) * SECINFO];
                    let name = u32_at(entry, 0)
                        .and_then(|id| btf.get(id))
                        .map(|v| btf.name(v.name_off))
                        .unwrap_or_default();
                    if used.contains(name) {
                        kept.extend_from_slice(entry);
                    } else {
                        unused_maps.push(name.to_string());
                    }
                }
                if !unused_maps.is_empty() {
                    let info = u32_at(btf.type_data, ds.offset + 4).unwrap_or_default();
                    let vlen = (kept.len() / SECINFO) as u32;
                    let mut record = Vec::with_capacity(12 + kept.len());
                    record.extend_from_slice(&ds.name_off.to_le_bytes());
                    record.extend_from_slice(&((info & !0xffff) | vlen).to_le_bytes());
                    record.extend_from_slice(&ds.size_or_type.to_le_bytes());
                    record.extend_from_slice(&kept);
                    types.splice(
                        ds.offset..ds.offset + 12 + ds.vlen * SECINFO,
                        record.iter().copied(),
                    );
                    changed = true;
                }
            }
            if let Some(ext_section) = self.file.section_by_name(".BTF.ext") {
                let data = ext_section
                    .data()
                    .map_err(|e| Malformed(format!("reading .BTF.ext: {e}")))?;
                let mut ext =
                    BtfExt::parse(data).ok_or_else(|| Malformed("unreadable .BTF.ext".into()))?;
                let canonical_off = if rename {
                    Some(btf.find_string(canonical).unwrap_or_else(|| {
                        let off = strings.len() as u32;
                        strings.extend_from_slice(canonical.as_bytes());
                        strings.push(0);
                        changed = true;
                        off
                    }))
                } else {
                    None
                };
                let mut ext_changed = false;
                for info in &mut ext.infos {
                    let before = info.sections.len();
                    info.sections
                        .retain(|(name, _, _)| !blanked_names.contains(btf.name(*name)));
                    ext_changed |= info.sections.len() != before;
                    if let Some(off) = canonical_off {
                        for s in &mut info.sections {
                            if btf.name(s.0) == keep.section_name {
                                s.0 = off;
                                ext_changed = true;
                            }
                        }
                    }
                }
                if ext_changed {
                    new_ext = Some((ext_section.index(), ext.write()));
                }
            }
            if changed {
                let s = btf_section.as_ref().expect("BTF was read from its section");
                new_btf = Some((s.index(), btf.rebuild(&types, &strings)));
            }
        }

        if blanked.is_empty() && !rename && new_btf.is_none() && new_ext.is_none() {
            return Ok(Narrowed {
                bytes: self.bytes.to_vec(),
                unused_maps,
            });
        }

        let mut out = self.bytes.to_vec();
        let put_u32 = |out: &mut Vec<u8>, at: usize, v: u32| {
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        let put_u64 = |out: &mut Vec<u8>, at: usize, v: u64| {
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        // Appends `data` as section `i`'s new contents.
        let relocate = |out: &mut Vec<u8>, i: SectionIndex, data: &[u8]| {
            out.resize(out.len().next_multiple_of(8), 0);
            let at = out.len() as u64;
            out.extend_from_slice(data);
            let h = self.header_at(i.0);
            put_u64(out, h + SH_OFFSET, at);
            put_u64(out, h + SH_SIZE, data.len() as u64);
        };
        // Sections whose contents moved or went: their relocation sections
        // describe what is no longer there.
        let mut gone: BTreeSet<usize> = blanked.clone();
        if let Some((i, data)) = &new_btf {
            relocate(&mut out, *i, data);
            gone.insert(i.0);
        }
        if let Some((i, data)) = &new_ext {
            relocate(&mut out, *i, data);
            gone.insert(i.0);
        }
        if rename {
            let strtab = SectionIndex(self.file.elf_header().e_shstrndx(LE) as usize);
            let s = self
                .file
                .section_by_index(strtab)
                .map_err(|e| Malformed(format!("reading the section names: {e}")))?;
            let mut names = s
                .data()
                .map_err(|e| Malformed(format!("reading the section names: {e}")))?
                .to_vec();
            let off = names.len() as u32;
            names.extend_from_slice(canonical.as_bytes());
            names.push(0);
            relocate(&mut out, strtab, &names);
            put_u32(&mut out, self.header_at(keep.section.0) + SH_NAME, off);
        }
        let relocations_of_gone: Vec<usize> = sections
            .iter()
            .filter(|s| {
                let h = s.elf_section_header();
                matches!(h.sh_type(LE), object::elf::SHT_REL | object::elf::SHT_RELA)
                    && gone.contains(&(h.sh_info(LE) as usize))
            })
            .map(|s| s.index().0)
            .collect();
        for &i in blanked.iter().chain(&relocations_of_gone) {
            let h = self.header_at(i);
            put_u32(&mut out, h + SH_NAME, 0);
            put_u32(&mut out, h + SH_TYPE, object::elf::SHT_NULL);
            put_u64(&mut out, h + SH_FLAGS, 0);
        }
        Ok(Narrowed {
            bytes: out,
            unused_maps,
        })
    }
}
