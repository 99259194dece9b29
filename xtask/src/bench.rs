//! `cargo xtask bench`: the datapath benchmark (`tests/src/bin/bench/`),
//! release build, BPF_PROG_TEST_RUN in one process; `--traffic`: real
//! frames through veth pairs in namespaces of its own; `--claims`: the
//! control path's latency (`tests/src/bin/claim_latency.rs`). Needs root.
use anyhow::{Result, bail};

#[derive(clap::Args, Default)]
pub struct Args {
    /// Rewrite the figures section of docs/benchmarks.md with this run.
    #[arg(long)]
    pub write_docs: bool,
    /// Rounds; each runs every comparison once (default 25; with
    /// --claims, runs of each operation, default 30).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Measure claim, release and attach latency instead of the datapath.
    #[arg(long, conflicts_with = "write_docs")]
    pub claims: bool,
    /// Packets per second through veth pairs into the receiver's native
    /// XDP: bare XDP_PASS against the dispatcher with 0, 1, 5, 10 claims.
    #[arg(long, conflicts_with = "claims")]
    pub traffic: bool,
    /// Frames per measurement with --traffic (default 200000).
    #[arg(long, requires = "traffic")]
    pub frames: Option<u32>,
    /// Measure the embedded dispatcher against another build of it (same
    /// state layout), both filled by the benchmark, instead of the usual
    /// comparisons.
    #[arg(long, value_name = "DISPATCHER.o", conflicts_with_all = ["claims", "traffic", "write_docs"])]
    pub against: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if !is_root() {
        bail!("the benchmark needs root (BPF_PROG_TEST_RUN): run `cargo xtask bench` as root");
    }
    crate::setup::run()?;
    let rounds = args.rounds.map(|r| r.to_string());
    let frames = args.frames.map(|f| f.to_string());
    if args.claims {
        // The latency binary runs slotctl: build the release one beside it.
        crate::cargo(&["build", "--quiet", "--release", "-p", "slotctl"])?;
    }
    let mut cmd = vec![
        "run",
        "--quiet",
        "--release",
        "-p",
        "integration-tests",
        "--bin",
        if args.claims {
            "claim_latency"
        } else {
            "bench"
        },
        "--",
    ];
    if args.traffic {
        cmd.push("--traffic");
    }
    if let Some(r) = &rounds {
        cmd.extend(["--rounds", r.as_str()]);
    }
    if let Some(f) = &frames {
        cmd.extend(["--frames", f.as_str()]);
    }
    // cargo runs the benchmark from the workspace root: make the path
    // absolute first.
    let against = match &args.against {
        Some(p) => Some(std::path::absolute(p)?.to_string_lossy().into_owned()),
        None => None,
    };
    if let Some(a) = &against {
        cmd.extend(["--against", a.as_str()]);
    }
    if args.write_docs {
        cmd.push("--write-docs");
    }
    crate::cargo(&cmd)
}

/// Effective uid 0, read from /proc (xtask has no libc dependency).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
