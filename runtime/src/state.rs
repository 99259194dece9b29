//! An interface's state: kernel objects pinned in its bpffs directory.
//!
//! ```text
//! <root>/ns<netns cookie>_if<ifindex>/
//!   link         XDP link: the dispatcher on the interface (survives us)
//!   dispatcher   the dispatcher program (freplace target, map lookup)
//!   control      CONTROL map: active bitmap, flags, interface record
//!   slots        SLOTS map: per-slot claim record and proceed-on mask
//!   stats        STATS map: per-slot per-CPU counters
//!   prog_<N>     slot N's program array, pinned while the slot is free or
//!                holds a persistent tail-call claim; a held claim removes
//!                the pin and keeps the only fd, so the kernel empties the
//!                array when the holder exits
//!   ext_<N>      slot N's freplace link, for a persistent freplace claim
//!   chain        the custom chain-decision link, when persistent
//! ```
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData};
use dispatcher_common::{CONTROL_MAGIC, Control, LAYOUT_VERSION, SLOT_COUNT, SlotConfig};

use crate::error::{Error, Result};

/// Names of the pins in an interface directory.
pub mod pin {
    pub const LINK: &str = "link";
    pub const DISPATCHER: &str = "dispatcher";
    pub const CONTROL: &str = "control";
    pub const SLOTS: &str = "slots";
    pub const STATS: &str = "stats";
    pub const CHAIN: &str = "chain";

    /// Slot `n`'s program array.
    pub fn prog(n: usize) -> String {
        format!("prog_{n}")
    }

    /// Slot `n`'s persistent freplace link.
    pub fn ext(n: usize) -> String {
        format!("ext_{n}")
    }
}

/// The pinned maps of one interface, opened.
pub struct State {
    pub dir: PathBuf,
    pub iface: String,
    control: Array<MapData, Control>,
    slots: Array<MapData, SlotConfig>,
}

impl State {
    /// Opens the pinned state in `dir` and checks that it is ours.
    pub fn open(dir: &Path, iface: &str) -> Result<Self> {
        let corrupt = |why: String| Error::CorruptState {
            iface: iface.into(),
            path: dir.to_path_buf(),
            why,
        };
        let control = open_array::<Control>(&dir.join(pin::CONTROL), 1).map_err(&corrupt)?;
        let slots =
            open_array::<SlotConfig>(&dir.join(pin::SLOTS), SLOT_COUNT as u32).map_err(&corrupt)?;
        let state = Self {
            dir: dir.to_path_buf(),
            iface: iface.into(),
            control,
            slots,
        };
        let c = state.control()?;
        if c.magic != CONTROL_MAGIC || c.version != LAYOUT_VERSION {
            return Err(corrupt(format!(
                "control record has magic {:#x} version {}, expected {CONTROL_MAGIC:#x} version {LAYOUT_VERSION}",
                c.magic, c.version
            )));
        }
        Ok(state)
    }

    pub fn control(&self) -> Result<Control> {
        self.control
            .get(&0, 0)
            .map_err(|e| Error::kernel("reading the control map", e))
    }

    pub fn write_control(&mut self, c: &Control) -> Result<()> {
        self.control
            .set(0, c, 0)
            .map_err(|e| Error::kernel("writing the control map", e))
    }

    pub fn slot(&self, n: usize) -> Result<SlotConfig> {
        self.slots
            .get(&(n as u32), 0)
            .map_err(|e| Error::kernel(format!("reading slot {n}"), e))
    }

    pub fn slots(&self) -> Result<Vec<SlotConfig>> {
        (0..SLOT_COUNT).map(|n| self.slot(n)).collect()
    }

    pub fn write_slot(&mut self, n: usize, cfg: &SlotConfig) -> Result<()> {
        self.slots
            .set(n as u32, cfg, 0)
            .map_err(|e| Error::kernel(format!("writing slot {n}"), e))
    }

    /// Sets or clears slot `n`'s active bit: the one write that makes the
    /// datapath start or stop calling the slot.
    /// `walk_end` (where the walk stops) is raised after an activation and
    /// lowered before a deactivation, each write changing one byte.
    pub fn set_active(&mut self, n: usize, on: bool) -> Result<()> {
        let mut c = self.control()?;
        if on {
            c.set_active_bit(n, true);
            self.write_control(&c)?;
            crate::crash::point("state::activating");
            if c.walk_end as usize <= n {
                c.walk_end = n as u8 + 1;
                self.write_control(&c)?;
            }
        } else {
            let mut after = c;
            after.set_active(n, false);
            if after.walk_end < c.walk_end {
                c.walk_end = after.walk_end;
                self.write_control(&c)?;
            }
            crate::crash::point("state::deactivating");
            c.set_active_bit(n, false);
            self.write_control(&c)?;
        }
        Ok(())
    }

    /// Writes slot `n`'s proceed-on mask (`1 << action`); only while the
    /// slot is inactive, in its own write (see `Control`).
    pub fn set_proceed_on(&mut self, n: usize, mask: u32) -> Result<()> {
        let mut c = self.control()?;
        c.proceed_on[n] = mask as u8;
        self.write_control(&c)
    }

    /// Sets or clears a `FLAG_*` bit.
    pub fn set_flag(&mut self, flag: u32, on: bool) -> Result<()> {
        let mut c = self.control()?;
        if on {
            c.flags |= flag;
        } else {
            c.flags &= !flag;
        }
        self.write_control(&c)
    }

    /// Path of a pin in this interface's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn open_array<T: aya::Pod>(
    path: &Path,
    len: u32,
) -> std::result::Result<Array<MapData, T>, String> {
    let data = MapData::from_pin(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::error::chain(&e)))?;
    let array = Array::<MapData, T>::try_from(Map::Array(data))
        .map_err(|e| format!("{}: {}", path.display(), crate::error::chain(&e)))?;
    if array.len() != len {
        return Err(format!(
            "{} has {} entries, expected {len}",
            path.display(),
            array.len()
        ));
    }
    Ok(array)
}
