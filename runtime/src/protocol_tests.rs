//! The protocol (claim, release, collect) against the in-memory kernel of
//! `fake.rs`: ordering, collection rules, and a crash at every crash point
//! of every operation.
use dispatcher_common::{DEFAULT_PROCEED_ON, MAX_TAIL_CALLS};

use crate::{
    backend::Backend,
    claim::{Claimed, Prepared, claim},
    collect::collect,
    crash::{POINTS, sim},
    error::{Error, Result},
    fake::{Fake, Shared, Sim},
    objects::Objects,
    program::{Inspected, ProgramSource},
    record::SlotState,
    release::{SlotRef, release, release_own},
    replace::{Own, ProgramReplaced, replace},
};

fn take(
    p: &mut Fake,
    name: &str,
    prio: u32,
    persistent: bool,
    b: Backend,
) -> Result<Claimed<Fake>> {
    let prep = Prepared {
        ins: Inspected {
            name: name.into(),
            ..Inspected::default()
        },
        prio,
        proceed_on: DEFAULT_PROCEED_ON,
        name: name.into(),
        persistent,
        run_config_ignored: false,
    };
    claim(
        p,
        &ProgramSource::bytes("fake.o", Vec::new(), None),
        &prep,
        b,
    )
}

/// Replaces the claim `which` by a new program; `own` is the holder's
/// claim for a held one.
fn swap(
    p: &mut Fake,
    which: &str,
    own: Option<&mut Claimed<Fake>>,
) -> Result<(ProgramReplaced, Claimed<Fake>)> {
    let ins = Inspected {
        name: "v2".into(),
        ..Inspected::default()
    };
    let own = own.map(|c| Own {
        prog_id: c.prog_id,
        slot: c.slot,
        hold: &mut c.hold,
    });
    replace(
        p,
        &SlotRef::Name(which.into()),
        &ProgramSource::bytes("v2.o", Vec::new(), None),
        &ins,
        own,
    )
}

fn log(k: &Shared) -> Vec<String> {
    std::mem::take(&mut k.borrow_mut().log)
}

fn position(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|l| l == entry)
        .unwrap_or_else(|| panic!("{entry} not in {log:?}"))
}

#[test]
fn claim_records_then_fills_then_activates_and_release_reverses_it() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut p = Sim::spawn(&k);
        let c = take(&mut p, "fw", 50, false, b).unwrap();
        let n = c.slot;
        let l = log(&k);
        let recorded = position(&l, &format!("record {n} Ok(Held)"));
        let filled = position(&l, &format!("fill {n}"));
        let active = position(&l, &format!("activate {n}"));
        assert!(recorded < filled && filled < active, "{b}: {l:?}");
        k.borrow().check_whole();

        let r = release_own(&mut p, n, c.prog_id, c.hold.unwrap()).unwrap();
        assert_eq!(r, crate::OwnRelease::Released);
        let l = log(&k);
        let inactive = position(&l, &format!("deactivate {n}"));
        let emptied = position(&l, &format!("empty {n}"));
        let freed = position(&l, &format!("record {n} Ok(Free)"));
        assert!(inactive < emptied && emptied < freed, "{b}: {l:?}");
        k.borrow().check_whole();
    }
}

#[test]
fn a_new_claim_starts_with_zeroed_counters() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut p = Sim::spawn(&k);
        let c = take(&mut p, "counting", 50, false, b).unwrap();
        let n = c.slot;
        k.borrow_mut().count_packets(30);
        assert_eq!(k.borrow().counters[n], 30);
        release_own(&mut p, n, c.prog_id, c.hold.unwrap()).unwrap();
        // Packets after the release do not reach the slot.
        k.borrow_mut().count_packets(5);
        log(&k);
        let c = take(&mut p, "pass-only", 50, false, b).unwrap();
        assert_eq!(c.slot, n, "{b}: the freed slot is reused");
        assert_eq!(
            k.borrow().counters[n],
            0,
            "{b}: the previous holder's counts"
        );
        let l = log(&k);
        assert!(
            position(&l, &format!("zero {n}")) < position(&l, &format!("activate {n}")),
            "{b}: {l:?}"
        );
        k.borrow_mut().count_packets(2);
        assert_eq!(k.borrow().counters[n], 2);
        k.borrow().check_whole();
    }
}

