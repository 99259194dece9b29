//! slotctl as people and scripts use it: exit codes, one-line errors, JSON.
use integration_tests::{
    env::{TestEnv, backend_name},
    netns::Netns,
    progs,
};
use slotctl::exit::Exit;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn claim_status_json_release() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    let obj = progs::path("xdp_drop");
    let out = env.slotctl(&[
        "claim",
        ifc,
        "--prio",
        "20",
        obj.to_str().unwrap(),
        "--name",
        "fw",
        "--proceed-on",
        "pass,drop",
        "--backend",
        backend_name(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("claimed slot"), "{}", stdout(&out));
    let cfg = progs::path("xdp_pass_cfg.o");
    let out = env.slotctl(&[
        "claim",
        ifc,
        cfg.to_str().unwrap(),
        "--backend",
        backend_name(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.slotctl(&["stats", ifc, "on"]).status.success());
    assert_eq!(
        env.send(10),
        10,
        "drop's DROP proceeds; the chain ends in PASS"
    );

    let out = env.slotctl(&["status", ifc, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["schema"], 1, "{all}");
    assert_eq!(all["errors"], serde_json::json!([]), "{all}");
    assert_eq!(all["interfaces"].as_array().unwrap().len(), 1, "{all}");
    let v = &all["interfaces"][0];
    assert_eq!(v["iface"], ifc);
    // The dispatcher and the link that holds it, as bpftool shows them.
    assert!(v["prog_id"].as_u64().unwrap() > 0, "{v}");
    assert!(v["link_id"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["backend"] == "tailcall" || v["backend"] == "freplace",
        "{v}"
    );
    let claims = v["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 2);
    // Run order: fw (20) before the C program (30, from its XDP_RUN_CONFIG).
    assert_eq!(claims[0]["name"], "fw");
    assert_eq!(claims[0]["prio"], 20);
    assert_eq!(claims[0]["proceed_on"], serde_json::json!(["drop", "pass"]));
    assert_eq!(claims[0]["object"], obj.to_str().unwrap());
    assert_eq!(claims[0]["program"], "xdp_drop");
    assert_eq!(claims[1]["name"], "xdp_pass_cfg");
    assert_eq!(claims[1]["object"], cfg.to_str().unwrap());
    assert_eq!(claims[1]["program"], "xdp_pass_cfg");
    assert_eq!(claims[1]["prio"], 30);
    for c in claims {
        for key in [
            "slot",
            "prio",
            "name",
            "prog_id",
            "proceed_on",
            "owner",
            "persistent",
            "backend",
            "state",
        ] {
            assert!(c.get(key).is_some(), "claim lacks {key}: {c}");
        }
        assert_eq!(c["persistent"], true);
        assert!(c["prog_id"].as_u64().unwrap() > 0);
        // The 10 datagrams, plus whatever the kernel itself sent (ARP).
        assert!(c["counters"]["packets"].as_u64().unwrap() >= 10, "{c}");
    }
    assert_eq!(
        claims[0]["counters"]["drop"], 10,
        "xdp_drop drops exactly the UDP datagrams"
    );
    assert!(claims[1]["counters"]["pass"].as_u64().unwrap() >= 10);

    let out = env.slotctl(&["release", ifc, "fw"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.slotctl(&["status", ifc, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["claims"].as_array().unwrap().len(), 1);
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let env = TestEnv::new().unwrap();
    let obj = progs::path("xdp_pass");
    for (args, expect, exit) in [
        (
            vec!["claim", "no-such-if0", obj.to_str().unwrap()],
            "does not exist",
            Exit::NotFound,
        ),
        (
            vec!["release", &env.pair.rx_if, "3"],
            "not attached",
            Exit::NotFound,
        ),
        (
            vec![
                "claim",
                &env.pair.rx_if,
                "--prio",
                "5000",
                obj.to_str().unwrap(),
            ],
            "priorities run from 0 to 1000",
            Exit::Usage,
        ),
    ] {
        let out = env.slotctl(&args);
        assert_eq!(out.status.code(), Some(exit.code()), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    // None of it attached anything.
    let out = env.slotctl(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["interfaces"],
        serde_json::json!([]),
        "nothing attached: {v}"
    );
}

#[test]
fn a_foreign_xdp_program_is_refused_unless_forced() {
    let env = TestEnv::new().unwrap();
    let foreign = progs::path("xdp_count_c.o");
    env.pair
        .rx
        .exec(&[
            "ip",
            "link",
            "set",
            "dev",
            &env.pair.rx_if,
            "xdpgeneric",
            "obj",
            foreign.to_str().unwrap(),
            "sec",
            "xdp",
        ])
        .unwrap();
    let out = env.slotctl(&["attach", &env.pair.rx_if]);
    assert_eq!(out.status.code(), Some(Exit::Conflict.code()));
    let err = stderr(&out);
    assert!(
        err.contains("foreign XDP program") && err.contains("--force"),
        "{err}"
    );
    let out = env.slotctl(&["attach", &env.pair.rx_if, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // It says what it removed.
    let said = stdout(&out);
    assert!(
        said.starts_with("removed the foreign XDP program xdp_count_c (id ")
            && said
                .lines()
                .next()
                .unwrap()
                .ends_with(&format!(") from {}", env.pair.rx_if)),
        "{said}"
    );
    let out = env.slotctl(&["status", &env.pair.rx_if, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn each_network_namespace_sees_its_own_interfaces() {
    // Two namespaces, each with an interface of the same name.
    let env = TestEnv::new().unwrap();
    let other = Netns::new("so").unwrap();
    other
        .exec(&[
            "ip",
            "link",
            "add",
            &env.pair.rx_if,
            "type",
            "veth",
            "peer",
            "name",
            "peer0",
        ])
        .unwrap();
    other
        .exec(&["ip", "link", "set", &env.pair.rx_if, "up"])
        .unwrap();
    other.exec(&["ip", "link", "set", "peer0", "up"]).unwrap();
    let obj = progs::path("xdp_drop");
    let out = env.slotctl(&[
        "claim",
        &env.pair.rx_if,
        obj.to_str().unwrap(),
        "--prio",
        "10",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same command through nsenter in the other namespace, same bpffs.
    let run_other = |args: &[&str]| {
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", other.path()))
            .arg(integration_tests::env::slotctl_path())
            .arg("--bpffs")
            .arg(&env.root)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run_other(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["interfaces"],
        serde_json::json!([]),
        "the other namespace has no dispatcher yet"
    );
    let out = run_other(&[
        "claim",
        &env.pair.rx_if,
        obj.to_str().unwrap(),
        "--prio",
        "10",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dirs = std::fs::read_dir(&env.root).unwrap().count();
    assert_eq!(dirs, 2, "one state directory per (namespace, interface)");
    let out = run_other(&["detach", &env.pair.rx_if, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.send(5),
        0,
        "detaching in the other namespace left ours alone"
    );
}

#[test]
fn hold_streams_the_programs_log_and_releases_on_sigterm() {
    use std::io::{BufRead as _, BufReader};
    let env = TestEnv::new().unwrap();
    let obj = progs::path("xdp_log");
    let be = backend_name();
    let mut child = env.slotctl_spawn(&[
        "claim",
        &env.pair.rx_if,
        obj.to_str().unwrap(),
        "--hold",
        "--backend",
        be,
    ]);
    let line = integration_tests::env::first_line(&mut child);
    assert!(line.contains("held until slotctl exits"), "{line}");
    assert_eq!(env.send(3), 3);
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stderr).lines() {
            lines.push(l.unwrap());
        }
        lines
    });
    // SIGTERM: slotctl flushes the log, releases the slot itself and exits
    // 0 (its handler is installed before the claim is reported).
    assert_eq!(send_sigterm(child.id()), 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let lines = reader.join().unwrap();
    let logged = lines.iter().filter(|l| l.contains("udp packet")).count();
    assert_eq!(logged, 3, "one aya-log line per datagram: {lines:?}");
    let released = format!("released slot 0 (xdp_log) on {}", env.pair.rx_if);
    assert!(lines.contains(&released), "{lines:?}");
    let out = env.slotctl(&["status", &env.pair.rx_if, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["claims"], serde_json::json!([]));
}

/// Sends SIGTERM with the `kill` command (no unsafe in tests).
fn send_sigterm(pid: u32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap()
}

#[test]
fn long_names_keep_the_status_table_aligned() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    let long = "a_claim_name_of_thirty_two_byte"; // 31 bytes, over 20
    for (name, obj, prio) in [("fw", "xdp_pass", "10"), (long, "xdp_drop", "20")] {
        let out = env.slotctl(&[
            "claim",
            ifc,
            progs::path(obj).to_str().unwrap(),
            "--name",
            name,
            "--prio",
            prio,
            "--backend",
            backend_name(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = env.slotctl(&["status", ifc]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{text}");
    // Every column starts where its header does: the cell after NAME (the
    // program id, right aligned) ends where PROG ends, on every row.
    let head = lines[0];
    let prog_end = head.find("PROG").unwrap() + "PROG".len();
    let name_at = head.find("NAME").unwrap();
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), 9, "{text}");
        let name = cells[3];
        assert_eq!(row.find(name), Some(name_at), "{text}");
        let prog = cells[4];
        let at = row[name_at + name.len()..].find(prog).unwrap() + name_at + name.len();
        assert_eq!(at + prog.len(), prog_end, "{text}");
    }
    assert!(text.contains(long), "{text}");
}

/// `slotctl status | head -1`: the reader is gone before slotctl writes
/// (its end of the pipe is closed first), and slotctl ends quietly with
/// status 0 instead of panicking on the failed write.
#[test]
fn a_closed_stdout_ends_slotctl_quietly() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    let obj = progs::path("xdp_pass");
    let out = env.slotctl(&[
        "claim",
        ifc,
        obj.to_str().unwrap(),
        "--backend",
        backend_name(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [vec!["status"], vec!["status", "--json"], vec!["probe"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = {
            let _in = env.pair.rx.enter().unwrap();
            std::process::Command::new(integration_tests::env::slotctl_path())
                .arg("--bpffs")
                .arg(&env.root)
                .args(&args)
                .stdout(writer)
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap()
        };
        assert_eq!(
            (out.status.code(), stderr(&out).as_str()),
            (Some(Exit::Ok.code()), ""),
            "slotctl {args:?} into a closed pipe"
        );
    }
}
