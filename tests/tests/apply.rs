//! `slotctl export` and `slotctl apply` on the real kernel: a node restored
//! from its exported file, re-runs that change nothing, changed objects
//! replaced at their positions, releases limited to what apply made, plans
//! that change nothing, bad files refused whole, and apply killed at every
//! kind of step and run again.
mod support;

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::Output,
    sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use integration_tests::{
    env::{TestEnv, backend_name},
    netns::unique,
    progs,
};
use slots_runtime::{ClaimState, Status};
use support::{
    baseline, claim_args, spawn_slotctl, spawn_slotctl_with, status, stderr, stdout,
    traffic_reaches_every_claim,
};

/// The leak checks count every program named like the test objects' that
/// was loaded since their baseline and that no process holds: the
/// persistent claims of this suite's other tests would count too, so a
/// test that checks for leaks runs alone (exclusive) and the others
/// together (shared). Taken first, so that it is released last.
static KERNEL: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    KERNEL.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    KERNEL.write().unwrap_or_else(PoisonError::into_inner)
}

/// A directory of the test's own for files and objects, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let d = std::env::temp_dir().join(unique("slots-apply-"));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// Writes `name` with `bytes`; returns its path.
    fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Copies the test object `object` to `name` (a file of its own, so
    /// that the test can change its bytes).
    fn object(&self, name: &str, object: &str) -> PathBuf {
        self.put(name, progs::bytes(object))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `[[claim]]` table.
fn claim_toml(iface: &str, name: &str, object: &Path, prio: u32) -> String {
    format!(
        "[[claim]]\ninterface = \"{iface}\"\nname = \"{name}\"\nobject = \"{}\"\npriority = {prio}\nbackend = \"{}\"\n\n",
        object.display(),
        backend()
    )
}

/// The suite's backend as a file names it: the one this kernel gives by
/// default unless the suite asks for one.
fn backend() -> String {
    match backend_name() {
        "auto" => slots_runtime::Backend::ALL
            .iter()
            .find(|b| b.probe().is_ok())
            .expect("a backend this kernel runs")
            .to_string(),
        b => b.to_string(),
    }
}

fn run(env: &TestEnv, args: &[&str]) -> Output {
    env.slotctl(args)
}

fn run_ok(env: &TestEnv, args: &[&str]) -> String {
    let o = run(env, args);
    assert!(
        o.status.success(),
        "slotctl {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn apply(env: &TestEnv, file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["apply", file.to_str().unwrap()];
    args.extend(extra);
    run_ok(env, &args)
}

/// (name, position, priority, program id, object, program) of each claim,
/// in run order.
type Shape = Vec<(
    String,
    Option<usize>,
    u32,
    u32,
    Option<String>,
    Option<String>,
)>;

fn shape(st: &Status) -> Shape {
    st.claims
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.position,
                c.prio,
                c.prog_id,
                c.object.clone(),
                c.program.clone(),
            )
        })
        .collect()
}

/// Every line of a plan, as (action, name).
fn actions(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let action = w.next().unwrap().to_string();
            let _iface = w.next().unwrap();
            let name = w.next().unwrap().trim_end_matches(':').to_string();
            (action, name)
        })
        .collect()
}

fn all_keep(out: &str) -> bool {
    actions(out).iter().all(|(a, _)| a == "keep")
}

#[test]
fn export_detach_apply_restores_the_claims_and_a_rerun_changes_nothing() {
    let _kernel = shared();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    run_ok(&env, &args_of(&claim_args(&env, "xdp_pass", 10, "first")));
    let mut c = claim_args(&env, "xdp_count", 20, "second");
    c.extend(["--proceed-on".into(), "pass,drop".into()]);
    run_ok(&env, &args_of(&c));
    let mut held = claim_args(&env, "xdp_pass", 30, "held");
    held.push("--hold".into());
    let mut holder = spawn_slotctl(&env, None, &held);
    holder.first_line();
    let before = status(&env);

    let exported = run_ok(&env, &["export", &ifc]);
    assert!(
        exported.contains(&format!("# not exported: {ifc} held (held by pid")),
        "{exported}"
    );
    let d = Dir::new();
    let file = d.put("node.toml", exported.as_bytes());
    drop(holder);
    run_ok(&env, &["detach", &ifc, "--force"]);
    assert!(run(&env, &["status", &ifc]).status.code() != Some(0));

    let out = apply(&env, &file, &[]);
    assert_eq!(
        actions(&out),
        [
            ("claim".into(), "first".into()),
            ("claim".into(), "second".into())
        ],
        "{out}"
    );
    let after = status(&env);
    let strip = |s: &Shape| -> Vec<_> {
        s.iter()
            .filter(|c| c.0 != "held")
            .map(|c| (c.0.clone(), c.1, c.2, c.4.clone(), c.5.clone()))
            .collect()
    };
    assert_eq!(strip(&shape(&after)), strip(&shape(&before)));
    assert_eq!(after.claims[1].proceed_on, ["drop", "pass"]);
    assert!(
        after
            .claims
            .iter()
            .all(|c| c.state == ClaimState::Persistent)
    );
    assert!(traffic_reaches_every_claim(&env, 20) > 0);

    // A second run changes nothing: the same programs.
    let again = apply(&env, &file, &[]);
    assert!(all_keep(&again), "{again}");
    assert_eq!(shape(&status(&env)), shape(&after));
    // And the export of the restored node is the file it came from, less
    // the held claim's comment.
    let re = run_ok(&env, &["export", &ifc]);
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&re), body(&exported));
}

