//! Claiming and releasing slots: the protocol of docs/design.md.
//!
//! Every step runs under the interface's exclusive lock. A claim writes its
//! record, then fills the slot, then sets the active bit; a release clears
//! the active bit, then empties the slot, then frees the record. Because a
//! finished claim is always active and the lock excludes other writers, a
//! claimed-but-inactive record seen under the lock is an operation that
//! died half-way: [`collect`] undoes it.
use std::{collections::HashSet, path::PathBuf};

use aya::programs::links::FdLink;
use dispatcher_common::{
    BACKEND_FREPLACE, BACKEND_TAILCALL, DEFAULT_PROCEED_ON, MAX_TAIL_CALLS, NAME_LEN, SLOT_COUNT,
    STATE_DRAINING, STATE_FREE, STATE_HELD, STATE_PERSISTENT, SlotConfig, names,
};

use crate::{
    backend::{Backend, freplace, tailcall},
    crash,
    error::{Error, Result},
    lock::DirLock,
    owner,
    placement::{self, DEFAULT_PRIO, PRIO_MAX, Taken},
    program::{self, Loaded, ProgramSource},
    state::{State, pin},
};

/// What to claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub program: ProgramSource,
    /// Lower runs first. Default: the program's XDP_RUN_CONFIG, else 50.
    pub prio: Option<u32>,
    /// `1 << action` mask of verdicts after which the next slot runs.
    /// Default: the program's XDP_RUN_CONFIG, else XDP_PASS only.
    pub proceed_on: Option<u32>,
    /// Default: the program's name.
    pub name: Option<String>,
    /// Persistent claims stay until released; held ones end with the
    /// process (or when the [`Claim`] is dropped).
    pub persistent: bool,
    /// `Auto`: the interface's backend.
    pub backend: Backend,
}

impl ClaimRequest {
    pub fn new(program: ProgramSource) -> Self {
        Self {
            program,
            prio: None,
            proceed_on: None,
            name: None,
            persistent: false,
            backend: Backend::Auto,
        }
    }
}

enum Hold {
    TailCall(tailcall::SlotArray),
    Freplace(#[allow(dead_code)] FdLink),
}

/// A claimed slot. A held claim is released when this is dropped, and by
/// the kernel if the process dies first; a persistent one stays.
pub struct Claim {
    pub iface: String,
    pub slot: usize,
    pub prio: u32,
    pub proceed_on: u32,
    pub name: String,
    pub prog_id: u32,
    pub backend: Backend,
    pub persistent: bool,
    dir: PathBuf,
    hold: Option<Hold>,
    program: Loaded,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("iface", &self.iface)
            .field("slot", &self.slot)
            .field("prio", &self.prio)
            .field("name", &self.name)
            .field("prog_id", &self.prog_id)
            .field("backend", &self.backend)
            .field("persistent", &self.persistent)
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// The loaded object (e.g. to read its maps or start an aya-log logger).
    pub fn ebpf_mut(&mut self) -> &mut aya::Ebpf {
        &mut self.program.ebpf
    }

    /// Releases the claim now, reporting errors (drop does it silently).
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let Some(mut hold) = self.hold.take() else {
            return Ok(());
        };
        let _lock = DirLock::exclusive(&self.dir)?;
        let mut state = State::open(&self.dir, &self.iface)?;
        let cfg = state.slot(self.slot)?;
        if cfg.prog_id != self.prog_id {
            return Ok(()); // released by force and reused meanwhile
        }
        if cfg.state == STATE_DRAINING {
            // Released by force: the slot waited for our fds; they go now.
            drop(hold);
            return state.write_slot(self.slot, &SlotConfig::FREE);
        }
        if cfg.state != STATE_HELD {
            return Ok(());
        }
        state.set_active(self.slot, false)?;
        crash::point("held::inactive");
        if let Hold::TailCall(array) = &mut hold {
            tailcall::empty(&state, self.slot, Some(array))?;
        }
        crash::point("held::emptied");
        drop(hold); // the extension link goes with its last fd
        state.write_slot(self.slot, &SlotConfig::FREE)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            log::warn!("releasing slot {} on {}: {e}", self.slot, self.iface);
        }
    }
}

