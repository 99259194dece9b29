//! Builds the test programs: the aya-ebpf ones (crate `test-progs`) with
//! aya-build, the C ones (`c/*.c`) with clang, with BTF (`-g`) except those
//! named `*_nobtf.c`. All land in OUT_DIR.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

#[path = "../tools/build_ebpf.rs"]
mod build_ebpf;

fn main() -> anyhow::Result<()> {
    let bins = build_ebpf::build("test-progs")?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut table = String::from(
        "/// Every test object, by file name.\npub static OBJECTS: &[(&str, &[u8])] = &[\n",
    );
    for bin in &bins {
        table += &format!(
            "    ({bin:?}, aya::include_bytes_aligned!({:?})),\n",
            out.join(bin)
        );
    }
    println!("cargo:rerun-if-changed=c");
    for entry in std::fs::read_dir("c")? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "c") {
            continue;
        }
        let obj = out.join(path.with_extension("o").file_name().unwrap());
        let btf = !path.to_string_lossy().ends_with("_nobtf.c");
        let status = Command::new("clang-19")
            .args([
                "-O2",
                "-target",
                "bpf",
                "-I/usr/include/x86_64-linux-gnu",
                "-c",
            ])
            .args(btf.then_some("-g"))
            .arg(&path)
            .arg("-o")
            .arg(&obj)
            .status()
            .context("running clang-19 (run 'cargo xtask setup')")?;
        if !status.success() {
            bail!("clang-19 failed on {}", path.display());
        }
        let name = obj.file_name().unwrap().to_string_lossy().into_owned();
        table += &format!("    ({name:?}, aya::include_bytes_aligned!({obj:?})),\n");
    }
    table += "];\n";
    std::fs::write(out.join("objects.rs"), table)?;
    Ok(())
}
