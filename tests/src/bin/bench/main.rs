//! Datapath benchmark: the fixed-slot dispatcher against a bare XDP program
//! and against libxdp's own dispatcher (the compiled object Debian's libxdp1
//! ships, configured for a fixed number of programs), measured with
//! BPF_PROG_TEST_RUN in one process; `--traffic`: real frames through a veth
//! pair into the receiver's native XDP (see `traffic.rs`).
//!
//! The dispatcher is measured twice over: loaded by the benchmark with its
//! active slots written directly (any slot set, flags), and as a user gets
//! it: attached by the runtime to a veth in namespaces of the benchmark's
//! own, with tail-call claims the runtime placed from their priorities.
//!
//! The machine is shared and noisy, so every comparison is a pair (variant,
//! baseline) run back to back in random order, pairs are shuffled within a
//! round, and the figures are medians over the rounds. The ratio is the
//! median of the per-round ratios, so slow drifts cancel out.
//!
//! Run with `cargo xtask bench` (as root). `--write-docs` rewrites the
//! figures section of docs/benchmarks.md; nothing else is written. The
//! namespaces, veth pairs and bpffs directories it creates are removed when
//! it ends, also on failure.
mod libxdp;
mod placed;
mod traffic;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use dispatcher_common::{
    Control, DEFAULT_PROCEED_ON, FLAG_CUSTOM_CHAIN, FLAG_STATS, LAYOUT_VERSION, MAX_TAIL_CALLS,
    SLOT_COUNT, has_prog_array, names,
};
use integration_tests::{layout1, progs, stress::Rng};

use crate::placed::Placed;

/// Calls the reference dispatcher can make.
const REF_MAX: usize = 34;
/// The reference's fallback return value (not an XDP action); its bit is in
/// every chain mask, as libxdp does.
const REF_FALLBACK: u32 = 31;

const XDP_PASS: u32 = 2;

/// Markers around the generated part of docs/benchmarks.md.
const BEGIN: &str = "<!-- figures:begin (written by `cargo xtask bench --write-docs`) -->";
const END: &str = "<!-- figures:end -->";

/// Targets of the issue: the empty dispatcher against a bare program, and
/// k = 1, 5, 10 tail-call claims against libxdp's dispatcher with k
/// programs (ratios of ns per run; lower is better).
const EMPTY_TARGET: f64 = 1.05;
const LIBXDP_TARGET: f64 = 1.25;
/// And what the run tables may cost at k = 10 over the bitmap walk they
/// replaced (which ran slots in slot order, its claims in the lowest slots).
const BITMAP_TARGET: f64 = 1.05;

pub(crate) struct Args {
    pub rounds: Option<usize>,
    /// Target wall time of one measurement; the repeat count follows.
    call_ms: f64,
    pub write_docs: bool,
    /// Another build of the dispatcher to measure instead of the embedded one.
    object: Option<PathBuf>,
    /// A build of the dispatcher (same state layout) to measure the
    /// dispatcher against, in the same run, instead of the usual pairs.
    against: Option<PathBuf>,
    /// Real frames through veth pairs instead of BPF_PROG_TEST_RUN.
    traffic: bool,
    /// Frames per measurement with `--traffic`.
    pub frames: u32,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rounds: None,
        call_ms: 25.0,
        write_docs: false,
        object: None,
        against: None,
        traffic: false,
        frames: traffic::DEFAULT_FRAMES,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--write-docs" => args.write_docs = true,
            "--traffic" => args.traffic = true,
            "--rounds" => {
                let r: usize = value()?.parse()?;
                if r < 3 {
                    bail!("--rounds must be at least 3");
                }
                args.rounds = Some(r);
            }
            "--call-ms" => args.call_ms = value()?.parse()?,
            "--frames" => {
                args.frames = value()?.parse()?;
                if args.frames < 10_000 {
                    bail!("--frames must be at least 10000");
                }
            }
            "--object" => args.object = Some(value()?.into()),
            "--against" => args.against = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: bench [--rounds N (25)] [--call-ms MS per measurement (25)] [--object DISPATCHER.o] [--against DISPATCHER.o] [--write-docs]\n       bench --traffic [--rounds N ({})] [--frames N per measurement ({})] [--write-docs]",
                    traffic::DEFAULT_ROUNDS,
                    traffic::DEFAULT_FRAMES
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.traffic && (args.object.is_some() || args.against.is_some()) {
        bail!("--traffic measures the runtime's dispatcher only; drop --object and --against");
    }
    if args.write_docs && args.against.is_some() {
        bail!("--write-docs records the usual pairs; drop --against");
    }
    Ok(args)
}

fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("no program {name}"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {name}"))?;
    Ok(())
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .ok_or_else(|| anyhow!("no program {name}"))?
        .try_into()?)
}

/// Everything under test, loaded once.
struct Setup {
    /// `xdp_pass`: the bare baseline.
    pass: Ebpf,
    /// `xdp_pass` loaded again: the control, whose ratio to `pass` is what
    /// noise and the program's placement alone make of a ratio.
    pass_again: Ebpf,
    /// `xdp_floor`: the least an empty dispatcher that can tail-call costs.
    floor: Ebpf,
    /// `xdp_pass` once per slot with a program array, each loaded on its
    /// own as every claim's program is: the i-th goes into the i-th such
    /// slot and the i-th call of a reference. (One program tail-called
    /// from every slot measured slower than as many programs.)
    slot_passes: Vec<Ebpf>,
    /// `xdp_count`: put in the slots once per variant to check that every
    /// call really runs its program.
    count: Ebpf,
    /// The fixed-slot dispatcher, loaded by the benchmark.
    disp: Ebpf,
    /// The walk the run tables replaced (state layout 1: an active bitmap,
    /// slots in slot order), when a variant measures it.
    bitmap: Option<Ebpf>,
    /// The build given with `--against`, filled like `disp`.
    against: Option<Ebpf>,
    /// Reference dispatchers by number of calls.
    refs: Vec<(usize, Ebpf)>,
    /// libxdp's dispatcher by number of programs.
    libxdp: Vec<(usize, Ebpf)>,
    /// The runtime's dispatchers by claim priorities (each on a veth of
    /// its own).
    placed: Vec<Placed>,
}

