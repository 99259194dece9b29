//! The dispatcher contract, stated once.
//!
//! Everything the eBPF dispatcher and the userspace runtime must agree on
//! lives here: how many slots there are, the names of the functions and maps,
//! the layout of every map value, and the value a slot returns when it is
//! empty. Both sides compile this crate, so they cannot drift apart.
//!
//! # The datapath in one paragraph
//! The dispatcher reads the run table packets currently use
//! ([`Control::current`] picks one of [`Control::tables`]) and calls
//! `slot_N(ctx)` for the slot `N` at each run position in turn. An empty slot
//! (no extension linked, nothing in its program array) returns
//! [`SLOT_EMPTY`] and the dispatcher moves on. A filled slot returns an XDP
//! action; the chain decision (`chain_decide`, or the same rule inline) then
//! decides whether the next position runs, from the slot's
//! [`Control::proceed_on`] mask. When the table runs out, the packet gets
//! `XDP_PASS`. The slot index says nothing about order: the table does.
#![no_std]

/// Number of slots in the dispatcher: `slot_0` .. `slot_<SLOT_COUNT - 1>`.
///
/// Changing it is this one edit: the eBPF dispatcher generates its slot
/// functions, program arrays and walk from it (its build.rs), and the
/// assertions below refuse a count that the layout or the kernel cannot take.
pub const SLOT_COUNT: usize = 100;

/// Functions one BPF program may have, itself included (the kernel's
/// BPF_MAX_SUBPROGS).
pub const MAX_SUBPROGS: usize = 256;

/// Functions of the dispatcher program besides the slots: the entry point,
/// `chain_decide` and `run_slot`.
pub const OTHER_FUNCS: usize = 3;

/// Most slots the dispatcher can hold: a run table names a slot in a byte,
/// and every slot is a function of one program (see the assertions below).
pub const MAX_SLOT_COUNT: usize = MAX_SUBPROGS - OTHER_FUNCS;

// Limits the slot count implies.
const _: () = assert!(SLOT_COUNT >= 1, "SLOT_COUNT: at least one slot");
const _: () = assert!(
    SLOT_COUNT <= u8::MAX as usize,
    "SLOT_COUNT: a run table holds slots and its length in bytes"
);
const _: () = assert!(
    SLOT_COUNT + OTHER_FUNCS <= MAX_SUBPROGS,
    "SLOT_COUNT: every slot is a function of the dispatcher program, and the \
     verifier takes at most MAX_SUBPROGS (256) functions per program"
);
const _: () = assert!(
    names::SLOT_PROG_MAP_PREFIX.len() + decimal_digits(SLOT_COUNT - 1) < MAX_MAP_NAME,
    "SLOT_COUNT: slot program array names must fit the kernel's map name"
);

/// Longest map name the kernel takes, with its NUL (BPF_OBJ_NAME_LEN).
pub const MAX_MAP_NAME: usize = 16;

const fn decimal_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// What a slot returns when nothing fills it. Not an XDP action (those are
/// 0..=4), so the dispatcher can tell "empty" from any verdict. The eBPF side
/// reads it through a volatile load so the compiler cannot fold it.
pub const SLOT_EMPTY: i32 = 0x5107;

/// Maps one BPF program may use (the kernel's MAX_USED_MAPS).
pub const MAX_USED_MAPS: usize = 64;

/// Maps the dispatcher's code uses besides the slots' program arrays:
/// CONTROL and STATS (SLOTS is only userspace's).
pub const OTHER_MAPS: usize = 2;

/// Program arrays the dispatcher can use: [`MAX_USED_MAPS`] less
/// [`OTHER_MAPS`].
pub const PROG_ARRAY_BUDGET: usize = MAX_USED_MAPS - OTHER_MAPS;

/// Slots out of `slots` with a program array under the pattern "the first
/// `per` of every `period` slots".
const fn pattern_slots(slots: usize, period: usize, per: usize) -> usize {
    let rest = slots % period;
    slots / period * per + if rest < per { rest } else { per }
}

