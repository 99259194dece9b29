//! `slotctl stats`: per-slot counters for people (a table, refreshed in
//! place with `--watch`), scripts (`--json`) and Prometheus (`--prometheus`,
//! `--listen`).
use std::{
    fmt::Write as _,
    io::IsTerminal as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use slots_runtime::{ClaimStatus, Counters, Runtime, Status};

use crate::output::{Table, out};

/// The version of `stats --json`'s layout (docs/status-json.md).
pub const JSON_SCHEMA: u32 = 1;

/// The verdicts, as `Counters` names them and the `verdict` label says.
const VERDICTS: [&str; 5] = ["aborted", "drop", "pass", "tx", "redirect"];

fn verdicts(c: &Counters) -> [u64; 5] {
    [c.aborted, c.drop, c.pass, c.tx, c.redirect]
}

/// The interfaces' status at one moment.
pub struct Sample {
    taken: Instant,
    shown: Vec<Status>,
    failed: Vec<(String, anyhow::Error)>,
}

impl Sample {
    /// `iface`, or every interface of the namespace.
    pub fn take(rt: &Runtime, iface: Option<&str>) -> Result<Self> {
        let all = match iface {
            Some(i) => vec![(i.to_string(), Ok(rt.status(i)?))],
            None => rt.status_all()?,
        };
        let taken = Instant::now();
        let mut shown = Vec::new();
        let mut failed = Vec::new();
        for (name, st) in all {
            match st {
                Ok(st) => shown.push(st),
                Err(e) => failed.push((name, anyhow::Error::from(e))),
            }
        }
        Ok(Self {
            taken,
            shown,
            failed,
        })
    }

    /// Is any interface counting?
    fn counting(&self) -> bool {
        self.shown.iter().any(|s| s.stats)
    }

    /// Failures to read an interface, one line each on stderr.
    pub fn report_failures(&self) -> bool {
        for (_, e) in &self.failed {
            eprintln!("slotctl: {}", crate::advice::line(e));
        }
        !self.failed.is_empty()
    }
}

/// A claim's rates (per second) between two samples: `None` when the
/// earlier sample did not have the same claim counting.
fn rates(
    prev: Option<&Sample>,
    now: &Sample,
    st: &Status,
    c: &ClaimStatus,
) -> Option<(f64, [f64; 5])> {
    let prev = prev?;
    let secs = now.taken.duration_since(prev.taken).as_secs_f64();
    let before = prev
        .shown
        .iter()
        .find(|s| s.iface == st.iface && s.netns_cookie == st.netns_cookie)?
        .claims
        .iter()
        .find(|p| p.slot == c.slot && p.prog_id == c.prog_id)?
        .counters
        .as_ref()?;
    let after = c.counters.as_ref()?;
    if secs <= 0.0 || after.packets < before.packets {
        return None;
    }
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    let (va, vb) = (verdicts(after), verdicts(before));
    Some((
        rate(after.packets, before.packets),
        std::array::from_fn(|i| rate(va[i], vb[i])),
    ))
}

/// Runs `slotctl stats IFACE` (with `--json`, `--watch`).
pub fn show(
    rt: &Runtime,
    iface: &str,
    interval: Duration,
    json: bool,
    watch: Option<&AtomicBool>,
) -> Result<bool> {
    let first = Sample::take(rt, Some(iface))?;
    let Some(stop) = watch else {
        // Rates need a second sample; without counting there are none.
        let (prev, now) = if first.counting() {
            std::thread::sleep(interval);
            (Some(first), Sample::take(rt, Some(iface))?)
        } else {
            (None, first)
        };
        if json {
            out!("{}", to_json(prev.as_ref(), &now, interval));
        } else {
            out!("{}", table(prev.as_ref(), &now, interval).trim_end());
        }
        return Ok(now.report_failures());
    };
    let tty = std::io::stdout().is_terminal();
    let mut prev = first;
    loop {
        let deadline = Instant::now() + interval;
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
        let now = Sample::take(rt, Some(iface))?;
        let text = table(Some(&prev), &now, interval);
        if tty {
            // Cursor home, clear the screen, like top.
            out!("\x1b[H\x1b[2J{}", text.trim_end());
        } else {
            out!("{text}");
        }
        prev = now;
    }
}

/// The table people read.
fn table(prev: Option<&Sample>, now: &Sample, interval: Duration) -> String {
    let mut t = String::new();
    for st in &now.shown {
        if !st.stats {
            let _ = writeln!(
                t,
                "{}: counters are off (the default); 'slotctl stats {} on' counts packets and verdicts per slot",
                st.iface, st.iface
            );
        } else {
            let _ = writeln!(
                t,
                "{}: counters on, rates over {:.2} s",
                st.iface,
                interval.as_secs_f64()
            );
        }
        if st.claims.is_empty() {
            let _ = writeln!(t, "  no claims");
            continue;
        }
        let rows = st
            .claims
            .iter()
            .map(|c| {
                let mut row = vec![
                    c.position.map_or("-".into(), |p| p.to_string()),
                    c.slot.to_string(),
                    c.name.clone(),
                    c.prog_id.to_string(),
                ];
                match &c.counters {
                    Some(k) => {
                        let rate =
                            rates(prev, now, st, c).map_or("-".into(), |(p, _)| format!("{p:.1}"));
                        row.extend([k.packets.to_string(), rate]);
                        row.extend(verdicts(k).iter().map(u64::to_string));
                    }
                    None => row.extend(std::iter::repeat_n("-".to_string(), 7)),
                }
                row
            })
            .collect();
        let head = vec![
            "pos", "slot", "name", "prog_id", "packets", "pkt/s", "aborted", "drop", "pass", "tx",
            "redirect",
        ];
        let mut right = vec![true; head.len()];
        right[2] = false;
        t.push_str(&Table { head, right, rows }.render());
    }
    if now.shown.is_empty() {
        let _ = writeln!(
            t,
            "no interface with the dispatcher in this network namespace"
        );
    }
    t
}

/// `stats --json`: see docs/status-json.md.
fn to_json(prev: Option<&Sample>, now: &Sample, interval: Duration) -> serde_json::Value {
    let interfaces: Vec<_> = now
        .shown
        .iter()
        .map(|st| {
            let slots: Vec<_> = st
                .claims
                .iter()
                .map(|c| {
                    let rates = rates(prev, now, st, c).map(|(p, v)| {
                        let mut m = serde_json::Map::new();
                        m.insert("packets".into(), p.into());
                        for (name, r) in VERDICTS.iter().zip(v) {
                            m.insert((*name).into(), r.into());
                        }
                        m
                    });
                    serde_json::json!({
                        "position": c.position, "slot": c.slot, "name": c.name,
                        "prog_id": c.prog_id, "state": c.state,
                        "counters": c.counters, "rates": rates,
                    })
                })
                .collect();
            serde_json::json!({
                "iface": st.iface, "netns_cookie": st.netns_cookie,
                "counters_on": st.stats, "slots": slots,
            })
        })
        .collect();
    let errors: Vec<_> = now
        .failed
        .iter()
        .map(|(i, e)| serde_json::json!({"iface": i, "error": crate::advice::line(e)}))
        .collect();
    serde_json::json!({
        "schema": JSON_SCHEMA,
        "interval_s": interval.as_secs_f64(),
        "interfaces": interfaces,
        "errors": errors,
    })
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text format (version 0.0.4) of a sample.
pub fn prometheus(now: &Sample) -> String {
    let mut enabled = String::new();
    let mut packets = String::new();
    let mut verdicts_out = String::new();
    for st in &now.shown {
        let iface = format!(
            "interface=\"{}\",namespace=\"{}\"",
            label(&st.iface),
            st.netns_cookie
        );
        let _ = writeln!(
            enabled,
            "xdp_slots_counters_enabled{{{iface}}} {}",
            u8::from(st.stats)
        );
        for c in &st.claims {
            let Some(k) = &c.counters else { continue };
            let slot = format!(
                "{iface},slot=\"{}\",position=\"{}\",name=\"{}\",prog_id=\"{}\"",
                c.slot,
                c.position.map_or(String::new(), |p| p.to_string()),
                label(&c.name),
                c.prog_id
            );
            let _ = writeln!(packets, "xdp_slots_packets_total{{{slot}}} {}", k.packets);
            for (name, n) in VERDICTS.iter().zip(verdicts(k)) {
                let _ = writeln!(
                    verdicts_out,
                    "xdp_slots_verdicts_total{{{slot},verdict=\"{name}\"}} {n}"
                );
            }
        }
    }
    let mut t = String::new();
    t.push_str("# HELP xdp_slots_counters_enabled Whether the dispatcher counts packets and verdicts per slot (1) or not (0).\n");
    t.push_str("# TYPE xdp_slots_counters_enabled gauge\n");
    t.push_str(&enabled);
    t.push_str("# HELP xdp_slots_packets_total Packets the slot's program ran on since its claim filled the slot, while counting was on.\n");
    t.push_str("# TYPE xdp_slots_packets_total counter\n");
    t.push_str(&packets);
    t.push_str("# HELP xdp_slots_verdicts_total Verdicts of the slot's program since its claim filled the slot, while counting was on.\n");
    t.push_str("# TYPE xdp_slots_verdicts_total counter\n");
    t.push_str(&verdicts_out);
    t
}

/// Serves `prometheus` for `iface` (or every interface of the namespace)
/// on `addr` until `stop`.
pub fn serve(rt: &Runtime, iface: Option<&str>, addr: &str, stop: &AtomicBool) -> Result<()> {
    let server = tiny_http::Server::http(addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e}; give a free local address and port, such as 127.0.0.1:9100"
        )
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| addr.to_string(), |a| a.to_string());
    out!("serving metrics on http://{bound}/metrics until Ctrl-C");
    while !stop.load(Ordering::SeqCst) {
        let Some(req) = server
            .recv_timeout(Duration::from_millis(100))
            .context("waiting for a scrape")?
        else {
            continue;
        };
        let path = req.url().split('?').next().unwrap_or("");
        let resp = if *req.method() != tiny_http::Method::Get {
            tiny_http::Response::from_string("only GET\n").with_status_code(405)
        } else if path != "/metrics" {
            tiny_http::Response::from_string("not found: scrape /metrics\n").with_status_code(404)
        } else {
            match Sample::take(rt, iface) {
                Ok(s) => tiny_http::Response::from_string(prometheus(&s)).with_header(
                    "Content-Type: text/plain; version=0.0.4; charset=utf-8"
                        .parse::<tiny_http::Header>()
                        .expect("a valid header"),
                ),
                Err(e) => {
                    tiny_http::Response::from_string(format!("{}\n", crate::advice::line(&e)))
                        .with_status_code(500)
                }
            }
        };
        // A scraper that hung up is its own problem.
        let _ = req.respond(resp);
    }
    Ok(())
}
