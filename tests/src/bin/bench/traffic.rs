//! `bench --traffic`: packets per second through a veth pair into the
//! receiver's native XDP program, bare `XDP_PASS` against the runtime's
//! dispatcher with 0, 1, 5 and 10 tail-call claims, and against libxdp's
//! dispatcher with 1, 5 and 10 programs (its stubs, see `libxdp.rs`).
//!
//! All receivers take turns on one veth pair in two namespaces (created
//! here, deleted on drop, also on failure): each measurement attaches the
//! receiver's program to the receiving veth (native mode) and detaches it
//! after, so every ratio compares programs on the same pair. The runtime's
//! dispatchers are their pinned programs, attached there besides the
//! interface the runtime attached them to. The sender is `xdp_tx` run with
//! BPF_PROG_TEST_RUN in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`,
//! Linux 5.18+) on the sending veth's receive queue: each of the `frames`
//! repeats is a real frame that XDP_TX sends out of that veth, and the
//! peer's native XDP program takes it in (veth hands redirected frames to
//! the peer's NAPI, which only runs while the peer has an XDP program or
//! GRO, as every receiver here does). The kernel flushes every batch of 64
//! frames and runs the receiver's NAPI on the same CPU when the sender
//! re-enables bottom halves, so a measurement is the sender's and the
//! receiver's work for a fixed number of frames on one CPU; wall time of
//! the call divides the frames the receiver's XDP counted
//! (`rx_queue_0_xdp_packets` in `ethtool -S`).
//!
//! The frames are the benchmark's 64-byte UDP frame, addressed to a MAC
//! that is not the receiver's: after XDP_PASS the receiver's stack drops
//! them as "other host" at once and sends nothing back.
//!
//! Each comparison is a pair (a dispatcher, bare) measured back to back in
//! random order; a round runs every pair once, shuffled, and the ratio to
//! bare is the median of the per-pair ratios, so slow drifts of this
//! shared machine cancel out. The ratio is given for wall time (packets
//! per second) and for the sending thread's CPU time (which leaves out
//! the time another tenant had the CPU).
use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use integration_tests::{netns::VethPair, progs};

use crate::{
    libxdp,
    placed::{self, Placed},
};

/// Frames per measurement: a tenth to a fifth of a second here.
pub const DEFAULT_FRAMES: u32 = 200_000;
pub const DEFAULT_ROUNDS: usize = 25;
/// Frames the kernel sends per batch (its default, NAPI_POLL_WEIGHT).
const BATCH: u32 = 64;
/// Tries of one measurement that lost frames before the benchmark gives up.
const MAX_TRIES: u32 = 5;

/// Targets of the issue: packet rate of the dispatcher over bare
/// `XDP_PASS` (higher is better).
const TARGETS: [(usize, f64); 2] = [(0, 0.99), (5, 0.95)];

const BEGIN: &str =
    "<!-- traffic:begin (written by `cargo xtask bench --traffic --write-docs`) -->";
const END: &str = "<!-- traffic:end -->";

/// The XDP program a lane attaches to the receiving veth.
enum Receiver {
    /// A program loaded here: `xdp_pass`, or libxdp's dispatcher.
    Loaded { ebpf: Ebpf, name: &'static str },
    /// The runtime's dispatcher with claims: its pinned program, also
    /// attached to the interface the runtime attached it to.
    Placed(Box<Placed>),
}

impl Receiver {
    fn bare() -> Result<Self> {
        let mut ebpf = Ebpf::load(progs::bytes("xdp_pass"))?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_pass")
            .ok_or_else(|| anyhow!("no program xdp_pass"))?
            .try_into()?;
        prog.load()?;
        Ok(Receiver::Loaded {
            ebpf,
            name: "xdp_pass",
        })
    }

    /// libxdp's dispatcher configured for `k` programs.
    fn libxdp(object: &[u8], k: usize, frame: &[u8]) -> Result<Self> {
        Ok(Receiver::Loaded {
            ebpf: libxdp::load(object, k, frame)?,
            name: libxdp::PROGRAM,
        })
    }

    fn prog(&mut self) -> Result<&mut Xdp> {
        match self {
            Receiver::Loaded { ebpf, name } => Ok(ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no program {name}"))?
                .try_into()?),
            Receiver::Placed(p) => Ok(p.prog_mut()),
        }
    }
}

/// Which receiver a lane measures.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// `xdp_pass`: the baseline of every comparison.
    Bare,
    /// `xdp_pass` loaded a second time, compared with the first like the
    /// dispatchers are: the same program, so its ratio shows what noise
    /// alone makes of a ratio in this run.
    Control,
    /// The runtime's dispatcher with this many claims.
    Claims(usize),
    /// libxdp's dispatcher with this many programs.
    Libxdp(usize),
}

