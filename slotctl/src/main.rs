//! slotctl: a thin shell over `slots-runtime`.
//!
//! Exit status 0 on success; otherwise one line on stderr saying what
//! failed, why, and what to do.
mod advice;
mod output;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use clap::{Parser, Subcommand};
use slots_runtime::{
    AttachOptions, Backend, ClaimRequest, Mode, ProgramSource, Runtime, SlotRef, parse_mask,
};

#[derive(Parser)]
#[command(
    name = "slotctl",
    version,
    about = "Run several XDP programs on one interface, each in its own slot of a dispatcher attached once"
)]
struct Cli {
    /// bpffs directory holding the per-interface state.
    #[arg(long, global = true, default_value = slots_runtime::DEFAULT_ROOT)]
    bpffs: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Auto,
    Native,
    Skb,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Native => Mode::Native,
            ModeArg::Skb => Mode::Skb,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Claim a slot for an XDP program (attaches the dispatcher if needed).
    Claim {
        iface: String,
        /// The XDP object file (C `SEC("xdp")` or aya-ebpf `#[xdp]`).
        object: PathBuf,
        /// Lower runs first (0..=1000). Default: the object's XDP_RUN_CONFIG, else 50.
        #[arg(long)]
        prio: Option<u32>,
        /// Program name in the object, if it has several.
        #[arg(long)]
        program: Option<String>,
        /// Verdicts after which the next slot runs, e.g. `pass,drop`.
        /// Default: the object's XDP_RUN_CONFIG, else `pass`.
        #[arg(long, value_parser = parse_mask)]
        proceed_on: Option<u32>,
        /// Claim name (default: the program's name, cut to 32 bytes with a
        /// hash of the rest when longer).
        #[arg(long)]
        name: Option<String>,
        /// Size (max_entries) of a map the object leaves for its loader to
        /// size (declared with max_entries 0), e.g. `rx_cnt=64`. Repeatable.
        #[arg(long = "map-size", value_name = "NAME=N", value_parser = parse_map_size)]
        map_size: Vec<(String, u32)>,
        /// Hold the slot only while slotctl runs (in the foreground, showing
        /// the program's aya-log output); released when slotctl exits.
        #[arg(long)]
        hold: bool,
        /// auto (the interface's), freplace or tailcall.
        #[arg(long, default_value = "auto", value_parser = parse_backend)]
        backend: BackendArg,
        /// XDP mode if the dispatcher has to be attached.
        #[arg(long, value_enum, default_value = "auto")]
        mode: ModeArg,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release a claim by slot number or name.
    Release {
        iface: String,
        /// Slot number or claim name.
        which: String,
        /// Release another process's held claim.
        #[arg(long)]
        force: bool,
    },
    /// Show the claims (in run order) of one interface, or of all of this
    /// network namespace's interfaces that have the dispatcher.
    Status {
        iface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Attach the dispatcher (idempotent).
    Attach {
        iface: String,
        #[arg(long, value_enum, default_value = "auto")]
        mode: ModeArg,
        /// Default backend for claims: auto takes the first this kernel
        /// allows (freplace, then tailcall).
        #[arg(long, default_value = "auto", value_parser = parse_backend)]
        backend: BackendArg,
        /// Replace a foreign XDP program.
        #[arg(long)]
        force: bool,
    },
    /// Detach the dispatcher and remove its state.
    Detach {
        iface: String,
        /// Even while slots are claimed.
        #[arg(long)]
        force: bool,
    },
    /// Switch the per-slot counters on or off.
    Stats {
        iface: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Install (or remove) a replacement chain-decision program (freplace).
    Chain {
        iface: String,
        /// Object with a function `int f(struct xdp_md *, __u32 slot, __u32 action)`.
        object: Option<PathBuf>,
        #[arg(long)]
        program: Option<String>,
        /// Remove the installed (persistent) chain decision.
        #[arg(long, conflicts_with = "object")]
        remove: bool,
        /// Keep it only while slotctl runs.
        #[arg(long)]
        hold: bool,
    },
    /// What this kernel permits: extensions, tail calls, frags, lockdown.
    Probe {
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("slotctl: {}", advice::line(&e));
        std::process::exit(1);
    }
}

/// `--backend`: `auto` (None) or a backend's name.
#[derive(Clone, Copy)]
struct BackendArg(Option<Backend>);

fn parse_backend(s: &str) -> std::result::Result<BackendArg, String> {
    match s {
        "auto" => Ok(BackendArg(None)),
        other => other
            .parse()
            .map(|b| BackendArg(Some(b)))
            .map_err(|e| format!("{e}, or auto")),
    }
}

/// `--map-size NAME=N`.
fn parse_map_size(s: &str) -> std::result::Result<(String, u32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=N (e.g. rx_cnt=64)"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has no map name (NAME=N, e.g. rx_cnt=64)"));
    }
    match n.parse::<u32>() {
        Ok(0) => Err(format!("{name} needs at least 1 entry")),
        Ok(n) => Ok((name.to_string(), n)),
        Err(_) => Err(format!(
            "{n:?} is not a number of entries (NAME=N, e.g. rx_cnt=64)"
        )),
    }
}

