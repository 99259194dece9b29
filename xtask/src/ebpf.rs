//! `cargo xtask ebpf`: builds the eBPF objects that slots-runtime ships
//! (the dispatcher and the freplace probe, every binary of
//! `dispatcher-ebpf`) and writes them to `runtime/ebpf/`, where the runtime
//! embeds them. An application that depends on the runtime then builds
//! with stable Rust alone; only this step needs the nightly toolchain,
//! rust-src and bpf-linker.
//!
//! The build is reproducible byte for byte: the paths that debug info and
//! BTF line info record (the checkout, the target directory, the cargo
//! home, the nightly's rust-src) are remapped to fixed names, and DWARF is
//! stripped after linking (`llvm-strip -g`, as libbpf's tooling does; BTF
//! and .BTF.ext stay, freplace needs them). So `--check` (part of `cargo
//! xtask test`) rebuilds and compares whole files: a change to
//! `dispatcher-ebpf` or `dispatcher-common` without `cargo xtask ebpf`
//! fails the gate. The same toolchain gives the same bytes whatever the
//! checkout's path; `runtime/ebpf/toolchain.txt` records the one that
//! built the shipped files, so a mismatch caused by a new nightly says so.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// The crate whose binaries are shipped.
const PACKAGE: &str = "dispatcher-ebpf";
/// Where the runtime crate keeps them (inside the crate, so that a
/// packaged slots-runtime carries them).
const SHIPPED_DIR: &str = "runtime/ebpf";
/// The toolchain record beside them.
const TOOLCHAIN_FILE: &str = "toolchain.txt";
/// Strips DWARF, keeps BTF (Debian's llvm-19, installed by setup).
const LLVM_STRIP: &str = "llvm-strip-19";
/// What this command tells people to run.
const REGENERATE: &str = "cargo xtask ebpf";