/// One receiver and its measurements.
struct Lane {
    label: String,
    kind: Kind,
    rx: Receiver,
    /// Every measurement of this receiver.
    samples: Vec<Sample>,
    /// Frames sent that the receiver never counted, in the measurements
    /// kept.
    lost: u64,
    /// Measurements made again because more than 1% of the frames did
    /// not arrive.
    repeated: u32,
}

/// The index of `ifname` in `ns`, from `ip -j link`.
fn ifindex(ns: &str, ifname: &str) -> Result<u32> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", "dev", ifname])
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} link show dev {ifname}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j output")?;
    v[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| anyhow!("no ifindex for {ifname} in ip -j output"))
}

/// Frames the receiving veth's XDP program has seen: the sum of its
/// `rx_queue_N_xdp_packets` in `ethtool -S`, read inside its namespace.
fn xdp_packets(pair: &VethPair) -> Result<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", &pair.rx.name, "ethtool", "-S", &pair.rx_if])
        .output()
        .context("running ethtool (`cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "ethtool -S {}: {}",
            pair.rx_if,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = false;
    let mut sum = 0;
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        if name.starts_with("rx_queue_") && name.ends_with("_xdp_packets") {
            found = true;
            sum += value.trim().parse::<u64>().context("ethtool counter")?;
        }
    }
    if !found {
        bail!("ethtool -S {} has no rx_queue_N_xdp_packets", pair.rx_if);
    }
    Ok(sum)
}

/// The sender: `xdp_tx`, run in live-frames mode.
struct Sender {
    ebpf: Ebpf,
    frame: [u8; 64],
}

/// How long sending took: wall time, and the sending thread's CPU time.
/// The receiver's NAPI runs in that thread when it re-enables bottom
/// halves, and this kernel has no IRQ time accounting, so the CPU time is
/// both sides' work; it leaves out the time the thread was not running.
struct Took {
    wall: Duration,
    cpu_ns: u64,
}

impl Sender {
    fn new() -> Result<Self> {
        let mut ebpf = Ebpf::load(progs::bytes("xdp_tx"))?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_tx")
            .ok_or_else(|| anyhow!("no program xdp_tx"))?
            .try_into()?;
        prog.load()?;
        Ok(Self {
            ebpf,
            frame: integration_tests::frames::udp(),
        })
    }

