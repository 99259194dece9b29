//! The kernel objects of one interface, as the protocol (claim, release,
//! collect) sees them: the `CONTROL` value, the claim records, which
//! programs and processes are alive, and a backend's fill and empty.
//!
//! [`State`](crate::state::State) is the real one. A unit-test fake
//! (`fake.rs`) simulates the kernel's side in memory (fds, pins, deferred
//! clears, process exit), so the protocol's rules are tested without a
//! kernel; the integration tests run the same code against the real one.
use std::collections::HashSet;

use dispatcher_common::{Control, RunTable, SLOT_COUNT};

use crate::{
    backend::Backend,
    crash,
    error::{Error, Result},
    program::{Inspected, ProgramSource},
    record::{Owner, Record},
};

/// What a new run order does (for its crash points).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// A slot gets a position.
    Activate,
    /// A slot loses its position.
    Deactivate,
    /// A slot takes another's position.
    Replace,
}

/// One interface's kernel objects. Every method runs under the
/// interface's exclusive lock (or its shared one, for reads).
pub(crate) trait Objects {
    /// A loaded program, kept loaded while this lives.
    type Program;
    /// What a held claim keeps open (see [`crate::backend::Hold`]).
    type Hold;

    /// The interface's name, for messages.
    fn iface(&self) -> &str;
    /// The error for damaged state in the pin `pin` (see [`crate::pin`]).
    fn corrupt(&self, pin: &'static str, why: String) -> Error;

    /// Reads `CONTROL`.
    fn control(&self) -> Result<Control>;
    /// Writes `CONTROL` whole.
    fn write_control(&mut self, c: &Control) -> Result<()>;
    /// Reads slot `n`'s raw record.
    fn raw_record(&self, n: usize) -> Result<dispatcher_common::SlotConfig>;
    /// Writes slot `n`'s raw record.
    fn write_raw_record(&mut self, n: usize, r: &dispatcher_common::SlotConfig) -> Result<()>;

    /// Ids of every loaded program.
    fn live_programs(&self) -> Result<HashSet<u32>>;
    /// Does the process that made a claim still run?
    fn alive(&self, owner: Owner) -> bool;
    /// The calling process.
    fn me(&self) -> Owner;
    /// Seconds since the epoch, for records.
    fn now(&self) -> u64;

    /// Loads a program for slot `n` with `backend`.
    fn load(
        &mut self,
        backend: Backend,
        n: usize,
        src: &ProgramSource,
        ins: &Inspected,
    ) -> Result<Self::Program>;
    /// The kernel id of a loaded program.
    fn program_id(&self, prog: &Self::Program) -> Result<u32>;
    /// Puts the program into slot `n`; returns the link id (0 if none) and,
    /// for a held claim, what keeps it.
    fn fill(
        &mut self,
        backend: Backend,
        n: usize,
        prog: &mut Self::Program,
        persistent: bool,
    ) -> Result<(u32, Option<Self::Hold>)>;
    /// Empties slot `n` (through the holder's objects, if given).
    fn empty(&mut self, backend: Backend, n: usize, hold: Option<&mut Self::Hold>) -> Result<()>;
    /// See [`crate::backend::SlotBackend::hold_unfinished`].
    fn hold_unfinished(&self, backend: Backend, n: usize) -> bool;
    /// See [`crate::backend::SlotBackend::settle_dead_hold`].
    fn settle_dead_hold(&self, backend: Backend, n: usize, prog_id: u32) -> Result<()>;
    /// Removes every backend's leftovers from free slot `n`; true if any.
    fn sweep_free(&mut self, n: usize) -> Result<bool>;
    /// Removes the scoped map pins of every claim whose name is not in
    /// `live` (see [`crate::mappins`]). Nothing to do where maps are not
    /// pinned (the in-memory kernel).
    fn sweep_maps(&mut self, live: &HashSet<String>) -> Result<()> {
        let _ = live;
        Ok(())
    }
    /// Waits until every dispatcher run that started before the call has
    /// finished (an RCU grace period): after it, no packet reads a run
    /// table it read before.
    fn quiesce(&self) -> Result<()>;
    /// Zeroes slot `n`'s counters (`STATS`, every CPU); only while no
    /// packet can count for the slot (it has no run position and the wait
    /// that took it out has returned).
    fn zero_counters(&mut self, n: usize) -> Result<()>;

    /// Slot `n`'s record, decoded.
    fn record(&self, n: usize) -> Result<Record> {
        Record::decode(n, &self.raw_record(n)?).map_err(|why| self.corrupt(crate::pin::SLOTS, why))
    }

    /// Every record, in slot order.
    fn records(&self) -> Result<Vec<Record>> {
        (0..SLOT_COUNT).map(|n| self.record(n)).collect()
    }

    /// Writes slot `n`'s record.
    fn write_record(&mut self, n: usize, r: &Record) -> Result<()> {
        self.write_raw_record(n, &r.encode())
    }

    /// Gives slot `n` a run position (`on`) or takes it away: the one change
    /// that makes the datapath start or stop running the slot. A new
    /// position comes after every slot of equal or lower priority, so the
    /// run order is priority order and equal priorities run first come,
    /// first served.
    ///
    /// The new order goes into the table packets do not read, then one
    /// byte (`current`) switches packets to it, then this waits until no
    /// packet can still be reading the old table ([`Objects::quiesce`]).
    /// So a packet sees the old order or the new one, whole; and once this
    /// returns, no packet runs a slot that was taken out. A change that died
    /// before its wait leaves `settled` at 0, and the next change waits
    /// first.
    fn set_active(&mut self, n: usize, on: bool) -> Result<()> {
        let (c, mut order) = self.settled_order()?;
        match (on, order.iter().position(|&s| s == n)) {
            (true, Some(_)) | (false, None) => return Ok(()),
            (true, None) => {
                let prio = self.record(n)?.prio;
                let mut at = 0;
                for (p, &s) in order.iter().enumerate() {
                    if self.record(s)?.prio <= prio {
                        at = p + 1;
                    }
                }
                order.insert(at, n);
            }
            (false, Some(p)) => {
                order.remove(p);
            }
        }
        self.publish(
            c,
            &order,
            if on {
                Change::Activate
            } else {
                Change::Deactivate
            },
        )
    }

    /// Puts slot `new` at slot `old`'s run position and takes `old` out,
    /// in one new run order: a packet runs the old order or the new one,
    /// so it meets exactly one of the two slots. Once this returns, no
    /// packet runs `old`. Nothing to do if `new` already has a position
    /// (the switch was published) or `old` has none.
    fn swap_active(&mut self, old: usize, new: usize) -> Result<()> {
        let (c, mut order) = self.settled_order()?;
        if order.contains(&new) {
            return Ok(());
        }
        let Some(p) = order.iter().position(|&s| s == old) else {
            return Ok(());
        };
        order[p] = new;
        self.publish(c, &order, Change::Replace)
    }

    /// `CONTROL` and the run order packets read, after the wait a change
    /// that died before its own left owing.
    fn settled_order(&mut self) -> Result<(Control, Vec<usize>)> {
        let mut c = self.control()?;
        if c.settled == 0 {
            self.quiesce()?;
            c.settled = 1;
            self.write_control(&c)?;
        }
        let cur = (c.current & 1) as usize;
        let order = c.tables[cur].slots().iter().map(|&s| s as usize).collect();
        Ok((c, order))
    }

    /// Publishes `order`: into the table packets do not read, then one
    /// byte (`current`) switches packets to it, then the wait.
    fn publish(&mut self, mut c: Control, order: &[usize], change: Change) -> Result<()> {
        let cur = (c.current & 1) as usize;
        c.tables[1 - cur] = RunTable::from_slots(order);
        c.settled = 0;
        self.write_control(&c)?;
        match change {
            Change::Activate => crash::point("activate::staged")?,
            Change::Deactivate => crash::point("deactivate::staged")?,
            Change::Replace => crash::point("replace::staged")?,
        }
        c.current = (1 - cur) as u8;
        self.write_control(&c)?;
        match change {
            Change::Activate => crash::point("activate::flipped")?,
            Change::Deactivate => crash::point("deactivate::flipped")?,
            Change::Replace => crash::point("replace::flipped")?,
        }
        self.quiesce()?;
        c.settled = 1;
        self.write_control(&c)
    }

    /// Writes slot `n`'s proceed-on mask (`1 << action`); only while the
    /// slot has no run position (see `Control`).
    fn set_proceed_on(&mut self, n: usize, mask: u32) -> Result<()> {
        let mut c = self.control()?;
        c.proceed_on[n] = mask as u8;
        self.write_control(&c)
    }

    /// Sets or clears a `FLAG_*` bit.
    fn set_flag(&mut self, flag: u32, on: bool) -> Result<()> {
        let mut c = self.control()?;
        if on {
            c.flags |= flag;
        } else {
            c.flags &= !flag;
        }
        self.write_control(&c)
    }
}
