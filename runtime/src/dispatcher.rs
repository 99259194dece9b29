//! The embedded dispatcher object: load it, initialise its maps, pin them,
//! attach it to an interface through a pinned XDP link. Done once per
//! interface; never regenerated.
use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{ProgramFd, ProgramInfo, Xdp, links::FdLink, xdp::XdpMode},
};
use dispatcher_common::{CONTROL_MAGIC, Control, LAYOUT_VERSION, SLOT_COUNT, SlotConfig, names};

use crate::{
    error::{Error, Result},
    iface::Iface,
    state::pin,
};

/// The dispatcher ELF, built from `dispatcher-ebpf` by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dispatcher"));

/// The freplace probe ELF (`dispatcher-ebpf/src/bin/probe.rs`).
pub static PROBE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

/// How the dispatcher sits on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Native where the driver supports it, otherwise skb.
    #[default]
    Auto,
    /// Driver (native) mode.
    Native,
    /// Generic (skb) mode.
    Skb,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Skb => "skb",
        }
    }
}

/// Loads the dispatcher, writes its initial maps, pins everything in
/// `dir` (which must exist and be empty) and attaches it to `iface`.
/// Returns the `MODE_*` it got. On error, the caller removes `dir`.
pub fn install(dir: &Path, iface: &Iface, mode: Mode, backend: u32) -> Result<u32> {
    let mut ebpf = EbpfLoader::new()
        .load(OBJECT)
        .map_err(|e| Error::kernel("loading the dispatcher", e))?;
    init_maps(&mut ebpf, iface, backend)?;
    for (name, map) in ebpf.maps() {
        let target = match name {
            names::CONTROL_MAP => pin::CONTROL.to_string(),
            names::SLOTS_MAP => pin::SLOTS.to_string(),
            names::STATS_MAP => pin::STATS.to_string(),
            other => match slot_of_prog_map(other) {
                Some(n) => pin::prog(n),
                None => continue,
            },
        };
        map.pin(dir.join(&target))
            .map_err(|e| Error::kernel(format!("pinning {}", dir.join(&target).display()), e))?;
    }
    let prog: &mut Xdp = ebpf
        .program_mut(names::DISPATCHER)
        .ok_or_else(|| Error::Kernel {
            what: "loading the dispatcher".into(),
            detail: "no dispatcher program in the object".into(),
        })?
        .try_into()
        .map_err(|e| Error::kernel("loading the dispatcher", e))?;
    prog.load()
        .map_err(|e| Error::kernel("verifying the dispatcher", e))?;
    prog.pin(dir.join(pin::DISPATCHER))
        .map_err(|e| Error::kernel("pinning the dispatcher", e))?;
    let attempts: &[(XdpMode, u32)] = match mode {
        Mode::Auto => &[
            (XdpMode::Driver, dispatcher_common::MODE_NATIVE),
            (XdpMode::Skb, dispatcher_common::MODE_SKB),
        ],
        Mode::Native => &[(XdpMode::Driver, dispatcher_common::MODE_NATIVE)],
        Mode::Skb => &[(XdpMode::Skb, dispatcher_common::MODE_SKB)],
    };
    let mut last = None;
    for &(xdp_mode, recorded) in attempts {
        match prog.attach_to_if_index(iface.ifindex, xdp_mode) {
            Ok(id) => {
                let link = prog
                    .take_link(id)
                    .map_err(|e| Error::kernel("taking the XDP link", e))?;
                let link = FdLink::try_from(link).map_err(|e| Error::Kernel {
                    what: format!("attaching to {}", iface.name),
                    detail: format!(
                        "the kernel gave no bpf_link ({}); kernel 5.9 or newer is needed",
                        crate::error::chain(&e)
                    ),
                })?;
                crate::crash::point("attach::linked");
                link.pin(dir.join(pin::LINK))
                    .map_err(|e| Error::kernel("pinning the XDP link", e))?;
                return Ok(recorded);
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("at least one attach attempt");
    Err(Error::kernel(
        format!(
            "attaching the dispatcher to {} in {} mode",
            iface.name,
            mode.as_str()
        ),
        e,
    ))
}

fn init_maps(ebpf: &mut Ebpf, iface: &Iface, backend: u32) -> Result<()> {
    let mut ifname = [0u8; 16];
    let n = iface.name.len().min(15);
    ifname[..n].copy_from_slice(&iface.name.as_bytes()[..n]);
    let control = Control {
        magic: CONTROL_MAGIC,
        version: LAYOUT_VERSION,
        backend,
        ifindex: iface.ifindex,
        netns_cookie: iface.netns_cookie,
        ifname,
        ..Control::default()
    };
    let map = ebpf
        .map_mut(names::CONTROL_MAP)
        .expect("CONTROL map in the dispatcher");
    let mut c: Array<&mut MapData, Control> =
        Array::try_from(map).map_err(|e| Error::kernel("opening CONTROL", e))?;
    c.set(0, control, 0)
        .map_err(|e| Error::kernel("initialising CONTROL", e))?;
    let map = ebpf
        .map_mut(names::SLOTS_MAP)
        .expect("SLOTS map in the dispatcher");
    let mut s: Array<&mut MapData, SlotConfig> =
        Array::try_from(map).map_err(|e| Error::kernel("opening SLOTS", e))?;
    for n in 0..SLOT_COUNT as u32 {
        s.set(n, SlotConfig::FREE, 0)
            .map_err(|e| Error::kernel("initialising SLOTS", e))?;
    }
    Ok(())
}

/// `SLOT_PROG_17` -> 17.
pub fn slot_of_prog_map(name: &str) -> Option<usize> {
    let n: usize = name
        .strip_prefix(names::SLOT_PROG_MAP_PREFIX)?
        .parse()
        .ok()?;
    (n < SLOT_COUNT).then_some(n)
}

/// The pinned dispatcher program of an interface directory.
pub fn pinned_program(dir: &Path) -> Result<ProgramInfo> {
    ProgramInfo::from_pin(dir.join(pin::DISPATCHER)).map_err(|e| {
        Error::kernel(
            format!("opening {}", dir.join(pin::DISPATCHER).display()),
            e,
        )
    })
}

/// A file descriptor of the pinned dispatcher (freplace target).
pub fn program_fd(dir: &Path) -> Result<ProgramFd> {
    pinned_program(dir)?
        .fd()
        .map_err(|e| Error::kernel("opening the dispatcher", e))
}

/// Map id of slot `n`'s program array, found through the dispatcher's maps.
pub fn slot_array_id(dir: &Path, n: usize) -> Result<u32> {
    let info = pinned_program(dir)?;
    let ids = info
        .map_ids()
        .map_err(|e| Error::kernel("listing the dispatcher's maps", e))?
        .unwrap_or_default();
    for id in ids {
        let m =
            aya::maps::MapInfo::from_id(id).map_err(|e| Error::kernel("reading map info", e))?;
        if m.name_as_str().and_then(slot_of_prog_map) == Some(n) {
            return Ok(id);
        }
    }
    Err(Error::Kernel {
        what: format!("finding slot {n}'s program array"),
        detail: "the dispatcher has no such map".into(),
    })
}

/// Opens slot `n`'s program array by id (this adds a user reference while
/// the returned map lives).
pub fn slot_array(dir: &Path, n: usize) -> Result<MapData> {
    let id = slot_array_id(dir, n)?;
    MapData::from_id(id).map_err(|e| Error::kernel(format!("opening slot {n}'s program array"), e))
}
