//! An interface's state: kernel objects pinned in its bpffs directory
//! (names in [`crate::pin`]).
//!
//! ```text
//! <root>/xdp_ns<netns cookie>_if<ifindex>/
//!   link         XDP link: the dispatcher on the interface (survives us)
//!   dispatcher   the dispatcher program (freplace target, map lookup)
//!   control      CONTROL map: the two run tables and which one packets
//!                read, flags, proceed-on masks, interface record
//!   slots        SLOTS map: per-slot claim records
//!   stats        STATS map: per-slot per-CPU counters
//!   prog_<N>     slot N's program array, pinned while the slot is free or
//!                holds a persistent tail-call claim; a held claim removes
//!                the pin and keeps the only fd, so the kernel empties the
//!                array when the holder exits
//!   ext_<N>      slot N's freplace link, for a persistent freplace claim
//!   chain        the custom chain-decision link, when persistent
//! ```
use std::{
    collections::HashSet,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData, PerCpuArray, PerCpuValues};
use dispatcher_common::{Control, LAYOUT_VERSION, SLOT_COUNT, SlotConfig, SlotStats};

use crate::{
    backend::{Backend, Hold},
    dispatcher::Mode,
    error::{Error, Result},
    layout::{self, Found},
    mappins,
    objects::Objects,
    owner, pin,
    program::{Inspected, Loaded, ProgramSource},
    record::Owner,
    sys,
};

/// The pinned maps of one interface, opened.
pub(crate) struct State {
    pub dir: PathBuf,
    pub iface: String,
    control: ControlPin,
    slots: Array<MapData, SlotConfig>,
}

/// The `CONTROL` map: this runtime's layout, or an older one read once.
enum ControlPin {
    Current(Array<MapData, Control>),
    /// An older layout this runtime reads (1 on), converted when
    /// opened under the lock; never written.
    Old {
        version: u32,
        snapshot: Box<Control>,
    },
}

impl State {
    /// Opens the pinned state in `dir` and checks that it is ours and of
    /// this runtime's layout.
    pub fn open(dir: &Path, iface: &str) -> Result<Self> {
        Self::open_as(dir, iface, false)
    }

    /// [`State::open`], but an older layout this runtime reads is opened
    /// too (for status and upgrade), read-only.
    pub fn open_readable(dir: &Path, iface: &str) -> Result<Self> {
        Self::open_as(dir, iface, true)
    }

