//! Dead state: a namespace deleted with claims in it, or an interface
//! deleted alone, leaves nothing in the kernel once the next operation
//! elsewhere (an attach or claim) or `slotctl clean` has run; `status
//! --all-namespaces` shows every namespace's dispatchers from the host and
//! flags the dead ones; live interfaces keep running through a clean.
mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use integration_tests::{
    env::{TestEnv, backend_name, slotctl_at, slotctl_path},
    netns::{Netns, unique},
    progs,
};
use slotctl::exit::Exit;
use support::{
    KERNEL_PATIENCE, Proc, claim_args, eventually, second_interface, stderr, stdout,
    traffic_reaches_every_claim,
};

const PROGRAM: &str = "xdp_count";

/// A namespace of the test's own with a veth pair in it (both ends up), the
/// dispatcher's end named `ifc`.
struct Doomed {
    ns: Option<Netns>,
    ifc: String,
}

impl Doomed {
    fn new() -> Self {
        let ns = Netns::new("gd").unwrap();
        let (a, b) = (unique("ga"), unique("gb"));
        ns.exec(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])
            .unwrap();
        for i in [&a, &b] {
            ns.exec(&["ip", "link", "set", i, "up"]).unwrap();
        }
        Self {
            ns: Some(ns),
            ifc: a,
        }
    }

    fn ns(&self) -> &Netns {
        self.ns.as_ref().expect("not deleted yet")
    }

    /// slotctl in the namespace, with `root`, stdout and stderr piped.
    fn spawn(&self, root: &Path, args: &[String]) -> Proc {
        let _in = self.ns().enter().unwrap();
        let child = Command::new(slotctl_path())
            .arg("--bpffs")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting slotctl");
        Proc::from_child(child)
    }

    /// `ip netns del`: the namespace goes once no process is left in it.
    fn delete(&mut self) {
        drop(self.ns.take());
    }
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// `status --all-namespaces --json` from the host.
fn node_status(root: &Path) -> serde_json::Value {
    json(&slotctl_at(root, &["status", "--all-namespaces", "--json"]))
}

/// The entry of `status --all-namespaces --json` whose state is in `dir`.
fn entry<'a>(node: &'a serde_json::Value, dir: &Path) -> Option<&'a serde_json::Value> {
    node["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["dir"].as_str() == Some(dir.to_str().unwrap()))
}

/// Everything the kernel holds for one dispatcher: its program, its link,
/// its claims' programs, and every map of them and of its directory.
#[derive(Debug, Default)]
struct Objects {
    progs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
    links: BTreeSet<u32>,
}

impl Objects {
    /// Read from the kernel for the state in `dir` (status gives the ids).
    fn of(st: &serde_json::Value, dir: &Path) -> Self {
        let mut o = Self::default();
        o.progs.insert(st["prog_id"].as_u64().unwrap() as u32);
        o.links.insert(st["link_id"].as_u64().unwrap() as u32);
        for c in st["claims"].as_array().unwrap() {
            o.progs.insert(c["prog_id"].as_u64().unwrap() as u32);
            if c["link_id"].as_u64().unwrap() != 0 {
                o.links.insert(c["link_id"].as_u64().unwrap() as u32);
            }
        }
        for info in aya::programs::loaded_programs().filter_map(|p| p.ok()) {
            if o.progs.contains(&info.id()) {
                o.maps.extend(info.map_ids().unwrap().unwrap_or_default());
            }
        }
        for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            if let Ok(m) = aya::maps::MapInfo::from_pin(e.path()) {
                o.maps.insert(m.id());
            }
        }
        assert!(o.links.iter().all(|&l| l != 0), "{o:?}");
        assert!(o.maps.len() >= 4, "the dispatcher's maps at least: {o:?}");
        o
    }

    /// Waits until none of them is in the kernel any more (it frees them
    /// from work queues); says which remain if some do.
    fn all_gone(&self) -> Result<(), String> {
        eventually(KERNEL_PATIENCE, || {
            let progs: BTreeSet<u32> = aya::programs::loaded_programs()
                .filter_map(|p| p.ok().map(|p| p.id()))
                .filter(|id| self.progs.contains(id))
                .collect();
            let maps: BTreeSet<u32> = support::map_ids()
                .into_iter()
                .filter(|id| self.maps.contains(id))
                .collect();
            let links: BTreeSet<u32> = aya::programs::loaded_links()
                .filter_map(|l| l.ok().map(|l| l.id()))
                .filter(|id| self.links.contains(id))
                .collect();
            if progs.is_empty() && maps.is_empty() && links.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "still in the kernel: programs {progs:?}, maps {maps:?}, links {links:?}; held by {:?}",
                    holders(&maps)
                ))
            }
        })
    }
}

