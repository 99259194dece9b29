//! Where each claim's program came from: its object (a path, or the label
//! of an in-memory object), the program's name in it and the object's
//! content hash, for status, export and apply; whether `apply` made the
//! claim (only such claims does it release when a file stops naming
//! them); where the claim's maps pinned by name go; and the claimer's pid
//! namespace.
//!
//! Kept in a map of its own, pinned as [`pin::ORIGINS`] (one entry per
//! slot), that only userspace reads: the claim records (`SLOTS`) are
//! declared by the dispatcher object, whose layout this leaves alone. An
//! entry counts only while its program id is the one in the slot's record,
//! so a stale entry (a claim that died before writing its origin, a slot
//! reused) reads as unknown, never as another claim's. State attached by a
//! version without this map has no such pin: its claims show no origin,
//! and everything else reads as before.
//!
//! Fields are only ever appended to an entry. A map made with the first
//! layout ([`ENTRY_V1`] bytes, in state attached by an earlier version)
//! reads with the later fields unknown, and is written without them.
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData};
use dispatcher_common::SLOT_COUNT;

use crate::{
    error::{Error, Result},
    mappins::MapPins,
    pin,
};

/// Longest object path kept, in bytes; a longer one is kept up to here and
/// marked cut.
const OBJECT_MAX: usize = 1024;
/// Longest program name kept, in bytes.
const PROGRAM_MAX: usize = 256;
/// The first layout of an entry: program id (u32 LE), object length (u16
/// LE), program length (u16 LE), then the object's bytes and the
/// program's, zero padded.
const ENTRY_V1: usize = 8 + OBJECT_MAX + PROGRAM_MAX;
/// Appended to the first layout: the sha256 of the object's bytes...
const HASH_AT: usize = ENTRY_V1;
/// Length of the content hash.
const HASH_LEN: usize = 32;
/// ...then a flags byte ([`FLAG_HASHED`], [`FLAG_APPLIED`])...
const FLAGS_AT: usize = HASH_AT + HASH_LEN;
/// The entry has the object's hash.
const FLAG_HASHED: u8 = 1;
/// `apply` made the claim.
const FLAG_APPLIED: u8 = 2;
/// ...then the map pin block: the policy (u8: 0 unknown, 1 scoped, 2
/// shared, 3 a directory), a zero byte, the directory's length (u16 LE),
/// the claimer's pid namespace (its inode, u64 LE, 0 unknown), then the
/// directory's bytes, zero padded.
const PINS_AT: usize = FLAGS_AT + 1;
/// Longest map pin directory kept, in bytes (a longer one is not recorded).
const PIN_DIR_MAX: usize = 1024;
/// The map pin block's length.
const PINS_LEN: usize = 12 + PIN_DIR_MAX;
/// An entry.
const ENTRY: usize = PINS_AT + PINS_LEN;
/// The map's name in the kernel.
const MAP_NAME: &str = "ORIGINS";

type Entry = [u8; ENTRY];
type EntryV1 = [u8; ENTRY_V1];

/// The sha256 of an object's bytes.
pub(crate) type Hash = [u8; HASH_LEN];

/// The sha256 of `bytes`.
pub(crate) fn hash(bytes: &[u8]) -> Hash {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// A claim's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The object's path or label (ending in "..." if it was cut).
    pub object: String,
    /// The program's name in the object.
    pub program: String,
    /// The sha256 of the object's bytes; `None` if written by a version
    /// that did not keep it.
    pub hash: Option<Hash>,
    /// `apply` made the claim.
    pub applied: bool,
    /// Where its maps pinned by name go; `None` if not recorded (an
    /// earlier version's entry).
    pub map_pins: Option<MapPins>,
    /// The claimer's pid namespace (inode number); `None` if not recorded.
    pub pidns: Option<u64>,
}

/// What is recorded of a claim.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written<'a> {
    /// The object's path or label.
    pub object: &'a str,
    /// The program's name in it.
    pub program: &'a str,
    /// The object's bytes' hash.
    pub hash: Hash,
    /// `apply` made the claim.
    pub applied: bool,
    /// Where its maps pinned by name go.
    pub map_pins: &'a MapPins,
    /// The claimer's pid namespace (inode number), 0 if unknown.
    pub pidns: u64,
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

