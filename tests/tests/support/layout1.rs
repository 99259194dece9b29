//! State layout 1, as the runtime wrote it before the run tables: kept
//! here so that the upgrade suite can build such a state on a live
//! interface and upgrade it. Reimplemented minimally (attach, persistent
//! tail-call claims); the dispatcher object is the one layout 1 shipped
//! (`tests/fixtures/dispatcher-layout1.o`, see tests/fixtures/README.md).
//!
//! What differed from layout 2: `CONTROL`'s value (`integration_tests::layout1`): an active
//! bitmap instead of the run tables, and slots ran in slot order. Map
//! names, the `SLOTS` records, `STATS`, the pin names (`link`,
//! `dispatcher`, `control`, `slots`, `stats`, `prog_N`) and the directory
//! name were the same; there was no `origins` pin.
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, ProgramArray},
    programs::{Xdp, links::FdLink, xdp::XdpMode},
};
use dispatcher_common::{
    BACKEND_TAILCALL, DEFAULT_PROCEED_ON, MODE_NATIVE, MODE_SKB, NAME_LEN, SLOT_COUNT,
    STATE_PERSISTENT, SlotConfig, names,
};
use integration_tests::{env::TestEnv, progs};
use slots_runtime::{Iface, pin};

pub use integration_tests::layout1::*;

fn control_map(dir: &Path) -> Array<MapData, [u8; CONTROL_SIZE]> {
    Array::try_from(aya::maps::Map::Array(
        MapData::from_pin(dir.join(pin::CONTROL)).unwrap(),
    ))
    .unwrap()
}

/// The interface's state directory (the same name in both layouts).
pub fn dir(env: &TestEnv) -> PathBuf {
    env.in_rx(|_, ifc| env.root.join(Iface::resolve(ifc).unwrap().dir_name()))
}

/// Attaches the layout-1 dispatcher to the test's rx interface as layout
/// 1's runtime did (tail-call backend, native mode, else skb): maps
/// initialised and pinned, the program pinned, attached through a pinned
/// bpf_link. Returns the state directory.
pub fn attach(env: &TestEnv) -> PathBuf {
    let dir = dir(env);
    std::fs::create_dir_all(&env.root).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let (ifindex, cookie, name) = env.in_rx(|_, ifc| {
        let i = Iface::resolve(ifc).unwrap();
        (i.ifindex, i.netns_cookie, i.name.clone())
    });
    let mut ebpf: Ebpf = EbpfLoader::new().load(OBJECT).expect("loading layout 1");
    let mut ifname = [0u8; 16];
    ifname[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    let control = ControlV1 {
        backend: BACKEND_TAILCALL,
        ifindex,
        netns_cookie: cookie,
        ifname,
        ..ControlV1::default()
    };
    {
        let mut c: Array<&mut MapData, [u8; CONTROL_SIZE]> =
            Array::try_from(ebpf.map_mut(CONTROL_MAP).unwrap()).unwrap();
        c.set(0, control.to_bytes(), 0).unwrap();
        let mut s: Array<&mut MapData, SlotConfig> =
            Array::try_from(ebpf.map_mut(names::SLOTS_MAP).unwrap()).unwrap();
        for n in 0..SLOT_COUNT as u32 {
            s.set(n, SlotConfig::FREE, 0).unwrap();
        }
    }
    for (map_name, map) in ebpf.maps() {
        let target = match map_name {
            CONTROL_MAP => pin::CONTROL.to_string(),
            names::SLOTS_MAP => pin::SLOTS.to_string(),
            names::STATS_MAP => pin::STATS.to_string(),
            other => match other.strip_prefix(names::SLOT_PROG_MAP_PREFIX) {
                Some(n) => pin::prog(n.parse().unwrap()),
                None => continue,
            },
        };
        map.pin(dir.join(target)).unwrap();
    }
    let prog: &mut Xdp = ebpf.program_mut(PROGRAM).unwrap().try_into().unwrap();
    prog.load().expect("verifying the layout-1 dispatcher");
    prog.pin(dir.join(pin::DISPATCHER)).unwrap();
    let _in = env.pair.rx.enter().unwrap();
    let (id, mode) = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(id) => (id, MODE_NATIVE),
        Err(_) => (
            prog.attach_to_if_index(ifindex, XdpMode::Skb).unwrap(),
            MODE_SKB,
        ),
    };
    let link = FdLink::try_from(prog.take_link(id).unwrap()).unwrap();
    link.pin(dir.join(pin::LINK)).unwrap();
    let mut c = control_map(&dir);
    let mut v = ControlV1::from_bytes(&c.get(&0, 0).unwrap());
    v.mode = mode;
    c.set(0, v.to_bytes(), 0).unwrap();
    dir
}