fn encode_name(name: &str) -> Result<[u8; NAME_LEN]> {
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

/// The name stored in a slot record.
pub fn decode_name(raw: &[u8; NAME_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Ids of all programs loaded in the kernel.
pub(crate) fn live_programs() -> Result<HashSet<u32>> {
    let mut ids = HashSet::new();
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(i) => {
                ids.insert(i.id());
            }
            // A program can vanish while we walk the list.
            Err(e) if crate::error::os_error(&e) == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::kernel("listing loaded programs", e)),
        }
    }
    Ok(ids)
}

/// Is slot `n`'s claim complete and still backed by the kernel?
pub(crate) fn is_live(
    state: &State,
    active: bool,
    n: usize,
    cfg: &SlotConfig,
    progs: &HashSet<u32>,
) -> bool {
    match cfg.state {
        STATE_HELD | STATE_PERSISTENT => {
            let unfinished_hold = cfg.state == STATE_HELD
                && cfg.backend == BACKEND_TAILCALL
                && state.path(&pin::prog(n)).exists();
            active && progs.contains(&cfg.prog_id) && !unfinished_hold
        }
        STATE_DRAINING => owner::alive(cfg.owner_pid, cfg.owner_start),
        _ => true,
    }
}

/// Frees every record whose holder is gone or whose operation died
/// half-way. Runs under the exclusive lock; returns the slots it freed.
pub fn collect(state: &mut State) -> Result<Vec<usize>> {
    let control = state.control()?;
    let slots = state.slots()?;
    let mut freed = Vec::new();
    // A persistent freplace claim that died after pinning its link and
    // before writing its record left an `ext_N` pin behind a free record:
    // that extension would stay linked over slot_N, refusing every later
    // extension there and running in place of a later tail-call claim.
    for (n, cfg) in slots.iter().enumerate() {
        if cfg.state == STATE_FREE && state.path(&pin::ext(n)).exists() {
            log::info!(
                "slot {n} on {}: unlinking an unrecorded extension",
                state.iface
            );
            freplace::unpin(state, &pin::ext(n))?;
            crash::point("collect::unlinked");
            freed.push(n);
        }
    }
    if slots.iter().all(|c| c.state == STATE_FREE) {
        return Ok(freed);
    }
    let progs = live_programs()?;
    for (n, cfg) in slots.iter().enumerate() {
        if cfg.state == STATE_FREE || is_live(state, control.is_active(n), n, cfg, &progs) {
            continue;
        }
        if cfg.state == STATE_HELD && owner::alive(cfg.owner_pid, cfg.owner_start) {
            // Inactive, yet its holder lives: no claim of a live process is
            // ever seen half-made under the lock, so this is a forced
            // release that died before marking the slot draining. Finish
            // it: the holder's fds (an extension link) still pin the slot.
            log::info!("slot {n} on {}: finishing a forced release", state.iface);
            drain(state, n, cfg)?;
            continue;
        }
        log::info!("slot {n} on {}: holder gone, freeing it", state.iface);
        if cfg.state == STATE_HELD
            && cfg.backend == BACKEND_TAILCALL
            && !state.path(&pin::prog(n)).exists()
        {
            // The dead holder had taken the array's pin away, so the kernel
            // empties the array from a work queue now that its fd is
            // closed. Parking the array before that clear has run would
            // leave it pending, to empty the next claim of this slot. The
            // clear drops the array's reference to the program: once the
            // program is gone, so is the clear.
            wait_for_program_to_go(cfg.prog_id)?;
        }
        empty_slot(state, n, cfg)?;
        freed.push(n);
    }
    Ok(freed)
}

