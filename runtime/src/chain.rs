//! A replacement chain decision: an extension of `chain_decide`
//! (`int f(struct xdp_md *ctx, __u32 slot, __u32 action)`, non-zero to go on
//! to the next slot). freplace only. Installed with its program linked
//! first, then `FLAG_CUSTOM_CHAIN` set so the dispatcher starts calling it;
//! removed in the reverse order.
use std::path::PathBuf;

use aya::programs::links::FdLink;
use dispatcher_common::{FLAG_CUSTOM_CHAIN, names};

use crate::{
    backend::{Backend, freplace},
    crash,
    error::{Error, Result},
    lock::DirLock,
    objects::Objects,
    pin,
    program::{Inspected, Loaded, ObjectBytes, ProgramSource},
    state::State,
};

/// An installed chain decision; a held one is removed on drop.
pub struct ChainClaim {
    /// Kernel id of the chain-decision program.
    pub prog_id: u32,
    /// Stays after this process exits.
    pub persistent: bool,
    iface: String,
    dir: PathBuf,
    link: Option<FdLink>,
    _program: Loaded,
}

impl std::fmt::Debug for ChainClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainClaim")
            .field("iface", &self.iface)
            .field("prog_id", &self.prog_id)
            .field("persistent", &self.persistent)
            .finish_non_exhaustive()
    }
}

impl Drop for ChainClaim {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else { return };
        let result = (|| {
            let _lock = DirLock::exclusive(&self.dir)?;
            let mut state = State::open(&self.dir, &self.iface)?;
            let mut c = state.control()?;
            if c.chain_prog_id == self.prog_id {
                c.flags &= !FLAG_CUSTOM_CHAIN;
                c.chain_prog_id = 0;
                state.write_control(&c)?;
            }
            drop(link);
            Ok::<(), Error>(())
        })();
        if let Err(e) = result {
            log::warn!("removing the chain decision of {}: {e}", self.iface);
        }
    }
}

/// Picks the program: the only one, or the named one, of any section.
fn inspect(src: &ProgramSource) -> Result<Inspected> {
    let obj = aya_obj::Object::parse(&src.bytes).map_err(|e| Error::BadObject {
        path: src.label.clone(),
        source: Box::new(e),
    })?;
    let mut available: Vec<&String> = obj.programs.keys().collect();
    available.sort();
    let name = match &src.name {
        Some(n) if obj.programs.contains_key(n) => n.clone(),
        Some(n) => {
            return Err(Error::NoSuchProgram {
                path: src.label.clone(),
                name: n.clone(),
                available: available
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        None if available.len() == 1 => available[0].clone(),
        None => {
            return Err(Error::AmbiguousProgram {
                path: src.label.clone(),
                available: available
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    Ok(Inspected {
        name,
        object: ObjectBytes(src.bytes.clone()),
        ..Inspected::default()
    })
}

/// Installs `src` as the chain decision. `state` is locked by the caller.
pub(crate) fn install(
    state: &mut State,
    src: &ProgramSource,
    persistent: bool,
) -> Result<ChainClaim> {
    let c = state.control()?;
    if state.default_backend()? != Backend::Freplace
        && let Err(source) = Backend::Freplace.probe()
    {
        return Err(Error::ChainNeedsFreplace { source });
    }
    if c.flags & FLAG_CUSTOM_CHAIN != 0 {
        return Err(Error::ChainInstalled {
            iface: state.iface.clone(),
            prog_id: c.chain_prog_id,
        });
    }
    let ins = inspect(src)?;
    // A persistent install that died after pinning its link and before
    // setting the flag: that link would refuse this one (one extension per
    // function), and nothing else would ever remove it.
    freplace::unpin(state, pin::CHAIN)?;
    let mut program = freplace::load(state, src, &ins, names::CHAIN_FN)?;
    let (_, link) = freplace::link(state, &mut program, persistent.then_some(pin::CHAIN))?;
    crash::point("chain::linked")?;
    let prog_id = program.id()?;
    let mut c = state.control()?;
    c.chain_prog_id = prog_id;
    c.flags |= FLAG_CUSTOM_CHAIN;
    state.write_control(&c)?;
    Ok(ChainClaim {
        prog_id,
        persistent,
        iface: state.iface.clone(),
        dir: state.dir.clone(),
        link,
        _program: program,
    })
}

/// Removes a persistent chain decision (held ones go with their holder).
pub(crate) fn remove(state: &mut State) -> Result<()> {
    let mut c = state.control()?;
    if c.flags & FLAG_CUSTOM_CHAIN == 0 {
        return Err(Error::NoCustomChain {
            iface: state.iface.clone(),
        });
    }
    c.flags &= !FLAG_CUSTOM_CHAIN;
    c.chain_prog_id = 0;
    state.write_control(&c)?;
    freplace::unpin(state, pin::CHAIN).map(drop)
}
