//! Two tools on one host: the dispatcher never replaces another tool's XDP
//! program silently, other tools cannot displace it, and it never touches a
//! bpffs path that is not its own, next to its state or inside its root.
mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapInfo, PerCpuArray},
    programs::{ProgramInfo, Xdp, xdp::XdpMode},
};
use integration_tests::{
    env::{TestEnv, backend_name},
    netns::unique,
    progs,
};
use slots_runtime::SlotRef;
use support::{check_whole, claim_args, listing, spawn_slotctl, stderr, xdp_prog_on};

/// Sum of the per-CPU `COUNTER[0]` of the program with id `prog`.
fn counter_of(prog: u32) -> u64 {
    let info = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == prog)
        .expect("program still loaded");
    for id in info.map_ids().unwrap().unwrap_or_default() {
        let m = MapInfo::from_id(id).unwrap();
        if m.name_as_str() == Some("COUNTER") {
            let data = MapData::from_id(id).unwrap();
            let arr: PerCpuArray<MapData, u64> =
                PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
            return arr.get(&0, 0).unwrap().iter().sum();
        }
    }
    panic!("program {prog} has no COUNTER map")
}

/// `ip` inside the rx namespace; returns its output.
fn ip_rx(env: &TestEnv, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["-n", &env.pair.rx.name])
        .args(args)
        .output()
        .unwrap()
}

/// One refusal line containing `expect`, with the conflict exit status.
fn refused(out: &Output, expect: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(slotctl::exit::Exit::Conflict.code()),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for e in expect {
        assert!(err.contains(e), "{err:?} lacks {e:?}");
    }
}

#[test]
fn a_foreign_program_is_refused_not_replaced_and_keeps_running() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let foreign = progs::path("xdp_count_c.o");
    let out = ip_rx(
        &env,
        &[
            "link",
            "set",
            "dev",
            &ifc,
            "xdpgeneric",
            "obj",
            foreign.to_str().unwrap(),
            "sec",
            "xdp",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = xdp_prog_on(&env, &ifc).expect("the foreign program is attached");
    let root_before = listing(&env.root);
    let pass = progs::path("xdp_pass");
    for args in [
        claim_args(&env, "xdp_pass", 20, "mine"),
        vec!["attach".into(), ifc.clone()],
        vec![
            "claim".into(),
            ifc.clone(),
            pass.to_str().unwrap().into(),
            "--hold".into(),
        ],
    ] {
        let out = spawn_slotctl(&env, None, &args).output();
        refused(
            &out,
            &[
                "already runs a foreign XDP program",
                &format!("xdp_count_c, id {id}"),
                "left alone",
            ],
        );
        assert_eq!(xdp_prog_on(&env, &ifc), Some(id), "{args:?} replaced it");
        assert_eq!(listing(&env.root), root_before, "{args:?} left state");
    }
    // The same through the library.
    let err = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_drop", 10)))
        .unwrap_err();
    assert!(
        matches!(err, slots_runtime::Error::ForeignProgram { .. }),
        "{err}"
    );
    let before = counter_of(id);
    assert_eq!(env.send(10), 10, "the foreign program passes packets");
    assert_eq!(counter_of(id), before + 10, "and still counts them");
    println!("figures: coexist foreign_netlink_program refused=4 replaced=0");
}

#[test]
fn a_foreign_program_on_a_bpf_link_is_not_replaced_even_with_force() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    // Another tool holding its program on the interface through a bpf_link.
    let mut other = Ebpf::load(progs::bytes("xdp_count")).unwrap();
    let prog: &mut Xdp = other.program_mut("xdp_count").unwrap().try_into().unwrap();
    prog.load().unwrap();
    {
        let _in = env.pair.rx.enter().unwrap();
        let ifindex = slots_runtime::Iface::resolve(&ifc).unwrap().ifindex;
        prog.attach_to_if_index(ifindex, XdpMode::Skb).unwrap();
    }
    let id = prog.info().unwrap().id();
    assert_eq!(xdp_prog_on(&env, &ifc), Some(id));
    let out = env.slotctl(&["attach", &ifc, "--force"]);
    refused(&out, &["through a bpf_link", "only its owner can remove"]);
    let out = env.slotctl(&["claim", &ifc, progs::path("xdp_pass").to_str().unwrap()]);
    refused(&out, &["foreign XDP program", "xdp_count"]);
    assert_eq!(xdp_prog_on(&env, &ifc), Some(id));
    assert_eq!(env.send(10), 10);
    assert_eq!(counter_of(id), 10, "the other tool's program still counts");
    assert!(listing(&env.root).is_empty(), "no state left behind");
    println!("figures: coexist foreign_link_program refused=2 replaced=0");
}