/// The pinned map, in whichever layout it was created with.
enum Opened {
    V1(Array<MapData, EntryV1>),
    Current(Array<MapData, Entry>),
}

fn open(dir: &Path) -> Option<Opened> {
    let path = dir.join(pin::ORIGINS);
    if !path.exists() {
        return None;
    }
    let data = MapData::from_pin(&path).ok()?;
    if data.info().ok()?.value_size() as usize == ENTRY_V1 {
        Array::try_from(Map::Array(data)).ok().map(Opened::V1)
    } else {
        Array::try_from(Map::Array(data)).ok().map(Opened::Current)
    }
}

/// Writes entry `e` for slot `n`, cut to the map's layout.
fn put(dir: &Path, n: usize, e: Entry) -> Result<()> {
    let r = match open(dir) {
        None => return Ok(()),
        Some(Opened::Current(mut map)) => map.set(n as u32, e, 0),
        Some(Opened::V1(mut map)) => {
            let v1: EntryV1 = e[..ENTRY_V1].try_into().expect("a prefix of the entry");
            map.set(n as u32, v1, 0)
        }
    };
    r.map_err(|err| Error::kernel(format!("recording the origin of slot {n}"), err))
}

/// The raw entry of slot `n`, padded with zeros (unknown) to the current
/// layout.
fn get(dir: &Path, n: usize) -> Option<Entry> {
    let mut e: Entry = [0; ENTRY];
    match open(dir)? {
        Opened::Current(map) => e = map.get(&(n as u32), 0).ok()?,
        Opened::V1(map) => e[..ENTRY_V1].copy_from_slice(&map.get(&(n as u32), 0).ok()?),
    }
    Some(e)
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
/// nothing; one with the first layout records only object and program.
pub(crate) fn write(dir: &Path, n: usize, prog_id: u32, w: Written<'_>) -> Result<()> {
    put(dir, n, encode(prog_id, w))
}

/// Copies the origin of slot `n` (filled with `prog_id`) from the state
/// directory `from` to `to` as it was recorded (an entry of the first
/// layout keeps its later fields unknown). Nothing to copy is not an error.
pub(crate) fn copy(from: &Path, to: &Path, n: usize, prog_id: u32) -> Result<()> {
    match get(from, n) {
        Some(e) if decode(&e, prog_id).is_some() => put(to, n, e),
        _ => Ok(()),
    }
}

/// The entry for the claim filled with `prog_id`.
fn encode(prog_id: u32, w: Written<'_>) -> Entry {
    let mut e: Entry = [0; ENTRY];
    let object: Vec<u8> = if w.object.len() > OBJECT_MAX {
        cut(w.object, OBJECT_MAX - 3)
            .iter()
            .chain(b"...")
            .copied()
            .collect()
    } else {
        w.object.as_bytes().to_vec()
    };
    let program = cut(w.program, PROGRAM_MAX);
    e[0..4].copy_from_slice(&prog_id.to_le_bytes());
    e[4..6].copy_from_slice(&(object.len() as u16).to_le_bytes());
    e[6..8].copy_from_slice(&(program.len() as u16).to_le_bytes());
    e[8..8 + object.len()].copy_from_slice(&object);
    e[8 + OBJECT_MAX..8 + OBJECT_MAX + program.len()].copy_from_slice(program);
    e[HASH_AT..HASH_AT + HASH_LEN].copy_from_slice(&w.hash);
    e[FLAGS_AT] = FLAG_HASHED | if w.applied { FLAG_APPLIED } else { 0 };
    let x = &mut e[PINS_AT..PINS_AT + PINS_LEN];
    let (policy, pin_dir): (u8, &[u8]) = match w.map_pins {
        MapPins::Scoped => (1, b""),
        MapPins::Shared => (2, b""),
        MapPins::Dir(d) => match d.to_str() {
            Some(d) if d.len() <= PIN_DIR_MAX => (3, d.as_bytes()),
            _ => (0, b""),
        },
    };
    x[0] = policy;
    x[2..4].copy_from_slice(&(pin_dir.len() as u16).to_le_bytes());
    x[4..12].copy_from_slice(&w.pidns.to_le_bytes());
    x[12..12 + pin_dir.len()].copy_from_slice(pin_dir);
    e
}

/// Decodes an entry (of either layout: the first one is shorter) if it
/// belongs to `prog_id`.
fn decode(e: &[u8], prog_id: u32) -> Option<Origin> {
    let id = u32::from_le_bytes(e[0..4].try_into().ok()?);
    if id != prog_id || id == 0 {
        return None;
    }
    let olen = usize::from(u16::from_le_bytes(e[4..6].try_into().ok()?)).min(OBJECT_MAX);
    let plen = usize::from(u16::from_le_bytes(e[6..8].try_into().ok()?)).min(PROGRAM_MAX);
    let flags = e.get(FLAGS_AT).copied().unwrap_or(0);
    let mut origin = Origin {
        object: String::from_utf8_lossy(&e[8..8 + olen]).into_owned(),
        program: String::from_utf8_lossy(&e[8 + OBJECT_MAX..8 + OBJECT_MAX + plen]).into_owned(),
        hash: (flags & FLAG_HASHED != 0)
            .then(|| e[HASH_AT..HASH_AT + HASH_LEN].try_into().ok())
            .flatten(),
        applied: flags & FLAG_APPLIED != 0,
        map_pins: None,
        pidns: None,
    };
    let Some(x) = e.get(PINS_AT..PINS_AT + PINS_LEN) else {
        return Some(origin);
    };
    let dlen = usize::from(u16::from_le_bytes(x[2..4].try_into().ok()?)).min(PIN_DIR_MAX);
    origin.map_pins = match x[0] {
        1 => Some(MapPins::Scoped),
        2 => Some(MapPins::Shared),
        3 => Some(MapPins::Dir(PathBuf::from(
            String::from_utf8_lossy(&x[12..12 + dlen]).into_owned(),
        ))),
        _ => None,
    };
    origin.pidns = Some(u64::from_le_bytes(x[4..12].try_into().ok()?)).filter(|&i| i != 0);
    Some(origin)
}

/// The origin of the claim in slot `n` filled with `prog_id`, if known.
pub(crate) fn read(dir: &Path, n: usize, prog_id: u32) -> Option<Origin> {
    decode(&get(dir, n)?, prog_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w<'a>(object: &'a str, program: &'a str, map_pins: &'a MapPins) -> Written<'a> {
        Written {
            object,
            program,
            hash: hash(object.as_bytes()),
            applied: true,
            map_pins,
            pidns: 4026531836,
        }
    }

    #[test]
    fn an_origin_belongs_to_its_program_only() {
        let pins = MapPins::Dir("/sys/fs/bpf/fw".into());
        let e = encode(7, w("/srv/fw.o", "xdp_firewall_with_a_long_name", &pins));
        assert_eq!(
            decode(&e, 7),
            Some(Origin {
                object: "/srv/fw.o".into(),
                program: "xdp_firewall_with_a_long_name".into(),
                hash: Some(hash(b"/srv/fw.o")),
                applied: true,
                map_pins: Some(pins),
                pidns: Some(4026531836),
            })
        );
        assert_eq!(decode(&e, 8), None, "another claim's entry");
        assert_eq!(decode(&[0; ENTRY], 0), None, "never written");
    }

    #[test]
    fn a_long_path_is_cut_and_marked() {
        let long = format!("/{}", "d/".repeat(700));
        let o = decode(&encode(1, w(&long, "p", &MapPins::Scoped)), 1).unwrap();
        assert_eq!(o.object.len(), OBJECT_MAX);
        assert!(o.object.ends_with("..."));
        assert!(long.starts_with(o.object.trim_end_matches("...")));
    }

    #[test]
    fn a_first_layout_entry_reads_with_later_fields_unknown() {
        let e = encode(3, w("/srv/fw.o", "fw", &MapPins::Shared));
        let o = decode(&e[..ENTRY_V1], 3).unwrap();
        assert_eq!((o.object.as_str(), o.program.as_str()), ("/srv/fw.o", "fw"));
        assert_eq!((o.hash, o.applied), (None, false));
        assert_eq!((o.map_pins, o.pidns), (None, None));
    }
}
