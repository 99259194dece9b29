//! Crashes at random moments (a storm for `cargo xtask stress`; the
//! deterministic crash coverage is tests/crash.rs), and crashes whose
//! leftovers are made by hand. slotctl claimers (persistent and held), releasers
//! and first attaches are killed with SIGKILL after a random delay spread
//! over their whole run, so kills land before the load, between loading the
//! program and activating the slot, half-way through a release, and in the
//! middle of attaching the dispatcher. After the next operation has
//! collected: every active slot has a live program, every record has a live
//! owner or is persistent, nothing is left in bpffs or in the kernel that no
//! claim accounts for, and the slots that remain pass packets.
//!
//! 200 rounds by default, 30 with `SLOTS_STRESS=short` (the VM suite),
//! 2000 with `SLOTS_STRESS=long` (`SLOTS_STRESS_FAULT_ROUNDS` sets it).
mod support;

use std::{
    collections::BTreeSet,
    os::unix::process::ExitStatusExt as _,
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use dispatcher_common::{Control, SlotConfig};
use integration_tests::env::TestEnv;
use slots_runtime::{Iface, pin};
use support::{
    Refusal, Rng, baseline, check_whole, claim_args, collect_until_whole, iface_dir, listing,
    refusal_line, second_interface, seed, size, spawn_slotctl, status, stderr,
    traffic_reaches_every_claim,
};

const PROGRAM: &str = "xdp_pass";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Persistent,
    Held,
    Release,
    /// Detach first, so that the claim has to attach the dispatcher.
    AttachAndClaim,
}

#[derive(Default, Debug)]
struct Figures {
    rounds: usize,
    persistent: usize,
    held: usize,
    release: usize,
    attach: usize,
    killed: usize,
    finished: usize,
    refused: usize,
    /// Kills that left a claim or release half done: a record written but
    /// its slot not (or no longer) active.
    half_done_records: usize,
    /// Kills that left an attach's side directory.
    half_done_attaches: usize,
    /// Held claims killed after they were made.
    killed_holders: usize,
    checkpoints: usize,
    /// Claims found whole at the checkpoints, summed.
    claims_at_checkpoints: usize,
    /// Kills timed by watching the maps rather than by a random delay.
    at_record: usize,
}

/// Has a record named `name` been written to the `slots` map? (Read
/// without the lock, while the claimer holds it.)
fn record_written(dir: &Path, name: &str) -> bool {
    let Ok(data) = MapData::from_pin(dir.join(pin::SLOTS)) else {
        return false;
    };
    let Ok(slots) = Array::<MapData, SlotConfig>::try_from(Map::Array(data)) else {
        return false;
    };
    slots.iter().filter_map(|r| r.ok()).any(|c| {
        c.state != dispatcher_common::STATE_FREE
            && c.name.starts_with(name.as_bytes())
            && c.name.get(name.len()) == Some(&0)
    })
}

/// Is `slot`'s active bit set in the `control` map?
fn slot_active(dir: &Path, slot: usize) -> bool {
    let Ok(data) = MapData::from_pin(dir.join(pin::CONTROL)) else {
        return false;
    };
    let Ok(control) = Array::<MapData, Control>::try_from(Map::Array(data)) else {
        return false;
    };
    control.get(&0, 0).is_ok_and(|c| c.is_active(slot))
}

