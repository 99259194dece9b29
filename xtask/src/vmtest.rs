//! `cargo xtask vmtest`: the integration tests on real Debian kernels under
//! QEMU, where the freplace backend can load.
//!
//! For every kernel: download its Debian package once (kept in
//! `~/.cache/xdp-slots/kernels`), build the test executables and slotctl on
//! the host, pack them with busybox, iproute2's `ip`, their shared libraries
//! and the kernel's veth module into an initramfs, boot it with
//! `qemu-system-x86_64` (TCG, no network device) and read the results from
//! the serial console. Everything lands in `target/vmtest/<kernel>/`; the
//! last full run of each kernel is summed up in `docs/kernel-compat.md`.
mod cpio;
mod initramfs;
mod kernel;
mod qemu;
mod report;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

const TEST_THREADS: u32 = 2;
const JOBS: usize = 2;
const VM_TIMEOUT_SECS: u64 = 2700;
const TEST_TIMEOUT_SECS: u64 = 600;
const TEST_PACKAGE: &str = "integration-tests";

/// The freplace conformance suite: what the gate runs in each VM, as (test
/// executable, libtest filters; none: all its tests). Every behaviour that
/// is freplace's own: the dispatcher passing each kernel's verifier with
/// global slot functions, filling and releasing slots with extensions
/// (held, persistent, released on SIGKILL), the chain decision replaced,
/// packet-changing extensions in every slot, extensions mixed with tail
/// calls, slotctl end to end, a small race, a crash at every crash point,
/// a program replaced under traffic (held and persistent), a layout-1
/// state with an freplace claim upgraded under traffic, the hand-made
/// leftovers of two dead installs, and a narrowed object
/// whose legacy section name was rewritten (an extension needs the BTF
/// function records that follow the name). `--all` runs every
/// executable instead; `cargo xtask stress --vm` adds the storms.
pub const CONFORMANCE: &[(&str, &[&str])] = &[
    (
        "datapath",
        &[
            "dispatcher_loads_and_passes_the_verifier",
            "btf_declares_global_slot_functions_taking_xdp_md",
        ],
    ),
    ("freplace", &[]),
    ("runtime", &[]),
    ("slotctl", &[]),
    ("crash", &[]),
    ("replace", &[]),
    ("upgrade", &[]),
    ("races", &["eight_claimers_at_once"]),
    ("objects", &["legacy_section_names_are_xdp"]),
    (
        "faults",
        &[
            "an_extension_pinned_before_its_record_is_unlinked",
            "a_chain_pinned_before_its_flag_is_replaced",
        ],
    ),
];

#[derive(clap::Args)]
pub struct Args {
    /// Kernel to boot: `6.1` (bookworm's linux-image-amd64), `6.12` (the
    /// newest 6.12 cloud kernel) or a Debian package name
    /// (`linux-image-...`). Repeatable; default: 6.1 and 6.12.
    #[arg(long = "kernel", value_name = "KERNEL")]
    pub kernels: Vec<String>,
    /// Run only tests whose name contains this (libtest filter). Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub filter: Vec<String>,
    /// Run only this test executable, by target name (e.g. `datapath`).
    /// Repeatable.
    #[arg(long = "bin", value_name = "NAME")]
    pub bins: Vec<String>,
    /// Every test executable and every test in it, not only the freplace
    /// conformance suite.
    #[arg(long)]
    pub all: bool,
    /// Suite sizes inside the VM (`SLOTS_STRESS`): short, default or long.
    #[arg(long, default_value = "short", value_parser = ["short", "default", "long"])]
    pub size: String,
    /// Cargo package whose tests go into the VM. Repeatable.
    #[arg(long = "package", short = 'p', value_name = "SPEC")]
    pub packages: Vec<String>,
    /// Threads per test executable inside the VM.
    #[arg(long, default_value_t = TEST_THREADS)]
    pub test_threads: u32,
    /// Virtual machines running at the same time.
    #[arg(long, short = 'j', default_value_t = JOBS)]
    pub jobs: usize,
    /// Hard limit for one virtual machine, in seconds.
    #[arg(long, default_value_t = VM_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Limit for one test executable inside the VM, in seconds.
    #[arg(long, default_value_t = TEST_TIMEOUT_SECS)]
    pub test_timeout: u64,
    /// Print the whole serial console, not only test results.
    #[arg(long, short)]
    pub verbose: bool,
    /// Extra arguments for every test executable (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            kernels: Vec::new(),
            filter: Vec::new(),
            bins: Vec::new(),
            all: false,
            size: "short".into(),
            packages: Vec::new(),
            test_threads: TEST_THREADS,
            jobs: JOBS,
            timeout: VM_TIMEOUT_SECS,
            test_timeout: TEST_TIMEOUT_SECS,
            verbose: false,
            args: Vec::new(),
        }
    }
}

