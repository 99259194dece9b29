//! Returns XDP_TX: the sender of `cargo xtask bench --traffic`. Run with
//! BPF_PROG_TEST_RUN in live-frames mode on a veth's receive queue, each
//! frame leaves through that veth and arrives at its peer's XDP program.
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
#[allow(unused_imports)]
use test_progs as _;

#[xdp]
pub fn xdp_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
