//! The dispatcher's datapath contract, on the real kernel.
//!
//! Each test loads its own instance of the embedded dispatcher object with
//! aya (no runtime library in between), fills and activates slots by writing
//! its maps directly, and checks verdicts with BPF_PROG_TEST_RUN, or with
//! real packets over a veth pair in namespaces the test creates. Instances
//! share nothing, so the tests run in parallel. Needs root.
use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray, ProgramArray},
    programs::{ProgramFd, TestRun, TestRunOptions, Xdp, xdp::XdpMode},
};
use dispatcher_common::{
    CONTROL_MAGIC, Control, DEFAULT_PROCEED_ON, FLAG_CUSTOM_CHAIN, FLAG_STATS, LAYOUT_VERSION,
    MAX_TAIL_CALLS, SLOT_COUNT, SlotStats, TAIL_CALL_SLOTS, action_bit, has_prog_array, names,
};
use integration_tests::{netns::VethPair, progs};

const ABORTED: u32 = 0;
const DROP: u32 = 1;
const PASS: u32 = 2;

// ---------------------------------------------------------------------------
// Frames

use integration_tests::frames::{arp as arp_frame, udp as udp_frame};

// ---------------------------------------------------------------------------
// A dispatcher instance driven through its maps

struct Dispatcher {
    ebpf: Ebpf,
}

impl Dispatcher {
    fn load() -> Result<Self> {
        require_root()?;
        let mut ebpf = EbpfLoader::new()
            .load(slots_runtime::DISPATCHER)
            .context("parsing the dispatcher object")?;
        let prog: &mut Xdp = ebpf
            .program_mut(names::DISPATCHER)
            .ok_or_else(|| anyhow!("no program {}", names::DISPATCHER))?
            .try_into()?;
        prog.load().context("loading the dispatcher (verifier)")?;
        let mut d = Self { ebpf };
        // What the runtime writes at attach time; the datapath ignores all
        // of it but the bitmap and the flags.
        d.write_control(Control {
            magic: CONTROL_MAGIC,
            version: LAYOUT_VERSION,
            ..Default::default()
        })?;
        for n in 0..SLOT_COUNT {
            d.set_proceed_on(n, DEFAULT_PROCEED_ON)?;
        }
        Ok(d)
    }

    fn prog(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(names::DISPATCHER)
            .ok_or_else(|| anyhow!("no dispatcher program"))?
            .try_into()?)
    }

    fn control(&self) -> Result<Control> {
        let map: Array<_, Control> = Array::try_from(self.map(names::CONTROL_MAP)?)?;
        Ok(map.get(&0, 0)?)
    }

    fn write_control(&mut self, c: Control) -> Result<()> {
        let mut map: Array<_, Control> = Array::try_from(self.map_mut(names::CONTROL_MAP)?)?;
        map.set(0, c, 0)?;
        Ok(())
    }

    /// Makes `slots`, in this order, the run order.
    fn activate(&mut self, slots: &[usize]) -> Result<()> {
        let mut c = self.control()?;
        c.set_run_order(slots);
        self.write_control(c)
    }

    fn set_flags(&mut self, flags: u32) -> Result<()> {
        let mut c = self.control()?;
        c.flags = flags;
        self.write_control(c)
    }

    fn set_proceed_on(&mut self, slot: usize, mask: u32) -> Result<()> {
        let mut c = self.control()?;
        c.proceed_on[slot] = mask as u8;
        self.write_control(c)
    }

    /// Puts a program into slot `slot`'s program array.
    fn fill(&mut self, slot: usize, prog: &ProgramFd) -> Result<()> {
        let mut arr = ProgramArray::try_from(self.map_mut(&slot_map(slot))?)?;
        arr.set(0, prog, 0)?;
        Ok(())
    }

    /// Deletes the entry of slot `slot`'s program array.
    fn empty(&mut self, slot: usize) -> Result<()> {
        let mut arr = ProgramArray::try_from(self.map_mut(&slot_map(slot))?)?;
        arr.clear_index(&0)?;
        Ok(())
    }

    /// One run of the dispatcher on `frame`; its verdict.
    fn run(&self, frame: &[u8]) -> Result<u32> {
        self.run_n(frame, 1)
    }

    fn run_n(&self, frame: &[u8], repeat: u32) -> Result<u32> {
        let res = self.prog()?.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok(res.return_value)
    }

    /// Slot `slot`'s counters summed over the CPUs.
    fn stats(&self, slot: usize) -> Result<SlotStats> {
        let map: PerCpuArray<_, SlotStats> = PerCpuArray::try_from(self.map(names::STATS_MAP)?)?;
        let mut sum = SlotStats::default();
        for s in map.get(&(slot as u32), 0)?.iter() {
            sum.packets += s.packets;
            for (a, b) in sum.actions.iter_mut().zip(s.actions) {
                *a += b;
            }
        }
        Ok(sum)
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf.map(name).ok_or_else(|| anyhow!("no map {name}"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("no map {name}"))
    }
}

