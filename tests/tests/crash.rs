//! Crashes at every step, deterministically. slotctl is killed by SIGKILL
//! at each named crash point of the runtime (`slots_runtime::crash::POINTS`,
//! armed through `FAILPOINTS`), in each operation that passes it, with the
//! suite's backend. After every kill the next operation must find a whole
//! state: no half-made claim left active, nothing pinned or loaded that no
//! claim accounts for, and the two standing claims (one persistent, one
//! held by a live process) untouched and still running on every packet.
//!
//! A point that its operation does not reach fails the test, so the list
//! and the code cannot drift apart. With `SLOTS_STRESS=short` (the VM
//! suite) each point is crashed in one operation only.
mod support;

use std::{os::unix::process::ExitStatusExt as _, process::Output};

use integration_tests::{env::TestEnv, progs};
use slots_runtime::{Backend, ClaimState, SlotRef, crash::POINTS};
use support::{
    Landed, Proc, baseline, claim_args, collect_until_whole,
    counters::{count, counter_map},
    eventually, landed_in, listing, second_interface, size, spawn_slotctl, spawn_slotctl_with,
    status, stderr, stdout, traffic_reaches_every_claim,
};

/// The operation a crash point is hit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A persistent claim.
    Claim,
    /// A held claim (`--hold`), killed before it could hold anything.
    ClaimHeld,
    /// The release of a persistent claim.
    Release,
    /// A holder releasing its own claim on SIGTERM.
    HeldRelease,
    /// `release --force` of another process's held claim.
    ForcedRelease,
    /// The next claim collecting a claim whose holder was killed.
    Collect,
    /// A first claim on an interface: it attaches the dispatcher.
    Attach,
    /// `detach --force`.
    Detach,
    /// A persistent chain decision (freplace).
    Chain,
    /// `replace` of a persistent claim's program.
    Replace,
    /// `upgrade` of a layout-1 state (`support::layout1`), on an interface
    /// of its own: [`sigkill_at_every_step_of_an_upgrade_keeps_every_claim_running`].
    Upgrade,
}

/// (point, operation, only with this backend). The first case of each
/// point is the one the short run keeps.
const CASES: &[(&str, Op, Option<Backend>)] = &[
    ("attach::building", Op::Attach, None),
    ("attach::linked", Op::Attach, None),
    ("attach::built", Op::Attach, None),
    ("attach::renamed", Op::Attach, None),
    ("claim::mask", Op::Claim, None),
    ("claim::mask", Op::ClaimHeld, None),
    ("claim::loaded", Op::Claim, None),
    ("claim::loaded", Op::ClaimHeld, None),
    ("claim::recorded", Op::Claim, None),
    ("claim::recorded", Op::ClaimHeld, None),
    ("tailcall::filled", Op::ClaimHeld, Some(Backend::TailCall)),
    ("tailcall::filled", Op::Claim, Some(Backend::TailCall)),
    ("freplace::linked", Op::Claim, Some(Backend::Freplace)),
    ("freplace::linked", Op::ClaimHeld, Some(Backend::Freplace)),
    ("freplace::linked", Op::Chain, Some(Backend::Freplace)),
    ("claim::filled", Op::Claim, None),
    ("claim::filled", Op::ClaimHeld, None),
    // A new run order is the same for both backends: killed on the tail-call
    // backend here (and in the unit tests' in-memory kernel for both), it
    // spares the VMs four cases of slow grace periods.
    ("activate::staged", Op::ClaimHeld, Some(Backend::TailCall)),
    ("activate::staged", Op::Claim, Some(Backend::TailCall)),
    ("activate::flipped", Op::ClaimHeld, Some(Backend::TailCall)),
    ("activate::flipped", Op::Claim, Some(Backend::TailCall)),
    ("deactivate::staged", Op::Release, Some(Backend::TailCall)),
    ("deactivate::staged", Op::Collect, Some(Backend::TailCall)),
    (
        "deactivate::staged",
        Op::HeldRelease,
        Some(Backend::TailCall),
    ),
    ("deactivate::flipped", Op::Release, Some(Backend::TailCall)),
    ("deactivate::flipped", Op::Collect, Some(Backend::TailCall)),
    (
        "deactivate::flipped",
        Op::HeldRelease,
        Some(Backend::TailCall),
    ),
    ("claim::active", Op::ClaimHeld, None),
    ("claim::active", Op::Claim, None),
    ("retire::inactive", Op::Release, None),
    ("retire::inactive", Op::Collect, None),
    ("retire::inactive", Op::HeldRelease, None),
    ("tailcall::cleared", Op::Release, Some(Backend::TailCall)),
    ("tailcall::cleared", Op::Collect, Some(Backend::TailCall)),
    (
        "tailcall::cleared",
        Op::HeldRelease,
        Some(Backend::TailCall),
    ),
    ("retire::emptied", Op::Release, None),
    ("retire::emptied", Op::Collect, None),
    ("retire::emptied", Op::HeldRelease, None),
    ("release::forced", Op::ForcedRelease, None),
    ("replace::filled", Op::Replace, None),
    ("replace::staged", Op::Replace, None),
    ("replace::flipped", Op::Replace, None),
    ("replace::switched", Op::Replace, None),
    // a replace passes a claim's filling and a retirement's points too
    ("claim::recorded", Op::Replace, None),
    ("tailcall::filled", Op::Replace, Some(Backend::TailCall)),
    ("freplace::linked", Op::Replace, Some(Backend::Freplace)),
    ("retire::inactive", Op::Replace, None),
    ("tailcall::cleared", Op::Replace, Some(Backend::TailCall)),
    ("retire::emptied", Op::Replace, None),
    ("chain::linked", Op::Chain, Some(Backend::Freplace)),
    ("detach::unlinked", Op::Detach, None),
    ("upgrade::building", Op::Upgrade, None),
    ("upgrade::filled", Op::Upgrade, None),
    ("upgrade::linked", Op::Upgrade, None),
    ("upgrade::switched", Op::Upgrade, None),
    ("upgrade::exchanged", Op::Upgrade, None),
];

