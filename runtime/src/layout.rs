//! Layout versions of an interface's state (docs/design.md, "Layout
//! versions"): which one a `CONTROL` pin has, and the older layouts this
//! runtime reads.
//!
//! From layout 2 on, `CONTROL`'s value starts with `flags`, `magic` and
//! `version` (bytes 0..12), whatever else a later layout changes, so any
//! runtime can tell which layout a state has. Layout 1 had its active
//! bitmap first.
use dispatcher_common::{CONTROL_MAGIC, Control, LAYOUT_VERSION, SLOT_COUNT};

/// What a `CONTROL` value says about its state.
#[derive(Debug)]
pub(crate) enum Found {
    /// Layout `version` (this runtime's, or an older one it reads), as a
    /// current `Control` (an older one converted: its run order, flags,
    /// masks and interface record).
    Readable { version: u32, control: Box<Control> },
    /// A layout newer than this runtime's.
    Newer(u32),
    /// Not a `CONTROL` value of any layout: why.
    Unrecognised(String),
}

/// Reads a raw `CONTROL` value.
pub(crate) fn decode(raw: &[u8]) -> Found {
    let u32_at = |off: usize| {
        raw.get(off..off + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    };
    if u32_at(4) == Some(CONTROL_MAGIC) {
        let version = u32_at(8).unwrap_or(0);
        if version > LAYOUT_VERSION {
            return Found::Newer(version);
        }
        if version == LAYOUT_VERSION && raw.len() == size_of::<Control>() {
            return Found::Readable {
                version,
                control: Box::new(bytemuck::pod_read_unaligned(raw)),
            };
        }
        return Found::Unrecognised(format!(
            "control record of {} bytes says layout {version}",
            raw.len()
        ));
    }
    if raw.len() == v1::SIZE && u32_at(v1::MAGIC) == Some(CONTROL_MAGIC) {
        let version = u32_at(v1::VERSION).unwrap_or(0);
        if version == 1 {
            return Found::Readable {
                version,
                control: Box::new(v1::convert(raw)),
            };
        }
    }
    Found::Unrecognised(format!(
        "control record has magic {:#x} version {}, expected {CONTROL_MAGIC:#x} version {LAYOUT_VERSION}",
        u32_at(4).unwrap_or(0),
        u32_at(8).unwrap_or(0)
    ))
}

/// Layout 1 (until the run tables): `CONTROL` was
/// `{ active: [u64; 2], flags, magic, version, backend, ifindex, mode: u32,
/// netns_cookie: u64, ifname: [u8; 16], chain_prog_id, _reserved: u32,
/// proceed_on: [u8; 100], walk_end: u8, _pad: [u8; 3] }`, and the slots ran
/// in slot order, those whose active bit was set. Every other map and pin
/// was as in layout 2 (`SLOTS` records, `STATS`, `prog_N`, `ext_N`, `link`,
/// `dispatcher`, `chain`).
pub(crate) mod v1 {
    use dispatcher_common::{Control, SLOT_COUNT};

    /// Size of layout 1's `CONTROL` value.
    pub const SIZE: usize = 16 + 4 * 4 + 2 * 4 + 8 + 16 + 2 * 4 + SLOT_COUNT + 1 + 3;
    pub const FLAGS: usize = 16;
    pub const MAGIC: usize = 20;
    pub const VERSION: usize = 24;
    const BACKEND: usize = 28;
    const IFINDEX: usize = 32;
    const MODE: usize = 36;
    const NETNS_COOKIE: usize = 40;
    const IFNAME: usize = 48;
    const CHAIN_PROG_ID: usize = 64;
    const PROCEED_ON: usize = 72;

    /// Layout 1's value as a current `Control`: its run order is its active
    /// slots in slot order.
    pub fn convert(raw: &[u8]) -> Control {
        let u32_at = |off: usize| u32::from_ne_bytes(raw[off..off + 4].try_into().expect("4"));
        let active = |n: usize| {
            let word =
                u64::from_ne_bytes(raw[8 * (n / 64)..8 * (n / 64) + 8].try_into().expect("8"));
            word & (1 << (n % 64)) != 0
        };
        let mut c = Control {
            flags: u32_at(FLAGS),
            magic: u32_at(MAGIC),
            version: u32_at(VERSION),
            backend: u32_at(BACKEND),
            ifindex: u32_at(IFINDEX),
            mode: u32_at(MODE),
            netns_cookie: u64::from_ne_bytes(
                raw[NETNS_COOKIE..NETNS_COOKIE + 8].try_into().expect("8"),
            ),
            chain_prog_id: u32_at(CHAIN_PROG_ID),
            ..Control::default()
        };
        c.ifname.copy_from_slice(&raw[IFNAME..IFNAME + 16]);
        c.proceed_on
            .copy_from_slice(&raw[PROCEED_ON..PROCEED_ON + SLOT_COUNT]);
        let order: Vec<usize> = (0..SLOT_COUNT).filter(|&n| active(n)).collect();
        c.set_run_order(&order);
        c
    }
}

const _: () = assert!(v1::SIZE == 176);
const _: () = assert!(SLOT_COUNT == 100, "layout 1 had 100 slots");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_current_layout_and_refuses_newer() {
        let c = Control {
            magic: CONTROL_MAGIC,
            version: LAYOUT_VERSION,
            ..Control::default()
        };
        assert!(matches!(
            decode(bytemuck::bytes_of(&c)),
            Found::Readable {
                version: LAYOUT_VERSION,
                ..
            }
        ));
        let newer = Control {
            version: LAYOUT_VERSION + 1,
            ..c
        };
        assert!(
            matches!(decode(bytemuck::bytes_of(&newer)), Found::Newer(v) if v == LAYOUT_VERSION + 1)
        );
        // A newer layout of another size is still recognised as newer.
        let mut longer = bytemuck::bytes_of(&newer).to_vec();
        longer.extend_from_slice(&[0; 64]);
        assert!(matches!(decode(&longer), Found::Newer(_)));
        assert!(matches!(decode(&[0; 40]), Found::Unrecognised(_)));
    }

    #[test]
    fn layout_1_reads_as_its_run_order() {
        let mut raw = [0u8; v1::SIZE];
        raw[0] = 0b1010_0001; // slots 0, 5, 7
        raw[8] = 0b10; // slot 65
        raw[v1::FLAGS..v1::FLAGS + 4].copy_from_slice(&1u32.to_ne_bytes());
        raw[v1::MAGIC..v1::MAGIC + 4].copy_from_slice(&CONTROL_MAGIC.to_ne_bytes());
        raw[v1::VERSION..v1::VERSION + 4].copy_from_slice(&1u32.to_ne_bytes());
        let Found::Readable { version, control } = decode(&raw) else {
            panic!("layout 1 not read");
        };
        assert_eq!(version, 1);
        assert_eq!(control.run_table().slots(), &[0, 5, 7, 65]);
        assert_eq!(control.flags, 1);
    }
}