/// Processes with a descriptor of one of the maps `ids` (`/proc/*/fdinfo`).
fn holders(ids: &BTreeSet<u32>) -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            let held = info.lines().any(|l| {
                l.strip_prefix("map_id:")
                    .and_then(|v| v.trim().parse().ok())
                    .is_some_and(|id: u32| ids.contains(&id))
            });
            if held {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                out.push(format!(
                    "{} ({})",
                    p.file_name().to_string_lossy(),
                    comm.trim()
                ));
                break;
            }
        }
    }
    out
}

/// A persistent and a held claim in a namespace of their own, under the
/// test's root; the namespace then deleted and the holder killed. Returns
/// the state directory and what the kernel held for it.
fn doomed_namespace_with_claims(env: &TestEnv) -> (PathBuf, Objects) {
    let mut doomed = Doomed::new();
    let obj = progs::path(PROGRAM);
    let claim = |name: &str, hold: bool| {
        let mut a: Vec<String> = [
            "claim",
            &doomed.ifc,
            obj.to_str().unwrap(),
            "--name",
            name,
            "--backend",
            backend_name(),
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if hold {
            a.push("--hold".into());
        }
        a
    };
    let o = doomed.spawn(&env.root, &claim("kept", false)).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut holder = doomed.spawn(&env.root, &claim("held", true));
    let line = holder.first_line();
    assert!(line.contains("\"slot\""), "no held claim: {line:?}");

    let node = node_status(&env.root);
    let cookie = {
        let _in = doomed.ns().enter().unwrap();
        slots_runtime::Iface::resolve(&doomed.ifc)
            .unwrap()
            .netns_cookie
    };
    let st = node["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["netns_cookie"] == cookie)
        .unwrap_or_else(|| panic!("the doomed namespace's dispatcher in {node:#}"))
        .clone();
    let dir = PathBuf::from(st["dir"].as_str().unwrap());
    assert_eq!(st["claims"].as_array().unwrap().len(), 2, "{st:#}");
    assert_eq!(st["dead"], serde_json::Value::Null, "{st:#}");
    assert_eq!(st["namespace"]["cookie"], cookie, "{st:#}");
    assert_eq!(
        st["namespace"]["name"].as_str(),
        Some(doomed.ns().name.as_str()),
        "found by its /run/netns name: {st:#}"
    );
    let objects = Objects::of(&st, &dir);

    // The container exits: its name goes, then its last process.
    doomed.delete();
    holder.kill();
    // The kernel dismantles the namespace from a work queue; then the
    // dispatcher's link reports no interface.
    eventually(KERNEL_PATIENCE, || {
        let node = node_status(&env.root);
        match entry(&node, &dir) {
            Some(e) if e["dead"] == "interface_gone" => Ok(()),
            other => Err(format!("not flagged dead yet: {other:?}")),
        }
    })
    .unwrap();
    (dir, objects)
}

#[test]
fn a_claim_elsewhere_frees_a_deleted_namespace() {
    let env = TestEnv::new().unwrap();
    let (dir, objects) = doomed_namespace_with_claims(&env);
    assert!(dir.exists());

    // Any operation from another namespace: a claim.
    let o = support::spawn_slotctl(&env, None, &claim_args(&env, PROGRAM, 10, "other")).output();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("freeing {}", dir.display())),
        "the claim says what it freed: {}",
        stderr(&o)
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
    objects.all_gone().unwrap();
    println!(
        "figures: gc by claim freed programs={} maps={} links={}",
        objects.progs.len(),
        objects.maps.len(),
        objects.links.len()
    );
}

#[test]
fn clean_frees_a_deleted_namespace_and_leaves_live_ones_running() {
    let env = TestEnv::new().unwrap();
    // A live dispatcher with a claim, in another namespace.
    let o = support::spawn_slotctl(&env, None, &claim_args(&env, PROGRAM, 10, "live")).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let live_dir = support::iface_dir(&env);

    let (dir, objects) = doomed_namespace_with_claims(&env);

    // From the host, both namespaces' dispatchers; the dead one flagged.
    let node = node_status(&env.root);
    let live = entry(&node, &live_dir).expect("the live dispatcher");
    let dead = entry(&node, &dir).expect("the dead dispatcher");
    assert_eq!(live["dead"], serde_json::Value::Null, "{live:#}");
    assert_eq!(dead["dead"], "interface_gone", "{dead:#}");
    assert_ne!(live["namespace"]["cookie"], dead["namespace"]["cookie"]);
    assert_eq!(
        live["namespace"]["name"].as_str(),
        Some(env.pair.rx.name.as_str()),
        "{live:#}"
    );
    assert_eq!(live["namespace"]["own"], false, "{live:#}");
    assert_eq!(live["claims"][0]["name"], "live", "{live:#}");
    let human = slotctl_at(&env.root, &["status", "--all-namespaces"]);
    assert!(human.status.success(), "{}", stderr(&human));
    let text = stdout(&human);
    assert!(
        text.contains(&format!("/run/netns/{}", env.pair.rx.name))
            && text.contains("dead: its interface is gone")
            && text.contains("'slotctl clean' frees it"),
        "{text}"
    );

    // clean, from another namespace than the dead one's.
    let o = env.slotctl(&["clean"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("freed {}", dir.display()))
            && out.contains("its interface is gone")
            && out.contains("kept (slot"),
        "clean names what it freed: {out}"
    );
    assert!(!out.contains(&live_dir.display().to_string()), "{out}");
    assert!(!dir.exists(), "{} is still there", dir.display());
    objects.all_gone().unwrap();

    // The live one is untouched: listed, whole, and its claim still runs
    // on every packet.
    let node = node_status(&env.root);
    assert!(entry(&node, &dir).is_none(), "{node:#}");
    assert_eq!(
        node["interfaces"].as_array().unwrap().len(),
        1,
        "only the live dispatcher: {node:#}"
    );
    support::check_whole(&env, &[]).unwrap();
    assert_eq!(traffic_reaches_every_claim(&env, 20), 20);

    // Nothing more to do: says so, exit 0, changes nothing.
    let before = support::listing(&env.root);
    let o = env.slotctl(&["clean", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["freed"], serde_json::json!([]));
    let o = env.slotctl(&["clean"]);
    assert!(stdout(&o).contains("nothing to clean"), "{}", stdout(&o));
    assert_eq!(support::listing(&env.root), before);
}

#[test]
fn a_deleted_interface_is_dead_and_a_crashed_clean_is_finished() {
    let env = TestEnv::new().unwrap();
    let gone = second_interface(&env);
    let mut a = claim_args(&env, PROGRAM, 10, "on-gone");
    a[1] = gone.clone();
    let o = support::spawn_slotctl(&env, None, &a).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = support::spawn_slotctl(&env, None, &claim_args(&env, PROGRAM, 10, "stays")).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = env.in_rx(|_, _| {
        env.root
            .join(slots_runtime::Iface::resolve(&gone).unwrap().dir_name())
    });
    let st: serde_json::Value = json(&env.slotctl(&["status", "--json"]));
    let objects = Objects::of(
        st["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["iface"] == gone.as_str())
            .unwrap(),
        &dir,
    );
    env.pair.rx.exec(&["ip", "link", "del", &gone]).unwrap();

    // status (this namespace's interfaces) flags it dead, not live.
    eventually(KERNEL_PATIENCE, || {
        let st = json(&env.slotctl(&["status", "--json"]));
        let i = st["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["iface"] == gone.as_str())
            .cloned();
        match i {
            Some(i) if i["dead"] == "interface_gone" => Ok(()),
            other => Err(format!("not flagged dead: {other:?}")),
        }
    })
    .unwrap();
    let text = stdout(&env.slotctl(&["status"]));
    assert!(text.contains("dead: its interface is gone"), "{text}");

    // A clean killed half-way (after unpinning the link) leaves the
    // directory without its link: still dead, for the next run.
    let o = {
        let _in = env.pair.rx.enter().unwrap();
        Command::new(slotctl_path())
            .arg("--bpffs")
            .arg(&env.root)
            .arg("clean")
            .env("FAILPOINTS", "detach::unlinked=return")
            .output()
            .unwrap()
    };
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{}", stderr(&o));
    assert!(dir.exists() && !dir.join(slots_runtime::pin::LINK).exists());
    let node = node_status(&env.root);
    assert_eq!(entry(&node, &dir).unwrap()["dead"], "unlinked", "{node:#}");

    // detach of the deleted interface, by its old name, finishes the job.
    let o = env.slotctl(&["detach", &gone, "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{gone} is gone")) && out.contains("on-gone"),
        "{out}"
    );
    assert!(!dir.exists());
    objects.all_gone().unwrap();
    // Once freed, the name means nothing here.
    let o = env.slotctl(&["detach", &gone]);
    assert_eq!(
        o.status.code(),
        Some(Exit::NotFound.code()),
        "{}",
        stderr(&o)
    );
    support::check_whole(&env, &[]).unwrap();
}

#[test]
fn clean_and_claims_at_once_free_the_dead_and_keep_every_claim() {
    let env = TestEnv::new().unwrap();
    // A dead dispatcher in the same namespace: its interface deleted.
    let gone = second_interface(&env);
    let mut a = claim_args(&env, PROGRAM, 10, "on-gone");
    a[1] = gone.clone();
    let o = support::spawn_slotctl(&env, None, &a).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = env.in_rx(|_, _| {
        env.root
            .join(slots_runtime::Iface::resolve(&gone).unwrap().dir_name())
    });
    env.pair.rx.exec(&["ip", "link", "del", &gone]).unwrap();
    eventually(KERNEL_PATIENCE, || {
        flagged_dead(&env, &dir)
            .then_some(())
            .ok_or_else(|| "not flagged dead yet".to_string())
    })
    .unwrap();

    // Claims on the live interface and cleans, released together: each
    // claim's attach frees dead state in passing (or skips it while a
    // clean holds it), each clean waits for the locks.
    let mut gate = support::Gate::new();
    let mut procs = Vec::new();
    for i in 0..4 {
        let args = claim_args(&env, PROGRAM, 10 + i, &format!("c{i}"));
        procs.push(support::spawn_slotctl(&env, Some(&gate), &args));
    }
    for _ in 0..2 {
        procs.push(support::spawn_slotctl(
            &env,
            Some(&gate),
            &["clean".to_string()],
        ));
    }
    support::wait_at_gate(&procs.iter().collect::<Vec<_>>());
    gate.open();
    let mut freed_by = 0;
    for p in procs {
        let o = p.output();
        assert!(o.status.success(), "{}", stderr(&o));
        let said = format!("{}{}", stdout(&o), stderr(&o));
        if said.contains(&format!("{}", dir.display())) {
            freed_by += 1;
        }
    }
    assert_eq!(freed_by, 1, "exactly one process freed {}", dir.display());
    assert!(!dir.exists());
    let st = support::check_whole(&env, &[]).unwrap();
    let names: BTreeSet<String> = st.claims.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        names,
        (0..4).map(|i| format!("c{i}")).collect::<BTreeSet<_>>()
    );
    assert_eq!(traffic_reaches_every_claim(&env, 10), 10);
}

/// Does `status --all-namespaces` flag the state in `dir` dead?
fn flagged_dead(env: &TestEnv, dir: &Path) -> bool {
    let node = node_status(&env.root);
    entry(&node, dir).is_some_and(|e| !e["dead"].is_null())
}
