//! Changes packet data (bpf_xdp_adjust_head out and back), then passes: the
//! verifier treats it as packet-changing, which freplace only allows over a
//! slot whose own body is packet-changing.
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext,
};
#[allow(unused_imports)]
use test_progs as _;

#[xdp]
pub fn xdp_rewrite(ctx: XdpContext) -> u32 {
    // SAFETY: ctx is this program's XDP context.
    unsafe {
        if bpf_xdp_adjust_head(ctx.ctx, -4) != 0 || bpf_xdp_adjust_head(ctx.ctx, 4) != 0 {
            return xdp_action::XDP_ABORTED;
        }
    }
    xdp_action::XDP_PASS
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
