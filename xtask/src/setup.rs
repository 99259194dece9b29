//! Installs what building and testing need, once; quick when all is there.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages: clang for the C test programs, llvm's llvm-strip for
/// the eBPF objects the runtime ships (`cargo xtask ebpf`), bpftool for
/// inspection, iproute2 for namespaces and veth, QEMU, busybox and cpio for
/// the VM suite (binutils' strip and xz-utils for its initramfs); for the
/// benchmark, libxdp1 (its compiled dispatcher, `xdp-dispatcher.o`, is the
/// reference) and ethtool (the receiver's XDP packet counter in `bench
/// --traffic`).
const PACKAGES: &[&str] = &[
    "clang-19",
    "llvm-19",
    "libbpf-dev",
    "bpftool",
    "iproute2",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "binutils",
    "xz-utils",
    "libxdp1",
    "ethtool",
];

pub fn run() -> Result<()> {
    debian_packages()?;
    rust_src()?;
    bpf_linker()?;
    bpffs()?;
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running rustc +nightly (is the nightly toolchain installed?)")?;
    if !out.status.success() {
        bail!(
            "rustc +nightly failed: {}; install it with 'rustup toolchain install nightly'",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// bpf-linker must be built against the very libLLVM of the nightly that
/// compiles the eBPF crates. It goes to ~/.cache/xdp-slots/<libLLVM name>/,
/// where `tools/bpf-linker` (the configured linker) finds it.
fn bpf_linker() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .context("the nightly toolchain has no libLLVM.so.*-rust-*")?;
    let major = lib
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    let prefix = cache.join("xdp-slots").join(&lib);
    let bin = prefix.join("bin/bpf-linker");
    if Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker against {lib} (about a minute)");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for name in ["libLLVM.so".to_string(), lib.clone()] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&lib), &link)?;
    }
    run_cmd(
        Command::new("cargo")
            .args(["install", "--locked", "--root"])
            .arg(&prefix)
            .args(["bpf-linker", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
}

fn bpffs() -> Result<()> {
    if is_bpffs(Path::new("/sys/fs/bpf")) {
        return Ok(());
    }
    eprintln!("setup: mounting bpffs on /sys/fs/bpf");
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn is_bpffs(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, fstype) = (f.next(), f.next(), f.next());
            mnt == path.to_str() && fstype == Some("bpf")
        })
    })
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
