//! Claims from inside "containers": slotctl run in a network namespace of
//! the test's and a new pid namespace (`unshare --pid --fork
//! --mount-proc`), against the host's bpffs, as a container that shares
//! it does. A program that pins a map by name (`filter_ports`, as
//! xdp-filter does) gets a map of its own per claim; holders are shown as
//! the host sees them.
mod support;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use integration_tests::{
    env::{TestEnv, backend_name, slotctl_at, slotctl_path},
    netns::{Netns, VethPair},
    progs,
};
use serde_json::Value;
use support::{KERNEL_PATIENCE, eventually, stderr, stdout};

/// The port the rules name.
const PORT: u16 = 4242;
/// The map the test object pins by name.
const MAP: &str = "filter_ports";
/// The test object's program, and so its claims' default name.
const PROG: &str = "xdp_filter_ports";

/// slotctl in a "container" (spawned in a network namespace of the
/// test's): a pid namespace of its own (slotctl is its process 1, with
/// its own /proc), with the test's bpffs root. `--kill-child`: the container ends with
/// `unshare`, even by SIGKILL.
fn container(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(slotctl_path())
        .arg("--bpffs")
        .arg(root)
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs slotctl in a container and waits for it.
fn in_container(ns: &Netns, root: &Path, args: &[&str]) -> Output {
    // The namespace is the spawning thread's: spawn while inside it.
    let mut cmd = container(root, args);
    let _in = ns.enter().expect("entering the namespace");
    cmd.output().expect("running unshare")
}

/// slotctl on the host's pid namespace, in network namespace `ns`.
fn on_host(ns: &Netns, root: &Path, args: &[&str]) -> Output {
    let _in = ns.enter().expect("entering the namespace");
    slotctl_at(root, args)
}

/// `status IFACE --json` from the host: the interface's entry.
fn status(ns: &Netns, root: &Path, ifc: &str) -> Value {
    let out = on_host(ns, root, &["status", ifc, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["interfaces"][0].clone()
}

/// The one map of the one claim in a status entry: (id, pin path).
fn the_map(st: &Value) -> (u32, PathBuf) {
    let claims = st["claims"].as_array().expect("claims");
    assert_eq!(claims.len(), 1, "{st}");
    let maps = claims[0]["maps"].as_array().expect("maps");
    let m = maps
        .iter()
        .find(|m| m["name"] == MAP)
        .unwrap_or_else(|| panic!("no {MAP} in {st}"));
    let pin = m["pin"]
        .as_str()
        .unwrap_or_else(|| panic!("not pinned: {st}"));
    (m["id"].as_u64().unwrap() as u32, PathBuf::from(pin))
}

/// Marks `port` for dropping in the pinned filter map at `pin`.
fn drop_port(pin: &Path, port: u16) {
    let data = aya::maps::MapData::from_pin(pin).expect("opening the pinned map");
    let mut map: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array");
    map.set(u32::from(port), 1, 0).expect("writing the rule");
}

/// Datagrams of `n` sent to PORT that arrived.
fn send(pair: &VethPair, n: usize) -> usize {
    pair.send_and_count(PORT, n).expect("sending packets")
}

/// The state directory of `ifc` (the only one under `root` of `ns`).
fn state_dir(st: &Value) -> PathBuf {
    PathBuf::from(st["dir"].as_str().expect("dir"))
}

/// The map with kernel id `id` is gone (the kernel frees it once its last
/// program, pin and fd are).
fn map_gone(id: u32) -> Result<(), String> {
    match aya::maps::MapInfo::from_id(id) {
        Err(_) => Ok(()),
        Ok(_) => Err(format!("map {id} is still in the kernel")),
    }
}

/// What `/sys/fs/bpf/filter_ports` is before the test (if something else
/// pinned one): it must be the same after.
fn top_pin() -> Option<u32> {
    aya::maps::MapInfo::from_pin(Path::new(slots_runtime::SHARED_DIR).join(MAP))
        .ok()
        .map(|i| i.id())
}

#[test]
fn a_map_pinned_by_name_is_each_claims_own() {
    let a = TestEnv::new().unwrap();
    let b = TestEnv::new().unwrap();
    // One bpffs root for both namespaces, as on a host.
    let root = a.root.clone();
    let top = top_pin();
    let obj = progs::path("filter_ports.o");
    let obj = obj.to_str().unwrap();
    for env in [&a, &b] {
        let out = in_container(
            &env.pair.rx,
            &root,
            &["claim", &env.pair.rx_if, obj, "--backend", backend_name()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (sa, sb) = (
        status(&a.pair.rx, &root, &a.pair.rx_if),
        status(&b.pair.rx, &root, &b.pair.rx_if),
    );
    let ((ida, pina), (idb, pinb)) = (the_map(&sa), the_map(&sb));
    assert_ne!(ida, idb, "two claims, two maps");
    for (st, pin) in [(&sa, &pina), (&sb, &pinb)] {
        assert_eq!(st["claims"][0]["pin_maps"], "scoped", "{st}");
        assert_eq!(*pin, state_dir(st).join("maps").join(PROG).join(MAP));
        assert!(pin.exists(), "{}", pin.display());
    }
    assert_eq!(top_pin(), top, "nothing pinned at the top of bpffs");

    // A rule in one namespace's map drops its traffic, not the other's.
    assert_eq!(send(&a.pair, 20), 20);
    drop_port(&pina, PORT);
    assert_eq!(send(&a.pair, 50), 0, "the rule drops a's traffic");
    assert_eq!(send(&b.pair, 50), 50, "b's map has no rule");

    // A replace keeps the claim's maps: the new program uses the same one.
    let out = in_container(&a.pair.rx, &root, &["replace", &a.pair.rx_if, PROG, obj]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = status(&a.pair.rx, &root, &a.pair.rx_if);
    assert_ne!(after["claims"][0]["prog_id"], sa["claims"][0]["prog_id"]);
    assert_eq!(the_map(&after), (ida, pina.clone()), "{after}");
    assert_eq!(send(&a.pair, 50), 0, "the rule holds across the replace");

    // Release: the claim's pins go with it, the other's stay.
    let out = in_container(&a.pair.rx, &root, &["release", &a.pair.rx_if, PROG]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!state_dir(&sa).join("maps").join(PROG).exists());
    assert!(pinb.exists());
    assert_eq!(send(&b.pair, 20), 20);
    eventually(KERNEL_PATIENCE, || map_gone(ida)).unwrap();
    let out = in_container(&b.pair.rx, &root, &["release", &b.pair.rx_if, PROG]);
    assert!(out.status.success(), "{}", stderr(&out));
    for st in [&sa, &sb] {
        let maps = state_dir(st).join("maps");
        let left: Vec<_> = std::fs::read_dir(&maps)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", maps.display());
    }
    eventually(KERNEL_PATIENCE, || map_gone(idb)).unwrap();
    assert_eq!(top_pin(), top, "nothing left at the top of bpffs");
    let _ = on_host(&b.pair.rx, &root, &["detach", &b.pair.rx_if]);
}

#[test]
fn a_map_pin_dir_is_shared_and_left_in_place() {
    let a = TestEnv::new().unwrap();
    let b = TestEnv::new().unwrap();
    let root = a.root.clone();
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join("pins");
    let obj = progs::path("filter_ports.o");
    let obj = obj.to_str().unwrap();
    for env in [&a, &b] {
        let out = in_container(
            &env.pair.rx,
            &root,
            &[
                "claim",
                &env.pair.rx_if,
                obj,
                "--map-pin-dir",
                dir.to_str().unwrap(),
                "--backend",
                backend_name(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (sa, sb) = (
        status(&a.pair.rx, &root, &a.pair.rx_if),
        status(&b.pair.rx, &root, &b.pair.rx_if),
    );
    assert_eq!(sa["claims"][0]["pin_maps"], "dir", "{sa}");
    let (ida, pin) = the_map(&sa);
    assert_eq!(the_map(&sb), (ida, pin.clone()), "one map, shared");
    assert_eq!(pin, dir.join(MAP));
    drop_port(&pin, PORT);
    assert_eq!(send(&a.pair, 30), 0);
    assert_eq!(send(&b.pair, 30), 0, "the rule is the shared map's");
    for env in [&a, &b] {
        let out = in_container(&env.pair.rx, &root, &["release", &env.pair.rx_if, PROG]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(pin.exists(), "the user's pins are left in place");
    assert!(aya::maps::MapInfo::from_pin(&pin).is_ok_and(|i| i.id() == ida));
    std::fs::remove_dir_all(&dir).unwrap();
    eventually(KERNEL_PATIENCE, || map_gone(ida)).unwrap();
    let _ = on_host(&b.pair.rx, &root, &["detach", &b.pair.rx_if]);
}

#[test]
fn a_map_pin_dir_off_bpffs_is_refused() {
    let env = TestEnv::new().unwrap();
    let obj = progs::path("filter_ports.o");
    let out = env.slotctl(&[
        "claim",
        &env.pair.rx_if,
        obj.to_str().unwrap(),
        "--map-pin-dir",
        "/tmp",
    ]);
    assert_eq!(
        out.status.code(),
        Some(slotctl::exit::Exit::BadInput.code()),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out).trim(),
        "slotctl: the map pin directory /tmp is not on bpffs: maps can only be pinned there; pass a directory under /sys/fs/bpf (or another bpffs mount)"
    );
    assert!(!env.root.exists() || support::listing(&env.root).is_empty());
}

/// A held claim made in a container: pid 1 in its namespace, shown from
/// the host by its host pid and cgroup; a forced release from the host
/// waits for it (it is alive, though pid 1 on the host is another
/// process); its own release then frees the slot and its maps.
#[test]
fn a_held_claim_from_a_pid_namespace_shows_its_host_pid() {
    let env = TestEnv::new().unwrap();
    let (ns, root, ifc) = (&env.pair.rx, &env.root, env.pair.rx_if.as_str());
    let obj = progs::path("filter_ports.o");
    let (mut child, mut guard) = hold_in_container(ns, root, ifc, &obj);
    // slotctl is unshare's child: process 1 of the new pid namespace.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .expect("reading unshare's children");
    let host_pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let nspid = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    assert!(
        nspid
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "{nspid}"
    );
    // Its cgroup v2 path; none where cgroup2 is not mounted (the VM suite).
    let cgroup = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).unwrap();
    let cgroup = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string);

    let st = status(ns, root, ifc);
    let c = &st["claims"][0];
    assert_eq!(c["state"], "held", "{st}");
    assert_eq!(c["owner"], 1, "its pid in its own namespace: {st}");
    assert_eq!(c["owner_pid"], host_pid, "as the host sees it: {st}");
    assert_eq!(c["owner_cgroup"], serde_json::json!(cgroup), "{st}");
    assert!(c["owner_pidns"].as_u64().is_some_and(|n| n > 0), "{st}");
    let out = on_host(ns, root, &["status", ifc]);
    let row = stdout(&out);
    let row = row.lines().find(|l| l.contains(PROG)).unwrap().to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[8], host_pid.to_string(), "OWNER: {row}");
    if let Some(cgroup) = &cgroup {
        assert_eq!(cols[9], cgroup, "CGROUP: {row}");
    }

    // The holder lives: a forced release leaves the slot draining, not
    // stale and reused.
    let out = on_host(ns, root, &["release", ifc, PROG, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = status(ns, root, ifc);
    assert_eq!(st["claims"][0]["state"], "draining", "{st}");
    let (_, pin) = the_map(&st);
    assert!(pin.exists());

    // Its holder ends (SIGTERM: its own release frees the draining slot),
    // and the claim's maps go with the slot.
    // SAFETY: kill(2) on the container's process, which the test made.
    assert_eq!(unsafe { libc::kill(host_pid as i32, libc::SIGTERM) }, 0);
    let status_code = child.wait().unwrap();
    guard.0 = None;
    assert!(status_code.success(), "{status_code:?}");
    let st = status(ns, root, ifc);
    assert_eq!(st["claims"], serde_json::json!([]), "{st}");
    assert!(!pin.exists(), "{}", pin.display());

    // A holder killed outright: the kernel empties its slot, and the next
    // change to the interface (here switching counters on) frees the
    // record and the claim's maps.
    let (mut child, mut guard) = hold_in_container(ns, root, ifc, &obj);
    let (_, pin) = the_map(&status(ns, root, ifc));
    assert!(pin.exists());
    // SIGKILL to unshare: --kill-child sends it on to the container.
    child.kill().unwrap();
    child.wait().unwrap();
    guard.0 = None;
    // The kernel frees the program from a work queue.
    eventually(KERNEL_PATIENCE, || {
        let st = status(ns, root, ifc);
        match st["claims"][0]["state"].as_str() {
            Some("stale") => Ok(()),
            _ => Err(format!("not stale yet: {st}")),
        }
    })
    .unwrap();
    let out = on_host(ns, root, &["stats", ifc, "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = status(ns, root, ifc);
    assert_eq!(st["claims"], serde_json::json!([]), "{st}");
    assert!(!pin.exists(), "{}", pin.display());
}

/// Starts a container in `ns` that holds a claim of `obj` on `ifc`, and
/// waits until it says it claimed. Killed on drop of the guard.
fn hold_in_container(ns: &Netns, root: &Path, ifc: &str, obj: &Path) -> (Child, KillOnDrop) {
    let mut cmd = container(root, &hold_args(ifc, obj));
    let mut child: Child = {
        let _in = ns.enter().unwrap();
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting unshare")
    };
    let guard = KillOnDrop(Some(child.id()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("claimed slot"), "{line:?}");
    (child, guard)
}

/// `claim IFACE OBJ --hold` with the suite's backend.
fn hold_args<'a>(ifc: &'a str, obj: &'a Path) -> Vec<&'a str> {
    vec![
        "claim",
        ifc,
        obj.to_str().unwrap(),
        "--hold",
        "--backend",
        backend_name(),
    ]
}

/// Kills the container's `unshare` (and with it the container) if a
/// failed check leaves it running; disarmed once it has been reaped.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) on a child of this test not reaped yet, so
            // the pid is still ours.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// `slotctl` with the capabilities `drop` taken from its bounding set
/// (root's capabilities after exec), in network namespace `ns`.
fn without(drop: &str, ns: &Netns, root: &Path, args: &[&str]) -> Output {
    let _in = ns.enter().expect("entering the namespace");
    Command::new("setpriv")
        .arg(format!("--bounding-set={drop}"))
        .arg(slotctl_path())
        .arg("--bpffs")
        .arg(root)
        .args(args)
        .output()
        .expect("running setpriv")
}

/// status reads the pins and maps with CAP_BPF alone; without CAP_BPF,
/// and a change without CAP_SYS_ADMIN, are refused naming what is
/// missing, not telling root to use sudo.
#[test]
fn status_needs_cap_bpf_alone_and_refusals_name_the_capability() {
    let env = TestEnv::new().unwrap();
    let (ns, root, ifc) = (&env.pair.rx, &env.root, env.pair.rx_if.as_str());
    let obj = progs::path("filter_ports.o");
    let out = env.slotctl(&[
        "claim",
        ifc,
        obj.to_str().unwrap(),
        "--backend",
        backend_name(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let full = status(ns, root, ifc);
    assert_eq!(full["programs_checked"], true, "{full}");

    let out = without("-sys_admin", ns, root, &["status", ifc, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &v["interfaces"][0];
    assert_eq!(st["programs_checked"], false, "{st}");
    assert_eq!(st["prog_id"], full["prog_id"], "{st}");
    let c = &st["claims"][0];
    assert_eq!(c["name"], PROG, "{st}");
    assert_eq!(c["state"], "persistent", "{st}");
    assert_eq!(c["prog_id"], full["claims"][0]["prog_id"], "{st}");
    assert_eq!(the_map(st), the_map(&full), "the claim's pinned map");
    let out = without("-sys_admin", ns, root, &["status", ifc]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("programs not checked: listing them needs CAP_SYS_ADMIN"),
        "{}",
        stdout(&out)
    );
    // Every interface of the namespace, and the counters' view, alike.
    let out = without("-sys_admin", ns, root, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["iface"], ifc, "{v}");
    let out = without("-sys_admin", ns, root, &["stats", ifc, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["slots"][0]["name"], PROG, "{v}");

    let out = without("-sys_admin,-bpf", ns, root, &["status", ifc]);
    assert_eq!(
        out.status.code(),
        Some(slotctl::exit::Exit::Permission.code()),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out),
        "slotctl: permission denied: reading the XDP dispatchers' state needs CAP_BPF (have: CAP_NET_ADMIN); grant it (the container's or the service's capability set; setpriv and capsh show it)\n"
    );
    assert!(stdout(&out).is_empty());

    let out = without("-sys_admin", ns, root, &["release", ifc, PROG]);
    assert_eq!(
        out.status.code(),
        Some(slotctl::exit::Exit::Permission.code()),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out),
        "slotctl: permission denied: managing XDP dispatchers needs CAP_SYS_ADMIN (have: CAP_BPF, CAP_NET_ADMIN); grant it (the container's or the service's capability set; setpriv and capsh show it)\n"
    );
    assert_eq!(
        status(ns, root, ifc)["claims"],
        full["claims"],
        "changed nothing"
    );
    let out = env.slotctl(&["release", ifc, PROG]);
    assert!(out.status.success(), "{}", stderr(&out));
}