#[test]
fn claims_in_any_arrival_order_run_in_priority_order() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut p = Sim::spawn(&k);
        let mut kept = Vec::new();
        for (i, prio) in [50, 10, 90, 30, 70, 50, 0, 1000, 20, 40]
            .into_iter()
            .enumerate()
        {
            kept.push(take(&mut p, &format!("c{i}"), prio, i % 2 == 0, b).unwrap());
            k.borrow().check_whole();
        }
        let c = p.control().unwrap();
        let pos = |name: &str| {
            let slot = kept.iter().find(|c| c.name == name).unwrap().slot;
            c.run_table().position(slot).unwrap()
        };
        assert!(
            pos("c0") < pos("c5"),
            "equal priorities run first come, first served"
        );
    }
}

/// Bisection order (150, 125, 175, 112, ...) and random order: every claim
/// succeeds up to the backend's capacity, whatever the arrival order, and
/// the run order is priority order.
#[test]
fn no_claim_is_refused_below_capacity_in_any_arrival_order() {
    fn bisection(lo: u32, hi: u32, out: &mut Vec<u32>) {
        if lo >= hi {
            return;
        }
        let mid = (lo + hi) / 2;
        out.push(mid);
        bisection(lo, mid, out);
        bisection(mid + 1, hi, out);
    }
    let mut bisected = Vec::new();
    bisection(100, 200, &mut bisected);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random: Vec<u32> = (0..dispatcher_common::SLOT_COUNT as u32)
        .map(|i| i * 10)
        .collect();
    for i in (1..random.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        random.swap(i, (state % (i as u64 + 1)) as usize);
    }
    for b in Backend::ALL {
        for prios in [&bisected, &random] {
            sim::arm(None);
            let k = Sim::new();
            let mut p = Sim::spawn(&k);
            let mut kept = Vec::new();
            for (i, &prio) in prios.iter().take(b.capacity()).enumerate() {
                let c = take(&mut p, &format!("c{i}"), prio, true, b)
                    .unwrap_or_else(|e| panic!("{b}: claim {i} at priority {prio}: {e}"));
                kept.push(c);
            }
            assert_eq!(kept.len(), b.capacity().min(prios.len()));
            k.borrow().check_whole();
            assert_eq!(p.control().unwrap().active_count() as usize, kept.len());
            // One grace period per change: the claims' activations.
            assert_eq!(k.borrow().quiesces, kept.len(), "{b}");
        }
    }
}

#[test]
fn names_are_unique_and_the_tail_call_budget_is_kept() {
    sim::arm(None);
    let k = Sim::new();
    let mut p = Sim::spawn(&k);
    let mut kept = vec![take(&mut p, "a", 50, true, Backend::TailCall).unwrap()];
    let Err(err) = take(&mut p, "a", 60, true, Backend::TailCall) else {
        panic!("a second claim named a");
    };
    assert!(
        matches!(err, Error::NameTaken { slot, .. } if slot == kept[0].slot),
        "{err}"
    );
    for i in 1..MAX_TAIL_CALLS {
        kept.push(
            take(
                &mut p,
                &format!("t{i}"),
                (i as u32 * 7) % 1000,
                true,
                Backend::TailCall,
            )
            .unwrap(),
        );
    }
    let Err(err) = take(&mut p, "one-more", 5, true, Backend::TailCall) else {
        panic!("a tail-call claim past the budget");
    };
    assert!(
        matches!(
            err,
            Error::BackendFull {
                active: MAX_TAIL_CALLS,
                ..
            }
        ),
        "{err}"
    );
    // The freplace backend has a slot for every claim.
    kept.push(take(&mut p, "ext", 5, true, Backend::Freplace).unwrap());
    k.borrow().check_whole();
}

