//! A test's world: a veth pair in two fresh namespaces, a private bpffs
//! root, and cleanup of both when the test ends, pass or fail.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use anyhow::Result;
use slots_runtime::{Backend, ClaimRequest, ProgramSource, Runtime};

use crate::{netns::VethPair, progs};

/// Backend the suite runs with: `SLOTS_TEST_BACKEND` = auto (default,
/// `None`), freplace or tailcall. The VM suite sets freplace.
pub fn backend() -> Option<Backend> {
    std::env::var("SLOTS_TEST_BACKEND")
        .ok()
        .and_then(|s| s.parse().ok())
}

/// [`backend`] as slotctl's `--backend` value.
pub fn backend_name() -> &'static str {
    backend().map_or("auto", Backend::as_str)
}

/// The slotctl binary: `$SLOTCTL`, or the one cargo built next to the test.
pub fn slotctl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SLOTCTL") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    // -> target/<profile>/slotctl
    let mut dir = exe.parent().expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target dir");
    }
    let p = dir.join("slotctl");
    assert!(
        p.exists(),
        "slotctl not found at {}: run 'cargo build -p slotctl' (cargo xtask test does)",
        p.display()
    );
    p
}

/// Runs slotctl with bpffs root `root`, in the calling thread's network
/// namespace.
pub fn slotctl_at(root: &Path, args: &[&str]) -> Output {
    Command::new(slotctl_path())
        .arg("--bpffs")
        .arg(root)
        .args(args)
        .output()
        .expect("running slotctl")
}

/// A veth pair, a bpffs root of its own and a runtime on it. On drop: the
/// dispatcher is detached (forced), the root removed, the namespaces deleted.
pub struct TestEnv {
    pub pair: VethPair,
    pub root: PathBuf,
    pub rt: Runtime,
}

impl TestEnv {
    pub fn new() -> Result<Self> {
        let pair = VethPair::new()?;
        let root = PathBuf::from("/sys/fs/bpf").join(crate::netns::unique("slots-test-"));
        let rt = Runtime::with_root(&root);
        Ok(Self { pair, root, rt })
    }

    /// Runs `f` inside the receiving namespace (where the dispatcher goes).
    pub fn in_rx<T>(&self, f: impl FnOnce(&Runtime, &str) -> T) -> T {
        let _in = self.pair.rx.enter().expect("entering the rx namespace");
        f(&self.rt, &self.pair.rx_if)
    }

    /// A claim request for a test object, with the suite's backend.
    pub fn request(&self, object: &str, prio: u32) -> ClaimRequest {
        let mut req = ClaimRequest::new(ProgramSource::bytes(object, progs::bytes(object), None));
        req.prio = Some(prio);
        req.backend = backend();
        req
    }

    /// Runs slotctl inside the rx namespace with this test's bpffs root.
    pub fn slotctl(&self, args: &[&str]) -> Output {
        let _in = self.pair.rx.enter().expect("entering the rx namespace");
        slotctl_at(&self.root, args)
    }

    /// Starts slotctl inside the rx namespace (it inherits the namespace of
    /// the spawning thread), stdout and stderr piped.
    pub fn slotctl_spawn(&self, args: &[&str]) -> Child {
        let _in = self.pair.rx.enter().expect("entering the rx namespace");
        Command::new(slotctl_path())
            .arg("--bpffs")
            .arg(&self.root)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting slotctl")
    }

    /// `slotctl status <if> --json`, parsed: `{schema, interfaces, errors}`.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.slotctl(&["status", &self.pair.rx_if, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Sends `n` UDP datagrams across the pair; returns how many arrived.
    pub fn send(&self, n: usize) -> usize {
        self.pair.send_and_count(0, n).expect("sending packets")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Ok(_in) = self.pair.rx.enter() {
            let _ = self.rt.detach(&self.pair.rx_if, true);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Sums a per-CPU u64 counter map (`COUNTER[0]`) of a claim's object.
pub fn read_counter(ebpf: &aya::Ebpf) -> u64 {
    let map = ebpf.map("COUNTER").expect("COUNTER map");
    let arr: aya::maps::PerCpuArray<_, u64> =
        aya::maps::PerCpuArray::try_from(map).expect("per-CPU array");
    arr.get(&0, 0).expect("reading COUNTER").iter().sum()
}

/// The first line a child printed on stdout (e.g. slotctl's "claimed slot").
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("reading the child's stdout");
    line
}
