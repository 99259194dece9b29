//! The fixed-slot XDP dispatcher.
//!
//! Loaded and attached once per interface, never regenerated. It holds
//! `SLOT_COUNT` slot functions `slot_0`, `slot_1`, ... and one
//! chain-decision function `chain_decide`, all global and never inlined so
//! that each is a target for freplace (BPF_PROG_TYPE_EXT). The contract
//! (slot count, names, layouts, sentinel) lives in `dispatcher-common`; the
//! code that depends on the slot count is generated from it by build.rs.
//!
//! Per packet: pick the run table `CONTROL.current` names; if it is empty,
//! pass. Otherwise run the slot at each position in turn (`run_slot`
//! reaches a slot chosen at run time); after a slot returns a verdict, the
//! chain decision says whether the next position runs. The walk is compiled
//! once per combination of the two flags (counters, custom chain), so the
//! common case tests neither.
// no_std and no_main for BPF; on the host (`cargo clippy --workspace`
// builds every member) an empty program, so the workspace checks whole.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `low_bit` hides a value from the compiler with an asm statement.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

use core::ptr::read_volatile;

use aya_ebpf::helpers::bpf_xdp_adjust_tail;
use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use dispatcher_common::{
    Control, FLAG_CUSTOM_CHAIN, FLAG_STATS, RunTable, SLOT_COUNT, SLOT_EMPTY, SlotConfig,
    SlotStats, in_order_slot,
};

/// The control record: one global in a data section of its own, which
/// the loader makes a one-entry array map. The code reaches it as a direct
/// pointer to the map's value (a constant address, `BPF_PSEUDO_MAP_VALUE`)
/// rather than through a map lookup: no key on the stack, no index
/// arithmetic, no null test, before a packet learns that no slot is active.
/// Zero here; the runtime writes it before attaching. `no_mangle` keeps it
/// visible outside this object, so the compiler cannot treat it as the
/// constant it starts as.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.CONTROL")]
static mut CONTROL: Control = Control::ZERO;

/// The control record as packets see it.
#[inline(always)]
fn control() -> &'static Control {
    // SAFETY: the map value lives as long as the program; only userspace
    // writes it, with single stores to what a packet reads once (see
    // "Run order" in docs/design.md).
    unsafe { &*core::ptr::addr_of!(CONTROL) }
}

/// `v & 1`, computed where the compiler cannot see it: it then knows no
/// more than that the result is a number, so it cannot pick between two
/// constants with a branch. In asm rather than through `black_box`, which
/// goes through the stack (a store and a load on every packet); and a real
/// instruction, since an empty asm statement leaves a line-info record on
/// no instruction of its own, which the kernel refuses.
#[inline(always)]
fn low_bit(mut v: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    // SAFETY: one ALU instruction on `v`'s own register; no memory.
    unsafe {
        core::arch::asm!("{0} &= 1", inout(reg) v, options(pure, nomem, nostack));
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        v &= 1;
    }
    v
}

/// The claim records. Only userspace reads them; declared here so that they
/// are created, pinned and removed with the dispatcher.
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

/// Body of a slot with a program array: tail-call entry 0. If it is empty
/// (or the per-packet tail-call budget is spent), the tail call falls
/// through and the slot reports itself empty.
///
/// The tail call also makes the body "packet-changing" for the verifier, so
/// an extension that rewrites the packet may replace this slot.
#[inline(always)]
fn slot_tail_call(ctx: *mut xdp_md, progs: &ProgramArray) -> i32 {
    // Every argument must be used, or the compiler stops passing it and the
    // verifier rejects the call ("Caller passes invalid args").
    if ctx.is_null() {
        return xdp_action::XDP_ABORTED as i32;
    }
    // SAFETY: ctx is the XDP context this program was called with.
    unsafe { progs.tail_call(&XdpContext::new(ctx), 0) };
    slot_empty()
}

