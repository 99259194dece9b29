//! Moving a live interface to this runtime's state layout with its claims
//! (docs/design.md, "Upgrade").
//!
//! Under the root lock and the interface lock: a new dispatcher is loaded
//! and filled beside the old one in `<name>_up<pid>` (the persistent
//! claims' programs put into its slot arrays, or their extensions linked
//! over its slot functions too; their records, masks and origins copied,
//! the old run order published), the XDP link is
//! pinned there too, then one `BPF_LINK_UPDATE` swaps the new dispatcher
//! in (every packet meets one of the two), the two directories exchange
//! names in one step, and the old state is removed.
//!
//! A crash leaves an `_up<pid>` directory; the next attach, detach or
//! upgrade (all under the root lock, which every upgrade holds throughout,
//! so such a directory is a dead process's) settles it by what the link
//! runs: if it runs that directory's dispatcher, the exchange is finished;
//! then the directory, now the old state or an unfinished build, is
//! removed. The link is pinned in both directories from before the swap
//! on, so removing either never detaches the dispatcher.
use std::path::Path;

use aya::{
    maps::{Map, MapData, ProgramArray},
    programs::{Extension, ProgramFd, ProgramInfo, links::FdLink, links::PinnedLink},
};
use dispatcher_common::{FLAG_CUSTOM_CHAIN, FLAG_STATS, LAYOUT_VERSION, names};
use serde::Serialize;
use std::os::fd::AsFd as _;

use crate::{
    backend::Backend,
    crash, dispatcher,
    error::{Error, Result},
    iface::Iface,
    lock::DirLock,
    objects::Objects,
    origins, owner, pin,
    record::SlotState,
    root,
    state::{State, live_programs},
    sys,
};

/// A claim an upgrade carried to the new dispatcher.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Carried {
    /// Its run position (0 runs first).
    pub position: usize,
    /// Its slot (the same in both dispatchers).
    pub slot: usize,
    /// Its name.
    pub name: String,
    /// Its priority.
    pub prio: u32,
    /// Its program's id (the same program, now in the new dispatcher).
    pub prog_id: u32,
}

/// What an upgrade did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Upgraded {
    /// The interface.
    pub iface: String,
    /// The layout the state had.
    pub from: u32,
    /// The layout it has now ([`crate::LAYOUT_VERSION`]); equal to `from`
    /// when it was already current and nothing changed.
    pub to: u32,
    /// The new dispatcher's program id (the old one's when nothing changed).
    pub prog_id: u32,
    /// The persistent claims, in run order, running in the new dispatcher.
    pub carried: Vec<Carried>,
    /// Held claims that stopped (`name (slot N, held by pid P)`): only
    /// with `interrupt_held`.
    pub interrupted: Vec<String>,
}

/// Upgrades `iface`'s state to [`LAYOUT_VERSION`].
pub(crate) fn upgrade(root_dir: &Path, iface: &Iface, interrupt_held: bool) -> Result<Upgraded> {
    root::ensure(root_dir, crate::privilege::Access::Manage)?;
    let _root_lock = DirLock::exclusive(root_dir)?;
    settle_dead(root_dir, iface)?;
    let dir = root_dir.join(iface.dir_name());
    if !dir.exists() {
        return Err(Error::NotAttached {
            iface: iface.name.clone(),
        });
    }
    let _lock = DirLock::exclusive(&dir)?;
    let old = State::open_readable(&dir, &iface.name)?;
    let from = old.layout();
    let old_prog = dispatcher::pinned_program(&dir)?;
    if from == LAYOUT_VERSION {
        return Ok(Upgraded {
            iface: iface.name.clone(),
            from,
            to: LAYOUT_VERSION,
            prog_id: old_prog.id(),
            carried: Vec::new(),
            interrupted: Vec::new(),
        });
    }
    let c = old.control()?;
    if c.flags & FLAG_CUSTOM_CHAIN != 0 || dir.join(pin::CHAIN).exists() {
        return Err(Error::UpgradeUnsupported {
            iface: iface.name.clone(),
            why: "a custom chain decision (an extension) is installed, and this version does not move it to another dispatcher".into(),
        });
    }
    // What each claim becomes, decided before anything changes.
    let records = old.records()?;
    let progs = live_programs()?;
    let mut carry = Vec::new();
    let mut interrupted = Vec::new();
    for &n in c.run_table().slots() {
        let n = n as usize;
        let rec = &records[n];
        if rec.is_free() || !progs.contains(&rec.prog_id) {
            continue;
        }
        match rec.state {
            SlotState::Persistent => carry.push(n),
            SlotState::Held if owner::alive(rec.owner) => interrupted.push(format!(
                "{} (slot {n}, held by pid {})",
                rec.name, rec.owner.pid
            )),
            // Draining, or a dead holder's: nothing runs it.
            _ => {}
        }
    }
    if !interrupted.is_empty() && !interrupt_held {
        return Err(Error::UpgradeInterrupts {
            iface: iface.name.clone(),
            held: interrupted,
        });
    }

    let side = root_dir.join(format!("{}_up{}", iface.dir_name(), std::process::id()));
    std::fs::create_dir(&side).map_err(|e| Error::io(format!("creating {}", side.display()), e))?;
    let built = build(&dir, &side, iface, &old, &carry);
    let (new_prog, carried) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&side);
            return Err(e);
        }
    };
    // The switch: one link update, checked against the old dispatcher.
    let link = sys::obj_get(&dir.join(pin::LINK))
        .map_err(|e| Error::io(format!("opening {}", dir.join(pin::LINK).display()), e))?;
    let new_fd = new_prog
        .fd()
        .map_err(|e| Error::kernel("opening the new dispatcher", e))?;
    let old_fd = old_prog
        .fd()
        .map_err(|e| Error::kernel("opening the old dispatcher", e))?;
    if let Err(e) = sys::link_update(link.as_fd(), new_fd.as_fd(), old_fd.as_fd()) {
        let _ = std::fs::remove_dir_all(&side);
        return Err(Error::io(
            format!("switching {}'s XDP link to the new dispatcher", iface.name),
            e,
        ));
    }
    crash::point("upgrade::switched")?;
    sys::rename_exchange(&dir, &side).map_err(|e| {
        Error::io(
            format!("exchanging {} and {}", dir.display(), side.display()),
            e,
        )
    })?;
    crash::point("upgrade::exchanged")?;
    keep_maps(&side, &dir)?;
    std::fs::remove_dir_all(&side)
        .map_err(|e| Error::io(format!("removing {}", side.display()), e))?;
    Ok(Upgraded {
        iface: iface.name.clone(),
        from,
        to: LAYOUT_VERSION,
        prog_id: new_prog.id(),
        carried,
        interrupted,
    })
}