fn slot_map(slot: usize) -> String {
    assert!(has_prog_array(slot), "slot {slot} has no program array");
    format!("{}{slot}", names::SLOT_PROG_MAP_PREFIX)
}

/// The slots that have a program array, in order.
fn tail_call_slots() -> Vec<usize> {
    (0..SLOT_COUNT).filter(|&n| has_prog_array(n)).collect()
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the datapath tests need root"
    );
    Ok(())
}

/// A loaded test program (`xdp_pass`, `xdp_drop`, `xdp_count`, ...).
struct TestProg {
    ebpf: Ebpf,
    name: &'static str,
}

impl TestProg {
    fn load(name: &'static str) -> Result<Self> {
        let mut ebpf = Ebpf::load(progs::bytes(name)).with_context(|| format!("parsing {name}"))?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
        Ok(Self { ebpf, name })
    }

    fn fd(&self) -> Result<&ProgramFd> {
        let prog: &Xdp = self
            .ebpf
            .program(self.name)
            .ok_or_else(|| anyhow!("no program"))?
            .try_into()?;
        Ok(prog.fd()?)
    }

    /// `xdp_count`'s counter, summed over the CPUs.
    fn counted(&self) -> Result<u64> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("COUNTER")
                .ok_or_else(|| anyhow!("{} has no COUNTER", self.name))?,
        )?;
        Ok(map.get(&0, 0)?.iter().sum())
    }
}

// ---------------------------------------------------------------------------
// Loading and BTF

#[test]
fn dispatcher_loads_and_passes_the_verifier() -> Result<()> {
    let d = Dispatcher::load()?;
    let info = d.prog()?.info()?;
    assert_eq!(info.name_as_str(), Some(names::DISPATCHER));
    for name in [names::CONTROL_MAP, names::SLOTS_MAP, names::STATS_MAP] {
        d.map(name)?;
    }
    for n in 0..SLOT_COUNT {
        let name = format!("{}{n}", names::SLOT_PROG_MAP_PREFIX);
        assert_eq!(d.ebpf.map(&name).is_some(), has_prog_array(n), "map {name}");
    }
    assert_eq!(tail_call_slots().len(), TAIL_CALL_SLOTS);
    Ok(())
}

