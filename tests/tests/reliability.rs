//! Races, crashes, churn, bad input and a neighbour tool, on a real kernel.
//! Each test prints one `reliability:` line with its figures (run with
//! `--nocapture` to see them; docs/reliability.md quotes them). Sizes grow
//! with `SLOTS_STRESS=long`.
use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use integration_tests::{
    env::{TestEnv, backend, read_counter, slotctl_path},
    netns::unique,
    progs,
    stress::{Rng, size},
};
use serde_json::Value;
use slots_runtime::{Backend, SlotRef};

/// Starts processes that all wait on one FIFO and run their command when
/// it is opened and closed: as close to "the same instant" as processes get.
struct Barrier {
    fifo: std::path::PathBuf,
}

impl Barrier {
    fn new() -> Self {
        let fifo = std::env::temp_dir().join(unique("slots-barrier-"));
        let ok = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", fifo.display());
        Self { fifo }
    }

    /// A slotctl child (in the calling thread's network namespace) that
    /// waits for [`Barrier::release`].
    fn slotctl(&self, root: &Path, args: &[String]) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg("read _ < \"$0\"; exec \"$@\"")
            .arg(&self.fifo)
            .arg(slotctl_path())
            .arg("--bpffs")
            .arg(root)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn release(&self) {
        // Opening blocks until the readers are there; closing lets them go.
        std::thread::sleep(Duration::from_millis(300));
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&self.fifo)
                .unwrap(),
        );
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.fifo);
    }
}

fn claims(v: &Value) -> Vec<Value> {
    v["claims"].as_array().cloned().unwrap_or_default()
}

/// Slot order must be priority order.
fn assert_ordered(claims: &[Value]) {
    let prios: Vec<u64> = claims.iter().map(|c| c["prio"].as_u64().unwrap()).collect();
    assert!(
        prios.windows(2).all(|w| w[0] <= w[1]),
        "slots out of priority order: {prios:?}"
    );
}

/// Reasons a claim may fail under load, as slotctl words them.
const REFUSALS: [&str; 3] = [
    "keeps the priority order",
    "tail calls per packet",
    "slots of",
];

fn one_line_refusal(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    out.status.code() == Some(1)
        && err.trim_end().lines().count() == 1
        && REFUSALS.iter().any(|r| err.contains(r))
}

