//! Attach the fixed-slot XDP dispatcher to an interface once; claim, fill
//! and release its slots without ever regenerating it.
//!
//! ```no_run
//! use slots_runtime::{ClaimRequest, ProgramSource, Runtime};
//!
//! let rt = Runtime::new();
//! let mut req = ClaimRequest::new(ProgramSource::file("firewall.o", None)?);
//! req.prio = Some(20);
//! let claim = rt.claim("eth0", &req)?; // attaches the dispatcher if needed
//! println!("running in slot {}", claim.slot);
//! // ... the slot is released when `claim` drops or the process exits.
//! # Ok::<(), slots_runtime::Error>(())
//! ```
//!
//! The protocol (state layout, locking, activation order) is described in
//! docs/design.md; the contract with the eBPF side is `dispatcher-common`.
#![warn(missing_docs)]

mod apply;
mod attach;
mod backend;
mod btf;
mod chain;
mod claim;
mod collect;
pub mod crash;
mod dispatcher;
mod error;
#[cfg(test)]
mod fake;
mod gc;
mod handle;
mod iface;
mod layout;
mod lock;
mod mappins;
mod narrow;
mod node;
mod objects;
mod origins;
mod owner;
pub mod pin;
mod placement;
mod privilege;
pub mod probe;
mod program;
#[cfg(test)]
mod protocol_tests;
mod record;
mod release;
mod replace;
mod retry;
mod root;
mod run_config;
mod state;
mod status;
mod sys;
mod upgrade;

use std::path::{Path, PathBuf};

pub use apply::{Action, ApplyOptions, Desired, DesiredClaim, Exported, Plan, Step};
pub use attach::{AttachOptions, Attached, Detached, Dropped, DroppedClaim, Replaced};
pub use backend::Backend;
pub use chain::ChainClaim;
pub use claim::ClaimRequest;
pub use dispatcher::{Mode, OBJECT as DISPATCHER, slot_array_ids};
pub use dispatcher_common::{LAYOUT_VERSION, SLOT_COUNT};
pub use error::{Cause, Error, ErrorKind, ExtensionRefusal, Result, chain as error_chain};
pub use gc::{Cleaned, Dead, Freed};
pub use handle::Claim;
pub use iface::Iface;
pub use mappins::{ClaimMap, MapPins, SHARED_DIR};
pub use node::{Namespace, NodeEntry};
pub use placement::{DEFAULT_PRIO, PRIO_MAX};
pub use program::ProgramSource;
pub use record::SlotState;
pub use release::{OwnRelease, Released, SlotRef};
pub use replace::ProgramReplaced;
pub use run_config::RunConfig;
pub use status::{ClaimState, ClaimStatus, Counters, Status, mask_names, parse_mask};
pub use upgrade::{Carried, Upgraded};

use crate::{lock::DirLock, objects::Objects, state::State};

/// The README's examples, compiled as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Where state lives unless told otherwise.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/xdp-slots";