/// `(period, per)` for `slots` slots: the densest pattern "the first `per`
/// of every `period` slots", with a period of at most 5 so that every
/// priority range has some, whose arrays fit [`PROG_ARRAY_BUDGET`]; on a tie
/// the shorter period. With 100 slots: `(5, 3)`, 60 arrays.
pub const fn prog_array_pattern(slots: usize) -> (usize, usize) {
    let mut best = (1, 0);
    let mut best_slots = 0;
    let mut period = 1;
    while period <= 5 {
        let mut per = 1;
        while per <= period {
            let n = pattern_slots(slots, period, per);
            if n <= PROG_ARRAY_BUDGET && n > best_slots {
                best = (period, per);
                best_slots = n;
            }
            per += 1;
        }
        period += 1;
    }
    best
}

/// [`prog_array_pattern`] of [`SLOT_COUNT`].
pub const PROG_ARRAY_PATTERN: (usize, usize) = prog_array_pattern(SLOT_COUNT);

/// Can slot `n` be filled by tail call, i.e. does it have its own
/// single-entry program array? Every slot is an freplace target, but one
/// program may use only [`MAX_USED_MAPS`] maps, so only some slots get an
/// array: the first `per` of every `period` slots ([`PROG_ARRAY_PATTERN`]),
/// so that every priority range has some. With 100 slots that is
/// `n % 5 < 3`, 60 arrays. (At most [`MAX_TAIL_CALLS`] of them can run per
/// packet anyway.)
pub const fn has_prog_array(n: usize) -> bool {
    n < SLOT_COUNT && n % PROG_ARRAY_PATTERN.0 < PROG_ARRAY_PATTERN.1
}

/// The slot the runtime gives the claim at run position `p` when claims
/// arrive in run order with the tail-call backend: the `p`-th slot with a
/// program array (placement takes the lowest free slot the backend can
/// fill). With freplace it is slot `p` itself. The dispatcher tests these
/// two first at each inlined run position, so a chain claimed in run order
/// (a boot-time `apply`, claims in ascending priority) skips the tree of
/// compares that reaches any other slot. `SLOT_COUNT` when there is no such
/// slot.
pub const fn in_order_slot(p: usize) -> usize {
    let mut seen = 0;
    let mut n = 0;
    while n < SLOT_COUNT {
        if has_prog_array(n) {
            if seen == p {
                return n;
            }
            seen += 1;
        }
        n += 1;
    }
    SLOT_COUNT
}

/// Number of slots with a program array.
pub const TAIL_CALL_SLOTS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < SLOT_COUNT {
        if has_prog_array(i) {
            n += 1;
        }
        i += 1;
    }
    n
};

const _: () = assert!(
    TAIL_CALL_SLOTS + OTHER_MAPS <= MAX_USED_MAPS,
    "more program arrays than one program may use maps"
);
const _: () = assert!(
    TAIL_CALL_SLOTS
        >= if SLOT_COUNT < MAX_TAIL_CALLS {
            SLOT_COUNT
        } else {
            MAX_TAIL_CALLS
        },
    "the tail-call backend must be able to fill as many slots as may run per packet"
);

/// The kernel stops tail calls after this many per packet (MAX_TAIL_CALL_CNT
/// is 33): with the tail-call backend at most this many slots can be active.
pub const MAX_TAIL_CALLS: usize = 33;

/// Number of XDP actions counted per slot: ABORTED, DROP, PASS, TX, REDIRECT.
pub const XDP_ACTIONS: usize = 5;

const _: () = assert!(
    XDP_ACTIONS <= 8,
    "a proceed-on mask holds one bit per action in a byte"
);

/// Proceed-on mask bit for an XDP action (`1 << action`); masks hold the
/// five actions in a byte.
pub const fn action_bit(action: u32) -> u32 {
    1 << action
}

/// The default proceed-on mask: go on to the next slot on `XDP_PASS` only.
pub const DEFAULT_PROCEED_ON: u32 = action_bit(2);

/// Names of the programs, functions and maps in the dispatcher object.
pub mod names {
    /// The XDP entry point: the program name bpftool and `ip link` show
    /// on an interface, and how a dispatcher of ours whose link is going
    /// away is recognised there. The kernel keeps 15 bytes of a name.
    pub const DISPATCHER: &str = "xdp_slots";

