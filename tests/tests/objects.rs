//! Objects as they ship, claimed through slotctl: an XDP program among
//! programs of other types, legacy section names, long program names,
//! XDP_RUN_CONFIG without BTF, maps their loader sizes, a program's own
//! program array. Every acceptance is checked with real packets; every
//! refusal is one exact line on stderr, a non-zero exit, and no change.
mod support;

use std::{collections::BTreeMap, process::Output};

use aya::{
    EbpfLoader,
    maps::{Map, MapData, MapInfo, ProgramArray},
    programs::Xdp,
};
use integration_tests::{
    env::{TestEnv, backend_name},
    netns::unique,
    progs,
};
use slotctl::exit::Exit;
use slots_runtime::Status;
use support::{KERNEL_PATIENCE, eventually, snapshot, spawn_slotctl, status, stderr, stdout};

fn path(name: &str) -> String {
    progs::path(name).to_str().unwrap().to_string()
}

/// `slotctl claim <rx> <object> --backend <suite's> <extra...>`.
fn claim(env: &TestEnv, object: &str, extra: &[&str]) -> Output {
    claim_on(env, backend_name(), object, extra)
}

/// [`claim`] with the backend `backend`.
fn claim_on(env: &TestEnv, backend: &str, object: &str, extra: &[&str]) -> Output {
    let mut args = vec!["claim", &env.pair.rx_if, object, "--backend", backend];
    args.extend_from_slice(extra);
    env.slotctl(&args)
}

/// Is the suite running with the freplace backend (the VM suite)?
fn freplace() -> bool {
    integration_tests::env::backend() == Some(slots_runtime::Backend::Freplace)
}

fn claimed(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        stdout(out),
        stderr(out)
    );
}

/// The claim named `name`.
fn claim_named<'a>(st: &'a Status, name: &str) -> &'a slots_runtime::ClaimStatus {
    st.claims
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no claim named {name}: {st:?}"))
}

/// Names of the maps the kernel holds for program `prog_id`.
fn map_names(prog_id: u32) -> BTreeMap<String, MapInfo> {
    let prog = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == prog_id)
        .unwrap_or_else(|| panic!("program {prog_id} is not loaded"));
    prog.map_ids()
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|id| {
            let m = MapInfo::from_id(id).unwrap();
            (m.name_as_str().unwrap_or("").to_string(), m)
        })
        .collect()
}

/// Counters on, `n` datagrams sent: how many arrived, and what the claim
/// `name` did with them (its packets and drops, from the dispatcher's
/// counters: they move only when the slot's program ran).
fn send_through(env: &TestEnv, name: &str, n: usize) -> (usize, u64, u64) {
    env.in_rx(|rt, i| rt.set_stats(i, true)).unwrap();
    let before = claim_named(&status(env), name).counters.clone().unwrap();
    let arrived = env.send(n);
    let after = claim_named(&status(env), name).counters.clone().unwrap();
    (
        arrived,
        after.packets - before.packets,
        after.drop - before.drop,
    )
}

/// An interface with a claim on it, for refusals to leave alone.
fn world() -> TestEnv {
    let env = TestEnv::new().unwrap();
    claimed(
        "the claim already there",
        &claim(&env, &path("xdp_pass"), &["--name", "keep"]),
    );
    env
}

/// `slotctl claim <object> <extra>` must be refused with exactly `line`
/// on stderr, the exit status of its class, and no change.
fn refused(env: &TestEnv, object: &str, extra: &[&str], exit: Exit, line: &str) {
    let before = snapshot(env);
    let out = claim(env, object, extra);
    assert!(!out.status.success(), "{line}: accepted: {}", stdout(&out));
    assert_eq!(out.status.code(), Some(exit.code()), "{line}");
    assert_eq!(stderr(&out), format!("{line}\n"));
    assert_eq!(snapshot(env), before, "{line}: changed the state");
    println!("refused: {line}");
}

