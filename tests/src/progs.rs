//! The test programs built by build.rs, embedded in the test binaries (so
//! they also run inside the VM suite's initramfs), and written out as files
//! on demand: a file is what a user hands to `slotctl claim`.
use std::{path::PathBuf, sync::OnceLock};

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

/// Contents of a test object: aya-ebpf ones by binary name (`xdp_pass`,
/// `xdp_drop`, `xdp_count`, `xdp_rewrite`, `xdp_log`), C ones with `.o`
/// (`xdp_pass_cfg.o`, `xdp_count_c.o`, `bad_verifier.o`, `kprobe_only.o`).
pub fn bytes(name: &str) -> &'static [u8] {
    OBJECTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("no test object named {name}"))
}

/// A file holding the test object `name`, in a directory private to this
/// process (written once, removed by nobody: it is tiny and under /tmp).
pub fn path(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("slots-test-objects-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("creating the test object directory");
        d
    });
    let p = dir.join(name);
    if !p.exists() {
        std::fs::write(&p, bytes(name)).expect("writing a test object");
    }
    p
}