impl Args {
    /// A run that selects a subset of the tests does not go into the
    /// compatibility table.
    fn is_full(&self) -> bool {
        !self.all
            && self.size == "short"
            && self.filter.is_empty()
            && self.bins.is_empty()
            && self.packages.is_empty()
            && self.args.is_empty()
    }
}

/// A test executable built by cargo, as it will be named inside the VM.
pub struct TestBin {
    pub name: String,
    pub path: PathBuf,
    /// libtest filters for this executable (none: all its tests).
    pub filters: Vec<String>,
}

/// Output directory of the VM suite.
fn out_dir() -> PathBuf {
    workspace_root().join("target/vmtest")
}

/// Holds target/vmtest for this process: concurrent runs in one checkout
/// would overwrite each other's initramfs, console logs and table rows.
fn lock() -> Result<std::fs::File> {
    std::fs::create_dir_all(out_dir())?;
    let path = out_dir().join("lock");
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", show(&path)))?;
    if file.try_lock().is_err() {
        eprintln!(
            "vmtest: waiting for another run in this checkout ({})",
            show(&path)
        );
        file.lock()?;
    }
    Ok(file)
}

pub fn run(args: Args) -> Result<()> {
    let _lock = lock()?;
    let started = Instant::now();
    let specs: Vec<String> = if args.kernels.is_empty() {
        kernel::DEFAULT.iter().map(|s| s.to_string()).collect()
    } else {
        args.kernels.clone()
    };
    let kernels = specs
        .iter()
        .map(|s| kernel::prepare(s))
        .collect::<Result<Vec<_>>>()?;

    let (bins, slotctl) = build(&args)?;
    if bins.is_empty() {
        bail!("no test executable matches {:?}", args.bins);
    }
    eprintln!(
        "vmtest: {} test executable(s): {}",
        bins.len(),
        bins.iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );

    let stage = initramfs::Stage::new(&out_dir().join("stage"), &bins, &slotctl)?;
    let mut jobs = Vec::new();
    for k in &kernels {
        let dir = out_dir().join(&k.label);
        std::fs::create_dir_all(&dir)?;
        let initrd = dir.join("initramfs.cpio.gz");
        let t = Instant::now();
        initramfs::build(&stage, k, &args, &initrd)?;
        eprintln!(
            "vmtest: {}: initramfs {} ({:.1} MB, {:.1} s)",
            k.label,
            show(&initrd),
            std::fs::metadata(&initrd)?.len() as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        jobs.push((k, dir, initrd));
    }

    let timeout = Duration::from_secs(args.timeout);
    let mut results = Vec::new();
    for chunk in jobs.chunks(args.jobs.max(1)) {
        let booted: Vec<Result<qemu::Boot>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(k, dir, initrd)| {
                    let log = dir.join("console.log");
                    s.spawn(move || qemu::boot(k, initrd, &log, timeout, args.verbose))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("VM thread panicked"))
                .collect()
        });
        for ((k, _, _), boot) in chunk.iter().zip(booted) {
            let boot = boot?;
            let outcome = report::parse_console(&std::fs::read_to_string(&boot.log)?);
            results.push(((*k).clone(), boot, outcome));
        }
    }

    eprintln!();
    let mut failed = false;
    let mut rows = Vec::new();
    for (k, boot, outcome) in &results {
        failed |= !outcome.passed(boot);
        eprintln!("{}", outcome.summary(k, boot));
        rows.push(report::Row::from_vm(k, outcome, boot));
    }
    if args.is_full() {
        report::record(&rows)?;
    } else {
        eprintln!("vmtest: test selection given: docs/kernel-compat.md left as it is");
    }
    eprintln!("vmtest: done in {:.0} s", started.elapsed().as_secs_f64());
    if failed {
        bail!("VM suite failed");
    }
    Ok(())
}

