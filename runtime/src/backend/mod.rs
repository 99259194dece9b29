//! The ways of filling a slot, behind one trait.
//!
//! - [`freplace`]: the slot function itself is replaced by the program,
//!   loaded as an extension (BPF_PROG_TYPE_EXT) and linked. The kernel drops
//!   the link, and the slot's own body comes back, when the last fd of an
//!   unpinned link closes.
//! - [`tailcall`]: the program goes into entry 0 of the slot's own
//!   single-entry program array, which the slot body tail-calls. The kernel
//!   empties a program array when its last user reference (fd or pin) goes,
//!   so a held claim, whose holder owns the only fd, ends with its process.
//!
//! A backend is a [`SlotBackend`]; [`Backend`] names it in records, requests
//! and status, and [`Backend::imp`] is the one place that maps a name to its
//! implementation. A new backend is a module implementing the trait, a
//! variant here and a stored code in `dispatcher-common`.
pub(crate) mod freplace;
pub(crate) mod tailcall;

use std::any::Any;

use serde::Serialize;

use crate::{
    error::Result,
    program::{Inspected, Loaded, ProgramSource},
    state::State,
};

/// A backend: how a program fills a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// The program is linked as an extension over the slot function.
    Freplace,
    /// The program sits in the slot's program array and is tail-called.
    #[serde(rename = "tailcall")]
    TailCall,
}

impl Backend {
    /// Every backend, in the order `auto` prefers them.
    pub const ALL: [Backend; 2] = [Backend::Freplace, Backend::TailCall];

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Freplace => "freplace",
            Backend::TailCall => "tailcall",
        }
    }

    /// Its implementation: the registration point of the backends.
    pub(crate) fn imp(self) -> &'static dyn SlotBackend {
        match self {
            Backend::Freplace => &freplace::Freplace,
            Backend::TailCall => &tailcall::TailCall,
        }
    }

    /// The code stored in records (`dispatcher_common::BACKEND_*`).
    pub(crate) fn code(self) -> u32 {
        match self {
            Backend::Freplace => dispatcher_common::BACKEND_FREPLACE,
            Backend::TailCall => dispatcher_common::BACKEND_TAILCALL,
        }
    }

    /// The backend a stored code names; `None` for `BACKEND_NONE` or a
    /// code this version does not know.
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.code() == code)
    }

    /// Can the running kernel use this backend? Tries it.
    pub fn probe(self) -> std::result::Result<(), crate::probe::ProbeError> {
        self.imp().probe()
    }

    /// Can this backend fill slot `n`?
    pub fn can_fill(self, n: usize) -> bool {
        self.imp().can_fill(n)
    }

    /// The most claims of this backend that can be active on one
    /// interface at once.
    pub fn capacity(self) -> usize {
        self.imp().capacity()
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "freplace" => Ok(Backend::Freplace),
            "tailcall" | "tail-call" => Ok(Backend::TailCall),
            _ => Err(crate::Error::UnknownBackend { name: s.into() }),
        }
    }
}

/// What a held claim keeps open so that the kernel ends the claim when the
/// holder exits: the backend's own objects (an array fd, a link fd).
pub(crate) struct Hold(pub(crate) Box<dyn Any + Send>);

/// What filling a slot gave.
pub(crate) struct Filled {
    /// Kernel id of the link that fills the slot, if the backend uses one.
    pub link_id: u32,
    /// For a held claim: the objects whose last fd ends it.
    pub hold: Option<Hold>,
}

/// One backend's kernel side. Every method runs under the interface's
/// exclusive lock.
pub(crate) trait SlotBackend: Sync {
    /// Can the running kernel use this backend? Tries it.
    fn probe(&self) -> std::result::Result<(), crate::probe::ProbeError>;

    /// Can this backend fill slot `n`?
    fn can_fill(&self, n: usize) -> bool;

    /// The most claims of this backend that can be active at once.
    fn capacity(&self) -> usize;

    /// Loads the program for slot `n` (not yet in the slot).
    fn load(&self, state: &State, n: usize, src: &ProgramSource, ins: &Inspected)
    -> Result<Loaded>;

    /// Puts the loaded program into slot `n`. A persistent fill stays
    /// through pins; a held one lives as long as the returned [`Hold`].
    fn fill(&self, state: &State, n: usize, prog: &mut Loaded, persistent: bool) -> Result<Filled>;

    /// Takes whatever fills slot `n` out of it (through the holder's own
    /// objects when the caller is the holder), leaving the slot as a free
    /// slot is. Idempotent.
    fn empty(&self, state: &State, n: usize, hold: Option<&mut Hold>) -> Result<()>;

    /// Does a held claim of slot `n` show a fill that never finished
    /// (its objects are still where a free slot keeps them)?
    fn hold_unfinished(&self, _state: &State, _n: usize) -> bool {
        false
    }

    /// Must the kernel still finish something after a dead holder of slot
    /// `n` whose program was `prog_id` (a deferred clear), before the slot
    /// is made free again? Waits for it.
    fn settle_dead_hold(&self, _state: &State, _n: usize, _prog_id: u32) -> Result<()> {
        Ok(())
    }

    /// Removes objects of this backend that a free slot `n` must not have
    /// (left by an older runtime that filled before recording). Returns
    /// whether there were any.
    fn sweep_free(&self, _state: &State, _n: usize) -> Result<bool> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for b in Backend::ALL {
            assert_eq!(Backend::from_code(b.code()), Some(b));
            assert_eq!(b.as_str().parse::<Backend>().unwrap(), b);
        }
        assert_eq!(Backend::from_code(dispatcher_common::BACKEND_NONE), None);
    }
}
