//! Many slotctl processes at the same instant on one interface: claims,
//! releases, and both mixed. Each process waits at a gate (a pipe) and all
//! are let go together; afterwards every claim reported as made is in
//! status, in priority order, with its own program, none lost or
//! duplicated, and every refusal says why.
//!
//! Sizes: 8, 32 and 99 claimers; 24 releases; 16 releases mixed with 32
//! claims. `SLOTS_STRESS=short` (the VM suite, under emulation) takes 24
//! claimers instead of 99 and halves the others; `SLOTS_STRESS=long`
//! repeats each claim race with 5 seeds (`SLOTS_STRESS_RACE_ROUNDS`).
mod support;

use std::{collections::BTreeMap, time::Instant};

use integration_tests::env::TestEnv;
use slots_runtime::SlotRef;
use support::{
    Gate, Landed, Proc, Refusal, Rng, check_order, check_whole, claim_args,
    datapath_follows_the_run_order, landed_in, refusal_line, seed, size, spawn_slotctl, status,
    stderr, stdout, traffic_reaches_every_claim, wait_at_gate,
};

/// Priorities are drawn from 0..=100, so that equal priorities occur.
const PRIO_RANGE: u64 = 101;

/// What a group of claimers got.
#[derive(Default)]
struct Claims {
    landed: Vec<Landed>,
    refused: BTreeMap<Refusal, usize>,
}

impl Claims {
    /// Reads the claimers' results; every refusal must be one clear line
    /// with a known reason.
    fn collect(procs: Vec<(String, Proc)>) -> Self {
        let mut out = Self::default();
        for (name, p) in procs {
            let o = p.output();
            match o.status.code() {
                Some(0) => {
                    let l = Landed::parse(&stdout(&o));
                    assert_eq!(l.name, name);
                    out.landed.push(l);
                }
                Some(c) if c == slotctl::exit::Exit::Conflict.code() => {
                    let err = stderr(&o);
                    let why = Refusal::of(refusal_line(&err))
                        .unwrap_or_else(|| panic!("{name} failed for no known reason: {err}"));
                    *out.refused.entry(why).or_default() += 1;
                }
                _ => panic!("{name}: {:?}: {}", o.status, stderr(&o)),
            }
        }
        out
    }

    fn refused(&self, why: Refusal) -> usize {
        self.refused.get(&why).copied().unwrap_or(0)
    }
}

/// Starts one claimer per (name, prio), all waiting at `gate`.
fn claimers(env: &TestEnv, gate: &Gate, reqs: &[(String, u32)]) -> Vec<(String, Proc)> {
    claimers_of(env, gate, reqs, |_| "xdp_pass")
}

/// [`claimers`], each claiming the object `object(name)` names.
fn claimers_of(
    env: &TestEnv,
    gate: &Gate,
    reqs: &[(String, u32)],
    object: impl Fn(&str) -> &'static str,
) -> Vec<(String, Proc)> {
    reqs.iter()
        .map(|(name, prio)| {
            let args = claim_args(env, object(name), *prio, name);
            (name.clone(), spawn_slotctl(env, Some(gate), &args))
        })
        .collect()
}

/// The claims in status are exactly `expect`, whole and in order.
fn assert_exactly(env: &TestEnv, expect: &[Landed]) {
    let st = check_whole(env, &[]).unwrap_or_else(|e| panic!("{e}"));
    let got = landed_in(&st);
    let want: std::collections::BTreeSet<Landed> = expect.iter().cloned().collect();
    assert_eq!(want.len(), expect.len(), "a claim was reported twice");
    let lost: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "lost {lost:?}, not reported {extra:?}"
    );
}

/// The limits explain every refusal: the tail-call limit only once 33
/// tail-call claims are made, "all taken" only when every slot is.
fn assert_refusals_explained(c: &Claims) {
    if c.refused(Refusal::TailCallLimit) > 0 {
        assert_eq!(c.landed.len(), dispatcher_common::MAX_TAIL_CALLS);
    }
    if c.refused(Refusal::SlotsFull) > 0 {
        assert_eq!(c.landed.len(), dispatcher_common::SLOT_COUNT);
    }
}