/// The map pin policy goes through export and apply: a claim whose maps
/// are pinned in a directory of the user's comes back pinned there (the
/// same map, reused by name, so what was written into it still holds); a
/// file that then says `scoped` re-claims it with maps of its own.
#[test]
fn the_map_pin_policy_goes_through_export_and_apply() {
    let _kernel = shared();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    std::fs::create_dir_all(&env.root).unwrap();
    let pins = env.root.join("pins");
    let mut c = claim_args(&env, "filter_ports.o", 10, "filter");
    c.extend(["--map-pin-dir".into(), pins.display().to_string()]);
    run_ok(&env, &args_of(&c));
    let map_of = |st: &Status| -> (u32, Option<String>) {
        let m = &st.claims[0].maps;
        assert_eq!(m.len(), 1, "{m:?}");
        (m[0].id, m[0].pin.clone())
    };
    let (id, pin) = map_of(&status(&env));
    assert_eq!(pin, Some(pins.join("filter_ports").display().to_string()));

    let exported = run_ok(&env, &["export", &ifc]);
    assert!(
        exported.contains(&format!("pin_maps = \"{}\"", pins.display())),
        "{exported}"
    );
    let d = Dir::new();
    let file = d.put("node.toml", exported.as_bytes());
    run_ok(&env, &["detach", &ifc, "--force"]);
    let out = apply(&env, &file, &[]);
    assert_eq!(actions(&out), [("claim".into(), "filter".into())], "{out}");
    let st = status(&env);
    assert_eq!(st.claims[0].pin_maps, Some("dir"));
    assert_eq!(
        map_of(&st),
        (id, pin.clone()),
        "the user's pinned map, reused"
    );
    assert!(all_keep(&apply(&env, &file, &[])));

    // The file now says scoped: the claim is made again, its map its own.
    let scoped = d.put(
        "scoped.toml",
        exported
            .replace(
                &format!("pin_maps = \"{}\"", pins.display()),
                "pin_maps = \"scoped\"",
            )
            .as_bytes(),
    );
    let out = apply(&env, &scoped, &[]);
    assert_eq!(
        actions(&out),
        [("reclaim".into(), "filter".into())],
        "{out}"
    );
    assert!(
        out.contains(&format!("pin_maps {} -> scoped", pins.display())),
        "{out}"
    );
    let st = status(&env);
    assert_eq!(st.claims[0].pin_maps, Some("scoped"));
    let (new_id, new_pin) = map_of(&st);
    assert_ne!(new_id, id, "a map of the claim's own");
    assert!(new_pin.is_some_and(|p| p.starts_with(&st.dir)));
    assert!(all_keep(&apply(&env, &scoped, &[])));
    run_ok(&env, &["detach", &ifc, "--force"]);
    std::fs::remove_dir_all(&pins).unwrap();
}