    /// Sends `frames` frames out of `pair.tx_if` (index `ifindex`).
    fn send(&self, pair: &VethPair, ifindex: u32, frames: u32) -> Result<Took> {
        let prog: &Xdp = self
            .ebpf
            .program("xdp_tx")
            .ok_or_else(|| anyhow!("no program xdp_tx"))?
            .try_into()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. The kernel wants data = 0,
        // data_end = the frame's length and no metadata; the ingress
        // interface gives the frames their receive queue, and XDP_TX sends
        // them out of that interface.
        let md = [0, self.frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|f| f.to_ne_bytes()).collect();
        // The kernel looks the ingress interface up in the calling
        // thread's namespace.
        let _in = pair.tx.enter()?;
        let c0 = crate::thread_cpu_ns();
        let t0 = Instant::now();
        prog.test_run(TestRunOptions {
            data_in: Some(&self.frame),
            ctx_in: Some(&ctx),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN in live-frames mode (Linux 5.18+)")?;
        Ok(Took {
            wall: t0.elapsed(),
            cpu_ns: crate::thread_cpu_ns() - c0,
        })
    }
}

/// One measurement of one receiver.
#[derive(Clone, Copy)]
struct Sample {
    /// Frames the receiver's XDP took in per second of wall time.
    pps: f64,
    /// The same per second of the sending thread's CPU time.
    cpu_pps: f64,
}

impl Lane {
    fn new(kind: Kind, libxdp_object: &[u8], frame: &[u8]) -> Result<Self> {
        let (label, rx) = match kind {
            Kind::Control => (
                "bare XDP_PASS program (control: loaded again)".to_string(),
                Receiver::bare()?,
            ),
            Kind::Bare => ("bare XDP_PASS program".to_string(), Receiver::bare()?),
            Kind::Libxdp(k) => (
                format!(
                    "libxdp dispatcher, {k} program{}",
                    if k == 1 { "" } else { "s" }
                ),
                Receiver::libxdp(libxdp_object, k, frame)?,
            ),
            Kind::Claims(k) => {
                let prios = placed::spread(k);
                let p = Placed::new(&prios, frame)?;
                eprintln!("bench: {}: slots {:?}", placed::label(&prios), p.slots);
                (placed::label(&prios), Receiver::Placed(Box::new(p)))
            }
        };
        Ok(Self {
            label,
            kind,
            rx,
            samples: Vec::new(),
            lost: 0,
            repeated: 0,
        })
    }

    /// Sends `frames` frames through this receiver.
    fn measure(&mut self, sender: &Sender, wire: &Wire, frames: u32) -> Result<Sample> {
        for _ in 0..MAX_TRIES {
            let (seen, took) = self.send(sender, wire, frames)?;
            if seen + u64::from(frames) / 100 < u64::from(frames) {
                // More than 1% never arrived: the receiver did not keep up
                // with the sender, so this is not a measurement of both on
                // one CPU. Measure again.
                self.repeated += 1;
                continue;
            }
            self.lost += u64::from(frames) - seen;
            let s = Sample {
                pps: seen as f64 / took.wall.as_secs_f64(),
                cpu_pps: seen as f64 * 1e9 / took.cpu_ns.max(1) as f64,
            };
            self.samples.push(s);
            return Ok(s);
        }
        bail!(
            "{}: more than 1% of the frames sent did not reach the receiver's XDP program, {MAX_TRIES} times in a row",
            self.label
        )
    }

    /// Sends `frames` frames; returns how many reached the receiver's XDP
    /// program, and how long sending took.
    /// The receiver's program is attached (native mode) for the send only.
    fn send(&mut self, sender: &Sender, wire: &Wire, frames: u32) -> Result<(u64, Took)> {
        crate::check_interrupted()?;
        let pair = &wire.pair;
        let prog = self.rx.prog()?;
        let link = {
            let _in = pair.rx.enter()?;
            prog.attach(&pair.rx_if, XdpMode::Driver)
                .with_context(|| format!("attaching {} to {} (native)", self.label, pair.rx_if))?
        };
        let sent = count_sent(sender, wire, frames);
        prog.detach(link)
            .with_context(|| format!("detaching {} from {}", self.label, pair.rx_if))?;
        sent
    }
}

/// Sends `frames` frames through the wire; returns how many reached the
/// receiver's XDP program, and how long sending took.
fn count_sent(sender: &Sender, wire: &Wire, frames: u32) -> Result<(u64, Took)> {
    let pair = &wire.pair;
    let before = xdp_packets(pair)?;
    let took = sender.send(pair, wire.tx_ifindex, frames)?;
    // The last batch may still sit in the receiver's ring for a moment:
    // read until all frames are in or the count stops moving.
    let mut seen = xdp_packets(pair)? - before;
    while seen < u64::from(frames) {
        std::thread::sleep(Duration::from_millis(5));
        let now = xdp_packets(pair)? - before;
        if now == seen {
            break;
        }
        seen = now;
    }
    Ok((seen, took))
}

/// The veth pair every receiver takes turns on, so that every ratio
/// compares programs on the same pair, and the sending veth's index.
struct Wire {
    pair: VethPair,
    tx_ifindex: u32,
}

impl Wire {
    fn new() -> Result<Self> {
        let pair = VethPair::new()?;
        let tx_ifindex = ifindex(&pair.tx.name, &pair.tx_if)?;
        Ok(Self { pair, tx_ifindex })
    }
}

/// Keeps the calling thread on the CPU it runs on, so that the receiver's
/// NAPI, which the kernel schedules on the sender's CPU, always runs there
/// too, inline. (Left free, the sender can move to the other CPU while a
/// NAPI run is pending on a busy one, and the receiver's ring overflows.)
fn pin_to_current_cpu() -> Result<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        bail!("sched_getcpu: {}", std::io::Error::last_os_error());
    }
    let cpu = cpu as usize;
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity (pid 0: the calling thread) only read and write
    // that set, which outlives the calls.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(cpu)
}