impl Setup {
    fn new(
        object: &[u8],
        against: Option<&[u8]>,
        variants: &[Variant],
        frame: &[u8],
    ) -> Result<Self> {
        let mut pass = Ebpf::load(progs::bytes("xdp_pass"))?;
        load_xdp(&mut pass, "xdp_pass")?;
        let mut pass_again = Ebpf::load(progs::bytes("xdp_pass"))?;
        load_xdp(&mut pass_again, "xdp_pass")?;
        let mut floor = Ebpf::load(progs::bytes("xdp_floor"))?;
        load_xdp(&mut floor, "xdp_floor")?;
        let slot_passes = tail_call_slots()
            .iter()
            .map(|_| {
                let mut p = Ebpf::load(progs::bytes("xdp_pass"))?;
                load_xdp(&mut p, "xdp_pass")?;
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut count = Ebpf::load(progs::bytes("xdp_count"))?;
        load_xdp(&mut count, "xdp_count")?;

        let mut disp = EbpfLoader::new()
            .load(object)
            .context("loading the dispatcher object")?;
        load_xdp(&mut disp, names::DISPATCHER)?;
        let against = match against {
            Some(object) => {
                let mut a = EbpfLoader::new()
                    .load(object)
                    .context("loading the --against dispatcher object")?;
                load_xdp(&mut a, names::DISPATCHER).with_context(|| {
                    format!(
                        "the --against object is not a build of this dispatcher \
                         (state layout {LAYOUT_VERSION})"
                    )
                })?;
                Some(a)
            }
            None => None,
        };
        // Control::default() proceeds on XDP_PASS in every slot, as the
        // runtime's fresh dispatcher does.
        let mut refs = Vec::new();
        let mut libxdp = Vec::new();
        let mut placed = Vec::new();
        let mut libxdp_object = None;
        let mut bitmap = None;
        for v in variants {
            match v {
                Variant::Bitmap(_) if bitmap.is_none() => {
                    let mut b = EbpfLoader::new()
                        .load(layout1::OBJECT)
                        .context("loading the layout-1 dispatcher")?;
                    load_xdp(&mut b, layout1::PROGRAM)?;
                    bitmap = Some(b);
                }
                Variant::Bitmap(_) => {}
                Variant::Ref(k) => {
                    let num = *k as u32;
                    let masks = [DEFAULT_PROCEED_ON | 1 << REF_FALLBACK; REF_MAX];
                    let mut r = EbpfLoader::new()
                        .override_global("NUM_PROGS", &num, true)
                        .override_global("CHAIN_CALL_ACTIONS", &masks, true)
                        .load(progs::bytes("reference_dispatcher"))
                        .context("loading the reference dispatcher")?;
                    load_xdp(&mut r, "reference_dispatcher")?;
                    refs.push((*k, r));
                }
                Variant::Libxdp(k) => {
                    if libxdp_object.is_none() {
                        libxdp_object = Some(libxdp::read_object()?);
                    }
                    let obj = libxdp_object.as_deref().unwrap_or_default();
                    libxdp.push((*k, libxdp::load(obj, *k, frame)?));
                }
                Variant::Placed(prios) => {
                    let p = Placed::new(prios, frame)?;
                    eprintln!("bench: {}: slots {:?}", placed::label(prios), p.slots);
                    placed.push(p);
                }
                Variant::Bare
                | Variant::BareAgain
                | Variant::Floor
                | Variant::Disp { .. }
                | Variant::Against(_) => {}
            }
        }
        let mut setup = Self {
            pass,
            pass_again,
            floor,
            slot_passes,
            count,
            disp,
            bitmap,
            against,
            refs,
            libxdp,
            placed,
        };
        setup.fill_all(false)?;
        Ok(setup)
    }

    /// Puts an `xdp_pass` (or `xdp_count`) into every slot of the
    /// dispatchers and every call of the references.
    fn fill_all(&mut self, counting: bool) -> Result<()> {
        let fds = if counting {
            let fd = xdp(&self.count, "xdp_count")?.fd()?;
            (0..self.slot_passes.len())
                .map(|_| fd.try_clone())
                .collect::<Result<Vec<_>, _>>()?
        } else {
            self.slot_passes
                .iter()
                .map(|p| xdp(p, "xdp_pass")?.fd()?.try_clone().map_err(Into::into))
                .collect::<Result<Vec<_>>>()?
        };
        for disp in std::iter::once(&mut self.disp)
            .chain(self.bitmap.as_mut())
            .chain(self.against.as_mut())
        {
            for (fd, n) in fds.iter().zip(tail_call_slots()) {
                let name = format!("{}{n}", names::SLOT_PROG_MAP_PREFIX);
                let mut arr = ProgramArray::try_from(
                    disp.map_mut(&name)
                        .ok_or_else(|| anyhow!("no map {name}"))?,
                )?;
                arr.set(0, fd, 0)?;
            }
        }
        for (k, r) in &mut self.refs {
            let mut arr = ProgramArray::try_from(
                r.map_mut("REF_PROGS")
                    .ok_or_else(|| anyhow!("no map REF_PROGS"))?,
            )?;
            for (i, fd) in fds.iter().take(*k).enumerate() {
                arr.set(i as u32, fd, 0)?;
            }
        }
        Ok(())
    }

    fn counted(&self) -> Result<u64> {
        let counter: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.count
                .map("COUNTER")
                .ok_or_else(|| anyhow!("no COUNTER map"))?,
        )?;
        Ok(counter.get(&0, 0)?.iter().sum())
    }

    /// Checks that one packet through each variant the benchmark fills
    /// itself runs exactly as many slot programs as it should: a benchmark
    /// of calls that silently fall through would measure nothing. (libxdp's
    /// dispatchers and the runtime's were checked when they were loaded.)
    fn verify(&mut self, variants: &[Variant], frame: &[u8]) -> Result<()> {
        self.fill_all(true)?;
        for v in variants {
            let expect = match v {
                Variant::Bare
                | Variant::BareAgain
                | Variant::Floor
                | Variant::Libxdp(_)
                | Variant::Placed(_) => continue,
                Variant::Disp { active, .. } | Variant::Against(active) => active.len() as u64,
                Variant::Bitmap(k) => *k as u64,
                Variant::Ref(k) => *k as u64,
            };
            let before = self.counted()?;
            self.run(v, frame, 1)?;
            let ran = self.counted()? - before;
            if ran != expect {
                bail!(
                    "{}: {ran} slot program(s) ran on one packet, expected {expect}",
                    v.label()
                );
            }
        }
        self.fill_all(false)
    }

    /// Runs `active` in that order in `disp`, with `flags`.
    fn set_control(disp: &mut Ebpf, active: &[usize], flags: u32) -> Result<()> {
        let mut c = Control {
            flags,
            ..Default::default()
        };
        c.set_run_order(active);
        let mut control: Array<_, Control> = Array::try_from(
            disp.map_mut(names::CONTROL_MAP)
                .ok_or_else(|| anyhow!("no CONTROL map"))?,
        )?;
        control.set(0, c, 0)?;
        Ok(())
    }

    /// Activates the lowest `k` slots with a program array in the layout-1
    /// dispatcher, every one proceeding on XDP_PASS.
    fn set_bitmap(&mut self, k: usize) -> Result<()> {
        let mut c = layout1::ControlV1::default();
        for &n in &tail_call_slots()[..k] {
            c.activate(n);
        }
        let disp = self
            .bitmap
            .as_mut()
            .ok_or_else(|| anyhow!("the layout-1 dispatcher is not loaded"))?;
        let mut control: Array<_, [u8; layout1::CONTROL_SIZE]> = Array::try_from(
            disp.map_mut(layout1::CONTROL_MAP)
                .ok_or_else(|| anyhow!("no CONTROL map in the layout-1 dispatcher"))?,
        )?;
        control.set(0, c.to_bytes(), 0)?;
        Ok(())
    }

    /// Runs `v` `repeat` times; returns ns per run.
    ///
    /// The kernel reports whole nanoseconds per run, too coarse for programs
    /// that take a few; the thread's CPU time across the call has nanosecond
    /// resolution over the whole batch and, like the kernel's own timer,
    /// leaves out the time the thread was not running.
    fn run(&mut self, v: &Variant, frame: &[u8], repeat: u32) -> Result<f64> {
        check_interrupted()?;
        let prog = match v {
            Variant::Bare => xdp(&self.pass, "xdp_pass")?,
            Variant::BareAgain => xdp(&self.pass_again, "xdp_pass")?,
            Variant::Floor => xdp(&self.floor, "xdp_floor")?,
            Variant::Disp { active, flags } => {
                Self::set_control(&mut self.disp, active, *flags)?;
                xdp(&self.disp, names::DISPATCHER)?
            }
            Variant::Against(active) => {
                let a = self
                    .against
                    .as_mut()
                    .ok_or_else(|| anyhow!("no --against dispatcher is loaded"))?;
                Self::set_control(a, active, 0)?;
                xdp(a, names::DISPATCHER)?
            }
            Variant::Bitmap(k) => {
                self.set_bitmap(*k)?;
                xdp(
                    self.bitmap
                        .as_ref()
                        .ok_or_else(|| anyhow!("the layout-1 dispatcher is not loaded"))?,
                    layout1::PROGRAM,
                )?
            }
            Variant::Ref(k) => {
                let (_, r) = self
                    .refs
                    .iter()
                    .find(|(n, _)| n == k)
                    .ok_or_else(|| anyhow!("no reference with {k} calls"))?;
                xdp(r, "reference_dispatcher")?
            }
            Variant::Libxdp(k) => {
                let (_, r) = self
                    .libxdp
                    .iter()
                    .find(|(n, _)| n == k)
                    .ok_or_else(|| anyhow!("no libxdp dispatcher for {k} programs"))?;
                xdp(r, libxdp::PROGRAM)?
            }
            Variant::Placed(prios) => self
                .placed
                .iter()
                .find(|p| p.prios == *prios)
                .ok_or_else(|| anyhow!("no dispatcher with claims at {prios:?}"))?
                .prog(),
        };
        let t0 = thread_cpu_ns();
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        let t1 = thread_cpu_ns();
        if res.return_value != XDP_PASS {
            bail!(
                "{} returned {} instead of XDP_PASS",
                v.label(),
                res.return_value
            );
        }
        Ok((t1 - t0) as f64 / f64::from(repeat))
    }
}

pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid timespec to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Clone, PartialEq)]
enum Variant {
    Bare,
    /// The bare program loaded a second time.
    BareAgain,
    /// `xdp_floor`.
    Floor,
    /// The benchmark's own dispatcher with these slots active.
    Disp {
        active: Vec<usize>,
        flags: u32,
    },
    Ref(usize),
    /// libxdp's dispatcher with this many programs.
    Libxdp(usize),
    /// The runtime's dispatcher with tail-call claims at these priorities.
    Placed(Vec<u32>),
    /// The bitmap walk the run tables replaced, with the lowest `k` slots
    /// active.
    Bitmap(usize),
    /// The `--against` build with these slots active, no flags.
    Against(Vec<usize>),
}

