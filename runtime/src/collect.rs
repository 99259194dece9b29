//! Collecting stale records: the protocol of docs/design.md, "Collecting
//! stale records". Runs under the exclusive lock before every claim and
//! release, and on its own.
use std::collections::HashSet;

use crate::{
    error::Result,
    objects::Objects,
    record::{Record, SlotState},
    release::{drain, retire},
};

/// Is slot `n`'s claim complete and still backed by the kernel? `active`
/// is its bit in `CONTROL`, `progs` the loaded programs.
pub(crate) fn is_live<O: Objects>(
    objs: &O,
    active: bool,
    n: usize,
    rec: &Record,
    progs: &HashSet<u32>,
) -> bool {
    match rec.state {
        SlotState::Held | SlotState::Persistent => {
            let unfinished_hold = rec.state == SlotState::Held
                && rec.backend.is_some_and(|b| objs.hold_unfinished(b, n));
            active && progs.contains(&rec.prog_id) && !unfinished_hold
        }
        SlotState::Draining => objs.alive(rec.owner),
        SlotState::Free => true,
    }
}

/// Frees every record whose holder is gone or whose operation died
/// half-way, and every backend's leftovers in free slots; returns the
/// slots it freed.
pub(crate) fn collect<O: Objects>(objs: &mut O) -> Result<Vec<usize>> {
    let control = objs.control()?;
    let records = objs.records()?;
    let mut freed = Vec::new();
    for (n, rec) in records.iter().enumerate() {
        if rec.is_free() && objs.sweep_free(n)? {
            freed.push(n);
        }
    }
    if records.iter().all(Record::is_free) {
        sweep_maps(objs)?;
        return Ok(freed);
    }
    let progs = objs.live_programs()?;
    for (n, rec) in records.iter().enumerate() {
        if rec.is_free() || is_live(objs, control.is_active(n), n, rec, &progs) {
            continue;
        }
        if rec.state == SlotState::Held && !control.is_active(n) && objs.alive(rec.owner) {
            // Inactive, yet its holder lives: no claim of a live process is
            // ever seen half-made under the lock, so this is a forced
            // release that died before marking the slot draining. Finish
            // it: the holder's objects still fill the slot. (Still active
            // with its program gone is a holder on its way out: its files
            // are closed before it is reaped. That slot is freed below.)
            log::info!(
                "slot {n} ({}) on {}: finishing a forced release",
                rec.name,
                objs.iface()
            );
            drain(objs, n, rec)?;
            continue;
        }
        let why = match rec.state {
            SlotState::Held if !objs.alive(rec.owner) => {
                format!("its holder (pid {}) exited", rec.owner.pid)
            }
            SlotState::Draining => "its holder exited after a forced release".into(),
            _ if !progs.contains(&rec.prog_id) => format!("its program {} is gone", rec.prog_id),
            _ => "its claim never finished".into(),
        };
        log::info!(
            "slot {n} ({}) on {}: {why}; freeing the slot",
            rec.name,
            objs.iface()
        );
        if let (SlotState::Held, Some(backend)) = (rec.state, rec.backend) {
            objs.settle_dead_hold(backend, n, rec.prog_id)?;
        }
        retire(objs, n, rec, None)?;
        freed.push(n);
    }
    sweep_maps(objs)?;
    Ok(freed)
}

/// Removes the scoped map pins of every claim that is gone: its name is
/// on no record that is not free. A draining claim keeps its maps until
/// its slot is freed.
pub(crate) fn sweep_maps<O: Objects>(objs: &mut O) -> Result<()> {
    let live = objs
        .records()?
        .into_iter()
        .filter(|r| !r.is_free())
        .map(|r| r.name)
        .collect();
    objs.sweep_maps(&live)
}
