//! Releasing a claim: the protocol of docs/design.md, "Release".
//!
//! Under the interface's exclusive lock, a claim is retired in the reverse
//! order of its making: clear the active bit, empty the slot, free the
//! record. Another process's held claim released by force cannot be
//! emptied of what its holder keeps open (an extension link), so it is
//! drained instead: inactive, emptied as far as possible, and marked
//! draining until its holder exits.
use dispatcher_common::SLOT_COUNT;

use crate::{
    collect::{collect, sweep_maps},
    crash,
    error::{Error, Result},
    objects::Objects,
    record::{Record, SlotState},
};

/// Which claim to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotRef {
    /// By slot number.
    Slot(usize),
    /// By claim name.
    Name(String),
}

impl std::str::FromStr for SlotRef {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse() {
            Ok(n) => SlotRef::Slot(n),
            Err(_) => SlotRef::Name(s.into()),
        })
    }
}

/// What a release did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Released {
    /// The slot.
    pub slot: usize,
    /// The claim's name.
    pub name: String,
    /// A held claim released by force: its holder still runs, so the slot
    /// is reused only after it exits.
    pub draining: bool,
    /// The claim was stale (its holder had exited, or its program was
    /// gone): the collection that precedes every release freed it.
    pub stale: bool,
}

/// How a holder's own release of its held claim ended
/// ([`Claim::release`](crate::Claim::release)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OwnRelease {
    /// This call took the claim out of the run and emptied its slot.
    Released,
    /// Another process had released it by force (the slot was draining);
    /// this call freed the slot.
    ForcedBefore,
    /// The slot no longer held this claim: released by force and reused,
    /// or freed while the state was repaired. Nothing was done.
    Gone,
    /// A persistent claim: left in place (see
    /// [`Runtime::release`](crate::Runtime::release)).
    Persistent,
}

/// Deactivates slot `n`, empties it (through the holder's objects, if
/// given) and frees its record: the one way a claim leaves a slot.
pub(crate) fn retire<O: Objects>(
    objs: &mut O,
    n: usize,
    rec: &Record,
    hold: Option<&mut O::Hold>,
) -> Result<()> {
    objs.set_active(n, false)?;
    crash::point("retire::inactive")?;
    if let Some(backend) = rec.backend {
        objs.empty(backend, n, hold)?;
    }
    crash::point("retire::emptied")?;
    objs.write_record(n, &Record::FREE)
}

/// Takes another live process's held claim out of the run: deactivates and
/// empties slot `n` as far as its holder's open objects allow, and marks
/// it draining. Idempotent.
pub(crate) fn drain<O: Objects>(objs: &mut O, n: usize, rec: &Record) -> Result<()> {
    objs.set_active(n, false)?;
    if let Some(backend) = rec.backend {
        objs.empty(backend, n, None)?;
    }
    crash::point("release::forced")?;
    let draining = Record {
        state: SlotState::Draining,
        ..rec.clone()
    };
    objs.write_record(n, &draining)
}

/// Releases the claim `which`. Another process's held claim needs `force`.
/// The caller holds the exclusive lock.
pub(crate) fn release<O: Objects>(objs: &mut O, which: &SlotRef, force: bool) -> Result<Released> {
    if let SlotRef::Slot(n) = which
        && *n >= SLOT_COUNT
    {
        return Err(Error::NoSuchSlot {
            slot: *n,
            last: SLOT_COUNT - 1,
        });
    }
    // The claim asked for, as it was before the collection: a claim whose
    // holder is gone is freed by the collection, and that is its release.
    let before = objs.records()?;
    let find = |records: &[Record]| match which {
        SlotRef::Slot(n) => Some(*n),
        SlotRef::Name(name) => records.iter().position(|r| !r.is_free() && r.name == *name),
    };
    let asked = find(&before);
    let freed = collect(objs)?;
    if let Some(n) = asked
        && freed.contains(&n)
        && matches!(before[n].state, SlotState::Held | SlotState::Persistent)
    {
        return Ok(Released {
            slot: n,
            name: before[n].name.clone(),
            draining: false,
            stale: true,
        });
    }
    let records = objs.records()?;
    let slot = find(&records).ok_or_else(|| match which {
        SlotRef::Name(name) => Error::NoSuchClaim {
            iface: objs.iface().into(),
            name: name.clone(),
        },
        SlotRef::Slot(_) => unreachable!("a slot number always names a slot"),
    })?;
    let rec = &records[slot];
    let released = |draining| Released {
        slot,
        name: rec.name.clone(),
        draining,
        stale: false,
    };
    match rec.state {
        SlotState::Persistent => {
            retire(objs, slot, rec, None)?;
            sweep_maps(objs)?;
            Ok(released(false))
        }
        SlotState::Held => {
            if rec.owner != objs.me() && !force {
                return Err(Error::HeldByOther {
                    iface: objs.iface().into(),
                    slot,
                    pid: rec.owner.pid,
                });
            }
            drain(objs, slot, rec)?;
            Ok(released(true))
        }
        SlotState::Free | SlotState::Draining => Err(Error::NotHeld {
            iface: objs.iface().into(),
            slot,
        }),
    }
}

/// The holder's own release of its held claim in `slot` (filled with
/// `prog_id`), ending with its hold. Nothing to do if the claim was
/// released by force and the slot reused meanwhile.
pub(crate) fn release_own<O: Objects>(
    objs: &mut O,
    slot: usize,
    prog_id: u32,
    mut hold: O::Hold,
) -> Result<OwnRelease> {
    let rec = objs.record(slot)?;
    if rec.prog_id != prog_id {
        return Ok(OwnRelease::Gone);
    }
    match rec.state {
        SlotState::Draining => {
            // Released by force: the slot waited for our objects; they go
            // now.
            drop(hold);
            objs.write_record(slot, &Record::FREE)?;
            sweep_maps(objs)?;
            Ok(OwnRelease::ForcedBefore)
        }
        SlotState::Held => {
            retire(objs, slot, &rec, Some(&mut hold))?;
            sweep_maps(objs)?;
            Ok(OwnRelease::Released)
        }
        SlotState::Free | SlotState::Persistent => Ok(OwnRelease::Gone),
    }
}
