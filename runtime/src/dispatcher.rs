//! The embedded dispatcher object: load it, initialise its maps, pin them,
//! attach it to an interface through a pinned XDP link. Done once per
//! interface; never regenerated.
use std::path::Path;

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{ProgramFd, ProgramInfo, Xdp, links::FdLink, xdp::XdpMode},
};
use dispatcher_common::{CONTROL_MAGIC, Control, LAYOUT_VERSION, SLOT_COUNT, SlotConfig, names};

use crate::{
    backend::Backend,
    crash,
    error::{Error, Result},
    iface::Iface,
    pin, retry,
};

/// The dispatcher ELF (`dispatcher-ebpf/src/main.rs`), built by `cargo
/// xtask ebpf` and shipped in this crate (`ebpf/dispatcher.o`): building
/// the runtime needs no eBPF toolchain, and the library can never lose its
/// dispatcher.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../ebpf/dispatcher.o");

/// The freplace probe ELF (`dispatcher-ebpf/src/bin/probe.rs`), shipped
/// the same way.
pub(crate) static PROBE: &[u8] = aya::include_bytes_aligned!("../ebpf/probe.o");

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
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Skb => "skb",
        }
    }

    /// The code recorded in `Control::mode` (an attached mode: not `Auto`).
    pub(crate) fn code(self) -> u32 {
        match self {
            Mode::Native => dispatcher_common::MODE_NATIVE,
            Mode::Skb => dispatcher_common::MODE_SKB,
            Mode::Auto => 0,
        }
    }

    /// The attached mode a recorded code names.
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        [Mode::Native, Mode::Skb]
            .into_iter()
            .find(|m| m.code() == code)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Loads the dispatcher, writes its initial maps, pins everything in
/// `dir` (which must exist and be empty) and attaches it to `iface`.
/// Returns the mode it got. On error, the caller removes `dir`.
pub(crate) fn install(dir: &Path, iface: &Iface, mode: Mode, backend: Backend) -> Result<Mode> {
    let mut ebpf = load(dir, iface, backend)?;
    let prog: &mut Xdp = ebpf
        .program_mut(names::DISPATCHER)
        .expect("the embedded dispatcher object has its program")
        .try_into()
        .map_err(|e| Error::kernel("loading the dispatcher", e))?;
    attach(dir, iface, mode, prog)
}

/// Loads the dispatcher, writes its initial maps and pins it and them in
/// `dir`, without attaching it.
pub(crate) fn load(dir: &Path, iface: &Iface, backend: Backend) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(OBJECT)
        .map_err(|e| Error::kernel("loading the dispatcher", e))?;
    init_maps(&mut ebpf, iface, backend.code())?;
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
        .expect("the embedded dispatcher object has its program")
        .try_into()
        .map_err(|e| Error::kernel("loading the dispatcher", e))?;
    retry::prog_load("the dispatcher", || prog.load())
        .map_err(|e| Error::kernel("verifying the dispatcher", e))?;
    prog.pin(dir.join(pin::DISPATCHER))
        .map_err(|e| Error::kernel("pinning the dispatcher", e))?;
    Ok(ebpf)
}

fn attach(dir: &Path, iface: &Iface, mode: Mode, prog: &mut Xdp) -> Result<Mode> {
    let attempts: &[(XdpMode, Mode)] = match mode {
        Mode::Auto => &[(XdpMode::Driver, Mode::Native), (XdpMode::Skb, Mode::Skb)],
        Mode::Native => &[(XdpMode::Driver, Mode::Native)],
        Mode::Skb => &[(XdpMode::Skb, Mode::Skb)],
    };
    let mut last = None;
    for &(xdp_mode, recorded) in attempts {
        match prog.attach_to_if_index(iface.ifindex, xdp_mode) {
            Ok(id) => {
                let link = prog
                    .take_link(id)
                    .map_err(|e| Error::kernel("taking the XDP link", e))?;
                let link = FdLink::try_from(link).map_err(|e| Error::NoXdpLink {
                    iface: iface.name.clone(),
                    source: Box::new(e),
                })?;
                crash::point("attach::linked")?;
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
fn slot_of_prog_map(name: &str) -> Option<usize> {
    let n: usize = name
        .strip_prefix(names::SLOT_PROG_MAP_PREFIX)?
        .parse()
        .ok()?;
    (n < SLOT_COUNT).then_some(n)
}

/// The pinned dispatcher program of an interface directory.
pub(crate) fn pinned_program(dir: &Path) -> Result<ProgramInfo> {
    ProgramInfo::from_pin(dir.join(pin::DISPATCHER)).map_err(|e| {
        Error::kernel(
            format!("opening {}", dir.join(pin::DISPATCHER).display()),
            e,
        )
    })
}

/// A file descriptor of the pinned dispatcher (freplace target).
pub(crate) fn program_fd(dir: &Path) -> Result<ProgramFd> {
    pinned_program(dir)?
        .fd()
        .map_err(|e| Error::kernel("opening the dispatcher", e))
}

/// Map ids of the slots' program arrays (tail-call backend), by slot, of
/// the dispatcher pinned in the state directory `dir`: for inspection,
/// e.g. `bpftool map dump id <id>`.
pub fn slot_array_ids(dir: &Path) -> Result<BTreeMap<usize, u32>> {
    let ids = pinned_program(dir)?
        .map_ids()
        .map_err(|e| Error::kernel("listing the dispatcher's maps", e))?
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for id in ids {
        let m =
            aya::maps::MapInfo::from_id(id).map_err(|e| Error::kernel("reading map info", e))?;
        if let Some(n) = m.name_as_str().and_then(slot_of_prog_map) {
            out.insert(n, id);
        }
    }
    Ok(out)
}

/// Opens slot `n`'s program array by id (this adds a user reference while
/// the returned map lives).
pub(crate) fn slot_array(dir: &Path, n: usize) -> Result<MapData> {
    let id = *slot_array_ids(dir)?
        .get(&n)
        .ok_or_else(|| Error::CorruptState {
            iface: dir.display().to_string(),
            path: dir.to_path_buf(),
            pin: Some(pin::DISPATCHER),
            why: format!("the dispatcher has no program array for slot {n}"),
        })?;
    MapData::from_id(id).map_err(|e| Error::kernel(format!("opening slot {n}'s program array"), e))
}
