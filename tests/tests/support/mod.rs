//! Shared by the reliability suites (races, faults, churn, bad_input,
//! coexist): sizes, a seeded random source, slotctl processes released
//! together, and the checks that the state on an interface is whole.
#![allow(dead_code)] // each suite uses its own part of this module

pub mod counters;
pub mod layout1;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    env::{TestEnv, backend_name, slotctl_path},
    netns::unique,
};
use slots_runtime::{Backend, ClaimState, Iface, Status, pin};

/// A suite size: `SLOTS_STRESS_<NAME>` if set, else the one `SLOTS_STRESS`
/// picks (see [`integration_tests::stress::size`]): `[short, default, long]`.
pub fn size(name: &str, sizes: [usize; 3]) -> usize {
    std::env::var(format!("SLOTS_STRESS_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| integration_tests::stress::size(sizes[0], sizes[1], sizes[2]))
}

/// slotctl's refusal: its last stderr line, after any log records of what
/// the same run collected (`[INFO ] ...`). Panics unless that is all there
/// is.
pub fn refusal_line(err: &str) -> &str {
    let lines: Vec<&str> = err.trim_end().lines().collect();
    let (last, logs) = lines.split_last().expect("slotctl said nothing");
    assert!(
        logs.iter().all(|l| l.starts_with("[INFO ]")) && last.starts_with("slotctl: "),
        "not one refusal line: {err}"
    );
    last
}

/// The seed of a suite: `SLOTS_STRESS_SEED`, else from the clock. Printed,
/// so that a failing run can be repeated.
pub fn seed(suite: &str) -> u64 {
    let s = std::env::var("SLOTS_STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{suite}: seed {s} (SLOTS_STRESS_SEED={s} repeats this run)");
    s
}

/// The suites' random source (`integration_tests::stress::Rng`), with
/// the odd helper.
pub struct Rng(integration_tests::stress::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(integration_tests::stress::Rng(seed | 1))
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n.max(1))
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// How long a check waits for the kernel to finish what it does from a work
/// queue (freeing a dead holder's program, link or array entries): a few
/// milliseconds here, far longer under emulation. Only a failing check
/// waits this long.
pub const KERNEL_PATIENCE: Duration = Duration::from_secs(60);

/// Polls `f` until it succeeds or `timeout` passes; returns its last error.
pub fn eventually(
    timeout: Duration,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A barrier for child processes: each waits reading its stdin from one
/// pipe; dropping the write end (`open`) releases all of them at once.
pub struct Gate {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl Gate {
    pub fn new() -> Self {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, checked before use. Both are
        // close-on-exec, so no child inherits the write end.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Self {
            read,
            write: Some(write),
        }
    }

    fn stdin(&self) -> Stdio {
        Stdio::from(self.read.try_clone().expect("dup of the gate"))
    }

    /// Releases every process waiting on the gate.
    pub fn open(&mut self) {
        self.write.take();
    }
}

/// A child process, killed and reaped if it is still there on drop.
pub struct Proc {
    child: Option<Child>,
    pub started: Instant,
}

impl Proc {
    /// A child started elsewhere, killed and reaped on drop like the rest.
    pub fn from_child(child: Child) -> Self {
        Self {
            child: Some(child),
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The first line the process prints on stdout (e.g. slotctl's
    /// "claimed slot" line), waiting for it.
    pub fn first_line(&mut self) -> String {
        let child = self.child.as_mut().expect("running");
        integration_tests::env::first_line(child)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a child we have not reaped yet, so the pid is
        // still ours.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process and returns its output.
    pub fn output(mut self) -> Output {
        self.child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("waiting for slotctl")
    }

    /// SIGKILL now, then wait.
    pub fn kill(mut self) -> Output {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        child.wait_with_output().expect("waiting for slotctl")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts slotctl with the test's bpffs root in the rx namespace (the child
/// inherits the spawning thread's namespace and keeps the host's bpffs).
/// With a gate, it first waits for the gate to open.
pub fn spawn_slotctl(env: &TestEnv, gate: Option<&Gate>, args: &[String]) -> Proc {
    spawn_slotctl_with(env, gate, args, &[])
}

/// [`spawn_slotctl`] with extra environment variables (e.g. `FAILPOINTS`).
pub fn spawn_slotctl_with(
    env: &TestEnv,
    gate: Option<&Gate>,
    args: &[String],
    vars: &[(&str, &str)],
) -> Proc {
    let _in = env.pair.rx.enter().expect("entering the rx namespace");
    let mut cmd = match gate {
        Some(g) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"read gate; exec "$0" "$@""#)
                .arg(slotctl_path())
                .stdin(g.stdin());
            c
        }
        None => {
            let mut c = Command::new(slotctl_path());
            c.stdin(Stdio::null());
            c
        }
    };
    let child = cmd
        .arg("--bpffs")
        .arg(&env.root)
        .args(args)
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting slotctl");
    Proc {
        child: Some(child),
        started: Instant::now(),
    }
}

/// Waits until every process sleeps in its shell, reading the gate.
pub fn wait_at_gate(procs: &[&Proc]) {
    let ok = eventually(KERNEL_PATIENCE, || {
        for p in procs {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid()))
                .map_err(|e| e.to_string())?;
            let waiting = stat.contains("(sh) S") || stat.contains("(busybox) S");
            if !waiting {
                return Err(format!("not waiting yet: {stat}"));
            }
        }
        Ok(())
    });
    ok.expect("children reach the gate");
}

/// A second veth pair in the rx namespace, for tests that attach, kill
/// attaches or detach there (detaching the main interface would drop its
/// claims); returns the end to use.
pub fn second_interface(env: &TestEnv) -> String {
    let (a, b) = (unique("sa"), unique("sb"));
    env.pair
        .rx
        .exec(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])
        .expect("adding a second veth pair");
    for i in [&a, &b] {
        env.pair
            .rx
            .exec(&["ip", "link", "set", i, "up"])
            .expect("setting it up");
    }
    a
}

/// Arguments of a claim of the test object `object`.
pub fn claim_args(env: &TestEnv, object: &str, prio: u32, name: &str) -> Vec<String> {
    let obj = integration_tests::progs::path(object);
    [
        "claim",
        &env.pair.rx_if,
        obj.to_str().expect("utf-8 path"),
        "--prio",
        &prio.to_string(),
        "--name",
        name,
        "--backend",
        backend_name(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Why a claim was refused, from slotctl's one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    TailCallLimit,
    SlotsFull,
}

impl Refusal {
    pub fn of(line: &str) -> Option<Self> {
        if line.contains("tail calls per packet") {
            Some(Self::TailCallLimit)
        } else if line.contains("slots of") && line.contains("are taken") {
            Some(Self::SlotsFull)
        } else {
            None
        }
    }
}

/// A claim slotctl reported as made (`--json`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Landed {
    pub name: String,
    pub slot: usize,
    pub prio: u32,
    pub prog_id: u32,
}

impl Landed {
    pub fn parse(out: &str) -> Self {
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        Self {
            name: v["name"].as_str().expect("name").to_string(),
            slot: v["slot"].as_u64().expect("slot") as usize,
            prio: v["prio"].as_u64().expect("prio") as u32,
            prog_id: v["prog_id"].as_u64().expect("prog_id") as u32,
        }
    }
}

/// The status of the test's interface, read through the library.
pub fn status(env: &TestEnv) -> Status {
    env.in_rx(|rt, ifc| rt.status(ifc)).expect("status")
}

/// The claims in status, in the form slotctl reports them.
pub fn landed_in(st: &Status) -> BTreeSet<Landed> {
    st.claims
        .iter()
        .map(|c| Landed {
            name: c.name.clone(),
            slot: c.slot,
            prio: c.prio,
            prog_id: c.prog_id,
        })
        .collect()
}

/// Everything a refused command must leave as it was: status, the pins
/// under the bpffs root, the slots' program arrays.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    status: serde_json::Value,
    pins: BTreeSet<String>,
    arrays: BTreeMap<usize, Option<u32>>,
}

pub fn snapshot(env: &TestEnv) -> Snapshot {
    Snapshot {
        status: serde_json::to_value(status(env)).unwrap(),
        pins: listing(&env.root),
        arrays: array_entries(&iface_dir(env)).unwrap(),
    }
}

/// The interface's state directory.
pub fn iface_dir(env: &TestEnv) -> PathBuf {
    env.in_rx(|_, ifc| {
        env.root
            .join(Iface::resolve(ifc).expect("the test interface").dir_name())
    })
}

/// Every path under `dir`, relative, directories with a trailing '/'.
pub fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The claims with a run position run in priority order, equal
/// priorities in arrival order (program ids grow with time), one claim per
/// slot and per position.
pub fn check_order(st: &Status) -> Result<(), String> {
    let mut slots: Vec<usize> = st.claims.iter().map(|c| c.slot).collect();
    slots.sort();
    if slots.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("two claims in one slot: {slots:?}"));
    }
    let mut running: Vec<_> = st.claims.iter().filter(|c| c.position.is_some()).collect();
    running.sort_by_key(|c| c.position);
    for (i, c) in running.iter().enumerate() {
        if c.position != Some(i) {
            return Err(format!(
                "run positions are not 0..{}: {running:?}",
                running.len()
            ));
        }
    }
    for w in running.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.prio > b.prio {
            return Err(format!("priority order broken: {a:?} runs before {b:?}"));
        }
        if a.prio == b.prio && a.prog_id > b.prog_id {
            return Err(format!(
                "equal priorities out of arrival order: {a:?} runs before {b:?}"
            ));
        }
    }
    Ok(())
}

/// Entry 0 of every slot's program array (by program id).
pub fn array_entries(dir: &Path) -> Result<BTreeMap<usize, Option<u32>>, String> {
    let mut out = BTreeMap::new();
    for (n, id) in slots_runtime::slot_array_ids(dir).map_err(|e| e.to_string())? {
        let m = aya::maps::MapInfo::from_id(id).map_err(|e| e.to_string())?;
        let fd = m.fd().map_err(|e| e.to_string())?;
        out.insert(n, lookup_u32(fd.as_fd().as_raw_fd(), 0)?);
    }
    Ok(out)
}

/// BPF_MAP_LOOKUP_ELEM of a u32 key whose value is a u32 (for a program
/// array: the id of the program in it).
fn lookup_u32(map_fd: i32, key: u32) -> Result<Option<u32>, String> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut value: u32 = 0;
    let attr = Attr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: (&raw const key) as u64,
        value: (&raw mut value) as u64,
        flags: 0,
    };
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    // SAFETY: bpf(2) with a valid attr; key and value outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &raw const attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(value));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(format!("looking up a slot array: {err}"))
    }
}