/// `n` claimers at once with distinct random priorities (0..=1000): every
/// one succeeds up to the backend's capacity (the rest are refused for
/// that reason only), each is present once, the run order is priority
/// order, and the datapath follows it: the claimer with the median
/// priority drops, so every claim before it runs on each packet and none
/// after it does.
fn concurrent_claims(n: usize) {
    let rounds = size("RACE_ROUNDS", [1, 1, 5]);
    for round in 0..rounds {
        let mut rng = Rng::new(seed(&format!("races: {n} claimers, round {round}")));
        let env = TestEnv::new().unwrap();
        // The smallest group also races to attach the dispatcher.
        if n > 8 {
            env.in_rx(|rt, ifc| rt.attach(ifc, Default::default()))
                .unwrap();
        }
        let mut prios: Vec<u32> = Vec::new();
        while prios.len() < n {
            let p = rng.below(1001) as u32;
            if !prios.contains(&p) {
                prios.push(p);
            }
        }
        let reqs: Vec<(String, u32)> = prios
            .iter()
            .enumerate()
            .map(|(i, &p)| (format!("c{i}"), p))
            .collect();
        let mut sorted = prios.clone();
        sorted.sort();
        let median = sorted[n / 2];
        let dropper = reqs.iter().find(|(_, p)| *p == median).unwrap().0.clone();
        let mut gate = Gate::new();
        let procs = claimers_of(&env, &gate, &reqs, |name| {
            if name == dropper {
                "xdp_drop"
            } else {
                "xdp_pass"
            }
        });
        wait_at_gate(&procs.iter().map(|(_, p)| p).collect::<Vec<_>>());
        let start = Instant::now();
        gate.open();
        let c = Claims::collect(procs);
        let took = start.elapsed();
        assert_exactly(&env, &c.landed);
        assert_refusals_explained(&c);
        let capacity = status(&env).backend.capacity();
        assert_eq!(
            c.landed.len(),
            n.min(capacity),
            "every claim below the backend's capacity ({capacity}) succeeds"
        );
        let dropped = c.landed.iter().any(|l| l.name == dropper);
        let arrived = datapath_follows_the_run_order(&env, 20, dropped.then_some(dropper.as_str()));
        assert_eq!(arrived, if dropped { 0 } else { 20 });
        println!(
            "figures: races claims n={n} attempted={n} landed={} lost=0 duplicated=0 \
             refused_tail_call_limit={} refused_all_taken={} ms={}",
            c.landed.len(),
            c.refused(Refusal::TailCallLimit),
            c.refused(Refusal::SlotsFull),
            took.as_millis()
        );
    }
}

#[test]
fn eight_claimers_at_once() {
    concurrent_claims(8);
}

#[test]
fn thirty_two_claimers_at_once() {
    concurrent_claims(32);
}

#[test]
fn ninety_nine_claimers_at_once() {
    // Under emulation (the VM suite) 99 processes take minutes: 24 there.
    concurrent_claims(size("RACE_MAX", [24, 99, 99]));
}

/// Makes `n` persistent claims through the library, one after another.
fn persistent_claims(env: &TestEnv, rng: &mut Rng, n: usize, prefix: &str) -> Vec<Landed> {
    let mut made = Vec::new();
    for i in 0..n * 4 {
        if made.len() == n {
            break;
        }
        let mut req = env.request("xdp_pass", rng.below(PRIO_RANGE) as u32);
        req.name = Some(format!("{prefix}{i}"));
        req.persistent = true;
        if let Ok(c) = env.in_rx(|rt, ifc| rt.claim(ifc, &req)) {
            made.push(Landed {
                name: c.name.clone(),
                slot: c.slot,
                prio: c.prio,
                prog_id: c.prog_id,
            });
        }
    }
    made
}