/// Builds the new state in `side`: the dispatcher, the carried claims and
/// their run order, the link pinned. Nothing on the interface changes.
fn build(
    dir: &Path,
    side: &Path,
    iface: &Iface,
    old: &State,
    carry: &[usize],
) -> Result<(ProgramInfo, Vec<Carried>)> {
    crash::point("upgrade::building")?;
    let oc = old.control()?;
    let backend = old.default_backend()?;
    drop(dispatcher::load(side, iface, backend)?);
    origins::create(side)?;
    let mut new = State::open(side, &iface.name)?;
    let mut carried = Vec::new();
    let new_dispatcher = dispatcher::program_fd(side)?;
    for (position, &n) in carry.iter().enumerate() {
        let mut rec = old.record(n)?;
        if rec.backend == Some(Backend::Freplace) {
            rec.link_id = relink(side, &new_dispatcher, n, rec.prog_id)?;
        } else {
            refill(dir, side, old, n, rec.prog_id)?;
        }
        new.write_record(n, &rec)?;
        origins::copy(dir, side, n, rec.prog_id)?;
        carried.push(Carried {
            position,
            slot: n,
            name: rec.name.clone(),
            prio: rec.prio,
            prog_id: rec.prog_id,
        });
    }
    // No packet reads this dispatcher yet: the order is written at once.
    let mut c = new.control()?;
    c.mode = oc.mode;
    c.flags = oc.flags & FLAG_STATS;
    for &n in carry {
        c.proceed_on[n] = oc.proceed_on[n];
    }
    c.set_run_order(carry);
    new.write_control(&c)?;
    crash::point("upgrade::filled")?;
    let link: FdLink = PinnedLink::from_pin(dir.join(pin::LINK))
        .map_err(|e| Error::kernel(format!("opening {}", dir.join(pin::LINK).display()), e))?
        .into();
    link.pin(side.join(pin::LINK))
        .map_err(|e| Error::kernel("pinning the XDP link beside the new dispatcher", e))?;
    crash::point("upgrade::linked")?;
    Ok((dispatcher::pinned_program(side)?, carried))
}

/// Puts the program of the persistent tail-call claim of slot `n` (the
/// one `dir`'s slot array really runs, checked against its record's
/// `prog_id`) into the same slot's array in `side`.
fn refill(dir: &Path, side: &Path, old: &State, n: usize, prog_id: u32) -> Result<()> {
    let old_array = MapData::from_pin(dir.join(pin::prog(n)))
        .map_err(|e| Error::kernel(format!("opening slot {n}'s old program array"), e))?;
    let id = sys::map_lookup(old_array.fd().as_fd(), 0, 4)
        .map_err(|e| Error::io(format!("reading slot {n}'s old program array"), e))?
        .map(|v| u32::from_ne_bytes(v[..4].try_into().expect("4 bytes")));
    let Some(id) = id.filter(|&id| id == prog_id) else {
        return Err(old.corrupt(
            pin::SLOTS,
            format!("slot {n}'s record names program {prog_id} but its array holds {id:?}"),
        ));
    };
    let prog = program_by_id(id)
        .ok_or_else(|| old.corrupt(pin::SLOTS, format!("slot {n}'s program {id} is gone")))?
        .map_err(|e| Error::kernel(format!("opening program {id}"), e))?;
    let data = MapData::from_pin(side.join(pin::prog(n)))
        .map_err(|e| Error::kernel(format!("opening slot {n}'s program array"), e))?;
    let mut map = Map::ProgramArray(data);
    ProgramArray::try_from(&mut map)
        .map_err(|e| Error::kernel("opening a slot's program array", e))?
        .set(0, &prog, 0)
        .map_err(|e| Error::kernel(format!("filling slot {n} of the new dispatcher"), e))?;
    Ok(())
}

