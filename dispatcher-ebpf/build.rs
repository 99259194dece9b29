//! Writes the code that depends on the slot count from the contract in
//! dispatcher-common, so that the count is stated in one place:
//!
//! - `slots.rs`: the slot functions, their program arrays and `run_slot`.
//!   Every slot is a global, never-inlined function (an freplace target); a
//!   slot with an array tail-calls it.
//! - `walk.rs`: the walk over the run positions, one `position!` each.
//!   `main.rs` says why it has this shape.
use std::fmt::Write as _;

use dispatcher_common::{SLOT_COUNT, has_prog_array, names};

fn main() {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("slots.rs"), slots()).unwrap();
    std::fs::write(out_dir.join("walk.rs"), walk()).unwrap();
}

fn slots() -> String {
    let mut out = String::new();
    for n in 0..SLOT_COUNT {
        let body = if has_prog_array(n) {
            writeln!(
                out,
                "#[map]\nstatic {p}{n}: ProgramArray = ProgramArray::with_max_entries(1, 0);",
                p = names::SLOT_PROG_MAP_PREFIX
            )
            .unwrap();
            format!("slot_tail_call(ctx, &{}{n})", names::SLOT_PROG_MAP_PREFIX)
        } else {
            "slot_no_array(ctx)".to_string()
        };
        writeln!(
            out,
            "/// Slot {n}.\n#[unsafe(no_mangle)]\n#[inline(never)]\npub extern \"C\" fn {f}{n}(ctx: *mut xdp_md) -> i32 {{\n    {body}\n}}",
            f = names::SLOT_FN_PREFIX
        )
        .unwrap();
    }
    // BPF has no indirect calls: a slot chosen at run time is reached
    // through a match that branches to each slot's direct call. The
    // compiler lowers it to a balanced tree of compares (BPF has no jump
    // tables), about log2(SLOT_COUNT) of them per call. `call_slot` is that
    // match, inlined where the walk is hot; `run_slot` is the same match in
    // one global function, verified once, for the positions past those.
    out += "/// Runs slot `slot` (a run table entry); an out-of-range slot is empty.\n#[inline(always)]\nfn call_slot(ctx: *mut xdp_md, slot: u32) -> i32 {\n    match slot {\n";
    for n in 0..SLOT_COUNT {
        writeln!(out, "        {n} => {}{n}(ctx),", names::SLOT_FN_PREFIX).unwrap();
    }
    out += "        _ => slot_empty(),\n    }\n}\n";
    out += "/// [`call_slot`] as one global function.\n#[unsafe(no_mangle)]\n#[inline(never)]\npub extern \"C\" fn run_slot(ctx: *mut xdp_md, slot: u32) -> i32 {\n    if ctx.is_null() {\n        return xdp_action::XDP_ABORTED as i32;\n    }\n    call_slot(ctx, slot)\n}\n";
    out
}

/// `walk_positions!(ctx, control, table, len, STATS, CHAIN)`: one
/// `position!` per run position a table can hold.
fn walk() -> String {
    let mut out = String::new();
    out += "/// The walk over every run position, generated from the slot count.\n";
    out += "macro_rules! walk_positions {\n";
    out += "    ($ctx:ident, $control:ident, $table:ident, $len:ident, $stats:ident, $chain:ident) => {\n";
    for p in 0..SLOT_COUNT {
        writeln!(
            out,
            "        position!($ctx, $control, $table, $len, $stats, $chain, {p});"
        )
        .unwrap();
    }
    out += "    };\n}\n";
    out
}