impl Variant {
    fn disp(active: impl IntoIterator<Item = usize>, flags: u32) -> Self {
        Variant::Disp {
            active: active.into_iter().collect(),
            flags,
        }
    }

    fn label(&self) -> String {
        let plural = |k: usize| if k == 1 { "" } else { "s" };
        match self {
            Variant::Bare => "bare XDP_PASS program".into(),
            Variant::BareAgain => "bare XDP_PASS program (control: loaded again)".into(),
            Variant::Floor => "floor: empty path of a program that can tail-call".into(),
            Variant::Ref(k) => format!("reference, {k} call{}", plural(*k)),
            Variant::Libxdp(k) => format!("libxdp dispatcher, {k} program{}", plural(*k)),
            Variant::Placed(prios) => placed::label(prios),
            Variant::Bitmap(k) => format!("bitmap walk (layout 1), {k} active (lowest)"),
            Variant::Against(active) => {
                let d = Variant::disp(active.iter().copied(), 0).label();
                d.replacen("dispatcher", "--against build", 1)
            }
            Variant::Disp { active, flags } => {
                let k = active.len();
                let lowest = active[..] == tail_call_slots()[..k];
                let mut s = match (k, lowest) {
                    (0, _) => "dispatcher, 0 active".to_string(),
                    (_, true) => format!("dispatcher, {k} active (lowest)"),
                    (1, false) => format!("dispatcher, 1 active (slot {})", active[0]),
                    (_, false) => format!(
                        "dispatcher, {k} active (slots {}, {}, .., {})",
                        active[0],
                        active[1],
                        active[k - 1]
                    ),
                };
                if flags & FLAG_STATS != 0 {
                    s += " + stats";
                }
                if flags & FLAG_CUSTOM_CHAIN != 0 {
                    s += " + chain_decide";
                }
                s
            }
        }
    }
}