#[test]
fn a_dead_holders_claim_is_collected_and_a_persistent_one_stays() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut holder = Sim::spawn(&k);
        let held = take(&mut holder, "held", 20, false, b).unwrap();
        let kept = take(&mut holder, "kept", 30, true, b).unwrap();
        k.borrow_mut().kill(holder.me.pid);
        k.borrow_mut().kernel_work();
        let mut other = Sim::spawn(&k);
        assert_eq!(collect(&mut other).unwrap(), vec![held.slot], "{b}");
        assert_eq!(
            other.record(kept.slot).unwrap().state,
            SlotState::Persistent
        );
        k.borrow().check_whole();
    }
}

#[test]
fn releasing_a_dead_holders_claim_reports_the_collection_as_its_release() {
    for b in Backend::ALL {
        for which in [SlotRef::Name("held".into()), SlotRef::Slot(0)] {
            sim::arm(None);
            let k = Sim::new();
            let mut holder = Sim::spawn(&k);
            let held = take(&mut holder, "held", 20, false, b).unwrap();
            assert_eq!(held.slot, 0);
            k.borrow_mut().kill(holder.me.pid);
            k.borrow_mut().kernel_work();
            let mut other = Sim::spawn(&k);
            let r = release(&mut other, &which, false).unwrap();
            assert_eq!((r.slot, r.name.as_str(), r.stale), (0, "held", true), "{b}");
            assert!(!r.draining);
            assert_eq!(other.record(0).unwrap().state, SlotState::Free);
            k.borrow().check_whole();
            // Released once: a second release finds nothing.
            assert!(release(&mut other, &which, false).is_err());
        }
    }
}

#[test]
fn a_holder_that_closed_its_files_but_is_not_yet_reaped_is_freed_not_drained() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut holder = Sim::spawn(&k);
        let held = take(&mut holder, "held", 20, false, b).unwrap();
        k.borrow_mut().exiting(holder.me.pid);
        k.borrow_mut().kernel_work();
        let mut other = Sim::spawn(&k);
        // Still in the run order, its program gone, its holder not reaped:
        // an exit, not a forced release that died half-way.
        assert_eq!(collect(&mut other).unwrap(), vec![held.slot], "{b}");
        assert_eq!(other.record(held.slot).unwrap().state, SlotState::Free);
        k.borrow().check_whole();
    }
}

#[test]
fn a_forced_release_drains_until_the_holder_exits() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut holder = Sim::spawn(&k);
        let held = take(&mut holder, "held", 20, false, b).unwrap();
        let mut other = Sim::spawn(&k);
        let err = release(&mut other, &SlotRef::Name("held".into()), false).unwrap_err();
        assert!(matches!(err, Error::HeldByOther { .. }), "{err}");
        let r = release(&mut other, &SlotRef::Name("held".into()), true).unwrap();
        assert!(r.draining);
        assert_eq!(other.record(held.slot).unwrap().state, SlotState::Draining);
        k.borrow().check_whole();
        // Not reused while draining: the same priority goes elsewhere.
        let next = take(&mut other, "next", 20, true, b).unwrap();
        assert_ne!(next.slot, held.slot);
        // The holder's own release then frees it.
        let r = release_own(&mut holder, held.slot, held.prog_id, held.hold.unwrap()).unwrap();
        assert_eq!(r, crate::OwnRelease::ForcedBefore);
        assert_eq!(other.record(held.slot).unwrap().state, SlotState::Free);
        k.borrow().check_whole();
    }
}

