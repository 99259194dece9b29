//! Bad input through slotctl, the way people get it wrong: each must give
//! the exit status of its class (slotctl::exit), exactly one line on stderr
//! saying what is wrong and what to do, and no change at all: the same
//! status, the same pins under the bpffs root, the same programs in the
//! slots' arrays. The messages people met first are asserted whole.
//!
//! Covered elsewhere: a release of another owner's held claim without
//! `--force` (tests/tests/runtime.rs, `another_holders_claim_needs_force`),
//! a foreign XDP program on the interface (tests/tests/coexist.rs).
mod support;

use std::{
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
use slotctl::exit::Exit;
use slots_runtime::{Backend, Claim, ClaimRequest, Iface, ProgramSource, pin};
use support::{
    iface_dir, listing, second_interface, snapshot, spawn_slotctl, status, stderr, stdout,
    xdp_prog_on,
};

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

    /// Runs a command that must be refused with `exit` and one line
    /// containing every one of `expect`, and change nothing; returns the
    /// line.
    fn refused(
        &mut self,
        what: &str,
        run: impl FnOnce(&TestEnv) -> Output,
        exit: Exit,
        expect: &[&str],
    ) -> String {
        let before = snapshot(&self.env);
        let out = run(&self.env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(exit.code()), "{what}: {err}");
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
        err.trim_end().to_string()
    }

    /// `slotctl <args>` must be refused (see [`World::refused`]).
    fn slotctl(&mut self, what: &str, args: &[&str], exit: Exit, expect: &[&str]) {
        self.refused(what, |env| env.slotctl(args), exit, expect);
    }

    /// `slotctl <args>` must be refused with `exit` and exactly `line`.
    fn slotctl_exactly(&mut self, what: &str, args: &[&str], exit: Exit, line: &str) {
        let got = self.refused(what, |env| env.slotctl(args), exit, &[]);
        assert_eq!(got, line, "{what}");
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
    let cases: [(&str, &str, Exit, &[&str]); 6] = [
        (
            "a file that is not ELF",
            &text,
            Exit::BadInput,
            &["cannot read", "ELF"],
        ),
        ("an empty file", &empty, Exit::BadInput, &["cannot read"]),
        (
            "a truncated ELF",
            &truncated,
            Exit::BadInput,
            &["cannot read"],
        ),
        (
            "a file that does not exist",
            &missing,
            Exit::BadInput,
            &["cannot read", "No such file"],
        ),
        (
            "an ELF with no XDP program",
            &kprobe,
            Exit::BadInput,
            &["holds no XDP program", "on_nanosleep"],
        ),
        (
            "a program the verifier rejects",
            &rejected,
            Exit::KernelRefused,
            &["verifier rejected xdp_unchecked", "packet"],
        ),
    ];
    for (what, obj, exit, expect) in cases {
        w.slotctl(what, &["claim", &ifc, obj, "--backend", be], exit, expect);
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
        Exit::BadInput,
        &["on_nanosleep", "not XDP"],
    );
    w.slotctl(
        "a named program that does not exist",
        &["claim", &ifc, &path("xdp_pass"), "--program", "nosuch"],
        Exit::BadInput,
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
        Exit::NotFound,
        &["nosuch0 does not exist"],
    );
    w.slotctl_exactly(
        "a priority out of range",
        &["claim", &ifc, &pass, "--prio", "1001", "--backend", be],
        Exit::Usage,
        "slotctl: invalid value '1001' for '--prio <PRIO>': priorities run from 0 to 1000, lower first; see 'slotctl claim --help'",
    );
    // A negative priority is a value (not an option, not the object).
    w.slotctl_exactly(
        "a negative priority",
        &["claim", &ifc, &pass, "--prio", "-1"],
        Exit::Usage,
        "slotctl: invalid value '-1' for '--prio <PRIO>': priorities run from 0 to 1000, lower first; see 'slotctl claim --help'",
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
        Exit::Conflict,
        &["already used by slot 0"],
    );
    w.slotctl(
        "a name that is not valid",
        &["claim", &ifc, &pass, "--name", "no spaces!"],
        Exit::BadInput,
        &["is not valid"],
    );
    w.slotctl_exactly(
        "a release of a slot nobody holds",
        &["release", &ifc, "42"],
        Exit::NotFound,
        &format!(
            "slotctl: slot 42 on {ifc} is not held by anyone: nothing to release; 'slotctl status {ifc}' lists the claims"
        ),
    );
    w.slotctl_exactly(
        "a release of a slot that does not exist",
        &["release", &ifc, "100"],
        Exit::BadInput,
        "slotctl: slot 100 does not exist: slots are 0..=99",
    );
    w.slotctl(
        "a release of a claim name nobody uses",
        &["release", &ifc, "nosuch"],
        Exit::NotFound,
        &["no claim named nosuch"],
    );
    w.slotctl(
        "a detach while slots are claimed",
        &["detach", &ifc],
        Exit::Conflict,
        &["still has 2 claimed slot(s)"],
    );
    // Usage errors are clap's, on one line: exit 2.
    for args in [
        vec![
            "claim",
            ifc.as_str(),
            pass.as_str(),
            "--proceed-on",
            "bogus",
        ],
        vec!["claim", ifc.as_str(), pass.as_str(), "--backend", "bogus"],
        vec!["claim", ifc.as_str()],
        vec!["claim", ifc.as_str(), pass.as_str(), "--bogus"],
    ] {
        let what = format!("usage: {}", args.join(" "));
        w.slotctl(&what, &args, Exit::Usage, &["slotctl claim"]);
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
        Exit::Conflict,
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
        Exit::Conflict,
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
            Exit::KernelRefused,
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
        Exit::KernelRefused,
        &["xdp_pass_cfg"],
    );
    w.slotctl(
        "an extension whose signature does not match",
        &["chain", &ifc, &path("xdp_pass_cfg.o")],
        Exit::KernelRefused,
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
            Exit::Failure,
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
            Exit::Permission,
            &["permission denied", "as root"],
        );
    }
    // probe as nobody: refused, not a report of what nobody may do.
    let line = w.refused(
        "no privileges (probe)",
        |env| {
            let _in = env.pair.rx.enter().unwrap();
            Command::new(slotctl_path())
                .uid(65534)
                .gid(65534)
                .arg("probe")
                .output()
                .unwrap()
        },
        Exit::Permission,
        &[],
    );
    assert_eq!(
        line,
        "slotctl: permission denied: probing what the kernel permits needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN (have: none of them); run it as root (e.g. with sudo)"
    );
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
        assert_eq!(
            out.status.code(),
            Some(Exit::Damaged.code()),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        // The whole line, and the pin it points at exists.
        let control_pin = dir.join(pin::CONTROL);
        assert_eq!(
            err.trim_end(),
            format!(
                "slotctl: the state of {ifc} in {} is not ours or is damaged (control record has magic 0xbad version {v}, expected {:#x} version {v}); nothing was changed; inspect it with 'bpftool map dump pinned {}', and reset it with 'slotctl detach {ifc} --force' (this drops its claims)",
                dir.display(),
                dispatcher_common::CONTROL_MAGIC,
                control_pin.display(),
                v = dispatcher_common::LAYOUT_VERSION,
            ),
            "{args:?}"
        );
        assert!(control_pin.exists());
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
        assert_eq!(
            out.status.code(),
            Some(Exit::Damaged.code()),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        // A missing pin is said as such, and the advice lists what is
        // there instead of dumping what is not.
        assert_eq!(
            err.trim_end(),
            format!(
                "slotctl: the state of {ifc} in {d} is not ours or is damaged (its pin {d}/slots is missing); nothing was changed; inspect it with 'ls -l {d}', and reset it with 'slotctl detach {ifc} --force' (this drops its claims)",
                d = dir.display(),
            ),
            "{args:?}"
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
    // The documented way out: detach --force resets the interface, and
    // says the claims could not be listed.
    control.set(0, bad, 0).unwrap();
    let out = w.env.slotctl(&["detach", &ifc, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim_end(),
        format!(
            "detached the dispatcher from {ifc}; its state was damaged, so the claims it held could not be listed"
        )
    );
    assert!(!dir.exists());
    println!("figures: bad_input damaged_state tried={}", w.tried);
}

/// A held claim in a slotctl of its own (`--hold`), reported as claimed.
fn hold(env: &TestEnv, object: &str, prio: u32, name: &str) -> support::Proc {
    let args: Vec<String> = [
        "claim",
        &env.pair.rx_if,
        &path(object),
        "--prio",
        &prio.to_string(),
        "--name",
        name,
        "--hold",
        "--backend",
        backend_name(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = spawn_slotctl(env, None, &args);
    let line = p.first_line();
    assert!(line.contains("held until slotctl exits"), "{line}");
    p
}

/// The slot a claim of this name has, from status.
fn slot_of(env: &TestEnv, name: &str) -> usize {
    status(env)
        .claims
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no claim {name}"))
        .slot
}

#[test]
fn releases_say_which_claim_and_what_became_of_it() {
    let w = World::new();
    let env = &w.env;
    let ifc = w.ifc().to_string();
    // 1. The holder was SIGKILLed: the release frees its slot and says so,
    //    exit 0 (it used to log the freeing, then refuse with "not held by
    //    anyone" and exit 1).
    let holder = hold(env, "xdp_count", 30, "gone");
    let slot = slot_of(env, "gone");
    let pid = holder.pid();
    holder.kill();
    // As a person finds it a moment later: the kernel has freed the dead
    // holder's program (from a work queue), and status calls it stale.
    support::eventually(support::KERNEL_PATIENCE, || {
        match status(env).claims.iter().find(|c| c.name == "gone") {
            Some(c) if c.state == slots_runtime::ClaimState::Stale => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    let out = env.slotctl(&["release", &ifc, "gone"]);
    assert_eq!(out.status.code(), Some(Exit::Ok.code()), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim_end(),
        format!(
            "released slot {slot} (gone) on {ifc}: it was stale (its holder or its program was already gone)"
        )
    );
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "[INFO ] slot {slot} (gone) on {ifc}: its holder (pid {pid}) exited; freeing the slot"
        )
    );
    assert!(status(env).claims.iter().all(|c| c.name != "gone"));
    // Released once: the second time there is nothing to release.
    let out = env.slotctl(&["release", &ifc, "gone"]);
    assert_eq!(out.status.code(), Some(Exit::NotFound.code()));
    assert_eq!(
        stderr(&out).trim_end(),
        format!("slotctl: no claim named gone on {ifc}; 'slotctl status {ifc}' lists the claims")
    );
    // 2. A holder's own release names its slot and claim.
    let holder = hold(env, "xdp_count", 30, "mine");
    let slot = slot_of(env, "mine");
    holder.signal(libc::SIGTERM);
    let out = holder.output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        format!("released slot {slot} (mine) on {ifc}")
    );
    // 3. Released by force by someone else first: the holder does not
    //    claim the release as its own.
    let holder = hold(env, "xdp_count", 30, "taken");
    let slot = slot_of(env, "taken");
    let out = env.slotctl(&["release", &ifc, "taken", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim_end(),
        format!("released slot {slot} (taken) on {ifc}; it is reused once its holder exits")
    );
    holder.signal(libc::SIGTERM);
    let out = holder.output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "slot {slot} (taken) on {ifc} had been released by force ('slotctl release --force'); its slot is free now"
        )
    );
    // The two claims of the world are as they were.
    let names: Vec<String> = status(env).claims.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["keep", "held"]);
    assert_eq!(env.send(10), 10);
}

#[test]
fn counters_say_what_they_did() {
    let w = World::new();
    let ifc = w.ifc().to_string();
    for (state, line) in [
        (
            "on",
            format!("per-slot counters of {ifc} are on ('slotctl stats {ifc}' shows them)"),
        ),
        ("off", format!("per-slot counters of {ifc} are off")),
    ] {
        let out = w.env.slotctl(&["stats", &ifc, state]);
        assert_eq!(out.status.code(), Some(Exit::Ok.code()), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim_end(), line);
        assert_eq!(status(&w.env).stats, state == "on");
    }
}

#[test]
fn detach_force_names_the_claims_it_drops() {
    let w = World::new();
    let ifc = w.ifc().to_string();
    let me = std::process::id();
    let out = w.env.slotctl(&["detach", &ifc, "--force"]);
    assert_eq!(out.status.code(), Some(Exit::Ok.code()), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim_end(),
        format!(
            "detached the dispatcher from {ifc} and dropped 2 claim(s): keep (slot 0, persistent), held (slot 1, held by pid {me})"
        )
    );
    assert!(!iface_dir(&w.env).exists());
    assert_eq!(xdp_prog_on(&w.env, &ifc), None);
}

/// `ip link set dev <ifc> xdpgeneric obj <obj> sec xdp` in the rx
/// namespace: a foreign program attached through netlink.
fn attach_foreign(env: &TestEnv, ifc: &str, obj: &str) -> u32 {
    env.pair
        .rx
        .exec(&[
            "ip",
            "link",
            "set",
            "dev",
            ifc,
            "xdpgeneric",
            "obj",
            obj,
            "sec",
            "xdp",
        ])
        .unwrap();
    xdp_prog_on(env, ifc).expect("the foreign program is attached")
}

#[test]
fn a_foreign_program_is_named_with_how_to_detach_it() {
    let mut w = World::new();
    let other = second_interface(&w.env);
    let id = attach_foreign(&w.env, &other, &path("xdp_count_c.o"));
    let line = format!(
        "slotctl: {other} already runs a foreign XDP program (xdp_count_c, id {id}); it was left alone; detach it first ('xdp-loader unload {other} --all' if xdp-loader loaded it, else 'ip link set dev {other} xdp off'), or replace it with 'slotctl attach {other} --force'"
    );
    // The same line for claim (which has no --force) and attach.
    w.slotctl_exactly(
        "a claim on a foreign program's interface",
        &["claim", &other, &path("xdp_pass")],
        Exit::Conflict,
        &line,
    );
    w.slotctl_exactly(
        "an attach to a foreign program's interface",
        &["attach", &other],
        Exit::Conflict,
        &line,
    );
    assert_eq!(xdp_prog_on(&w.env, &other), Some(id));
    // attach --force says what it removes.
    let out = w.env.slotctl(&["attach", &other, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().next().unwrap(),
        format!("removed the foreign XDP program xdp_count_c (id {id}) from {other}")
    );
    assert_ne!(xdp_prog_on(&w.env, &other), Some(id));
    w.env.in_rx(|rt, _| rt.detach(&other, true)).unwrap();
}

/// libxdp's dispatcher as it ships (Debian's libxdp1).
const LIBXDP_DISPATCHER: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o";

#[test]
fn libxdps_dispatcher_is_never_removed_not_even_with_force() {
    if !std::path::Path::new(LIBXDP_DISPATCHER).exists() {
        println!("bad input: {LIBXDP_DISPATCHER} is not installed (libxdp1): skipped");
        return;
    }
    let mut w = World::new();
    let other = second_interface(&w.env);
    let id = attach_foreign(&w.env, &other, LIBXDP_DISPATCHER);
    // libxdp's pins for it, as libxdp lays them out under LIBXDP_BPFFS:
    // one program on it.
    let libxdp = PathBuf::from("/sys/fs/bpf").join(unique("slots-libxdp-"));
    let ifindex = w.env.in_rx(|_, _| Iface::resolve(&other).unwrap().ifindex);
    let pins = libxdp.join("xdp").join(format!("dispatch-{ifindex}-{id}"));
    std::fs::create_dir_all(&pins).unwrap();
    let mut ebpf = aya::Ebpf::load(progs::bytes("xdp_count_c.o")).unwrap();
    let prog: &mut aya::programs::Xdp =
        ebpf.program_mut("xdp_count_c").unwrap().try_into().unwrap();
    prog.load().unwrap();
    let prog_id = prog.info().unwrap().id();
    prog.pin(pins.join("prog0-prog")).unwrap();
    let line = format!(
        "slotctl: {other} runs libxdp's dispatcher (xdp_dispatcher, id {id}) with 1 program (xdp_count_c (id {prog_id})); it is not ours to remove, so it was left alone; remove it with 'xdp-loader unload {other} --all' (this unloads every program on it), then try again"
    );
    for args in [
        vec!["attach", other.as_str(), "--force"],
        vec!["attach", other.as_str()],
        vec!["claim", other.as_str(), &path("xdp_pass")],
    ] {
        let got = w.refused(
            &format!("libxdp's dispatcher ({})", args.join(" ")),
            |env| {
                let _in = env.pair.rx.enter().unwrap();
                Command::new(slotctl_path())
                    .env("LIBXDP_BPFFS", &libxdp)
                    .arg("--bpffs")
                    .arg(&env.root)
                    .args(&args)
                    .output()
                    .unwrap()
            },
            Exit::Conflict,
            &[],
        );
        assert_eq!(got, line);
        assert_eq!(xdp_prog_on(&w.env, &other), Some(id), "left alone");
    }
    let _ = std::fs::remove_dir_all(&libxdp);
}

#[test]
fn one_damaged_interface_does_not_hide_the_others() {
    let w = World::new();
    let ifc = w.ifc().to_string();
    let other = second_interface(&w.env);
    let out = w
        .env
        .slotctl(&["claim", &other, &path("xdp_pass"), "--name", "p"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = w.env.root.join(
        w.env
            .in_rx(|_, _| Iface::resolve(&other).unwrap().dir_name()),
    );
    let mut control: Array<MapData, Control> = Array::try_from(Map::Array(
        MapData::from_pin(dir.join(pin::CONTROL)).unwrap(),
    ))
    .unwrap();
    let good = control.get(&0, 0).unwrap();
    control
        .set(
            0,
            Control {
                magic: 0xbad,
                ..good
            },
            0,
        )
        .unwrap();
    let line = format!(
        "slotctl: the state of {other} in {d} is not ours or is damaged (control record has magic 0xbad version {v}, expected {:#x} version {v}); nothing was changed; inspect it with 'bpftool map dump pinned {d}/control', and reset it with 'slotctl detach {other} --force' (this drops its claims)",
        dispatcher_common::CONTROL_MAGIC,
        d = dir.display(),
        v = dispatcher_common::LAYOUT_VERSION,
    );
    // The table of the whole interface, the damaged one on stderr.
    let out = w.env.slotctl(&["status"]);
    assert_eq!(out.status.code(), Some(Exit::Damaged.code()));
    assert_eq!(stderr(&out).trim_end(), line);
    let shown = stdout(&out);
    assert!(shown.starts_with(&format!("{ifc} (ifindex ")), "{shown}");
    assert!(
        shown.contains(" keep ") && shown.contains(" held "),
        "{shown}"
    );
    // The same in JSON.
    let out = w.env.slotctl(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(Exit::Damaged.code()));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["interfaces"][0]["iface"], ifc.as_str());
    assert_eq!(v["errors"][0]["iface"], other.as_str());
    assert_eq!(
        format!("slotctl: {}", v["errors"][0]["error"].as_str().unwrap()),
        line
    );
    control.set(0, good, 0).unwrap();
    let out = w.env.slotctl(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    w.env.in_rx(|rt, _| rt.detach(&other, true)).unwrap();
}

#[test]
fn stale_state_is_replaced_saying_which_claims_went() {
    let w = World::new();
    let other = second_interface(&w.env);
    for (name, prio) in [("a", "10"), ("b", "20")] {
        let out = w.env.slotctl(&[
            "claim",
            &other,
            &path("xdp_pass"),
            "--name",
            name,
            "--prio",
            prio,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let dir = w.env.root.join(
        w.env
            .in_rx(|_, _| Iface::resolve(&other).unwrap().dir_name()),
    );
    // The link pin removed by hand: the dispatcher leaves the interface,
    // and the claims recorded in its state are gone with it.
    std::fs::remove_file(dir.join(pin::LINK)).unwrap();
    let out = w
        .env
        .slotctl(&["claim", &other, &path("xdp_pass"), "--name", "c"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "[WARN ] {other}: the dispatcher was no longer on the interface (the interface was re-created, or the link pin in {} removed), so its state was dropped with 2 claim(s): a (slot 0, persistent), b (slot 1, persistent)",
            dir.display()
        )
    );
    let names: Vec<String> = w
        .env
        .in_rx(|rt, _| rt.status(&other))
        .unwrap()
        .claims
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["c"]);
    w.env.in_rx(|rt, _| rt.detach(&other, true)).unwrap();
}