const PROGRAM: &str = "xdp_pass";

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn held(mut a: Vec<String>) -> Vec<String> {
    a.push("--hold".into());
    a
}

/// `FAILPOINTS` arming one point.
fn armed(point: &str) -> [(&'static str, String); 1] {
    [("FAILPOINTS", format!("{point}=return"))]
}

/// Runs slotctl with `point` armed and checks that it died there.
fn run_armed(env: &TestEnv, point: &str, op: Op, a: &[String]) {
    let vars = armed(point);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = spawn_slotctl_with(env, None, a, &vars).output();
    expect_killed(point, op, &o);
}

fn expect_killed(point: &str, op: Op, o: &Output) {
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGKILL),
        "{point} ({op:?}) was not reached (is slotctl built with the failpoints feature? \
         `cargo xtask test` builds it so): {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

fn run_ok(env: &TestEnv, a: &[String]) -> Output {
    let o = spawn_slotctl(env, None, a).output();
    assert!(o.status.success(), "slotctl {a:?}: {}", stderr(&o));
    o
}

/// A `--hold` claim, running once it has reported the claim.
fn holder(env: &TestEnv, a: &[String], vars: &[(&str, &str)]) -> Proc {
    let mut p = spawn_slotctl_with(env, None, &held(a.to_vec()), vars);
    let line = p.first_line();
    assert!(line.contains("\"slot\""), "no claim reported: {line:?}");
    p
}

/// Waits until program `id` is gone from the kernel (a dead holder's
/// program goes from a work queue).
fn gone(id: u32) {
    let r = eventually(support::KERNEL_PATIENCE, || {
        let live = aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .any(|p| p.id() == id);
        if live {
            Err(format!("program {id} still loaded"))
        } else {
            Ok(())
        }
    });
    r.unwrap_or_else(|e| panic!("{e}"));
}

/// Kills slotctl at `point` in `op`.
fn crash(env: &TestEnv, other: &str, point: &str, op: Op) {
    let ifc = env.pair.rx_if.clone();
    let victim = claim_args(env, PROGRAM, 50, "victim");
    match op {
        Op::Claim => run_armed(env, point, op, &victim),
        Op::ClaimHeld => run_armed(env, point, op, &held(victim)),
        Op::Release => {
            run_ok(env, &victim);
            run_armed(env, point, op, &args(&["release", &ifc, "victim"]));
        }
        Op::HeldRelease => {
            let vars = armed(point);
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let p = holder(env, &victim, &vars);
            p.signal(libc::SIGTERM);
            expect_killed(point, op, &p.output());
        }
        Op::ForcedRelease => {
            let p = holder(env, &victim, &[]);
            run_armed(
                env,
                point,
                op,
                &args(&["release", &ifc, "victim", "--force"]),
            );
            // The next operation runs while the holder still lives; it
            // goes once the state has been checked.
            after_next_operation(env, p);
        }
        Op::Collect => {
            let p = holder(env, &victim, &[]);
            let id = victim_prog_id(env);
            p.kill();
            gone(id);
            run_armed(env, point, op, &claim_args(env, PROGRAM, 60, "next"));
        }
        Op::Attach => {
            let _ = env.in_rx(|rt, _| rt.detach(other, true));
            let mut a = victim;
            a[1] = other.to_string();
            run_armed(env, point, op, &a);
            // The next operation on that interface: an attach, which must
            // find our own (dead) attach's leftovers, not a foreign program.
            let again = env.in_rx(|rt, _| rt.attach(other, Default::default()));
            let again = again.unwrap_or_else(|e| panic!("{point}: attach after the crash: {e}"));
            let side: Vec<String> = listing(&env.root)
                .into_iter()
                .filter(|p| p.contains("_new"))
                .collect();
            assert!(side.is_empty(), "{point}: left {side:?}");
            let st = env.in_rx(|rt, _| rt.status(other)).unwrap();
            assert!(st.claims.is_empty(), "{point}: {:?}", st.claims);
            assert!(again.prog_id > 0);
            env.in_rx(|rt, _| rt.detach(other, false)).unwrap();
        }
        Op::Detach => {
            env.in_rx(|rt, _| rt.attach(other, Default::default()))
                .unwrap();
            run_armed(env, point, op, &args(&["detach", other, "--force"]));
            let again = env.in_rx(|rt, _| rt.attach(other, Default::default()));
            again.unwrap_or_else(|e| panic!("{point}: attach after the crash: {e}"));
            env.in_rx(|rt, _| rt.detach(other, false)).unwrap();
        }
        Op::Replace => {
            run_ok(env, &victim);
            let old = victim_prog_id(env);
            let new = progs::path("xdp_count");
            run_armed(
                env,
                point,
                op,
                &args(&["replace", &ifc, "victim", new.to_str().unwrap()]),
            );
            // The next change finishes the replace or undoes it: one claim
            // named victim, running, with the old program or the new one.
            env.in_rx(|rt, i| rt.collect(i)).unwrap();
            let st = status(env);
            let named: Vec<_> = st.claims.iter().filter(|c| c.name == "victim").collect();
            assert_eq!(named.len(), 1, "{point}: {:?}", st.claims);
            assert!(named[0].active, "{point}: {:?}", named[0]);
            assert_eq!(named[0].state, ClaimState::Persistent, "{point}");
            let undone = named[0].prog_id == old;
            // Up to the switch the old program runs on; from it, the new.
            let switched = [
                "replace::flipped",
                "replace::switched",
                "retire::",
                "tailcall::cleared",
            ]
            .iter()
            .any(|p| point.starts_with(p));
            assert_eq!(undone, !switched, "{point}: {:?}", named[0]);
        }
        Op::Upgrade => unreachable!("upgrades crash in their own test"),
        Op::Chain => {
            let chain = progs::path("chain_stop.o");
            run_armed(
                env,
                point,
                op,
                &args(&["chain", &ifc, chain.to_str().unwrap()]),
            );
            // The next install replaces what the dead one left.
            let src = slots_runtime::ProgramSource::file(&chain, None).unwrap();
            let c = env.in_rx(|rt, i| rt.set_chain(i, &src, true)).unwrap();
            assert_eq!(status(env).custom_chain, Some(c.prog_id));
            env.in_rx(|rt, i| rt.clear_chain(i)).unwrap();
        }
    }
}

fn victim_prog_id(env: &TestEnv) -> u32 {
    status(env)
        .claims
        .iter()
        .find(|c| c.name == "victim")
        .map(|c| c.prog_id)
        .expect("the victim's claim")
}

/// For a forced release: the next operation finishes it (the slot drains
/// while its holder lives), then the holder goes.
fn after_next_operation(env: &TestEnv, holder: Proc) {
    env.in_rx(|rt, i| rt.collect(i)).unwrap();
    let st = status(env);
    let victim = st.claims.iter().find(|c| c.name == "victim");
    let victim = victim.expect("the forced release's claim");
    assert_eq!(victim.state, ClaimState::Draining, "{victim:?}");
    assert!(!victim.active, "{victim:?}");
    holder.kill();
}

/// The next operation: a claim (which collects first), then the checks.
fn next_operation(env: &TestEnv, point: &str, standing: &[Landed]) {
    // The victim's priority: the next claim lands in the slot the dead one
    // held or was filling, where a clear the kernel still had pending for
    // it would empty the new claim (the traffic check below would see it).
    let next = env.in_rx(|rt, i| rt.claim(i, &env.request(PROGRAM, 50)));
    let next = next.unwrap_or_else(|e| panic!("{point}: the next claim failed: {e}"));
    let st = collect_until_whole(env, &[]);
    let now = landed_in(&st);
    for s in standing {
        assert!(
            now.contains(s),
            "{point}: standing claim lost: {s:?} not in {now:?}"
        );
    }
    let arrived = traffic_reaches_every_claim(env, 5);
    assert_eq!(arrived, 5, "{point}: traffic through every claim");
    next.release().unwrap();
    // A claim that the kill left complete (killed after activation) stays
    // until released, like any persistent claim.
    for name in ["victim", "next"] {
        if status(env).claims.iter().any(|c| c.name == name) {
            env.in_rx(|rt, i| rt.release(i, &SlotRef::Name(name.into()), true))
                .unwrap();
        }
    }
    let st = collect_until_whole(env, &[]);
    assert_eq!(
        landed_in(&st).len(),
        standing.len(),
        "{point}: {:?}",
        st.claims
    );
}

#[test]
fn sigkill_at_every_crash_point_leaves_a_whole_state() {
    // apply's points are between whole operations: the apply suite kills
    // it there.
    for p in POINTS.iter().filter(|p| !p.starts_with("apply::")) {
        assert!(
            CASES.iter().any(|c| c.0 == *p),
            "crash point {p} has no case here"
        );
    }
    let short = size("CRASH_ALL_OPS", [0, 1, 1]) == 0;
    let base = baseline();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let other = second_interface(&env);

    run_ok(&env, &claim_args(&env, PROGRAM, 10, "standing"));
    let standing_holder = holder(&env, &claim_args(&env, PROGRAM, 90, "holder"), &[]);
    let st = status(&env);
    let backend = st.claims[0].backend;
    let standing: Vec<Landed> = landed_in(&st).into_iter().collect();
    assert_eq!(standing.len(), 2);

    let (mut points, mut cases) = (std::collections::BTreeSet::new(), 0);
    for &(point, op, only) in CASES {
        if only.is_some_and(|b| b != backend)
            || (short && points.contains(point))
            || op == Op::Upgrade
        {
            continue;
        }
        crash(&env, &other, point, op);
        next_operation(&env, point, &standing);
        points.insert(point);
        cases += 1;
    }

    drop(standing_holder);
    env.in_rx(|rt, i| rt.release(i, &SlotRef::Name("standing".into()), false))
        .unwrap();
    let st = collect_until_whole(&env, &[]);
    assert!(st.claims.is_empty(), "{:?}", st.claims);
    env.in_rx(|rt, _| rt.detach(&ifc, false)).unwrap();
    base.leaks(&[PROGRAM, "chain_stop", "xdp_count"], &[])
        .unwrap_or_else(|e| panic!("after every crash point: {e}"));
    println!(
        "figures: crash backend={} points={} cases={cases} leaked_programs=0 leaked_links=0",
        backend.as_str(),
        points.len()
    );
}

/// SIGKILL at every step of an upgrade of a layout-1 state, then the next
/// operation: whatever was killed, the interface runs the old dispatcher
/// or the new one with every persistent claim (both counting claims count
/// every datagram), and the next operation (a claim, which first settles a
/// dead upgrade, then an upgrade) leaves a whole layout-2 state with the
/// same claims, in the same order, and nothing of the old one: no pin, and
/// its dispatcher unloaded.
#[test]
fn sigkill_at_every_step_of_an_upgrade_keeps_every_claim_running() {
    let upgrade_points: Vec<&str> = CASES
        .iter()
        .filter(|c| c.1 == Op::Upgrade)
        .map(|c| c.0)
        .collect();
    assert!(!upgrade_points.is_empty());
    for point in upgrade_points {
        let env = TestEnv::new().unwrap();
        let (dir, ids) = support::layout1::three_claims(&env);
        let (old_prog, _) = support::layout1::object_ids(&dir);
        let ifc = env.pair.rx_if.clone();
        run_armed(&env, point, Op::Upgrade, &args(&["upgrade", &ifc]));
        let counting = ids[..2]
            .iter()
            .map(|&id| counter_map(id))
            .collect::<Vec<_>>();
        let before: Vec<u64> = counting.iter().map(count).collect();
        let arrived = env.send(20) as u64;
        assert_eq!(arrived, 20, "{point}");
        let delta: Vec<u64> = counting
            .iter()
            .zip(&before)
            .map(|(m, b)| count(m) - b)
            .collect();
        assert_eq!(delta, [arrived, arrived], "{point}: a claim missed packets");
        // The next operation: a claim settles the dead upgrade (finishing
        // it if the link was switched); it is refused while the state is
        // still layout 1. Then the upgrade, run again, completes.
        let _ = spawn_slotctl(&env, None, &claim_args(&env, PROGRAM, 20, "later")).output();
        let o = run_ok(&env, &args(&["upgrade", &ifc]));
        let st = support::check_whole(&env, &[]).unwrap_or_else(|e| panic!("{point}: {e}"));
        assert_eq!(st.layout, slots_runtime::LAYOUT_VERSION, "{point}");
        let carried: Vec<(&str, u32)> = st
            .claims
            .iter()
            .filter(|c| c.name != "later")
            .map(|c| (c.name.as_str(), c.prog_id))
            .collect();
        assert_eq!(
            carried,
            [("first", ids[0]), ("middle", ids[1]), ("last", ids[2])],
            "{point}: {}",
            stdout(&o)
        );
        assert_eq!(
            support::xdp_prog_on(&env, &ifc),
            Some(st.prog_id),
            "{point}"
        );
        gone(old_prog);
    }
}