fn args_of(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_changed_object_is_replaced_at_its_position_and_dry_run_changes_nothing() {
    let _kernel = shared();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let d = Dir::new();
    let (a, b, c) = (
        d.object("a.o", "xdp_pass"),
        d.object("b.o", "xdp_pass"),
        d.object("c.o", "xdp_pass"),
    );
    let file = d.put(
        "f.toml",
        (claim_toml(&ifc, "a", &a, 10)
            + &claim_toml(&ifc, "b", &b, 20)
            + &claim_toml(&ifc, "c", &c, 30))
            .as_bytes(),
    );
    apply(&env, &file, &[]);
    let before = shape(&status(&env));

    // Different bytes under the same path.
    d.object("b.o", "xdp_count");
    let plan = apply(&env, &file, &["--dry-run"]);
    assert_eq!(
        actions(&plan),
        [
            ("keep".into(), "a".into()),
            ("replace".into(), "b".into()),
            ("keep".into(), "c".into())
        ],
        "{plan}"
    );
    assert!(plan.contains("program xdp_pass -> xdp_count"), "{plan}");
    assert_eq!(shape(&status(&env)), before, "--dry-run changed the node");

    let out = apply(&env, &file, &[]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("replace") && l.contains(" b: ")),
        "{out}"
    );
    let after = shape(&status(&env));
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    assert_eq!(
        (&after[1].0, after[1].1, after[1].2),
        (&before[1].0, before[1].1, before[1].2)
    );
    assert_ne!(after[1].3, before[1].3, "b has a new program");
    assert_eq!(after[1].5.as_deref(), Some("xdp_count"));
    assert!(traffic_reaches_every_claim(&env, 20) > 0);
    assert!(all_keep(&apply(&env, &file, &[])));

    // The same program, other bytes (the ELF file with a byte appended).
    let mut bytes = progs::bytes("xdp_count").to_vec();
    bytes.push(0);
    d.put("b.o", &bytes);
    let out = apply(&env, &file, &[]);
    assert!(out.contains("b.o changed (sha256"), "{out}");
    let again = shape(&status(&env));
    assert_eq!(
        (again[1].1, again[1].5.as_deref()),
        (after[1].1, Some("xdp_count"))
    );
    assert_ne!(again[1].3, after[1].3, "b has a new program");
    assert!(all_keep(&apply(&env, &file, &[])));

    // A new priority: the claim is made anew, at its new position.
    let file2 = d.put(
        "f2.toml",
        (claim_toml(&ifc, "a", &a, 10)
            + &claim_toml(&ifc, "b", &b, 40)
            + &claim_toml(&ifc, "c", &c, 30))
            .as_bytes(),
    );
    let out = apply(&env, &file2, &[]);
    assert!(
        out.contains("reclaim") && out.contains("priority 20 -> 40"),
        "{out}"
    );
    let st = status(&env);
    let names: Vec<_> = st.claims.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "c", "b"]);
    assert!(all_keep(&apply(&env, &file2, &[])));
}

#[test]
fn apply_releases_only_what_it_made_unless_prune() {
    let _kernel = shared();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let d = Dir::new();
    let a = d.object("a.o", "xdp_pass");
    run_ok(&env, &args_of(&claim_args(&env, "xdp_pass", 50, "manual")));
    let both = d.put(
        "both.toml",
        (claim_toml(&ifc, "a", &a, 10) + &claim_toml(&ifc, "b", &a, 20)).as_bytes(),
    );
    let out = apply(&env, &both, &[]);
    assert!(out.contains(&format!("leave {ifc} manual")), "{out}");
    let only_a = d.put("a.toml", claim_toml(&ifc, "a", &a, 10).as_bytes());

    let plan = apply(&env, &only_a, &["--dry-run"]);
    let mut got = actions(&plan);
    got.sort();
    assert_eq!(
        got,
        [
            ("keep".into(), "a".into()),
            ("leave".into(), "manual".into()),
            ("release".into(), "b".into())
        ],
        "{plan}"
    );
    assert_eq!(status(&env).claims.len(), 3, "--dry-run released");
    apply(&env, &only_a, &[]);
    let names: Vec<_> = status(&env).claims.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["a", "manual"]);

    let out = apply(&env, &only_a, &["--prune"]);
    assert!(out.contains(&format!("release {ifc} manual")), "{out}");
    let names: Vec<_> = status(&env).claims.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["a"]);
    assert!(traffic_reaches_every_claim(&env, 10) > 0);
}

