//! A consistent picture of an interface: read under the shared lock.
use std::collections::HashSet;

use aya::maps::{Map, MapData, PerCpuArray};
use dispatcher_common::{FLAG_CUSTOM_CHAIN, FLAG_STATS, SLOT_COUNT, SlotStats};
use serde::Serialize;

use crate::{
    backend::Backend,
    collect::is_live,
    dispatcher::{self, Mode},
    error::{Error, Result},
    gc::{self, Dead},
    iface,
    mappins::{self, ClaimMap, MapPins},
    objects::Objects,
    origins, owner, pin,
    record::SlotState,
    state::State,
};

const ACTIONS: [&str; 5] = ["aborted", "drop", "pass", "tx", "redirect"];

/// `1 << action` mask as action names.
pub fn mask_names(mask: u32) -> Vec<&'static str> {
    ACTIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Parses `pass,drop` into a mask.
pub fn parse_mask(s: &str) -> std::result::Result<u32, String> {
    let mut mask = 0;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        let lower = lower.trim_start_matches("xdp_");
        let i = ACTIONS.iter().position(|a| *a == lower).ok_or_else(|| {
            format!("unknown action {part:?}: use aborted, drop, pass, tx, redirect")
        })?;
        mask |= 1 << i;
    }
    Ok(mask)
}

/// Per-slot counters, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets the slot's program ran on.
    pub packets: u64,
    /// `XDP_ABORTED` verdicts.
    pub aborted: u64,
    /// `XDP_DROP` verdicts.
    pub drop: u64,
    /// `XDP_PASS` verdicts.
    pub pass: u64,
    /// `XDP_TX` verdicts.
    pub tx: u64,
    /// `XDP_REDIRECT` verdicts.
    pub redirect: u64,
}

/// A claim's state as status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClaimState {
    /// Held by a live process; released when it exits.
    Held,
    /// Stays until released.
    Persistent,
    /// Released by force; reused once its holder exits.
    Draining,
    /// Its holder is gone or its claim never finished; freed by the next
    /// change to the interface.
    Stale,
}

impl ClaimState {
    /// The name used in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Persistent => "persistent",
            Self::Draining => "draining",
            Self::Stale => "stale",
        }
    }
}

impl std::fmt::Display for ClaimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One claimed slot.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ClaimStatus {
    /// Its run position (0 runs first), if it has one.
    pub position: Option<usize>,
    /// The slot (it says nothing about order).
    pub slot: usize,
    /// Lower runs first.
    pub prio: u32,
    /// The claim's name.
    pub name: String,
    /// Kernel id of the program in the slot.
    pub prog_id: u32,
    /// Kernel id of the link that fills the slot (freplace), else 0.
    pub link_id: u32,
    /// Verdicts after which the next slot runs.
    pub proceed_on: Vec<&'static str>,
    /// Pid of the claiming process (in its own pid namespace: 1 for a
    /// container's first process).
    pub owner: u32,
    /// Pid of the claiming process as the caller sees it, while it runs
    /// and the caller's pid namespace sees it (its own or a parent of it).
    pub owner_pid: Option<u32>,
    /// The claiming process's pid namespace (inode number); `None` if not
    /// recorded (a claim made by an earlier version).
    pub owner_pidns: Option<u64>,
    /// The claiming process's cgroup (v2 path: the container), while it
    /// runs and where readable.
    pub owner_cgroup: Option<String>,
    /// Stays after its claimer exits.
    pub persistent: bool,
    /// Where the claim is in its life.
    pub state: ClaimState,
    /// How the slot is filled.
    pub backend: Backend,
    /// Does the datapath run the slot (it has a run position)?
    pub active: bool,
    /// Wall-clock time of the claim, seconds since the epoch.
    pub claimed_at: u64,
    /// The object the program came from (a path, or an in-memory object's
    /// label); `None` if unknown (state attached by an earlier version).
    pub object: Option<String>,
    /// The program's name in its object; `None` if unknown.
    pub program: Option<String>,
    /// Where the maps the program pins by name go: `scoped` (the claim's
    /// own directory, removed with it), `shared` (libbpf's place, the top
    /// of bpffs) or `dir` (the claimer's directory); `None` if not recorded
    /// (a claim made by an earlier version, which pinned them at the top
    /// of bpffs).
    pub pin_maps: Option<&'static str>,
    /// The maps the program uses, with their kernel ids and pins.
    pub maps: Vec<ClaimMap>,
    /// The slot's counters, while counting is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
}

