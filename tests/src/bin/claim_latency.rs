//! Control-path latency: how long a claim, a release and a first attach
//! take, through the library and through slotctl, on a veth pair in
//! namespaces of its own. Also the kernel BTF parse that aya 0.14 repeats
//! for every program load. Medians and 90th percentiles over `--rounds`.
//!
//! Run with `cargo xtask bench --claims` (release build, as root).
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{
    env::{TestEnv, slotctl_path},
    progs,
};

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn row(what: &str, mut v: Vec<Duration>) {
    let n = v.len();
    println!(
        "| {what} | {n} | {:.2} | {:.2} |",
        percentile(&mut v, 0.5),
        percentile(&mut v, 0.9)
    );
}

fn slotctl(env: &TestEnv, args: &[&str]) -> Result<Duration> {
    let _in = env.pair.rx.enter()?;
    let t = Instant::now();
    let out = Command::new(slotctl_path())
        .arg("--bpffs")
        .arg(&env.root)
        .args(args)
        .output()
        .context("running slotctl")?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!("slotctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(d)
}

fn main() -> Result<()> {
    let rounds: usize = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => 30,
        [flag, n] if flag == "--rounds" => n.parse().context("--rounds")?,
        other => bail!("usage: claim_latency [--rounds N] (got {other:?})"),
    };
    let env = TestEnv::new()?;
    let ifc = env.pair.rx_if.clone();

    let mut btf = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        aya::Btf::from_sys_fs().context("parsing the kernel BTF")?;
        btf.push(t.elapsed());
    }

    let mut attach = Vec::new();
    for _ in 0..rounds.div_ceil(3) {
        let t = Instant::now();
        env.in_rx(|rt, i| rt.attach(i, Default::default()))?;
        attach.push(t.elapsed());
        env.in_rx(|rt, i| rt.detach(i, true))?;
    }
    env.in_rx(|rt, i| rt.attach(i, Default::default()))?;
    // A realistic neighbourhood: a few claims already there.
    let _others: Vec<_> = [10, 30, 70]
        .iter()
        .map(|p| {
            let mut req = env.request("xdp_pass", *p);
            req.name = Some(format!("other{p}"));
            env.in_rx(|rt, i| rt.claim(i, &req))
        })
        .collect::<std::result::Result<_, _>>()?;

    let (mut claim, mut release) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let req = env.request("xdp_pass", 50);
        let t = Instant::now();
        let c = env.in_rx(|rt, i| rt.claim(i, &req))?;
        claim.push(t.elapsed());
        let t = Instant::now();
        c.release()?;
        release.push(t.elapsed());
    }

    let obj = progs::path("xdp_pass");
    let obj = obj.to_str().context("object path")?;
    let (mut cli_claim, mut cli_release) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        cli_claim.push(slotctl(
            &env,
            &["claim", &ifc, obj, "--prio", "50", "--name", "lat"],
        )?);
        cli_release.push(slotctl(&env, &["release", &ifc, "lat"])?);
    }

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    println!("Linux {}, release build, milliseconds:", kernel.trim());
    println!();
    println!("| operation | runs | median | p90 |");
    println!("|---|---|---|---|");
    row("kernel BTF parse (aya `Btf::from_sys_fs`)", btf);
    row("first attach (library: load, verify, pin, link)", attach);
    row("claim, held (library)", claim);
    row("release, held (library)", release);
    row("`slotctl claim` (persistent), whole process", cli_claim);
    row("`slotctl release`, whole process", cli_release);
    Ok(())
}
