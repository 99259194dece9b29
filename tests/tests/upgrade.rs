//! Layout versions and `slotctl upgrade`: a state of the previous layout
//! (built here as that version built it, `support::layout1`) is read by
//! status, refused for changes with one line saying to upgrade, and
//! upgraded under traffic: a counting program first in the chain counts
//! every packet that reached XDP, before, during and after the switch, and
//! the claims keep their priorities and order. A state newer than this
//! runtime knows is refused with one line naming both versions, and
//! nothing changes. The counts are read once every datagram is accounted
//! for: nothing here depends on how long anything takes.
mod support;

use aya::maps::{Array, Map, MapData, PerCpuArray};
use dispatcher_common::{Control, LAYOUT_VERSION};
use integration_tests::env::TestEnv;
use slotctl::exit::Exit;
use slots_runtime::{ClaimState, pin};
use support::{
    KERNEL_PATIENCE, check_whole, claim_args,
    counters::{count, counted_more, counter_map, steady_traffic as traffic},
    eventually, layout1, listing, snapshot, spawn_slotctl, stderr, stdout,
};

/// Packets counted before the upgrade and after it.
const BETWEEN: u64 = 100;

/// `slotctl upgrade` of the pair's receiving interface under steady
/// traffic, [`BETWEEN`] packets counted by `first` before it and after it;
/// then the traffic stops and every datagram is accounted for. Returns
/// the upgrade's output, the packets that reached XDP, and what `first` and
/// `second` counted.
fn upgrade_under_traffic(
    env: &TestEnv,
    first: &PerCpuArray<MapData, u64>,
    second: &PerCpuArray<MapData, u64>,
) -> (std::process::Output, u64, u64, u64) {
    let base = env.pair.counters().unwrap();
    let sender = traffic(env);
    counted_more(first, 0, BETWEEN);
    let o = env.slotctl(&["upgrade", &env.pair.rx_if]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = count(first);
    counted_more(first, after, BETWEEN);
    let sent = sender.stop();
    let reached = env.pair.accounted(base, sent).unwrap();
    (o, reached, count(first), count(second))
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The program `id` is gone from the kernel, or the map `map` is
/// (`map`: true), eventually (the kernel frees them from a work queue).
fn gone(id: u32, map: bool) {
    eventually(KERNEL_PATIENCE, || {
        let present = if map {
            // By id alone: opening maps by id may keep a program array
            // being freed (see `support::map_ids`).
            support::map_ids().contains(&id)
        } else {
            aya::programs::loaded_programs()
                .filter_map(|p| p.ok())
                .any(|p| p.id() == id)
        };
        if present {
            Err(format!(
                "{} {id} is still loaded",
                if map { "map" } else { "program" }
            ))
        } else {
            Ok(())
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_layout_1_state_is_shown_refused_for_changes_and_upgraded_under_traffic() {
    let env = TestEnv::new().unwrap();
    // Resolve the neighbour first: nothing queues behind ARP later.
    assert_eq!(env.send(3), 3);
    let (dir, ids) = layout1::three_claims(&env);
    let (old_prog, old_control) = layout1::object_ids(&dir);
    let ifc = env.pair.rx_if.clone();

    // Status reads it, with its layout and what moves it.
    let st = support::status(&env);
    assert_eq!(st.layout, layout1::VERSION);
    let order: Vec<(&str, u32, u32)> = st
        .claims
        .iter()
        .map(|c| (c.name.as_str(), c.prio, c.prog_id))
        .collect();
    assert_eq!(
        order,
        [
            ("first", 10, ids[0]),
            ("middle", 50, ids[1]),
            ("last", 90, ids[2])
        ]
    );
    let o = env.slotctl(&["status", &ifc]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).lines().next().unwrap().ends_with(&format!(
            ", state layout 1: 'slotctl upgrade {ifc}' moves it to layout {LAYOUT_VERSION})"
        )),
        "{}",
        stdout(&o)
    );
    // A claim is refused with one line saying to upgrade; nothing changes.
    let before = listing(&env.root);
    let o = spawn_slotctl(&env, None, &claim_args(&env, "xdp_pass", 20, "new")).output();
    assert_eq!(
        o.status.code(),
        Some(Exit::Conflict.code()),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "slotctl: {ifc}'s dispatcher uses state layout 1, older than this runtime's layout {LAYOUT_VERSION}; nothing was changed; run 'slotctl upgrade {ifc}' to move it and its persistent claims to layout {LAYOUT_VERSION}"
        )
    );
    assert_eq!(listing(&env.root), before);
    assert_eq!(layout1::object_ids(&dir), (old_prog, old_control));

    // Upgrade under traffic.
    let first = counter_map(ids[0]);
    let middle = counter_map(ids[1]);
    let (o, reached, f, m) = upgrade_under_traffic(&env, &first, &middle);
    let st = support::status(&env);
    assert_eq!(
        stdout(&o).trim_end(),
        format!(
            "upgraded {ifc} from layout 1 to {LAYOUT_VERSION}: dispatcher prog {}, 3 persistent claim(s) carried in run order: first (prio 10), middle (prio 50), last (prio 90)",
            st.prog_id
        )
    );
    println!("figures: reached={reached} first={f} middle={m}");
    assert_eq!(
        f, reached,
        "every packet that reached XDP met the chain, once"
    );
    assert_eq!(m, f, "every packet went on to the second claim, once");

    // The same claims, programs, priorities and order, at layout 2.
    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.layout, LAYOUT_VERSION);
    let order: Vec<(&str, u32, u32, ClaimState)> = st
        .claims
        .iter()
        .map(|c| (c.name.as_str(), c.prio, c.prog_id, c.state))
        .collect();
    assert_eq!(
        order,
        [
            ("first", 10, ids[0], ClaimState::Persistent),
            ("middle", 50, ids[1], ClaimState::Persistent),
            ("last", 90, ids[2], ClaimState::Persistent)
        ]
    );
    assert_eq!(support::xdp_prog_on(&env, &ifc), Some(st.prog_id));
    assert_ne!(st.prog_id, old_prog);
    // Nothing of the old state is left: pins (check_whole: the root holds
    // the interface's directory only), its dispatcher and its maps.
    gone(old_prog, false);
    gone(old_control, true);

    // Again: already current, nothing changed.
    let before = snapshot(&env);
    let o = env.slotctl(&["upgrade", &ifc]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim_end(),
        format!("{ifc} is already at layout {LAYOUT_VERSION}; nothing was changed")
    );
    assert_eq!(snapshot(&env), before);
    // And it takes claims again.
    let o = spawn_slotctl(&env, None, &claim_args(&env, "xdp_pass", 20, "new")).output();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_held_claim_is_named_before_an_upgrade_would_interrupt_it() {
    let env = TestEnv::new().unwrap();
    let (dir, _ids) = layout1::three_claims(&env);
    // A held claim as layout 1 made it: the record says held by this
    // (live) process.
    let mut slots: Array<MapData, dispatcher_common::SlotConfig> =
        Array::try_from(Map::Array(MapData::from_pin(dir.join(pin::SLOTS)).unwrap())).unwrap();
    let mut rec = slots.get(&1, 0).unwrap();
    rec.state = dispatcher_common::STATE_HELD;
    rec.owner_start = support_start_time();
    slots.set(1, rec, 0).unwrap();
    let ifc = env.pair.rx_if.clone();
    let before = listing(&env.root);
    let o = env.slotctl(&["upgrade", &ifc]);
    assert_eq!(
        o.status.code(),
        Some(Exit::Conflict.code()),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "slotctl: upgrading {ifc} would interrupt 1 held claim(s): middle (slot 1, held by pid {}); nothing was changed; their holders cannot hand them over: stop them first, or run 'slotctl upgrade {ifc} --interrupt-held' (they stop running; their holders can claim again)",
            std::process::id()
        )
    );
    assert_eq!(listing(&env.root), before);
    let o = env.slotctl(&["upgrade", &ifc, "--interrupt-held"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).trim_end().ends_with(&format!(
            "2 persistent claim(s) carried in run order: first (prio 10), last (prio 90); interrupted 1 held claim(s): middle (slot 1, held by pid {})",
            std::process::id()
        )),
        "{}",
        stdout(&o)
    );
    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = st.claims.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["first", "last"]);
}

/// This process's start time as the runtime records owners (clock ticks
/// since boot, /proc/self/stat field 22).
fn support_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn a_state_newer_than_known_is_refused_in_one_line_naming_both_versions() {
    let env = TestEnv::new().unwrap();
    let o = spawn_slotctl(&env, None, &claim_args(&env, "xdp_pass", 20, "kept")).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = support::iface_dir(&env);
    let mut control: Array<MapData, Control> = Array::try_from(Map::Array(
        MapData::from_pin(dir.join(pin::CONTROL)).unwrap(),
    ))
    .unwrap();
    let good = control.get(&0, 0).unwrap();
    let newer = LAYOUT_VERSION + 1;
    control
        .set(
            0,
            Control {
                version: newer,
                ..good
            },
            0,
        )
        .unwrap();
    let ifc = env.pair.rx_if.clone();
    let line = format!(
        "slotctl: {ifc}'s dispatcher uses state layout {newer}; this runtime knows layouts up to {LAYOUT_VERSION}; nothing was changed; use a newer slotctl (or 'slotctl detach --force {ifc}' to drop its claims)"
    );
    let before = (listing(&env.root), control.get(&0, 0).unwrap());
    let commands = [
        claim_args(&env, "xdp_pass", 30, "new"),
        args(&["status", &ifc]),
        args(&["release", &ifc, "kept"]),
        args(&["upgrade", &ifc]),
    ];
    for a in &commands {
        let o = spawn_slotctl(&env, None, a).output();
        assert_eq!(
            o.status.code(),
            Some(Exit::Conflict.code()),
            "{a:?}: {}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).trim_end(), line, "{a:?}");
        assert!(stdout(&o).is_empty(), "{a:?}");
        assert_eq!(
            (listing(&env.root), control.get(&0, 0).unwrap()),
            before,
            "{a:?} changed a newer state"
        );
    }
    // status of the whole namespace shows it among the errors.
    let o = env.slotctl(&["status"]);
    assert_eq!(
        o.status.code(),
        Some(Exit::Conflict.code()),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("state layout {newer}")));
    // What it says to do works.
    let o = env.slotctl(&["detach", "--force", &ifc]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.exists());
}

/// Claimers, releasers and readers released at the same moment as an
/// upgrade: each either ran before it (a change refused with the one line
/// that says to upgrade, status at layout 1) or after it (on the new
/// state); none acts on the old state once the new one is in place, and the
/// state is whole at the end with every carried claim and every claim that
/// was made.
#[test]
fn operations_racing_an_upgrade_act_on_the_old_state_or_the_new_one() {
    let env = TestEnv::new().unwrap();
    let (_dir, ids) = layout1::three_claims(&env);
    let ifc = env.pair.rx_if.clone();
    let mut gate = support::Gate::new();
    let claimers: Vec<_> = (0..3)
        .map(|i| {
            spawn_slotctl(
                &env,
                Some(&gate),
                &claim_args(&env, "xdp_pass", 20 + i, &format!("c{i}")),
            )
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| spawn_slotctl(&env, Some(&gate), &args(&["status", &ifc, "--json"])))
        .collect();
    let upgrader = spawn_slotctl(&env, Some(&gate), &args(&["upgrade", &ifc]));
    let all: Vec<&support::Proc> = claimers
        .iter()
        .chain(&readers)
        .chain(std::iter::once(&upgrader))
        .collect();
    support::wait_at_gate(&all);
    gate.open();
    let o = upgrader.output();
    assert!(o.status.success(), "upgrade: {}", stderr(&o));
    let mut made = Vec::new();
    for (i, c) in claimers.into_iter().enumerate() {
        let o = c.output();
        if o.status.success() {
            made.push(format!("c{i}"));
        } else {
            assert_eq!(
                o.status.code(),
                Some(Exit::Conflict.code()),
                "{}",
                stderr(&o)
            );
            assert!(
                stderr(&o).contains("uses state layout 1, older than"),
                "{}",
                stderr(&o)
            );
        }
    }
    for r in readers {
        let o = r.output();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let layout = v["interfaces"][0]["layout"].as_u64().unwrap();
        assert!(layout == 1 || layout == u64::from(LAYOUT_VERSION), "{v}");
    }
    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.layout, LAYOUT_VERSION);
    let mut names: Vec<&str> = st.claims.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    let mut want: Vec<&str> = ["first", "middle", "last"]
        .into_iter()
        .chain(made.iter().map(String::as_str))
        .collect();
    want.sort();
    assert_eq!(names, want);
    for (name, id) in ["first", "middle", "last"].iter().zip(ids) {
        let c = st.claims.iter().find(|c| c.name == *name).unwrap();
        assert_eq!(c.prog_id, id, "{name} carried with its program");
    }
    println!(
        "figures: racing claims made after the upgrade: {}",
        made.len()
    );
}

/// A custom chain decision is not carried by this version: the upgrade
/// says so in one line, and nothing changes.
#[test]
fn a_custom_chain_decision_is_refused_by_upgrade_in_one_line_and_nothing_changes() {
    let env = TestEnv::new().unwrap();
    let (dir, _ids) = layout1::three_claims(&env);
    layout1::set_flags(&dir, dispatcher_common::FLAG_CUSTOM_CHAIN);
    let ifc = env.pair.rx_if.clone();
    let before = (listing(&env.root), layout1::object_ids(&dir));
    for extra in [&[][..], &["--interrupt-held"][..]] {
        let mut a = vec!["upgrade", ifc.as_str()];
        a.extend_from_slice(extra);
        let o = env.slotctl(&a);
        assert_eq!(
            o.status.code(),
            Some(Exit::Conflict.code()),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            stderr(&o).trim_end(),
            format!(
                "slotctl: cannot upgrade {ifc}: a custom chain decision (an extension) is installed, and this version does not move it to another dispatcher; nothing was changed; remove it first ('slotctl chain {ifc} --remove'), upgrade, then install it again"
            )
        );
        assert!(stdout(&o).is_empty());
        assert_eq!((listing(&env.root), layout1::object_ids(&dir)), before);
    }
}

/// A persistent freplace claim is carried: its extension gets a second
/// link, to the new dispatcher's slot function, before the switch, so it
/// runs on every packet across the upgrade. Extensions load only where the
/// kernel allows them (the VM suite); elsewhere the layout-1 state cannot
/// hold one, and the probe says so.
#[test]
fn a_persistent_freplace_claim_is_carried_under_traffic() {
    if slots_runtime::Backend::Freplace.probe().is_err() {
        println!("figures: freplace upgrade skipped: this kernel refuses extensions");
        return;
    }
    let env = TestEnv::new().unwrap();
    assert_eq!(env.send(3), 3);
    let dir = layout1::attach(&env);
    let first = layout1::claim(&dir, 0, 10, "first", "xdp_count_c.o");
    // Layout 1 ran slots in slot order: priorities follow the slots.
    let (ext, old_link) = layout1::claim_freplace(&dir, 1, 50, "ext", "xdp_count");
    let last = layout1::claim(&dir, 2, 90, "last", "xdp_pass");
    let (fm, em) = (counter_map(first), counter_map(ext));
    let (_, reached, f, e) = upgrade_under_traffic(&env, &fm, &em);
    println!("figures: freplace reached={reached} first={f} ext={e}");
    assert_eq!(
        f, reached,
        "every packet that reached XDP met the chain, once"
    );
    assert_eq!(e, f, "every packet met the extension, once");
    let st = check_whole(&env, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.layout, LAYOUT_VERSION);
    let got: Vec<(&str, u32, slots_runtime::Backend)> = st
        .claims
        .iter()
        .map(|c| (c.name.as_str(), c.prog_id, c.backend))
        .collect();
    assert_eq!(
        got,
        [
            ("first", first, slots_runtime::Backend::TailCall),
            ("ext", ext, slots_runtime::Backend::Freplace),
            ("last", last, slots_runtime::Backend::TailCall)
        ]
    );
    let c = &st.claims[1];
    assert_ne!(c.link_id, old_link, "a new link, to the new dispatcher");
    assert!(c.link_id != 0);
}
