//! `cargo xtask stress`: the reliability suites (races, faults, churn, bad
//! input, coexistence, crash) at their long sizes with the storms the gate
//! leaves out, on this host's kernel (tail calls), or with `--vm` in the
//! QEMU VMs (freplace). Each test prints `figures:` lines;
//! docs/reliability.md quotes them.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// The suites, by test target name (tests/tests/<name>.rs).
const SUITES: &[&str] = &["races", "faults", "churn", "bad_input", "coexist", "crash"];

#[derive(clap::Args)]
pub struct Args {
    /// Sizes: `long` (default here), `default` (the gate's) or `short`
    /// (default with --vm: everything is 50-100 times slower under
    /// emulation).
    #[arg(long, value_parser = ["short", "default", "long"])]
    pub size: Option<String>,
    /// Run every suite, storms included, with the freplace backend in the
    /// QEMU VMs (Debian 6.1 and 6.12) instead of on this host.
    #[arg(long)]
    pub vm: bool,
    /// Repeat a run: the seed a test printed (SLOTS_STRESS_SEED).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run only this suite (races, faults, churn, bad_input, coexist).
    /// Repeatable.
    #[arg(long = "suite", value_name = "NAME")]
    pub suites: Vec<String>,
    /// Extra arguments for the test harness (after `--`), e.g. a test name.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    for s in &args.suites {
        if !SUITES.contains(&s.as_str()) {
            bail!("unknown suite {s:?}: use one of {}", SUITES.join(", "));
        }
    }
    crate::setup::run()?;
    if args.vm {
        if !args.suites.is_empty() || args.seed.is_some() {
            bail!("--suite and --seed are for the native run; with --vm every suite runs");
        }
        let mut vm_args = crate::vmtest::Args {
            all: true,
            size: args.size.unwrap_or_else(|| "short".into()),
            ..Default::default()
        };
        // The figures lines, and the storms the gate leaves out.
        vm_args.args.push("--nocapture".into());
        vm_args.args.push("--include-ignored".into());
        vm_args.args.extend(args.args);
        return crate::vmtest::run(vm_args);
    }
    let size = args.size.unwrap_or_else(|| "long".into());
    // The gate's build: the same units as `cargo xtask test`.
    crate::cargo(&["build", "--all-targets"])?;
    let suites: Vec<&str> = if args.suites.is_empty() {
        SUITES.to_vec()
    } else {
        args.suites.iter().map(String::as_str).collect()
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        // No -p: the gate's package selection, so nothing is rebuilt for
        // other features (the suites' targets are integration-tests').
        .args(["test", "--no-fail-fast"]);
    for s in &suites {
        cmd.args(["--test", s]);
    }
    // --include-ignored: the random-time storms are ignored in the gate.
    cmd.arg("--")
        .arg("--nocapture")
        .arg("--include-ignored")
        .args(&args.args);
    if size != "default" {
        cmd.env("SLOTS_STRESS", &size);
    } else {
        cmd.env_remove("SLOTS_STRESS");
    }
    if let Some(seed) = args.seed {
        cmd.env("SLOTS_STRESS_SEED", seed.to_string());
    }
    eprintln!("stress: {} at {size} sizes", suites.join(", "));
    let status = cmd
        .status()
        .with_context(|| format!("running {cargo} test"))?;
    if !status.success() {
        bail!("the stress run failed ({status})");
    }
    Ok(())
}