#[test]
fn a_replace_switches_positions_in_one_run_order_then_retires_the_old_slot() {
    for b in Backend::ALL {
        for persistent in [true, false] {
            sim::arm(None);
            let k = Sim::new();
            let mut p = Sim::spawn(&k);
            let low = take(&mut p, "low", 10, true, b).unwrap();
            let mut mid = take(&mut p, "mid", 50, persistent, b).unwrap();
            let high = take(&mut p, "high", 90, true, b).unwrap();
            log(&k);
            let quiesces = k.borrow().quiesces;
            let own = (!persistent).then_some(&mut mid);
            let (r, new) = swap(&mut p, "mid", own).unwrap();
            let what = format!("{b}, persistent {persistent}");
            let l = log(&k);
            // One control write takes the old slot out and puts the new one
            // in: the two log lines are adjacent.
            let on = position(&l, &format!("activate {}", r.new_slot));
            let off = l
                .iter()
                .position(|e| *e == format!("deactivate {}", r.old_slot))
                .unwrap_or_else(|| panic!("{what}: {l:?}"));
            assert_eq!(on.abs_diff(off), 1, "{what}: {l:?}");
            let filled = position(&l, &format!("fill {}", r.new_slot));
            let emptied = position(&l, &format!("empty {}", r.old_slot));
            assert!(
                filled < on.min(off) && on.max(off) < emptied,
                "{what}: {l:?}"
            );
            // One grace period: the switch's.
            assert_eq!(k.borrow().quiesces, quiesces + 1, "{what}");
            let c = p.control().unwrap();
            assert_eq!(
                c.run_table().slots(),
                &[low.slot as u8, r.new_slot as u8, high.slot as u8][..],
                "{what}"
            );
            assert_eq!((r.old_slot, r.position), (mid.slot, 1), "{what}");
            let rec = p.record(r.new_slot).unwrap();
            assert_eq!(rec.name, "mid");
            assert_eq!(rec.prio, 50);
            assert_eq!(rec.prog_id, new.prog_id);
            assert_eq!(rec.state == SlotState::Persistent, persistent, "{what}");
            assert_eq!(p.record(r.old_slot).unwrap().state, SlotState::Free);
            k.borrow_mut().kernel_work();
            k.borrow().check_whole();
            // The name names the new claim now.
            if persistent {
                let r2 = release(&mut p, &SlotRef::Name("mid".into()), false).unwrap();
                assert_eq!(r2.slot, r.new_slot);
            } else {
                let r2 = release_own(&mut p, new.slot, new.prog_id, new.hold.unwrap()).unwrap();
                assert_eq!(r2, crate::OwnRelease::Released, "{what}");
            }
            k.borrow().check_whole();
        }
    }
}

#[test]
fn a_replace_keeps_the_proceed_on_verdicts() {
    sim::arm(None);
    let k = Sim::new();
    let mut p = Sim::spawn(&k);
    let prep = |name: &str| Prepared {
        ins: Inspected {
            name: name.into(),
            ..Inspected::default()
        },
        prio: 50,
        proceed_on: 0b1010,
        name: name.into(),
        persistent: true,
        run_config_ignored: false,
    };
    let c = claim(
        &mut p,
        &ProgramSource::bytes("fake.o", Vec::new(), None),
        &prep("a"),
        Backend::TailCall,
    )
    .unwrap();
    let (r, _) = swap(&mut p, "a", None).unwrap();
    assert_ne!(r.new_slot, c.slot);
    assert_eq!(p.control().unwrap().proceed_on[r.new_slot], 0b1010);
}

#[test]
fn a_replace_is_refused_for_another_holders_claim_and_without_a_spare_slot() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut holder = Sim::spawn(&k);
        let held = take(&mut holder, "held", 20, false, b).unwrap();
        let mut other = Sim::spawn(&k);
        let err = swap(&mut other, "held", None).err().unwrap();
        assert!(
            matches!(err, Error::ReplaceHeldByOther { slot, .. } if slot == held.slot),
            "{err}"
        );
        let err = swap(&mut other, "nobody", None).err().unwrap();
        assert!(matches!(err, Error::NoSuchClaim { .. }), "{err}");
        // Every slot the backend can fill taken: no room for the new program.
        let fillable = (0..dispatcher_common::SLOT_COUNT)
            .filter(|&n| b.can_fill(n))
            .count();
        let mut kept = Vec::new();
        for i in 1..fillable.min(b.capacity()) {
            kept.push(take(&mut other, &format!("c{i}"), 30, true, b).unwrap());
        }
        if fillable <= b.capacity() {
            let err = swap(&mut other, "c1", None).err().unwrap();
            assert!(matches!(err, Error::NoSpareSlot { .. }), "{b}: {err}");
        } else {
            // The tail-call budget is reached, yet a replace needs no more
            // of it: the run order does not grow.
            let (r, _) = swap(&mut other, "c1", None).unwrap();
            assert!(p_active(&other, r.new_slot));
        }
        k.borrow().check_whole();
    }
}

