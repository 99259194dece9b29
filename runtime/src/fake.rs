//! An in-memory kernel for the protocol's unit tests: the [`Objects`] of
//! one interface, with the kernel's rules for what outlives whom.
//!
//! - A program stays loaded while an fd, a program-array entry or a link
//!   refers to it.
//! - A program array keeps its entries while a pin or an fd refers to it;
//!   when the last goes, the kernel clears it later, from a work queue
//!   ([`Sim::kernel_work`]).
//! - A link lives while a pin or an fd refers to it; one link per slot.
//! - A process's fds close when it exits ([`Sim::kill`]).
//! - Packets may be reading the current run table, and after a switch the
//!   old one too until a grace period passes ([`Objects::quiesce`]).
//!   Writing a table packets may read, or emptying a slot they may run, is
//!   a protocol error: the fake panics.
//! - After an armed crash point fires (see `crash::sim`), every operation
//!   fails without effect, as if the process had died there.
use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    rc::Rc,
};

use dispatcher_common::{Control, SLOT_COUNT, SlotConfig, has_prog_array};

use crate::{
    backend::Backend,
    crash,
    error::{Error, Result},
    objects::Objects,
    program::{Inspected, ProgramSource},
    record::{Owner, Record, SlotState},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fd {
    Prog(u32),
    Array(usize),
    Link(usize),
}

#[derive(Debug, Default)]
struct Array {
    entry: Option<u32>,
    pinned: bool,
    pending_clear: bool,
}

#[derive(Debug)]
struct Link {
    prog: u32,
    pinned: bool,
}

/// The simulated kernel and the processes using it.
#[derive(Debug)]
pub(crate) struct Sim {
    control: Control,
    /// Run tables packets may be reading: the current one, and the other
    /// one after a flip until a quiesce.
    tables_read: [bool; 2],
    /// Quiesces (grace periods waited for).
    pub quiesces: usize,
    records: Vec<SlotConfig>,
    arrays: Vec<Option<Array>>,
    links: Vec<Option<Link>>,
    /// Open fds per process: (fd number, object).
    fds: HashMap<u32, Vec<(u64, Fd)>>,
    alive: HashSet<u32>,
    next_id: u32,
    next_fd: u64,
    next_pid: u32,
    /// Per-slot packet counters (`STATS`), summed over CPUs.
    pub counters: Vec<u64>,
    /// Protocol-visible writes, in order, for the ordering tests.
    pub log: Vec<String>,
}

pub(crate) type Shared = Rc<RefCell<Sim>>;

impl Sim {
    /// A freshly attached dispatcher: every slot free, every array parked.
    pub fn new() -> Shared {
        let control = Control {
            magic: dispatcher_common::CONTROL_MAGIC,
            version: dispatcher_common::LAYOUT_VERSION,
            ..Control::default()
        };
        Rc::new(RefCell::new(Sim {
            control,
            tables_read: [true, false],
            quiesces: 0,
            records: vec![SlotConfig::FREE; SLOT_COUNT],
            arrays: (0..SLOT_COUNT)
                .map(|n| {
                    has_prog_array(n).then(|| Array {
                        pinned: true,
                        ..Array::default()
                    })
                })
                .collect(),
            links: (0..SLOT_COUNT).map(|_| None).collect(),
            fds: HashMap::new(),
            alive: HashSet::new(),
            next_id: 100,
            next_fd: 3,
            next_pid: 1000,
            counters: vec![0; SLOT_COUNT],
            log: Vec::new(),
        }))
    }

    fn open(&mut self, pid: u32, fd: Fd) -> u64 {
        self.next_fd += 1;
        self.fds.entry(pid).or_default().push((self.next_fd, fd));
        self.next_fd
    }

    fn array_refs(&self, n: usize) -> usize {
        self.fds
            .values()
            .flatten()
            .filter(|(_, f)| *f == Fd::Array(n))
            .count()
    }

    fn link_refs(&self, n: usize) -> usize {
        self.fds
            .values()
            .flatten()
            .filter(|(_, f)| *f == Fd::Link(n))
            .count()
    }

    /// Closes fd `no` of `pid` (if still open) with the kernel's
    /// consequences.
    fn close(&mut self, pid: u32, no: u64) {
        let Some(list) = self.fds.get_mut(&pid) else {
            return;
        };
        let Some(i) = list.iter().position(|(f, _)| *f == no) else {
            return;
        };
        let (_, fd) = list.remove(i);
        self.released(fd);
    }

    fn released(&mut self, fd: Fd) {
        match fd {
            Fd::Prog(_) => {}
            Fd::Array(n) => {
                let refs = self.array_refs(n);
                let a = self.arrays[n].as_mut().expect("slot has an array");
                if !a.pinned && refs == 0 {
                    a.pending_clear = true;
                }
            }
            Fd::Link(n) => {
                let refs = self.link_refs(n);
                if self.links[n].as_ref().is_some_and(|l| !l.pinned) && refs == 0 {
                    self.links[n] = None;
                }
            }
        }
    }

    /// Packets in flight count for every slot of every run table they may
    /// still read (the current one, and the other until a grace period).
    pub fn count_packets(&mut self, packets: u64) {
        for t in 0..2 {
            if self.tables_read[t] {
                for &n in self.control.tables[t].slots() {
                    self.counters[n as usize] += packets;
                }
            }
        }
    }

    /// A new process.
    pub fn spawn(sim: &Shared) -> Fake {
        let mut s = sim.borrow_mut();
        s.next_pid += 1;
        let pid = s.next_pid;
        s.alive.insert(pid);
        Fake {
            sim: sim.clone(),
            me: Owner { pid, start: 1 },
        }
    }

    /// The process exits (SIGKILL): its fds close.
    pub fn kill(&mut self, pid: u32) {
        self.exiting(pid);
        self.alive.remove(&pid);
    }

    /// The process is on its way out: its fds are closed, and it is not
    /// yet reaped (it still counts as alive).
    pub fn exiting(&mut self, pid: u32) {
        for (_, fd) in self.fds.remove(&pid).unwrap_or_default() {
            self.released(fd);
        }
    }

    /// The kernel's deferred work: pending array clears.
    pub fn kernel_work(&mut self) {
        for a in self.arrays.iter_mut().flatten() {
            if a.pending_clear {
                a.entry = None;
                a.pending_clear = false;
            }
        }
    }

    fn program_alive(&self, id: u32) -> bool {
        self.fds.values().flatten().any(|(_, f)| *f == Fd::Prog(id))
            || self.arrays.iter().flatten().any(|a| a.entry == Some(id))
            || self.links.iter().flatten().any(|l| l.prog == id)
    }

    fn live_programs(&self) -> HashSet<u32> {
        (100..self.next_id + 1)
            .filter(|id| self.program_alive(*id))
            .collect()
    }

    /// Checks that the state is whole, as every operation must leave it
    /// once a collect has run: records, activity, slot contents, run order
    /// and the kernel's objects agree, and nothing is loaded that no claim
    /// or live process accounts for.
    pub fn check_whole(&self) {
        let c = &self.control;
        let mut claimed_progs = HashSet::new();
        for n in 0..SLOT_COUNT {
            let rec = Record::decode(n, &self.records[n]).expect("records decode");
            let active = c.is_active(n);
            let array = self.arrays[n].as_ref();
            let link = self.links[n].as_ref();
            let what = format!("slot {n}: {rec:?} active {active} array {array:?} link {link:?}");
            match rec.state {
                SlotState::Free => {
                    assert!(!active, "{what}");
                    assert!(link.is_none(), "{what}");
                    if let Some(a) = array {
                        assert!(a.pinned && a.entry.is_none() && !a.pending_clear, "{what}");
                    }
                }
                SlotState::Held | SlotState::Persistent => {
                    let persistent = rec.state == SlotState::Persistent;
                    if !persistent {
                        assert!(self.alive.contains(&rec.owner.pid), "{what}");
                    }
                    assert!(active, "{what}");
                    claimed_progs.insert(rec.prog_id);
                    match rec.backend.expect("a claim has a backend") {
                        Backend::TailCall => {
                            let a = array.expect("tail-call slot has an array");
                            assert_eq!(a.entry, Some(rec.prog_id), "{what}");
                            assert_eq!(a.pinned, persistent, "{what}");
                            assert!(!a.pending_clear, "{what}");
                            assert!(link.is_none(), "{what}");
                        }
                        Backend::Freplace => {
                            let l = link.expect("freplace slot has a link");
                            assert_eq!(l.prog, rec.prog_id, "{what}");
                            assert_eq!(l.pinned, persistent, "{what}");
                            if let Some(a) = array {
                                assert!(a.entry.is_none(), "{what}");
                            }
                        }
                    }
                }
                SlotState::Draining => {
                    assert!(!active, "{what}");
                    assert!(self.alive.contains(&rec.owner.pid), "{what}");
                    if let Some(a) = array {
                        assert!(a.entry.is_none(), "{what}");
                    }
                }
            }
        }
        // The run order is priority order, each slot once.
        let order = c.run_table().slots();
        let prios: Vec<u32> = order
            .iter()
            .map(|&n| {
                Record::decode(n as usize, &self.records[n as usize])
                    .unwrap()
                    .prio
            })
            .collect();
        assert!(
            prios.windows(2).all(|w| w[0] <= w[1]),
            "run order {order:?} has priorities {prios:?}"
        );
        let mut unique = order.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), order.len(), "run order {order:?}");
        assert_eq!(c.settled, 1, "a change is still settling");
        let held_by_live: HashSet<u32> = self
            .fds
            .iter()
            .filter(|(pid, _)| self.alive.contains(pid))
            .flat_map(|(_, l)| l.iter())
            .filter_map(|(_, f)| match f {
                Fd::Prog(id) => Some(*id),
                _ => None,
            })
            .collect();
        for id in self.live_programs() {
            assert!(
                claimed_progs.contains(&id) || held_by_live.contains(&id),
                "program {id} leaked"
            );
        }
    }
}

