//! State layout 1's dispatcher and `CONTROL` value: the bitmap walk that
//! ran slots in slot order, before the run tables. The upgrade suite
//! builds such a state and upgrades it (tests/tests/support/layout1.rs);
//! the benchmark measures the run-table walk against this one. The object
//! is the one layout 1 shipped (`tests/fixtures/dispatcher-layout1.o`, see
//! tests/fixtures/README.md).
use dispatcher_common::{CONTROL_MAGIC, DEFAULT_PROCEED_ON, SLOT_COUNT};

/// The layout-1 dispatcher object.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../fixtures/dispatcher-layout1.o");

/// The dispatcher program's name in layout 1's object (layout 2 renamed
/// it `xdp_slots`).
pub const PROGRAM: &str = "dispatcher";

/// Layout 1's version number.
pub const VERSION: u32 = 1;

/// Its control map, an ordinary map definition named `CONTROL` (later
/// layouts make it a global in a data section of that name).
pub const CONTROL_MAP: &str = "CONTROL";

/// Layout 1's `CONTROL` value, field by field (`repr(C)`, 176 bytes):
/// `active: [u64; 2]` (bit `n % 64` of word `n / 64`: slot n runs), then
/// `flags, magic, version, backend, ifindex, mode: u32`, `netns_cookie:
/// u64`, `ifname: [u8; 16]`, `chain_prog_id, _reserved: u32`,
/// `proceed_on: [u8; 100]`, `walk_end: u8` (one past the highest active
/// slot), `_pad: [u8; 3]`.
#[derive(Clone, Copy, Debug)]
pub struct ControlV1 {
    pub active: [u64; 2],
    pub flags: u32,
    pub magic: u32,
    pub version: u32,
    pub backend: u32,
    pub ifindex: u32,
    pub mode: u32,
    pub netns_cookie: u64,
    pub ifname: [u8; 16],
    pub chain_prog_id: u32,
    pub proceed_on: [u8; SLOT_COUNT],
    pub walk_end: u8,
}

/// Size of [`ControlV1`] in the map.
pub const CONTROL_SIZE: usize = 176;

impl Default for ControlV1 {
    /// Layout 1's fresh record: no slot active, every slot proceeding on
    /// XDP_PASS, no interface.
    fn default() -> Self {
        Self {
            active: [0; 2],
            flags: 0,
            magic: CONTROL_MAGIC,
            version: VERSION,
            backend: 0,
            ifindex: 0,
            mode: 0,
            netns_cookie: 0,
            ifname: [0; 16],
            chain_prog_id: 0,
            proceed_on: [DEFAULT_PROCEED_ON as u8; SLOT_COUNT],
            walk_end: 0,
        }
    }
}

impl ControlV1 {
    pub fn to_bytes(self) -> [u8; CONTROL_SIZE] {
        let mut b = [0u8; CONTROL_SIZE];
        b[0..8].copy_from_slice(&self.active[0].to_ne_bytes());
        b[8..16].copy_from_slice(&self.active[1].to_ne_bytes());
        for (i, v) in [
            self.flags,
            self.magic,
            self.version,
            self.backend,
            self.ifindex,
            self.mode,
        ]
        .iter()
        .enumerate()
        {
            b[16 + 4 * i..20 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b[40..48].copy_from_slice(&self.netns_cookie.to_ne_bytes());
        b[48..64].copy_from_slice(&self.ifname);
        b[64..68].copy_from_slice(&self.chain_prog_id.to_ne_bytes());
        b[72..172].copy_from_slice(&self.proceed_on);
        b[172] = self.walk_end;
        b
    }

    pub fn from_bytes(b: &[u8; CONTROL_SIZE]) -> Self {
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
        Self {
            active: [u64_at(0), u64_at(8)],
            flags: u32_at(16),
            magic: u32_at(20),
            version: u32_at(24),
            backend: u32_at(28),
            ifindex: u32_at(32),
            mode: u32_at(36),
            netns_cookie: u64_at(40),
            ifname: b[48..64].try_into().unwrap(),
            chain_prog_id: u32_at(64),
            proceed_on: b[72..172].try_into().unwrap(),
            walk_end: b[172],
        }
    }

    /// Sets slot `n`'s active bit and keeps `walk_end` right.
    pub fn activate(&mut self, n: usize) {
        self.active[n / 64] |= 1 << (n % 64);
        let highest = (0..SLOT_COUNT)
            .rev()
            .find(|&s| self.active[s / 64] & (1 << (s % 64)) != 0);
        self.walk_end = highest.map_or(0, |h| h as u8 + 1);
    }
}
