//! The runtime on a real kernel: real veth pairs in test-made namespaces,
//! real UDP packets, the suite's backend (`SLOTS_TEST_BACKEND`).
use std::time::{Duration, Instant};

use integration_tests::{
    env::{TestEnv, backend, backend_name, first_line, read_counter},
    progs,
};
use slots_runtime::{Backend, Error, ProgramSource, SlotRef, parse_mask};

const N: usize = 20;

/// Polls `f` until it holds, for up to a minute (the kernel empties a dead
/// holder's program array from a work queue: a few ms here, far longer
/// under emulation; only a failing check waits that long).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_claimed_drop_program_drops_and_its_release_restores_traffic() {
    let env = TestEnv::new().unwrap();
    assert_eq!(env.send(N), N, "traffic flows before any claim");
    let claim = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_drop", 20)))
        .unwrap();
    assert_eq!(env.send(N), 0, "xdp_drop in slot {} drops UDP", claim.slot);
    claim.release().unwrap();
    assert_eq!(env.send(N), N, "released slot passes traffic again");
    let status = env.in_rx(|rt, ifc| rt.status(ifc)).unwrap();
    assert!(status.claims.is_empty(), "{status:?}");
    assert_eq!(status.active_slots, 0);
}

#[test]
fn lower_priority_runs_first() {
    let env = TestEnv::new().unwrap();
    // count (10) before drop (20): the counter sees every packet, none arrive.
    let mut count = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_count", 10)))
        .unwrap();
    let drop = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_drop", 20)))
        .unwrap();
    assert!(
        count.slot < drop.slot,
        "slots {} and {}",
        count.slot,
        drop.slot
    );
    assert_eq!(env.send(N), 0);
    assert_eq!(read_counter(count.ebpf_mut()), N as u64);
    drop.release().unwrap();
    count.release().unwrap();

    // drop (5) before count (30): the counter never sees them.
    let drop = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_drop", 5)))
        .unwrap();
    let mut count = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_count", 30)))
        .unwrap();
    assert!(drop.slot < count.slot);
    assert_eq!(env.send(N), 0);
    assert_eq!(
        read_counter(count.ebpf_mut()),
        0,
        "drop ran first and ended the chain"
    );
    let status = env.in_rx(|rt, ifc| rt.status(ifc)).unwrap();
    let prios: Vec<u32> = status.claims.iter().map(|c| c.prio).collect();
    assert_eq!(prios, vec![5, 30], "status lists claims in run order");
}

#[test]
fn equal_priorities_run_first_come_first() {
    let env = TestEnv::new().unwrap();
    let a = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_pass", 40)))
        .unwrap();
    let mut b = env.request("xdp_count", 40);
    b.name = Some("second".into());
    let b = env.in_rx(|rt, ifc| rt.claim(ifc, &b)).unwrap();
    assert!(a.slot < b.slot);
}

#[test]
fn proceed_on_is_obeyed() {
    let env = TestEnv::new().unwrap();
    // drop first, but its DROP is a "go on" verdict: count runs, and the
    // chain ends with XDP_PASS.
    let mut req = env.request("xdp_drop", 10);
    req.proceed_on = Some(parse_mask("pass,drop").unwrap());
    let _drop = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap();
    let mut count = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_count", 20)))
        .unwrap();
    assert_eq!(env.send(N), N, "DROP was chained over");
    assert_eq!(read_counter(count.ebpf_mut()), N as u64);

    // pass first with an empty proceed-on mask: its PASS is final, the
    // counter behind it sees nothing.
    let env = TestEnv::new().unwrap();
    let mut req = env.request("xdp_pass", 10);
    req.proceed_on = Some(0);
    let _pass = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap();
    let mut count = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_count", 20)))
        .unwrap();
    assert_eq!(env.send(N), N);
    assert_eq!(
        read_counter(count.ebpf_mut()),
        0,
        "the chain stopped at the first slot"
    );
}

#[test]
fn a_c_object_brings_its_run_config() {
    let env = TestEnv::new().unwrap();
    let mut req = env.request("xdp_pass_cfg.o", 0);
    req.prio = None;
    let claim = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap();
    assert_eq!(claim.prio, 30, "priority from XDP_RUN_CONFIG");
    assert_eq!(
        claim.proceed_on,
        parse_mask("pass,drop").unwrap(),
        "chain actions from XDP_RUN_CONFIG"
    );
    // Arguments win over the metadata.
    let mut req = env.request("xdp_pass_cfg.o", 70);
    req.name = Some("cfg2".into());
    req.proceed_on = Some(parse_mask("pass").unwrap());
    let claim = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap();
    assert_eq!(
        (claim.prio, claim.proceed_on),
        (70, parse_mask("pass").unwrap())
    );
    // A C program counts like the Rust one.
    let mut count = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_count_c.o", 80)))
        .unwrap();
    assert_eq!(env.send(N), N);
    assert_eq!(read_counter(count.ebpf_mut()), N as u64);
}

