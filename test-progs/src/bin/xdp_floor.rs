//! For the benchmark: the least an empty dispatcher with a tail-call
//! backend can cost. It reads one byte of a map value and passes when the
//! byte is 0, which it always is. The code past that test never runs; it
//! gives the program the shape of such a dispatcher, which the kernel's JIT
//! pays for in the prologue and epilogue of every run: a subprogram that
//! makes a tail call (the tail-call counter is set up) and values kept
//! across its calls (all four callee-saved registers are saved and
//! restored).
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    macros::{map, xdp},
    maps::ProgramArray,
    programs::XdpContext,
};
#[allow(unused_imports)]
use test_progs as _;

/// Always 0; in a writable map so that neither the compiler nor the
/// verifier can know it.
#[unsafe(no_mangle)]
static mut GATE: u8 = 0;

#[map]
static FLOOR_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Tail-calls `FLOOR_PROGS[0]`, as a slot does.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn floor_call(ctx: *mut xdp_md) -> i32 {
    // Use every argument, or the compiler stops passing it.
    if ctx.is_null() {
        return xdp_action::XDP_ABORTED as i32;
    }
    // SAFETY: ctx is the XDP context this program was called with.
    unsafe { FLOOR_PROGS.tail_call(&XdpContext::new(ctx), 0) };
    xdp_action::XDP_PASS as i32
}

/// Takes what the caller kept, so that it is kept across every call.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn floor_last(ctx: *mut xdp_md, a: i32, b: i32, d: i32, e: i32) -> i32 {
    if ctx.is_null() {
        return a ^ b ^ d ^ e;
    }
    floor_call(ctx) ^ a ^ b ^ d ^ e
}

#[xdp]
pub fn xdp_floor(ctx: XdpContext) -> u32 {
    // SAFETY: reads a static that nothing writes.
    if unsafe { read_volatile(addr_of!(GATE)) } == 0 {
        return xdp_action::XDP_PASS;
    }
    // Never reached. The context and three results live across a call.
    let c = ctx.ctx;
    let a = floor_call(c);
    let b = floor_call(c);
    let d = floor_call(c);
    let e = floor_call(c);
    floor_last(c, a, b, d, e) as u32
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
