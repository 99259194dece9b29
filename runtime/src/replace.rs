//! Replacing a claim's program: the protocol of docs/design.md, "Replace".
//!
//! Under the interface's exclusive lock: collect, then
//! 1. fill the new program into a free slot of the claim's backend, as a
//!    claim would (mask, load, record, fill; the record has the old
//!    claim's name, priority and persistence, and no run position),
//! 2. publish one new run order in which the new slot stands at the old
//!    slot's position and the old slot is gone (stage, flip, wait),
//! 3. retire the old slot (empty it, free its record).
//!
//! While both records exist they share the name; the run order says which
//! is the claim: the one with a position. A crash before the flip leaves
//! the new record without a position (an unfinished claim: [`collect`]
//! undoes it, the old claim runs on); a crash after it leaves the old one
//! without a position (an unfinished release: collect finishes it, the new
//! claim runs on). No record changes meaning, so the state layout is
//! unchanged.
use dispatcher_common::SLOT_COUNT;

use crate::{
    backend::Backend,
    claim::{Claimed, Prepared, fill_new},
    collect::collect,
    crash,
    error::{Error, Result},
    objects::Objects,
    placement,
    program::{Inspected, ProgramSource},
    record::SlotState,
    release::{SlotRef, retire},
};

/// What a replace did.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ProgramReplaced {
    /// The claim's name (unchanged).
    pub name: String,
    /// The run position the new program took over.
    pub position: usize,
    /// The slot the old program filled (now free).
    pub old_slot: usize,
    /// The old program's kernel id.
    pub old_prog_id: u32,
    /// The slot the new program fills.
    pub new_slot: usize,
    /// The new program's kernel id.
    pub new_prog_id: u32,
    /// The claim's backend (unchanged).
    pub backend: Backend,
    /// The claim is persistent (unchanged).
    pub persistent: bool,
}

/// The holder's own held claim, for [`replace`]: its program id (to check
/// that the slot still holds it) and what keeps it.
pub(crate) struct Own<'a, O: Objects> {
    pub prog_id: u32,
    pub slot: usize,
    pub hold: &'a mut Option<O::Hold>,
}

/// Replaces the program of the claim `which` by `src` (inspected as
/// `ins`). A held claim is replaced only through its holder's own objects
/// (`own`). The caller holds the exclusive lock.
pub(crate) fn replace<O: Objects>(
    objs: &mut O,
    which: &SlotRef,
    src: &ProgramSource,
    ins: &Inspected,
    own: Option<Own<'_, O>>,
) -> Result<(ProgramReplaced, Claimed<O>)> {
    if let SlotRef::Slot(n) = which
        && *n >= SLOT_COUNT
    {
        return Err(Error::NoSuchSlot {
            slot: *n,
            last: SLOT_COUNT - 1,
        });
    }
    collect(objs)?;
    let records = objs.records()?;
    let control = objs.control()?;
    let old = match which {
        SlotRef::Slot(n) => *n,
        SlotRef::Name(name) => records
            .iter()
            .position(|r| !r.is_free() && r.name == *name)
            .ok_or_else(|| Error::NoSuchClaim {
                iface: objs.iface().into(),
                name: name.clone(),
            })?,
    };
    let rec = records[old].clone();
    let not_held = || Error::NothingToReplace {
        iface: objs.iface().into(),
        slot: old,
    };
    match (&rec.state, &own) {
        (SlotState::Persistent, None) => {}
        (SlotState::Held, Some(o)) if o.slot == old && o.prog_id == rec.prog_id => {}
        (SlotState::Held, None) => {
            return Err(Error::ReplaceHeldByOther {
                iface: objs.iface().into(),
                slot: old,
                pid: rec.owner.pid,
            });
        }
        // A held claim's handle whose slot no longer holds its program
        // (released by force), or a persistent claim asked through a
        // held handle.
        _ => return Err(not_held()),
    }
    let backend = rec.backend.ok_or_else(not_held)?;
    let new =
        placement::place(|n| !records[n].is_free(), |n| backend.can_fill(n)).ok_or_else(|| {
            Error::NoSpareSlot {
                iface: objs.iface().into(),
                backend,
            }
        })?;
    let position = control.run_table().position(old).ok_or_else(not_held)?;
    let prep = Prepared {
        ins: ins.clone(),
        prio: rec.prio,
        proceed_on: u32::from(control.proceed_on[old]),
        name: rec.name.clone(),
        persistent: rec.state == SlotState::Persistent,
        run_config_ignored: false,
    };

    let (record, program, hold) = fill_new(objs, new, src, &prep, backend)?;
    crash::point("replace::filled")?;
    objs.swap_active(old, new)?;
    crash::point("replace::switched")?;
    let old_hold = own.and_then(|o| o.hold.as_mut());
    retire(objs, old, &rec, old_hold)?;
    let replaced = ProgramReplaced {
        name: rec.name.clone(),
        position,
        old_slot: old,
        old_prog_id: rec.prog_id,
        new_slot: new,
        new_prog_id: record.prog_id,
        backend,
        persistent: prep.persistent,
    };
    let claimed = Claimed {
        slot: new,
        prio: prep.prio,
        proceed_on: prep.proceed_on,
        name: prep.name,
        prog_id: record.prog_id,
        backend,
        persistent: prep.persistent,
        program,
        hold,
    };
    Ok((replaced, claimed))
}