/// The id of the XDP program on `ifc` in the rx namespace, as `ip link`
/// shows it.
pub fn xdp_prog_on(env: &TestEnv, ifc: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", &env.pair.rx.name, "-d", "link", "show", "dev", ifc])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rest = &text[text.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Is process `pid` running?
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The state of the interface is whole:
/// - every record is active, live (program loaded), and held by a running
///   process or persistent; no active bit without a record;
/// - slot order agrees with priority;
/// - every program array holds exactly its tail-call claim's program;
/// - the directory holds the fixed pins, the parked arrays (free slots and
///   persistent tail-call claims) and the persistent freplace links, and
///   nothing else; the root holds nothing but the interface's directory
///   (and `extra` names).
pub fn check_whole(env: &TestEnv, extra: &[&str]) -> Result<Status, String> {
    let st = env
        .in_rx(|rt, ifc| rt.status(ifc))
        .map_err(|e| e.to_string())?;
    for c in &st.claims {
        let ok = c.active
            && match c.state {
                ClaimState::Persistent => true,
                ClaimState::Held => alive(c.owner),
                _ => false,
            };
        if !ok {
            return Err(format!("not a whole claim: {c:?}"));
        }
    }
    if st.active_slots as usize != st.claims.len() {
        return Err(format!(
            "{} active slots for {} claims",
            st.active_slots,
            st.claims.len()
        ));
    }
    check_order(&st)?;
    let dir = iface_dir(env);
    let tail_calls: BTreeMap<usize, u32> = st
        .claims
        .iter()
        .filter(|c| c.backend == Backend::TailCall)
        .map(|c| (c.slot, c.prog_id))
        .collect();
    for (n, entry) in array_entries(&dir)? {
        if entry != tail_calls.get(&n).copied() {
            return Err(format!(
                "slot {n}'s program array holds {entry:?}, its record says {:?}",
                tail_calls.get(&n)
            ));
        }
    }
    let mut want: BTreeSet<String> = [
        pin::LINK,
        pin::DISPATCHER,
        pin::CONTROL,
        pin::SLOTS,
        pin::STATS,
        pin::ORIGINS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if st.custom_chain.is_some() {
        want.insert(pin::CHAIN.into());
    }
    for n in (0..dispatcher_common::SLOT_COUNT).filter(|&n| dispatcher_common::has_prog_array(n)) {
        let held_tail_call = st
            .claims
            .iter()
            .any(|c| c.slot == n && c.state == ClaimState::Held && c.backend == Backend::TailCall);
        if !held_tail_call {
            want.insert(pin::prog(n));
        }
    }
    for c in &st.claims {
        if c.persistent && c.backend == Backend::Freplace {
            want.insert(pin::ext(c.slot));
        }
    }
    let got = listing(&dir);
    if got != want {
        return Err(format!(
            "pins in {}: extra {:?}, missing {:?}",
            dir.display(),
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        ));
    }
    let top: BTreeSet<String> = std::fs::read_dir(&env.root)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut want_top: BTreeSet<String> = extra.iter().map(|s| s.to_string()).collect();
    want_top.insert(dir.file_name().unwrap().to_string_lossy().into_owned());
    if top != want_top {
        return Err(format!("{} holds {top:?}", env.root.display()));
    }
    Ok(st)
}

/// Collects (the "next operation"), then waits until the state is whole:
/// the kernel frees a dead holder's program from a work queue.
/// `extra`: other names the bpffs root may hold.
pub fn collect_until_whole(env: &TestEnv, extra: &[&str]) -> Status {
    let mut st = None;
    let r = eventually(KERNEL_PATIENCE, || {
        env.in_rx(|rt, ifc| rt.collect(ifc))
            .map_err(|e| e.to_string())?;
        st = Some(check_whole(env, extra)?);
        Ok(())
    });
    if let Err(e) = r {
        panic!("state not whole after collecting: {e}");
    }
    st.unwrap()
}

/// Switches the counters on, sends `n` datagrams and checks that every
/// claimed slot's program ran on each (the claims all pass packets on).
/// Returns the datagrams that arrived.
pub fn traffic_reaches_every_claim(env: &TestEnv, n: usize) -> usize {
    env.in_rx(|rt, ifc| rt.set_stats(ifc, true)).unwrap();
    let before = status(env);
    let arrived = env.send(n);
    let after = status(env);
    for (b, a) in before.claims.iter().zip(&after.claims) {
        assert_eq!(b.slot, a.slot);
        let delta = a.counters.as_ref().unwrap().packets - b.counters.as_ref().unwrap().packets;
        assert!(
            delta >= n as u64,
            "slot {} ({}) ran on {delta} of {n} packets",
            a.slot,
            a.name
        );
    }
    arrived
}

/// The run order is priority order, and the datapath follows it: with
/// counters on, `n` packets are sent; every claim up to and including the
/// first one whose program is `dropper` runs on each of them, and none
/// after it (without a dropper, all run on all). Returns how many arrived.
pub fn datapath_follows_the_run_order(env: &TestEnv, n: usize, dropper: Option<&str>) -> usize {
    env.in_rx(|rt, ifc| rt.set_stats(ifc, true)).unwrap();
    let before = status(env);
    let arrived = env.send(n);
    let after = status(env);
    let positions: Vec<Option<usize>> = after.claims.iter().map(|c| c.position).collect();
    let expected: Vec<Option<usize>> = (0..after.claims.len()).map(Some).collect();
    assert_eq!(
        positions, expected,
        "every claim has a run position, in order"
    );
    for w in after.claims.windows(2) {
        assert!(
            w[0].prio <= w[1].prio,
            "run order is not priority order: {:?} before {:?}",
            w[0],
            w[1]
        );
    }
    let stop = dropper.and_then(|d| after.claims.iter().position(|c| c.name == d));
    for (b, a) in before.claims.iter().zip(&after.claims) {
        assert_eq!(b.slot, a.slot);
        let ran = a.counters.as_ref().unwrap().packets - b.counters.as_ref().unwrap().packets;
        let want = match stop {
            Some(s) if a.position.unwrap() > s => 0,
            _ => n as u64,
        };
        assert_eq!(
            ran, want,
            "position {:?}, slot {} ({}, priority {}) ran on {ran} of {n} packets (dropper at position {stop:?})",
            a.position, a.slot, a.name, a.prio
        );
    }
    arrived
}

/// Kernel objects a run may leave behind.
pub struct Baseline {
    prog: u32,
    link: u32,
}

/// The newest program and link ids now: anything newer was made by the run.
pub fn baseline() -> Baseline {
    let prog = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| p.id())
        .max()
        .unwrap_or(0);
    let link = aya::programs::loaded_links()
        .filter_map(|l| l.ok())
        .map(|l| l.id())
        .max()
        .unwrap_or(0);
    Baseline { prog, link }
}

/// Ids of BPF programs and links some running process holds a descriptor
/// of (`/proc/*/fdinfo`): those are not leaks of ours.
fn held_by_processes() -> (HashSet<u32>, HashSet<u32>) {
    let (mut progs, mut links) = (HashSet::new(), HashSet::new());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (progs, links);
    };
    for p in procs.filter_map(|e| e.ok()) {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            for line in info.lines() {
                let mut it = line.split_whitespace();
                match (it.next(), it.next().and_then(|v| v.parse().ok())) {
                    (Some("prog_id:"), Some(id)) => {
                        progs.insert(id);
                    }
                    (Some("link_id:"), Some(id)) => {
                        links.insert(id);
                    }
                    _ => {}
                }
            }
        }
    }
    (progs, links)
}

