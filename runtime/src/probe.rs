//! What this kernel permits, found by trying (never guessed from a version
//! or lockdown mode).
use aya::{
    EbpfLoader,
    maps::{Array, ProgramArray},
    programs::{Extension, ProgramFd, TestRun, TestRunOptions, Xdp},
};
use dispatcher_common::{Control, names};
use serde::Serialize;

use crate::{dispatcher, error::chain};

/// One probe's outcome: `Ok` or the reason it failed.
pub type Outcome = std::result::Result<(), String>;

fn outcome(r: Outcome) -> ProbeResult {
    match r {
        Ok(()) => ProbeResult {
            ok: true,
            detail: None,
        },
        Err(e) => ProbeResult {
            ok: false,
            detail: Some(e),
        },
    }
}

/// Serialisable form of an [`Outcome`].
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub detail: Option<String>,
}

/// The kernel's answers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: String,
    /// Running as root: without privileges every BPF load fails, and the
    /// answers below say nothing about the kernel.
    pub privileged: bool,
    pub btf: bool,
    pub lockdown: Option<String>,
    pub xdp: ProbeResult,
    pub tail_calls: ProbeResult,
    pub freplace: ProbeResult,
    pub frags: ProbeResult,
}

fn load_probe_xdp(name: &str) -> Result<(aya::Ebpf, ProgramFd), String> {
    let mut ebpf = EbpfLoader::new()
        .load(dispatcher::PROBE)
        .map_err(|e| chain(&e))?;
    let p: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e| chain(&e))?;
    p.load().map_err(|e| chain(&e))?;
    let fd = p
        .fd()
        .map_err(|e| chain(&e))?
        .try_clone()
        .map_err(|e| e.to_string())?;
    Ok((ebpf, fd))
}

/// Loads a tiny extension of a tiny XDP program.
pub fn freplace() -> Outcome {
    let (_target, target_fd) = load_probe_xdp("probe_main")?;
    let mut ebpf = EbpfLoader::new()
        .extension("probe_ext")
        .load(dispatcher::PROBE)
        .map_err(|e| chain(&e))?;
    let ext: &mut Extension = ebpf
        .program_mut("probe_ext")
        .ok_or("probe program missing")?
        .try_into()
        .map_err(|e| chain(&e))?;
    ext.load(target_fd, "probe_target").map_err(|e| match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } if verifier_log.to_string().trim().is_empty() => {
            format!("extension load refused: {io_error}, empty verifier log")
        }
        other => chain(&other),
    })
}

/// Loads the dispatcher (unattached), fills slot 0 with a program that
/// drops, and checks with BPF_PROG_TEST_RUN that its verdict comes back:
/// tail calls from a slot function work.
pub fn tail_calls() -> Outcome {
    let (_drop, drop_fd) = load_probe_xdp("probe_drop")?;
    let mut ebpf = EbpfLoader::new()
        .load(dispatcher::OBJECT)
        .map_err(|e| chain(&e))?;
    {
        let mut c: Array<_, Control> =
            Array::try_from(ebpf.map_mut(names::CONTROL_MAP).ok_or("no CONTROL")?)
                .map_err(|e| chain(&e))?;
        let mut control = Control::default();
        control.set_active(0, true);
        c.set(0, control, 0).map_err(|e| chain(&e))?;
        let name = format!("{}0", names::SLOT_PROG_MAP_PREFIX);
        let mut a = ProgramArray::try_from(ebpf.map_mut(&name).ok_or("no slot array")?)
            .map_err(|e| chain(&e))?;
        a.set(0, &drop_fd, 0).map_err(|e| chain(&e))?;
    }
    let p: &mut Xdp = ebpf
        .program_mut(names::DISPATCHER)
        .ok_or("no dispatcher")?
        .try_into()
        .map_err(|e| chain(&e))?;
    p.load().map_err(|e| chain(&e))?;
    let frame = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    let r = p.test_run(opts).map_err(|e| chain(&e))?;
    if r.return_value == 1 {
        Ok(())
    } else {
        Err(format!(
            "the dispatcher returned {} instead of the slot's XDP_DROP",
            r.return_value
        ))
    }
}

/// Runs every probe.
pub fn report() -> Report {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(['[', ']']).to_string())
        });
    Report {
        kernel,
        privileged: crate::sys::is_privileged(),
        btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        lockdown,
        xdp: outcome(load_probe_xdp("probe_main").map(drop)),
        tail_calls: outcome(tail_calls()),
        freplace: outcome(freplace()),
        frags: outcome(load_probe_xdp("probe_frags").map(drop)),
    }
}
