//! Putting the dispatcher on an interface (once) and taking it off.
use std::path::{Path, PathBuf};

use crate::{
    backend::Backend,
    collect::collect,
    crash,
    dispatcher::{self, Mode},
    error::{Error, Result},
    gc,
    iface::Iface,
    lock::DirLock,
    objects::Objects,
    origins, pin,
    probe::ProbeError,
    record::SlotState,
    root,
    state::State,
    sys,
};

/// How long an attach waits for a dispatcher of ours that no state
/// directory accounts for to leave the interface (see [`attach`]).
const DEAD_LINK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// Options for [`crate::Runtime::attach`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct AttachOptions {
    /// How the dispatcher sits on the interface.
    pub mode: Mode,
    /// Backend new claims get by default; `None` probes the kernel and
    /// takes the first backend it allows ([`Backend::ALL`]).
    pub backend: Option<Backend>,
    /// Replace a foreign XDP program (attached through netlink).
    pub force: bool,
}

/// The result of an attach.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Attached {
    /// The interface.
    pub iface: String,
    /// Its state directory.
    pub dir: PathBuf,
    /// false: our dispatcher was already there and is reused.
    pub new: bool,
    /// How the dispatcher sits on the interface (never `Auto`).
    pub mode: Mode,
    /// Backend claims get by default.
    pub backend: Backend,
    /// Why probing chose that backend: the backends it passed over.
    #[serde(serialize_with = "serialize_reasons")]
    pub passed_over: Vec<(Backend, ProbeError)>,
    /// Kernel id of the dispatcher program.
    pub prog_id: u32,
    /// The foreign XDP program that `force` removed from the interface.
    pub replaced: Option<Replaced>,
    /// State found stale and removed: its dispatcher was no longer on the
    /// interface (the interface was re-created, or the link pin removed by
    /// hand), and the claims it recorded were gone with it.
    pub stale: Option<Dropped>,
}

/// A foreign XDP program removed from an interface by a forced attach.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Replaced {
    /// Its name.
    pub program: String,
    /// Its kernel id.
    pub id: u32,
}

/// A claim that went with its interface's state.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct DroppedClaim {
    /// Its slot.
    pub slot: usize,
    /// Its name.
    pub name: String,
    /// Held, persistent or draining.
    pub state: SlotState,
    /// The claiming process.
    pub owner: u32,
}

/// The claims an interface's state held when it was removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Dropped {
    /// The claims, as far as the records could be read.
    pub claims: Vec<DroppedClaim>,
    /// The records could not be read (damaged state): there may have been
    /// claims that are not listed.
    pub unreadable: bool,
}

/// The result of a detach.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Detached {
    /// The interface.
    pub iface: String,
    /// The claims removed with the state (only with `force`, or when the
    /// interface was gone).
    pub dropped: Dropped,
    /// The interface no longer existed: its dead state was freed.
    pub interface_gone: bool,
}

/// The claims recorded in the state directory `dir` of interface `iface`.
pub(crate) fn claims_in(dir: &Path, iface: &str) -> Dropped {
    let records = State::open(dir, iface).and_then(|s| s.records());
    match records {
        Ok(records) => Dropped {
            claims: records
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.is_free())
                .map(|(slot, r)| DroppedClaim {
                    slot,
                    name: r.name.clone(),
                    state: r.state,
                    owner: r.owner.pid,
                })
                .collect(),
            unreadable: false,
        },
        Err(_) => Dropped {
            claims: Vec::new(),
            unreadable: true,
        },
    }
}

/// The programs libxdp's dispatcher `id` on `ifindex` runs, as its pins
/// tell (`<bpffs>/xdp/dispatch-<ifindex>-<id>/prog<N>-prog`, with the bpffs
/// from `LIBXDP_BPFFS` as libxdp takes it): `name (id N)` each.
fn libxdp_programs(ifindex: u32, id: u32) -> Vec<String> {
    let bpffs = std::env::var_os("LIBXDP_BPFFS").unwrap_or_else(|| "/sys/fs/bpf".into());
    let dir = Path::new(&bpffs)
        .join("xdp")
        .join(format!("dispatch-{ifindex}-{id}"));
    (0..)
        .map(|n| dir.join(format!("prog{n}-prog")))
        .take_while(|p| p.exists())
        .map(|p| match aya::programs::ProgramInfo::from_pin(&p) {
            Ok(info) => format!(
                "{} (id {})",
                info.name_as_str().unwrap_or("unnamed"),
                info.id()
            ),
            Err(_) => p.display().to_string(),
        })
        .collect()
}