impl Baseline {
    /// Programs named one of `names` and links of such programs, made
    /// since the baseline, that no running process holds and that are not
    /// among `expected` program ids: what the run leaked into the kernel.
    /// Polled for a few seconds (the kernel frees programs from a work
    /// queue).
    pub fn leaks(&self, names: &[&str], expected: &[u32]) -> Result<(), String> {
        eventually(KERNEL_PATIENCE, || {
            let (held_progs, held_links) = held_by_processes();
            let ours: BTreeMap<u32, String> = aya::programs::loaded_programs()
                .filter_map(|p| p.ok())
                .filter(|p| p.id() > self.prog)
                .filter_map(|p| {
                    let name = p.name_as_str()?.to_string();
                    names.contains(&name.as_str()).then_some((p.id(), name))
                })
                .collect();
            let leaked: Vec<_> = ours
                .iter()
                .filter(|(id, _)| !expected.contains(id) && !held_progs.contains(id))
                .collect();
            let leaked_links: Vec<u32> = aya::programs::loaded_links()
                .filter_map(|l| l.ok())
                .filter(|l| l.id() > self.link && !held_links.contains(&l.id()))
                .filter(|l| {
                    ours.contains_key(&l.program_id()) && !expected.contains(&l.program_id())
                })
                .map(|l| l.id())
                .collect();
            if leaked.is_empty() && leaked_links.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "leaked programs {leaked:?}, links {leaked_links:?}"
                ))
            }
        })
    }
}

