//! Where each claim's program came from: its object (a path, or the label
//! of an in-memory object) and the program's name in it, for status.
//!
//! Kept in a map of its own, pinned as [`pin::ORIGINS`] (one entry per
//! slot), that only userspace reads: the claim records (`SLOTS`) are
//! declared by the dispatcher object, whose layout this leaves alone. An
//! entry counts only while its program id is the one in the slot's record,
//! so a stale entry (a claim that died before writing its origin, a slot
//! reused) reads as unknown, never as another claim's. State attached by a
//! version without this map has no such pin: its claims show no origin,
//! and everything else reads as before.
use std::path::Path;

use aya::maps::{Array, Map, MapData};
use dispatcher_common::SLOT_COUNT;

use crate::{
    error::{Error, Result},
    pin,
};

/// Longest object path kept, in bytes; a longer one is kept up to here and
/// marked cut.
const OBJECT_MAX: usize = 1024;
/// Longest program name kept, in bytes.
const PROGRAM_MAX: usize = 256;
/// An entry: program id (u32 LE), object length (u16 LE), program length
/// (u16 LE), then the object's bytes and the program's, zero padded.
const ENTRY: usize = 8 + OBJECT_MAX + PROGRAM_MAX;
/// The map's name in the kernel.
const MAP_NAME: &str = "ORIGINS";

type Entry = [u8; ENTRY];

/// A claim's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The object's path or label (ending in "..." if it was cut).
    pub object: String,
    /// The program's name in the object.
    pub program: String,
}

/// Creates the (empty) map and pins it in the state directory `dir`.
pub(crate) fn create(dir: &Path) -> Result<()> {
    let def = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        4,
        ENTRY as u32,
        SLOT_COUNT as u32,
        0,
    );
    let map = MapData::create(def, MAP_NAME, None)
        .map_err(|e| Error::kernel("creating the origins map", e))?;
    let path = dir.join(pin::ORIGINS);
    map.pin(&path)
        .map_err(|e| Error::kernel(format!("pinning {}", path.display()), e))
}

fn open(dir: &Path) -> Option<Array<MapData, Entry>> {
    let path = dir.join(pin::ORIGINS);
    if !path.exists() {
        return None;
    }
    let data = MapData::from_pin(&path).ok()?;
    Array::try_from(Map::Array(data)).ok()
}

fn cut(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

/// Records the origin of the claim in slot `n` (filled with `prog_id`).
/// A state without the map (attached by an earlier version) records
/// nothing.
pub(crate) fn write(dir: &Path, n: usize, prog_id: u32, object: &str, program: &str) -> Result<()> {
    let Some(mut map) = open(dir) else {
        return Ok(());
    };
    map.set(n as u32, encode(prog_id, object, program), 0)
        .map_err(|err| Error::kernel(format!("recording the origin of slot {n}"), err))
}

/// The entry for the claim filled with `prog_id`.
fn encode(prog_id: u32, object: &str, program: &str) -> Entry {
    let mut e: Entry = [0; ENTRY];
    let object: Vec<u8> = if object.len() > OBJECT_MAX {
        cut(object, OBJECT_MAX - 3)
            .iter()
            .chain(b"...")
            .copied()
            .collect()
    } else {
        object.as_bytes().to_vec()
    };
    let program = cut(program, PROGRAM_MAX);
    e[0..4].copy_from_slice(&prog_id.to_le_bytes());
    e[4..6].copy_from_slice(&(object.len() as u16).to_le_bytes());
    e[6..8].copy_from_slice(&(program.len() as u16).to_le_bytes());
    e[8..8 + object.len()].copy_from_slice(&object);
    e[8 + OBJECT_MAX..8 + OBJECT_MAX + program.len()].copy_from_slice(program);
    e
}

/// Decodes an entry if it belongs to `prog_id`.
fn decode(e: &Entry, prog_id: u32) -> Option<Origin> {
    let id = u32::from_le_bytes(e[0..4].try_into().ok()?);
    if id != prog_id || id == 0 {
        return None;
    }
    let olen = usize::from(u16::from_le_bytes(e[4..6].try_into().ok()?)).min(OBJECT_MAX);
    let plen = usize::from(u16::from_le_bytes(e[6..8].try_into().ok()?)).min(PROGRAM_MAX);
    Some(Origin {
        object: String::from_utf8_lossy(&e[8..8 + olen]).into_owned(),
        program: String::from_utf8_lossy(&e[8 + OBJECT_MAX..8 + OBJECT_MAX + plen]).into_owned(),
    })
}

/// The origin of the claim in slot `n` filled with `prog_id`, if known.
pub(crate) fn read(dir: &Path, n: usize, prog_id: u32) -> Option<Origin> {
    let map = open(dir)?;
    decode(&map.get(&(n as u32), 0).ok()?, prog_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_belongs_to_its_program_only() {
        let e = encode(7, "/srv/fw.o", "xdp_firewall_with_a_long_name");
        assert_eq!(
            decode(&e, 7),
            Some(Origin {
                object: "/srv/fw.o".into(),
                program: "xdp_firewall_with_a_long_name".into()
            })
        );
        assert_eq!(decode(&e, 8), None, "another claim's entry");
        assert_eq!(decode(&[0; ENTRY], 0), None, "never written");
    }

    #[test]
    fn a_long_path_is_cut_and_marked() {
        let long = format!("/{}", "d/".repeat(700));
        let o = decode(&encode(1, &long, "p"), 1).unwrap();
        assert_eq!(o.object.len(), OBJECT_MAX);
        assert!(o.object.ends_with("..."));
        assert!(long.starts_with(o.object.trim_end_matches("...")));
    }
}