/// One comparison: `variant` measured against `baseline`.
struct Pair {
    variant: Variant,
    baseline: Variant,
    /// Highest acceptable ratio; `None` for figures given for information.
    target: Option<f64>,
    /// Per-round (variant ns, baseline ns).
    samples: Vec<(f64, f64)>,
}

/// The slots that have a program array, in order.
fn tail_call_slots() -> Vec<usize> {
    (0..SLOT_COUNT).filter(|&n| has_prog_array(n)).collect()
}

/// Ten slots with a program array spread from the first to the last (0,
/// 10, .., 97): the most byte groups to test, every position through the
/// tree.
fn spread_slots() -> Vec<usize> {
    let tc = tail_call_slots();
    (0..10).map(|i| tc[i * (tc.len() - 1) / 9]).collect()
}

/// With `--against`: the dispatcher against the other build, both filled
/// by the benchmark, on the walk's paths (empty, in-order positions, the
/// tree, past the inlined positions).
fn against_pairs() -> Vec<Pair> {
    let tc = tail_call_slots();
    let mut sets: Vec<Vec<usize>> = [0, 1, 5, 10, MAX_TAIL_CALLS]
        .iter()
        .map(|&k| tc[..k].to_vec())
        .collect();
    sets.push(spread_slots());
    sets.into_iter()
        .map(|active| Pair {
            variant: Variant::disp(active.iter().copied(), 0),
            baseline: Variant::Against(active),
            target: None,
            samples: Vec::new(),
        })
        .collect()
}

