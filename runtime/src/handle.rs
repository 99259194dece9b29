//! [`Claim`]: what a client holds after claiming a slot.
use std::path::PathBuf;

use crate::{
    backend::{Backend, Hold},
    claim::Claimed,
    error::Result,
    lock::DirLock,
    program::Loaded,
    program::ProgramSource,
    release::{OwnRelease, SlotRef, release_own},
    replace::{Own, ProgramReplaced, replace},
    state::State,
};

/// A claimed slot. A held claim is released when this is dropped, and by
/// the kernel if the process dies first; a persistent one stays.
pub struct Claim {
    /// The interface.
    pub iface: String,
    /// The slot (its run position follows from it).
    pub slot: usize,
    /// The claim's priority.
    pub prio: u32,
    /// Verdicts (`1 << action`) after which the next slot runs.
    pub proceed_on: u32,
    /// The claim's name.
    pub name: String,
    /// Kernel id of the program in the slot.
    pub prog_id: u32,
    /// How the slot is filled.
    pub backend: Backend,
    /// Stays after this process exits.
    pub persistent: bool,
    dir: PathBuf,
    hold: Option<Hold>,
    program: Loaded,
}

impl Claim {
    pub(crate) fn new(iface: &str, dir: PathBuf, c: Claimed<State>) -> Self {
        Self {
            iface: iface.into(),
            slot: c.slot,
            prio: c.prio,
            proceed_on: c.proceed_on,
            name: c.name,
            prog_id: c.prog_id,
            backend: c.backend,
            persistent: c.persistent,
            dir,
            hold: c.hold,
            program: c.program,
        }
    }

    /// The loaded object (e.g. to read its maps or start an aya-log logger).
    pub fn ebpf_mut(&mut self) -> &mut aya::Ebpf {
        &mut self.program.ebpf
    }

    /// Replaces this claim's program by `program` at the same run position:
    /// no packet meets neither program or both (docs/design.md, "Replace").
    /// The claim keeps its name, priority, proceed-on verdicts, backend
    /// and persistence; a held claim stays held by this process. On
    /// success this handle holds the new program (its slot and program id
    /// change) and the old one is unloaded; on error it still holds the
    /// old one, which still runs.
    pub fn replace(&mut self, program: &ProgramSource) -> Result<ProgramReplaced> {
        let mut ins = crate::program::inspect(program)?;
        let _lock = DirLock::exclusive(&self.dir)?;
        let mut state = State::open(&self.dir, &self.iface)?;
        let which_name = SlotRef::Name(self.name.clone());
        let pins = crate::pins_of_claim(&state, &which_name)?;
        ins.map_pin_dir = Some(pins.dir(&self.dir, &self.name));
        let own = self.hold.is_some().then_some(Own {
            prog_id: self.prog_id,
            slot: self.slot,
            hold: &mut self.hold,
        });
        let which = if own.is_some() {
            SlotRef::Slot(self.slot)
        } else {
            SlotRef::Name(self.name.clone())
        };
        let (replaced, claimed) = replace(&mut state, &which, program, &ins, own)?;
        crate::record_origin(&state, &claimed, program, &ins.name, false, &pins);
        // The old hold and program go now (the old slot is already empty);
        // with no hold left, dropping the old handle releases nothing.
        self.hold = None;
        let (iface, dir) = (self.iface.clone(), self.dir.clone());
        *self = Claim::new(&iface, dir, claimed);
        Ok(replaced)
    }

    /// Releases a held claim now, reporting errors and what became of it
    /// (drop does it silently). A persistent claim is left in place:
    /// release it with [`Runtime::release`](crate::Runtime::release).
    pub fn release(mut self) -> Result<OwnRelease> {
        self.release_held()
    }

    fn release_held(&mut self) -> Result<OwnRelease> {
        let Some(hold) = self.hold.take() else {
            return Ok(OwnRelease::Persistent);
        };
        let _lock = DirLock::exclusive(&self.dir)?;
        let mut state = State::open(&self.dir, &self.iface)?;
        release_own(&mut state, self.slot, self.prog_id, hold)
    }
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

impl Drop for Claim {
    fn drop(&mut self) {
        if let Err(e) = self.release_held() {
            log::warn!("releasing slot {} on {}: {e}", self.slot, self.iface);
        }
    }
}