fn serialize_reasons<S: serde::Serializer>(
    v: &[(Backend, ProbeError)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(b, e)| (b.as_str(), e.to_string())))
}

/// Is our dispatcher, pinned in `dir`, the program on the interface?
fn ours_attached(dir: &Path, iface: &Iface) -> Result<Option<u32>> {
    let on_if = sys::xdp_attached(iface.ifindex)
        .map_err(|e| Error::io(format!("reading the XDP program of {}", iface.name), e))?;
    // Without its link pin (a detach that died half-way) the dispatcher is
    // on its way off the interface.
    if on_if.prog_id == 0 || !dir.join(pin::DISPATCHER).exists() || !dir.join(pin::LINK).exists() {
        return Ok(None);
    }
    let ours = dispatcher::pinned_program(dir)?.id();
    Ok((ours == on_if.prog_id).then_some(ours))
}

fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(String::from))
        .unwrap_or_else(|| "unnamed".into())
}

/// The first backend of [`Backend::ALL`] that this kernel allows, and why
/// each one before it was passed over. The last one is taken untried if
/// all others fail (every kernel that runs XDP runs tail calls).
fn choose_backend() -> (Backend, Vec<(Backend, ProbeError)>) {
    let mut passed_over = Vec::new();
    let (last, rest) = Backend::ALL.split_last().expect("at least one backend");
    for &b in rest {
        match b.probe() {
            Ok(()) => return (b, passed_over),
            Err(why) => passed_over.push((b, why)),
        }
    }
    (*last, passed_over)
}

