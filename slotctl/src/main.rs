//! slotctl: a thin shell over `slots-runtime`.
//!
//! Exit status 0 on success; otherwise one line on stderr saying what
//! failed, why, and what to do, and the status of its class
//! ([`slotctl::exit`]).
mod advice;
mod output;
mod stats;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use clap::{CommandFactory as _, Parser as _};
use output::out;
use slotctl::{
    cli::{Cli, Cmd, PinMapsArg},
    exit::Exit,
};
use slots_runtime::{
    ApplyOptions, AttachOptions, ClaimRequest, Desired, Error, MapPins, ProgramSource, Runtime,
    SlotRef,
};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .format_timestamp(None)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage(e),
    };
    let code = match run(cli) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("slotctl: {}", advice::line(&e));
            exit_of(&e)
        }
    };
    std::process::exit(code.code());
}

/// The exit status of a failure: its library error's class, if it is one.
fn exit_of(e: &anyhow::Error) -> Exit {
    e.downcast_ref::<Error>()
        .map_or(Exit::Failure, |e| Exit::of(e.kind()))
}

/// A usage error: clap's message on one line (help and version as clap
/// prints them).
fn usage(e: clap::Error) -> ! {
    use clap::error::ErrorKind as K;
    if matches!(
        e.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let usage = match e.get(clap::error::ContextKind::Usage) {
        Some(clap::error::ContextValue::StyledStr(u)) => Some(u.to_string()),
        _ => None,
    };
    // The subcommand, for the pointer to its help.
    let cmd = Cli::command();
    let sub = std::env::args()
        .skip(1)
        .find(|a| cmd.find_subcommand(a).is_some());
    let help = match sub {
        Some(s) => format!("slotctl {s} --help"),
        None => "slotctl --help".into(),
    };
    eprintln!(
        "slotctl: {}",
        advice::usage_line(&e.render().to_string(), usage.as_deref(), &help)
    );
    std::process::exit(Exit::Usage.code());
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

fn run(cli: Cli) -> Result<Exit> {
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
            pin_maps,
            map_pin_dir,
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
            req.pin_maps = match (map_pin_dir, pin_maps) {
                (Some(dir), _) => MapPins::Dir(dir),
                (None, PinMapsArg::Scoped) => MapPins::Scoped,
                (None, PinMapsArg::Shared) => MapPins::Shared,
            };
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
                let (slot, name) = (claim.slot, claim.name.clone());
                let how = claim.release()?;
                eprintln!("{}", output::own_release(&iface, slot, &name, how));
            }
        }
        Cmd::Release {
            iface,
            which,
            force,
        } => {
            let which: SlotRef = which.parse().expect("infallible");
            let r = rt.release(&iface, &which, force)?;
            out!("{}", output::released(&iface, &r));
        }
        Cmd::Replace {
            iface,
            which,
            object,
            program,
            map_size,
        } => {
            let mut src = ProgramSource::file(&object, program.as_deref())?;
            src.map_sizes.extend(map_size);
            let which: SlotRef = which.parse().expect("infallible");
            let r = rt.replace(&iface, &which, &src)?;
            out!("{}", output::replaced(&iface, &r));
        }
        Cmd::Status {
            all_namespaces: true,
            json,
            ..
        } => {
            let node = rt.status_node()?;
            let mut exit = Exit::Ok;
            let mut failed = Vec::new();
            let mut shown = Vec::new();
            for entry in node {
                match entry.status {
                    Ok(st) => shown.push((entry.namespace, st)),
                    // Dead state half removed is not damage: clean
                    // finishes it.
                    Err(e) => {
                        if exit == Exit::Ok && entry.dead.is_none() {
                            exit = Exit::of(e.kind());
                        }
                        failed.push(output::Unread {
                            namespace: entry.namespace,
                            iface: entry.iface,
                            dead: entry.dead,
                            error: anyhow::Error::from(e),
                        });
                    }
                }
            }
            output::status_node(&shown, &failed, json)?;
            for f in &failed {
                eprintln!("slotctl: {}", output::unread_line(f));
            }
            return Ok(exit);
        }
        Cmd::Clean { json } => {
            let cleaned = rt.clean()?;
            output::cleaned(&cleaned, json)?;
        }
        Cmd::Upgrade {
            iface,
            interrupt_held,
        } => {
            let u = rt.upgrade(&iface, interrupt_held)?;
            out!("{}", output::upgraded(&u));
        }
        Cmd::Status { iface, json, .. } => {
            let all = match iface {
                Some(i) => vec![(i.clone(), Ok(rt.status(&i)?))],
                None => rt.status_all()?,
            };
            let mut exit = Exit::Ok;
            let mut shown = Vec::new();
            let mut failed = Vec::new();
            for (name, st) in all {
                match st {
                    Ok(st) => shown.push(st),
                    Err(e) => {
                        if exit == Exit::Ok {
                            exit = Exit::of(e.kind());
                        }
                        failed.push((name, anyhow::Error::from(e)));
                    }
                }
            }
            output::status(&shown, &failed, json)?;
            for (_, e) in &failed {
                eprintln!("slotctl: {}", advice::line(e));
            }
            return Ok(exit);
        }
        Cmd::Export { iface } => {
            let e = rt.export(iface.as_deref())?;
            out!("{}", e.to_toml().trim_end());
        }
        Cmd::Apply {
            files,
            prune,
            dry_run,
            json,
        } => {
            let desired = Desired::read(&files)?;
            let mut opts = ApplyOptions::default();
            opts.prune = prune;
            opts.dry_run = dry_run;
            let plan = rt.apply(&desired, opts)?;
            output::plan(&plan, json)?;
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
            let d = rt.detach(&iface, force)?;
            out!("{}", output::detached(&d));
        }
        Cmd::Stats {
            iface,
            state,
            interval,
            json,
            watch,
            prometheus,
            listen,
        } => {
            let interval = Duration::from_secs_f64(interval);
            if let Some(state) = state {
                let iface = iface.expect("clap requires the interface with a state");
                rt.set_stats(&iface, state == "on")?;
                out!("{}", output::stats(&iface, state == "on"));
            } else if let Some(addr) = listen {
                let stop = stop_on_signal()?;
                stats::serve(&rt, iface.as_deref(), &addr, &stop)?;
            } else if prometheus {
                let sample = stats::Sample::take(&rt, iface.as_deref())?;
                out!("{}", stats::prometheus(&sample).trim_end());
                if sample.report_failures() {
                    return Ok(Exit::Failure);
                }
            } else {
                let iface = iface.expect("clap requires the interface without --prometheus");
                let stop = watch.then(stop_on_signal).transpose()?;
                if stats::show(&rt, &iface, interval, json, stop.as_deref())? {
                    return Ok(Exit::Failure);
                }
            }
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
                out!("removed the chain decision of {iface}");
                return Ok(Exit::Ok);
            }
            let object = object.expect("clap requires the object without --remove");
            let src = ProgramSource::file(&object, program.as_deref())?;
            let stop = hold.then(stop_on_signal).transpose()?;
            let chain = rt.set_chain(&iface, &src, !hold)?;
            out!(
                "chain decision of {iface} is now program {} ({})",
                chain.prog_id,
                if hold { "held" } else { "persistent" }
            );
            if let Some(stop) = stop {
                wait_for(&stop, || {});
                drop(chain);
            }
        }
        Cmd::Probe { json } => {
            if !slots_runtime::probe::privileged() {
                // Every BPF load fails unprivileged: the probes would say
                // nothing about the kernel.
                return Err(Error::lacking_privileges("probing what the kernel permits").into());
            }
            let r = slots_runtime::probe::report();
            output::probe(&r, json)?;
            if !r.tail_calls.ok && !r.freplace.ok {
                eprintln!(
                    "slotctl: this kernel runs neither backend (tail calls: {}); no claim can be made here",
                    r.tail_calls.detail.as_deref().unwrap_or("refused")
                );
                return Ok(Exit::KernelRefused);
            }
        }
    }
    Ok(Exit::Ok)
}