#[test]
fn ip_shows_the_dispatcher_by_its_name() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let out = env.slotctl(&["attach", &ifc]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = xdp_prog_on(&env, &ifc).expect("the dispatcher is attached");
    let shown = String::from_utf8_lossy(&ip_rx(&env, &["-d", "link", "show", "dev", &ifc]).stdout)
        .into_owned();
    // What an operator reads in `ip link` and bpftool: the literal name,
    // not the constant, so that renaming it is a visible decision.
    assert!(
        shown.contains(&format!("prog/xdp id {id} name xdp_slots ")),
        "{shown}"
    );
}

#[test]
fn other_tools_cannot_displace_the_dispatcher() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let out = spawn_slotctl(&env, None, &claim_args(&env, "xdp_drop", 20, "fw")).output();
    assert!(out.status.success(), "{}", stderr(&out));
    let ours = xdp_prog_on(&env, &ifc).expect("the dispatcher is attached");
    assert_eq!(env.send(10), 0);
    let foreign = progs::path("xdp_count_c.o");
    let mut tried = 0;
    for args in [
        vec![
            "link",
            "set",
            "dev",
            &ifc,
            "xdpgeneric",
            "obj",
            foreign.to_str().unwrap(),
            "sec",
            "xdp",
        ],
        vec![
            "link",
            "set",
            "dev",
            &ifc,
            "xdp",
            "obj",
            foreign.to_str().unwrap(),
            "sec",
            "xdp",
        ],
        vec!["link", "set", "dev", &ifc, "xdp", "off"],
        vec!["link", "set", "dev", &ifc, "xdpdrv", "off"],
    ] {
        let out = ip_rx(&env, &args);
        assert!(!out.status.success(), "ip {args:?} replaced the dispatcher");
        assert_eq!(xdp_prog_on(&env, &ifc), Some(ours));
        tried += 1;
    }
    // libxdp's loader, when installed (its state in a directory of this
    // test's root).
    if which("xdp-loader") {
        let out = xdp_loader(
            &env,
            &["load", "-m", "native", &ifc, foreign.to_str().unwrap()],
        );
        assert!(!out.status.success(), "xdp-loader replaced the dispatcher");
        assert_eq!(xdp_prog_on(&env, &ifc), Some(ours));
        tried += 1;
    }
    assert_eq!(env.send(10), 0, "our claim still drops");
    let extra: &[&str] = if env.root.join("libxdp").exists() {
        &["libxdp"]
    } else {
        &[]
    };
    check_whole(&env, extra).unwrap_or_else(|e| panic!("{e}"));
    println!("figures: coexist displacement_attempts={tried} displaced=0");
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
}

