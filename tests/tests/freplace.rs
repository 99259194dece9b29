//! What only the freplace backend does: replacing the chain decision,
//! mixing backends on one dispatcher, packet-changing extensions. Run for
//! real in the VM suite; on a kernel that refuses extensions each test
//! checks the refusal instead.
use integration_tests::{
    env::{TestEnv, read_counter},
    progs,
};
use slots_runtime::{Backend, Error, ProgramSource};

const N: usize = 20;

fn freplace_available() -> bool {
    slots_runtime::Backend::Freplace.probe().is_ok()
}

#[test]
fn a_custom_chain_decision_replaces_the_default() {
    let env = TestEnv::new().unwrap();
    let _pass = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_pass", 10)))
        .unwrap();
    let _drop = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_drop", 20)))
        .unwrap();
    assert_eq!(env.send(N), 0, "default chain: PASS proceeds, DROP ends it");
    let chain = ProgramSource::bytes("chain_stop.o", progs::bytes("chain_stop.o"), None);
    let result = env.in_rx(|rt, i| rt.set_chain(i, &chain, false));
    if !freplace_available() {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::ChainNeedsFreplace { .. }), "{err}");
        assert_eq!(env.send(N), 0, "the refused chain changed nothing");
        return;
    }
    let held = result.unwrap();
    assert_eq!(
        env.send(N),
        N,
        "custom chain stops after the first slot: its PASS is final"
    );
    let status = env.in_rx(|rt, i| rt.status(i)).unwrap();
    assert_eq!(status.custom_chain, Some(held.prog_id));
    drop(held);
    assert_eq!(
        env.send(N),
        0,
        "the default rule is back once the chain's holder lets go"
    );
    // Persistent variant, removed explicitly.
    env.in_rx(|rt, i| rt.set_chain(i, &chain, true)).unwrap();
    assert_eq!(env.send(N), N);
    env.in_rx(|rt, i| rt.clear_chain(i)).unwrap();
    assert_eq!(env.send(N), 0);
}

#[test]
fn tail_call_and_freplace_slots_mix_on_one_dispatcher() {
    let env = TestEnv::new().unwrap();
    let mut count = env.request("xdp_count", 10);
    count.backend = Some(Backend::TailCall);
    let mut count = env.in_rx(|rt, i| rt.claim(i, &count)).unwrap();
    let mut drop = env.request("xdp_drop", 20);
    drop.backend = Some(Backend::Freplace);
    let result = env.in_rx(|rt, i| rt.claim(i, &drop));
    if !freplace_available() {
        let err = result.unwrap_err();
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
        return;
    }
    let drop = result.unwrap();
    assert_eq!(drop.backend, Backend::Freplace);
    assert_eq!(count.backend, Backend::TailCall);
    assert_eq!(env.send(N), 0, "the freplace slot drops");
    assert_eq!(
        read_counter(count.ebpf_mut()),
        N as u64,
        "the tail-call slot before it counted"
    );
    drop.release().unwrap();
    assert_eq!(env.send(N), N);
    assert_eq!(read_counter(count.ebpf_mut()), 2 * N as u64);
}

#[test]
fn a_packet_changing_program_fills_a_slot() {
    let env = TestEnv::new().unwrap();
    // With freplace this needs a packet-changing slot body (see design.md).
    let rewrite = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_rewrite", 30)))
        .unwrap();
    let mut count = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_count", 40)))
        .unwrap();
    assert!(rewrite.slot < count.slot);
    assert_eq!(env.send(N), N, "the packets survive the head adjustment");
    assert_eq!(read_counter(count.ebpf_mut()), N as u64);
}

#[test]
fn every_slot_takes_a_packet_changing_extension() {
    if !freplace_available() {
        return; // tail-call slots take any XDP program; see the test above
    }
    // Slots with and without a program array differ in body; both must be
    // packet-changing, or the verifier refuses the extension.
    let env = TestEnv::new().unwrap();
    let mut claims = Vec::new();
    for (k, prio) in [0u32, 1, 2, 3, 4].into_iter().enumerate() {
        let mut req = env.request("xdp_rewrite", prio);
        req.backend = Some(Backend::Freplace);
        req.name = Some(format!("rw{k}"));
        claims.push(env.in_rx(|rt, i| rt.claim(i, &req)).unwrap());
    }
    let slots: Vec<usize> = claims.iter().map(|c| c.slot).collect();
    assert!(
        slots.iter().any(|s| dispatcher_common::has_prog_array(*s)),
        "{slots:?}"
    );
    assert!(
        slots.iter().any(|s| !dispatcher_common::has_prog_array(*s)),
        "{slots:?}"
    );
    assert_eq!(env.send(N), N);
}
