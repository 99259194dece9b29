//! `cargo xtask stress`: the reliability suites (races, faults, churn, bad
//! input, coexistence) at their long sizes, on this host's kernel. Each
//! test prints `figures:` lines; docs/reliability.md quotes them.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// The suites, by test target name (tests/tests/<name>.rs).
const SUITES: &[&str] = &["races", "faults", "churn", "bad_input", "coexist"];

#[derive(clap::Args)]
pub struct Args {
    /// Sizes: `long` (default), `default` (CI's) or `short` (the VM
    /// suite's).
    #[arg(long, default_value = "long", value_parser = ["short", "default", "long"])]
    pub size: String,
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
    crate::cargo(&["build", "-p", "slotctl"])?;
    let suites: Vec<&str> = if args.suites.is_empty() {
        SUITES.to_vec()
    } else {
        args.suites.iter().map(String::as_str).collect()
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["test", "-p", "integration-tests", "--no-fail-fast"]);
    for s in &suites {
        cmd.args(["--test", s]);
    }
    // --include-ignored: the random-time storms are ignored in the gate.
    cmd.arg("--")
        .arg("--nocapture")
        .arg("--include-ignored")
        .args(&args.args);
    if args.size != "default" {
        cmd.env("SLOTS_STRESS", &args.size);
    } else {
        cmd.env_remove("SLOTS_STRESS");
    }
    if let Some(seed) = args.seed {
        cmd.env("SLOTS_STRESS_SEED", seed.to_string());
    }
    eprintln!("stress: {} at {} sizes", suites.join(", "), args.size);
    let status = cmd
        .status()
        .with_context(|| format!("running {cargo} test"))?;
    if !status.success() {
        bail!("the stress run failed ({status})");
    }
    Ok(())
}
