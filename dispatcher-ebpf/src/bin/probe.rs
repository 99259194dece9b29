//! The smallest freplace set-up: `probe_main` calls the global function
//! `probe_target`; the runtime loads `probe_ext` as its extension. If that
//! load succeeds, this kernel allows freplace. Never attached anywhere.
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    macros::xdp,
    programs::XdpContext,
};

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn probe_target(ctx: *mut xdp_md) -> i32 {
    if ctx.is_null() {
        return xdp_action::XDP_ABORTED as i32;
    }
    let v = xdp_action::XDP_PASS as i32;
    // SAFETY: reads a local; volatile keeps the call in the caller.
    unsafe { read_volatile(&v) }
}

#[xdp]
pub fn probe_main(ctx: XdpContext) -> u32 {
    probe_target(ctx.ctx) as u32
}

#[xdp]
pub fn probe_ext(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Put into a slot's program array by the tail-call probe: the dispatcher
/// must return its verdict.
#[xdp]
pub fn probe_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Loads only where the kernel knows multi-buffer XDP (frags).
#[xdp(frags)]
pub fn probe_frags(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
