//! Per-slot counters as people and scripts read them: they belong to the
//! claim (a new claim starts at zero), `slotctl stats` prints them (text,
//! JSON, Prometheus) and serves them for scraping.
use integration_tests::{
    env::{TestEnv, backend_name},
    progs,
};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.slotctl(args);
    assert!(out.status.success(), "slotctl {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Sends SIGNAL to a child (not yet reaped, so the pid is still its).
fn signal(child: &std::process::Child, signal: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal}: {st}");
}

/// The one claim's entry of `status --json`.
fn only_claim(env: &TestEnv) -> serde_json::Value {
    let v = env.status_json();
    let claims = v["interfaces"][0]["claims"].as_array().unwrap().clone();
    assert_eq!(claims.len(), 1, "{v}");
    claims[0].clone()
}

#[test]
fn a_new_claim_does_not_inherit_the_previous_holders_counters() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    let drop = progs::path("xdp_drop");
    let pass = progs::path("xdp_pass");
    let b = backend_name();
    ok(
        &env,
        &[
            "claim",
            ifc,
            drop.to_str().unwrap(),
            "--name",
            "dropper",
            "--backend",
            b,
        ],
    );
    ok(&env, &["stats", ifc, "on"]);
    assert_eq!(env.send(30), 0, "xdp_drop drops every datagram");
    let before = only_claim(&env);
    assert_eq!(before["counters"]["drop"], 30, "{before}");
    let slot = before["slot"].as_u64().unwrap();

    ok(&env, &["release", ifc, "dropper"]);
    ok(
        &env,
        &[
            "claim",
            ifc,
            pass.to_str().unwrap(),
            "--name",
            "passer",
            "--backend",
            b,
        ],
    );
    let after = only_claim(&env);
    assert_eq!(
        after["slot"], slot,
        "the freed slot is the lowest: it is reused"
    );
    let c = &after["counters"];
    // Only what the kernel itself may have sent since (ARP, IPv6) can have
    // been counted, and a pass-only program drops nothing.
    assert_eq!(c["drop"], 0, "the previous holder's drops: {after}");
    assert_eq!(c["aborted"], 0, "{after}");
    assert!(c["packets"].as_u64().unwrap() < 30, "{after}");
    assert_eq!(c["packets"], c["pass"], "{after}");

    let seen = c["packets"].as_u64().unwrap();
    assert_eq!(env.send(5), 5);
    let c = only_claim(&env)["counters"].clone();
    assert_eq!(c["drop"], 0, "{c}");
    assert!(c["pass"].as_u64().unwrap() >= seen + 5, "{c}");
}

/// A dropper in front of a passer (the dropper's DROP proceeds), `n`
/// datagrams through both with counting on.
fn two_claims_and_traffic(env: &TestEnv, n: usize) {
    let ifc = env.pair.rx_if.as_str();
    let drop = progs::path("xdp_drop");
    let pass = progs::path("xdp_pass");
    let b = backend_name();
    ok(
        env,
        &[
            "claim",
            ifc,
            drop.to_str().unwrap(),
            "--name",
            "fw",
            "--prio",
            "10",
            "--proceed-on",
            "pass,drop",
            "--backend",
            b,
        ],
    );
    ok(
        env,
        &[
            "claim",
            ifc,
            pass.to_str().unwrap(),
            "--name",
            "tail",
            "--prio",
            "20",
            "--backend",
            b,
        ],
    );
    let off = ok(env, &["stats", ifc]);
    assert!(off.contains("counters are off"), "{off}");
    ok(env, &["stats", ifc, "on"]);
    assert_eq!(env.send(n), n, "the chain ends in PASS");
}

#[test]
fn stats_prints_per_slot_counts_in_run_order_as_text_and_json() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    two_claims_and_traffic(&env, 12);

    let text = ok(&env, &["stats", ifc, "--interval", "0.05"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{ifc}: counters on")),
        "{text}"
    );
    assert!(
        lines[1].contains("pkt/s") && lines[1].contains("redirect"),
        "{text}"
    );
    // Run order: fw (prio 10) first, at position 0.
    let fw: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&fw[..3], ["0", "0", "fw"], "{text}");
    assert_eq!(fw[7], "12", "fw's drops: {text}");
    assert!(lines[3].split_whitespace().nth(2) == Some("tail"), "{text}");

    let out = ok(&env, &["stats", ifc, "--json", "--interval", "0.05"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], 1, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    let i = &v["interfaces"][0];
    assert_eq!(i["iface"], ifc);
    assert_eq!(i["counters_on"], true);
    assert!(i["netns_cookie"].as_u64().unwrap() > 0, "{v}");
    let slots = i["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{v}");
    assert_eq!(slots[0]["name"], "fw");
    assert_eq!(slots[0]["position"], 0);
    assert_eq!(slots[1]["name"], "tail");
    assert_eq!(slots[1]["position"], 1);
    assert_eq!(slots[0]["counters"]["drop"], 12, "{v}");
    assert!(slots[1]["counters"]["pass"].as_u64().unwrap() >= 12, "{v}");
    for s in slots {
        assert!(s["prog_id"].as_u64().unwrap() > 0, "{s}");
        // Rates are there (their values depend on timing: not checked).
        for k in ["packets", "aborted", "drop", "pass", "tx", "redirect"] {
            assert!(s["rates"][k].is_number(), "{s}");
        }
    }

    ok(&env, &["stats", ifc, "off"]);
    let out = ok(&env, &["stats", ifc, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["interfaces"][0]["counters_on"], false, "{v}");
    assert!(v["interfaces"][0]["slots"][0]["rates"].is_null(), "{v}");
}

#[test]
fn stats_watch_refreshes_until_interrupted() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    two_claims_and_traffic(&env, 3);
    let mut child = env.slotctl_spawn(&["stats", ifc, "--watch", "--interval", "0.05"]);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    // Two refreshes: each starts with the interface's line.
    let mut heads = 0;
    while heads < 2 {
        let l = lines.next().expect("slotctl stats --watch ended").unwrap();
        if l.starts_with(&format!("{ifc}: counters on")) {
            heads += 1;
        }
        assert!(!l.contains('\x1b'), "no escape codes into a pipe: {l:?}");
    }
    signal(&child, "INT");
    drop(lines);
    let st = child.wait().unwrap();
    assert!(st.success(), "Ctrl-C ends --watch cleanly: {st}");
}

