//! The test programs built by build.rs, embedded in the test binaries (so
//! they also run inside the VM suite's initramfs), and written out as files
//! on demand: a file is what a user hands to `slotctl claim`.
use std::path::PathBuf;

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

/// A file holding the test object `name`: `<tmp>/slots-test-objects/
/// <content hash>/<name>`, shared by every test process of this build and
/// written once (to a private name, then renamed into place, so a reader
/// never sees half a file). Keyed by content, so runs leave one small
/// directory per build rather than one per process.
pub fn path(name: &str) -> PathBuf {
    use std::hash::{Hash as _, Hasher as _};
    let bytes = bytes(name);
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    let dir = std::env::temp_dir()
        .join("slots-test-objects")
        .join(format!("{:016x}", h.finish()));
    let p = dir.join(name);
    if !p.exists() {
        std::fs::create_dir_all(&dir).expect("creating the test object directory");
        let tmp = dir.join(format!(".{name}.{}", crate::netns::unique("w")));
        std::fs::write(&tmp, bytes).expect("writing a test object");
        std::fs::rename(&tmp, &p).expect("renaming a test object into place");
    }
    p
}
