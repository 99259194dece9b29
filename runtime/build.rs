//! Builds the eBPF dispatcher with aya-build and leaves it in OUT_DIR, where
//! `src/dispatcher.rs` embeds it: the library can never lose its dispatcher.
#[path = "../tools/build_ebpf.rs"]
mod build_ebpf;

fn main() -> anyhow::Result<()> {
    build_ebpf::build("dispatcher-ebpf").map(drop)
}
