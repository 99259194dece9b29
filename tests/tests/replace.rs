//! Replacing a claim's program under traffic: UDP datagrams flow over the
//! veth pair while the program of a claim in the middle of the chain is
//! replaced, again and again, by another counting program with its own
//! counter. A counter first in the chain counts every packet that reached
//! the dispatcher. No packet may meet neither program or both: the counts
//! of the programs that held the claim add up to the first counter's,
//! exactly. The counts are read once the datagrams are all accounted for
//! (arrived at the receiving end's XDP or dropped before it), so nothing
//! here depends on how long anything takes.
mod support;

use integration_tests::{
    env::{TestEnv, read_counter},
    progs,
};
use slots_runtime::{Claim, ClaimState, ProgramSource, SlotRef};
use support::{
    check_whole, claim_args,
    counters::{count, counted_more, counter_map, steady_traffic as traffic},
    snapshot, spawn_slotctl, stderr, stdout,
};

/// Replaces per test.
const REPLACES: usize = 6;
/// Packets the claim's program must count before the next replace, so that
/// every program of the sequence runs on traffic.
const BETWEEN: u64 = 50;

/// The two counting objects, taking turns (each load has its own counter).
fn object(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "xdp_count"
    } else {
        "xdp_count_c.o"
    }
}

/// Checks the figures: the claim's programs together counted every packet
/// the first counter counted, which counted every packet that reached XDP.
fn check_sum(what: &str, sent: u64, reached: u64, first: u64, counts: &[u64]) {
    let sum: u64 = counts.iter().sum();
    println!(
        "figures: {what} sent={sent} reached={reached} first={first} replaced_programs={counts:?} sum={sum}"
    );
    assert!(first > 0, "no packet reached the dispatcher");
    assert_eq!(
        first, reached,
        "the first counter ran on every packet that reached XDP"
    );
    assert!(
        counts.iter().all(|&c| c > 0),
        "every program of the sequence ran on traffic: {counts:?}"
    );
    assert!(
        sum >= first,
        "{} packets met none of the replaced programs",
        first - sum
    );
    assert!(
        sum <= first,
        "{} packets met two of the replaced programs",
        sum - first
    );
}