#[test]
fn concurrent_releases_each_release_once() {
    let mut rng = Rng::new(seed("races: releases"));
    let env = TestEnv::new().unwrap();
    let n = size("RACE_RELEASES", [12, 24, 24]);
    let made = persistent_claims(&env, &mut rng, n, "r");
    assert_eq!(made.len(), n, "claims to release");
    // One releaser per claim, a second one for every fourth claim, and
    // releasers of free slots: all at once.
    let mut gate = Gate::new();
    let mut procs: Vec<(String, Proc)> = Vec::new();
    let release = |which: &str| {
        let args: Vec<String> = ["release", &env.pair.rx_if, which]
            .iter()
            .map(|s| s.to_string())
            .collect();
        spawn_slotctl(&env, Some(&gate), &args)
    };
    for (i, l) in made.iter().enumerate() {
        procs.push((l.name.clone(), release(&l.name)));
        if i % 4 == 0 {
            procs.push((l.name.clone(), release(&l.name)));
        }
    }
    let free: Vec<usize> = (0..dispatcher_common::SLOT_COUNT)
        .filter(|s| !made.iter().any(|l| l.slot == *s))
        .take(4)
        .collect();
    for s in &free {
        procs.push((format!("slot {s}"), release(&s.to_string())));
    }
    wait_at_gate(&procs.iter().map(|(_, p)| p).collect::<Vec<_>>());
    let attempted = procs.len();
    gate.open();
    let mut released: BTreeMap<String, usize> = BTreeMap::new();
    let (mut no_such, mut not_held) = (0, 0);
    for (what, p) in procs {
        let o = p.output();
        if o.status.success() {
            assert!(stdout(&o).contains("released slot"), "{}", stdout(&o));
            *released.entry(what).or_default() += 1;
            continue;
        }
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(slotctl::exit::Exit::NotFound.code()),
            "{what}: {err}"
        );
        let err = refusal_line(&err);
        if err.contains("no claim named") {
            no_such += 1;
        } else if err.contains("is not held by anyone") {
            not_held += 1;
        } else {
            panic!("{what}: unexpected refusal: {err}");
        }
    }
    for l in &made {
        assert_eq!(
            released.get(&l.name),
            Some(&1),
            "{} released exactly once",
            l.name
        );
    }
    assert_eq!(released.len(), made.len());
    assert_eq!(
        no_such,
        made.len().div_ceil(4),
        "every second releaser lost"
    );
    assert_eq!(not_held, free.len());
    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(st.claims.is_empty(), "{:?}", st.claims);
    assert_eq!(env.send(20), 20);
    println!(
        "figures: races releases attempted={attempted} claims={} released={} \
         refused_already_released={no_such} refused_free_slot={not_held}",
        made.len(),
        released.len()
    );
}

#[test]
fn concurrent_claims_and_releases_mixed() {
    let mut rng = Rng::new(seed("races: mixed"));
    let env = TestEnv::new().unwrap();
    let n = size("RACE_MIXED", [8, 16, 16]);
    let old = persistent_claims(&env, &mut rng, n, "old");
    assert_eq!(old.len(), n, "claims to release");
    let mut gate = Gate::new();
    let mut releasers = Vec::new();
    for l in &old {
        let args: Vec<String> = ["release", &env.pair.rx_if, &l.name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        releasers.push((l.name.clone(), spawn_slotctl(&env, Some(&gate), &args)));
    }
    let reqs: Vec<(String, u32)> = (0..2 * n)
        .map(|i| (format!("new{i}"), rng.below(PRIO_RANGE) as u32))
        .collect();
    let claim_procs = claimers(&env, &gate, &reqs);
    let all: Vec<&Proc> = releasers
        .iter()
        .chain(claim_procs.iter())
        .map(|(_, p)| p)
        .collect();
    wait_at_gate(&all);
    gate.open();
    for (name, p) in releasers {
        let o = p.output();
        assert!(o.status.success(), "releasing {name}: {}", stderr(&o));
    }
    let c = Claims::collect(claim_procs);
    assert_eq!(
        c.refused(Refusal::SlotsFull),
        0,
        "fewer claims than slots at any time"
    );
    assert_exactly(&env, &c.landed);
    check_order(&status(&env)).unwrap();
    if !c.landed.is_empty() {
        assert_eq!(traffic_reaches_every_claim(&env, 20), 20);
    }
    // The survivors can be released one by one afterwards.
    for l in &c.landed {
        env.in_rx(|rt, ifc| rt.release(ifc, &SlotRef::Name(l.name.clone()), false))
            .unwrap();
    }
    let st = status(&env);
    assert!(st.claims.is_empty());
    println!(
        "figures: races mixed releases={} claims_attempted={} landed={} lost=0 duplicated=0 \
         refused_tail_call_limit={}",
        old.len(),
        reqs.len(),
        c.landed.len(),
        c.refused(Refusal::TailCallLimit)
    );
}