    const _: () = assert!(
        DISPATCHER.len() <= 15,
        "the kernel truncates program names to 15 bytes"
    );
    /// Slot functions are `slot_0` .. `slot_<SLOT_COUNT - 1>`.
    pub const SLOT_FN_PREFIX: &str = "slot_";
    /// The replaceable chain-decision function.
    pub const CHAIN_FN: &str = "chain_decide";
    /// `Array<Control>`, one entry: the global `CONTROL` in its own data
    /// section, which names the map the loader makes of it.
    pub const CONTROL_MAP: &str = ".data.CONTROL";
    /// `Array<SlotConfig>`, one entry per slot.
    pub const SLOTS_MAP: &str = "SLOTS";
    /// `PerCpuArray<SlotStats>`, one entry per slot.
    pub const STATS_MAP: &str = "STATS";
    /// One single-entry `ProgramArray` per tail-call slot (see
    /// [`has_prog_array`](crate::has_prog_array)): `SLOT_PROG_<n>`.
    pub const SLOT_PROG_MAP_PREFIX: &str = "SLOT_PROG_";
}

/// Magic in [`Control::magic`]: identifies our dispatcher on an interface.
pub const CONTROL_MAGIC: u32 = 0x5105_d15c;
/// Layout version of the maps below; bumped on any incompatible change.
/// 1: slot order was run order (an active bitmap); 2: run tables.
pub const LAYOUT_VERSION: u32 = 2;

/// [`Control::flags`]: count packets and verdicts per slot in `STATS`.
pub const FLAG_STATS: u32 = 1 << 0;
/// [`Control::flags`]: a replacement `chain_decide` is linked; call it
/// instead of evaluating the default rule inline.
pub const FLAG_CUSTOM_CHAIN: u32 = 1 << 1;

/// A run order: which slot runs at each position.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RunTable {
    /// Positions in use: the walk runs `order[0..len]`.
    pub len: u8,
    /// The slot at each position; the entries past `len` are 0. The
    /// dispatcher relies on that: at its first run positions it tests the
    /// entry before `len` (see `position!` in dispatcher-ebpf), so a
    /// non-zero entry past the end may run. [`RunTable::from_slots`]
    /// writes whole tables.
    pub order: [u8; SLOT_COUNT],
}

impl RunTable {
    /// No position in use.
    pub const EMPTY: Self = Self {
        len: 0,
        order: [0; SLOT_COUNT],
    };

    /// The slots in run order.
    pub fn slots(&self) -> &[u8] {
        let len = (self.len as usize).min(SLOT_COUNT);
        &self.order[..len]
    }

    /// The run position of `slot`, if it has one.
    pub fn position(&self, slot: usize) -> Option<usize> {
        self.slots().iter().position(|&s| s as usize == slot)
    }

    /// A table running `slots` in the order given (each below
    /// [`SLOT_COUNT`], at most [`SLOT_COUNT`] of them).
    pub fn from_slots(slots: &[usize]) -> Self {
        let mut t = Self::EMPTY;
        for (p, &s) in slots.iter().take(SLOT_COUNT).enumerate() {
            t.order[p] = s as u8;
        }
        t.len = slots.len().min(SLOT_COUNT) as u8;
        t
    }
}

/// The one entry of the `CONTROL` map: what the dispatcher reads per packet.
///
/// The run order is double-buffered. A packet reads [`Control::current`]
/// once and then only the table it names; userspace writes the other table,
/// then flips `current` (one byte), then waits until no packet can still be
/// reading the old table before it ever writes that table again. So a
/// packet sees one whole run order, old or new. Every other change
/// (a flag, a slot's proceed-on mask) touches a single byte that no packet
/// reads mid-change: a mask is written while its slot is in no table
/// packets may read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Control {
    /// `FLAG_*`.
    pub flags: u32,
    /// [`CONTROL_MAGIC`] once userspace has initialised the dispatcher.
    pub magic: u32,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// Backend the interface was set up with (`BACKEND_*`).
    pub backend: u32,
    /// Interface index the dispatcher was attached to.
    pub ifindex: u32,
    /// XDP attach mode (`MODE_*`).
    pub mode: u32,
    /// Network namespace cookie of the interface.
    pub netns_cookie: u64,
    /// Interface name at attach time, NUL padded.
    pub ifname: [u8; 16],
    /// Kernel id of the replacement `chain_decide` program, 0 if none.
    pub chain_prog_id: u32,
    /// Reserved, zero.
    pub _reserved: u32,
    /// The table packets read: `tables[current & 1]`.
    pub current: u8,
    /// 1 when no packet can be reading the other table (userspace waited
    /// after the last flip); 0 after a flip until then. A writer that finds
    /// 0 waits before writing the other table.
    pub settled: u8,
    /// The two run tables.
    pub tables: [RunTable; 2],
    /// Per slot: bit `1 << action` set means that after the slot returns
    /// `action`, the next position runs; otherwise `action` is the packet's
    /// verdict. Here rather than in `SLOTS` so that the datapath reads one
    /// map value per packet.
    pub proceed_on: [u8; SLOT_COUNT],
    /// Pads the struct to a multiple of 8 bytes; zero.
    pub _pad: [u8; CONTROL_PAD],
}

