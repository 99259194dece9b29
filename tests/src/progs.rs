//! The test programs built by build.rs, as files on disk (what a user hands
//! to `slotctl claim`) and as bytes.
use std::path::PathBuf;

/// Path of a built test object: aya-ebpf ones by binary name (`xdp_pass`,
/// `xdp_drop`, `xdp_count`, `xdp_rewrite`, `xdp_log`), C ones with `.o`
/// (`xdp_pass_cfg.o`, `xdp_count_c.o`, `bad_verifier.o`, `kprobe_only.o`).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join(name)
}

/// Contents of a built test object.
pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).unwrap_or_else(|e| panic!("reading test object {name}: {e}"))
}