#[test]
fn a_replace_of_a_free_slot_or_a_force_released_claim_finds_nothing_to_replace() {
    for b in Backend::ALL {
        sim::arm(None);
        let k = Sim::new();
        let mut holder = Sim::spawn(&k);
        let mut held = take(&mut holder, "held", 20, false, b).unwrap();
        let mut other = Sim::spawn(&k);
        let free = held.slot + 1;
        let err = replace(
            &mut other,
            &SlotRef::Slot(free),
            &ProgramSource::bytes("v2.o", Vec::new(), None),
            &Inspected::default(),
            None,
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, Error::NothingToReplace { slot, .. } if slot == free),
            "{err}"
        );
        release(&mut other, &SlotRef::Name("held".into()), true).unwrap();
        let err = swap(&mut holder, "held", Some(&mut held)).err().unwrap();
        assert!(matches!(err, Error::NothingToReplace { .. }), "{b}: {err}");
        k.borrow().check_whole();
    }
}

fn p_active(p: &Fake, n: usize) -> bool {
    p.control().unwrap().is_active(n)
}

/// What the crashing process does.
#[derive(Debug, Clone, Copy)]
enum Op {
    ClaimPersistent,
    ClaimHeld,
    ReleasePersistent,
    ReleaseOwnHeld,
    ForcedRelease,
    CollectDead,
    ReplacePersistent,
    ReplaceOwnHeld,
}

const OPS: [Op; 8] = [
    Op::ClaimPersistent,
    Op::ClaimHeld,
    Op::ReleasePersistent,
    Op::ReleaseOwnHeld,
    Op::ForcedRelease,
    Op::CollectDead,
    Op::ReplacePersistent,
    Op::ReplaceOwnHeld,
];

