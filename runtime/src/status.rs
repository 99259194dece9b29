//! A consistent picture of an interface: read under the shared lock.
use aya::maps::{Map, MapData, PerCpuArray};
use dispatcher_common::{
    FLAG_CUSTOM_CHAIN, FLAG_STATS, SLOT_COUNT, STATE_DRAINING, STATE_FREE, STATE_HELD,
    STATE_PERSISTENT, SlotStats,
};
use serde::Serialize;

use crate::{
    attach::mode_name,
    backend::Backend,
    claim::{decode_name, is_live, live_programs},
    error::{Error, Result},
    iface,
    state::{State, pin},
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub packets: u64,
    pub aborted: u64,
    pub drop: u64,
    pub pass: u64,
    pub tx: u64,
    pub redirect: u64,
}

/// One claimed slot.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimStatus {
    pub slot: usize,
    pub prio: u32,
    pub name: String,
    pub prog_id: u32,
    pub proceed_on: Vec<&'static str>,
    /// Pid of the claiming process (in its pid namespace).
    pub owner: u32,
    pub persistent: bool,
    /// held, persistent, draining, or stale (holder gone; freed by the next
    /// change).
    pub state: &'static str,
    pub backend: Backend,
    pub active: bool,
    pub claimed_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
}

/// One interface.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub iface: String,
    pub ifindex: u32,
    pub netns_cookie: u64,
    pub dir: String,
    pub mode: &'static str,
    pub backend: Backend,
    pub stats: bool,
    /// Program id of the custom chain decision, if one is installed.
    pub custom_chain: Option<u32>,
    pub active_slots: u32,
    /// Claims in run order (slot order).
    pub claims: Vec<ClaimStatus>,
}

/// Reads the status of the interface whose state is `state`.
pub fn read(state: &State) -> Result<Status> {
    let control = state.control()?;
    let slots = state.slots()?;
    let counters = if control.flags & FLAG_STATS != 0 {
        Some(read_counters(state)?)
    } else {
        None
    };
    let progs = live_programs()?;
    let mut claims = Vec::new();
    for (n, cfg) in slots.iter().enumerate() {
        if cfg.state == STATE_FREE {
            continue;
        }
        let active = control.is_active(n);
        let live = is_live(state, active, n, cfg, &progs);
        claims.push(ClaimStatus {
            slot: n,
            prio: cfg.prio,
            name: decode_name(&cfg.name),
            prog_id: cfg.prog_id,
            proceed_on: mask_names(control.proceed_on[n].into()),
            owner: cfg.owner_pid,
            persistent: cfg.state == STATE_PERSISTENT,
            state: match cfg.state {
                _ if !live => "stale",
                STATE_HELD => "held",
                STATE_PERSISTENT => "persistent",
                STATE_DRAINING => "draining",
                _ => "unknown",
            },
            backend: Backend::from_raw(cfg.backend),
            active,
            claimed_at: cfg.claimed_at,
            counters: counters.as_ref().map(|c| c[n].clone()),
        });
    }
    let ifname_end = control.ifname.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(Status {
        iface: String::from_utf8_lossy(&control.ifname[..ifname_end]).into_owned(),
        ifindex: control.ifindex,
        netns_cookie: control.netns_cookie,
        dir: state.dir.display().to_string(),
        mode: mode_name(control.mode),
        backend: Backend::from_raw(control.backend),
        stats: control.flags & FLAG_STATS != 0,
        custom_chain: (control.flags & FLAG_CUSTOM_CHAIN != 0).then_some(control.chain_prog_id),
        active_slots: control.active_count(),
        claims,
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
pub fn dirs_in_netns(
    root: &std::path::Path,
    cookie: u64,
) -> Result<Vec<(std::path::PathBuf, u32)>> {
    let entries =
        std::fs::read_dir(root).map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (c, ifindex) = iface::parse_dir_name(&name)?;
            (c == cookie).then(|| (e.path(), ifindex))
        })
        .collect();
    out.sort_by_key(|(_, i)| *i);
    Ok(out)
}