/// Attaches (or finds) the dispatcher on `iface`.
pub fn attach(root: &Path, iface: &Iface, opts: AttachOptions) -> Result<Attached> {
    root::ensure(root, crate::privilege::Access::Manage)?;
    let _root_lock = DirLock::exclusive(root)?;
    remove_dead_builds(root, iface)?;
    crate::upgrade::settle_dead(root, iface)?;
    let dir = root.join(iface.dir_name());
    // Other interfaces' dead state, freed in passing; this interface's own
    // directory is judged below, which says what went with it. A dead
    // directory another process has locked waits for the next attach.
    if let Err(e) = gc::collect_dead(root, gc::Wait::Skip, |d, _| d != dir) {
        log::warn!("freeing dead state: {}", crate::error::chain(&e));
    }
    let mut stale = None;
    if dir.exists() {
        if let Some(prog_id) = ours_attached(&dir, iface)? {
            let state = State::open(&dir, &iface.name)?;
            return Ok(Attached {
                iface: iface.name.clone(),
                new: false,
                mode: state.mode()?,
                backend: state.default_backend()?,
                passed_over: Vec::new(),
                prog_id,
                dir,
                replaced: None,
                stale: None,
            });
        }
        // Our directory, but the dispatcher is not on the interface any more
        // (the interface was deleted and its index reused, or the link pin
        // removed): start afresh, saying what went.
        let dropped = claims_in(&dir, &iface.name);
        log::warn!(
            "{}: the dispatcher was no longer on the interface (the interface was re-created, or the link pin in {} removed), so its state was dropped with {}",
            iface.name,
            dir.display(),
            dropped
        );
        remove_dir(&dir)?;
        stale = Some(dropped);
    }
    let mut on_if = sys::xdp_attached(iface.ifindex)
        .map_err(|e| Error::io(format!("reading the XDP program of {}", iface.name), e))?;
    // A dispatcher whose attach (or detach) died with its link unpinned
    // goes away by itself: the kernel releases the dead process's link from
    // a work queue, usually a few milliseconds later. Wait for that (a slow
    // or emulated machine may take far longer) before calling it foreign.
    let patience = std::time::Instant::now();
    while on_if.prog_id != 0
        && program_name(on_if.prog_id) == dispatcher_common::names::DISPATCHER
        && patience.elapsed() < DEAD_LINK_PATIENCE
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
        on_if = sys::xdp_attached(iface.ifindex)
            .map_err(|e| Error::io(format!("reading the XDP program of {}", iface.name), e))?;
    }
    let mut replaced = None;
    if on_if.prog_id != 0 {
        let program = program_name(on_if.prog_id);
        if program == LIBXDP_DISPATCHER {
            // Another manager's dispatcher, with programs of its own: never
            // removed from here, not even with force.
            return Err(Error::ForeignDispatcher {
                iface: iface.name.clone(),
                manager: "libxdp".into(),
                programs: libxdp_programs(iface.ifindex, on_if.prog_id),
                program,
                id: on_if.prog_id,
            });
        }
        if !opts.force {
            return Err(Error::ForeignProgram {
                iface: iface.name.clone(),
                program,
                id: on_if.prog_id,
            });
        }
        let flags = match on_if.mode {
            1 => 1 << 2, // XDP_FLAGS_DRV_MODE
            2 => 1 << 1, // XDP_FLAGS_SKB_MODE
            3 => 1 << 3, // XDP_FLAGS_HW_MODE
            _ => 0,
        };
        sys::xdp_detach_netlink(iface.ifindex, flags).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EEXIST) {
                Error::ForeignLink {
                    iface: iface.name.clone(),
                    program: program.clone(),
                    id: on_if.prog_id,
                }
            } else {
                Error::io(format!("removing {program} from {}", iface.name), e)
            }
        })?;
        if sys::xdp_attached(iface.ifindex)
            .map(|a| a.prog_id)
            .unwrap_or(0)
            != 0
        {
            return Err(Error::ForeignLink {
                iface: iface.name.clone(),
                program,
                id: on_if.prog_id,
            });
        }
        replaced = Some(Replaced {
            program,
            id: on_if.prog_id,
        });
    }
    let (backend, passed_over) = match opts.backend {
        Some(b) => (b, Vec::new()),
        None => choose_backend(),
    };
    // Build in a side directory, rename into place when complete: nobody
    // ever sees half an interface.
    let building = root.join(format!("{}_new{}", iface.dir_name(), std::process::id()));
    let _ = remove_dir(&building);
    std::fs::create_dir(&building)
        .map_err(|e| Error::io(format!("creating {}", building.display()), e))?;
    let result = crash::point("attach::building").and_then(|()| {
        let mode = dispatcher::install(&building, iface, opts.mode, backend)?;
        origins::create(&building)?;
        let mut state = State::open(&building, &iface.name)?;
        let mut c = state.control()?;
        c.mode = mode.code();
        state.write_control(&c)?;
        crash::point("attach::built")?;
        std::fs::rename(&building, &dir)
            .map_err(|e| Error::io(format!("renaming {} into place", building.display()), e))?;
        crash::point("attach::renamed")?;
        Ok(mode)
    });
    match result {
        Ok(mode) => Ok(Attached {
            iface: iface.name.clone(),
            prog_id: dispatcher::pinned_program(&dir)?.id(),
            dir,
            new: true,
            mode,
            backend,
            passed_over,
            replaced,
            stale,
        }),
        Err(e) => {
            let _ = remove_dir(&building);
            Err(e)
        }
    }
}