/// Runs `op` in a process that dies at `armed` (or at the end), then has
/// another process collect and claim, and checks that the state is whole
/// and the standing claims untouched. Returns the points `op` passed.
fn scenario(op: Op, b: Backend, armed: Option<&'static str>) -> Vec<&'static str> {
    sim::arm(None);
    let k = Sim::new();
    let mut standing_owner = Sim::spawn(&k);
    let standing = [
        take(&mut standing_owner, "low", 10, true, b).unwrap(),
        take(&mut standing_owner, "high", 90, false, b).unwrap(),
    ];
    let mut crasher = Sim::spawn(&k);
    let mut victim = Sim::spawn(&k);
    let mut crasher_claims = Vec::new();
    let mut victim_claims = Vec::new();
    match op {
        Op::ReleasePersistent | Op::ReplacePersistent => {
            crasher_claims.push(take(&mut crasher, "target", 50, true, b).unwrap())
        }
        Op::ReleaseOwnHeld | Op::ReplaceOwnHeld => {
            crasher_claims.push(take(&mut crasher, "target", 50, false, b).unwrap())
        }
        Op::ForcedRelease => victim_claims.push(take(&mut victim, "target", 50, false, b).unwrap()),
        Op::CollectDead => {
            victim_claims.push(take(&mut victim, "target", 50, false, b).unwrap());
            k.borrow_mut().kill(victim.me.pid);
            k.borrow_mut().kernel_work();
        }
        Op::ClaimPersistent | Op::ClaimHeld => {}
    }

    sim::arm(armed);
    let result = match op {
        Op::ClaimPersistent | Op::ClaimHeld => take(
            &mut crasher,
            "new",
            50,
            matches!(op, Op::ClaimPersistent),
            b,
        )
        .map(|c| crasher_claims.push(c)),
        Op::ReleasePersistent => {
            release(&mut crasher, &SlotRef::Name("target".into()), false).map(drop)
        }
        Op::ReleaseOwnHeld => {
            let c = crasher_claims.pop().unwrap();
            release_own(&mut crasher, c.slot, c.prog_id, c.hold.unwrap()).map(drop)
        }
        Op::ForcedRelease => release(&mut crasher, &SlotRef::Name("target".into()), true).map(drop),
        Op::CollectDead => collect(&mut crasher).map(drop),
        Op::ReplacePersistent => {
            swap(&mut crasher, "target", None).map(|(_, c)| crasher_claims.push(c))
        }
        Op::ReplaceOwnHeld => {
            let mut c = crasher_claims.pop().unwrap();
            let r = swap(&mut crasher, "target", Some(&mut c));
            crasher_claims.push(c);
            r.map(|(_, c)| crasher_claims.push(c))
        }
    };
    let passed = sim::passed();
    let what = format!("{op:?} on {b}, crash at {armed:?}");
    match armed {
        Some(_) => assert!(sim::crashed() && result.is_err(), "{what}: did not crash"),
        None => result.unwrap_or_else(|e| panic!("{what}: {e}")),
    }
    sim::arm(None);
    // The crasher dies (SIGKILL, or simply exits without releasing).
    k.borrow_mut().kill(crasher.me.pid);
    drop(crasher_claims);

    // The next process finds a whole state; its claim at the same priority
    // works, and survives the kernel's deferred work.
    let mut next = Sim::spawn(&k);
    collect(&mut next).unwrap_or_else(|e| panic!("{what}: collect: {e}"));
    if matches!(op, Op::ReplacePersistent) {
        // Exactly one of the old and the new program has the claim, at its
        // position between the standing claims.
        let named: Vec<usize> = (0..dispatcher_common::SLOT_COUNT)
            .filter(|&n| {
                let r = next.record(n).unwrap();
                !r.is_free() && r.name == "target"
            })
            .collect();
        assert_eq!(named.len(), 1, "{what}: {named:?}");
        let order = next.control().unwrap().run_table().slots().to_vec();
        assert_eq!(
            order,
            vec![
                standing[0].slot as u8,
                named[0] as u8,
                standing[1].slot as u8
            ],
            "{what}"
        );
    }
    let after =
        take(&mut next, "after", 50, true, b).unwrap_or_else(|e| panic!("{what}: claim: {e}"));
    k.borrow_mut().kernel_work();
    collect(&mut next).unwrap();
    let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| k.borrow().check_whole()));
    assert!(check.is_ok(), "{what}: state not whole");
    let rec = next.record(after.slot).unwrap();
    assert_eq!(rec.prog_id, after.prog_id, "{what}");
    for s in &standing {
        let rec = next.record(s.slot).unwrap();
        assert_eq!(
            rec.prog_id, s.prog_id,
            "{what}: standing claim {} lost",
            s.name
        );
        assert!(next.control().unwrap().is_active(s.slot), "{what}");
    }
    // The victim of a forced release exits too: its slot frees.
    k.borrow_mut().kill(victim.me.pid);
    drop(victim_claims);
    k.borrow_mut().kernel_work();
    collect(&mut next).unwrap();
    k.borrow().check_whole();
    passed
}

#[test]
fn a_crash_at_any_point_leaves_a_state_the_next_operation_makes_whole() {
    let mut reached = std::collections::BTreeSet::new();
    let mut cases = 0;
    for op in OPS {
        for b in Backend::ALL {
            let mut points = scenario(op, b, None);
            points.sort();
            points.dedup();
            for p in points {
                scenario(op, b, Some(p));
                reached.insert(p);
                cases += 1;
            }
        }
    }
    // Every point of the protocol is reached (attach, the chain decision,
    // detach and upgrade are outside it: the integration tests' crash
    // cases cover them against the kernel; apply is a sequence of its
    // operations).
    let outside = ["attach::", "chain::", "detach::", "upgrade::", "apply::"];
    for p in POINTS {
        if !outside.iter().any(|o| p.starts_with(o)) {
            assert!(reached.contains(p), "no scenario reaches {p}");
        }
    }
    assert!(cases > 40, "{cases} cases");
}