/// The object's BTF: every slot function and `chain_decide` is a global
/// function (an freplace target) taking `struct xdp_md *` first.
#[test]
fn btf_declares_global_slot_functions_taking_xdp_md() -> Result<()> {
    let btf = btf::Btf::from_elf(slots_runtime::DISPATCHER)?;
    let mut expected: Vec<String> = (0..SLOT_COUNT)
        .map(|n| format!("{}{n}", names::SLOT_FN_PREFIX))
        .collect();
    expected.push(names::CHAIN_FN.to_string());
    for name in &expected {
        let func = btf.func(name).with_context(|| format!("BTF FUNC {name}"))?;
        assert_eq!(
            func.linkage,
            btf::LINKAGE_GLOBAL,
            "{name} must have global linkage"
        );
        let first = *func
            .params
            .first()
            .ok_or_else(|| anyhow!("{name} takes no parameter"))?;
        assert_eq!(
            btf.pointee_struct(first)?.as_deref(),
            Some("xdp_md"),
            "{name}'s first parameter"
        );
    }
    // chain_decide(ctx, slot, action): the replacement needs all three.
    assert_eq!(btf.func(names::CHAIN_FN)?.params.len(), 3);
    // Nothing beyond the contract's slot count.
    assert!(
        btf.func(&format!("{}{SLOT_COUNT}", names::SLOT_FN_PREFIX))
            .is_err()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Verdicts

#[test]
fn no_active_slot_passes() -> Result<()> {
    let mut d = Dispatcher::load()?;
    assert_eq!(d.run(&udp_frame())?, PASS);
    // Every slot filled with a dropper, none active: still nothing runs.
    let drop = TestProg::load("xdp_drop")?;
    for n in tail_call_slots() {
        d.fill(n, drop.fd()?)?;
    }
    assert_eq!(d.run(&udp_frame())?, PASS);
    Ok(())
}

#[test]
fn active_filled_slot_sets_the_verdict() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let drop = TestProg::load("xdp_drop")?;
    let slot = 7;
    d.fill(slot, drop.fd()?)?;
    assert_eq!(d.run(&udp_frame())?, PASS, "filled but not active");
    d.activate(&[slot])?;
    assert_eq!(d.run(&udp_frame())?, DROP, "filled and active");
    // The slot program's own logic decides: it passes what is not UDP.
    assert_eq!(d.run(&arp_frame())?, PASS);
    // The last tail-call slot works the same way.
    let last = *tail_call_slots().last().unwrap();
    d.activate(&[])?;
    d.fill(last, drop.fd()?)?;
    d.activate(&[last])?;
    assert_eq!(d.run(&udp_frame())?, DROP, "slot {last}");
    Ok(())
}

#[test]
fn filled_inactive_slot_does_not_run() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let count = TestProg::load("xdp_count")?;
    let drop = TestProg::load("xdp_drop")?;
    d.fill(11, count.fd()?)?;
    d.fill(12, drop.fd()?)?;
    d.activate(&[10, 13])?; // neighbours only, both empty
    assert_eq!(d.run_n(&udp_frame(), 10)?, PASS);
    assert_eq!(count.counted()?, 0, "an inactive slot's program ran");
    d.activate(&[11])?;
    assert_eq!(d.run_n(&udp_frame(), 10)?, PASS);
    assert_eq!(count.counted()?, 10);
    Ok(())
}

#[test]
fn active_empty_slot_is_skipped() -> Result<()> {
    let mut d = Dispatcher::load()?;
    d.activate(&[5])?;
    assert_eq!(d.run(&udp_frame())?, PASS, "a lone empty slot");
    // A slot without a program array (an freplace-only slot) is empty too.
    assert!(!has_prog_array(3));
    d.activate(&[3])?;
    assert_eq!(d.run(&udp_frame())?, PASS, "a lone slot without an array");
    // An empty slot does not stop the chain, whatever its mask says.
    let drop = TestProg::load("xdp_drop")?;
    d.set_proceed_on(3, 0)?;
    d.set_proceed_on(5, 0)?;
    d.fill(6, drop.fd()?)?;
    d.activate(&[3, 5, 6])?;
    assert_eq!(d.run(&udp_frame())?, DROP);
    Ok(())
}

#[test]
fn proceed_on_masks_are_obeyed() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let pass = TestProg::load("xdp_pass")?;
    let drop = TestProg::load("xdp_drop")?;
    let (a, b) = (20, 21);
    d.fill(a, pass.fd()?)?;
    d.fill(b, drop.fd()?)?;
    d.activate(&[a, b])?;
    assert_eq!(d.run(&udp_frame())?, DROP, "a passes on, b drops");
    d.set_proceed_on(a, 0)?;
    assert_eq!(d.run(&udp_frame())?, PASS, "the chain stops at a");

    // Masks are per action: go on after DROP, not after PASS.
    d.fill(a, drop.fd()?)?;
    d.fill(b, pass.fd()?)?;
    d.set_proceed_on(a, action_bit(DROP))?;
    assert_eq!(
        d.run(&udp_frame())?,
        PASS,
        "a's DROP proceeds, b's PASS is final"
    );
    d.set_proceed_on(a, action_bit(PASS))?;
    assert_eq!(d.run(&udp_frame())?, DROP, "a's DROP is final");
    Ok(())
}