/// What a paced sender does when a send fails.
#[derive(Clone, Copy)]
pub enum OnSendError {
    /// The test fails (the sender's thread panics, and `stop` with it).
    Fail,
    /// The datagram counts as sent: a full socket buffer is a loss before
    /// XDP, which the pair's counters account for.
    Count,
}

/// A bounded sender: datagrams numbered by an 8-byte sequence, one every
/// `pace`, until stopped or `max` are sent. The pace only spreads the
/// traffic; no check depends on it.
pub struct PacedSender {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PacedSender {
    /// Starts sending on `tx` (connected); `keep` lives as long as the
    /// sender (e.g. the bound receiver, so datagrams are not refused).
    pub fn start<K: Send + 'static>(
        tx: std::net::UdpSocket,
        pace: Duration,
        max: u64,
        on_error: OnSendError,
        keep: K,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let done = done.clone();
            std::thread::spawn(move || {
                let _keep = keep;
                let start = Instant::now();
                let mut sent = 0u64;
                while !done.load(Ordering::Relaxed) && sent < max {
                    let r = tx.send(&sent.to_be_bytes());
                    if let (Err(e), OnSendError::Fail) = (r, on_error) {
                        panic!("sending datagram {sent}: {e}");
                    }
                    sent += 1;
                    let next = start + pace * sent as u32;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                sent
            })
        };
        Self { done, thread }
    }

    /// Stops sending; how many datagrams were sent.
    pub fn stop(self) -> u64 {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the sender panicked")
    }
}

/// Ids of every map in the kernel, listed with BPF_MAP_GET_NEXT_ID alone.
/// Opening a map by id (as `aya::maps::loaded_maps` and `bpftool map
/// show` do) while the last pin of a program array goes would race the
/// kernel's deferred clearing of that array: a second release of its user
/// references while the first clearing is still queued keeps it in the
/// kernel for good (seen here: prog_arrays with no pin, fd or program left
/// over). Listing ids takes no reference.
pub fn map_ids() -> std::collections::BTreeSet<u32> {
    #[repr(C)]
    struct Attr {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
    let mut ids = std::collections::BTreeSet::new();
    let mut attr = Attr {
        start_id: 0,
        next_id: 0,
        open_flags: 0,
    };
    loop {
        // SAFETY: bpf(2) reads and writes `attr`, a live repr(C) prefix of
        // `union bpf_attr` for this command.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_ID,
                &raw mut attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "listing map ids: {e}");
            return ids;
        }
        ids.insert(attr.next_id);
        attr.start_id = attr.next_id;
    }
}