/// Builds the test executables and slotctl with cargo and returns their
/// paths (from cargo's JSON messages). The command is the gate's own build
/// (`cargo build --all-targets` of the default members), so after the
/// native run nothing is compiled again.
fn build(args: &Args) -> Result<(Vec<TestBin>, PathBuf)> {
    let mut cmd = vec![
        "build",
        "--all-targets",
        "--message-format=json-render-diagnostics",
    ];
    for p in &args.packages {
        cmd.extend(["-p", p.as_str()]);
    }
    if !args.packages.is_empty() {
        cmd.extend(["-p", "slotctl"]);
    }
    let artifacts = cargo_executables(&cmd)?;
    // Without a selection of its own, a run is the conformance suite.
    let conformance = !args.all && args.bins.is_empty() && args.filter.is_empty();
    let mut bins: Vec<TestBin> = Vec::new();
    for a in artifacts.iter().filter(|a| a.test) {
        let wanted_package = if args.packages.is_empty() {
            a.package == TEST_PACKAGE
        } else {
            args.packages.contains(&a.package)
        };
        if !wanted_package || (!args.bins.is_empty() && !args.bins.contains(&a.name)) {
            continue;
        }
        let filters = match CONFORMANCE.iter().find(|(bin, _)| *bin == a.name) {
            _ if !conformance => Vec::new(),
            Some((_, filters)) if a.kinds.iter().any(|k| k == "test") => {
                filters.iter().map(|f| f.to_string()).collect()
            }
            _ => continue,
        };
        // A library's and a binary's unit tests may share a target name.
        let name = if bins.iter().any(|b| b.name == a.name) {
            format!("{}-{}", a.name, a.kinds.join("-"))
        } else {
            a.name.clone()
        };
        bins.push(TestBin {
            name,
            path: a.path.clone(),
            filters,
        });
    }
    // Cargo reports them in build order; run them in a stable one.
    bins.sort_by(|a, b| a.name.cmp(&b.name));
    let slotctl = artifacts
        .iter()
        .find(|a| !a.test && a.name == "slotctl" && a.kinds.iter().any(|k| k == "bin"))
        .map(|a| a.path.clone())
        .context("cargo built no slotctl binary")?;
    Ok((bins, slotctl))
}

/// The package name in a cargo package id: `path+file:///w/tests#name@0.1.0`,
/// or `path+file:///w/name#0.1.0` where the directory has the package's name.
fn package_name(id: &str) -> String {
    let (path, tail) = id.rsplit_once('#').unwrap_or((id, ""));
    match tail.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => path.rsplit('/').next().unwrap_or_default().to_string(),
    }
}

/// An executable cargo built.
struct Artifact {
    /// Package name.
    package: String,
    /// Target kinds (`lib`, `bin`, `test`, ...).
    kinds: Vec<String>,
    /// Target name.
    name: String,
    path: PathBuf,
    /// Built with the test harness.
    test: bool,
}

/// Runs cargo with a JSON message format; returns every executable it
/// built (or found fresh).
fn cargo_executables(args: &[&str]) -> Result<Vec<Artifact>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("vmtest: {cargo} {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo}"))?;
    let mut found = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let target = &msg["target"];
        let package = package_name(msg["package_id"].as_str().unwrap_or_default());
        found.push(Artifact {
            package,
            kinds: target["kind"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            name: target["name"].as_str().unwrap_or_default().to_string(),
            path: PathBuf::from(exe),
            test: msg["profile"]["test"].as_bool() == Some(true),
        });
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(found)
}

/// The native suite (`cargo test` on this host's kernel): runs
/// it, shows its output and, for a full run, records the counts as the
/// host's row of docs/kernel-compat.md.
pub fn native_suite(extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        // Default members: the eBPF crates only build for the BPF target.
        "test".to_string(),
        "--no-fail-fast".into(),
    ];
    args.extend(extra.iter().cloned());
    let mut child = Command::new(&cargo)
        .args(&args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    let mut counts = report::Counts::default();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait()?;
    counts.finish();
    if extra.is_empty() {
        let _lock = lock()?;
        report::record(&[report::Row::host(&counts, status.success())])?;
    }
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `path` relative to the workspace root, for messages.
fn show(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn package_names_from_ids() {
        assert_eq!(
            package_name("path+file:///w/tests#integration-tests@0.1.0"),
            "integration-tests"
        );
        assert_eq!(package_name("path+file:///w/slotctl#0.1.0"), "slotctl");
    }
}