/// Body of a slot without a program array (freplace only). The no-op
/// `bpf_xdp_adjust_tail(ctx, 0)` marks it packet-changing, which the
/// verifier requires before a packet-changing extension may replace it.
#[inline(always)]
fn slot_no_array(ctx: *mut xdp_md) -> i32 {
    if ctx.is_null() {
        return xdp_action::XDP_ABORTED as i32;
    }
    // SAFETY: ctx is the XDP context; a zero delta changes nothing.
    unsafe { bpf_xdp_adjust_tail(ctx, 0) };
    slot_empty()
}

// slot_0, slot_1, ..., their program arrays and `run_slot`, generated by
// build.rs from the contract in dispatcher-common.
include!(concat!(env!("OUT_DIR"), "/slots.rs"));

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
    proceeds(control(), slot as usize, action) as i32
}

/// The default chain rule: go on iff the slot's proceed-on mask has the
/// action's bit.
#[inline(always)]
fn proceeds(control: &Control, slot: usize, action: u32) -> bool {
    match control.proceed_on.get(slot) {
        Some(mask) => action < 8 && (*mask >> action) & 1 != 0,
        None => false,
    }
}

#[inline(always)]
fn count(slot: u32, action: i32) {
    if let Some(s) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU map value, valid for this program run.
        let s = unsafe { &mut *s };
        s.packets += 1;
        // One add per action at a constant offset, not `actions[action]`:
        // LLVM bounds-checks a copy of the index register and indexes with
        // another, and older verifiers (6.1) lose the bound between the two.
        let a = action as u32;
        for (i, n) in s.actions.iter_mut().enumerate() {
            *n += (a == i as u32) as u64;
        }
    }
}

/// Runs `slot`. `Some(verdict)` ends the chain. `STATS` and `CHAIN` are
/// the flags, fixed per walk so that the common case (both off) tests
/// neither per slot.
#[inline(always)]
fn step<const STATS: bool, const CHAIN: bool, const INLINE: bool>(
    ctx: *mut xdp_md,
    control: &Control,
    slot: u32,
) -> Option<u32> {
    let ret = if INLINE {
        call_slot(ctx, slot)
    } else {
        run_slot(ctx, slot)
    };
    if !STATS && !CHAIN {
        // The common walk tests a verdict once: an XDP action is below 8
        // and the empty sentinel is not, so the sentinel is looked for
        // only off the usual path.
        let action = ret as u32;
        if action >= 8 {
            // Laid out off the straight line the walk takes.
            core::hint::cold_path();
            return if ret == SLOT_EMPTY {
                None
            } else {
                Some(action)
            };
        }
        return if proceeds(control, slot as usize, action) {
            None
        } else {
            Some(action)
        };
    }
    if ret == SLOT_EMPTY {
        return None;
    }
    if STATS {
        count(slot, ret);
    }
    let proceed = if CHAIN {
        chain_decide(ctx, slot, ret as u32) != 0
    } else {
        proceeds(control, slot as usize, ret as u32)
    };
    if proceed { None } else { Some(ret as u32) }
}

/// Positions whose slot call is inlined in the common walk (no counters,
/// default chain rule). Each inlined call is a tree of compares of its
/// own, so the branches at one position always go the same way for a
/// given order and are predicted; and it saves a call and a return per
/// slot, which costs several nanoseconds where returns are mitigated
/// (retbleed/SRSO thunks). Past these, and in the other walks, the slot is
/// reached through `run_slot`. Each inlined position costs the verifier
/// more than the one before (about 7,500 more instructions to check, and a
/// longer path to track): 10 positions load in a quarter of the time 33
/// took, and cover the chains hosts run (docs/benchmarks.md).
const INLINE_POSITIONS: usize = 10;