/// A persistent tail-call claim as layout 1 made it, in slot `n` (in
/// layout 1 the slot index was the run position): the test object's XDP
/// program in `prog_n`, its record, its proceed-on mask (pass), its active
/// bit. Returns the program's id.
pub fn claim(dir: &Path, n: usize, prio: u32, name: &str, object: &str) -> u32 {
    let mut ebpf = EbpfLoader::new().load(progs::bytes(object)).unwrap();
    let (_, prog) = ebpf
        .programs_mut()
        .find(|(_, p)| matches!(p, aya::programs::Program::Xdp(_)))
        .expect("an XDP program");
    let xdp: &mut Xdp = prog.try_into().unwrap();
    xdp.load().unwrap();
    let id = xdp.info().unwrap().id();
    let mut array = ProgramArray::try_from(aya::maps::Map::ProgramArray(
        MapData::from_pin(dir.join(pin::prog(n))).unwrap(),
    ))
    .unwrap();
    array.set(0, xdp.fd().unwrap(), 0).unwrap();
    write_record(dir, n, prio, name, BACKEND_TAILCALL, id, 0);
    id
}

/// The ids of the kernel objects of a layout-1 state: the dispatcher
/// program and its `CONTROL` map.
pub fn object_ids(dir: &Path) -> (u32, u32) {
    let prog = aya::programs::ProgramInfo::from_pin(dir.join(pin::DISPATCHER))
        .unwrap()
        .id();
    let map = MapData::from_pin(dir.join(pin::CONTROL))
        .unwrap()
        .info()
        .unwrap()
        .id();
    (prog, map)
}

/// A layout-1 state with three persistent tail-call claims, in run order
/// `first` (counts, prio 10), `middle` (counts, prio 50), `last` (passes,
/// prio 90). Returns the state directory and their program ids.
pub fn three_claims(env: &TestEnv) -> (PathBuf, [u32; 3]) {
    let dir = attach(env);
    let ids = [
        claim(&dir, 0, 10, "first", "xdp_count"),
        claim(&dir, 1, 50, "middle", "xdp_count_c.o"),
        claim(&dir, 2, 90, "last", "xdp_pass"),
    ];
    (dir, ids)
}

/// Sets `flags` in layout 1's `CONTROL`.
pub fn set_flags(dir: &Path, flags: u32) {
    let mut c = control_map(dir);
    let mut v = ControlV1::from_bytes(&c.get(&0, 0).unwrap());
    v.flags |= flags;
    c.set(0, v.to_bytes(), 0).unwrap();
}

/// A persistent freplace claim as layout 1 made it, in slot `n`: the test
/// object's XDP program loaded as an extension of the dispatcher's
/// `slot_n`, linked, the link pinned as `ext_n`, its record (with the
/// link's id), its mask, its active bit. Returns the program's and the
/// link's ids.
pub fn claim_freplace(dir: &Path, n: usize, prio: u32, name: &str, object: &str) -> (u32, u32) {
    let prog_name = {
        let probe = aya_obj::Object::parse(progs::bytes(object)).unwrap();
        probe.programs.keys().next().unwrap().clone()
    };
    let mut ebpf = EbpfLoader::new()
        .extension(&prog_name)
        .load(progs::bytes(object))
        .unwrap();
    let ext: &mut aya::programs::Extension =
        ebpf.program_mut(&prog_name).unwrap().try_into().unwrap();
    let target = aya::programs::ProgramInfo::from_pin(dir.join(pin::DISPATCHER))
        .unwrap()
        .fd()
        .unwrap();
    ext.load(target, &format!("slot_{n}")).unwrap();
    let id = ext.info().unwrap().id();
    let link_id = ext.attach().unwrap();
    let link = FdLink::from(ext.take_link(link_id).unwrap());
    let link_id = link.info().unwrap().id();
    link.pin(dir.join(pin::ext(n))).unwrap();
    write_record(
        dir,
        n,
        prio,
        name,
        dispatcher_common::BACKEND_FREPLACE,
        id,
        link_id,
    );
    (id, link_id)
}

fn write_record(dir: &Path, n: usize, prio: u32, name: &str, backend: u32, id: u32, link_id: u32) {
    let mut slots: Array<MapData, SlotConfig> = Array::try_from(aya::maps::Map::Array(
        MapData::from_pin(dir.join(pin::SLOTS)).unwrap(),
    ))
    .unwrap();
    let mut rec_name = [0u8; NAME_LEN];
    rec_name[..name.len()].copy_from_slice(name.as_bytes());
    slots
        .set(
            n as u32,
            SlotConfig {
                state: STATE_PERSISTENT,
                prio,
                backend,
                prog_id: id,
                link_id,
                owner_pid: std::process::id(),
                owner_start: 0,
                claimed_at: 0,
                name: rec_name,
            },
            0,
        )
        .unwrap();
    let mut c = control_map(dir);
    let mut v = ControlV1::from_bytes(&c.get(&0, 0).unwrap());
    v.proceed_on[n] = DEFAULT_PROCEED_ON as u8;
    v.activate(n);
    c.set(0, v.to_bytes(), 0).unwrap();
}