#[test]
fn a_bad_file_changes_nothing_and_says_where_in_one_line() {
    let _kernel = shared();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let d = Dir::new();
    let a = d.object("a.o", "xdp_pass");
    let missing = d.0.join("missing.o");
    let not_bpf = d.put("text.o", b"not an object");
    let good = claim_toml(&ifc, "a", &a, 10);
    let f = |name: &str, body: String| d.put(name, body.as_bytes());
    // (file, the expected message after "slotctl: <file>:")
    let cases = [
        (
            f(
                "missing.toml",
                good.clone() + &claim_toml(&ifc, "b", &missing, 20),
            ),
            format!(
                "8: cannot read {} as a BPF object: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            f(
                "notbpf.toml",
                good.clone() + &claim_toml(&ifc, "b", &not_bpf, 20),
            ),
            format!("8: cannot read {} as a BPF object", not_bpf.display()),
        ),
        (
            f("prio.toml", good.clone() + &claim_toml(&ifc, "b", &a, 5000)),
            "8: priority 5000".into(),
        ),
        (
            f("twice.toml", good.clone() + &good),
            format!("8: {ifc} a is named twice"),
        ),
        (
            f(
                "field.toml",
                good.clone() + "[[claim]]\ninterface = \"x\"\nobjekt = \"a.o\"\n",
            ),
            "10: unknown field `objekt`".into(),
        ),
        (f("syntax.toml", good.clone() + "[[claim]\n"), "8: ".into()),
        (
            f(
                "verdict.toml",
                good.replace("priority", "proceed_on = [\"pas\"]\npriority"),
            ),
            "1: proceed_on: unknown action \"pas\"".into(),
        ),
        (
            f(
                "pins.toml",
                good.replace("priority", "pin_maps = \"global\"\npriority"),
            ),
            "1: pin_maps = \"global\" is not a map pin policy".into(),
        ),
    ];
    for (file, want) in &cases {
        let o = run(&env, &["apply", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{}: {err}", file.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        let prefix = format!("slotctl: {}:{want}", file.display());
        assert!(
            err.starts_with(&prefix),
            "{err:?} does not start with {prefix:?}"
        );
        assert!(err.contains("nothing was changed"), "{err}");
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
        // Nothing changed: not even the dispatcher is attached.
        assert!(run(&env, &["status", &ifc]).status.code() != Some(0));
    }
    let exact = run(&env, &["apply", cases[0].0.to_str().unwrap()]);
    assert_eq!(
        stderr(&exact).trim_end(),
        format!(
            "slotctl: {}:8: cannot read {} as a BPF object: No such file or directory (os error 2); fix the file and run apply again; nothing was changed",
            cases[0].0.display(),
            missing.display()
        )
    );
}

/// Where `slotctl apply` is killed: an armed point, in fail's syntax
/// (`1*off->return`: at the second pass). The plan's steps are: release b
/// (retire, deactivate), replace a (fill, switch, retire), claim c (fill,
/// activate), with `apply::stepped` after each.
const KILLS: &[&str] = &[
    "retire::inactive=return",
    "retire::emptied=return",
    "apply::stepped=return",
    "claim::loaded=return",
    "replace::filled=return",
    "replace::switched=return",
    "apply::stepped=1*off->return",
    "claim::recorded=1*off->return",
    "deactivate::flipped=return",
    "activate::flipped=return",
    "claim::active=return",
];

#[test]
fn apply_killed_at_any_step_and_run_again_ends_as_the_file_says() {
    let _kernel = exclusive();
    let base = baseline();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let d = Dir::new();
    let a1 = d.object("a1.o", "xdp_pass");
    let a2 = d.object("a2.o", "xdp_count");
    let b = d.object("b.o", "xdp_pass");
    let c = d.object("c.o", "xdp_pass");
    // From: a (a1), b. To: b released, a replaced (a2), c claimed; in
    // that order (releases first).
    let from = d.put(
        "from.toml",
        (claim_toml(&ifc, "a", &a1, 10) + &claim_toml(&ifc, "b", &b, 20)).as_bytes(),
    );
    let to = d.put(
        "to.toml",
        (claim_toml(&ifc, "a", &a2, 10) + &claim_toml(&ifc, "c", &c, 30)).as_bytes(),
    );
    let want = |st: &Status| -> Vec<(String, u32, Option<String>)> {
        st.claims
            .iter()
            .map(|c| (c.name.clone(), c.prio, c.program.clone()))
            .collect()
    };
    let target = vec![
        ("a".to_string(), 10, Some("xdp_count".to_string())),
        ("c".to_string(), 30, Some("xdp_pass".to_string())),
    ];
    apply(&env, &from, &[]);
    for kill in KILLS {
        let args = ["apply".to_string(), to.display().to_string()];
        let o = spawn_slotctl_with(&env, None, &args, &[("FAILPOINTS", kill)]).output();
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "{kill}: not killed: {}{}",
            stdout(&o),
            stderr(&o)
        );

        let out = apply(&env, &to, &[]);
        let st = status(&env);
        assert_eq!(want(&st), target, "{kill}: after the re-run ({out})");
        assert!(
            st.claims
                .iter()
                .all(|c| c.state == ClaimState::Persistent && c.active)
        );
        assert!(
            all_keep(&apply(&env, &to, &[])),
            "{kill}: a third run is not a no-op"
        );
        assert!(traffic_reaches_every_claim(&env, 10) > 0);
        // Back to the start for the next kill.
        apply(&env, &from, &[]);
    }
    let st = status(&env);
    let ids: Vec<u32> = st.claims.iter().map(|c| c.prog_id).collect();
    base.leaks(&["xdp_pass", "xdp_count"], &ids)
        .unwrap_or_else(|e| panic!("after the killed applies: {e}"));
    println!("figures: apply_kills={}", KILLS.len());
}

/// The boot unit shipped in the repository.
const UNIT: &str = include_str!("../../dist/systemd/xdp-slots-apply.service");
const UNIT_SLOTCTL: &str = "/usr/local/bin/slotctl";

#[test]
fn the_boot_unit_runs_apply_on_the_config_directory_and_systemd_accepts_it() {
    use clap::Parser as _;
    use slotctl::cli::{Cli, Cmd};
    // Its commands are slotctl command lines that parse, applying the
    // configuration directory (no quoting in the unit: words are words).
    let mut commands = 0;
    for line in UNIT.lines() {
        let Some(cmd) = line
            .strip_prefix("ExecStart=")
            .or_else(|| line.strip_prefix("ExecReload="))
        else {
            continue;
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[0], UNIT_SLOTCTL, "{line}");
        let cli = Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{line}: {e}"));
        match cli.cmd {
            Cmd::Apply {
                files,
                prune,
                dry_run,
                ..
            } => {
                assert_eq!(files, [PathBuf::from("/etc/xdp-slots")], "{line}");
                assert!(!prune && !dry_run, "{line}");
            }
            other => panic!("{line}: not apply: {other:?}"),
        }
        commands += 1;
    }
    assert_eq!(commands, 2, "ExecStart and ExecReload");
    for want in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=network-online.target",
        "WantedBy=multi-user.target",
    ] {
        assert!(UNIT.lines().any(|l| l == want), "the unit lacks {want}");
    }

    let Ok(analyze) = which("systemd-analyze") else {
        println!(
            "systemd-analyze is not installed: the unit was checked against slotctl's command line only"
        );
        return;
    };
    // systemd-analyze checks that the command exists: the slotctl of this
    // build stands in for the installed one.
    let d = Dir::new();
    let slotctl = integration_tests::env::slotctl_path();
    let unit = d.put(
        "xdp-slots-apply.service",
        UNIT.replace(UNIT_SLOTCTL, slotctl.to_str().unwrap())
            .as_bytes(),
    );
    let o = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// `name` on PATH.
fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn apply_runs_while_other_processes_claim_and_release() {
    let _kernel = exclusive();
    let base = baseline();
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.clone();
    let d = Dir::new();
    let a = d.object("a.o", "xdp_pass");
    let b1 = d.object("b1.o", "xdp_pass");
    let b2 = d.object("b2.o", "xdp_count");
    let one = d.put(
        "one.toml",
        (claim_toml(&ifc, "a", &a, 10) + &claim_toml(&ifc, "b", &b1, 20)).as_bytes(),
    );
    let two = d.put(
        "two.toml",
        (claim_toml(&ifc, "a", &a, 10) + &claim_toml(&ifc, "b", &b2, 20)).as_bytes(),
    );
    let rounds = support::size("APPLY_RACE", [3, 6, 20]);
    std::thread::scope(|s| {
        // Another process claims and releases its own claims meanwhile.
        let other = s.spawn(|| {
            for i in 0..rounds * 2 {
                let name = format!("other{}", i % 3);
                let c = claim_args(&env, "xdp_pass", 15 + (i % 3) as u32, &name);
                let o = env.slotctl(&args_of(&c));
                assert!(o.status.success(), "{}", stderr(&o));
                let o = env.slotctl(&["release", &env.pair.rx_if, &name]);
                assert!(o.status.success(), "{}", stderr(&o));
            }
        });
        for i in 0..rounds {
            let file = if i % 2 == 0 { &one } else { &two };
            apply(&env, file, &[]);
        }
        other.join().unwrap();
    });
    let last = if rounds % 2 == 1 { &one } else { &two };
    let out = apply(&env, last, &[]);
    assert!(all_keep(&out), "{out}");
    let st = status(&env);
    let names: Vec<_> = st.claims.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "the others released theirs; apply's are there"
    );
    assert!(traffic_reaches_every_claim(&env, 10) > 0);
    let ids: Vec<u32> = st.claims.iter().map(|c| c.prog_id).collect();
    base.leaks(&["xdp_pass", "xdp_count"], &ids)
        .unwrap_or_else(|e| panic!("after the concurrent applies: {e}"));
}