fn concurrent_claims(n: usize, seed: u64) {
    let env = TestEnv::new().unwrap();
    env.in_rx(|rt, i| rt.attach(i, Default::default())).unwrap();
    let obj = progs::path("xdp_pass");
    let mut rng = Rng(seed);
    let barrier = Barrier::new();
    let mut children = Vec::new();
    {
        let _in = env.pair.rx.enter().unwrap();
        for k in 0..n {
            let prio = rng.below(101);
            let args: Vec<String> = [
                "claim",
                &env.pair.rx_if,
                obj.to_str().unwrap(),
                "--prio",
                &prio.to_string(),
                "--name",
                &format!("c{k}"),
                "--backend",
                backend().as_str(),
                "--json",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            children.push((k, prio, barrier.slotctl(&env.root, &args)));
        }
    }
    barrier.release();
    let mut landed = BTreeMap::new();
    let mut refused = 0;
    for (k, prio, child) in children {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["prio"], prio);
            landed.insert(
                format!("c{k}"),
                (v["slot"].as_u64().unwrap(), v["prog_id"].as_u64().unwrap()),
            );
        } else {
            assert!(
                one_line_refusal(&out),
                "claim c{k} failed badly: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            refused += 1;
        }
    }
    let now = claims(&env.status_json());
    assert_ordered(&now);
    let present: BTreeMap<String, (u64, u64)> = now
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                (c["slot"].as_u64().unwrap(), c["prog_id"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        present, landed,
        "every landed claim present with its slot and program, nothing else"
    );
    let ids: HashSet<u64> = present.values().map(|v| v.1).collect();
    assert_eq!(ids.len(), present.len(), "each claim has its own program");
    assert!(!landed.is_empty());

    // Concurrent releases of all of them, plus as many claims mixed in.
    let barrier = Barrier::new();
    let mut releases = Vec::new();
    let mut extra = Vec::new();
    {
        let _in = env.pair.rx.enter().unwrap();
        for name in landed.keys() {
            let args = vec!["release".to_string(), env.pair.rx_if.clone(), name.clone()];
            releases.push(barrier.slotctl(&env.root, &args));
        }
        for k in 0..n / 2 {
            let args: Vec<String> = [
                "claim",
                &env.pair.rx_if,
                obj.to_str().unwrap(),
                "--prio",
                &rng.below(101).to_string(),
                "--name",
                &format!("m{k}"),
                "--backend",
                backend().as_str(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            extra.push(barrier.slotctl(&env.root, &args));
        }
    }
    barrier.release();
    for r in releases {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "release failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut mixed_landed = 0;
    for c in extra {
        let out = c.wait_with_output().unwrap();
        if out.status.success() {
            mixed_landed += 1;
        } else {
            assert!(
                one_line_refusal(&out),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let now = claims(&env.status_json());
    assert_ordered(&now);
    assert!(
        now.iter()
            .all(|c| c["name"].as_str().unwrap().starts_with('m')),
        "a released claim survived"
    );
    assert_eq!(now.len(), mixed_landed, "mixed claims lost or duplicated");
    println!(
        "reliability: concurrent N={n}: {} attempted, {} landed, {refused} refused with a reason, 0 lost; \
         {} released concurrently with {} claims ({mixed_landed} landed), 0 lost",
        n,
        landed.len(),
        landed.len(),
        n / 2
    );
}

#[test]
fn concurrent_claimers_8() {
    concurrent_claims(8, 8);
}

#[test]
fn concurrent_claimers_32() {
    concurrent_claims(size(12, 32, 32), 32);
}

#[test]
fn concurrent_claimers_99() {
    concurrent_claims(size(16, 99, 99), 99);
}

fn pins(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        pins(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn traffic_continuity_under_churn() {
    let cycles = size(20, 1000, 5000);
    let env = Arc::new(TestEnv::new().unwrap());
    let mut counter = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_count", 50)))
        .unwrap();
    let rx = env.pair.receiver(0).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = env.pair.sender(port).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // Bounded traffic: one datagram every 500 us while churn runs, at most
    // 100,000.
    let sender = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) && sent < 100_000 {
                tx.send(&sent.to_be_bytes()).unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        })
    };
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let mut got = 0u64;
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    let mut rng = Rng(1000);
    for k in 0..cycles {
        // Before and after the counter, proceeding on pass.
        let prio = if k % 2 == 0 {
            rng.below(50)
        } else {
            51 + rng.below(50)
        } as u32;
        let mut req = env.request("xdp_pass", prio);
        req.name = Some(format!("churn{k}"));
        let c = env.in_rx(|rt, i| rt.claim(i, &req)).unwrap();
        c.release().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let received = receiver.join().unwrap();
    let counted = read_counter(counter.ebpf_mut());
    assert_eq!(
        counted, sent,
        "packets counted by the held slot == packets sent"
    );
    assert_eq!(received, sent, "every packet arrived");
    println!(
        "reliability: {cycles} claim/release cycles beside a counting slot; sent {sent}, counted {counted}, received {received}"
    );
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    // Priorities 0 and 1 in slots 0 and 1: another 0 has no room between.
    let _keep0 = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_pass", 0)))
        .unwrap();
    let mut one = env.request("xdp_pass", 1);
    one.name = Some("one".into());
    let _keep1 = env.in_rx(|rt, i| rt.claim(i, &one)).unwrap();
    let mut persistent = env.request("xdp_pass", 90);
    persistent.persistent = true;
    persistent.name = Some("p90".into());
    env.in_rx(|rt, i| rt.claim(i, &persistent)).unwrap();
    let garbage = std::env::temp_dir().join(unique("slots-garbage-"));
    std::fs::write(&garbage, b"this is not an ELF file").unwrap();
    let not_bpffs = std::env::temp_dir().join(unique("slots-notbpffs-"));
    std::fs::create_dir_all(&not_bpffs).unwrap();
    let p = |n: &str| progs::path(n).to_str().unwrap().to_string();
    let g = garbage.to_str().unwrap().to_string();
    let nb = not_bpffs.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["claim".into(), ifc.clone(), g.clone()], "ELF"),
        (
            vec!["claim".into(), ifc.clone(), p("kprobe_only.o")],
            "no XDP program",
        ),
        (
            vec![
                "claim".into(),
                ifc.clone(),
                p("kprobe_only.o"),
                "--program".into(),
                "on_nanosleep".into(),
            ],
            "not XDP",
        ),
        (
            vec![
                "claim".into(),
                ifc.clone(),
                p("xdp_pass"),
                "--program".into(),
                "nosuch".into(),
            ],
            "no program named nosuch",
        ),
        (
            vec!["claim".into(), ifc.clone(), p("bad_verifier.o")],
            "verifier rejected",
        ),
        (
            vec!["claim".into(), "nosuch0".into(), p("xdp_pass")],
            "does not exist",
        ),
        (
            vec![
                "claim".into(),
                ifc.clone(),
                p("xdp_pass"),
                "--prio".into(),
                "1001".into(),
            ],
            "out of range",
        ),
        (
            vec![
                "claim".into(),
                ifc.clone(),
                p("xdp_pass"),
                "--prio".into(),
                "0".into(),
                "--name".into(),
                "first".into(),
            ],
            "keeps the priority order",
        ),
        (vec!["release".into(), ifc.clone(), "42".into()], "not held"),
        (
            vec!["release".into(), ifc.clone(), "nosuchclaim".into()],
            "no claim named",
        ),
        (vec!["detach".into(), ifc.clone()], "still has"),
    ];
    let before = (env.status_json(), pins(&env.root));
    let mut tried = 0;
    for (args, expect) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.slotctl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(
            (env.status_json(), pins(&env.root)),
            before,
            "{args:?} changed the state"
        );
        tried += 1;
    }
    // bpffs not mounted where it is looked for.
    let out = Command::new(slotctl_path())
        .args(["--bpffs", &nb, "status"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bpffs is not mounted") && err.contains("mount -t bpf"),
        "{err}"
    );
    tried += 1;
    // No privileges (where setpriv exists: not in the VM suite's busybox).
    let unprivileged = {
        let _in = env.pair.rx.enter().unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(slotctl_path())
            .arg("--bpffs")
            .arg(&env.root)
            .args(["claim", &ifc, &p("xdp_pass")])
            .output()
    };
    match unprivileged {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("needs root"), "{err}");
            assert_eq!((env.status_json(), pins(&env.root)), before);
            tried += 1;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("reliability: no setpriv here, unprivileged case not tried");
        }
        Err(e) => panic!("running setpriv: {e}"),
    }
    // The tail-call limit.
    if backend() != Backend::Freplace && slots_runtime::probe::freplace().is_err() {
        let mut held = Vec::new();
        for k in 0..30 {
            let mut req = env.request("xdp_pass", 2 + 2 * k);
            req.name = Some(format!("t{k}"));
            held.push(env.in_rx(|rt, i| rt.claim(i, &req)).unwrap());
        }
        let out = env.slotctl(&[
            "claim",
            &ifc,
            &p("xdp_pass"),
            "--prio",
            "999",
            "--name",
            "t34",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("33 tail calls per packet"), "{err}");
        tried += 1;
    }
    // A damaged state object: refused, named, and nothing else changes.
    let dir = std::fs::read_dir(&env.root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let control = dir.join("control");
    let map = aya::maps::MapData::from_pin(&control).unwrap();
    let mut arr: aya::maps::Array<_, dispatcher_common::Control> =
        aya::maps::Array::try_from(aya::maps::Map::Array(map)).unwrap();
    let good = arr.get(&0, 0).unwrap();
    arr.set(
        0,
        dispatcher_common::Control {
            magic: 0xbad,
            ..good
        },
        0,
    )
    .unwrap();
    let out = env.slotctl(&[
        "claim",
        &ifc,
        &p("xdp_pass"),
        "--prio",
        "40",
        "--name",
        "late",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("damaged") && err.contains("detach"), "{err}");
    assert_eq!(
        arr.get(&0, 0).unwrap().magic,
        0xbad,
        "the damaged object was left for inspection"
    );
    arr.set(0, good, 0).unwrap();
    tried += 1;
    let _ = std::fs::remove_file(&garbage);
    let _ = std::fs::remove_dir(&not_bpffs);
    println!("reliability: {tried} bad inputs, each one line, exit 1, state unchanged");
}

#[test]
fn a_neighbour_tool_is_left_alone() {
    let env = TestEnv::new().unwrap();
    // Another tool's bpffs objects, next to ours.
    let theirs = Path::new("/sys/fs/bpf").join(unique("other-tool-"));
    std::fs::create_dir(&theirs).unwrap();
    let mut other = aya::Ebpf::load(progs::bytes("xdp_pass")).unwrap();
    let prog: &mut aya::programs::Xdp = other.program_mut("xdp_pass").unwrap().try_into().unwrap();
    prog.load().unwrap();
    prog.pin(theirs.join("prog")).unwrap();
    let claim = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_drop", 20)))
        .unwrap();
    claim.release().unwrap();
    env.in_rx(|rt, i| rt.collect(i)).unwrap();
    env.in_rx(|rt, i| rt.detach(i, false)).unwrap();
    assert!(
        theirs.join("prog").exists(),
        "another tool's pin was touched"
    );
    let _ = std::fs::remove_file(theirs.join("prog"));
    let _ = std::fs::remove_dir(&theirs);
    // Their program on our interface: refused, and left running.
    env.pair
        .rx
        .exec(&[
            "ip",
            "link",
            "set",
            "dev",
            &env.pair.rx_if,
            "xdpgeneric",
            "obj",
            &progs::path("xdp_count_c.o").to_string_lossy(),
            "sec",
            "xdp",
        ])
        .unwrap();
    let err = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_drop", 20)))
        .unwrap_err();
    assert!(err.to_string().contains("foreign XDP program"), "{err}");
    assert_eq!(
        env.send(10),
        10,
        "the foreign program still runs and passes"
    );
    let attached = Command::new("ip")
        .args([
            "-n",
            &env.pair.rx.name,
            "link",
            "show",
            "dev",
            &env.pair.rx_if,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&attached.stdout).contains("xdpgeneric"),
        "the foreign program was removed"
    );
    println!(
        "reliability: neighbour tool: its pins untouched, its XDP program refused and left running"
    );
    let _ = SlotRef::Slot(0);
}
