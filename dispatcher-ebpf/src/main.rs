//! The fixed-slot XDP dispatcher.
//!
//! Loaded and attached once per interface, never regenerated. It holds 100
//! slot functions `slot_0` .. `slot_99` and one chain-decision function
//! `chain_decide`, all global and never inlined so that each is a target for
//! freplace (BPF_PROG_TYPE_EXT). The contract (names, layouts, sentinel)
//! lives in `dispatcher-common`.
//!
//! Per packet: read the active bitmap; if it is zero, pass. Otherwise walk
//! the set bits in slot order, one byte (8 slots) at a time so that empty
//! groups cost one test, and run each active slot; after a slot returns a
//! verdict, the chain decision says whether the next slot runs.
#![no_std]
#![no_main]

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use dispatcher_common::{
    Control, FLAG_CUSTOM_CHAIN, FLAG_STATS, SLOT_COUNT, SLOT_EMPTY, SlotConfig, SlotStats,
    XDP_ACTIONS,
};
use seq_macro::seq;

#[map]
static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

#[map]
static SLOTS: Array<SlotConfig> = Array::with_max_entries(SLOT_COUNT as u32, 0);

#[map]
static STATS: PerCpuArray<SlotStats> = PerCpuArray::with_max_entries(SLOT_COUNT as u32, 0);

/// The "slot is empty" sentinel. Read through a volatile load: a plain
/// constant would let LLVM prove what every slot returns and delete the
/// dispatcher's checks (and with them the calls).
#[inline(always)]
fn slot_empty() -> i32 {
    let v = SLOT_EMPTY;
    // SAFETY: reads a local.
    unsafe { read_volatile(&v) }
}

/// Body shared by all slots: tail-call the slot's own program array, entry 0.
/// If it is empty (or the per-packet tail-call budget is spent), the tail
/// call falls through and the slot reports itself empty.
///
/// The tail call also makes the body "packet-changing" for the verifier, so
/// an extension that rewrites the packet may replace this slot.
#[inline(always)]
fn slot_body(ctx: *mut xdp_md, progs: &ProgramArray) -> i32 {
    // Every argument must be used, or the compiler stops passing it and the
    // verifier rejects the call ("Caller passes invalid args").
    if ctx.is_null() {
        return xdp_action::XDP_ABORTED as i32;
    }
    // SAFETY: ctx is the XDP context this program was called with.
    unsafe { progs.tail_call(&XdpContext::new(ctx), 0) };
    slot_empty()
}

seq!(N in 0..100 {
    #[map]
    static SLOT_PROG_~N: ProgramArray = ProgramArray::with_max_entries(1, 0);

    /// Slot N: a freplace target, or a tail call into `SLOT_PROG_N[0]`.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn slot_~N(ctx: *mut xdp_md) -> i32 {
        slot_body(ctx, &SLOT_PROG_~N)
    }
});

seq!(N in 0..100 {
    /// Slot `I` by constant index; folds to one direct call per use.
    #[inline(always)]
    fn call_slot<const I: usize>(ctx: *mut xdp_md) -> i32 {
        match I {
            #(N => slot_~N(ctx),)*
            _ => slot_empty(),
        }
    }

    const SLOTS_DEFINED: usize = 0 #(+ { let _ = N; 1 })*;
});

// The slot functions above and the shared contract must agree.
const _: () = assert!(SLOTS_DEFINED == SLOT_COUNT);

/// The default chain rule: go on iff the slot's proceed-on mask has the
/// action's bit.
#[inline(always)]
fn default_proceed(slot: u32, action: u32) -> bool {
    match SLOTS.get(slot) {
        Some(cfg) => action < 32 && cfg.proceed_on & (1 << action) != 0,
        None => false,
    }
}

/// The chain decision, called after each filled slot: non-zero means the
/// next slot runs. Replaceable with freplace; the runtime sets
/// `FLAG_CUSTOM_CHAIN` when it links a replacement, and until then the
/// dispatcher evaluates this same default rule inline and saves the call.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn chain_decide(ctx: *mut xdp_md, slot: u32, action: u32) -> i32 {
    if ctx.is_null() {
        return 0;
    }
    default_proceed(slot, action) as i32
}

#[inline(always)]
fn count(slot: u32, action: i32) {
    if let Some(s) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU map value, valid for this program run.
        let s = unsafe { &mut *s };
        s.packets += 1;
        let a = action as u32 as usize;
        if a < XDP_ACTIONS {
            s.actions[a] += 1;
        }
    }
}

/// Runs slot `I`. `Some(verdict)` ends the chain.
#[inline(always)]
fn step<const I: usize>(ctx: *mut xdp_md, flags: u32) -> Option<u32> {
    let ret = call_slot::<I>(ctx);
    if ret == SLOT_EMPTY {
        return None;
    }
    if flags & FLAG_STATS != 0 {
        count(I as u32, ret);
    }
    let proceed = if flags & FLAG_CUSTOM_CHAIN != 0 {
        chain_decide(ctx, I as u32, ret as u32) != 0
    } else {
        default_proceed(I as u32, ret as u32)
    };
    if proceed { None } else { Some(ret as u32) }
}

/// Runs the active slots of byte group `$g` (slots `8g .. 8g+7`) of `$word`.
/// Written out at compile time, one test per slot, because the verifier and
/// the cost model both want straight-line code here: no loop, no indirect
/// call (BPF has none), and an empty group costs a single test.
macro_rules! group {
    ($ctx:ident, $word:ident, $flags:ident, $g:literal) => {{
        const BASE: usize = $g * 8;
        if ($word >> (($g % 8) * 8)) & 0xff != 0 {
            seq!(J in 0..8 {
                if BASE + J < SLOT_COUNT && $word & (1u64 << ((BASE + J) % 64)) != 0 {
                    if let Some(verdict) = step::<{ BASE + J }>($ctx, $flags) {
                        return verdict;
                    }
                }
            });
        }
    }};
}

#[xdp]
// Inlined into the entry point the macro generates: a call costs more than
// the empty dispatcher itself.
#[inline(always)]
pub fn dispatcher(ctx: XdpContext) -> u32 {
    let Some(control) = CONTROL.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let w0 = control.active[0];
    let w1 = control.active[1];
    // No active slot: the whole dispatcher is this test.
    if w0 | w1 == 0 {
        return xdp_action::XDP_PASS;
    }
    let flags = control.flags;
    let ctx = ctx.ctx;
    if w0 != 0 {
        seq!(G in 0..8 { group!(ctx, w0, flags, G); });
    }
    if w1 != 0 {
        seq!(G in 8..13 { group!(ctx, w1, flags, G); });
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
