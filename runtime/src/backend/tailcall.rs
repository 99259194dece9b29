//! Tail-call backend: slot N's program sits in `SLOT_PROG_N[0]`.
//!
//! Who holds a user reference to slot N's array decides its lifetime:
//! - free slot: the parking pin `prog_N` (so no clear is ever pending when
//!   the next claimer arrives);
//! - persistent claim: the same pin;
//! - held claim: the claimer's fd only (the pin is removed), so the kernel
//!   clears the array when the claimer exits, SIGKILL included.
use aya::maps::{Map, MapData, ProgramArray};

use crate::{
    dispatcher,
    error::{Error, Result},
    program::Loaded,
    state::{State, pin},
};

/// An open slot array: holding it holds a user reference.
pub struct SlotArray(Map);

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

/// Puts `prog` into slot `n`. Held claims get the array back: keep it
/// open for as long as the claim should live.
pub fn fill(state: &State, n: usize, prog: &Loaded, persistent: bool) -> Result<SlotArray> {
    let mut handle = open(state, n)?;
    handle.array()?.set(0, prog.fd()?, 0).map_err(|e| {
        if crate::error::os_error(&e) == Some(libc::EINVAL) {
            Error::Kernel {
                what: format!("putting {} into slot {n}", prog.name),
                detail: "the kernel refused it as a tail-call target of the dispatcher (EINVAL): an xdp.frags program cannot follow a non-frags dispatcher".into(),
            }
        } else {
            Error::kernel(format!("putting {} into slot {n}", prog.name), e)
        }
    })?;
    crate::crash::point("tailcall::filled");
    if !persistent {
        let path = state.path(&pin::prog(n));
        if let Err(e) = std::fs::remove_file(&path) {
            let _ = handle.array()?.clear_index(&0);
            return Err(Error::io(format!("unpinning {}", path.display()), e));
        }
    }
    Ok(handle)
}

/// Empties slot `n` and parks its array again (re-pins it), using the
/// holder's own fd when there is one. Idempotent.
pub fn empty(state: &State, n: usize, held: Option<&mut SlotArray>) -> Result<()> {
    let mut opened;
    let handle = match held {
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
    crate::crash::point("tailcall::cleared");
    park(state, n, handle)
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

/// Re-parks slot `n` after its holder died (the kernel has emptied it).
pub fn repark(state: &State, n: usize) -> Result<()> {
    empty(state, n, None)
}