/// One interface.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The state's layout version: [`crate::LAYOUT_VERSION`], or an older
    /// one this runtime reads (changes need `upgrade` first).
    pub layout: u32,
    /// The interface's name when the dispatcher was attached.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// Cookie of its network namespace.
    pub netns_cookie: u64,
    /// Its state directory.
    pub dir: String,
    /// Kernel id of the dispatcher program.
    pub prog_id: u32,
    /// Kernel id of the XDP link that holds it on the interface (0 if none
    /// was found).
    pub link_id: u32,
    /// How the dispatcher sits on it.
    pub mode: Mode,
    /// The backend claims get by default.
    pub backend: Backend,
    /// Are the per-slot counters on?
    pub stats: bool,
    /// Program id of the custom chain decision, if one is installed.
    pub custom_chain: Option<u32>,
    /// Slots the datapath runs.
    pub active_slots: u32,
    /// Claims in run order, then those without a run position (draining or
    /// stale) by slot.
    pub claims: Vec<ClaimStatus>,
    /// Why the state is dead (its interface is gone), if it is: nothing
    /// runs there any more, and `Runtime::clean` (or the next attach or
    /// claim) frees it.
    pub dead: Option<Dead>,
    /// Were the claims' programs checked against the kernel's? Not
    /// without CAP_SYS_ADMIN, which listing programs needs: a claim's
    /// state is then its record's (a held one's by whether its holder
    /// runs), and its maps are the pins in its own directory.
    pub programs_checked: bool,
}

