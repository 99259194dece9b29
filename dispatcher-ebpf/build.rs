//! Writes the code that depends on the slot count from the contract in
//! dispatcher-common, so that the count is stated in one place:
//!
//! - `slots.rs`: the slot functions, their program arrays and `call_slot`.
//!   Every slot is a global, never-inlined function (an freplace target); a
//!   slot with an array tail-calls it.
//! - `walk.rs`: the shape of the walk over the active bitmap, one block per
//!   bitmap word and one `group!` per byte of slots, and the "no active
//!   slot" test over all words. `main.rs` says why it has this shape.
use std::fmt::Write as _;

use dispatcher_common::{ACTIVE_WORDS, SLOT_COUNT, has_prog_array, names};

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
    out += "/// Slot `I` by constant index; folds to one direct call per use.\n#[inline(always)]\nfn call_slot<const I: usize>(ctx: *mut xdp_md) -> i32 {\n    match I {\n";
    for n in 0..SLOT_COUNT {
        writeln!(out, "        {n} => {}{n}(ctx),", names::SLOT_FN_PREFIX).unwrap();
    }
    out += "        _ => slot_empty(),\n    }\n}\n";
    out
}

/// `walk_words!(ctx, control, w0, end, STATS, CHAIN)`: word 0 (already
/// read, `w0`), then each further word read when the walk gets there; each
/// word skipped whole when zero, else its byte groups one `group!` each, up
/// to the last group that holds a slot. `no_active_slot!(control, w0)`: are
/// all words zero?
fn walk() -> String {
    let groups = SLOT_COUNT.div_ceil(8);
    let mut out = String::new();
    out += "/// The walk over every bitmap word, generated from the slot count.\n";
    out += "macro_rules! walk_words {\n";
    out += "    ($ctx:ident, $control:ident, $w0:ident, $end:ident, $stats:ident, $chain:ident) => {\n";
    for w in 0..ACTIVE_WORDS {
        let word = if w == 0 {
            "$w0".to_string()
        } else {
            let word = format!("w{w}");
            writeln!(out, "        let {word} = $control.active[{w}];").unwrap();
            word
        };
        writeln!(out, "        if {word} != 0 {{").unwrap();
        for g in 8 * w..groups.min(8 * w + 8) {
            writeln!(
                out,
                "            group!($ctx, $control, {word}, $end, $stats, $chain, {g});"
            )
            .unwrap();
        }
        out += "        }\n";
    }
    out += "    };\n}\n";
    out += "/// No active slot: every bitmap word is zero (`w0` is word 0, already read).\n";
    out += "macro_rules! no_active_slot {\n";
    let words: Vec<String> = (0..ACTIVE_WORDS)
        .map(|w| match w {
            0 => "$w0".to_string(),
            _ => format!("$control.active[{w}]"),
        })
        .collect();
    writeln!(
        out,
        "    ($control:ident, $w0:ident) => {{\n        {} == 0\n    }};\n}}",
        words.join(" | ")
    )
    .unwrap();
    out
}