/// Entry point: the bpffs root under which each interface has a directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// State under [`DEFAULT_ROOT`].
    pub fn new() -> Self {
        Self::with_root(DEFAULT_ROOT)
    }

    /// State under another bpffs directory.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The bpffs directory holding the per-interface state.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Attaches the dispatcher to `iface` (idempotent: an existing one of
    /// ours is reused). Refuses a foreign XDP program unless `force`.
    pub fn attach(&self, iface: &str, opts: AttachOptions) -> Result<Attached> {
        attach::attach(&self.root, &Iface::resolve(iface)?, opts)
    }

    /// Detaches the dispatcher and removes its state. Refuses while slots
    /// are claimed unless `force`; says which claims went.
    ///
    /// An interface of this network namespace that no longer exists, but
    /// whose dead state is still recorded under its name, has that state
    /// freed ([`Detached::interface_gone`]).
    pub fn detach(&self, iface: &str, force: bool) -> Result<Detached> {
        match Iface::resolve(iface) {
            Ok(i) => attach::detach(&self.root, &i, force),
            Err(e @ Error::NoSuchInterface { .. }) => {
                attach::detach_gone(&self.root, iface)?.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Frees the state of every dispatcher under the root, in any network
    /// namespace, whose interface is gone (deleted, alone or with its
    /// namespace), or whose removal did not finish: every pin, so that the
    /// kernel frees the dispatcher, its maps and links and the programs of
    /// persistent claims (a held claim's program goes when its holder
    /// exits). Safe against concurrent operations (it takes the root lock,
    /// then each dead directory's) and against a crash half-way (the next
    /// run finishes the job). Every attach and claim does the same in
    /// passing, skipping directories another process has locked.
    pub fn clean(&self) -> Result<Cleaned> {
        root::ensure(&self.root, privilege::Access::Manage)?;
        let _root_lock = DirLock::exclusive(&self.root)?;
        let freed = gc::collect_dead(&self.root, gc::Wait::Block, |_, _| true)?;
        Ok(Cleaned { freed })
    }

    /// Opens `iface`'s state under its lock (exclusive or shared).
    fn open(&self, iface: &Iface, exclusive: bool) -> Result<(DirLock, State)> {
        root::ensure(
            &self.root,
            if exclusive {
                privilege::Access::Manage
            } else {
                privilege::Access::Read
            },
        )?;
        let dir = self.root.join(iface.dir_name());
        if !dir.exists() {
            return Err(Error::NotAttached {
                iface: iface.name.clone(),
            });
        }
        let lock = if exclusive {
            DirLock::exclusive(&dir)?
        } else {
            DirLock::shared(&dir)?
        };
        let state = State::open(&dir, &iface.name)?;
        Ok((lock, state))
    }

    /// Claims a slot on `iface` for `req.program`, attaching the dispatcher
    /// first if it is not there (native mode where possible, backend auto).
    pub fn claim(&self, iface: &str, req: &ClaimRequest) -> Result<Claim> {
        self.claim_with(iface, req, AttachOptions::default())
    }

    /// [`Runtime::claim`], with the options for a first attach.
    pub fn claim_with(
        &self,
        iface: &str,
        req: &ClaimRequest,
        attach: AttachOptions,
    ) -> Result<Claim> {
        self.claim_marked(iface, req, attach, false)
    }

    /// [`Runtime::claim_with`], recording whether `apply` made the claim.
    fn claim_marked(
        &self,
        iface: &str,
        req: &ClaimRequest,
        attach: AttachOptions,
        applied: bool,
    ) -> Result<Claim> {
        let iface = Iface::resolve(iface)?;
        // Check the object and the request before touching the interface.
        let mut prepared = claim::prepare(req)?;
        let pin_maps = mappins::check(&req.pin_maps)?;
        if let Some(backend) = req.backend {
            backend
                .probe()
                .map_err(|source| Error::BackendUnsupported { backend, source })?;
        }
        let attached = attach::attach(&self.root, &iface, attach)?;
        let result = (|| {
            let (_lock, mut state) = self.open(&iface, true)?;
            let backend = match req.backend {
                Some(b) => b,
                None => state.default_backend()?,
            };
            prepared.ins.map_pin_dir = Some(pin_maps.dir(&state.dir, &prepared.name));
            let claimed = match claim::claim(&mut state, &req.program, &prepared, backend) {
                Ok(c) => c,
                Err(e) => {
                    // Maps the refused program pinned in its own
                    // directory go with it.
                    let _ = collect::sweep_maps(&mut state);
                    return Err(e);
                }
            };
            // The claim is made: an origin that cannot be recorded only
            // leaves status without it.
            record_origin(
                &state,
                &claimed,
                &req.program,
                &prepared.ins.name,
                applied,
                &pin_maps,
            );
            program::warn_claimed(&req.program, &prepared, &claimed.program);
            Ok(Claim::new(&iface.name, state.dir.clone(), claimed))
        })();
        if result.is_err() && attached.new {
            // Bad input changes nothing: take back the dispatcher this call
            // attached (it refuses if someone else claimed a slot meanwhile).
            let _ = attach::detach(&self.root, &iface, false);
        }
        result
    }

    /// Releases the claim in slot `which` (a number or a claim name).
    /// Another process's held claim needs `force`.
    pub fn release(&self, iface: &str, which: &SlotRef, force: bool) -> Result<Released> {
        let (_lock, mut state) = self.open(&Iface::resolve(iface)?, true)?;
        release::release(&mut state, which, force)
    }

    /// Replaces the program of the persistent claim `which` (a slot number
    /// or a claim name) by `program`, at the same run position: no packet
    /// meets neither program or both (docs/design.md, "Replace"). The
    /// claim keeps its name, priority, proceed-on verdicts, backend and
    /// persistence. Another process's held claim is refused
    /// ([`Error::ReplaceHeldByOther`]): its holder replaces it with
    /// [`Claim::replace`].
    pub fn replace(
        &self,
        iface: &str,
        which: &SlotRef,
        program: &ProgramSource,
    ) -> Result<ProgramReplaced> {
        self.replace_marked(iface, which, program, None, None)
    }

    /// [`Runtime::replace`]; the new program keeps the old one's `apply`
    /// mark and map pin policy, or takes `mark` and `pins` where given.
    fn replace_marked(
        &self,
        iface: &str,
        which: &SlotRef,
        program: &ProgramSource,
        mark: Option<bool>,
        pins: Option<&MapPins>,
    ) -> Result<ProgramReplaced> {
        let mut ins = program::inspect(program)?;
        let (_lock, mut state) = self.open(&Iface::resolve(iface)?, true)?;
        let pins = match pins {
            Some(p) => p.clone(),
            None => pins_of_claim(&state, which)?,
        };
        ins.map_pin_dir = Some(pins.dir(&state.dir, &claim_name(&state, which)?));
        let (replaced, claimed) = replace::replace(&mut state, which, program, &ins, None)?;
        let applied = mark.unwrap_or_else(|| {
            origins::read(&state.dir, replaced.old_slot, replaced.old_prog_id)
                .is_some_and(|o| o.applied)
        });
        record_origin(&state, &claimed, program, &ins.name, applied, &pins);
        Ok(replaced)
    }

    /// Frees records whose holders are gone; returns the slots freed.
    pub fn collect(&self, iface: &str) -> Result<Vec<usize>> {
        let (_lock, mut state) = self.open(&Iface::resolve(iface)?, true)?;
        collect::collect(&mut state)
    }

    /// Moves `iface`'s state to this runtime's layout ([`LAYOUT_VERSION`])
    /// with its persistent claims, in their run order: a new dispatcher,
    /// filled first, swapped in with one update of the XDP link, so every
    /// packet meets the old dispatcher or the new one (docs/design.md,
    /// "Upgrade"). A state already at this layout is left as it is
    /// (`from == to`). Held claims cannot be carried (their programs live
    /// with their holders' fds): they are listed in
    /// [`Error::UpgradeInterrupts`] and nothing changes, unless
    /// `interrupt_held`, which lets them stop. A custom chain decision is
    /// refused ([`Error::UpgradeUnsupported`]).
    pub fn upgrade(&self, iface: &str, interrupt_held: bool) -> Result<Upgraded> {
        upgrade::upgrade(&self.root, &Iface::resolve(iface)?, interrupt_held)
    }

    /// The state of `iface` (also of an older layout this runtime reads:
    /// [`Status::layout`]).
    pub fn status(&self, iface: &str) -> Result<Status> {
        let iface = Iface::resolve(iface)?;
        root::ensure(&self.root, privilege::Access::Read)?;
        let dir = self.root.join(iface.dir_name());
        if !dir.exists() {
            return Err(Error::NotAttached { iface: iface.name });
        }
        let _lock = DirLock::shared(&dir)?;
        status::read(&State::open_readable(&dir, &iface.name)?)
    }

    /// The state of every interface of this network namespace that has
    /// the dispatcher: each interface's name and its status, or why it
    /// could not be read (damaged state), so that one interface does not
    /// hide the others.
    pub fn status_all(&self) -> Result<Vec<(String, Result<Status>)>> {
        root::ensure(&self.root, privilege::Access::Read)?;
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let cookie = sys::netns_cookie()
            .map_err(|e| Error::io("reading the network namespace cookie", e))?;
        let mut out = Vec::new();
        for (dir, ifindex) in status::dirs_in_netns(&self.root, cookie)? {
            let name = sys::if_name(ifindex).unwrap_or_else(|| format!("if{ifindex}"));
            let status = DirLock::shared(&dir)
                .and_then(|_lock| status::read(&State::open_readable(&dir, &name)?));
            out.push((name, status));
        }
        Ok(out)
    }

    /// Every dispatcher under the root, in every network namespace (a
    /// container's too), with its namespace as far as it can be found
    /// from here (a `/run/netns` name, a process inside it) and its status,
    /// or why it could not be read. A dispatcher whose interface is gone
    /// says so ([`Status::dead`]).
    pub fn status_node(&self) -> Result<Vec<NodeEntry>> {
        root::ensure(&self.root, privilege::Access::Read)?;
        node::status(&self.root)
    }

    /// Switches the per-slot counters on or off.
    pub fn set_stats(&self, iface: &str, on: bool) -> Result<()> {
        let (_lock, mut state) = self.open(&Iface::resolve(iface)?, true)?;
        collect::collect(&mut state)?;
        state.set_flag(dispatcher_common::FLAG_STATS, on)
    }

    /// Installs a replacement chain decision (freplace only).
    pub fn set_chain(
        &self,
        iface: &str,
        program: &ProgramSource,
        persistent: bool,
    ) -> Result<ChainClaim> {
        let (_lock, mut state) = self.open(&Iface::resolve(iface)?, true)?;
        collect::collect(&mut state)?;
        chain::install(&mut state, program, persistent)
    }

    /// Removes a persistent replacement chain decision.
    pub fn clear_chain(&self, iface: &str) -> Result<()> {
        let (_lock, mut state) = self.open(&Iface::resolve(iface)?, true)?;
        chain::remove(&mut state)
    }
}

/// Writes a finished claim's origin; one that cannot be written only
/// leaves status without it.
fn record_origin(
    state: &State,
    claimed: &claim::Claimed<State>,
    program: &ProgramSource,
    prog_name: &str,
    applied: bool,
    map_pins: &MapPins,
) {
    let written = origins::Written {
        object: &program.label,
        program: prog_name,
        hash: origins::hash(&program.bytes),
        applied,
        map_pins,
        pidns: owner::own_pidns().unwrap_or(0),
    };
    if let Err(e) = origins::write(&state.dir, claimed.slot, claimed.prog_id, written) {
        log::warn!("{}", error::chain(&e));
    }
}

/// The name of the claim `which` (as given, if no record has it: the
/// protocol then says so).
fn claim_name(state: &State, which: &SlotRef) -> Result<String> {
    Ok(match which {
        SlotRef::Name(name) => name.clone(),
        SlotRef::Slot(n) => state
            .records()?
            .get(*n)
            .map(|r| r.name.clone())
            .unwrap_or_default(),
    })
}

/// Where the claim `which` pins its maps, so that a replace reuses them:
/// its own directory if it has one, else what its origin records, else
/// (a claim made by a version that did not record it) libbpf's place,
/// where those versions pinned them.
fn pins_of_claim(state: &State, which: &SlotRef) -> Result<MapPins> {
    let name = claim_name(state, which)?;
    if mappins::scoped_dir(&state.dir, &name).exists() {
        return Ok(MapPins::Scoped);
    }
    let records = state.records()?;
    let recorded = records
        .iter()
        .enumerate()
        .find(|(_, r)| !r.is_free() && r.name == name)
        .and_then(|(n, r)| origins::read(&state.dir, n, r.prog_id))
        .and_then(|o| o.map_pins);
    Ok(recorded.unwrap_or(MapPins::Shared))
}