#[test]
fn an_xdp_program_among_other_programs_is_claimed_alone() {
    let env = world();
    let mixed = path("mixed_xdp_tc.o");
    // Beside it: a tc program, a kprobe with a CO-RE relocation, a tp_btf
    // program, and a map only tc uses whose size its loader would set.
    let out = claim(&env, &mixed, &[]);
    claimed("an object with xdp, tc and tracing programs", &out);
    assert_eq!(stderr(&out), "", "nothing to warn about");
    let (arrived, ran, dropped) = send_through(&env, "xdp_mixed", 10);
    assert_eq!(
        (arrived, dropped),
        (0, 10),
        "xdp_mixed drops every datagram"
    );
    assert!(ran >= 10);
    // Only what the XDP program uses was created: its map, through the
    // .text function it calls; not tc's.
    let st = status(&env);
    let maps = map_names(claim_named(&st, "xdp_mixed").prog_id);
    let names: Vec<&str> = maps.keys().map(String::as_str).collect();
    assert_eq!(names, ["shared_hits"]);

    refused(
        &env,
        &mixed,
        &["--program", "tc_mixed"],
        Exit::BadInput,
        &format!(
            "slotctl: program tc_mixed in {mixed} is a tc program, not XDP; only XDP programs can fill a slot"
        ),
    );
}

