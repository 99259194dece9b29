//! The dispatcher as a user gets it: attached by the runtime (as `slotctl
//! attach` does) to a veth in namespaces the benchmark creates, with a
//! private bpffs root, and `k` tail-call claims of `xdp_pass` placed by
//! the runtime from their priorities (as `slotctl claim --prio` does).
//! The measured program is the pinned dispatcher itself.
use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;
use integration_tests::{
    env::{TestEnv, read_counter},
    progs,
};
use slots_runtime::{AttachOptions, Backend, Claim, ClaimRequest, Mode, ProgramSource, pin};

const XDP_PASS: u32 = 2;

/// Priorities a user would pick for `k` programs: one at libxdp's default
/// (50), more spread evenly over 10..90.
pub fn spread(k: usize) -> Vec<u32> {
    match k {
        0 => vec![],
        1 => vec![slots_runtime::DEFAULT_PRIO],
        _ => (0..k).map(|i| 10 + (80 * i / (k - 1)) as u32).collect(),
    }
}

/// [`spread`] arriving highest priority first: each claim then runs
/// before every one already there, so no claim sits in the slot the
/// dispatcher tests first at its run position.
pub fn descending(k: usize) -> Vec<u32> {
    let mut v = spread(k);
    v.reverse();
    v
}

/// `k` claims all at libxdp's default priority (first come, first served).
pub fn all_default(k: usize) -> Vec<u32> {
    vec![slots_runtime::DEFAULT_PRIO; k]
}

/// A dispatcher on a veth of its own with claims at `prios`. Dropping it
/// releases the claims, detaches the dispatcher, removes the bpffs root and
/// deletes the namespaces (also when a later step of the benchmark fails).
pub struct Placed {
    // Fields drop in order: the program and the claims before the world.
    prog: Xdp,
    _claims: Vec<Claim>,
    /// The priorities asked for.
    pub prios: Vec<u32>,
    /// The slots the runtime chose for them.
    pub slots: Vec<usize>,
    /// The veth pair (the dispatcher is on its `rx_if`), bpffs root and
    /// runtime: kept until the claims and the program are gone.
    _env: TestEnv,
}

impl Placed {
    /// Attaches the dispatcher (native mode, tail-call backend) and claims
    /// `xdp_pass` at `prios`. First claims `xdp_count` at the same
    /// priorities and checks that one packet runs each of them once, then
    /// releases those claims and checks the `xdp_pass` ones land in the
    /// same slots: a chain that silently skipped a slot would otherwise
    /// look fast.
    pub fn new(prios: &[u32], frame: &[u8]) -> Result<Self> {
        let env = TestEnv::new()?;
        let ifname = env.pair.rx_if.clone();
        let _in = env.pair.rx.enter()?;
        let mut opts = AttachOptions::default();
        opts.mode = Mode::Native;
        opts.backend = Some(Backend::TailCall);
        let attached = env
            .rt
            .attach(&ifname, opts)
            .with_context(|| format!("attaching the dispatcher to {ifname}"))?;
        let pinned = attached.dir.join(pin::DISPATCHER);
        let prog = Xdp::from_pin(&pinned, XdpAttachType::Interface)
            .with_context(|| format!("opening {}", pinned.display()))?;

        let mut counting = claim_all(&env, prios, "xdp_count")?;
        let ret = run(&prog, frame, 1)?;
        if ret != XDP_PASS {
            bail!("the dispatcher with {prios:?} returned {ret}, not XDP_PASS");
        }
        for c in &mut counting {
            let ran = read_counter(c.ebpf_mut());
            if ran != 1 {
                bail!(
                    "claims at priorities {prios:?}: the one in slot {} ran {ran} times on one packet",
                    c.slot
                );
            }
        }
        let counted: Vec<usize> = counting.iter().map(|c| c.slot).collect();
        for c in counting {
            c.release().context("releasing a check claim")?;
        }

        let claims = claim_all(&env, prios, "xdp_pass")?;
        let slots: Vec<usize> = claims.iter().map(|c| c.slot).collect();
        if slots != counted {
            bail!(
                "priorities {prios:?}: xdp_pass claims went to slots {slots:?}, the checked ones to {counted:?}"
            );
        }
        if run(&prog, frame, 1)? != XDP_PASS {
            bail!("the dispatcher with {prios:?} does not return XDP_PASS");
        }
        drop(_in);
        Ok(Self {
            prog,
            _claims: claims,
            prios: prios.to_vec(),
            slots,
            _env: env,
        })
    }

    /// The pinned dispatcher program.
    pub fn prog(&self) -> &Xdp {
        &self.prog
    }

    /// The pinned dispatcher program, to attach elsewhere too.
    pub fn prog_mut(&mut self) -> &mut Xdp {
        &mut self.prog
    }
}

/// Tail-call claims of test object `object` at `prios`, in that order.
fn claim_all(env: &TestEnv, prios: &[u32], object: &str) -> Result<Vec<Claim>> {
    prios
        .iter()
        .enumerate()
        .map(|(i, &prio)| {
            let mut req =
                ClaimRequest::new(ProgramSource::bytes(object, progs::bytes(object), None));
            req.prio = Some(prio);
            req.name = Some(format!("{object}_{i}"));
            req.backend = Some(Backend::TailCall);
            env.rt
                .claim(&env.pair.rx_if, &req)
                .map_err(|e| anyhow!(slots_runtime::error_chain(&e)))
                .with_context(|| format!("claiming {object} at priority {prio}"))
        })
        .collect()
}

/// Runs `prog` `repeat` times on `frame`; returns its verdict.
fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<u32> {
    Ok(prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?
        .return_value)
}

/// How the benchmark names a dispatcher with claims at `prios`.
pub fn label(prios: &[u32]) -> String {
    let k = prios.len();
    match prios {
        [] => "dispatcher, no claim".into(),
        [p] => format!("dispatcher, 1 claim (prio {p})"),
        _ if prios.iter().all(|&p| p == prios[0]) => {
            format!("dispatcher, {k} claims (all prio {})", prios[0])
        }
        _ if prios[0] > prios[k - 1] => format!(
            "dispatcher, {k} claims (prio {}..{}, highest first)",
            prios[k - 1],
            prios[0]
        ),
        _ => format!(
            "dispatcher, {k} claims (prio {}..{})",
            prios[0],
            prios[k - 1]
        ),
    }
}