/// Set by SIGINT or SIGTERM. Installed before a held claim is made, so
/// that a signal sent as soon as the claim is reported is never lost.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    Ok(stop)
}

/// Blocks until `stop` is set, calling `tick` every 100 ms and once more
/// at the end.
fn wait_for(stop: &AtomicBool, mut tick: impl FnMut()) {
    while !stop.load(Ordering::SeqCst) {
        tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    tick();
}

fn run(cli: Cli) -> Result<()> {
    let rt = Runtime::with_root(&cli.bpffs);
    match cli.cmd {
        Cmd::Claim {
            iface,
            object,
            prio,
            program,
            proceed_on,
            name,
            map_size,
            hold,
            backend,
            mode,
            json,
        } => {
            let mut src = ProgramSource::file(&object, program.as_deref())?;
            src.map_sizes.extend(map_size);
            let mut req = ClaimRequest::new(src);
            req.prio = prio;
            req.proceed_on = proceed_on;
            req.name = name;
            req.persistent = !hold;
            req.backend = backend.0;
            let mut opts = AttachOptions::default();
            opts.mode = mode.into();
            let stop = hold.then(stop_on_signal).transpose()?;
            let mut claim = rt.claim_with(&iface, &req, opts)?;
            output::claimed(&claim, json);
            if let Some(stop) = stop {
                let mut logger = aya_log::EbpfLogger::init(claim.ebpf_mut()).ok();
                wait_for(&stop, || {
                    if let Some(l) = logger.as_mut() {
                        l.flush();
                    }
                });
                claim.release()?;
                eprintln!("released slot on {iface}");
            }
        }
        Cmd::Release {
            iface,
            which,
            force,
        } => {
            let which: SlotRef = which.parse().expect("infallible");
            let r = rt.release(&iface, &which, force)?;
            if r.draining {
                println!(
                    "released slot {} ({}) on {iface}; it is reused once its holder exits",
                    r.slot, r.name
                );
            } else {
                println!("released slot {} ({}) on {iface}", r.slot, r.name);
            }
        }
        Cmd::Status { iface, json } => {
            let all = match iface {
                Some(i) => vec![rt.status(&i)?],
                None => rt.status_all()?,
            };
            output::status(&all, json)?;
        }
        Cmd::Attach {
            iface,
            mode,
            backend,
            force,
        } => {
            let mut opts = AttachOptions::default();
            opts.mode = mode.into();
            opts.backend = backend.0;
            opts.force = force;
            let a = rt.attach(&iface, opts)?;
            output::attached(&a);
        }
        Cmd::Detach { iface, force } => {
            rt.detach(&iface, force)?;
            println!("detached the dispatcher from {iface}");
        }
        Cmd::Stats { iface, state } => {
            rt.set_stats(&iface, state == "on")?;
            println!("counters {state} on {iface}");
        }
        Cmd::Chain {
            iface,
            object,
            program,
            remove,
            hold,
        } => {
            if remove {
                rt.clear_chain(&iface)?;
                println!("removed the chain decision of {iface}");
                return Ok(());
            }
            let Some(object) = object else {
                anyhow::bail!("give an object file, or --remove");
            };
            let src = ProgramSource::file(&object, program.as_deref())?;
            let stop = hold.then(stop_on_signal).transpose()?;
            let chain = rt.set_chain(&iface, &src, !hold)?;
            println!(
                "chain decision of {iface} is now program {} ({})",
                chain.prog_id,
                if hold { "held" } else { "persistent" }
            );
            if let Some(stop) = stop {
                wait_for(&stop, || {});
                drop(chain);
            }
        }
        Cmd::Probe { json } => output::probe(&slots_runtime::probe::report(), json)?,
    }
    Ok(())
}
