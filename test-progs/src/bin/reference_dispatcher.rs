//! Reference for the benchmark: a "regenerated" dispatcher in the style of
//! libxdp's, where the number of programs is fixed when the object is loaded.
//!
//! `NUM_PROGS` and `CHAIN_CALL_ACTIONS` live in `.rodata`; the loader sets
//! them (aya `EbpfLoader::set_global`) and the kernel freezes the map, so the
//! verifier knows their values and removes the calls past `NUM_PROGS`. Each
//! `ref_N` is a global, never inlined function that tail-calls `REF_PROGS[N]`
//! (a constant index, the same mechanism as the fixed dispatcher's slots, with
//! no gating), and the chain rule is checked inline after each call:
//! `if (1 << ret) & mask == 0 { return ret }`.
//!
//! It exists only to be measured against the fixed-slot dispatcher.
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    macros::{map, xdp},
    maps::ProgramArray,
    programs::XdpContext,
};
#[allow(unused_imports)]
use test_progs as _;

/// Most calls the reference can make (one more than the tail-call limit).
const MAX_PROGS: usize = 34;

/// What a `ref_N` returns when its tail call does not happen: not an XDP
/// action; the loader puts its bit into every chain mask so the chain goes
/// on, as libxdp does with its dispatcher return value.
const FALLBACK_RETVAL: i32 = 31;

/// Number of calls made, set at load time.
#[unsafe(no_mangle)]
static NUM_PROGS: u32 = 0;

/// Chain masks (`1 << action` set: go on), set at load time.
#[unsafe(no_mangle)]
static CHAIN_CALL_ACTIONS: [u32; MAX_PROGS] = [0; MAX_PROGS];

#[map]
static REF_PROGS: ProgramArray = ProgramArray::with_max_entries(MAX_PROGS as u32, 0);

#[inline(always)]
fn fallback() -> i32 {
    let v = FALLBACK_RETVAL;
    // SAFETY: reads a local; volatile so the compiler cannot fold the value
    // into the caller and drop its checks.
    unsafe { read_volatile(&v) }
}

seq_macro::seq!(N in 0..34 {
    /// Call N: tail-calls `REF_PROGS[N]`.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn ref_~N(ctx: *mut xdp_md) -> i32 {
        // Use every argument, or the compiler stops passing it.
        if ctx.is_null() {
            return xdp_action::XDP_ABORTED as i32;
        }
        // SAFETY: ctx is the XDP context this program was called with.
        unsafe { REF_PROGS.tail_call(&XdpContext::new(ctx), N) };
        fallback()
    }
});

#[inline(always)]
fn num_progs() -> u32 {
    // SAFETY: reads a static; volatile so that the load stays in the code
    // and the verifier (which knows the frozen value) prunes, not LLVM.
    unsafe { read_volatile(&NUM_PROGS) }
}

#[inline(always)]
fn chain_mask(i: usize) -> u32 {
    // SAFETY: as above; `i` is a constant below MAX_PROGS.
    unsafe { read_volatile(&CHAIN_CALL_ACTIONS[i]) }
}

#[xdp]
#[inline(always)]
// The unrolled test is `num <= N` for every N, 0 included.
#[allow(clippy::absurd_extreme_comparisons)]
pub fn reference_dispatcher(ctx: XdpContext) -> u32 {
    let num = num_progs();
    let ctx = ctx.ctx;
    seq_macro::seq!(N in 0..34 {
        if num <= N {
            return xdp_action::XDP_PASS;
        }
        let ret = ref_~N(ctx) as u32;
        if 1u32.wrapping_shl(ret) & chain_mask(N) == 0 {
            return ret;
        }
    });
    xdp_action::XDP_PASS
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