#[test]
fn persistent_claims_outlive_their_handle_until_released() {
    let env = TestEnv::new().unwrap();
    let mut req = env.request("xdp_drop", 20);
    req.persistent = true;
    req.name = Some("fw".into());
    let claim = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap();
    let slot = claim.slot;
    drop(claim);
    assert_eq!(
        env.send(N),
        0,
        "persistent claim still drops after its handle is gone"
    );
    let status = env.in_rx(|rt, ifc| rt.status(ifc)).unwrap();
    assert_eq!(status.claims.len(), 1);
    assert!(
        status.claims[0].persistent
            && status.claims[0].state == slots_runtime::ClaimState::Persistent
    );
    let released = env
        .in_rx(|rt, ifc| rt.release(ifc, &SlotRef::Name("fw".into()), false))
        .unwrap();
    assert_eq!(released.slot, slot);
    assert_eq!(env.send(N), N);
    let err = env
        .in_rx(|rt, ifc| rt.release(ifc, &SlotRef::Slot(slot), false))
        .unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err}");
}

#[test]
fn a_held_claim_ends_with_its_process_even_on_sigkill() {
    let env = TestEnv::new().unwrap();
    let obj = progs::path("xdp_drop");
    let be = backend_name();
    let mut child = env.slotctl_spawn(&[
        "claim",
        &env.pair.rx_if,
        "--prio",
        "20",
        "--hold",
        "--backend",
        be,
        obj.to_str().unwrap(),
    ]);
    let line = first_line(&mut child);
    assert!(line.contains("claimed slot"), "slotctl said: {line:?}");
    assert_eq!(env.send(N), 0, "the holder's program drops");
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(
        eventually(|| env.send(5) == 5),
        "the kernel released the dead holder's slot"
    );
    // The next operation collects the stale record (once the kernel has
    // freed the dead holder's program, again from a work queue).
    assert!(eventually(|| env
        .in_rx(|rt, ifc| rt.collect(ifc))
        .unwrap()
        .len()
        == 1));
    let status = env.in_rx(|rt, ifc| rt.status(ifc)).unwrap();
    assert!(status.claims.is_empty());
}

#[test]
fn another_holders_claim_needs_force() {
    let env = TestEnv::new().unwrap();
    let obj = progs::path("xdp_drop");
    let mut child = env.slotctl_spawn(&[
        "claim",
        &env.pair.rx_if,
        "--prio",
        "20",
        "--hold",
        "--name",
        "theirs",
        obj.to_str().unwrap(),
    ]);
    assert!(first_line(&mut child).contains("claimed slot"));
    let out = env.slotctl(&["release", &env.pair.rx_if, "theirs"]);
    assert_eq!(
        out.status.code(),
        Some(slotctl::exit::Exit::Conflict.code())
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("held by process") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(env.send(N), 0, "a refused release changed nothing");
    let out = env.slotctl(&["release", &env.pair.rx_if, "theirs", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.send(N), N, "forced release stopped the program at once");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn attach_is_idempotent_and_detach_refuses_while_claimed() {
    let env = TestEnv::new().unwrap();
    let a = env
        .in_rx(|rt, ifc| rt.attach(ifc, Default::default()))
        .unwrap();
    let b = env
        .in_rx(|rt, ifc| rt.attach(ifc, Default::default()))
        .unwrap();
    assert!(a.new && !b.new);
    assert_eq!(a.prog_id, b.prog_id, "the same dispatcher is reused");
    let _c = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_pass", 50)))
        .unwrap();
    let err = env.in_rx(|rt, ifc| rt.detach(ifc, false)).unwrap_err();
    assert!(matches!(err, Error::SlotsInUse { count: 1, .. }), "{err}");
    env.in_rx(|rt, ifc| rt.detach(ifc, true)).unwrap();
    let dir = env.in_rx(|_, ifc| slots_runtime::Iface::resolve(ifc).unwrap().dir_name());
    assert!(
        !env.root.join(dir).exists(),
        "detach removed the interface's state"
    );
}

#[test]
fn auto_backend_says_what_it_chose() {
    let env = TestEnv::new().unwrap();
    let a = env
        .in_rx(|rt, ifc| {
            // Default options: the backend is probed.
            rt.attach(ifc, slots_runtime::AttachOptions::default())
        })
        .unwrap();
    let probe = slots_runtime::Backend::Freplace.probe();
    match probe {
        Ok(()) => {
            assert_eq!(a.backend, Backend::Freplace);
            assert!(a.passed_over.is_empty(), "{:?}", a.passed_over);
        }
        Err(_) => {
            assert_eq!(a.backend, Backend::TailCall);
            let passed: Vec<Backend> = a.passed_over.iter().map(|(b, _)| *b).collect();
            assert_eq!(
                passed,
                [Backend::Freplace],
                "the reason freplace was passed over"
            );
        }
    }
}

#[test]
fn forcing_freplace_where_the_kernel_refuses_it_is_a_clear_error() {
    if slots_runtime::Backend::Freplace.probe().is_ok() {
        return; // this kernel allows extensions: covered by the VM suite
    }
    let env = TestEnv::new().unwrap();
    let mut req = env.request("xdp_drop", 20);
    req.backend = Some(Backend::Freplace);
    let err = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BackendUnsupported {
                backend: Backend::Freplace,
                ..
            }
        ),
        "{err}"
    );
    // The probe's finding is the cause.
    let cause = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert!(!cause.is_empty(), "{err}");
    assert!(
        !env.root.exists() || std::fs::read_dir(&env.root).unwrap().next().is_none(),
        "nothing was attached"
    );
}

#[test]
fn a_program_object_from_a_file_works_too() {
    let env = TestEnv::new().unwrap();
    let src = ProgramSource::file(progs::path("xdp_drop"), None).unwrap();
    let mut req = slots_runtime::ClaimRequest::new(src);
    req.backend = backend();
    let _c = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap();
    assert_eq!(env.send(N), 0);
}
