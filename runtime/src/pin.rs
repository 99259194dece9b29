//! Names of the pins in an interface's state directory (see
//! docs/design.md, "State layout").

/// The XDP link: the dispatcher on the interface (it survives us).
pub const LINK: &str = "link";
/// The dispatcher program (freplace target, map lookup).
pub const DISPATCHER: &str = "dispatcher";
/// The `CONTROL` map.
pub const CONTROL: &str = "control";
/// The `SLOTS` map: claim records.
pub const SLOTS: &str = "slots";
/// The `STATS` map: per-slot counters.
pub const STATS: &str = "stats";
/// The `ORIGINS` map: each claim's object and program name (userspace
/// only; absent in state attached by earlier versions).
pub const ORIGINS: &str = "origins";
/// A persistent custom chain-decision link.
pub const CHAIN: &str = "chain";
/// The directory of the claims' own map pins: `maps/<claim>/<map>` (see
/// docs/design.md, "Maps pinned by name"); present while a claim has one.
pub const MAPS: &str = "maps";

/// Slot `n`'s program array (tail-call backend), pinned while the slot is
/// free or holds a persistent tail-call claim.
pub fn prog(n: usize) -> String {
    format!("prog_{n}")
}

/// Slot `n`'s persistent extension link (freplace backend).
pub fn ext(n: usize) -> String {
    format!("ext_{n}")
}
