//! libxdp's own dispatcher, as Debian's libxdp1 ships it compiled
//! (`xdp-dispatcher.o`, xdp-tools 1.3.1), configured the way libxdp
//! configures it.
//!
//! The object has ten stub functions `prog0..prog9` and one XDP program,
//! `xdp_dispatcher`, that calls the first `num_progs_enabled` of them in
//! order. Its configuration is a `.rodata` constant, `conf`, that libxdp
//! writes before loading; the kernel freezes it, so the verifier removes
//! the calls past `num_progs_enabled`. libxdp then attaches each program
//! over one stub with freplace, which this kernel refuses; the stubs stand
//! in for those programs (an freplaced stub is entered the same way, and
//! its extension would return at once as the stub does).
//!
//! A stub returns `XDP_DISPATCHER_RETVAL` (31, not an XDP action) and the
//! dispatcher goes on after program `i` only when bit `ret` is set in
//! `chain_call_actions[i]`. libxdp always sets bit 31 there (so that a stub
//! with nothing attached never ends the chain), beside the program's own
//! actions: XDP_PASS by default. That is the mask used here, so all `k`
//! stubs run; after the last enabled one the dispatcher returns XDP_PASS.
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};

/// Where Debian's libxdp1 package installs the compiled dispatcher.
pub const OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o";
/// The program in it.
pub const PROGRAM: &str = "xdp_dispatcher";
/// Stubs in the object (`MAX_DISPATCHER_ACTIONS`).
pub const MAX_PROGS: usize = 10;

/// `XDP_DISPATCHER_MAGIC`: 'X' + 'D' + 'P'.
const MAGIC: u8 = 236;
/// `XDP_DISPATCHER_VERSION` of the object: its `xdp_metadata` section's
/// `dispatcher_version` BTF variable says 2, the layout below.
const VERSION: u8 = 2;
/// What an unreplaced stub returns (`XDP_DISPATCHER_RETVAL`).
const RETVAL: u32 = 31;
const XDP_PASS: u32 = 2;
/// libxdp's default run priority (recorded in `run_prios`; the program
/// itself does not read it).
const DEFAULT_PRIO: u32 = 50;

/// Size of `struct xdp_dispatcher_config` (version 2):
/// ```c
/// struct xdp_dispatcher_config {
///     __u8 magic;
///     __u8 dispatcher_version;
///     __u8 num_progs_enabled;
///     __u8 is_xdp_frags;
///     __u32 chain_call_actions[MAX_DISPATCHER_ACTIONS];
///     __u32 run_prios[MAX_DISPATCHER_ACTIONS];
///     __u32 program_flags[MAX_DISPATCHER_ACTIONS];
/// };
/// ```
/// aya refuses a value whose size differs from the object's `conf`
/// symbol, so another layout fails to load rather than misconfigure.
const CONF_LEN: usize = 4 + 3 * 4 * MAX_PROGS;

/// The bytes of `conf` for `k` programs with these chain masks.
fn conf(k: usize, chain: &[u32; MAX_PROGS]) -> [u8; CONF_LEN] {
    let mut c = [0u8; CONF_LEN];
    c[0] = MAGIC;
    c[1] = VERSION;
    c[2] = k as u8;
    c[3] = 0; // is_xdp_frags
    for (i, mask) in chain.iter().enumerate() {
        let at = |field: usize| 4 + field * 4 * MAX_PROGS + 4 * i;
        c[at(0)..at(0) + 4].copy_from_slice(&mask.to_ne_bytes());
        c[at(1)..at(1) + 4].copy_from_slice(&DEFAULT_PRIO.to_ne_bytes());
        // program_flags stay 0.
    }
    c
}

/// The chain mask libxdp writes for a program that proceeds on XDP_PASS.
const fn default_chain() -> [u32; MAX_PROGS] {
    [1 << XDP_PASS | 1 << RETVAL; MAX_PROGS]
}

/// Reads the object, or says how to get it.
pub fn read_object() -> Result<Vec<u8>> {
    std::fs::read(OBJECT).with_context(|| {
        format!("reading {OBJECT} (Debian package libxdp1; `cargo xtask setup` installs it)")
    })
}

/// Loads the dispatcher configured for `k` programs.
fn load_with(object: &[u8], k: usize, chain: &[u32; MAX_PROGS]) -> Result<Ebpf> {
    if k > MAX_PROGS {
        bail!("libxdp's dispatcher has {MAX_PROGS} program slots, not {k}");
    }
    let c = conf(k, chain);
    let mut ebpf = EbpfLoader::new()
        .override_global("conf", &c[..], true)
        .load(object)
        .with_context(|| format!("loading {OBJECT} with aya"))?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("{OBJECT} has no program {PROGRAM}"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading {PROGRAM} from {OBJECT} ({k} programs)"))?;
    Ok(ebpf)
}

/// Loads the dispatcher for `k` programs, as libxdp would configure it
/// for `k` programs that proceed on XDP_PASS, after checking that all `k`
/// stubs really run (see [`check`]).
pub fn load(object: &[u8], k: usize, frame: &[u8]) -> Result<Ebpf> {
    check(object, k, frame)?;
    let ebpf = load_with(object, k, &default_chain())?;
    let ret = run_once(&ebpf, frame)?;
    if ret != XDP_PASS {
        bail!("libxdp's dispatcher with {k} programs returned {ret}, not XDP_PASS");
    }
    Ok(ebpf)
}

/// The stubs cannot count, so the check is through the chain rule: in a
/// copy whose mask after stub `i` lacks bit 31, reaching stub `i` ends the
/// run with its return value, 31. With `i` = `k` - 1 that shows the run
/// reaches the last enabled stub (the ones before it proceed); the mask
/// after stub 9 is never read, so for `k` = 10 the check stops at stub 8
/// (and the call to stub 9 that follows it is unconditional).
fn check(object: &[u8], k: usize, frame: &[u8]) -> Result<()> {
    if k == 0 {
        return Ok(());
    }
    let last = (k - 1).min(MAX_PROGS - 2);
    let mut chain = default_chain();
    chain[last] = 1 << XDP_PASS;
    let ret = run_once(&load_with(object, k, &chain)?, frame)?;
    if ret != RETVAL {
        bail!(
            "libxdp's dispatcher with {k} programs: stub {last} did not run \
             (returned {ret}, expected its {RETVAL})"
        );
    }
    Ok(())
}

fn run_once(ebpf: &Ebpf, frame: &[u8]) -> Result<u32> {
    let prog: &Xdp = ebpf
        .program(PROGRAM)
        .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
        .try_into()?;
    Ok(prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })?
        .return_value)
}
