//! Bad input through slotctl, the way people get it wrong: each must give
//! exit status 1, exactly one line on stderr saying what is wrong, and no
//! change at all: the same status, the same pins under the bpffs root, the
//! same programs in the slots' arrays.
//!
//! Covered elsewhere: a release of another owner's held claim without
//! `--force` (tests/tests/runtime.rs, `another_holders_claim_needs_force`),
//! a foreign XDP program on the interface (tests/tests/coexist.rs).
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Output},
};

use aya::maps::{Array, Map, MapData};
use dispatcher_common::{Control, SlotConfig};
use integration_tests::{
    env::{TestEnv, backend_name, slotctl_path},
    netns::unique,
    progs,
};
use slots_runtime::{Backend, Claim, ClaimRequest, ProgramSource, pin};
use support::{array_entries, iface_dir, listing, status, stderr};

/// Everything a refused command must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    status: serde_json::Value,
    pins: BTreeSet<String>,
    arrays: BTreeMap<usize, Option<u32>>,
}

fn snapshot(env: &TestEnv) -> Snapshot {
    Snapshot {
        status: serde_json::to_value(status(env)).unwrap(),
        pins: listing(&env.root),
        arrays: array_entries(&iface_dir(env)).unwrap(),
    }
}

/// An interface with state on it: a persistent claim at priority 0 (slot
/// 0) and a held one at priority 1 (slot 1), so that another priority 0
/// finds no slot between them.
struct World {
    env: TestEnv,
    _held: Claim,
    tried: usize,
}

impl World {
    fn new() -> Self {
        let env = TestEnv::new().unwrap();
        let mut keep = env.request("xdp_pass", 0);
        keep.persistent = true;
        keep.name = Some("keep".into());
        env.in_rx(|rt, i| rt.claim(i, &keep)).unwrap();
        let mut held = env.request("xdp_count", 1);
        held.name = Some("held".into());
        let held = env.in_rx(|rt, i| rt.claim(i, &held)).unwrap();
        assert_eq!(held.slot, 1);
        Self {
            env,
            _held: held,
            tried: 0,
        }
    }

    fn ifc(&self) -> &str {
        &self.env.pair.rx_if
    }

    /// Runs a command that must be refused with one line containing every
    /// one of `expect`, and change nothing.
    fn refused(&mut self, what: &str, run: impl FnOnce(&TestEnv) -> Output, expect: &[&str]) {
        let before = snapshot(&self.env);
        let out = run(&self.env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{what}: not one line: {err}"
        );
        assert!(err.starts_with("slotctl: "), "{what}: {err}");
        for e in expect {
            assert!(err.contains(e), "{what}: {err:?} lacks {e:?}");
        }
        assert_eq!(snapshot(&self.env), before, "{what} changed the state");
        println!("bad input: {what}: {}", err.trim_end());
        self.tried += 1;
    }

    /// `slotctl <args>` must be refused (see [`World::refused`]).
    fn slotctl(&mut self, what: &str, args: &[&str], expect: &[&str]) {
        self.refused(what, |env| env.slotctl(args), expect);
    }
}

fn path(name: &str) -> String {
    progs::path(name).to_str().unwrap().to_string()
}

