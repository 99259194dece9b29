//! The demo: two namespaces joined by a veth pair, the dispatcher attached
//! once on the receiving end, two programs claimed in two slots, real UDP
//! packets, and what each step does to them. Everything it makes is removed
//! at the end (also on failure).
use anyhow::{Context as _, Result};
use integration_tests::env::{TestEnv, read_counter};
use slots_runtime::AttachOptions;

const PACKETS: usize = 50;

fn main() -> Result<()> {
    let env = TestEnv::new().context("creating the namespaces and the veth pair (run as root)")?;
    let ifc = env.pair.rx_if.clone();
    println!(
        "namespaces {} ({}) and {} ({}, {ifc}) joined by a veth pair",
        env.pair.tx.name, env.pair.tx_addr, env.pair.rx.name, env.pair.rx_addr
    );
    println!(
        "\n1. no dispatcher: {}/{PACKETS} UDP packets arrive",
        env.send(PACKETS)
    );

    let a = env.in_rx(|rt, i| rt.attach(i, AttachOptions::default()))?;
    println!(
        "\n2. dispatcher attached to {ifc} once: {} mode, program id {}, backend {}{}",
        a.mode,
        a.prog_id,
        a.backend,
        a.passed_over
            .iter()
            .map(|(b, why)| format!(" ({b} unavailable: {})", slots_runtime::error_chain(why)))
            .collect::<String>()
    );
    println!("   100 empty slots: {}/{PACKETS} arrive", env.send(PACKETS));

    let mut count = env.in_rx(|rt, i| rt.claim(i, &env.request("xdp_count", 10)))?;
    println!("\n3. a counter (priority 10) claims slot {}", count.slot);
    let drop = env.in_rx(|rt, i| rt.claim(i, &env.request("xdp_drop", 20)))?;
    println!("   a UDP dropper (priority 20) claims slot {}", drop.slot);
    env.in_rx(|rt, i| rt.set_stats(i, true))?;
    let got = env.send(PACKETS);
    println!(
        "   {got}/{PACKETS} arrive; the counter, which runs first, saw {}",
        read_counter(count.ebpf_mut())
    );
    let status = env.in_rx(|rt, i| rt.status(i))?;
    println!("\n   slot prio name        prog  packets drop pass");
    for c in &status.claims {
        let k = c.counters.clone().unwrap_or_default();
        println!(
            "   {:>4} {:>4} {:<10} {:>5} {:>8} {:>4} {:>4}",
            c.slot, c.prio, c.name, c.prog_id, k.packets, k.drop, k.pass
        );
    }

    drop.release()?;
    let got = env.send(PACKETS);
    println!(
        "\n4. the dropper releases its slot: {got}/{PACKETS} arrive; counter total {}",
        read_counter(count.ebpf_mut())
    );
    count.release()?;
    println!("\n5. the counter releases too; cleaning up the namespaces and bpffs state");
    Ok(())
}