    fn open_as(dir: &Path, iface: &str, older_ok: bool) -> Result<Self> {
        // The damaged pin, for inspection: only one that exists.
        let corrupt = |name: &'static str| {
            move |why: String| Error::CorruptState {
                iface: iface.into(),
                path: dir.to_path_buf(),
                pin: dir.join(name).exists().then_some(name),
                why,
            }
        };
        let control = open_control(&dir.join(pin::CONTROL)).map_err(corrupt(pin::CONTROL))?;
        let control = match control {
            (_, Found::Newer(found)) => {
                return Err(Error::NewerLayout {
                    iface: iface.into(),
                    found,
                    known: LAYOUT_VERSION,
                });
            }
            (_, Found::Unrecognised(why)) => return Err(corrupt(pin::CONTROL)(why)),
            (data, Found::Readable { version, .. }) if version == LAYOUT_VERSION => {
                let array = Array::<MapData, Control>::try_from(Map::Array(data)).map_err(|e| {
                    corrupt(pin::CONTROL)(format!("{}: {}", pin::CONTROL, crate::error::chain(&e)))
                })?;
                ControlPin::Current(array)
            }
            (_, Found::Readable { version, control }) if older_ok => ControlPin::Old {
                version,
                snapshot: control,
            },
            (_, Found::Readable { version, .. }) => {
                return Err(Error::OldLayout {
                    iface: iface.into(),
                    found: version,
                    current: LAYOUT_VERSION,
                });
            }
        };
        let slots = open_array::<SlotConfig>(&dir.join(pin::SLOTS), SLOT_COUNT as u32)
            .map_err(corrupt(pin::SLOTS))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            iface: iface.into(),
            control,
            slots,
        })
    }

    /// The state's layout version.
    pub fn layout(&self) -> u32 {
        match &self.control {
            ControlPin::Current(_) => LAYOUT_VERSION,
            ControlPin::Old { version, .. } => *version,
        }
    }

    /// The mode the dispatcher was attached in.
    pub fn mode(&self) -> Result<Mode> {
        let code = self.control()?.mode;
        Mode::from_code(code)
            .ok_or_else(|| self.corrupt(pin::CONTROL, format!("control record has mode {code}")))
    }

    /// The backend claims get unless they ask for one.
    pub fn default_backend(&self) -> Result<Backend> {
        let code = self.control()?.backend;
        Backend::from_code(code)
            .ok_or_else(|| self.corrupt(pin::CONTROL, format!("control record has backend {code}")))
    }

    /// Path of a pin in this interface's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Objects for State {
    type Program = Loaded;
    type Hold = Hold;

    fn iface(&self) -> &str {
        &self.iface
    }

    fn corrupt(&self, pin: &'static str, why: String) -> Error {
        Error::CorruptState {
            iface: self.iface.clone(),
            path: self.dir.clone(),
            pin: Some(pin),
            why,
        }
    }

    fn control(&self) -> Result<Control> {
        match &self.control {
            ControlPin::Current(a) => a
                .get(&0, 0)
                .map_err(|e| Error::kernel("reading the control map", e)),
            ControlPin::Old { snapshot, .. } => Ok(**snapshot),
        }
    }

    fn write_control(&mut self, c: &Control) -> Result<()> {
        match &mut self.control {
            ControlPin::Current(a) => a
                .set(0, c, 0)
                .map_err(|e| Error::kernel("writing the control map", e)),
            ControlPin::Old { version, .. } => Err(Error::OldLayout {
                iface: self.iface.clone(),
                found: *version,
                current: LAYOUT_VERSION,
            }),
        }
    }

    fn raw_record(&self, n: usize) -> Result<SlotConfig> {
        self.slots
            .get(&(n as u32), 0)
            .map_err(|e| Error::kernel(format!("reading slot {n}"), e))
    }

    fn write_raw_record(&mut self, n: usize, r: &SlotConfig) -> Result<()> {
        self.slots
            .set(n as u32, r, 0)
            .map_err(|e| Error::kernel(format!("writing slot {n}"), e))
    }

    fn live_programs(&self) -> Result<HashSet<u32>> {
        live_programs()
    }

    fn alive(&self, o: Owner) -> bool {
        owner::alive(o)
    }

    fn me(&self) -> Owner {
        owner::current()
    }

    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn load(
        &mut self,
        backend: Backend,
        n: usize,
        src: &ProgramSource,
        ins: &Inspected,
    ) -> Result<Loaded> {
        if let Some(dir) = ins.map_pin_dir.as_ref().filter(|_| ins.pins_maps) {
            mappins::prepare(dir)?;
        }
        backend.imp().load(self, n, src, ins)
    }

    fn program_id(&self, prog: &Loaded) -> Result<u32> {
        prog.id()
    }

    fn fill(
        &mut self,
        backend: Backend,
        n: usize,
        prog: &mut Loaded,
        persistent: bool,
    ) -> Result<(u32, Option<Hold>)> {
        let f = backend.imp().fill(self, n, prog, persistent)?;
        Ok((f.link_id, f.hold))
    }

    fn empty(&mut self, backend: Backend, n: usize, hold: Option<&mut Hold>) -> Result<()> {
        backend.imp().empty(self, n, hold)
    }

    fn hold_unfinished(&self, backend: Backend, n: usize) -> bool {
        backend.imp().hold_unfinished(self, n)
    }

    fn settle_dead_hold(&self, backend: Backend, n: usize, prog_id: u32) -> Result<()> {
        backend.imp().settle_dead_hold(self, n, prog_id)
    }

    fn quiesce(&self) -> Result<()> {
        sys::wait_for_bpf_programs()
            .map_err(|e| Error::io("waiting for running dispatcher programs", e))
    }

    fn zero_counters(&mut self, n: usize) -> Result<()> {
        let path = self.path(pin::STATS);
        let data = MapData::from_pin(&path)
            .map_err(|e| Error::kernel(format!("opening {}", path.display()), e))?;
        let mut stats: PerCpuArray<MapData, SlotStats> =
            PerCpuArray::try_from(Map::PerCpuArray(data))
                .map_err(|e| Error::kernel("opening the stats map", e))?;
        let cpus =
            aya::util::nr_cpus().map_err(|(_, e)| Error::io("counting the possible CPUs", e))?;
        let zero = PerCpuValues::try_from(vec![SlotStats::default(); cpus])
            .map_err(|e| Error::io("building zeroed counters", e))?;
        stats
            .set(n as u32, zero, 0)
            .map_err(|e| Error::kernel("zeroing a slot's counters", e))
    }

    fn sweep_maps(&mut self, live: &HashSet<String>) -> Result<()> {
        for name in mappins::sweep(&self.dir, live)? {
            log::debug!("{}: removed the map pins of {name}", self.iface);
        }
        Ok(())
    }

    fn sweep_free(&mut self, n: usize) -> Result<bool> {
        let mut any = false;
        for b in Backend::ALL {
            any |= b.imp().sweep_free(self, n)?;
        }
        Ok(any)
    }
}

/// Ids of all programs loaded in the kernel.
pub(crate) fn live_programs() -> Result<HashSet<u32>> {
    let mut ids = HashSet::new();
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(i) => {
                ids.insert(i.id());
            }
            // A program can vanish while we walk the list.
            Err(e) if crate::error::os_error(&e) == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::kernel("listing loaded programs", e)),
        }
    }
    Ok(ids)
}

/// Opens the `CONTROL` pin and says which layout its value has.
fn open_control(path: &Path) -> std::result::Result<(MapData, Found), String> {
    if !path.exists() {
        return Err(format!("its pin {} is missing", path.display()));
    }
    let data = MapData::from_pin(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::error::chain(&e)))?;
    let info = data
        .info()
        .map_err(|e| format!("{}: {}", path.display(), crate::error::chain(&e)))?;
    if info.max_entries() != 1 {
        return Err(format!(
            "{} has {} entries, expected 1",
            path.display(),
            info.max_entries()
        ));
    }
    let raw = sys::map_lookup(data.fd().as_fd(), 0, info.value_size() as usize)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .ok_or_else(|| format!("{} has no entry 0", path.display()))?;
    Ok((data, layout::decode(&raw)))
}

fn open_array<T: aya::Pod>(
    path: &Path,
    len: u32,
) -> std::result::Result<Array<MapData, T>, String> {
    if !path.exists() {
        return Err(format!("its pin {} is missing", path.display()));
    }
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