/// One process's view of the interface.
pub(crate) struct Fake {
    sim: Shared,
    pub me: Owner,
}

/// A loaded program: an fd of its process.
pub(crate) struct FakeProgram {
    sim: Shared,
    pid: u32,
    fd: u64,
    id: u32,
}

impl Drop for FakeProgram {
    fn drop(&mut self) {
        self.sim.borrow_mut().close(self.pid, self.fd);
    }
}

/// A held claim's open object: an array fd or a link fd.
pub(crate) struct FakeHold {
    sim: Shared,
    pid: u32,
    fd: u64,
}

impl Drop for FakeHold {
    fn drop(&mut self) {
        self.sim.borrow_mut().close(self.pid, self.fd);
    }
}

impl Fake {
    fn live(&self) -> Result<std::cell::RefMut<'_, Sim>> {
        if crash::sim::crashed() {
            return Err(crash::sim::dead());
        }
        Ok(self.sim.borrow_mut())
    }
}

impl Objects for Fake {
    type Program = FakeProgram;
    type Hold = FakeHold;

    fn iface(&self) -> &str {
        "fake0"
    }

    fn corrupt(&self, pin: &'static str, why: String) -> Error {
        Error::CorruptState {
            iface: "fake0".into(),
            path: "/fake".into(),
            pin: Some(pin),
            why,
        }
    }