/// The body of `GET /metrics` on `addr`, from inside `env`'s rx namespace.
fn scrape(env: &TestEnv, addr: &str) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let _in = env.pair.rx.enter().unwrap();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Ok(body.to_string())
}

/// Checks Prometheus text against the claims of `two_claims_and_traffic`.
fn check_metrics(env: &TestEnv, text: &str, sent: f64) {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let ifc = env.pair.rx_if.as_str();
    let value = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref v => panic!("{}: not a counter or gauge: {v:?}", s.metric),
    };
    let find = |metric: &str, name: &str, verdict: Option<&str>| {
        let found: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == metric
                    && s.labels.get("interface") == Some(ifc)
                    && s.labels.get("name") == Some(name)
                    && s.labels.get("verdict") == verdict
            })
            .collect();
        assert_eq!(found.len(), 1, "{metric} {name} {verdict:?} in {text}");
        found[0].clone()
    };
    let fw_drop = find("xdp_slots_verdicts_total", "fw", Some("drop"));
    assert_eq!(value(&fw_drop), sent, "{text}");
    for key in ["namespace", "slot", "position", "prog_id"] {
        assert!(
            fw_drop.labels.get(key).is_some_and(|v| !v.is_empty()),
            "{key}: {text}"
        );
    }
    assert_eq!(fw_drop.labels.get("position"), Some("0"));
    assert_eq!(
        value(&find("xdp_slots_verdicts_total", "fw", Some("pass"))),
        0.0
    );
    assert_eq!(
        value(&find("xdp_slots_verdicts_total", "tail", Some("drop"))),
        0.0
    );
    assert!(value(&find("xdp_slots_verdicts_total", "tail", Some("pass"))) >= sent);
    assert!(value(&find("xdp_slots_packets_total", "fw", None)) >= sent);
    assert!(
        scrape.docs.contains_key("xdp_slots_packets_total"),
        "HELP lines: {text}"
    );
    let on: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "xdp_slots_counters_enabled" && s.labels.get("interface") == Some(ifc)
        })
        .collect();
    assert_eq!(on.len(), 1, "{text}");
    assert_eq!(value(on[0]), 1.0);
}

#[test]
fn prometheus_text_is_printed_and_served_for_scraping() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    two_claims_and_traffic(&env, 17);

    // Without an interface: every interface of the namespace (here, one).
    let text = ok(&env, &["stats", "--prometheus"]);
    check_metrics(&env, &text, 17.0);
    check_metrics(&env, &ok(&env, &["stats", "--prometheus", ifc]), 17.0);

    // Served on loopback inside the test's own namespace; port 0: a free one.
    let mut server = env.slotctl_spawn(&["stats", "--listen", "127.0.0.1:0"]);
    let first = integration_tests::env::first_line(&mut server);
    let addr = first
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|r| r.strip_suffix("/metrics until Ctrl-C"))
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    check_metrics(&env, &scrape(&env, &addr).unwrap(), 17.0);
    // The counts follow the traffic.
    assert_eq!(env.send(4), 4);
    check_metrics(&env, &scrape(&env, &addr).unwrap(), 21.0);

    // Stopped (SIGTERM, as a service manager does), it ends cleanly and its
    // socket goes with it; the counters stay.
    signal(&server, "TERM");
    let st = server.wait().unwrap();
    assert!(st.success(), "the server ends cleanly on SIGTERM: {st}");
    let refused = scrape(&env, &addr).expect_err("nothing listens after the server ends");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    check_metrics(&env, &ok(&env, &["stats", "--prometheus", ifc]), 21.0);
}

#[test]
fn bad_stats_requests_get_one_line_and_change_nothing() {
    let env = TestEnv::new().unwrap();
    let ifc = env.pair.rx_if.as_str();
    let drop = progs::path("xdp_drop");
    ok(
        &env,
        &[
            "claim",
            ifc,
            drop.to_str().unwrap(),
            "--backend",
            backend_name(),
        ],
    );
    // A port already taken, inside the test's namespace.
    let listener = {
        let _in = env.pair.rx.enter().unwrap();
        std::net::TcpListener::bind("127.0.0.1:0").unwrap()
    };
    let taken = listener.local_addr().unwrap().to_string();
    for (args, expect) in [
        (vec!["stats"], "required"),
        (vec!["stats", ifc, "--interval", "0"], "out of range"),
        (vec!["stats", ifc, "--interval", "soon"], "not a number"),
        (vec!["stats", ifc, "on", "--json"], "cannot be used with"),
        (
            vec!["stats", ifc, "--json", "--prometheus"],
            "cannot be used with",
        ),
        (
            vec!["stats", "--listen", "nowhere"],
            "cannot listen on nowhere",
        ),
        (vec!["stats", "--listen", &taken], "cannot listen on"),
        (vec!["stats", "no-such-if0"], "does not exist"),
    ] {
        let out = env.slotctl(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    assert_eq!(
        env.status_json()["interfaces"][0]["stats"],
        false,
        "counting stays off"
    );
}