#[derive(clap::Args)]
pub struct Args {
    /// Do not write: rebuild and fail if `runtime/ebpf/` differs from what
    /// the sources build (what `cargo xtask test` runs).
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> Result<()> {
    crate::setup::run()?;
    if args.check {
        return check();
    }
    let built = build(&build_dir().join("objects"))?;
    let shipped = workspace_root().join(SHIPPED_DIR);
    std::fs::create_dir_all(&shipped)?;
    // Binaries that no longer exist must not stay shipped.
    for old in shipped_objects()? {
        if !built.iter().any(|b| b.shipped_name() == old) {
            std::fs::remove_file(shipped.join(&old))?;
            eprintln!("ebpf: removed {SHIPPED_DIR}/{old}");
        }
    }
    for b in &built {
        let to = shipped.join(b.shipped_name());
        std::fs::copy(&b.path, &to).with_context(|| format!("writing {}", to.display()))?;
        eprintln!(
            "ebpf: {SHIPPED_DIR}/{} ({} bytes)",
            b.shipped_name(),
            b.len()?
        );
    }
    std::fs::write(shipped.join(TOOLCHAIN_FILE), toolchain()?)?;
    Ok(())
}

/// Rebuilds the objects and compares them with the shipped ones.
pub fn check() -> Result<()> {
    let built = build(&build_dir().join("check"))?;
    let shipped = workspace_root().join(SHIPPED_DIR);
    let mut differ = Vec::new();
    for b in &built {
        let path = shipped.join(b.shipped_name());
        let name = format!("{SHIPPED_DIR}/{}", b.shipped_name());
        match std::fs::read(&path) {
            Ok(old) => {
                let new = std::fs::read(&b.path)?;
                if old != new {
                    differ.push(format!("{name} ({})", sections_differing(&old, &new)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                differ.push(format!("{name} (missing)"))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
    }
    for old in shipped_objects()? {
        if !built.iter().any(|b| b.shipped_name() == old) {
            differ.push(format!(
                "{SHIPPED_DIR}/{old} (no {PACKAGE} binary builds it)"
            ));
        }
    }
    if differ.is_empty() {
        eprintln!(
            "ebpf: {SHIPPED_DIR}/ matches what {PACKAGE} builds ({} objects)",
            built.len()
        );
        return Ok(());
    }
    let recorded = std::fs::read_to_string(shipped.join(TOOLCHAIN_FILE)).unwrap_or_default();
    let current = toolchain()?;
    let note = if recorded.trim() == current.trim() {
        String::new()
    } else {
        format!(
            " (they were built with {}; this machine has {})",
            one_line(&recorded),
            one_line(&current)
        )
    };
    bail!(
        "the shipped eBPF objects do not match their sources: {}{note}; regenerate them with `{REGENERATE}` and commit {SHIPPED_DIR}/",
        differ.join(", ")
    )
}

/// One built object, stripped.
struct Built {
    /// The binary's name in `dispatcher-ebpf`.
    name: String,
    /// The stripped object.
    path: PathBuf,
}

impl Built {
    fn shipped_name(&self) -> String {
        format!("{}.o", self.name)
    }

    fn len(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }
}

/// `<target>/ebpf/shipped`: the nightly build of `dispatcher-ebpf`, kept
/// apart from the test programs' build (other flags).
fn build_dir() -> PathBuf {
    workspace_root().join("target/ebpf/shipped")
}

/// The `.o` files in `runtime/ebpf/`.
fn shipped_objects() -> Result<Vec<String>> {
    let dir = workspace_root().join(SHIPPED_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".o") {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Builds every binary of `dispatcher-ebpf` for the BPF target with the
/// nightly toolchain and strips their DWARF into `out`.
fn build(out: &Path) -> Result<Vec<Built>> {
    let root = workspace_root();
    let target_dir = build_dir();
    let sysroot = nightly(&["--print", "sysroot"])?;
    let commit = nightly(&["-vV"])?
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash: ").map(str::to_string))
        .context("`rustc +nightly -vV` printed no commit hash")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    // The last matching remapping wins: the target directory (perhaps
    // inside the checkout) comes after the checkout.
    let remaps = [
        (
            PathBuf::from(&sysroot).join("lib/rustlib/src/rust"),
            format!("/rustc/{commit}"),
        ),
        (cargo_home, "/cargo".to_string()),
        (root.clone(), "/xdp-slots".to_string()),
        (target_dir.clone(), "/xdp-slots/target".to_string()),
    ];
    let mut rustflags = vec!["-Cdebuginfo=2".to_string(), "-Clink-arg=--btf".to_string()];
    for (from, to) in &remaps {
        rustflags.push(format!("--remap-path-prefix={}={to}", from.display()));
    }
    eprintln!("ebpf: building {PACKAGE} (nightly, bpfel-unknown-none)");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", PACKAGE])
        .args(["--bins", "--release", "--target", "bpfel-unknown-none"])
        .args([
            "-Z",
            "build-std=core",
            "--message-format=json-render-diagnostics",
        ])
        // The recipe's profile lives here, not in the workspace manifest,
        // where it would make `cargo install --path slotctl` warn about a
        // package it does not build. One codegen unit: the BTF's type order
        // depends on the partitioning.
        .args([
            "--config",
            &format!("profile.release.package.{PACKAGE}.debug=2"),
        ])
        .args([
            "--config",
            &format!("profile.release.package.{PACKAGE}.codegen-units=1"),
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .stdout(Stdio::piped());
    // Whatever the calling cargo set for itself must not reach the nested
    // build (another rustc, flags that would change the bytes).
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .context("running rustup (install it from https://rustup.rs)")?;
    let mut bins = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && let Some(exe) = msg["executable"].as_str()
        {
            let name = msg["target"]["name"].as_str().unwrap_or_default();
            bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if !child.wait()?.success() {
        bail!(
            "building {PACKAGE} for the BPF target failed (above); it needs the nightly toolchain with rust-src and bpf-linker: run `cargo xtask setup`"
        );
    }
    if bins.is_empty() {
        bail!("building {PACKAGE} produced no binary");
    }
    std::fs::create_dir_all(out)?;
    let mut built = Vec::new();
    for (name, exe) in bins {
        let path = out.join(format!("{name}.o"));
        let status = Command::new(LLVM_STRIP)
            .arg("-g")
            .arg(&exe)
            .arg("-o")
            .arg(&path)
            .status()
            .with_context(|| format!("running {LLVM_STRIP} (run `cargo xtask setup`)"))?;
        if !status.success() {
            bail!("{LLVM_STRIP} -g {} failed ({status})", exe.display());
        }
        built.push(Built { name, path });
    }
    built.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(built)
}

/// `rustc +nightly ARGS`, trimmed.
fn nightly(args: &[&str]) -> Result<String> {
    let out = Command::new("rustc")
        .arg("+nightly")
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("running rustc +nightly")?;
    if !out.status.success() {
        bail!(
            "rustc +nightly failed: {}; install it with `rustup toolchain install nightly`",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// What builds the objects: the nightly rustc, bpf-linker, llvm-strip.
fn toolchain() -> Result<String> {
    let rustc = nightly(&["--version"])?;
    let linker = version_line(
        Command::new(workspace_root().join("tools/bpf-linker"))
            .arg("--version")
            .env_remove("RUSTUP_TOOLCHAIN"),
    )?;
    let strip = version_line(Command::new(LLVM_STRIP).arg("--version"))?;
    Ok(format!("{rustc}\n{linker}\n{LLVM_STRIP}: {strip}\n"))
}

/// The line of a `--version` output that holds the version.
fn version_line(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Ok(lines
        .iter()
        .find(|l| l.to_lowercase().contains("version"))
        .or(lines.first())
        .unwrap_or(&"unknown")
        .to_string())
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names the ELF sections whose contents differ between two objects.
fn sections_differing(old: &[u8], new: &[u8]) -> String {
    use object::{Object as _, ObjectSection as _};
    let (Ok(a), Ok(b)) = (object::File::parse(old), object::File::parse(new)) else {
        return "not a readable ELF object".into();
    };
    let contents = |f: &object::File| -> Vec<(String, Vec<u8>)> {
        f.sections()
            .map(|s| {
                (
                    s.name().unwrap_or("?").to_string(),
                    s.data().unwrap_or_default().to_vec(),
                )
            })
            .collect()
    };
    let (a, b) = (contents(&a), contents(&b));
    let mut names: Vec<&str> = Vec::new();
    for (name, data) in &a {
        if b.iter().find(|(n, _)| n == name).map(|(_, d)| d) != Some(data)
            && !names.contains(&name.as_str())
        {
            names.push(name);
        }
    }
    for (name, _) in &b {
        if !a.iter().any(|(n, _)| n == name) && !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    if names.is_empty() {
        "same sections, different layout".into()
    } else {
        format!("sections {} differ", names.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _};

    use super::*;

    #[test]
    fn a_changed_byte_is_named_by_its_section() {
        let old = std::fs::read(workspace_root().join(SHIPPED_DIR).join("dispatcher.o")).unwrap();
        let (offset, _) = object::File::parse(&*old)
            .unwrap()
            .section_by_name("license")
            .unwrap()
            .file_range()
            .unwrap();
        let mut new = old.clone();
        new[offset as usize] ^= 1;
        assert_eq!(sections_differing(&old, &new), "sections license differ");
        assert_eq!(
            sections_differing(&old, b"not elf"),
            "not a readable ELF object"
        );
    }
}