/// `xdp-loader` in the rx namespace, with libxdp's bpffs state under this
/// test's root.
fn xdp_loader(env: &TestEnv, args: &[&str]) -> Output {
    let dir = env.root.join("libxdp");
    std::fs::create_dir_all(&dir).unwrap();
    let _in = env.pair.rx.enter().unwrap();
    Command::new("xdp-loader")
        .env("LIBXDP_BPFFS", &dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn libxdp_on_the_next_interface_and_the_dispatcher_coexist() {
    if !which("xdp-loader") {
        println!("coexist: xdp-loader is not installed: skipped");
        return;
    }
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    // A second interface in the same namespace, managed by libxdp.
    let (a, b) = (unique("xa"), unique("xb"));
    let out = ip_rx(
        &env,
        &["link", "add", &a, "type", "veth", "peer", "name", &b],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for i in [&a, &b] {
        assert!(ip_rx(&env, &["link", "set", i, "up"]).status.success());
    }
    let foreign = progs::path("xdp_count_c.o");
    let out = xdp_loader(&env, &["load", "-m", "skb", &a, foreign.to_str().unwrap()]);
    assert!(out.status.success(), "xdp-loader: {}", stderr(&out));
    let theirs = xdp_prog_on(&env, &a).expect("libxdp's program is attached");
    let libxdp_pins = listing(&env.root.join("libxdp"));
    // Ours on the other interface.
    let out = spawn_slotctl(&env, None, &claim_args(&env, "xdp_drop", 20, "fw")).output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.send(10), 0);
    // Neither takes the other's interface.
    let out = env.slotctl(&["claim", &a, progs::path("xdp_pass").to_str().unwrap()]);
    refused(&out, &["foreign XDP program", "xdp_count_c"]);
    let ours = xdp_prog_on(&env, &ifc).unwrap();
    let out = xdp_loader(
        &env,
        &["load", "-m", "skb", &ifc, foreign.to_str().unwrap()],
    );
    assert!(!out.status.success(), "xdp-loader replaced the dispatcher");
    // Status lists only ours; each program is where it was.
    let out = env.slotctl(&["status", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = all["interfaces"].as_array().unwrap();
    let names: Vec<&str> = all.iter().map(|s| s["iface"].as_str().unwrap()).collect();
    assert_eq!(names, vec![ifc.as_str()]);
    assert_eq!(xdp_prog_on(&env, &a), Some(theirs));
    assert_eq!(xdp_prog_on(&env, &ifc), Some(ours));
    // Our detach leaves libxdp's program and state alone, and theirs ours.
    let out = env.slotctl(&["detach", &ifc, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(xdp_prog_on(&env, &a), Some(theirs));
    assert_eq!(listing(&env.root.join("libxdp")), libxdp_pins);
    let out = xdp_loader(&env, &["unload", "--all", &a]);
    assert!(out.status.success(), "xdp-loader unload: {}", stderr(&out));
    assert_eq!(xdp_prog_on(&env, &a), None);
    println!("figures: coexist libxdp_neighbour refused_each_way=2");
}

/// Another tool's bpffs objects: a directory next to our root with a
/// pinned map and program, and objects inside our root. Removed on drop.
struct Foreign {
    paths: Vec<PathBuf>,
    /// (pin, map id, value) of every pinned map.
    maps: Vec<(PathBuf, u32, u64)>,
    programs: Vec<(PathBuf, u32)>,
    sibling: PathBuf,
    _objects: Vec<Ebpf>,
}

impl Foreign {
    fn new(root: &Path, our_dir_name: &str) -> Self {
        let sibling = Path::new("/sys/fs/bpf").join(unique("other-tool-"));
        let inside = [
            root.join("other-tool"),
            root.join(format!("{our_dir_name}_backup")),
            root.join("xdp_ns1_if1"),
        ];
        let mut f = Self {
            paths: Vec::new(),
            maps: Vec::new(),
            programs: Vec::new(),
            sibling: sibling.clone(),
            _objects: Vec::new(),
        };
        std::fs::create_dir_all(root).unwrap();
        std::fs::create_dir(&sibling).unwrap();
        f.paths.push(sibling.clone());
        let mut map_pins = vec![sibling.join("counter"), root.join("foreign_map")];
        for d in &inside {
            std::fs::create_dir(d).unwrap();
            f.paths.push(d.clone());
            map_pins.push(d.join("counter"));
        }
        for (k, pin) in map_pins.into_iter().enumerate() {
            let mut obj = Ebpf::load(progs::bytes("xdp_count")).unwrap();
            let value = 7000 + k as u64;
            {
                let mut arr: PerCpuArray<&mut MapData, u64> =
                    PerCpuArray::try_from(obj.map_mut("COUNTER").unwrap()).unwrap();
                let cpus = aya::util::nr_cpus().unwrap();
                let mut v = vec![0u64; cpus];
                v[0] = value;
                arr.set(0, aya::maps::PerCpuValues::try_from(v).unwrap(), 0)
                    .unwrap();
            }
            let map = obj.map("COUNTER").unwrap();
            map.pin(&pin).unwrap();
            let id = MapInfo::from_pin(&pin).unwrap().id();
            f.maps.push((pin.clone(), id, value));
            f.paths.push(pin);
            f._objects.push(obj);
        }
        let mut obj = Ebpf::load(progs::bytes("xdp_pass")).unwrap();
        let prog: &mut Xdp = obj.program_mut("xdp_pass").unwrap().try_into().unwrap();
        prog.load().unwrap();
        let pin = sibling.join("prog");
        prog.pin(&pin).unwrap();
        f.programs
            .push((pin.clone(), ProgramInfo::from_pin(&pin).unwrap().id()));
        f.paths.push(pin);
        f._objects.push(obj);
        f
    }

    /// Every object is still pinned where it was, the same object, with
    /// the same contents.
    fn untouched(&self) -> Result<(), String> {
        for (pin, id, value) in &self.maps {
            let now = MapInfo::from_pin(pin).map_err(|e| format!("{}: {e}", pin.display()))?;
            if now.id() != *id {
                return Err(format!("{} is another map now", pin.display()));
            }
            let data = MapData::from_pin(pin).unwrap();
            let arr: PerCpuArray<MapData, u64> =
                PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
            let sum: u64 = arr.get(&0, 0).unwrap().iter().sum();
            if sum != *value {
                return Err(format!("{} holds {sum}, not {value}", pin.display()));
            }
        }
        for (pin, id) in &self.programs {
            let now = ProgramInfo::from_pin(pin).map_err(|e| format!("{}: {e}", pin.display()))?;
            if now.id() != *id {
                return Err(format!("{} is another program now", pin.display()));
            }
        }
        Ok(())
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        for p in self.paths.iter().rev() {
            let _ = if p.is_dir() {
                std::fs::remove_dir(p)
            } else {
                std::fs::remove_file(p)
            };
        }
        let _ = std::fs::remove_dir_all(&self.sibling);
    }
}

#[test]
fn foreign_pins_next_to_ours_and_inside_our_root_are_left_alone() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let dir_name = env.in_rx(|_, i| slots_runtime::Iface::resolve(i).unwrap().dir_name());
    let foreign = Foreign::new(&env.root, &dir_name);
    let theirs_in_root: BTreeSet<String> = listing(&env.root);
    let mut ops = 0;
    let mut run = |args: Vec<String>| {
        let out = spawn_slotctl(&env, None, &args).output();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        foreign
            .untouched()
            .unwrap_or_else(|e| panic!("after {args:?}: {e}"));
        ops += 1;
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    run(s(&["attach", &ifc, "--backend", backend_name()]));
    run(claim_args(&env, "xdp_pass", 20, "a"));
    run(claim_args(&env, "xdp_count", 30, "b"));
    run(s(&["status"]));
    run(s(&["status", &ifc, "--json"]));
    run(s(&["clean"]));
    run(s(&["stats", &ifc, "on"]));
    // A claimer killed half-way, then the collection that follows.
    let mut held = claim_args(&env, "xdp_pass", 40, "c");
    held.push("--hold".into());
    let p = spawn_slotctl(&env, None, &held);
    std::thread::sleep(std::time::Duration::from_millis(60));
    p.kill();
    env.in_rx(|rt, i| rt.collect(i)).unwrap();
    foreign.untouched().unwrap();
    run(s(&["release", &ifc, "a"]));
    let extra: Vec<String> = std::fs::read_dir(&env.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n != dir_name)
        .collect();
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    support::eventually(support::KERNEL_PATIENCE, || {
        env.in_rx(|rt, i| rt.collect(i))
            .map_err(|e| e.to_string())?;
        check_whole(&env, &extra_refs).map(drop)
    })
    .unwrap();
    env.in_rx(|rt, i| rt.release(i, &SlotRef::Name("b".into()), false))
        .unwrap();
    run(s(&["detach", &ifc]));
    run(s(&["attach", &ifc]));
    run(s(&["detach", &ifc, "--force"]));
    assert_eq!(
        listing(&env.root),
        theirs_in_root,
        "our root holds only theirs again"
    );
    println!(
        "figures: coexist foreign_pins={} operations={ops} touched=0",
        foreign.maps.len() + foreign.programs.len()
    );
}