pub fn run(args: &crate::Args) -> Result<()> {
    let rounds = args.rounds.unwrap_or(DEFAULT_ROUNDS);
    let frames = args.frames;
    let started = Instant::now();
    let cpu = pin_to_current_cpu()?;
    let frame = integration_tests::frames::udp();
    let sender = Sender::new()?;
    let wire = Wire::new()?;
    // Lane 0 is bare, the baseline of every comparison.
    let libxdp_object = libxdp::read_object()?;
    let kinds = [
        Kind::Bare,
        Kind::Claims(0),
        Kind::Claims(1),
        Kind::Claims(5),
        Kind::Claims(10),
        Kind::Libxdp(1),
        Kind::Libxdp(5),
        Kind::Libxdp(10),
        Kind::Control,
    ];
    let mut lanes = Vec::new();
    for kind in kinds {
        lanes.push(Lane::new(kind, &libxdp_object, &frame)?);
    }
    // Warm-up, and a check that frames get through every receiver.
    for lane in &mut lanes {
        lane.measure(&sender, &wire, frames / 10)?;
        lane.samples.clear();
        lane.lost = 0;
        lane.repeated = 0;
    }
    // Per dispatcher lane, per round: (its sample, bare's), run back to
    // back in random order.
    let mut pairs: Vec<Vec<(Sample, Sample)>> = vec![Vec::new(); lanes.len()];
    let mut rng = crate::rng(started);
    eprint!(
        "bench: {rounds} rounds of {} comparisons with bare, {frames} frames each ",
        lanes.len() - 1
    );
    for _ in 0..rounds {
        let mut order: Vec<usize> = (1..lanes.len()).collect();
        crate::shuffle(&mut rng, &mut order);
        for i in order {
            let pair = if rng.below(2) == 0 {
                let v = lanes[i].measure(&sender, &wire, frames)?;
                (v, lanes[0].measure(&sender, &wire, frames)?)
            } else {
                let b = lanes[0].measure(&sender, &wire, frames)?;
                (lanes[i].measure(&sender, &wire, frames)?, b)
            };
            pairs[i].push(pair);
        }
        eprint!(".");
    }
    let took = started.elapsed();
    eprintln!(" {:.0} s", took.as_secs_f64());

    let rows: Vec<Row> = lanes
        .iter()
        .zip(&pairs)
        .map(|(l, p)| {
            let ratio = |f: fn(&Sample) -> f64| {
                if l.kind == Kind::Bare {
                    1.0
                } else {
                    crate::median(p.iter().map(|(v, b)| f(v) / f(b)).collect())
                }
            };
            Row {
                label: l.label.clone(),
                mpps: crate::median(l.samples.iter().map(|s| s.pps).collect()) / 1e6,
                ratio: ratio(|s| s.pps),
                cpu_ratio: ratio(|s| s.cpu_pps),
                target: match l.kind {
                    Kind::Claims(k) => TARGETS.iter().find(|t| t.0 == k).map(|t| t.1),
                    _ => None,
                },
                lost: l.lost,
                repeated: l.repeated,
                bare: l.kind == Kind::Bare,
            }
        })
        .collect();
    println!("{}", console_table(&rows));
    println!(
        "{frames} 64-byte frames per measurement, {rounds} rounds, sender pinned to CPU {cpu}; Mpps: median over the receiver's measurements; vs bare: median of per-pair ratios (wall time; CPU: the sending thread's CPU time); {}",
        crate::machine()
    );
    let missed = rows.iter().filter(|r| r.verdict() == "MISS").count();
    if missed > 0 {
        println!("{missed} target(s) missed");
    }
    if args.write_docs {
        let mut figures = String::new();
        let mut cmd = String::from("sudo cargo xtask bench --traffic --write-docs");
        if let Some(r) = args.rounds {
            let _ = write!(cmd, " --rounds {r}");
        }
        if frames != DEFAULT_FRAMES {
            let _ = write!(cmd, " --frames {frames}");
        }
        let _ = writeln!(
            figures,
            "Measured with `{cmd}` on {}, {rounds} rounds of {frames} frames per measurement, sender pinned to CPU {cpu}, in {:.0} s.\n",
            crate::machine(),
            took.as_secs_f64()
        );
        figures += &table(&rows);
        crate::write_docs(BEGIN, END, &figures)?;
        println!("wrote the figures to {}", crate::docs_path().display());
    }
    Ok(())
}

struct Row {
    label: String,
    mpps: f64,
    ratio: f64,
    cpu_ratio: f64,
    /// Lowest acceptable ratio.
    target: Option<f64>,
    lost: u64,
    repeated: u32,
    bare: bool,
}

impl Row {
    fn verdict(&self) -> &'static str {
        match self.target {
            Some(t) if self.ratio >= t => "PASS",
            Some(_) => "MISS",
            None if self.bare => "baseline",
            None => "info",
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| receiver's XDP program | Mpps | vs bare | vs bare (CPU time) | target | result | frames lost | measurements repeated |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---|---:|---:|");
    for r in rows {
        let target = r.target.map_or("-".to_string(), |t| format!(">= {t:.2}"));
        let _ = writeln!(
            t,
            "| {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
            r.label,
            r.mpps,
            r.ratio,
            r.cpu_ratio,
            target,
            r.verdict(),
            r.lost,
            r.repeated
        );
    }
    t
}

fn console_table(rows: &[Row]) -> String {
    let header = "receiver's XDP program";
    let w = rows
        .iter()
        .map(|r| r.label.len())
        .fold(header.len(), usize::max);
    let mut t = format!(
        "{:w$}  {:>6}  {:>7}  {:>7}  {:>6}  {:8}  lost  repeated\n",
        header, "Mpps", "vs bare", "CPU", "target", "result"
    );
    for r in rows {
        let target = r.target.map_or("-".to_string(), |t| format!("{t:.2}"));
        let _ = writeln!(
            t,
            "{:w$}  {:>6.3}  {:>7.3}  {:>7.3}  {:>6}  {:8}  {:4}  {}",
            r.label,
            r.mpps,
            r.ratio,
            r.cpu_ratio,
            target,
            r.verdict(),
            r.lost,
            r.repeated
        );
    }
    t
}