    fn control(&self) -> Result<Control> {
        Ok(self.live()?.control)
    }

    fn write_control(&mut self, c: &Control) -> Result<()> {
        let mut s = self.live()?;
        for t in 0..2 {
            assert!(
                c.tables[t] == s.control.tables[t] || !s.tables_read[t],
                "run table {t} written while packets may read it"
            );
        }
        if c.current != s.control.current {
            s.tables_read[(c.current & 1) as usize] = true;
        }
        let other = 1 - (c.current & 1) as usize;
        assert!(
            c.settled == 0 || !s.tables_read[other],
            "settled while packets may read the other table"
        );
        for n in 0..SLOT_COUNT {
            if c.is_active(n) != s.control.is_active(n) {
                let what = if c.is_active(n) {
                    "activate"
                } else {
                    "deactivate"
                };
                s.log.push(format!("{what} {n}"));
            }
        }
        s.control = *c;
        Ok(())
    }

    fn raw_record(&self, n: usize) -> Result<SlotConfig> {
        Ok(self.live()?.records[n])
    }

    fn write_raw_record(&mut self, n: usize, r: &SlotConfig) -> Result<()> {
        let mut s = self.live()?;
        let state = Record::decode(n, r).map(|r| r.state);
        s.log.push(format!("record {n} {state:?}"));
        s.records[n] = *r;
        Ok(())
    }

    fn live_programs(&self) -> Result<HashSet<u32>> {
        Ok(self.live()?.live_programs())
    }

    fn alive(&self, owner: Owner) -> bool {
        self.sim.borrow().alive.contains(&owner.pid)
    }

    fn me(&self) -> Owner {
        self.me
    }

    fn now(&self) -> u64 {
        1
    }

    fn load(
        &mut self,
        _: Backend,
        _: usize,
        _: &ProgramSource,
        _: &Inspected,
    ) -> Result<FakeProgram> {
        let mut s = self.live()?;
        s.next_id += 1;
        let id = s.next_id;
        let fd = s.open(self.me.pid, Fd::Prog(id));
        Ok(FakeProgram {
            sim: self.sim.clone(),
            pid: self.me.pid,
            fd,
            id,
        })
    }