/// Padding after [`Control::proceed_on`].
pub const CONTROL_PAD: usize = (8 - (2 + 2 * (1 + SLOT_COUNT) + SLOT_COUNT) % 8) % 8;

impl Control {
    /// All zero: the dispatcher's initial image of the record, which the
    /// runtime overwrites before attaching.
    pub const ZERO: Self = Self {
        flags: 0,
        magic: 0,
        version: 0,
        backend: 0,
        ifindex: 0,
        mode: 0,
        netns_cookie: 0,
        ifname: [0; 16],
        chain_prog_id: 0,
        _reserved: 0,
        current: 0,
        settled: 0,
        tables: [RunTable::EMPTY; 2],
        proceed_on: [0; SLOT_COUNT],
        _pad: [0; CONTROL_PAD],
    };
}

impl Default for Control {
    fn default() -> Self {
        Self {
            settled: 1,
            proceed_on: [DEFAULT_PROCEED_ON as u8; SLOT_COUNT],
            ..Self::ZERO
        }
    }
}

impl Control {
    /// The table packets read.
    pub fn run_table(&self) -> &RunTable {
        &self.tables[(self.current & 1) as usize]
    }

    /// Does `slot` have a run position?
    pub fn is_active(&self, slot: usize) -> bool {
        self.run_table().position(slot).is_some()
    }

    /// Number of slots with a run position.
    pub fn active_count(&self) -> u32 {
        self.run_table().slots().len() as u32
    }

    /// Makes `slots` the run order at once, in the table packets read: only
    /// for a value no packet reads yet (a dispatcher not attached, a test's
    /// own instance). A live dispatcher's order changes through the other
    /// table and a flip (see the struct's documentation).
    pub fn set_run_order(&mut self, slots: &[usize]) {
        self.tables[(self.current & 1) as usize] = RunTable::from_slots(slots);
    }
}

/// `SlotConfig::state`: nobody holds the slot.
pub const STATE_FREE: u32 = 0;
/// `SlotConfig::state`: held by a live process; released when it exits.
pub const STATE_HELD: u32 = 1;
/// `SlotConfig::state`: pinned; stays until released.
pub const STATE_PERSISTENT: u32 = 2;
/// `SlotConfig::state`: a held claim released by force; emptied and
/// inactive, but its holder still has the slot's objects open, so the slot
/// is reused only after that process exits.
pub const STATE_DRAINING: u32 = 3;

/// Backends filling a slot.
pub const BACKEND_NONE: u32 = 0;
/// The slot's program sits in its single-entry program array.
pub const BACKEND_TAILCALL: u32 = 1;
/// The slot function is replaced by an extension (freplace) through a link.
pub const BACKEND_FREPLACE: u32 = 2;

/// XDP attach modes recorded in [`Control::mode`].
pub const MODE_SKB: u32 = 1;
/// Native (driver) mode.
pub const MODE_NATIVE: u32 = 2;

/// Length of [`SlotConfig::name`].
pub const NAME_LEN: usize = 32;