#[test]
fn objects_without_an_xdp_program_are_refused_by_what_they_are() {
    let env = world();
    let tc = path("tc_only.o");
    refused(
        &env,
        &tc,
        &[],
        Exit::BadInput,
        &format!(
            "slotctl: {tc} holds no XDP program (found: tc program tc_pass, tp_btf program trace_exception); build it with SEC(\"xdp\") in C or #[xdp] with aya-ebpf"
        ),
    );
    // An ELF for this machine: the test executable itself.
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    refused(
        &env,
        exe,
        &[],
        Exit::BadInput,
        &format!(
            "slotctl: {exe} is an ELF file for x86-64, not for BPF; build it for BPF (clang -target bpf, or aya-ebpf)"
        ),
    );
    let dir = std::env::temp_dir().join(unique("slots-objects-"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.o");
    std::fs::write(&text, "not an object\n").unwrap();
    let text = text.to_str().unwrap();
    refused(
        &env,
        text,
        &[],
        Exit::BadInput,
        &format!(
            "slotctl: cannot read {text} as a BPF object: not an ELF file; pass an ELF object built for BPF (clang -target bpf, or aya-ebpf)"
        ),
    );
    let empty = dir.join("empty.o");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    refused(
        &env,
        empty,
        &[],
        Exit::BadInput,
        &format!(
            "slotctl: cannot read {empty} as a BPF object: the file is empty; pass an ELF object built for BPF (clang -target bpf, or aya-ebpf)"
        ),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn legacy_section_names_are_xdp() {
    let env = world();
    let legacy = path("legacy_sections.o");
    // SEC("xdp_patch_ports") and SEC("xdp_pass"), as xdp-tutorial has them.
    refused(
        &env,
        &legacy,
        &[],
        Exit::BadInput,
        &format!(
            "slotctl: {legacy} has several XDP programs (xdp_pass_func, xdp_patch_ports_func); pick one with --program"
        ),
    );
    let out = claim(&env, &legacy, &["--program", "xdp_patch_ports_func"]);
    claimed("a program in SEC(\"xdp_patch_ports\")", &out);
    assert_eq!(stderr(&out), "");
    let (arrived, ran, dropped) = send_through(&env, "xdp_patch_ports_func", 10);
    assert_eq!((arrived, dropped), (0, 10), "it drops every datagram");
    assert!(ran >= 10);
    let st = status(&env);
    let maps = map_names(claim_named(&st, "xdp_patch_ports_func").prog_id);
    assert!(maps.contains_key("xdp_stats_map"), "{:?}", maps.keys());
}

#[test]
fn a_long_program_name_gets_a_valid_claim_name() {
    let env = world();
    let long = path("long_name.o");
    // xdp_test_prog_with_a_long_name_too: 34 bytes, claim names hold 32.
    let out = claim(&env, &long, &["--json"]);
    claimed("a program with a 34-byte name", &out);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let name = v["name"].as_str().unwrap().to_string();
    // Its first 23 bytes and a hash of the whole name: the same every time.
    assert_eq!(name, "xdp_test_prog_with_a_lo-32ce2f10");
    let (arrived, _, dropped) = send_through(&env, &name, 10);
    assert_eq!((arrived, dropped), (0, 10), "it drops every datagram");
    let out = env.slotctl(&["release", &env.pair.rx_if, &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.send(10), 10, "released by its name");

    let bad = "no spaces!";
    refused(
        &env,
        &long,
        &["--name", bad],
        Exit::BadInput,
        "slotctl: name \"no spaces!\" is not valid: use 1..=32 bytes of letters, digits, '-', '_' or '.'; pass another --name",
    );
}

#[test]
fn run_config_without_btf_is_a_warning() {
    let env = world();
    let obj = path("run_config_nobtf.o");
    // A refusal stays one line: the warning is for claims that are made.
    refused(
        &env,
        &obj,
        &["--name", "keep"],
        Exit::Conflict,
        &format!(
            "slotctl: the name keep is already used by slot 0 on {}; pick another --name",
            env.pair.rx_if
        ),
    );
    if freplace() {
        // An extension needs the program's BTF: the kernel checks its
        // signature against the slot function's.
        refused(
            &env,
            &obj,
            &[],
            Exit::KernelRefused,
            "slotctl: the kernel refused to load xdp_cfg_nobtf as an extension of slot_1: the object has no BTF, which an extension needs; build it with BTF (clang -g), or use --backend tailcall",
        );
    }
    // XDP_RUN_CONFIG asks for priority 10 and proceed-on pass,drop; the
    // object was built without -g, so the values are not in it. (Tail
    // calls: an extension would need BTF.)
    let out = claim_on(&env, "tailcall", &obj, &[]);
    claimed("run config without BTF", &out);
    assert_eq!(
        stderr(&out),
        format!(
            "[WARN ] xdp_cfg_nobtf in {obj} has XDP_RUN_CONFIG metadata, but the object has no BTF to read it from (built without -g): priority 50 and proceed-on pass apply instead\n"
        )
    );
    let st = status(&env);
    let c = claim_named(&st, "xdp_cfg_nobtf");
    assert_eq!((c.prio, c.proceed_on.clone()), (50, vec!["pass"]));
    let (arrived, ran, _) = send_through(&env, "xdp_cfg_nobtf", 10);
    assert_eq!(arrived, 10);
    assert!(ran >= 10, "the program ran on every datagram");
    // Given both on the command line, the metadata does not matter.
    let out = claim_on(
        &env,
        "tailcall",
        &obj,
        &[
            "--name",
            "cfg2",
            "--prio",
            "10",
            "--proceed-on",
            "pass,drop",
        ],
    );
    claimed("run config without BTF, overridden", &out);
    assert_eq!(stderr(&out), "");
}

#[test]
fn maps_sized_by_their_loader_need_a_size() {
    let env = world();
    let obj = path("map_size_zero.o");
    // rx_cnt (used by the XDP program) and redir_err_cnt (used only by a
    // tracing program) have max_entries 0, as in xdp-bench.
    refused(
        &env,
        &obj,
        &[],
        Exit::BadInput,
        &format!(
            "slotctl: xdp_sized in {obj} uses map rx_cnt with max_entries 0, a size its own loader sets at start; give it a size: --map-size rx_cnt=N"
        ),
    );
    refused(
        &env,
        &obj,
        &["--map-size", "rx_count=4"],
        Exit::BadInput,
        &format!(
            "slotctl: {obj} has no map named rx_count (maps in it: redir_err_cnt, rx_cnt); give --map-size one of those names"
        ),
    );
    for (bad, why) in [
        ("rx_cnt", "\"rx_cnt\" is not NAME=N (e.g. rx_cnt=64)"),
        ("rx_cnt=0", "rx_cnt needs at least 1 entry"),
        (
            "rx_cnt=many",
            "\"many\" is not a number of entries (NAME=N, e.g. rx_cnt=64)",
        ),
    ] {
        refused(
            &env,
            &obj,
            &["--map-size", bad],
            Exit::Usage,
            &format!(
                "slotctl: invalid value '{bad}' for '--map-size <NAME=N>': {why}; see 'slotctl claim --help'"
            ),
        );
    }
    let out = claim(&env, &obj, &["--map-size", "rx_cnt=4"]);
    claimed("rx_cnt sized", &out);
    assert_eq!(stderr(&out), "");
    let (arrived, _, dropped) = send_through(&env, "xdp_sized", 10);
    assert_eq!(
        (arrived, dropped),
        (0, 10),
        "rx_cnt has an entry 0, so xdp_sized drops"
    );
    let st = status(&env);
    let maps = map_names(claim_named(&st, "xdp_sized").prog_id);
    let names: Vec<&str> = maps.keys().map(String::as_str).collect();
    assert_eq!(names, ["rx_cnt"], "redir_err_cnt is not the XDP program's");
    assert_eq!(maps["rx_cnt"].max_entries(), 4);
}

/// A pin removed on drop.
struct Pin(std::path::PathBuf);

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_programs_own_program_array_keeps_entries_only_while_held_or_pinned() {
    let env = world();
    let obj = path("prog_array_own.o");
    // Tail calls: on Debian's 6.1 and 6.12, the kernel refuses (EINVAL) to
    // put an XDP program into the program array of a program loaded as an
    // extension, so under freplace the array cannot be filled at all.
    let out = claim_on(&env, "tailcall", &obj, &["--program", "xdp_jump"]);
    claimed("a program with its own program array", &out);
    let st = status(&env);
    let c = claim_named(&st, "xdp_jump");
    let maps = map_names(c.prog_id);
    let id = maps["jmp_table"].id();
    assert_eq!(
        stderr(&out),
        format!(
            "[WARN ] xdp_jump in {obj} has its own program array jmp_table (map id {id}): what is put into it lasts only while some process has it open or it is pinned, and a persistent claim leaves it open in no process; pin it before filling it (bpftool map pin id {id} /sys/fs/bpf/jmp_table), or hold the claim\n"
        )
    );
    assert_eq!(env.send(10), 10, "an empty array: xdp_jump passes");

    // The program to jump to, loaded here (the same object).
    let mut ebpf = EbpfLoader::new()
        .load(progs::bytes("prog_array_own.o"))
        .unwrap();
    let target: &mut Xdp = ebpf
        .program_mut("xdp_jump_target")
        .unwrap()
        .try_into()
        .unwrap();
    target.load().unwrap();
    let target_fd = target.fd().unwrap().try_clone().unwrap();
    let fill = || {
        let mut a =
            ProgramArray::try_from(Map::ProgramArray(MapData::from_id(id).unwrap())).unwrap();
        a.set(0, &target_fd, 0).unwrap();
        a
    };

    // Filled by a process that then lets go: the entry works while it
    // holds the array, and vanishes when it closes it.
    let filler = fill();
    assert_eq!(env.send(10), 0, "xdp_jump_target drops");
    drop(filler);
    eventually(KERNEL_PATIENCE, || match env.send(5) {
        5 => Ok(()),
        n => Err(format!("{n} of 5 arrived: the entry is still there")),
    })
    .expect("the kernel empties the array once nobody holds it");

    // Pinned first: the entry outlives the process that wrote it, until
    // the pin goes.
    let pin = Pin(std::path::PathBuf::from("/sys/fs/bpf").join(unique("slots-jmp-")));
    MapData::from_id(id).unwrap().pin(&pin.0).unwrap();
    drop(fill());
    assert_eq!(env.send(10), 0, "the pin keeps the entry");
    assert_eq!(env.send(10), 0, "the pin keeps the entry");
    drop(pin);
    eventually(KERNEL_PATIENCE, || match env.send(5) {
        5 => Ok(()),
        n => Err(format!("{n} of 5 arrived: the entry is still there")),
    })
    .expect("without the pin, the kernel empties the array");

    // A held claim keeps it open as long as its holder runs, and says
    // nothing.
    let out = env.slotctl(&["release", &env.pair.rx_if, "xdp_jump"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let args: Vec<String> = [
        "claim",
        &env.pair.rx_if,
        &obj,
        "--backend",
        "tailcall",
        "--program",
        "xdp_jump",
        "--hold",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut holder = spawn_slotctl(&env, None, &args);
    let line = holder.first_line();
    assert!(line.starts_with("claimed slot"), "{line}");
    let st = status(&env);
    let held = map_names(claim_named(&st, "xdp_jump").prog_id)["jmp_table"].id();
    let mut a = ProgramArray::try_from(Map::ProgramArray(MapData::from_id(held).unwrap())).unwrap();
    a.set(0, &target_fd, 0).unwrap();
    drop(a);
    assert_eq!(env.send(10), 0, "the holder keeps the entry");
    assert_eq!(env.send(10), 0, "the holder keeps the entry");
    holder.signal(libc::SIGTERM);
    let out = holder.output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("WARN"),
        "a held claim is not warned about: {}",
        stderr(&out)
    );
    assert_eq!(env.send(10), 10, "released with its holder");
}