/// The comparisons. `with_runtime`: include the runtime's dispatchers
/// (not with `--object`, which the runtime does not load).
fn pairs(with_runtime: bool) -> Vec<Pair> {
    let tc = tail_call_slots();
    let lowest = |k: usize| tc[..k].to_vec();
    let pair = |variant, baseline, target| Pair {
        variant,
        baseline,
        target,
        samples: Vec::new(),
    };
    let mut v = Vec::new();
    // The targets: the dispatcher as the runtime attaches it and places
    // claims, against a bare program and against libxdp's dispatcher.
    if with_runtime {
        v.push(pair(
            Variant::Placed(vec![]),
            Variant::Bare,
            Some(EMPTY_TARGET),
        ));
        // What the empty target asks of the kernel's JIT: the floor against
        // bare, the dispatcher against the floor.
        v.push(pair(Variant::Placed(vec![]), Variant::Floor, None));
        for k in [1, 5, 10] {
            v.push(pair(
                Variant::Placed(placed::spread(k)),
                Variant::Libxdp(k),
                Some(LIBXDP_TARGET),
            ));
        }
        v.push(pair(
            Variant::Placed(placed::spread(10)),
            Variant::Bitmap(10),
            Some(BITMAP_TARGET),
        ));
        // Equal priorities fill adjacent slots.
        v.push(pair(
            Variant::Placed(placed::all_default(10)),
            Variant::Libxdp(10),
            None,
        ));
        // Claims out of run order: every position goes through the tree.
        v.push(pair(
            Variant::Placed(placed::descending(10)),
            Variant::Libxdp(10),
            None,
        ));
    }
    // For information: libxdp's own fixed cost, the benchmark's dispatcher
    // with the lowest k slots active, and the reference (a regenerated
    // dispatcher built here that makes the same tail calls as the slots)
    // against the real libxdp.
    v.push(pair(Variant::Floor, Variant::Bare, None));
    v.push(pair(Variant::BareAgain, Variant::Bare, None));
    v.push(pair(Variant::Libxdp(0), Variant::Bare, None));
    v.push(pair(Variant::Bitmap(10), Variant::Libxdp(10), None));
    v.push(pair(Variant::disp([], 0), Variant::Bare, None));
    for k in [1, 5, 10] {
        v.push(pair(Variant::disp(lowest(k), 0), Variant::Libxdp(k), None));
    }
    for k in [1, 5, 10] {
        v.push(pair(Variant::Ref(k), Variant::Libxdp(k), None));
    }
    // libxdp has 10 programs at most; the tail-call limit is 33.
    v.push(pair(
        Variant::disp(lowest(MAX_TAIL_CALLS), 0),
        Variant::Ref(MAX_TAIL_CALLS),
        None,
    ));
    // Slots placed far apart, where the byte-group gating has the most
    // groups to test.
    v.push(pair(
        Variant::disp([tc[tc.len() - 1]], 0),
        Variant::Libxdp(1),
        None,
    ));
    v.push(pair(
        Variant::disp(spread_slots(), 0),
        Variant::Libxdp(10),
        None,
    ));
    for k in [10, MAX_TAIL_CALLS] {
        v.push(pair(
            Variant::disp(lowest(k), FLAG_STATS),
            Variant::disp(lowest(k), 0),
            None,
        ));
        v.push(pair(
            Variant::disp(lowest(k), FLAG_CUSTOM_CHAIN),
            Variant::disp(lowest(k), 0),
            None,
        ));
    }
    v
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Shuffles `v` in place (Fisher-Yates).
pub(crate) fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

pub(crate) fn rng(started: Instant) -> Rng {
    Rng(0x9e37_79b9_7f4a_7c15 ^ started.elapsed().as_nanos() as u64 ^ u64::from(std::process::id()))
}

struct Row {
    label: String,
    ns: f64,
    base_label: String,
    base_ns: f64,
    ratio: f64,
    target: Option<f64>,
}

impl Row {
    fn verdict(&self) -> &'static str {
        match self.target {
            Some(t) if self.ratio <= t => "PASS",
            Some(_) => "MISS",
            None => "info",
        }
    }
}

