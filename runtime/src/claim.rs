//! Claiming a slot: the protocol of docs/design.md, "Claim".
//!
//! Under the interface's exclusive lock: collect, pick a free slot, then
//! 1. write the slot's proceed-on mask and zero its counters (the slot
//!    has no run position),
//! 2. load the program,
//! 3. write the record (state, priority, backend, program id),
//! 4. fill the slot,
//! 5. give it its run position (a new run order, by priority).
//!
//! A finished claim is always active and the lock excludes other writers,
//! so a claimed-but-inactive record seen under the lock is a claim that
//! died half-way: [`crate::collect`] undoes it.
use dispatcher_common::{DEFAULT_PROCEED_ON, SLOT_COUNT};

use crate::{
    backend::Backend,
    collect::collect,
    crash,
    error::{Error, Result},
    mappins::MapPins,
    objects::Objects,
    placement::{self, DEFAULT_PRIO, PRIO_MAX},
    program::{self, Inspected, ProgramSource},
    record::{Record, SlotState, default_name, encode_name},
};

/// What to claim.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// The program.
    pub program: ProgramSource,
    /// Lower runs first. Default: the program's XDP_RUN_CONFIG, else 50.
    pub prio: Option<u32>,
    /// `1 << action` mask of verdicts after which the next slot runs.
    /// Default: the program's XDP_RUN_CONFIG, else XDP_PASS only.
    pub proceed_on: Option<u32>,
    /// Default: the program's name, made a valid claim name (cut to 32
    /// bytes with a hash of the whole when longer); the claim's
    /// [`name`](crate::Claim::name) says which.
    pub name: Option<String>,
    /// Persistent claims stay until released; held ones end with the
    /// process (or when the [`Claim`](crate::Claim) is dropped).
    pub persistent: bool,
    /// `None`: the interface's backend.
    pub backend: Option<Backend>,
    /// Where the maps the program pins by name go: by default the claim's
    /// own directory, removed with the claim.
    pub pin_maps: MapPins,
}

impl ClaimRequest {
    /// A held claim of `program` with every default.
    pub fn new(program: ProgramSource) -> Self {
        Self {
            program,
            prio: None,
            proceed_on: None,
            name: None,
            persistent: false,
            backend: None,
            pin_maps: MapPins::Scoped,
        }
    }
}

/// A request checked against its object, before anything changes.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub ins: Inspected,
    pub prio: u32,
    pub proceed_on: u32,
    pub name: String,
    pub persistent: bool,
    /// The program's XDP_RUN_CONFIG could not be read and a default took
    /// its place.
    pub run_config_ignored: bool,
}

/// Checks the object and the request: program, priority, name.
pub(crate) fn prepare(req: &ClaimRequest) -> Result<Prepared> {
    let ins = program::inspect(&req.program)?;
    let prio = req
        .prio
        .or(ins.run_config.and_then(|r| r.priority))
        .unwrap_or(DEFAULT_PRIO);
    if prio > PRIO_MAX {
        return Err(Error::PriorityOutOfRange {
            prio,
            max: PRIO_MAX,
        });
    }
    let proceed_on = req
        .proceed_on
        .or(ins.run_config.and_then(|r| r.proceed_on))
        .unwrap_or(DEFAULT_PROCEED_ON);
    let name = req.name.clone().unwrap_or_else(|| default_name(&ins.name));
    encode_name(&name)?;
    Ok(Prepared {
        run_config_ignored: ins.run_config_unreadable
            && (req.prio.is_none() || req.proceed_on.is_none()),
        ins,
        prio,
        proceed_on,
        name,
        persistent: req.persistent,
    })
}

/// A finished claim, as the protocol leaves it.
pub(crate) struct Claimed<O: Objects> {
    pub slot: usize,
    pub prio: u32,
    pub proceed_on: u32,
    pub name: String,
    pub prog_id: u32,
    pub backend: Backend,
    pub persistent: bool,
    pub program: O::Program,
    pub hold: Option<O::Hold>,
}