/// Reads the status of the interface whose state is `state`.
pub(crate) fn read(state: &State) -> Result<Status> {
    let control = state.control()?;
    let records = state.records()?;
    let counters = if control.flags & FLAG_STATS != 0 {
        Some(read_counters(state)?)
    } else {
        None
    };
    // Listing the kernel's programs needs CAP_SYS_ADMIN; without it a
    // claim's state is its record's (see `programs_checked`).
    let progs = match state.live_programs() {
        Ok(p) => Some(p),
        Err(e) if e.kind() == crate::ErrorKind::Permission => None,
        Err(e) => return Err(e),
    };
    let claimed: HashSet<u32> = records
        .iter()
        .filter(|r| !r.is_free())
        .map(|r| r.prog_id)
        .collect();
    let map_ids = mappins::map_ids(&claimed);
    let mut claims = Vec::new();
    for (n, rec) in records.iter().enumerate() {
        let Some(backend) = rec.backend.filter(|_| !rec.is_free()) else {
            continue;
        };
        let position = control.run_table().position(n);
        let active = position.is_some();
        let live = match &progs {
            Some(progs) => is_live(state, active, n, rec, progs),
            None => match rec.state {
                SlotState::Held => active && state.alive(rec.owner),
                SlotState::Draining => state.alive(rec.owner),
                SlotState::Persistent | SlotState::Free => active,
            },
        };
        let origin = origins::read(&state.dir, n, rec.prog_id);
        let pidns = origin.as_ref().and_then(|o| o.pidns);
        let seen = owner::seen(rec.owner, pidns);
        let pins = origin.as_ref().and_then(|o| o.map_pins.clone());
        let pin_dir = if mappins::scoped_dir(&state.dir, &rec.name).exists() {
            mappins::scoped_dir(&state.dir, &rec.name)
        } else {
            pins.clone()
                .unwrap_or(MapPins::Shared)
                .dir(&state.dir, &rec.name)
        };
        let maps = match map_ids.get(&rec.prog_id) {
            Some(ids) => mappins::describe(ids, Some(&pin_dir)),
            // Map ids cannot be read without CAP_SYS_ADMIN: the claim's
            // own pins are what can be shown.
            None if progs.is_none() => {
                mappins::pinned_in(&mappins::scoped_dir(&state.dir, &rec.name))
            }
            None => Vec::new(),
        };
        claims.push(ClaimStatus {
            position,
            slot: n,
            prio: rec.prio,
            name: rec.name.clone(),
            prog_id: rec.prog_id,
            link_id: rec.link_id,
            proceed_on: mask_names(control.proceed_on[n].into()),
            owner: rec.owner.pid,
            owner_pid: seen.as_ref().map(|s| s.pid),
            owner_pidns: pidns,
            owner_cgroup: seen.and_then(|s| s.cgroup),
            persistent: rec.state == SlotState::Persistent,
            state: match rec.state {
                _ if !live => ClaimState::Stale,
                SlotState::Held => ClaimState::Held,
                SlotState::Draining => ClaimState::Draining,
                SlotState::Persistent | SlotState::Free => ClaimState::Persistent,
            },
            backend,
            active,
            claimed_at: rec.claimed_at,
            object: origin.as_ref().map(|o| o.object.clone()),
            program: origin.map(|o| o.program),
            pin_maps: pins.as_ref().map(MapPins::as_str),
            maps,
            counters: counters.as_ref().map(|c| c[n].clone()),
        });
    }
    claims.sort_by_key(|c| (c.position.is_none(), c.position, c.slot));
    let ifname_end = control.ifname.iter().position(|&b| b == 0).unwrap_or(16);
    let prog_id = dispatcher::pinned_program(&state.dir)?.id();
    let link_id = aya::programs::loaded_links()
        .filter_map(|l| l.ok())
        .find(|l| l.program_id() == prog_id)
        .map_or(0, |l| l.id());
    Ok(Status {
        layout: state.layout(),
        iface: String::from_utf8_lossy(&control.ifname[..ifname_end]).into_owned(),
        ifindex: control.ifindex,
        netns_cookie: control.netns_cookie,
        dir: state.dir.display().to_string(),
        prog_id,
        link_id,
        mode: state.mode()?,
        backend: state.default_backend()?,
        stats: control.flags & FLAG_STATS != 0,
        custom_chain: (control.flags & FLAG_CUSTOM_CHAIN != 0).then_some(control.chain_prog_id),
        active_slots: control.active_count(),
        claims,
        dead: gc::dead(&state.dir),
        programs_checked: progs.is_some(),
    })
}

fn read_counters(state: &State) -> Result<Vec<Counters>> {
    let path = state.path(pin::STATS);
    let data = MapData::from_pin(&path)
        .map_err(|e| Error::kernel(format!("opening {}", path.display()), e))?;
    let stats: PerCpuArray<MapData, SlotStats> = PerCpuArray::try_from(Map::PerCpuArray(data))
        .map_err(|e| Error::kernel("opening the stats map", e))?;
    (0..SLOT_COUNT as u32)
        .map(|n| {
            let per_cpu = stats
                .get(&n, 0)
                .map_err(|e| Error::kernel("reading the stats map", e))?;
            let mut c = Counters::default();
            for s in per_cpu.iter() {
                c.packets += s.packets;
                c.aborted += s.actions[0];
                c.drop += s.actions[1];
                c.pass += s.actions[2];
                c.tx += s.actions[3];
                c.redirect += s.actions[4];
            }
            Ok(c)
        })
        .collect()
}

/// Interface directories under `root` that belong to the network namespace
/// with `cookie`.
pub(crate) fn dirs_in_netns(
    root: &std::path::Path,
    cookie: u64,
) -> Result<Vec<(std::path::PathBuf, u32)>> {
    let entries =
        std::fs::read_dir(root).map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (hook, c, ifindex) = iface::parse_dir_name(&name)?;
            (hook == iface::Hook::Xdp && c == cookie).then(|| (e.path(), ifindex))
        })
        .collect();
    out.sort_by_key(|(_, i)| *i);
    Ok(out)
}