    fn program_id(&self, prog: &FakeProgram) -> Result<u32> {
        Ok(prog.id)
    }

    fn fill(
        &mut self,
        backend: Backend,
        n: usize,
        prog: &mut FakeProgram,
        persistent: bool,
    ) -> Result<(u32, Option<FakeHold>)> {
        let pid = self.me.pid;
        let mut s = self.live()?;
        s.log.push(format!("fill {n}"));
        match backend {
            Backend::TailCall => {
                s.arrays[n].as_mut().expect("usable slot").entry = Some(prog.id);
                drop(s);
                crash::point("tailcall::filled")?;
                let mut s = self.live()?;
                let fd = s.open(pid, Fd::Array(n));
                if !persistent {
                    s.arrays[n].as_mut().unwrap().pinned = false;
                }
                let hold = (!persistent).then(|| FakeHold {
                    sim: self.sim.clone(),
                    pid,
                    fd,
                });
                if persistent {
                    s.close(pid, fd);
                }
                Ok((0, hold))
            }
            Backend::Freplace => {
                if s.links[n].is_some() {
                    return Err(Error::Io {
                        what: format!("linking over slot_{n}"),
                        source: std::io::Error::from_raw_os_error(libc::EBUSY),
                    });
                }
                s.links[n] = Some(Link {
                    prog: prog.id,
                    pinned: false,
                });
                let fd = s.open(pid, Fd::Link(n));
                drop(s);
                crash::point("freplace::linked")?;
                let mut s = self.live()?;
                if persistent {
                    s.links[n].as_mut().unwrap().pinned = true;
                    s.close(pid, fd);
                    return Ok((7, None));
                }
                Ok((
                    7,
                    Some(FakeHold {
                        sim: self.sim.clone(),
                        pid,
                        fd,
                    }),
                ))
            }
        }
    }

    fn empty(&mut self, backend: Backend, n: usize, hold: Option<&mut FakeHold>) -> Result<()> {
        let mut s = self.live()?;
        for t in 0..2 {
            assert!(
                !s.tables_read[t] || s.control.tables[t].position(n).is_none(),
                "emptying slot {n}, which packets may still run (table {t})"
            );
        }
        s.log.push(format!("empty {n}"));
        match backend {
            Backend::TailCall => {
                s.arrays[n].as_mut().unwrap().entry = None;
                drop(s);
                crash::point("tailcall::cleared")?;
                self.live()?.arrays[n].as_mut().unwrap().pinned = true;
            }
            Backend::Freplace => match hold {
                Some(h) => s.close(h.pid, h.fd),
                None => {
                    if s.links[n].as_ref().is_some_and(|l| l.pinned) {
                        s.links[n].as_mut().unwrap().pinned = false;
                        if s.link_refs(n) == 0 {
                            s.links[n] = None;
                        }
                    }
                }
            },
        }
        Ok(())
    }

    fn hold_unfinished(&self, backend: Backend, n: usize) -> bool {
        backend == Backend::TailCall && self.sim.borrow().arrays[n].as_ref().unwrap().pinned
    }

    fn settle_dead_hold(&self, backend: Backend, n: usize, _: u32) -> Result<()> {
        let mut s = self.live()?;
        if backend == Backend::TailCall {
            // Waiting for the program to go is waiting for the clear.
            let a = s.arrays[n].as_mut().unwrap();
            if a.pending_clear {
                a.entry = None;
                a.pending_clear = false;
            }
        }
        Ok(())
    }

    fn quiesce(&self) -> Result<()> {
        let mut s = self.live()?;
        let current = (s.control.current & 1) as usize;
        s.tables_read[1 - current] = false;
        s.quiesces += 1;
        Ok(())
    }

    fn zero_counters(&mut self, n: usize) -> Result<()> {
        let mut s = self.live()?;
        let readable = (0..2).any(|t| {
            s.tables_read[t] && s.control.tables[t].slots().iter().any(|&x| x as usize == n)
        });
        assert!(
            !readable,
            "zeroed slot {n}'s counters while packets may still count for it"
        );
        s.log.push(format!("zero {n}"));
        s.counters[n] = 0;
        Ok(())
    }

    fn sweep_free(&mut self, n: usize) -> Result<bool> {
        let mut s = self.live()?;
        if s.links[n].as_ref().is_some_and(|l| l.pinned) {
            s.links[n].as_mut().unwrap().pinned = false;
            if s.link_refs(n) == 0 {
                s.links[n] = None;
            }
            return Ok(true);
        }
        Ok(false)
    }
}
