//! Tail-call backend: slot N's program sits in `SLOT_PROG_N[0]`.
//!
//! Who holds a user reference to slot N's array decides its lifetime:
//! - free slot: the parking pin `prog_N` (so no clear is ever pending when
//!   the next claimer arrives);
//! - persistent claim: the same pin;
//! - held claim: the claimer's fd only (the pin is removed), so the kernel
//!   clears the array when the claimer exits, SIGKILL included.
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, ProgramArray};
use dispatcher_common::{MAX_TAIL_CALLS, has_prog_array};

use super::{Filled, Hold, SlotBackend};
use crate::{
    crash, dispatcher,
    error::{Error, Result},
    pin,
    probe::ProbeError,
    program::{self, Inspected, Loaded, ProgramSource},
    state::{State, live_programs},
};

/// How long settling a dead holder waits for the kernel's deferred clear
/// of its array (milliseconds normally; far longer under emulation).
const DEFERRED_CLEAR_PATIENCE: Duration = Duration::from_secs(20);

/// The tail-call backend.
pub(crate) struct TailCall;

/// An open slot array: holding it holds a user reference.
struct SlotArray(Map);

impl SlotArray {
    fn array(&mut self) -> Result<ProgramArray<&mut MapData>> {
        ProgramArray::try_from(&mut self.0)
            .map_err(|e| Error::kernel("opening a slot's program array", e))
    }
}

/// Opens slot `n`'s array: by its pin if there is one, else by id.
fn open(state: &State, n: usize) -> Result<SlotArray> {
    let path = state.path(&pin::prog(n));
    let data = if path.exists() {
        MapData::from_pin(&path)
            .map_err(|e| Error::kernel(format!("opening {}", path.display()), e))?
    } else {
        dispatcher::slot_array(&state.dir, n)?
    };
    Ok(SlotArray(Map::ProgramArray(data)))
}

/// Pins slot `n`'s array (if not pinned) so that it keeps a user reference.
fn park(state: &State, n: usize, handle: &SlotArray) -> Result<()> {
    let path = state.path(&pin::prog(n));
    if path.exists() {
        return Ok(());
    }
    handle
        .0
        .pin(&path)
        .map_err(|e| Error::kernel(format!("pinning {}", path.display()), e))
}

impl SlotBackend for TailCall {
    fn probe(&self) -> std::result::Result<(), ProbeError> {
        crate::probe::tail_calls()
    }

    fn can_fill(&self, n: usize) -> bool {
        has_prog_array(n)
    }

    fn capacity(&self) -> usize {
        MAX_TAIL_CALLS
    }

    fn load(&self, _: &State, _: usize, src: &ProgramSource, ins: &Inspected) -> Result<Loaded> {
        program::load_xdp(src, ins)
    }

    fn fill(&self, state: &State, n: usize, prog: &mut Loaded, persistent: bool) -> Result<Filled> {
        let mut handle = open(state, n)?;
        handle.array()?.set(0, prog.fd()?, 0).map_err(|e| {
            if prog.frags && crate::error::os_error(&e) == Some(libc::EINVAL) {
                Error::TailCallRefused {
                    name: prog.name.clone(),
                    slot: n,
                    source: Box::new(e),
                }
            } else {
                Error::kernel(format!("putting {} into slot {n}", prog.name), e)
            }
        })?;
        crash::point("tailcall::filled")?;
        if !persistent {
            // The holder's fd becomes the array's only user reference.
            let path = state.path(&pin::prog(n));
            if let Err(e) = std::fs::remove_file(&path) {
                let _ = handle.array()?.clear_index(&0);
                return Err(Error::io(format!("unpinning {}", path.display()), e));
            }
        }
        Ok(Filled {
            link_id: 0,
            hold: (!persistent).then(|| Hold(Box::new(handle))),
        })
    }

    fn empty(&self, state: &State, n: usize, hold: Option<&mut Hold>) -> Result<()> {
        let mut opened;
        let handle = match hold.and_then(|h| h.0.downcast_mut::<SlotArray>()) {
            Some(a) => a,
            None => {
                opened = open(state, n)?;
                &mut opened
            }
        };
        match handle.array()?.clear_index(&0) {
            Ok(()) => {}
            Err(e) if crate::error::os_error(&e) == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::kernel(format!("emptying slot {n}"), e)),
        }
        crash::point("tailcall::cleared")?;
        park(state, n, handle)
    }

    fn hold_unfinished(&self, state: &State, n: usize) -> bool {
        // A finished held fill removed the parking pin.
        state.path(&pin::prog(n)).exists()
    }

    fn settle_dead_hold(&self, state: &State, n: usize, prog_id: u32) -> Result<()> {
        if state.path(&pin::prog(n)).exists() {
            return Ok(()); // the array never lost its pin: nothing pending
        }
        // The dead holder had taken the array's pin away, so the kernel
        // empties the array from a work queue now that its fd is closed.
        // Parking the array before that clear has run would leave it
        // pending, to empty the next claim of this slot. The clear drops
        // the array's reference to the program: once the program is gone,
        // so is the clear. If it stays past the patience, something else
        // holds the program and no clear is pending.
        let start = Instant::now();
        while live_programs()?.contains(&prog_id) {
            if start.elapsed() > DEFERRED_CLEAR_PATIENCE {
                log::warn!("program {prog_id} stays loaded: something else holds it");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}