/// A file of this test's own, removed with its directory at the end.
fn scratch(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(unique("slots-bad-input-"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn remove_scratch(p: &str) {
    let _ = std::fs::remove_dir_all(PathBuf::from(p).parent().unwrap());
}

#[test]
fn bad_objects_are_refused_in_one_line_and_change_nothing() {
    let mut w = World::new();
    let ifc = w.ifc().to_string();
    let be = backend_name();
    let text = scratch("notes.o", b"this is not an ELF object\n");
    let empty = scratch("empty.o", b"");
    let truncated = scratch("truncated.o", &progs::bytes("xdp_pass")[..200]);
    let missing = format!("{}/no-such-object.o", std::env::temp_dir().display());
    let kprobe = path("kprobe_only.o");
    let rejected = path("bad_verifier.o");
    let cases: [(&str, &str, &[&str]); 6] = [
        ("a file that is not ELF", &text, &["cannot read", "ELF"]),
        ("an empty file", &empty, &["cannot read"]),
        ("a truncated ELF", &truncated, &["cannot read"]),
        (
            "a file that does not exist",
            &missing,
            &["cannot read", "No such file"],
        ),
        (
            "an ELF with no XDP program",
            &kprobe,
            &["holds no XDP program", "on_nanosleep"],
        ),
        (
            "a program the verifier rejects",
            &rejected,
            &["verifier rejected xdp_unchecked", "packet"],
        ),
    ];
    for (what, obj, expect) in cases {
        w.slotctl(what, &["claim", &ifc, obj, "--backend", be], expect);
    }
    w.slotctl(
        "a program of the wrong type",
        &[
            "claim",
            &ifc,
            &path("kprobe_only.o"),
            "--program",
            "on_nanosleep",
        ],
        &["on_nanosleep", "not XDP"],
    );
    w.slotctl(
        "a named program that does not exist",
        &["claim", &ifc, &path("xdp_pass"), "--program", "nosuch"],
        &["no program named nosuch", "xdp_pass"],
    );
    for p in [&text, &empty, &truncated] {
        remove_scratch(p);
    }
    println!("figures: bad_input objects tried={}", w.tried);
}

#[test]
fn bad_requests_are_refused_in_one_line_and_change_nothing() {
    let mut w = World::new();
    let ifc = w.ifc().to_string();
    let pass = path("xdp_pass");
    let be = backend_name();
    w.slotctl(
        "an interface that does not exist",
        &["claim", "nosuch0", &pass],
        &["nosuch0 does not exist"],
    );
    w.slotctl(
        "a priority out of range",
        &["claim", &ifc, &pass, "--prio", "1001", "--backend", be],
        &["priority 1001 is out of range", "0..=1000"],
    );
    w.slotctl(
        "a name already used",
        &[
            "claim",
            &ifc,
            &pass,
            "--prio",
            "50",
            "--name",
            "keep",
            "--backend",
            be,
        ],
        &["already used by slot 0"],
    );
    w.slotctl(
        "a name that is not valid",
        &["claim", &ifc, &pass, "--name", "no spaces!"],
        &["is not valid"],
    );
    w.slotctl(
        "a release of a slot nobody holds",
        &["release", &ifc, "42"],
        &["slot 42", "not held by anyone"],
    );
    w.slotctl(
        "a release of a slot that does not exist",
        &["release", &ifc, "100"],
        &["slot 100 does not exist"],
    );
    w.slotctl(
        "a release of a claim name nobody uses",
        &["release", &ifc, "nosuch"],
        &["no claim named nosuch"],
    );
    w.slotctl(
        "a detach while slots are claimed",
        &["detach", &ifc],
        &["still has 2 claimed slot(s)"],
    );
    // Usage errors are clap's: exit 2, the reason on the first line.
    for args in [
        vec![
            "claim",
            ifc.as_str(),
            pass.as_str(),
            "--proceed-on",
            "bogus",
        ],
        vec!["claim", ifc.as_str(), pass.as_str(), "--backend", "bogus"],
        vec!["claim", ifc.as_str(), pass.as_str(), "--prio", "-1"],
    ] {
        let before = snapshot(&w.env);
        let out = w.env.slotctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
        assert_eq!(snapshot(&w.env), before);
        w.tried += 1;
    }
    println!("figures: bad_input requests tried={}", w.tried);
}

#[test]
fn limits_are_refused_in_one_line_and_change_nothing() {
    let mut w = World::new();
    let ifc = w.ifc().to_string();
    let pass = path("xdp_pass");
    // The tail-call limit: 33 active tail-call slots (any backend may ask
    // for tail calls explicitly).
    let tail_calls = |env: &TestEnv| {
        status(env)
            .claims
            .iter()
            .filter(|c| c.backend == Backend::TailCall)
            .count()
    };
    let mut prio = 2;
    while tail_calls(&w.env) < dispatcher_common::MAX_TAIL_CALLS {
        let mut req = w.env.request("xdp_pass", prio);
        req.backend = Some(Backend::TailCall);
        req.persistent = true;
        req.name = Some(format!("t{prio}"));
        w.env.in_rx(|rt, i| rt.claim(i, &req)).unwrap();
        prio += 2;
    }
    w.slotctl(
        "the tail-call limit",
        &[
            "claim",
            &ifc,
            &pass,
            "--prio",
            "999",
            "--backend",
            "tailcall",
        ],
        &[
            "already has 33 claims on the tailcall backend",
            "33 tail calls per packet",
        ],
    );
    println!("figures: bad_input limits tried={}", w.tried);
}

#[test]
fn all_slots_taken_is_refused_in_one_line_and_changes_nothing() {
    let mut w = World::new();
    let ifc = w.ifc().to_string();
    // Taking all 100 slots for real needs 98 more extensions (the tail-call
    // backend runs 33 at most), which takes minutes under emulation. The
    // state of a full dispatcher is written instead: every free slot gets
    // a persistent, active record of the live program in slot 0, exactly
    // what 98 claims would leave.
    let dir = iface_dir(&w.env);
    let mut control: Array<MapData, Control> = Array::try_from(Map::Array(
        MapData::from_pin(dir.join(pin::CONTROL)).unwrap(),
    ))
    .unwrap();
    let mut slots: Array<MapData, SlotConfig> =
        Array::try_from(Map::Array(MapData::from_pin(dir.join(pin::SLOTS)).unwrap())).unwrap();
    let keep = slots.get(&0, 0).unwrap();
    let mut c = control.get(&0, 0).unwrap();
    let mut filled = Vec::new();
    for n in 0..dispatcher_common::SLOT_COUNT {
        if slots.get(&(n as u32), 0).unwrap().state != dispatcher_common::STATE_FREE {
            continue;
        }
        let mut name = [0u8; dispatcher_common::NAME_LEN];
        let label = format!("fill{n}");
        name[..label.len()].copy_from_slice(label.as_bytes());
        let record = SlotConfig {
            prio: 1000,
            backend: dispatcher_common::BACKEND_FREPLACE,
            name,
            ..keep
        };
        slots.set(n as u32, record, 0).unwrap();
        filled.push(n);
    }
    let before: Vec<usize> = c.run_table().slots().iter().map(|&s| s as usize).collect();
    c.set_run_order(&[before.clone(), filled.clone()].concat());
    control.set(0, c, 0).unwrap();
    assert_eq!(status(&w.env).claims.len(), dispatcher_common::SLOT_COUNT);
    w.slotctl(
        "all slots taken",
        &["claim", &ifc, &path("xdp_pass"), "--prio", "1000"],
        &["all 100 slots", "are taken"],
    );
    for n in filled {
        slots.set(n as u32, SlotConfig::FREE, 0).unwrap();
    }
    c.set_run_order(&before);
    control.set(0, c, 0).unwrap();
    assert_eq!(w.env.send(10), 10);
    println!("figures: bad_input all_slots tried={}", w.tried);
}

/// `ProgramSource` bytes with the BTF sections renamed away.
fn without_btf(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + 5 <= out.len() {
        if &out[i..i + 5] == b".BTF\0" || (i + 9 <= out.len() && &out[i..i + 9] == b".BTF.ext\0") {
            out[i + 1] = b'X';
        }
        i += 1;
    }
    out
}

#[test]
fn freplace_needs_matching_btf() {
    let mut w = World::new();
    let ifc = w.ifc().to_string();
    if slots_runtime::Backend::Freplace.probe().is_err() {
        // Here the refusal is the kernel's: one line, nothing changed.
        w.slotctl(
            "a chain decision without freplace",
            &["chain", &ifc, &path("chain_stop.o")],
            &["needs the freplace backend"],
        );
        println!("bad input: BTF missing or mismatching: skipped, this kernel refuses freplace");
        println!("figures: bad_input freplace tried={}", w.tried);
        return;
    }
    let stripped = scratch(
        "xdp_pass_cfg_nobtf.o",
        &without_btf(progs::bytes("xdp_pass_cfg.o")),
    );
    // The same object still works as a tail-call program: only BTF is gone.
    let mut ok = ClaimRequest::new(ProgramSource::file(&stripped, None).unwrap());
    ok.backend = Some(Backend::TailCall);
    ok.prio = Some(500);
    drop(w.env.in_rx(|rt, i| rt.claim(i, &ok)).unwrap());
    w.slotctl(
        "an extension without BTF",
        &[
            "claim",
            &ifc,
            &stripped,
            "--prio",
            "500",
            "--backend",
            "freplace",
        ],
        &["xdp_pass_cfg"],
    );
    w.slotctl(
        "an extension whose signature does not match",
        &["chain", &ifc, &path("xdp_pass_cfg.o")],
        &["chain_decide"],
    );
    remove_scratch(&stripped);
    println!("figures: bad_input freplace tried={}", w.tried);
}

#[test]
fn broken_environments_are_refused_in_one_line_and_change_nothing() {
    let mut w = World::new();
    let ifc = w.ifc().to_string();
    let pass = path("xdp_pass");
    // bpffs not mounted where --bpffs points: nothing is created there.
    let tmp = std::env::temp_dir().join(unique("slots-not-bpffs-"));
    let root = tmp.join("state");
    for args in [
        vec!["claim", ifc.as_str(), pass.as_str()],
        vec!["status"],
        vec!["attach", ifc.as_str()],
    ] {
        let what = format!("bpffs not mounted ({})", args[0]);
        w.refused(
            &what,
            |env| {
                let _in = env.pair.rx.enter().unwrap();
                Command::new(slotctl_path())
                    .arg("--bpffs")
                    .arg(&root)
                    .args(&args)
                    .output()
                    .unwrap()
            },
            &["bpffs is not mounted", "mount -t bpf"],
        );
        assert!(!tmp.exists(), "nothing created under a non-bpffs root");
    }
    // No privileges: the same commands as nobody.
    for args in [
        vec!["claim", ifc.as_str(), pass.as_str()],
        vec!["release", ifc.as_str(), "keep"],
        vec!["status", ifc.as_str()],
        vec!["status"],
        vec!["attach", ifc.as_str()],
        vec!["detach", ifc.as_str(), "--force"],
    ] {
        let what = format!("no privileges ({})", args.join(" "));
        w.refused(
            &what,
            |env| {
                let _in = env.pair.rx.enter().unwrap();
                Command::new(slotctl_path())
                    .uid(65534)
                    .gid(65534)
                    .arg("--bpffs")
                    .arg(&env.root)
                    .args(&args)
                    .output()
                    .unwrap()
            },
            &["permission denied", "as root"],
        );
    }
    println!("figures: bad_input environments tried={}", w.tried);
}

#[test]
fn damaged_state_is_refused_in_one_line_and_left_for_inspection() {
    let mut w = World::new();
    let ifc = w.ifc().to_string();
    let pass = path("xdp_pass");
    let dir = iface_dir(&w.env);
    let commands: Vec<Vec<&str>> = vec![
        vec!["claim", &ifc, &pass, "--prio", "50"],
        vec!["release", &ifc, "keep"],
        vec!["status", &ifc],
        vec!["attach", &ifc],
        vec!["detach", &ifc],
        vec!["stats", &ifc, "on"],
    ];
    // 1. The control record's magic overwritten (another version's state,
    //    or damage).
    let data = MapData::from_pin(dir.join(pin::CONTROL)).unwrap();
    let mut control: Array<MapData, Control> = Array::try_from(Map::Array(data)).unwrap();
    let good = control.get(&0, 0).unwrap();
    let bad = Control {
        magic: 0xbad,
        ..good
    };
    control.set(0, bad, 0).unwrap();
    let pins = listing(&w.env.root);
    for args in &commands {
        let before = (listing(&w.env.root), control.get(&0, 0).unwrap());
        let out = w.env.slotctl(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("is not ours or is damaged") && err.contains("magic 0xbad"),
            "{args:?}: {err}"
        );
        assert_eq!(
            (listing(&w.env.root), control.get(&0, 0).unwrap()),
            before,
            "{args:?} changed damaged state"
        );
        w.tried += 1;
    }
    println!(
        "bad input: damaged control record: {} commands refused",
        commands.len()
    );
    control.set(0, good, 0).unwrap();
    assert_eq!(listing(&w.env.root), pins);
    // 2. A pin missing from the state directory (removed by hand).
    let slots = MapData::from_pin(dir.join(pin::SLOTS)).unwrap();
    std::fs::remove_file(dir.join(pin::SLOTS)).unwrap();
    for args in &commands {
        let before = listing(&w.env.root);
        let out = w.env.slotctl(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("is not ours or is damaged") && err.contains("slots"),
            "{args:?}: {err}"
        );
        assert_eq!(
            listing(&w.env.root),
            before,
            "{args:?} changed damaged state"
        );
        w.tried += 1;
    }
    println!(
        "bad input: missing slots pin: {} commands refused",
        commands.len()
    );
    slots.pin(dir.join(pin::SLOTS)).unwrap();
    // Whole again: the claims are as they were.
    let st = status(&w.env);
    assert_eq!(st.claims.len(), 2);
    assert_eq!(w.env.send(10), 10);
    // The documented way out: detach --force resets the interface.
    control.set(0, bad, 0).unwrap();
    let out = w.env.slotctl(&["detach", &ifc, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.exists());
    println!("figures: bad_input damaged_state tried={}", w.tried);
}
