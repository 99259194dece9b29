//! Per-slot counters as people and scripts read them: they belong to the
//! claim (a new claim starts at zero), `slotctl stats` prints them (text,
//! JSON, Prometheus) and serves them for scraping.
use integration_tests::{
    env::{TestEnv, backend_name},
    progs,
};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.slotctl(args);
    assert!(out.status.success(), "slotctl {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The one claim's entry of `status --json`.
fn only_claim(env: &TestEnv) -> serde_json::Value {
    let v = env.status_json();
    let claims = v["interfaces"][0]["claims"].as_array().unwrap().clone();
    assert_eq!(claims.len(), 1, "{v}");
    claims[0].clone()
}

#[test]
fn a_new_claim_does_not_inherit_the_previous_holders_counters() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    let drop = progs::path("xdp_drop");
    let pass = progs::path("xdp_pass");
    let b = backend_name();
    ok(
        &env,
        &[
            "claim",
            ifc,
            drop.to_str().unwrap(),
            "--name",
            "dropper",
            "--backend",
            b,
        ],
    );
    ok(&env, &["stats", ifc, "on"]);
    assert_eq!(env.send(30), 0, "xdp_drop drops every datagram");
    let before = only_claim(&env);
    assert_eq!(before["counters"]["drop"], 30, "{before}");
    let slot = before["slot"].as_u64().unwrap();

    ok(&env, &["release", ifc, "dropper"]);
    ok(
        &env,
        &[
            "claim",
            ifc,
            pass.to_str().unwrap(),
            "--name",
            "passer",
            "--backend",
            b,
        ],
    );
    let after = only_claim(&env);
    assert_eq!(
        after["slot"], slot,
        "the freed slot is the lowest: it is reused"
    );
    let c = &after["counters"];
    // Only what the kernel itself may have sent since (ARP, IPv6) can have
    // been counted, and a pass-only program drops nothing.
    assert_eq!(c["drop"], 0, "the previous holder's drops: {after}");
    assert_eq!(c["aborted"], 0, "{after}");
    assert!(c["packets"].as_u64().unwrap() < 30, "{after}");
    assert_eq!(c["packets"], c["pass"], "{after}");

    let seen = c["packets"].as_u64().unwrap();
    assert_eq!(env.send(5), 5);
    let c = only_claim(&env)["counters"].clone();
    assert_eq!(c["drop"], 0, "{c}");
    assert!(c["pass"].as_u64().unwrap() >= seen + 5, "{c}");
}
