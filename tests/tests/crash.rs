//! SIGKILL at random moments of claims and releases. Alone in its test
//! binary (cargo runs binaries one after another), so that the kernel's
//! program count is this test's to compare. `SLOTS_STRESS=long` for more
//! rounds.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use integration_tests::{
    env::{TestEnv, backend, read_counter},
    progs,
    stress::{Rng, size},
};
use serde_json::Value;

fn claims(v: &Value) -> Vec<Value> {
    v["claims"].as_array().cloned().unwrap_or_default()
}

/// Kernel objects that must not grow: programs, and this test's pins.
fn loaded_programs() -> usize {
    aya::programs::loaded_programs()
        .filter(|p| p.is_ok())
        .count()
}

fn pins(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        pins(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn killed_claimers_and_releasers_leave_nothing_behind() {
    let rounds = size(20, 200, 1000);
    let env = TestEnv::new().unwrap();
    env.in_rx(|rt, i| rt.attach(i, Default::default())).unwrap();
    // A survivor that must keep working throughout.
    let mut survivor = env
        .in_rx(|rt, i| rt.claim(i, &env.request("xdp_count", 5)))
        .unwrap();
    let programs_before = loaded_programs();
    let pins_before = pins(&env.root);
    let obj = progs::path("xdp_pass");
    let mut rng = Rng(200);
    let mut killed = 0;
    for round in 0..rounds {
        let hold = rng.below(2) == 0;
        let prio = (10 + rng.below(90)).to_string();
        let name = format!("k{round}");
        let mut args = vec![
            "claim",
            &env.pair.rx_if,
            obj.to_str().unwrap(),
            "--prio",
            &prio,
            "--name",
            &name,
        ];
        let be = backend();
        args.extend(["--backend", be.as_str()]);
        if hold {
            args.push("--hold");
        }
        let mut child = env.slotctl_spawn(&args);
        // Anywhere from before the program is loaded to after the slot is
        // active.
        std::thread::sleep(Duration::from_micros(rng.below(150_000)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        if !hold && rng.below(2) == 0 {
            // Kill a releaser too, at a random moment.
            let mut r = env.slotctl_spawn(&["release", &env.pair.rx_if, &name]);
            std::thread::sleep(Duration::from_micros(rng.below(20_000)));
            let _ = r.kill();
            r.wait().unwrap();
        }
    }
    // Release what persistent claims remain, through the normal path.
    for c in claims(&env.status_json()) {
        if c["persistent"] == true {
            let out = env.slotctl(&["release", &env.pair.rx_if, &c["slot"].to_string()]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The next operations collect what dead holders left.
    let start = Instant::now();
    loop {
        env.in_rx(|rt, i| rt.collect(i)).unwrap();
        let left = claims(&env.status_json()).len();
        if (left == 1 && loaded_programs() <= programs_before)
            || start.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = claims(&env.status_json());
    assert_eq!(now.len(), 1, "only the survivor is left: {now:?}");
    assert!(
        now.iter()
            .all(|c| c["active"] == true && c["state"] != "stale")
    );
    assert_eq!(loaded_programs(), programs_before, "BPF programs leaked");
    assert_eq!(pins(&env.root), pins_before, "pinned objects leaked");
    let counted = read_counter(survivor.ebpf_mut());
    assert_eq!(env.send(20), 20);
    assert_eq!(
        read_counter(survivor.ebpf_mut()),
        counted + 20,
        "the survivor still runs"
    );
    println!(
        "reliability: {rounds} rounds, {killed} processes killed mid-operation; after collection 0 stale records, \
         programs {programs_before} -> {}, pins {pins_before} -> {}, survivor counted 20/20",
        loaded_programs(),
        pins(&env.root)
    );
}