/// Run position `$p` (a constant): past the table's end the packet passes;
/// otherwise the slot the table names there runs. Written out at compile
/// time, one per position: the verifier then checks a straight line whose
/// length it knows, with no loop to bound.
macro_rules! position {
    ($ctx:ident, $control:ident, $table:ident, $len:ident, $stats:ident, $chain:ident, $p:literal) => {
        let slot = $table.order[$p] as u32;
        let verdict = if $p < INLINE_POSITIONS && !$stats && !$chain {
            // The slots claims in run order get (tail call, freplace):
            // constants, so the call and the chain rule's mask need no
            // tree and no index. Neither is 0 past position 0 and entries
            // past the table's end are 0 (`RunTable`), so a match is inside
            // the table: the end is tested only off this path. (Position 0
            // is inside: an empty table has passed already.) Any other slot
            // goes through the tree.
            const TAIL_CALL: u32 = in_order_slot($p) as u32;
            const FREPLACE: u32 = $p;
            const _: () = assert!($p == 0 || (TAIL_CALL != 0 && FREPLACE != 0));
            if slot == TAIL_CALL {
                step::<$stats, $chain, true>($ctx, $control, TAIL_CALL)
            } else if FREPLACE != TAIL_CALL && slot == FREPLACE {
                step::<$stats, $chain, true>($ctx, $control, FREPLACE)
            } else {
                if $len <= $p {
                    return xdp_action::XDP_PASS;
                }
                step::<$stats, $chain, true>($ctx, $control, slot)
            }
        } else {
            if $len <= $p {
                return xdp_action::XDP_PASS;
            }
            step::<$stats, $chain, false>($ctx, $control, slot)
        };
        if let Some(verdict) = verdict {
            return verdict;
        }
    };
}

// `walk_positions!`, generated by build.rs from the slot count: one
// `position!` per run position.
include!(concat!(env!("OUT_DIR"), "/walk.rs"));

/// Runs the table's positions in order.
#[inline(always)]
fn walk<const STATS: bool, const CHAIN: bool>(
    ctx: *mut xdp_md,
    control: &Control,
    table: &RunTable,
    len: u32,
) -> u32 {
    walk_positions!(ctx, control, table, len, STATS, CHAIN);
    xdp_action::XDP_PASS
}

/// The entry point, named `dispatcher_common::names::DISPATCHER`: what
/// bpftool and `ip link` show on the interface.
#[xdp]
// Inlined into the entry point the macro generates: a call costs more than
// the empty dispatcher itself.
#[inline(always)]
pub fn xdp_slots(ctx: XdpContext) -> u32 {
    let control = control();
    // `current` is read once: the packet then follows that table only,
    // which userspace never writes while a packet may read it.
    // SAFETY: reads a field of the control record.
    let current = unsafe { read_volatile(&control.current) };
    // The table is reached by arithmetic on an index the compiler cannot
    // see is 0 or 1 (else it picks between two constant addresses with a
    // branch). So the verifier checks the walk once, for an offset of 0 or
    // one table (`& 1`), not once per table: a third fewer instructions to
    // verify at attach. And the table's address is worked out once, not
    // again at every run position.
    let index = low_bit(current as usize);
    // SAFETY: `index` is 0 or 1, and there are two tables.
    let table = unsafe { control.tables.get_unchecked(index) };
    let len = table.len as u32;
    // No active slot: the whole dispatcher is this test.
    if len == 0 {
        return xdp_action::XDP_PASS;
    }
    let ctx = ctx.ctx;
    let flags = control.flags;
    // One test for the common case: no counters, default chain rule.
    if flags & (FLAG_STATS | FLAG_CUSTOM_CHAIN) == 0 {
        return walk::<false, false>(ctx, control, table, len);
    }
    match (flags & FLAG_STATS != 0, flags & FLAG_CUSTOM_CHAIN != 0) {
        (true, false) => walk::<true, false>(ctx, control, table, len),
        (false, true) => walk::<false, true>(ctx, control, table, len),
        _ => walk::<true, true>(ctx, control, table, len),
    }
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
