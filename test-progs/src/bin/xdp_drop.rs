//! Drops IPv4/UDP, passes the rest (so the veth's own chatter still flows).
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use test_progs::is_ipv4_udp;

#[xdp]
pub fn xdp_drop(ctx: XdpContext) -> u32 {
    if is_ipv4_udp(&ctx) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
