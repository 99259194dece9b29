//! Writes the slot functions (`slots.rs` in OUT_DIR) from the contract in
//! dispatcher-common, so that which slots have a program array is decided
//! in one place. Every slot is a global, never-inlined function (an
//! freplace target); a slot with an array tail-calls it.
use std::fmt::Write as _;

use dispatcher_common::{SLOT_COUNT, has_prog_array, names};

fn main() {
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
    out += "/// Slot `I` by constant index; folds to one direct call per use.\n#[inline(always)]\nfn call_slot<const I: usize>(ctx: *mut xdp_md) -> i32 {\n    match I {\n";
    for n in 0..SLOT_COUNT {
        writeln!(out, "        {n} => {}{n}(ctx),", names::SLOT_FN_PREFIX).unwrap();
    }
    out += "        _ => slot_empty(),\n    }\n}\n";
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("slots.rs");
    std::fs::write(path, out).unwrap();
}