/// How long collecting waits for the kernel's deferred clear of a dead
/// holder's array (milliseconds normally; far longer under emulation).
const DEFERRED_CLEAR_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits until program `id` is no longer loaded, for at most
/// [`DEFERRED_CLEAR_PATIENCE`]; after that, goes on (something else holds
/// the program, so no clear is pending for its array).
fn wait_for_program_to_go(id: u32) -> Result<()> {
    let start = std::time::Instant::now();
    while live_programs()?.contains(&id) {
        if start.elapsed() > DEFERRED_CLEAR_PATIENCE {
            log::warn!("program {id} stays loaded: something else holds it");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

/// Deactivates slot `n`, empties it and frees its record.
fn empty_slot(state: &mut State, n: usize, cfg: &SlotConfig) -> Result<()> {
    state.set_active(n, false)?;
    crash::point("empty::inactive");
    match cfg.backend {
        BACKEND_FREPLACE => freplace::unpin(state, &pin::ext(n))?,
        _ => tailcall::empty(state, n, None)?,
    }
    crash::point("empty::emptied");
    state.write_slot(n, &SlotConfig::FREE)
}

/// Takes another live process's held claim out of the run: deactivates
/// and empties slot `n` and marks it draining. The holder keeps its fds (an
/// extension link stays linked to the now-inactive slot), so the slot is
/// reused only once that process exits. Idempotent.
fn drain(state: &mut State, n: usize, cfg: &SlotConfig) -> Result<()> {
    state.set_active(n, false)?;
    if cfg.backend == BACKEND_TAILCALL {
        tailcall::empty(state, n, None)?;
    }
    crash::point("release::forced");
    let draining = SlotConfig {
        state: STATE_DRAINING,
        ..*cfg
    };
    state.write_slot(n, &draining)
}

/// A request checked against its object, before anything changes.
pub struct Prepared {
    ins: program::Inspected,
    prio: u32,
    proceed_on: u32,
    name: String,
    raw_name: [u8; NAME_LEN],
}

/// Checks the object and the request: program, priority, name.
pub fn prepare(req: &ClaimRequest) -> Result<Prepared> {
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
    let name = req.name.clone().unwrap_or_else(|| ins.name.clone());
    let raw_name = encode_name(&name)?;
    Ok(Prepared {
        ins,
        prio,
        proceed_on,
        name,
        raw_name,
    })
}

/// Claims a slot. `state` is locked exclusively by the caller.
pub fn claim(
    state: &mut State,
    req: &ClaimRequest,
    prep: Prepared,
    default_backend: Backend,
) -> Result<Claim> {
    let Prepared {
        ins,
        prio,
        proceed_on,
        name,
        raw_name,
    } = prep;
    let backend = match req.backend {
        Backend::Auto => default_backend,
        b => b,
    };

    collect(state)?;
    let slots = state.slots()?;
    if let Some(n) = slots
        .iter()
        .position(|c| c.state != STATE_FREE && decode_name(&c.name) == name)
    {
        return Err(Error::NameTaken {
            iface: state.iface.clone(),
            name,
            slot: n,
        });
    }
    let taken: Vec<Taken> = slots
        .iter()
        .enumerate()
        .filter(|(_, c)| c.state != STATE_FREE)
        .map(|(slot, c)| Taken {
            slot,
            prio: (c.state != STATE_DRAINING).then_some(c.prio),
            name: decode_name(&c.name),
        })
        .collect();
    if taken.len() == SLOT_COUNT {
        return Err(Error::SlotsFull {
            iface: state.iface.clone(),
            count: SLOT_COUNT,
        });
    }
    if backend == Backend::TailCall {
        let active = slots
            .iter()
            .filter(|c| {
                matches!(c.state, STATE_HELD | STATE_PERSISTENT) && c.backend == BACKEND_TAILCALL
            })
            .count();
        if active >= MAX_TAIL_CALLS {
            return Err(Error::TailCallLimit {
                iface: state.iface.clone(),
                active,
                max: MAX_TAIL_CALLS,
            });
        }
    }
    let usable = |n: usize| backend != Backend::TailCall || dispatcher_common::has_prog_array(n);
    let slot =
        placement::place(&taken, prio, usable).map_err(|neighbours| Error::NoSlotForPriority {
            iface: state.iface.clone(),
            prio,
            neighbours,
        })?;

    let (owner_pid, owner_start) = owner::current();
    let mut record = SlotConfig {
        state: if req.persistent {
            STATE_PERSISTENT
        } else {
            STATE_HELD
        },
        prio,
        backend: backend.raw(),
        prog_id: 0,
        link_id: 0,
        owner_pid,
        owner_start,
        claimed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        name: raw_name,
    };

    // 1. record the mask (the slot is inactive), 2. load, 3. record the
    // claim, 4. fill, 5. activate.
    state.set_proceed_on(slot, proceed_on)?;
    crash::point("claim::mask");
    let (program, hold) = match backend {
        Backend::TailCall | Backend::Auto => {
            let program = program::load_xdp(&req.program, &ins)?;
            crash::point("claim::loaded");
            record.prog_id = program.id()?;
            state.write_slot(slot, &record)?;
            crash::point("claim::recorded");
            let array =
                tailcall::fill(state, slot, &program, req.persistent).inspect_err(|_| {
                    let _ = state.write_slot(slot, &SlotConfig::FREE);
                })?;
            crash::point("claim::filled");
            (program, (!req.persistent).then_some(Hold::TailCall(array)))
        }
        Backend::Freplace => {
            let func = format!("{}{slot}", names::SLOT_FN_PREFIX);
            let pin_name = pin::ext(slot);
            let (program, link) = freplace::fill(
                state,
                &req.program,
                &ins,
                &func,
                req.persistent.then_some(pin_name.as_str()),
            )?;
            crash::point("claim::filled");
            record.prog_id = program.id()?;
            if let Err(e) = state.write_slot(slot, &record) {
                let _ = freplace::unpin(state, &pin_name);
                return Err(e);
            }
            crash::point("claim::recorded");
            (program, link.map(Hold::Freplace))
        }
    };
    state.set_active(slot, true)?;
    crash::point("claim::active");
    Ok(Claim {
        iface: state.iface.clone(),
        slot,
        prio,
        proceed_on,
        name,
        prog_id: record.prog_id,
        backend,
        persistent: req.persistent,
        dir: state.dir.clone(),
        hold,
        program,
    })
}

/// Which claim to release.
#[derive(Debug, Clone)]
pub enum SlotRef {
    Slot(usize),
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
    pub slot: usize,
    pub name: String,
    /// A held claim released by force: its holder still runs, so the slot
    /// is reused only after it exits.
    pub draining: bool,
}

/// Releases a claim. `state` is locked exclusively by the caller.
pub fn release(state: &mut State, which: &SlotRef, force: bool) -> Result<Released> {
    collect(state)?;
    let slots = state.slots()?;
    let slot = match which {
        SlotRef::Slot(n) if *n >= SLOT_COUNT => {
            return Err(Error::NoSuchSlot {
                slot: *n,
                count: SLOT_COUNT,
            });
        }
        SlotRef::Slot(n) => *n,
        SlotRef::Name(name) => slots
            .iter()
            .position(|c| {
                matches!(c.state, STATE_HELD | STATE_PERSISTENT) && decode_name(&c.name) == *name
            })
            .ok_or_else(|| Error::NoSuchClaim {
                iface: state.iface.clone(),
                name: name.clone(),
            })?,
    };
    let cfg = slots[slot];
    let name = decode_name(&cfg.name);
    match cfg.state {
        STATE_PERSISTENT => {
            empty_slot(state, slot, &cfg)?;
            Ok(Released {
                slot,
                name,
                draining: false,
            })
        }
        STATE_HELD => {
            let me = owner::current();
            if (cfg.owner_pid, cfg.owner_start) != me && !force {
                return Err(Error::HeldByOther {
                    iface: state.iface.clone(),
                    slot,
                    pid: cfg.owner_pid,
                });
            }
            drain(state, slot, &cfg)?;
            Ok(Released {
                slot,
                name,
                draining: true,
            })
        }
        _ => Err(Error::NotHeld {
            iface: state.iface.clone(),
            slot,
        }),
    }
}