/// The same rule through the `chain_decide` function (FLAG_CUSTOM_CHAIN, no
/// replacement linked): identical verdicts.
#[test]
fn chain_decide_applies_the_default_rule() -> Result<()> {
    let mut d = Dispatcher::load()?;
    d.set_flags(FLAG_CUSTOM_CHAIN)?;
    let pass = TestProg::load("xdp_pass")?;
    let drop = TestProg::load("xdp_drop")?;
    d.fill(40, pass.fd()?)?;
    d.fill(70, drop.fd()?)?;
    d.activate(&[40, 70])?;
    assert_eq!(d.run(&udp_frame())?, DROP);
    d.set_proceed_on(40, 0)?;
    assert_eq!(d.run(&udp_frame())?, PASS);
    Ok(())
}

/// The run table decides the order, not the slot index: a higher slot
/// placed first runs first.
#[test]
fn the_run_table_decides_the_order() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let count = TestProg::load("xdp_count")?;
    let drop = TestProg::load("xdp_drop")?;
    let slots = tail_call_slots();
    let last = *slots.last().unwrap();
    for (lo, hi) in [(slots[0], slots[1]), (slots[2], slots[3]), (slots[0], last)] {
        d.fill(hi, count.fd()?)?;
        d.fill(lo, drop.fd()?)?;
        // hi first: the counter runs, then the dropper.
        d.activate(&[hi, lo])?;
        let before = count.counted()?;
        assert_eq!(d.run(&udp_frame())?, DROP, "[{hi}, {lo}]");
        assert_eq!(count.counted()?, before + 1, "slot {hi} did not run first");
        // lo first: the dropper ends the chain before the counter.
        d.activate(&[lo, hi])?;
        assert_eq!(d.run(&udp_frame())?, DROP, "[{lo}, {hi}]");
        assert_eq!(count.counted()?, before + 1, "slot {hi} ran after a DROP");
        d.empty(lo)?;
        d.empty(hi)?;
    }
    Ok(())
}

/// Every slot with a program array runs when it is the only active one:
/// `run_slot` reaches every slot of the contract's count.
#[test]
fn every_tail_call_slot_runs() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let count = TestProg::load("xdp_count")?;
    let slots = tail_call_slots();
    for &n in &slots {
        d.fill(n, count.fd()?)?;
    }
    for (i, &n) in slots.iter().enumerate() {
        d.activate(&[n])?;
        assert_eq!(d.run(&udp_frame())?, PASS, "slot {n}");
        assert_eq!(count.counted()?, i as u64 + 1, "slot {n} did not run");
    }
    Ok(())
}

/// Consecutive tail-call slots run in table order, every pair of them.
#[test]
fn neighbours_run_in_order_everywhere() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let count = TestProg::load("xdp_count")?;
    let drop = TestProg::load("xdp_drop")?;
    for pair in tail_call_slots().windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        d.fill(lo, count.fd()?)?;
        d.fill(hi, drop.fd()?)?;
        d.activate(&[lo, hi])?;
        let before = count.counted()?;
        assert_eq!(d.run(&udp_frame())?, DROP, "({lo}, {hi})");
        assert_eq!(count.counted()?, before + 1, "slot {lo} did not run");
        d.fill(lo, drop.fd()?)?;
        d.fill(hi, count.fd()?)?;
        assert_eq!(d.run(&udp_frame())?, DROP, "({lo}, {hi})");
        assert_eq!(count.counted()?, before + 1, "slot {hi} ran after a DROP");
        d.empty(lo)?;
        d.empty(hi)?;
    }
    Ok(())
}

#[test]
fn emptied_slot_passes_through_again() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let drop = TestProg::load("xdp_drop")?;
    d.fill(31, drop.fd()?)?;
    d.activate(&[31])?;
    assert_eq!(d.run(&udp_frame())?, DROP);
    d.empty(31)?;
    assert_eq!(d.run(&udp_frame())?, PASS);
    // Refilled: active again without touching the bitmap.
    d.fill(31, drop.fd()?)?;
    assert_eq!(d.run(&udp_frame())?, DROP);
    Ok(())
}

