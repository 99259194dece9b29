//! Claim records (`SLOTS` entries), typed: the raw `u32` codes of the
//! contract turned into enums, checked on the way in.
use dispatcher_common::{
    NAME_LEN, STATE_DRAINING, STATE_FREE, STATE_HELD, STATE_PERSISTENT, SlotConfig,
};

use crate::{backend::Backend, error::Error};

/// The lifecycle state of a slot's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Nobody holds the slot.
    Free,
    /// Held by a live process; released when it exits.
    Held,
    /// Stays until released.
    Persistent,
    /// A held claim released by force: emptied and inactive, but its holder
    /// still has the slot's objects open, so the slot is reused only after
    /// that process exits.
    Draining,
}

impl SlotState {
    /// The name used in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Held => "held",
            Self::Persistent => "persistent",
            Self::Draining => "draining",
        }
    }

    /// The stored code.
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::Free => STATE_FREE,
            Self::Held => STATE_HELD,
            Self::Persistent => STATE_PERSISTENT,
            Self::Draining => STATE_DRAINING,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        [Self::Free, Self::Held, Self::Persistent, Self::Draining]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// Who made a claim: a process, by pid and start time (a pid alone can be
/// reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Owner {
    pub pid: u32,
    /// Clock ticks since boot.
    pub start: u64,
}

/// A slot's record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub state: SlotState,
    pub prio: u32,
    /// `None` only in a free record.
    pub backend: Option<Backend>,
    pub prog_id: u32,
    pub link_id: u32,
    pub owner: Owner,
    pub claimed_at: u64,
    pub name: String,
}

impl Record {
    /// A free slot.
    pub const FREE: Self = Self {
        state: SlotState::Free,
        prio: 0,
        backend: None,
        prog_id: 0,
        link_id: 0,
        owner: Owner { pid: 0, start: 0 },
        claimed_at: 0,
        name: String::new(),
    };

    pub fn is_free(&self) -> bool {
        self.state == SlotState::Free
    }

    /// Decodes slot `n`'s raw record; a code this version does not know is
    /// damage, reported as such (`why`).
    pub fn decode(n: usize, raw: &SlotConfig) -> Result<Self, String> {
        let state = SlotState::from_code(raw.state)
            .ok_or_else(|| format!("slot {n} has state {}", raw.state))?;
        let backend = Backend::from_code(raw.backend);
        if state != SlotState::Free && backend.is_none() {
            return Err(format!("slot {n} has backend {}", raw.backend));
        }
        Ok(Self {
            state,
            prio: raw.prio,
            backend,
            prog_id: raw.prog_id,
            link_id: raw.link_id,
            owner: Owner {
                pid: raw.owner_pid,
                start: raw.owner_start,
            },
            claimed_at: raw.claimed_at,
            name: decode_name(&raw.name),
        })
    }

    /// The raw record. The name must have passed [`encode_name`].
    pub fn encode(&self) -> SlotConfig {
        SlotConfig {
            state: self.state.code(),
            prio: self.prio,
            backend: self
                .backend
                .map_or(dispatcher_common::BACKEND_NONE, Backend::code),
            prog_id: self.prog_id,
            link_id: self.link_id,
            owner_pid: self.owner.pid,
            owner_start: self.owner.start,
            claimed_at: self.claimed_at,
            name: encode_name(&self.name).unwrap_or([0; NAME_LEN]),
        }
    }
}

/// Checks a claim name and pads it for the record.
pub(crate) fn encode_name(name: &str) -> Result<[u8; NAME_LEN], Error> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(Error::BadName {
            name: name.into(),
            max: NAME_LEN,
        });
    }
    let mut out = [0u8; NAME_LEN];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// The claim name a program gets when none is given: its own name when
/// that is a valid claim name; otherwise that name with every byte a name
/// may not hold replaced by '_' and, when it is too long, cut to its first
/// bytes and a hash of the whole name (so two long names that start alike
/// still differ, and the same program always gets the same name).
pub(crate) fn default_name(program: &str) -> String {
    let clean: String = program
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        return "program".into();
    }
    if clean.len() <= NAME_LEN {
        return clean;
    }
    // FNV-1a: small, and stable across builds and platforms.
    let hash = program.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let tag = format!("-{hash:08x}");
    format!("{}{tag}", &clean[..NAME_LEN - tag.len()])
}

/// The name stored in a raw record.
fn decode_name(raw: &[u8; NAME_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record {
            state: SlotState::Held,
            prio: 20,
            backend: Some(Backend::TailCall),
            prog_id: 7,
            link_id: 0,
            owner: Owner { pid: 3, start: 4 },
            claimed_at: 5,
            name: "fw.v2-a_b".into(),
        };
        assert_eq!(Record::decode(1, &r.encode()), Ok(r));
        assert_eq!(Record::decode(1, &SlotConfig::FREE), Ok(Record::FREE));
    }

    #[test]
    fn unknown_codes_are_damage() {
        let bad_state = SlotConfig {
            state: 9,
            ..SlotConfig::FREE
        };
        assert!(
            Record::decode(4, &bad_state)
                .unwrap_err()
                .contains("slot 4")
        );
        let no_backend = SlotConfig {
            state: STATE_HELD,
            ..SlotConfig::FREE
        };
        assert!(Record::decode(4, &no_backend).is_err());
    }

    #[test]
    fn default_names_are_valid() {
        assert_eq!(default_name("xdp_pass"), "xdp_pass");
        let long = "xdp_test_prog_with_a_long_name_too";
        let name = default_name(long);
        assert_eq!(name.len(), NAME_LEN);
        assert!(name.starts_with("xdp_test_prog_with_a_lo-"), "{name}");
        assert!(encode_name(&name).is_ok());
        assert_eq!(default_name(long), name, "the same name every time");
        assert_ne!(default_name("xdp_test_prog_with_a_long_name_two"), name);
        assert_eq!(default_name("a::b"), "a__b");
        assert!(encode_name(&default_name(&"é".repeat(40))).is_ok());
    }

    #[test]
    fn names_are_checked() {
        assert!(encode_name("").is_err());
        assert!(encode_name(&"x".repeat(NAME_LEN + 1)).is_err());
        assert!(encode_name("a b").is_err());
        assert!(encode_name(&"x".repeat(NAME_LEN)).is_ok());
    }
}
