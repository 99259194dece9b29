//! `cargo xtask <command>`: everything around the build that cargo alone
//! does not do. Kept free of the eBPF build so it compiles on a machine that
//! has nothing installed yet.
mod bench;
mod ebpf;
mod setup;
mod stable_app;
mod stress;
mod vmtest;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Workspace tasks for the fixed-slot XDP dispatcher")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF builds and the tests need (Debian packages,
    /// rust-src, bpf-linker for the nightly's LLVM) and mount bpffs.
    /// Idempotent. Building slots-runtime or slotctl needs none of it.
    Setup,
    /// Set up, then rebuild the eBPF objects that slots-runtime ships
    /// (runtime/ebpf/: the dispatcher and the freplace probe, from
    /// dispatcher-ebpf) with the nightly toolchain and bpf-linker. Run it
    /// after changing dispatcher-ebpf or dispatcher-common, and commit the
    /// result; `--check` only compares.
    Ebpf(ebpf::Args),
    /// Build a tiny application on slots-runtime in a temporary directory
    /// with the stable toolchain alone (offline, no rustup, nightly or
    /// bpf-linker on PATH) and run it: it loads the embedded dispatcher
    /// (as root). Part of `test`.
    StableApp,
    /// The gate. Set up, check that the shipped eBPF objects match their
    /// sources, build once, build and run an application on slots-runtime
    /// with stable Rust alone, then run the unit tests, the native
    /// integration suites (real kernel, tail-call backend; storms at their
    /// gate sizes, random-time SIGKILL storms left to `stress`) and the
    /// freplace conformance suite in QEMU on Debian 6.1 and 6.12.
    Test {
        /// Skip the VM stage (freplace on Debian kernels under QEMU).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then run the integration tests in QEMU on Debian kernels
    /// (6.1 and 6.12) with the freplace backend; writes
    /// docs/kernel-compat.md.
    Vmtest(vmtest::Args),
    /// Set up, then run the demo: a namespace, a veth pair, the dispatcher,
    /// two claimed slots and real packets.
    Demo,
    /// Set up, then run the datapath benchmark (BPF_PROG_TEST_RUN, as root):
    /// the dispatcher against a bare program and libxdp's dispatcher;
    /// `--traffic`: packets per second through veth pairs.
    Bench(bench::Args),
    /// Set up, then run the reliability suites (races, faults, churn, bad
    /// input, coexistence, crash) at their long sizes with the storms, as
    /// root; `--vm` in the QEMU VMs with freplace.
    Stress(stress::Args),
    /// Write slotctl's man pages (man/man1/) and bash, zsh and fish
    /// completions (completions/), rendered from its command line.
    Dist {
        /// Where to write them (default: target/dist).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Ebpf(args) => ebpf::run(args),
        Cmd::StableApp => stable_app::check(),
        Cmd::Test { no_vm, args } => {
            setup::run()?;
            ebpf::check()?;
            // Default members: the eBPF crates build only for the BPF target
            // (`cargo xtask ebpf`, tests/build.rs).
            cargo(&["build", "--all-targets"])?;
            // After the workspace build, whose dependencies it reuses.
            stable_app::check()?;
            let native = vmtest::native_suite(&args);
            if !no_vm {
                vmtest::run(vmtest::Args::default())?;
            }
            native
        }
        Cmd::Vmtest(args) => {
            setup::run()?;
            vmtest::run(args)
        }
        Cmd::Bench(args) => bench::run(args),
        Cmd::Stress(args) => stress::run(args),
        Cmd::Dist { out } => {
            let out = out.unwrap_or_else(|| workspace_root().join("target").join("dist"));
            let out = std::path::absolute(&out).context("resolving --out")?;
            let out = out.to_str().context("--out is not UTF-8")?;
            setup::run()?;
            cargo(&[
                "run",
                "--quiet",
                "-p",
                "slotctl",
                "--example",
                "dist",
                "--",
                out,
            ])
        }
        Cmd::Demo => {
            setup::run()?;
            cargo(&[
                "run",
                "--quiet",
                "--release",
                "-p",
                "integration-tests",
                "--bin",
                "demo",
            ])
        }
    }
}

/// Runs cargo from the workspace root with the toolchain xtask was run with.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}