#[test]
fn packet_changing_program_runs_in_a_slot() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let rewrite = TestProg::load("xdp_rewrite")?;
    let drop = TestProg::load("xdp_drop")?;
    d.fill(1, rewrite.fd()?)?;
    d.fill(2, drop.fd()?)?;
    d.activate(&[1, 2])?;
    // xdp_rewrite moves the head out and back and passes; the next slot
    // then still sees a UDP frame.
    assert_eq!(d.run(&udp_frame())?, DROP);
    Ok(())
}

// ---------------------------------------------------------------------------
// Stats

#[test]
fn stats_count_packets_and_verdicts_only_when_enabled() -> Result<()> {
    let mut d = Dispatcher::load()?;
    let pass = TestProg::load("xdp_pass")?;
    let drop = TestProg::load("xdp_drop")?;
    d.fill(10, pass.fd()?)?;
    d.fill(11, drop.fd()?)?;
    d.fill(12, pass.fd()?)?;
    d.activate(&[9, 10, 11, 12])?; // 9 has no array; 12 runs only after 11 passes
    d.set_flags(FLAG_STATS)?;
    assert_eq!(d.run_n(&udp_frame(), 5)?, DROP);
    assert_eq!(d.run_n(&arp_frame(), 3)?, PASS);

    let s10 = d.stats(10)?;
    assert_eq!(s10.packets, 8);
    assert_eq!(s10.actions, [0, 0, 8, 0, 0]);
    let s11 = d.stats(11)?;
    assert_eq!(s11.packets, 8);
    assert_eq!(s11.actions[DROP as usize], 5);
    assert_eq!(s11.actions[PASS as usize], 3);
    assert_eq!(s11.actions[ABORTED as usize], 0);
    assert_eq!(d.stats(9)?.packets, 0, "an empty slot is not counted");
    let s12 = d.stats(12)?;
    assert_eq!(s12.packets, 3, "only the ARP frames get past slot 11");
    assert_eq!(s12.actions, [0, 0, 3, 0, 0]);

    d.set_flags(0)?;
    assert_eq!(d.run_n(&udp_frame(), 7)?, DROP);
    assert_eq!(d.stats(10)?, s10, "counters moved with FLAG_STATS off");
    assert_eq!(d.stats(11)?, s11, "counters moved with FLAG_STATS off");
    assert_eq!(d.stats(12)?, s12, "counters moved with FLAG_STATS off");
    Ok(())
}

// ---------------------------------------------------------------------------
// The tail-call budget

/// Does this kernel count tail calls across the dispatcher's slot calls?
/// Measured: 6.12 and 6.18 do (one budget of 33 per packet); 6.1 does not
/// (the x86 JIT passed the count into each call but not back, so every slot
/// call starts from its caller's count).
fn tail_calls_counted_across_calls() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    (major, minor) > (6, 1)
}

