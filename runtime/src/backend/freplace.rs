//! freplace backend: the program replaces the slot function `slot_N` (or
//! `chain_decide`) as an extension, through a bpf_link. An unpinned link
//! lives as long as its holder's fd; a persistent one is pinned as `ext_N`.
use aya::programs::links::{FdLink, PinnedLink};
use dispatcher_common::{SLOT_COUNT, names};

use super::{Filled, Hold, SlotBackend};
use crate::{
    crash, dispatcher,
    error::{Error, Result},
    pin,
    probe::ProbeError,
    program::{self, Inspected, Loaded, ProgramSource},
    state::State,
};

/// The freplace backend.
pub(crate) struct Freplace;

/// Loads `src` as an extension of the dispatcher's function `func`.
pub(crate) fn load(
    state: &State,
    src: &ProgramSource,
    ins: &Inspected,
    func: &str,
) -> Result<Loaded> {
    let target = dispatcher::program_fd(&state.dir)?;
    program::load_extension(src, ins, target, func)
}

/// Links a loaded extension over its function. With `pin_as`, the link is
/// pinned there (persistent) and `None` comes back; otherwise the caller
/// holds the link. Returns the link's id too.
pub(crate) fn link(
    state: &State,
    loaded: &mut Loaded,
    pin_as: Option<&str>,
) -> Result<(u32, Option<FdLink>)> {
    let name = loaded.name.clone();
    let ext: &mut aya::programs::Extension = loaded
        .ebpf
        .program_mut(&name)
        .expect("loaded program is in its object")
        .try_into()
        .map_err(|e| Error::kernel("linking the extension", e))?;
    let id = ext
        .attach()
        .map_err(|e| Error::kernel(format!("linking {name}"), e))?;
    let link = FdLink::from(
        ext.take_link(id)
            .map_err(|e| Error::kernel("taking the extension link", e))?,
    );
    let link_id = link
        .info()
        .map_err(|e| Error::kernel("reading the extension link", e))?
        .id();
    crash::point("freplace::linked")?;
    match pin_as {
        Some(pin_name) => {
            let path = state.path(pin_name);
            link.pin(&path)
                .map_err(|e| Error::kernel(format!("pinning {}", path.display()), e))?;
            Ok((link_id, None))
        }
        None => Ok((link_id, Some(link))),
    }
}

/// Removes a persistent extension link pinned as `name` (the function's
/// body comes back once nobody else holds the link). Idempotent; true if
/// there was one.
pub(crate) fn unpin(state: &State, name: &str) -> Result<bool> {
    let path = state.path(name);
    if !path.exists() {
        return Ok(false);
    }
    let pinned = PinnedLink::from_pin(&path)
        .map_err(|e| Error::kernel(format!("opening {}", path.display()), e))?;
    let link: FdLink = pinned
        .unpin()
        .map_err(|e| Error::io(format!("unpinning {}", path.display()), e))?;
    drop(link);
    Ok(true)
}

impl SlotBackend for Freplace {
    fn probe(&self) -> std::result::Result<(), ProbeError> {
        crate::probe::freplace()
    }

    fn can_fill(&self, n: usize) -> bool {
        n < SLOT_COUNT
    }

    fn capacity(&self) -> usize {
        SLOT_COUNT
    }

    fn load(
        &self,
        state: &State,
        n: usize,
        src: &ProgramSource,
        ins: &Inspected,
    ) -> Result<Loaded> {
        load(state, src, ins, &format!("{}{n}", names::SLOT_FN_PREFIX))
    }

    fn fill(&self, state: &State, n: usize, prog: &mut Loaded, persistent: bool) -> Result<Filled> {
        let pin_name = pin::ext(n);
        let (link_id, link) = link(state, prog, persistent.then_some(pin_name.as_str()))?;
        Ok(Filled {
            link_id,
            hold: link.map(|l| Hold(Box::new(Some(l)))),
        })
    }

    fn empty(&self, state: &State, n: usize, hold: Option<&mut Hold>) -> Result<()> {
        match hold.and_then(|h| h.0.downcast_mut::<Option<FdLink>>()) {
            // The holder's link: closing its only fd unlinks it.
            Some(link) => drop(link.take()),
            None => {
                unpin(state, &pin::ext(n))?;
            }
        }
        Ok(())
    }

    fn sweep_free(&self, state: &State, n: usize) -> Result<bool> {
        // An extension pinned over a free slot would refuse every later
        // extension there and run in place of a later tail-call claim.
        let found = unpin(state, &pin::ext(n))?;
        if found {
            log::info!(
                "slot {n} on {}: unlinked an unrecorded extension",
                state.iface
            );
        }
        Ok(found)
    }
}