fn rows(pairs: &[Pair]) -> Vec<Row> {
    pairs
        .iter()
        .map(|p| Row {
            label: p.variant.label(),
            ns: median(p.samples.iter().map(|s| s.0).collect()),
            base_label: p.baseline.label(),
            base_ns: median(p.samples.iter().map(|s| s.1).collect()),
            ratio: median(p.samples.iter().map(|s| s.0 / s.1).collect()),
            target: p.target,
        })
        .collect()
}

fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| variant | ns/run | baseline | ns/run | ratio | target | result |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---:|---:|---|");
    for r in rows {
        let target = r.target.map_or("-".to_string(), |t| format!("<= {t:.2}"));
        let _ = writeln!(
            t,
            "| {} | {:.1} | {} | {:.1} | {:.3} | {} | {} |",
            r.label,
            r.ns,
            r.base_label,
            r.base_ns,
            r.ratio,
            target,
            r.verdict()
        );
    }
    t
}

fn console_table(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
    let bw = rows.iter().map(|r| r.base_label.len()).max().unwrap_or(0);
    let mut t = format!(
        "{:w$}  {:>7}  {:bw$}  {:>7}  {:>6}  {:>6}  result\n",
        "variant", "ns/run", "baseline", "ns/run", "ratio", "target"
    );
    for r in rows {
        let target = r.target.map_or("-".to_string(), |t| format!("{t:.2}"));
        let _ = writeln!(
            t,
            "{:w$}  {:>7.1}  {:bw$}  {:>7.1}  {:>6.3}  {:>6}  {}",
            r.label,
            r.ns,
            r.base_label,
            r.base_ns,
            r.ratio,
            target,
            r.verdict()
        );
    }
    t
}

pub(crate) fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // The machine's CPUs, not the ones this thread may use (--traffic pins it).
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("Linux {}, {cpus} CPUs ({model})", kernel.trim())
}

pub(crate) fn docs_path() -> PathBuf {
    // The workspace root is the parent of this crate's directory.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."))
        .join("docs/benchmarks.md")
}

/// Replaces what lies between the markers `begin` and `end` in
/// docs/benchmarks.md with `figures`.
pub(crate) fn write_docs(begin: &str, end: &str, figures: &str) -> Result<()> {
    let path = docs_path();
    let doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
        bail!("{} has no markers {begin} .. {end}", path.display());
    };
    if e < b {
        bail!("{}: markers out of order", path.display());
    }
    let new = format!("{}{begin}\n{figures}{}", &doc[..b], &doc[e..]);
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Set by SIGINT or SIGTERM. The default action would end the process at
/// once and leave its namespaces and bpffs directories behind; instead the
/// benchmark stops at the next measurement (a running BPF_PROG_TEST_RUN
/// returns early with EINTR) and removes them on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn stop_on_signals() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // the sigaction value is zeroed, then its handler and empty mask
        // set, and outlives the call.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!("sigaction: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Fails once SIGINT or SIGTERM has arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench: must run as root (BPF_PROG_TEST_RUN needs CAP_BPF and CAP_NET_ADMIN)");
        std::process::exit(1);
    }
    let result = stop_on_signals()
        .and_then(|()| parse_args())
        .and_then(|args| {
            if args.traffic {
                traffic::run(&args)
            } else {
                run(&args)
            }
        });
    if let Err(e) = result {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}