#[test]
fn a_held_claim_replaced_by_its_holder_under_traffic_counts_each_packet_once() {
    let env = TestEnv::new().unwrap();
    // Resolve the neighbour first: nothing queues behind ARP later.
    assert_eq!(env.send(3), 3);
    let mut first = env
        .in_rx(|rt, i| {
            let mut req = env.request("xdp_count", 0);
            req.name = Some("first".into());
            rt.claim(i, &req)
        })
        .unwrap();
    let mut claim: Claim = env
        .in_rx(|rt, i| {
            let mut req = env.request(object(0), 50);
            req.name = Some("swapped".into());
            rt.claim(i, &req)
        })
        .unwrap();
    let last = env
        .in_rx(|rt, i| {
            let mut req = env.request("xdp_pass", 90);
            req.name = Some("last".into());
            rt.claim(i, &req)
        })
        .unwrap();
    let (name, prio, proceed_on, backend) = (
        claim.name.clone(),
        claim.prio,
        claim.proceed_on,
        claim.backend,
    );
    let base = env.pair.counters().unwrap();
    let traffic = traffic(&env);

    let mut maps = vec![counter_map(claim.prog_id)];
    for i in 1..=REPLACES {
        counted_more(maps.last().unwrap(), 0, BETWEEN);
        let old = (claim.slot, claim.prog_id);
        let src = ProgramSource::bytes(object(i), progs::bytes(object(i)), None);
        let r = claim
            .replace(&src)
            .unwrap_or_else(|e| panic!("replace {i}: {e}"));
        assert_eq!((r.old_slot, r.old_prog_id), old);
        assert_eq!((r.new_slot, r.new_prog_id), (claim.slot, claim.prog_id));
        assert_ne!(r.new_slot, r.old_slot);
        assert_eq!(r.position, 1, "the claim keeps its run position");
        assert_eq!(
            (
                &claim.name,
                claim.prio,
                claim.proceed_on,
                claim.backend,
                claim.persistent
            ),
            (&name, prio, proceed_on, backend, false)
        );
        maps.push(counter_map(claim.prog_id));
    }
    counted_more(maps.last().unwrap(), 0, BETWEEN);
    let sent = traffic.stop();
    let reached = env.pair.accounted(base, sent).unwrap();
    let counts: Vec<u64> = maps.iter().map(count).collect();
    check_sum(
        "held",
        sent,
        reached,
        read_counter(first.ebpf_mut()),
        &counts,
    );

    // The claim is whole, held by this process, in the old one's place.
    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    let order: Vec<&str> = st.claims.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["first", "swapped", "last"]);
    let c = st.claims.iter().find(|c| c.name == "swapped").unwrap();
    assert_eq!((c.slot, c.prog_id), (claim.slot, claim.prog_id));
    assert_eq!(c.state, ClaimState::Held);
    // Still held: released with this handle.
    assert_eq!(
        claim.release().unwrap(),
        slots_runtime::OwnRelease::Released
    );
    drop(last);
    check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn slotctl_replaces_a_persistent_claim_under_traffic_counting_each_packet_once() {
    let env = TestEnv::new().unwrap();
    assert_eq!(env.send(3), 3);
    let mut first = env
        .in_rx(|rt, i| {
            let mut req = env.request("xdp_count", 0);
            req.name = Some("first".into());
            rt.claim(i, &req)
        })
        .unwrap();
    let o = spawn_slotctl(&env, None, &claim_args(&env, object(0), 50, "swapped")).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let landed = support::Landed::parse(&stdout(&o));
    let o = spawn_slotctl(&env, None, &claim_args(&env, "xdp_pass", 90, "last")).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let base = env.pair.counters().unwrap();
    let traffic = traffic(&env);

    let mut maps = vec![counter_map(landed.prog_id)];
    let mut current = (landed.slot, landed.prog_id);
    for i in 1..=REPLACES {
        counted_more(maps.last().unwrap(), 0, BETWEEN);
        let obj = progs::path(object(i));
        // By name and by slot number, in turn.
        let which = if i.is_multiple_of(2) {
            "swapped".to_string()
        } else {
            current.0.to_string()
        };
        let args: Vec<String> = ["replace", &env.pair.rx_if, &which, obj.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = spawn_slotctl(&env, None, &args).output();
        assert!(o.status.success(), "replace {i}: {}", stderr(&o));
        let line = stdout(&o);
        assert_eq!(line.lines().count(), 1, "{line}");
        let st = support::status(&env);
        let c = st.claims.iter().find(|c| c.name == "swapped").unwrap();
        assert_eq!(c.state, ClaimState::Persistent);
        assert_eq!(c.prio, 50);
        let expected = format!(
            "replaced swapped on {} at run position 1: slot {} (program {}) -> slot {} (program {})",
            env.pair.rx_if, current.0, current.1, c.slot, c.prog_id
        );
        assert_eq!(line.trim_end(), expected);
        maps.push(counter_map(c.prog_id));
        current = (c.slot, c.prog_id);
    }
    counted_more(maps.last().unwrap(), 0, BETWEEN);
    let sent = traffic.stop();
    let reached = env.pair.accounted(base, sent).unwrap();
    let counts: Vec<u64> = maps.iter().map(count).collect();
    check_sum(
        "persistent",
        sent,
        reached,
        read_counter(first.ebpf_mut()),
        &counts,
    );

    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    let order: Vec<&str> = st.claims.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["first", "swapped", "last"]);
    env.in_rx(|rt, i| rt.release(i, &SlotRef::Name("swapped".into()), false))
        .unwrap();
}

#[test]
fn slotctl_refuses_to_replace_another_process_held_claim_and_changes_nothing() {
    let env = TestEnv::new().unwrap();
    // This process holds the claim; slotctl is another process.
    let held = env
        .in_rx(|rt, i| {
            let mut req = env.request("xdp_pass", 50);
            req.name = Some("held".into());
            rt.claim(i, &req)
        })
        .unwrap();
    let before = snapshot(&env);
    let obj = progs::path("xdp_count");
    for which in ["held".to_string(), held.slot.to_string()] {
        let o = env.slotctl(&["replace", &env.pair.rx_if, &which, obj.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(slotctl::exit::Exit::Conflict.code()));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("only its holder can replace a held claim")
                && err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        assert!(stdout(&o).is_empty());
        assert_eq!(snapshot(&env), before, "a refused replace changed nothing");
    }
    // No such claim.
    let o = env.slotctl(&["replace", &env.pair.rx_if, "nobody", obj.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no claim named nobody"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(&env), before);
    drop(held);
}
