//! What this kernel permits, found by trying (never guessed from a version
//! or lockdown mode).
use aya::{
    EbpfLoader,
    maps::{Array, ProgramArray},
    programs::{Extension, ProgramFd, TestRun, TestRunOptions, Xdp},
};
use dispatcher_common::{Control, names};
use serde::Serialize;

use crate::{dispatcher, error::chain, retry};

/// Why a probe failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// EPERM with an empty verifier log: this kernel refuses every
    /// extension (lockdown, or a kernel built without it).
    #[error("the kernel refused a test extension (EPERM with an empty verifier log)")]
    ExtensionsRefused,
    /// The test program ran but did not give the expected verdict.
    #[error("the test returned {got} instead of {expected}")]
    WrongVerdict {
        /// The verdict it gave.
        got: u32,
        /// The verdict it should have given.
        expected: u32,
    },
    /// A step of the probe failed.
    #[error("{step} failed")]
    Step {
        /// What was being done.
        step: &'static str,
        /// aya's error.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
}

fn step<E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
) -> impl FnOnce(E) -> ProbeError {
    move |e| ProbeError::Step {
        step,
        source: std::sync::Arc::new(e),
    }
}

/// One probe's outcome.
pub type Outcome = std::result::Result<(), ProbeError>;

fn outcome(r: Outcome) -> ProbeResult {
    match r {
        Ok(()) => ProbeResult {
            ok: true,
            detail: None,
        },
        Err(e) => ProbeResult {
            ok: false,
            detail: Some(chain(&e)),
        },
    }
}

/// Serialisable form of an [`Outcome`].
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Did the probe pass?
    pub ok: bool,
    /// Why not.
    pub detail: Option<String>,
}

/// The kernel's answers.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The kernel release.
    pub kernel: String,
    /// Running as root: without privileges every BPF load fails, and the
    /// answers below say nothing about the kernel.
    pub privileged: bool,
    /// Does the kernel publish its BTF (/sys/kernel/btf/vmlinux)?
    pub btf: bool,
    /// The lockdown mode, if the kernel has one.
    pub lockdown: Option<String>,
    /// Loading a plain XDP program.
    pub xdp: ProbeResult,
    /// Tail calls from a slot (the tail-call backend).
    pub tail_calls: ProbeResult,
    /// Extensions of a slot (the freplace backend).
    pub freplace: ProbeResult,
    /// Loading an `xdp.frags` program.
    pub frags: ProbeResult,
}

fn load_probe_xdp(name: &str) -> Result<(aya::Ebpf, ProgramFd), ProbeError> {
    let mut ebpf = EbpfLoader::new()
        .load(dispatcher::PROBE)
        .map_err(step("loading the probe object"))?;
    let p: &mut Xdp = ebpf
        .program_mut(name)
        .expect("the embedded probe object has its programs")
        .try_into()
        .map_err(step("loading a probe program"))?;
    retry::prog_load(name, || p.load()).map_err(step("loading a test XDP program"))?;
    let fd = p
        .fd()
        .map_err(step("loading a test XDP program"))?
        .try_clone()
        .map_err(step("duplicating a program fd"))?;
    Ok((ebpf, fd))
}

/// Loads a tiny extension of a tiny XDP program.
pub(crate) fn freplace() -> Outcome {
    let (_target, target_fd) = load_probe_xdp("probe_main")?;
    let mut ebpf = EbpfLoader::new()
        .extension("probe_ext")
        .load(dispatcher::PROBE)
        .map_err(step("loading the probe object"))?;
    let ext: &mut Extension = ebpf
        .program_mut("probe_ext")
        .expect("the embedded probe object has its programs")
        .try_into()
        .map_err(step("loading a test extension"))?;
    retry::prog_load("probe_ext", || {
        ext.load(target_fd.try_clone()?, "probe_target")
    })
    .map_err(|e| match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } if verifier_log.to_string().trim().is_empty()
            && io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            ProbeError::ExtensionsRefused
        }
        other => step("loading a test extension")(other),
    })
}

/// Loads the dispatcher (unattached), fills slot 0 with a program that
/// drops, and checks with BPF_PROG_TEST_RUN that its verdict comes back:
/// tail calls from a slot function work.
pub(crate) fn tail_calls() -> Outcome {
    let (_drop, drop_fd) = load_probe_xdp("probe_drop")?;
    let mut ebpf = EbpfLoader::new()
        .load(dispatcher::OBJECT)
        .map_err(step("loading the dispatcher"))?;
    {
        let mut c: Array<_, Control> = Array::try_from(
            ebpf.map_mut(names::CONTROL_MAP)
                .expect("the dispatcher has CONTROL"),
        )
        .map_err(step("opening CONTROL"))?;
        let mut control = Control::default();
        control.set_run_order(&[0]);
        c.set(0, control, 0).map_err(step("writing CONTROL"))?;
        let name = format!("{}0", names::SLOT_PROG_MAP_PREFIX);
        let mut a = ProgramArray::try_from(
            ebpf.map_mut(&name)
                .expect("the dispatcher has slot 0's program array"),
        )
        .map_err(step("opening slot 0's program array"))?;
        a.set(0, &drop_fd, 0)
            .map_err(step("filling slot 0's program array"))?;
    }
    let p: &mut Xdp = ebpf
        .program_mut(names::DISPATCHER)
        .expect("the dispatcher object has its program")
        .try_into()
        .map_err(step("loading the dispatcher"))?;
    retry::prog_load("the dispatcher", || p.load()).map_err(step("loading the dispatcher"))?;
    let frame = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    let r = p.test_run(opts).map_err(step("running the dispatcher"))?;
    match r.return_value {
        1 => Ok(()),
        got => Err(ProbeError::WrongVerdict { got, expected: 1 }),
    }
}

/// Does this process have the privileges BPF and XDP management need?
/// Without them every probe fails, whatever the kernel permits.
pub fn privileged() -> bool {
    crate::sys::is_privileged()
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