/// A dispatcher object given on the command line.
fn read_object(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn run(args: &Args) -> Result<()> {
    let rounds = args.rounds.unwrap_or(25);
    let started = Instant::now();
    let mut pairs = match args.against {
        Some(_) => against_pairs(),
        None => pairs(args.object.is_none()),
    };
    let mut variants: Vec<Variant> = Vec::new();
    for p in &pairs {
        for v in [&p.variant, &p.baseline] {
            if !variants.contains(v) {
                variants.push(v.clone());
            }
        }
    }
    let object = match &args.object {
        Some(p) => read_object(p)?,
        None => slots_runtime::DISPATCHER.to_vec(),
    };
    if args.write_docs && args.object.is_some() {
        bail!("--write-docs records the embedded dispatcher only; drop --object");
    }
    let frame = integration_tests::frames::udp();
    let against = match &args.against {
        Some(p) => Some(read_object(p)?),
        None => None,
    };
    let mut setup = Setup::new(&object, against.as_deref(), &variants, &frame)?;
    setup.verify(&variants, &frame)?;

    // Calibration (also the warm-up): a repeat count per variant that makes
    // one measurement last about `call_ms`, within 200k..1M runs.
    let mut repeat = Vec::new();
    for v in &variants {
        setup.run(v, &frame, 20_000)?;
        let ns = setup.run(v, &frame, 100_000)?.max(0.5);
        let r = (args.call_ms * 1e6 / ns) as u32;
        repeat.push(r.clamp(200_000, 1_000_000));
    }
    let repeat_of = |v: &Variant| repeat[variants.iter().position(|x| x == v).unwrap()];

    let mut rng = rng(started);
    eprint!("bench: {rounds} rounds of {} comparisons ", pairs.len());
    for _ in 0..rounds {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        shuffle(&mut rng, &mut order);
        for i in order {
            let p = &mut pairs[i];
            let (v, b) = (p.variant.clone(), p.baseline.clone());
            let sample = if rng.below(2) == 0 {
                let a = setup.run(&v, &frame, repeat_of(&v))?;
                (a, setup.run(&b, &frame, repeat_of(&b))?)
            } else {
                let bb = setup.run(&b, &frame, repeat_of(&b))?;
                (setup.run(&v, &frame, repeat_of(&v))?, bb)
            };
            p.samples.push(sample);
        }
        eprint!(".");
    }
    let took = started.elapsed();
    eprintln!(" {:.0} s", took.as_secs_f64());

    let rows = rows(&pairs);
    let placements: Vec<String> = setup
        .placed
        .iter()
        .filter(|p| !p.prios.is_empty())
        .map(|p| format!("{:?} in slots {:?}", p.prios, p.slots))
        .collect();
    println!("{}", console_table(&rows));
    println!(
        "medians over {rounds} rounds; ratio = median of per-round ratios (pairs run back to back); {}",
        machine()
    );
    if !placements.is_empty() {
        println!("claims (priorities in slots): {}", placements.join("; "));
    }
    let missed = rows.iter().filter(|r| r.verdict() == "MISS").count();
    if missed > 0 {
        println!("{missed} target(s) missed");
    }

    if args.write_docs {
        let mut figures = String::new();
        let _ = writeln!(
            figures,
            "Measured with `sudo cargo xtask bench --write-docs{}` on {}, {rounds} rounds, in {:.0} s.\n",
            args.rounds
                .map_or(String::new(), |r| format!(" --rounds {r}")),
            machine(),
            took.as_secs_f64()
        );
        figures += &table(&rows);
        if !placements.is_empty() {
            let _ = writeln!(
                figures,
                "\nClaims placed by the runtime (priorities in slots): {}.",
                placements.join("; ")
            );
        }
        write_docs(BEGIN, END, &figures)?;
        println!("wrote the figures to {}", docs_path().display());
    }
    Ok(())
}