/// Removes the side directories (`<name>_new<pid>`, see [`attach`]) of
/// attaches to `iface` that died before renaming theirs into place. Every
/// attach builds under the root lock, which the caller holds, so any such
/// directory is a dead process's. Left alone, its pins leak the dispatcher
/// and its maps, and its pinned link keeps that dispatcher on the interface,
/// where every later attach would take it for a foreign program.
fn remove_dead_builds(root: &Path, iface: &Iface) -> Result<()> {
    let prefix = format!("{}_new", iface.dir_name());
    let entries =
        std::fs::read_dir(root).map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix(&prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            log::info!("removing {}, left by an attach that did not finish", name);
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes an interface directory and every pin in it. Removing the link
/// pin detaches the dispatcher.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // The link first: packets stop going through the dispatcher before its
    // maps and slots are torn down.
    let link = dir.join(pin::LINK);
    if link.exists() {
        std::fs::remove_file(&link)
            .map_err(|e| Error::io(format!("removing {}", link.display()), e))?;
        crash::point("detach::unlinked")?;
    }
    // `CONTROL` last: until the directory is empty it says the directory
    // is ours, so that a removal that died half-way is finished later
    // (`gc::dead`).
    let remove = |p: &Path| {
        if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        }
        .map_err(|e| Error::io(format!("removing {}", p.display()), e))
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name() != pin::CONTROL {
            remove(&entry.path())?;
        }
    }
    let control = dir.join(pin::CONTROL);
    if control.exists() {
        remove(&control)?;
    }
    std::fs::remove_dir(dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))
}

/// `2 claim(s): a (slot 0, persistent), b (slot 3, held by pid 7)`, `no
/// claims`, or that they could not be read.
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unreadable {
            return f.write_str("claims that could not be read (damaged records)");
        }
        if self.claims.is_empty() {
            return f.write_str("no claims");
        }
        write!(f, "{} claim(s): ", self.claims.len())?;
        for (i, c) in self.claims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match c.state {
                SlotState::Held => {
                    write!(f, "{} (slot {}, held by pid {})", c.name, c.slot, c.owner)?
                }
                other => write!(f, "{} (slot {}, {})", c.name, c.slot, other.as_str())?,
            }
        }
        Ok(())
    }
}

/// The program name of libxdp's dispatcher.
const LIBXDP_DISPATCHER: &str = "xdp_dispatcher";

/// Detaches the dispatcher from `iface` and removes its state.
pub fn detach(root: &Path, iface: &Iface, force: bool) -> Result<Detached> {
    root::ensure(root, crate::privilege::Access::Manage)?;
    let _root_lock = DirLock::exclusive(root)?;
    crate::upgrade::settle_dead(root, iface)?;
    let dir = root.join(iface.dir_name());
    if !dir.exists() {
        return Err(Error::NotAttached {
            iface: iface.name.clone(),
        });
    }
    let dropped = {
        let _lock = DirLock::exclusive(&dir)?;
        match State::open(&dir, &iface.name) {
            Ok(mut state) => {
                collect(&mut state)?;
                let dropped = claims_in(&dir, &iface.name);
                let count = dropped.claims.len();
                if count > 0 && !force {
                    return Err(Error::SlotsInUse {
                        iface: iface.name.clone(),
                        count,
                    });
                }
                dropped
            }
            Err(e) if !force => return Err(e),
            Err(_) => Dropped {
                claims: Vec::new(),
                unreadable: true,
            },
        }
    };
    remove_dir(&dir)?;
    Ok(Detached {
        iface: iface.name.clone(),
        dropped,
        interface_gone: false,
    })
}

/// Detaches from an interface of the calling thread's namespace that no
/// longer exists: frees the dead state recorded under its `name` (the
/// dispatcher was already off it). `None` when there is none.
pub fn detach_gone(root: &Path, name: &str) -> Result<Option<Detached>> {
    root::ensure(root, crate::privilege::Access::Manage)?;
    let cookie =
        sys::netns_cookie().map_err(|e| Error::io("reading the network namespace cookie", e))?;
    let _root_lock = DirLock::exclusive(root)?;
    let freed = gc::collect_dead(root, gc::Wait::Block, |dir, c| {
        c == cookie && gc::recorded_name(dir).is_some_and(|n| n == name)
    })?;
    if freed.is_empty() {
        return Ok(None);
    }
    let mut dropped = Dropped::default();
    for f in freed {
        dropped.claims.extend(f.dropped.claims);
        dropped.unreadable |= f.dropped.unreadable;
    }
    Ok(Some(Detached {
        iface: name.into(),
        dropped,
        interface_gone: true,
    }))
}