/// One entry of the `SLOTS` map per slot: the claim record. The datapath
/// never reads it; the slot's proceed-on mask is in [`Control::proceed_on`],
/// its run position in the run tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SlotConfig {
    /// `STATE_*`.
    pub state: u32,
    /// Claim priority (lower runs first).
    pub prio: u32,
    /// `BACKEND_*`.
    pub backend: u32,
    /// Kernel id of the program filling the slot.
    pub prog_id: u32,
    /// Kernel id of the freplace link (freplace backend), else 0.
    pub link_id: u32,
    /// Owner's pid (in the claimer's pid namespace), for display and for
    /// refusing another owner's release.
    pub owner_pid: u32,
    /// Owner's process start time (clock ticks since boot), guards against
    /// pid reuse.
    pub owner_start: u64,
    /// Wall-clock time of the claim, seconds since the epoch.
    pub claimed_at: u64,
    /// Claim name, NUL padded.
    pub name: [u8; NAME_LEN],
}

impl SlotConfig {
    /// A free slot.
    pub const FREE: Self = Self {
        state: STATE_FREE,
        prio: 0,
        backend: BACKEND_NONE,
        prog_id: 0,
        link_id: 0,
        owner_pid: 0,
        owner_start: 0,
        claimed_at: 0,
        name: [0; NAME_LEN],
    };
}

impl Default for SlotConfig {
    fn default() -> Self {
        Self::FREE
    }
}

/// Per-slot, per-CPU counters in the `STATS` map (while `FLAG_STATS` is set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SlotStats {
    /// Packets the slot's program ran on.
    pub packets: u64,
    /// Verdicts, indexed by XDP action; out-of-range verdicts are not counted.
    pub actions: [u64; XDP_ACTIONS],
}

#[cfg(feature = "user")]
mod user {
    use super::{Control, RunTable, SlotConfig, SlotStats};

    // SAFETY: bytemuck's derive above proves these are plain old data
    // (`repr(C)`, integers only, no padding), which is what aya::Pod needs.
    unsafe impl aya::Pod for Control {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SlotConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RunTable {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SlotStats {}
}

// No padding anywhere: the sizes are the sums of the fields.
const _: () = assert!(
    core::mem::size_of::<Control>()
        == 8 * 4 + 8 + 16 + 2 + 2 * (1 + SLOT_COUNT) + SLOT_COUNT + CONTROL_PAD
);
const _: () = assert!(core::mem::size_of::<SlotConfig>() == 6 * 4 + 2 * 8 + NAME_LEN);
const _: () = assert!(core::mem::size_of::<SlotStats>() == 8 * (1 + XDP_ACTIONS));

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 slots keep the arrays they always had: `n % 5 < 3`.
    #[test]
    fn hundred_slots_have_arrays_where_n_mod_5_is_below_3() {
        assert_eq!(prog_array_pattern(100), (5, 3));
    }

    /// Every count the function limit allows gets a pattern within the map
    /// budget, with arrays for at least a packet's worth of tail calls and
    /// one in every five slots.
    #[test]
    fn every_allowed_count_has_a_pattern_within_budget() {
        for slots in 1..=MAX_SUBPROGS - OTHER_FUNCS {
            let (period, per) = prog_array_pattern(slots);
            assert!(period <= 5 && per >= 1, "{slots} slots");
            let n = pattern_slots(slots, period, per);
            assert!(n <= PROG_ARRAY_BUDGET, "{slots} slots: {n} arrays");
            assert!(n >= slots.min(MAX_TAIL_CALLS), "{slots} slots: {n} arrays");
        }
    }

    /// The in-order slots are the slots with arrays, in order, then none.
    #[test]
    fn in_order_slots_are_the_arrays_in_order() {
        let mut arrays = (0..SLOT_COUNT).filter(|&n| has_prog_array(n));
        for (p, n) in arrays.by_ref().enumerate() {
            assert_eq!(in_order_slot(p), n);
        }
        assert_eq!(in_order_slot(6), 10);
        assert_eq!(in_order_slot(TAIL_CALL_SLOTS), SLOT_COUNT);
    }

    /// A table written over a longer one keeps no entry past its end: the
    /// dispatcher's in-order test reads entries before `len`.
    #[test]
    fn a_table_written_over_a_longer_one_has_zeros_past_its_end() {
        let mut c = Control::ZERO;
        c.set_run_order(&[5, 7, 9, 11]);
        c.set_run_order(&[0, 1]);
        let t = c.tables[(c.current & 1) as usize];
        assert_eq!(t.slots(), [0, 1]);
        assert!(t.order[2..].iter().all(|&s| s == 0), "{:?}", t.order);
    }
}
