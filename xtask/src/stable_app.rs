//! The gate's check that an application depending on slots-runtime builds
//! with stable Rust alone: a tiny Cargo project in a temporary directory,
//! depending on the runtime by path, built offline by the stable
//! toolchain's own cargo and rustc with no rustup, nightly or bpf-linker
//! reachable, then run: it loads the embedded dispatcher into the kernel
//! (the tail-call probe) and prints its size, which must be the shipped
//! object's.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

const APP: &str = "slots-app";

const MAIN_RS: &str = r#"fn main() {
    let probe = slots_runtime::probe::report();
    let tail_calls = match (probe.tail_calls.ok, probe.tail_calls.detail) {
        (true, _) => "ok".to_string(),
        (false, detail) => detail.unwrap_or_else(|| "failed".into()),
    };
    println!("dispatcher {} bytes", slots_runtime::DISPATCHER.len());
    println!("tail calls {tail_calls}");
}
"#;

/// Builds and runs the application; fails with one line saying what went
/// wrong.
pub fn check() -> Result<()> {
    let started = std::time::Instant::now();
    let root = workspace_root();
    let dir = TempDir::new()?;
    let runtime = root.join("runtime");
    std::fs::write(
        dir.0.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{APP}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nslots-runtime = {{ path = {:?} }}\n\n\
             # Its own workspace, whatever directory holds it.\n[workspace]\n\n{}",
            runtime.display().to_string(),
            dev_profiles(&std::fs::read_to_string(root.join("Cargo.toml"))?),
        ),
    )?;
    std::fs::create_dir_all(dir.0.join("src"))?;
    std::fs::write(dir.0.join("src/main.rs"), MAIN_RS)?;
    // The workspace's lock: the same versions, resolvable offline.
    std::fs::copy(root.join("Cargo.lock"), dir.0.join("Cargo.lock"))?;

    let cargo = stable("cargo")?;
    let rustc = stable("rustc")?;
    // The workspace's target directory: the dependencies the gate has just
    // built for the workspace (same compiler, features and profile) are
    // reused, and only slots-runtime and the application compile.
    let target_dir = root.join("target");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--offline", "--quiet"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&dir.0)
        .env("PATH", stable_path(&cargo)?)
        .env("RUSTC", &rustc);
    for var in [
        "CARGO",
        "CARGO_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    eprintln!("stable-app: building an application on slots-runtime with stable Rust alone");
    let status = cmd
        .status()
        .with_context(|| format!("running {}", cargo.display()))?;
    if !status.success() {
        bail!(
            "an application depending on slots-runtime does not build with stable Rust alone (cargo's errors above): the runtime's build must not need nightly, rust-src or bpf-linker"
        );
    }
    let exe = target_dir.join("debug").join(APP);
    let out = Command::new(&exe)
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let shipped = std::fs::metadata(root.join("runtime/ebpf/dispatcher.o"))?.len();
    let want = format!("dispatcher {shipped} bytes\ntail calls ok\n");
    if !out.status.success() || text != want {
        bail!(
            "the stable-built application did not run its embedded dispatcher: it printed {:?} (stderr {:?}), expected {want:?}; the tail-call probe needs root",
            text,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!(
        "stable-app: built and ran in {:.1} s (embedded dispatcher {shipped} bytes, loaded)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The workspace manifest's `[profile.dev...]` tables, as they are: with
/// them, the application's dependencies are the same build units as the
/// workspace's.
fn dev_profiles(manifest: &str) -> String {
    let mut out = String::new();
    let mut copying = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            copying = line.starts_with("[profile.dev");
        }
        if copying {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// A binary of the stable toolchain, by its real path (not rustup's proxy).
fn stable(tool: &str) -> Result<PathBuf> {
    let out = Command::new("rustup")
        .args(["which", "--toolchain", "stable", tool])
        .output()
        .context("running rustup which")?;
    if !out.status.success() {
        bail!(
            "the stable toolchain has no {tool}: {}; install it with `rustup toolchain install stable`",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// PATH as on a machine with the stable toolchain alone: its own `bin`
/// directory first, and without the directories that hold rustup (whose
/// proxies reach the nightly toolchain) or a bpf-linker.
fn stable_path(cargo: &std::path::Path) -> Result<std::ffi::OsString> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let bin = cargo
        .parent()
        .context("the stable cargo has no directory")?;
    let kept = std::env::split_paths(&path)
        .filter(|d| !["rustup", "bpf-linker"].iter().any(|t| d.join(t).exists()));
    Ok(std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(kept),
    )?)
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xdp-slots-app-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::dev_profiles;

    #[test]
    fn only_the_dev_profiles_are_copied() {
        let manifest = "[workspace]\nmembers = []\n\n[profile.release.package.x]\ndebug = 2\n\n\
                        [profile.dev.package.aya]\nopt-level = 2\n\n[profile.dev]\nincremental = true\n\
                        [patch.crates-io]\n";
        assert_eq!(
            dev_profiles(manifest),
            "[profile.dev.package.aya]\nopt-level = 2\n\n[profile.dev]\nincremental = true\n"
        );
    }
}