/// Wall time of a slotctl run, in microseconds.
fn timed(env: &TestEnv, args: &[String]) -> u64 {
    let p = spawn_slotctl(env, None, args);
    let start = p.started;
    let o = p.output();
    assert!(o.status.success(), "{}", stderr(&o));
    start.elapsed().as_micros() as u64
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Makes sure the dispatcher is attached to `ifc` (after a killed first
/// attach, this also removes what that attach left).
fn attached(env: &TestEnv, ifc: &str) {
    env.in_rx(|rt, _| rt.attach(ifc, Default::default()))
        .unwrap();
}

/// Priorities of the claims that stand through the whole run.
const STANDING: [u32; 6] = [5, 25, 45, 65, 85, 100];

/// The tests of this file run one at a time: the crash test accounts for
/// every BPF program in the kernel, which the others load and unload.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
#[ignore = "a random-time SIGKILL storm: `cargo xtask stress` runs it; the gate's crash coverage is tests/crash.rs"]
fn sigkill_at_any_moment_leaves_a_whole_state() {
    let _one_at_a_time = serial();
    let rounds = size("FAULT_ROUNDS", [30, 200, 2000]);
    let mut rng = Rng::new(seed("faults"));
    let base = baseline();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let other = second_interface(&env);
    let other_dir = env.in_rx(|_, _| Iface::resolve(&other).unwrap().dir_name());
    attached(&env, &ifc);

    // How long a claim and a first attach take here: kills are spread over
    // 1.3 times that.
    let mut claim_us: Vec<u64> = (0..3)
        .map(|i| {
            let t = timed(&env, &claim_args(&env, PROGRAM, 50, &format!("cal{i}")));
            timed(&env, &args(&["release", &ifc, &format!("cal{i}")]));
            t
        })
        .collect();
    claim_us.sort();
    let claim_us = claim_us[1];
    let first_claim = |name: &str, prio: u32| {
        let mut a = claim_args(&env, PROGRAM, prio, name);
        a[1] = other.clone();
        a
    };
    let attach_us = timed(&env, &first_claim("cal", 50));
    env.in_rx(|rt, _| rt.detach(&other, true)).unwrap();
    for (k, prio) in STANDING.iter().enumerate() {
        timed(
            &env,
            &claim_args(&env, PROGRAM, *prio, &format!("standing{k}")),
        );
    }

    let mut f = Figures::default();
    let mut side_dirs = BTreeSet::new();
    let mut half_done = BTreeSet::new();
    // After a held claim killed half-way, the next claim asks for the same
    // priority, so that it lands in the slot the dead one was filling.
    let mut same_prio: Option<u32> = None;
    let started = Instant::now();
    for round in 0..rounds {
        f.rounds += 1;
        let persistent: Vec<String> = status(&env)
            .claims
            .iter()
            .filter(|c| {
                c.state == slots_runtime::ClaimState::Persistent
                    && c.active
                    && c.name.starts_with('k')
            })
            .map(|c| c.name.clone())
            .collect();
        let op = if round % 20 == 19 {
            Op::AttachAndClaim
        } else if same_prio.is_some() {
            Op::Persistent
        } else if persistent.len() >= 20 || (!persistent.is_empty() && rng.chance(20)) {
            Op::Release
        } else if rng.chance(30) {
            Op::Held
        } else {
            Op::Persistent
        };
        let name = format!("k{round}");
        let prio = same_prio.take().unwrap_or_else(|| rng.below(101) as u32);
        let (cmd, window) = match op {
            Op::Persistent => {
                f.persistent += 1;
                (claim_args(&env, PROGRAM, prio, &name), claim_us)
            }
            Op::Held => {
                f.held += 1;
                let mut a = claim_args(&env, PROGRAM, prio, &name);
                a.push("--hold".into());
                (a, claim_us)
            }
            Op::Release => {
                f.release += 1;
                let victim = &persistent[rng.below(persistent.len() as u64) as usize];
                (args(&["release", &ifc, victim]), claim_us)
            }
            Op::AttachAndClaim => {
                f.attach += 1;
                let _ = env.in_rx(|rt, _| rt.detach(&other, true));
                (first_claim(&name, prio), attach_us)
            }
        };
        // A third of the kills wait for the moment the record is written
        // (a claim) or the slot deactivated (a release): the middle of the
        // operation, which a random delay rarely hits.
        let at_record = op != Op::AttachAndClaim && rng.chance(33);
        let release_slot = (op == Op::Release)
            .then(|| {
                let victim = cmd.last().unwrap().clone();
                status(&env).claims.into_iter().find(|c| c.name == victim)
            })
            .flatten()
            .map(|c| c.slot);
        let delay = Duration::from_micros(rng.below(window * 13 / 10));
        let p = spawn_slotctl(&env, None, &cmd);
        if at_record {
            f.at_record += 1;
            let dir = iface_dir(&env);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let hit = match release_slot {
                    Some(slot) => !slot_active(&dir, slot),
                    None => record_written(&dir, &name),
                };
                if hit {
                    break;
                }
            }
        } else {
            let wake = p.started + delay;
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
        let o = p.kill();
        match (o.status.signal(), o.status.code()) {
            (Some(libc::SIGKILL), _) => {
                f.killed += 1;
                if op == Op::Held && at_record {
                    same_prio = Some(prio);
                }
                if op == Op::Held && !o.stdout.is_empty() {
                    f.killed_holders += 1;
                }
            }
            (_, Some(0)) => f.finished += 1,
            (_, Some(c)) if c == slotctl::exit::Exit::Conflict.code() => {
                let err = stderr(&o);
                assert!(
                    Refusal::of(refusal_line(&err)).is_some(),
                    "round {round} ({op:?}): unexpected failure: {err}"
                );
                f.refused += 1;
            }
            _ => panic!("round {round} ({op:?}): {:?}: {}", o.status, stderr(&o)),
        }
        // What the kill left, before anyone collects it.
        if let Ok(st) = env.in_rx(|rt, i| rt.status(i)) {
            half_done.extend(
                st.claims
                    .iter()
                    .filter(|c| c.state == slots_runtime::ClaimState::Stale && !c.active)
                    .map(|c| (c.slot, c.prog_id)),
            );
        }
        side_dirs.extend(
            listing(&env.root).into_iter().filter(|p| {
                p.ends_with('/') && !p[..p.len() - 1].contains('/') && p.contains("_new")
            }),
        );
        if round % 20 == 19 {
            f.checkpoints += 1;
            attached(&env, &other);
            let st = collect_until_whole(&env, &[&other_dir]);
            f.claims_at_checkpoints += st.claims.len();
            assert_eq!(traffic_reaches_every_claim(&env, 10), 10, "round {round}");
        }
    }
    f.half_done_attaches = side_dirs.len();
    f.half_done_records = half_done.len();
    // The second interface: attach (which removes what a killed attach
    // left), then detach; its directory is gone.
    attached(&env, &other);
    env.in_rx(|rt, _| rt.detach(&other, true)).unwrap();
    let st = collect_until_whole(&env, &[]);
    assert!(st.claims.len() >= STANDING.len());
    let remaining = st.claims.len();
    assert_eq!(
        traffic_reaches_every_claim(&env, 20),
        20,
        "the remaining slots pass packets"
    );
    for c in &st.claims {
        let o = spawn_slotctl(&env, None, &args(&["release", &ifc, &c.name])).output();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let st = collect_until_whole(&env, &[]);
    assert!(st.claims.is_empty());
    assert_eq!(env.send(20), 20);
    base.leaks(&[PROGRAM], &[])
        .unwrap_or_else(|e| panic!("after {} rounds: {e}", f.rounds));
    println!(
        "figures: faults rounds={} persistent_claims={} held_claims={} releases={} \
         first_attaches={} killed={} finished_first={} refused={} half_done_records={} \
         half_done_attaches={} killed_holders={} kills_at_record={} checkpoints={} claims_at_checkpoints={} remaining_claims={remaining} \
         leaked_programs=0 leaked_links=0 leaked_pins=0 claim_ms={:.1} attach_ms={:.1} s={:.1}",
        f.rounds,
        f.persistent,
        f.held,
        f.release,
        f.attach,
        f.killed,
        f.finished,
        f.refused,
        f.half_done_records,
        f.half_done_attaches,
        f.killed_holders,
        f.at_record,
        f.checkpoints,
        f.claims_at_checkpoints,
        claim_us as f64 / 1000.0,
        attach_us as f64 / 1000.0,
        started.elapsed().as_secs_f64()
    );
    // How many finished before their kill depends on the machine's speed
    // (under emulation none may): a figure, not a check.
    assert!(f.killed > 0, "{f:?}");
}

/// A first attach killed after it attached the dispatcher but before it
/// renamed its side directory into place: the next attach removes that
/// directory (and with it the link), instead of taking its own dispatcher
/// for a foreign program forever.
#[test]
fn an_attach_killed_before_its_rename_does_not_wedge_the_interface() {
    let _one_at_a_time = serial();
    let env = TestEnv::new().unwrap();
    let first = env
        .in_rx(|rt, ifc| rt.attach(ifc, Default::default()))
        .unwrap();
    let dir = iface_dir(&env);
    // What the dead attach left: everything pinned, under its side name.
    let side = env.root.join(format!(
        "{}_new{}",
        dir.file_name().unwrap().to_string_lossy(),
        u32::MAX
    ));
    std::fs::rename(&dir, &side).unwrap();
    let claim = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_drop", 20)))
        .unwrap();
    assert!(!side.exists(), "the dead attach's directory is gone");
    check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    let now = env
        .in_rx(|rt, ifc| rt.attach(ifc, Default::default()))
        .unwrap();
    assert!(!now.new);
    assert_ne!(
        now.prog_id, first.prog_id,
        "a fresh dispatcher was attached"
    );
    assert_eq!(env.send(10), 0, "the new claim's program runs");
    claim.release().unwrap();
    assert_eq!(env.send(10), 10);
}

/// Rewrites the pinned records as a process killed at that point would
/// have left them.
fn edit_state(env: &TestEnv, edit: impl FnOnce(&mut Control, &mut Vec<SlotConfig>)) {
    let dir = iface_dir(env);
    let mut control: Array<MapData, Control> = Array::try_from(Map::Array(
        MapData::from_pin(dir.join(pin::CONTROL)).unwrap(),
    ))
    .unwrap();
    let mut slots: Array<MapData, SlotConfig> =
        Array::try_from(Map::Array(MapData::from_pin(dir.join(pin::SLOTS)).unwrap())).unwrap();
    let mut c = control.get(&0, 0).unwrap();
    let mut s: Vec<SlotConfig> = (0..dispatcher_common::SLOT_COUNT as u32)
        .map(|n| slots.get(&n, 0).unwrap())
        .collect();
    edit(&mut c, &mut s);
    control.set(0, c, 0).unwrap();
    for (n, cfg) in s.into_iter().enumerate() {
        slots.set(n as u32, cfg, 0).unwrap();
    }
}

fn freplace_available() -> bool {
    slots_runtime::Backend::Freplace.probe().is_ok()
}

/// A persistent freplace claim killed after pinning its extension link and
/// before writing its record: the next operation unlinks the extension, so
/// the slot can be claimed again (one extension per function) and never
/// runs the dead claim's program.
#[test]
fn an_extension_pinned_before_its_record_is_unlinked() {
    let _one_at_a_time = serial();
    if !freplace_available() {
        println!("faults: unrecorded extension: skipped, this kernel refuses freplace");
        return;
    }
    let env = TestEnv::new().unwrap();
    let mut req = env.request("xdp_drop", 20);
    req.backend = Some(slots_runtime::Backend::Freplace);
    req.persistent = true;
    let slot = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap().slot;
    assert!(iface_dir(&env).join(pin::ext(slot)).exists());
    edit_state(&env, |c, s| {
        let order: Vec<usize> = c
            .run_table()
            .slots()
            .iter()
            .map(|&n| n as usize)
            .filter(|&n| n != slot)
            .collect();
        c.set_run_order(&order);
        s[slot] = SlotConfig::FREE;
    });
    assert_eq!(env.send(10), 10);
    // The same priority lands in the same slot.
    let mut req = env.request("xdp_count", 20);
    req.backend = Some(slots_runtime::Backend::Freplace);
    let mut count = env.in_rx(|rt, ifc| rt.claim(ifc, &req)).unwrap();
    assert_eq!(count.slot, slot);
    check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(env.send(10), 10, "the dead claim's xdp_drop is gone");
    assert_eq!(integration_tests::env::read_counter(count.ebpf_mut()), 10);
}

/// A persistent chain decision killed after pinning its link and before
/// setting its flag: the next install replaces it instead of failing on
/// the leftover link forever.
#[test]
fn a_chain_pinned_before_its_flag_is_replaced() {
    let _one_at_a_time = serial();
    if !freplace_available() {
        println!("faults: unflagged chain decision: skipped, this kernel refuses freplace");
        return;
    }
    let env = TestEnv::new().unwrap();
    let chain = slots_runtime::ProgramSource::bytes(
        "chain_stop.o",
        integration_tests::progs::bytes("chain_stop.o"),
        None,
    );
    let _pass = env
        .in_rx(|rt, ifc| rt.claim(ifc, &env.request("xdp_pass", 10)))
        .unwrap();
    env.in_rx(|rt, ifc| rt.set_chain(ifc, &chain, true))
        .unwrap();
    edit_state(&env, |c, _| {
        c.flags &= !dispatcher_common::FLAG_CUSTOM_CHAIN;
        c.chain_prog_id = 0;
    });
    let again = env
        .in_rx(|rt, ifc| rt.set_chain(ifc, &chain, true))
        .unwrap();
    assert_eq!(status(&env).custom_chain, Some(again.prog_id));
    env.in_rx(|rt, ifc| rt.clear_chain(ifc)).unwrap();
    assert!(!iface_dir(&env).join("chain").exists());
    check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
}