/// Picks the slot for a claim, or says why there is none.
fn choose_slot<O: Objects>(
    objs: &O,
    records: &[Record],
    prep: &Prepared,
    backend: Backend,
) -> Result<usize> {
    let iface = || objs.iface().to_string();
    if let Some(n) = records
        .iter()
        .position(|r| !r.is_free() && r.name == prep.name)
    {
        return Err(Error::NameTaken {
            iface: iface(),
            name: prep.name.clone(),
            slot: n,
        });
    }
    let taken = records.iter().filter(|r| !r.is_free()).count();
    if taken == SLOT_COUNT {
        return Err(Error::SlotsFull {
            iface: iface(),
            count: SLOT_COUNT,
        });
    }
    let active = records
        .iter()
        .filter(|r| {
            matches!(r.state, SlotState::Held | SlotState::Persistent) && r.backend == Some(backend)
        })
        .count();
    if active >= backend.capacity() {
        return Err(Error::BackendFull {
            iface: iface(),
            backend,
            active,
            max: backend.capacity(),
        });
    }
    // Free slots this backend can fill can run out before its capacity
    // does only while draining claims hold some.
    placement::place(|n| !records[n].is_free(), |n| backend.can_fill(n)).ok_or_else(|| {
        Error::SlotsFull {
            iface: iface(),
            count: SLOT_COUNT,
        }
    })
}

/// Steps 1-4 of a claim in free slot `slot`: mask, load, record, fill. The
/// slot has no run position yet, so no packet meets the program; a crash
/// anywhere here leaves a claimed record without a position, which
/// [`collect`] undoes. Used by a claim and by a replace alike.
pub(crate) fn fill_new<O: Objects>(
    objs: &mut O,
    slot: usize,
    src: &ProgramSource,
    prep: &Prepared,
    backend: Backend,
) -> Result<(Record, O::Program, Option<O::Hold>)> {
    objs.set_proceed_on(slot, prep.proceed_on)?;
    // The counters belong to the claim: a new one starts at zero, not at
    // the previous holder's figures. No packet can count for the slot now:
    // a free slot has no run position, and the change that took the
    // previous holder's position away returned only after the grace
    // period (`set_active` waits, or the next change waits first when it
    // died before that), so every run that could still count for it has
    // finished. The slot counts again only once `set_active` below gives
    // it a position.
    objs.zero_counters(slot)?;
    crash::point("claim::mask")?;
    let mut program = objs.load(backend, slot, src, &prep.ins)?;
    crash::point("claim::loaded")?;
    let mut record = Record {
        state: if prep.persistent {
            SlotState::Persistent
        } else {
            SlotState::Held
        },
        prio: prep.prio,
        backend: Some(backend),
        prog_id: objs.program_id(&program)?,
        link_id: 0,
        owner: objs.me(),
        claimed_at: objs.now(),
        name: prep.name.clone(),
    };
    objs.write_record(slot, &record)?;
    crash::point("claim::recorded")?;
    let hold = match objs.fill(backend, slot, &mut program, prep.persistent) {
        Ok((link_id, hold)) => {
            if link_id != 0 {
                record.link_id = link_id;
                objs.write_record(slot, &record)?;
            }
            hold
        }
        Err(e) => {
            // Nothing fills the slot: the record goes, and the program
            // with this process's fd.
            let _ = objs.write_record(slot, &Record::FREE);
            return Err(e);
        }
    };
    Ok((record, program, hold))
}

/// Claims a slot with `backend`. The caller holds the exclusive lock.
pub(crate) fn claim<O: Objects>(
    objs: &mut O,
    src: &ProgramSource,
    prep: &Prepared,
    backend: Backend,
) -> Result<Claimed<O>> {
    collect(objs)?;
    let slot = choose_slot(objs, &objs.records()?, prep, backend)?;

    let (record, program, hold) = fill_new(objs, slot, src, prep, backend)?;
    crash::point("claim::filled")?;
    objs.set_active(slot, true)?;
    crash::point("claim::active")?;
    Ok(Claimed {
        slot,
        prio: prep.prio,
        proceed_on: prep.proceed_on,
        name: prep.name.clone(),
        prog_id: record.prog_id,
        backend,
        persistent: prep.persistent,
        program,
        hold,
    })
}