/// The kernel allows 33 tail calls per packet, across all slots. With 34
/// active tail-call slots, the 34th slot's tail call fails: that slot
/// reports itself empty and is skipped (the dispatcher does not abort).
/// On kernels that do not count across calls (6.1), the 34th runs.
#[test]
fn thirty_fourth_tail_call_falls_through() -> Result<()> {
    assert_eq!(MAX_TAIL_CALLS, 33);
    let mut d = Dispatcher::load()?;
    let count = TestProg::load("xdp_count")?;
    let drop = TestProg::load("xdp_drop")?;
    let slots = &tail_call_slots()[..=MAX_TAIL_CALLS]; // 34 slots
    for &n in &slots[..MAX_TAIL_CALLS] {
        d.fill(n, count.fd()?)?;
    }
    let last = slots[MAX_TAIL_CALLS];
    d.fill(last, drop.fd()?)?;
    d.set_flags(FLAG_STATS)?;

    // 33 slots: all run, the 33rd (a dropper) gets its tail call.
    d.activate(&slots[1..])?;
    assert_eq!(d.run(&udp_frame())?, DROP, "the 33rd tail call must work");
    assert_eq!(count.counted()?, 32);
    assert_eq!(d.stats(last)?.packets, 1);

    d.activate(slots)?;
    if !tail_calls_counted_across_calls() {
        // Every slot's tail call works: the dropper, 34th, ends the chain.
        assert_eq!(d.run(&udp_frame())?, DROP, "the 34th tail call did not run");
        assert_eq!(count.counted()?, 32 + 33);
        assert_eq!(d.stats(last)?.packets, 2);
        return Ok(());
    }
    // 34 slots: the dropper is the 34th tail call; it never runs.
    assert_eq!(d.run(&udp_frame())?, PASS, "the 34th tail call ran");
    assert_eq!(count.counted()?, 32 + 33);
    assert_eq!(
        d.stats(last)?.packets,
        1,
        "the 34th slot was counted as run"
    );
    assert_eq!(d.stats(0)?.packets, 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// Real packets

#[test]
fn real_packets_through_a_veth() -> Result<()> {
    const N: usize = 20;
    let pair = VethPair::new()?;
    let mut d = Dispatcher::load()?;
    {
        let _in = pair.rx.enter()?;
        let prog: &mut Xdp = d
            .ebpf
            .program_mut(names::DISPATCHER)
            .ok_or_else(|| anyhow!("no dispatcher"))?
            .try_into()?;
        prog.attach(&pair.rx_if, XdpMode::Skb)
            .with_context(|| format!("attaching to {}", pair.rx_if))?;
    }
    let port = 9000;
    assert_eq!(
        pair.send_and_count(port, N)?,
        N,
        "nothing in the slots: all arrive"
    );

    let drop = TestProg::load("xdp_drop")?;
    d.fill(50, drop.fd()?)?;
    d.activate(&[50])?;
    assert_eq!(
        pair.send_and_count(port, N)?,
        0,
        "xdp_drop in an active slot"
    );

    d.empty(50)?;
    let got = pair.send_and_count(port, N)?;
    if got != N {
        bail!("after emptying the slot {got} of {N} datagrams arrived");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A minimal reader for the object's BTF, enough to check function
// signatures without tools that may be missing where the tests run.

mod btf {
    use anyhow::{Result, anyhow, bail, ensure};

    pub const LINKAGE_GLOBAL: u32 = 1;

    const KIND_PTR: u32 = 2;
    const KIND_STRUCT: u32 = 4;
    const KIND_TYPEDEF: u32 = 8;
    const KIND_VOLATILE: u32 = 9;
    const KIND_CONST: u32 = 10;
    const KIND_RESTRICT: u32 = 11;
    const KIND_FUNC: u32 = 12;
    const KIND_FUNC_PROTO: u32 = 13;
    const KIND_TYPE_TAG: u32 = 18;

    struct Type {
        name: String,
        kind: u32,
        vlen: u32,
        /// `size_type`: a size or a type id, by kind.
        size_type: u32,
        /// FUNC_PROTO parameter type ids.
        params: Vec<u32>,
    }

    pub struct Func {
        pub linkage: u32,
        pub params: Vec<u32>,
    }

    /// Types by id (index 0 is `void`).
    pub struct Btf {
        types: Vec<Type>,
    }

    fn u16_at(b: &[u8], o: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(
            b.get(o..o + 2)
                .ok_or_else(|| anyhow!("truncated"))?
                .try_into()?,
        ))
    }
    fn u32_at(b: &[u8], o: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(
            b.get(o..o + 4)
                .ok_or_else(|| anyhow!("truncated"))?
                .try_into()?,
        ))
    }
    fn u64_at(b: &[u8], o: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(
            b.get(o..o + 8)
                .ok_or_else(|| anyhow!("truncated"))?
                .try_into()?,
        ))
    }

    fn cstr(b: &[u8], o: usize) -> Result<String> {
        let s = b
            .get(o..)
            .ok_or_else(|| anyhow!("string offset {o} out of range"))?;
        let end = s
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| anyhow!("unterminated string"))?;
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    }

    /// The `.BTF` section of a little-endian ELF64 object.
    fn btf_section(elf: &[u8]) -> Result<&[u8]> {
        ensure!(
            elf.get(..4) == Some(b"\x7fELF".as_slice()),
            "not an ELF file"
        );
        ensure!(
            elf[4] == 2 && elf[5] == 1,
            "not a little-endian ELF64 object"
        );
        let shoff = u64_at(elf, 0x28)? as usize;
        let shentsize = usize::from(u16_at(elf, 0x3a)?);
        let shnum = usize::from(u16_at(elf, 0x3c)?);
        let shstrndx = usize::from(u16_at(elf, 0x3e)?);
        let section = |i: usize| -> Result<(u32, usize, usize)> {
            let h = shoff + i * shentsize;
            Ok((
                u32_at(elf, h)?,
                u64_at(elf, h + 24)? as usize,
                u64_at(elf, h + 32)? as usize,
            ))
        };
        let (_, stroff, _) = section(shstrndx)?;
        for i in 0..shnum {
            let (name, off, size) = section(i)?;
            if cstr(elf, stroff + name as usize)? == ".BTF" {
                return elf
                    .get(off..off + size)
                    .ok_or_else(|| anyhow!(".BTF out of range"));
            }
        }
        bail!("no .BTF section")
    }

    impl Btf {
        pub fn from_elf(elf: &[u8]) -> Result<Self> {
            let b = btf_section(elf)?;
            ensure!(u16_at(b, 0)? == 0xeb9f, "bad BTF magic");
            let hdr_len = u32_at(b, 4)? as usize;
            let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
            let str_off = u32_at(b, 16)? as usize;
            let types_at = hdr_len + type_off;
            let strings = b
                .get(hdr_len + str_off..)
                .ok_or_else(|| anyhow!("BTF strings out of range"))?;

            let mut types = vec![Type {
                name: String::new(),
                kind: 0,
                vlen: 0,
                size_type: 0,
                params: Vec::new(),
            }];
            let mut o = types_at;
            while o < types_at + type_len {
                let name = cstr(strings, u32_at(b, o)? as usize)?;
                let info = u32_at(b, o + 4)?;
                let size_type = u32_at(b, o + 8)?;
                let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
                o += 12;
                let mut params = Vec::new();
                // Bytes following the common header, by kind.
                let extra = match kind {
                    1 | 14 | 17 => 4,   // INT, VAR, DECL_TAG
                    3 => 12,            // ARRAY
                    4 | 5 => 12 * vlen, // STRUCT, UNION
                    6 => 8 * vlen,      // ENUM
                    13 => {
                        for p in 0..vlen as usize {
                            params.push(u32_at(b, o + 8 * p + 4)?);
                        }
                        8 * vlen
                    }
                    15 | 19 => 12 * vlen, // DATASEC, ENUM64
                    2 | 7..=12 | 16 | 18 => 0,
                    k => bail!("unknown BTF kind {k}"),
                };
                o += extra as usize;
                types.push(Type {
                    name,
                    kind,
                    vlen,
                    size_type,
                    params,
                });
            }
            Ok(Self { types })
        }

        fn get(&self, id: u32) -> Result<&Type> {
            self.types
                .get(id as usize)
                .ok_or_else(|| anyhow!("BTF type id {id} out of range"))
        }

        /// The FUNC named `name`: its linkage and parameter type ids.
        pub fn func(&self, name: &str) -> Result<Func> {
            let f = self
                .types
                .iter()
                .find(|t| t.kind == KIND_FUNC && t.name == name)
                .ok_or_else(|| anyhow!("no FUNC {name}"))?;
            let proto = self.get(f.size_type)?;
            ensure!(
                proto.kind == KIND_FUNC_PROTO,
                "{name}: type is not a FUNC_PROTO"
            );
            Ok(Func {
                linkage: f.vlen,
                params: proto.params.clone(),
            })
        }

        fn skip_modifiers(&self, mut id: u32) -> Result<&Type> {
            loop {
                let t = self.get(id)?;
                match t.kind {
                    KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                        id = t.size_type
                    }
                    _ => return Ok(t),
                }
            }
        }

        /// If `id` is a pointer to a struct: the struct's name.
        pub fn pointee_struct(&self, id: u32) -> Result<Option<String>> {
            let t = self.skip_modifiers(id)?;
            if t.kind != KIND_PTR {
                return Ok(None);
            }
            let s = self.skip_modifiers(t.size_type)?;
            Ok((s.kind == KIND_STRUCT).then(|| s.name.clone()))
        }
    }
}
