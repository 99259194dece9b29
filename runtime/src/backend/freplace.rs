//! freplace backend: the program replaces the slot function `slot_N` (or
//! `chain_decide`) as an extension, through a bpf_link. An unpinned link
//! lives as long as its holder's fd; a persistent one is pinned as `ext_N`.
use aya::programs::links::{FdLink, PinnedLink};

use crate::{
    dispatcher,
    error::{Error, Result},
    program::{self, Inspected, Loaded, ProgramSource},
    state::State,
};

/// Loads `src` as an extension of `func` in the dispatcher and links it.
/// With `pin_as`, the link is pinned there (persistent) and `None` comes
/// back; otherwise the caller holds the link.
pub fn fill(
    state: &State,
    src: &ProgramSource,
    ins: &Inspected,
    func: &str,
    pin_as: Option<&str>,
) -> Result<(Loaded, Option<FdLink>)> {
    let target = dispatcher::program_fd(&state.dir)?;
    let mut loaded = program::load_extension(src, ins, target, func)?;
    crate::crash::point("freplace::loaded");
    let ext: &mut aya::programs::Extension = loaded
        .ebpf
        .program_mut(&ins.name)
        .expect("loaded program is in its object")
        .try_into()
        .map_err(|e| Error::kernel("linking the extension", e))?;
    let id = ext
        .attach()
        .map_err(|e| Error::kernel(format!("linking {} over {func}", ins.name), e))?;
    let link = FdLink::from(
        ext.take_link(id)
            .map_err(|e| Error::kernel("taking the extension link", e))?,
    );
    crate::crash::point("freplace::linked");
    match pin_as {
        Some(name) => {
            let path = state.path(name);
            link.pin(&path)
                .map_err(|e| Error::kernel(format!("pinning {}", path.display()), e))?;
            Ok((loaded, None))
        }
        None => Ok((loaded, Some(link))),
    }
}

/// Removes a persistent extension link pinned as `name` (the slot's body
/// comes back once nobody else holds the link). Idempotent.
pub fn unpin(state: &State, name: &str) -> Result<()> {
    let path = state.path(name);
    if !path.exists() {
        return Ok(());
    }
    let pinned = PinnedLink::from_pin(&path)
        .map_err(|e| Error::kernel(format!("opening {}", path.display()), e))?;
    let link: FdLink = pinned
        .unpin()
        .map_err(|e| Error::io(format!("unpinning {}", path.display()), e))?;
    drop(link);
    Ok(())
}
