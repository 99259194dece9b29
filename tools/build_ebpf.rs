//! For the build script that embeds the test programs (`tests/build.rs`):
//! builds one eBPF package with aya-build and copies its binaries into the
//! caller's OUT_DIR. (The objects the runtime ships are built by `cargo
//! xtask ebpf` instead, so that the runtime's own build needs no eBPF
//! toolchain.)
//!
//! aya-build keeps its nested cargo build under OUT_DIR, which is new for
//! every profile and feature set of the calling crate: each of them would
//! compile `core` and the package again (about a minute each). The objects
//! are always built for the BPF target in release mode, whoever asks, so
//! they are built once in `<target dir>/ebpf/<package>/` and copied from
//! there. The nested cargo locks that directory, so concurrent build
//! scripts take turns.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds `package` (a workspace member) and returns the names of its
/// binaries, now in OUT_DIR.
pub fn build(package: &str) -> anyhow::Result<Vec<String>> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == package)
        .ok_or_else(|| anyhow!("package {package} not found"))?;
    let root_dir = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{package} has no directory"))?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    let shared = metadata
        .target_directory
        .as_std_path()
        .join("ebpf")
        .join(package);
    std::fs::create_dir_all(&shared)?;
    // aya-build reads OUT_DIR to place its build; point it at the shared
    // directory for the call, then restore it.
    // SAFETY: a build script is one thread; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("OUT_DIR", &shared) };
    let built = aya_build::build_ebpf(
        [Package {
            name: package,
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    );
    // SAFETY: as above.
    unsafe { std::env::set_var("OUT_DIR", &out_dir) };
    built?;
    let bins: Vec<String> = pkg
        .targets
        .iter()
        .filter(|t| t.is_bin())
        .map(|t| t.name.clone())
        .collect();
    for bin in &bins {
        copy(&shared.join(bin), &out_dir.join(bin))?;
    }
    Ok(bins)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}