/// A descriptor of the loaded program `id`, if it is loaded (aya opens
/// programs by id only while listing them).
fn program_by_id(id: u32) -> Option<std::result::Result<ProgramFd, aya::programs::ProgramError>> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .map(|p| p.fd())
}

/// Links the extension `prog_id` (a persistent freplace claim of slot `n`)
/// over the new dispatcher's `slot_N` too (an extension may have links to
/// several targets with the same signature) and pins that link as `ext_N`
/// in `side`. Returns the new link's id.
fn relink(side: &Path, target: &ProgramFd, n: usize, prog_id: u32) -> Result<u32> {
    let prog = program_by_id(prog_id)
        .ok_or_else(|| {
            Error::io(
                format!("finding slot {n}'s program {prog_id}"),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )
        })?
        .map_err(|e| Error::kernel(format!("opening program {prog_id}"), e))?;
    // aya takes an existing extension from a pin only.
    let tmp = side.join(format!("extprog_{n}"));
    sys::obj_pin(prog.as_fd(), &tmp)
        .map_err(|e| Error::io(format!("pinning {}", tmp.display()), e))?;
    let linked = (|| {
        let mut ext = Extension::from_pin(&tmp)
            .map_err(|e| Error::kernel(format!("opening slot {n}'s extension"), e))?;
        let func = format!("{}{n}", names::SLOT_FN_PREFIX);
        let id = ext.attach_to_program(target, &func).map_err(|e| {
            Error::kernel(
                format!("linking slot {n}'s extension to the new dispatcher"),
                e,
            )
        })?;
        let link = FdLink::from(
            ext.take_link(id)
                .map_err(|e| Error::kernel("taking the extension link", e))?,
        );
        let link_id = link
            .info()
            .map_err(|e| Error::kernel("reading the extension link", e))?
            .id();
        link.pin(side.join(pin::ext(n)))
            .map_err(|e| Error::kernel(format!("pinning {}", pin::ext(n)), e))?;
        Ok(link_id)
    })();
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// Settles the `_up<pid>` directories an upgrade of `iface` left when it
/// died (see the module's documentation). The caller holds the root lock.
pub(crate) fn settle_dead(root_dir: &Path, iface: &Iface) -> Result<()> {
    let dir = root_dir.join(iface.dir_name());
    let prefix = format!("{}_up", iface.dir_name());
    let entries = std::fs::read_dir(root_dir)
        .map_err(|e| Error::io(format!("listing {}", root_dir.display()), e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix(&prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if !ours {
            continue;
        }
        let side = entry.path();
        if runs(&side) && !dir.exists() {
            // Not left by this protocol (it exchanges, never renames
            // away), but the running dispatcher's state is kept.
            std::fs::rename(&side, &dir)
                .map_err(|e| Error::io(format!("renaming {} into place", side.display()), e))?;
            continue;
        }
        if runs(&side) {
            log::info!(
                "{}: finishing an upgrade that died after switching to the new dispatcher",
                iface.name
            );
            sys::rename_exchange(&dir, &side).map_err(|e| {
                Error::io(
                    format!("exchanging {} and {}", dir.display(), side.display()),
                    e,
                )
            })?;
            keep_maps(&side, &dir)?;
        } else {
            log::info!("removing {name}, left by an upgrade that did not finish");
        }
        std::fs::remove_dir_all(&side)
            .map_err(|e| Error::io(format!("removing {}", side.display()), e))?;
    }
    Ok(())
}

/// Does an XDP link run the dispatcher pinned in `dir`?
fn runs(dir: &Path) -> bool {
    let Ok(prog) = dispatcher::pinned_program(dir) else {
        return false;
    };
    let id = prog.id();
    aya::programs::loaded_links()
        .filter_map(|l| l.ok())
        .any(|l| l.program_id() == id)
}

/// Moves the claims' maps pinned by name (`maps/`) from the old state
/// directory `old`, about to be removed, to the interface's `dir`: the
/// carried programs use those maps, and their pins are how users reach them.
fn keep_maps(old: &Path, dir: &Path) -> Result<()> {
    let from = old.join(pin::MAPS);
    let to = dir.join(pin::MAPS);
    if !from.exists() || to.exists() {
        return Ok(());
    }
    std::fs::rename(&from, &to)
        .map_err(|e| Error::io(format!("moving {} to {}", from.display(), to.display()), e))
}
