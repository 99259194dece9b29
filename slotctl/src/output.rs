//! What slotctl prints: a table for people, JSON for programs.

/// `println!` for slotctl's stdout, except that a reader that has gone
/// away (`slotctl status | head -1`) ends slotctl quietly with status 0,
/// instead of in a panic (Rust ignores SIGPIPE, so the write fails).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// One line on stdout; see [`out!`].
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("slotctl: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
use anyhow::Result;
use slots_runtime::{
    Attached, Claim, Cleaned, Dead, Detached, Namespace, OwnRelease, ProgramReplaced, Released,
    Status, mask_names, probe::Report,
};

pub fn claimed(c: &Claim, json: bool) {
    if json {
        let v = serde_json::json!({
            "iface": c.iface, "slot": c.slot, "prio": c.prio, "name": c.name,
            "prog_id": c.prog_id, "proceed_on": mask_names(c.proceed_on),
            "backend": c.backend, "persistent": c.persistent,
        });
        out!("{v}");
    } else {
        out!(
            "claimed slot {} on {} for {} (prio {}, proceed on {}, {}, {})",
            c.slot,
            c.iface,
            c.name,
            c.prio,
            mask_names(c.proceed_on).join(","),
            c.backend.as_str(),
            if c.persistent {
                "persistent"
            } else {
                "held until slotctl exits"
            }
        );
    }
}

pub fn attached(a: &Attached) {
    if let Some(r) = &a.replaced {
        out!(
            "removed the foreign XDP program {} (id {}) from {}",
            r.program,
            r.id,
            a.iface
        );
    }
    let how = if a.new {
        "attached the dispatcher to"
    } else {
        "the dispatcher is already on"
    };
    out!(
        "{how} {} ({} mode, backend {}, program id {})",
        a.iface,
        a.mode,
        a.backend.as_str(),
        a.prog_id
    );
    for (passed, why) in &a.passed_over {
        out!(
            "backend {}: {passed} unavailable ({})",
            a.backend,
            slots_runtime::error_chain(why)
        );
    }
}

/// What a detach did, on one line.
pub fn detached(d: &Detached) -> String {
    let what = if d.dropped.unreadable {
        "; its state was damaged, so the claims it held could not be listed".to_string()
    } else if d.dropped.claims.is_empty() {
        String::new()
    } else {
        format!(" and dropped {}", d.dropped)
    };
    if d.interface_gone {
        let what = if d.dropped.unreadable || d.dropped.claims.is_empty() {
            what
        } else {
            format!(" with {}", d.dropped)
        };
        return format!(
            "{} is gone: freed the state its dispatcher left{what}",
            d.iface
        );
    }
    format!("detached the dispatcher from {}{what}", d.iface)
}

/// What `release` did, on one line.
pub fn released(iface: &str, r: &Released) -> String {
    let what = format!("released slot {} ({}) on {iface}", r.slot, r.name);
    if r.stale {
        format!("{what}: it was stale (its holder or its program was already gone)")
    } else if r.draining {
        format!("{what}; it is reused once its holder exits")
    } else {
        what
    }
}

/// What `replace` did, on one line.
pub fn replaced(iface: &str, r: &ProgramReplaced) -> String {
    format!(
        "replaced {} on {iface} at run position {}: slot {} (program {}) -> slot {} (program {})",
        r.name, r.position, r.old_slot, r.old_prog_id, r.new_slot, r.new_prog_id
    )
}

/// What an upgrade did, on one line.
pub fn upgraded(u: &slots_runtime::Upgraded) -> String {
    if u.from == u.to {
        return format!(
            "{} is already at layout {}; nothing was changed",
            u.iface, u.to
        );
    }
    let mut line = format!(
        "upgraded {} from layout {} to {}: dispatcher prog {}, {} persistent claim(s) carried",
        u.iface,
        u.from,
        u.to,
        u.prog_id,
        u.carried.len()
    );
    if !u.carried.is_empty() {
        let names: Vec<String> = u
            .carried
            .iter()
            .map(|c| format!("{} (prio {})", c.name, c.prio))
            .collect();
        line.push_str(&format!(" in run order: {}", names.join(", ")));
    }
    if !u.interrupted.is_empty() {
        line.push_str(&format!(
            "; interrupted {} held claim(s): {}",
            u.interrupted.len(),
            u.interrupted.join(", ")
        ));
    }
    line
}

/// What a holder's own release of its held claim did, on one line.
pub fn own_release(iface: &str, slot: usize, name: &str, how: OwnRelease) -> String {
    match how {
        OwnRelease::Released => format!("released slot {slot} ({name}) on {iface}"),
        OwnRelease::ForcedBefore => format!(
            "slot {slot} ({name}) on {iface} had been released by force ('slotctl release --force'); its slot is free now"
        ),
        _ => format!(
            "slot {slot} ({name}) on {iface} no longer held this claim (released by force and reused, or reset): nothing to release"
        ),
    }
}

/// What `stats` did, on one line.
pub fn stats(iface: &str, on: bool) -> String {
    if on {
        format!("per-slot counters of {iface} are on ('slotctl stats {iface}' shows them)")
    } else {
        format!("per-slot counters of {iface} are off")
    }
}

/// The version of `status --json`'s layout (docs/status-json.md).
pub const STATUS_SCHEMA: u32 = 1;

/// A text table: columns as wide as their widest cell, numbers right
/// aligned. Used by `status` and `stats`.
pub struct Table {
    pub head: Vec<&'static str>,
    pub right: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table, one line per row after the header, each indented.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.head.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.head[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let mut out = String::from(" ");
            for (i, c) in cells.iter().enumerate() {
                let w = widths[i];
                if self.right[i] {
                    out.push_str(&format!(" {c:>w$}"));
                } else {
                    out.push_str(&format!(" {c:<w$}"));
                }
            }
            format!("{}\n", out.trim_end())
        };
        let mut text = line(self.head.clone());
        for r in &self.rows {
            text.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        text
    }

    fn print(&self) {
        out!("{}", self.render().trim_end());
    }
}

pub fn status(all: &[Status], failed: &[(String, anyhow::Error)], json: bool) -> Result<()> {
    if json {
        let errors: Vec<_> = failed
            .iter()
            .map(|(iface, e)| serde_json::json!({"iface": iface, "error": crate::advice::line(e)}))
            .collect();
        let v = serde_json::json!({
            "schema": STATUS_SCHEMA,
            "interfaces": all,
            "errors": errors,
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if all.is_empty() && failed.is_empty() {
        out!("no interface of this network namespace has the dispatcher");
    }
    for s in all {
        interface(s);
    }
    Ok(())
}

/// A dispatcher of the node whose status could not be read.
pub struct Unread {
    pub namespace: Namespace,
    pub iface: String,
    pub dead: Option<Dead>,
    pub error: anyhow::Error,
}

/// Its line on stderr: the error, and for dead state what frees it.
pub fn unread_line(u: &Unread) -> String {
    match u.dead {
        Some(why) => format!(
            "{}; it is dead ({why}): 'slotctl clean' frees it",
            crate::advice::line(&u.error)
        ),
        None => crate::advice::line(&u.error),
    }
}

/// `status --all-namespaces`: every dispatcher of the node, each with its
/// namespace.
pub fn status_node(all: &[(Namespace, Status)], failed: &[Unread], json: bool) -> Result<()> {
    if json {
        let interfaces: Vec<_> = all
            .iter()
            .map(|(ns, st)| {
                let mut v = serde_json::to_value(st).expect("status serialises");
                v["namespace"] = serde_json::to_value(ns).expect("namespace serialises");
                v
            })
            .collect();
        let errors: Vec<_> = failed
            .iter()
            .map(|u| {
                serde_json::json!({
                    "iface": u.iface, "netns_cookie": u.namespace.cookie,
                    "namespace": u.namespace, "dead": u.dead, "error": unread_line(u),
                })
            })
            .collect();
        let v = serde_json::json!({
            "schema": STATUS_SCHEMA,
            "interfaces": interfaces,
            "errors": errors,
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if all.is_empty() && failed.is_empty() {
        out!("no dispatcher under this state root");
    }
    let mut last = None;
    for (ns, st) in all {
        if last != Some(ns.cookie) {
            out!("{}", namespace(ns));
            last = Some(ns.cookie);
        }
        interface(st);
    }
    Ok(())
}

/// `namespace 4097 (/run/netns/ctr1, pid 812)`; `(this one)` for slotctl's
/// own, `(not found: gone, or held by nothing reachable here)` otherwise.
fn namespace(ns: &Namespace) -> String {
    let mut what: Vec<String> = Vec::new();
    if ns.own {
        what.push("slotctl's own".into());
    }
    if let Some(n) = &ns.name {
        what.push(format!("/run/netns/{n}"));
    }
    if let Some(p) = ns.pid {
        what.push(format!("pid {p}"));
    }
    if what.is_empty() {
        what.push("not found from here: gone, or named by no process or /run/netns entry".into());
    }
    format!("namespace {} ({})", ns.cookie, what.join(", "))
}

/// What `clean` freed.
pub fn cleaned(c: &Cleaned, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(c)?);
        return Ok(());
    }
    if c.freed.is_empty() {
        out!("nothing to clean: every dispatcher's interface is there");
    }
    for f in &c.freed {
        let iface = if f.iface.is_empty() { "?" } else { &f.iface };
        out!(
            "freed {} ({iface}, ifindex {}, namespace {}): {}; dropped {}",
            f.dir.display(),
            f.ifindex,
            f.netns_cookie,
            f.why,
            f.dropped
        );
    }
    Ok(())
}

/// One interface's status: a line, then its claims in a table.
fn interface(s: &Status) {
    {
        out!(
            "{} (ifindex {}, {} mode, backend {}, dispatcher prog {}, link {}, {} active slot(s){}{}{}{})",
            s.iface,
            s.ifindex,
            s.mode,
            s.backend.as_str(),
            s.prog_id,
            s.link_id,
            s.active_slots,
            if s.stats { ", counters on" } else { "" },
            s.custom_chain
                .map(|id| format!(", chain decision prog {id}"))
                .unwrap_or_default(),
            if s.layout == slots_runtime::LAYOUT_VERSION {
                String::new()
            } else {
                format!(
                    ", state layout {}: 'slotctl upgrade {}' moves it to layout {}",
                    s.layout,
                    s.iface,
                    slots_runtime::LAYOUT_VERSION
                )
            },
            if s.programs_checked {
                ""
            } else {
                ", programs not checked: listing them needs CAP_SYS_ADMIN"
            }
        );
        if let Some(why) = s.dead {
            out!("  dead: {why}, so nothing runs here; 'slotctl clean' frees it");
        }
        if s.claims.is_empty() {
            out!("  no claims");
            return;
        }
        let mut head = vec![
            "POS",
            "SLOT",
            "PRIO",
            "NAME",
            "PROG",
            "PROCEED_ON",
            "BACKEND",
            "STATE",
            "OWNER",
        ];
        let mut right = vec![true, true, true, false, true, false, false, false, true];
        let cgroups = s.claims.iter().any(|c| c.owner_cgroup.is_some());
        if cgroups {
            head.push("CGROUP");
            right.push(false);
        }
        if s.stats {
            head.extend(["PACKETS", "DROP", "PASS"]);
            right.extend([true, true, true]);
        }
        let rows = s
            .claims
            .iter()
            .map(|c| {
                let mut row = vec![
                    c.position.map_or("-".to_string(), |p| p.to_string()),
                    c.slot.to_string(),
                    c.prio.to_string(),
                    c.name.clone(),
                    c.prog_id.to_string(),
                    c.proceed_on.join(","),
                    c.backend.as_str().to_string(),
                    c.state.to_string(),
                    owner(c),
                ];
                if cgroups {
                    row.push(c.owner_cgroup.clone().unwrap_or_else(|| "-".into()));
                }
                if let Some(k) = &c.counters {
                    row.extend([k.packets, k.drop, k.pass].map(|n| n.to_string()));
                } else if s.stats {
                    row.extend(["-", "-", "-"].map(String::from));
                }
                row
            })
            .collect();
        Table { head, right, rows }.print();
        for c in s.claims.iter().filter(|c| !c.maps.is_empty()) {
            let maps: Vec<String> = c
                .maps
                .iter()
                .map(|m| match &m.pin {
                    Some(p) => format!("{} (id {}, {p})", m.name, m.id),
                    None => format!("{} (id {})", m.name, m.id),
                })
                .collect();
            out!("  maps of {}: {}", c.name, maps.join(", "));
        }
    }
}

/// A claim's owner as the caller sees it: its pid here while it runs;
/// the recorded pid when the claim was made in this pid namespace (or by
/// a version that did not record one); "-" for a process of another
/// namespace that is not running or not visible from here.
fn owner(c: &slots_runtime::ClaimStatus) -> String {
    match (c.owner_pid, c.owner_pidns) {
        (Some(pid), _) => pid.to_string(),
        (None, None) => c.owner.to_string(),
        (None, Some(ns)) if Some(ns) == own_pidns() => c.owner.to_string(),
        (None, Some(_)) => "-".into(),
    }
}

/// This process's pid namespace (inode number).
fn own_pidns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

pub fn probe(r: &Report, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let line = |name: &str, p: &slots_runtime::probe::ProbeResult| {
        out!(
            "{name:<11} {}{}",
            if p.ok { "yes" } else { "no" },
            p.detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    };
    out!("kernel      {}", r.kernel);
    out!("btf         {}", if r.btf { "yes" } else { "no" });
    out!(
        "lockdown    {}",
        r.lockdown
            .as_deref()
            .unwrap_or("unknown (securityfs not mounted)")
    );
    line("xdp", &r.xdp);
    line("tail calls", &r.tail_calls);
    line("freplace", &r.freplace);
    line("frags", &r.frags);
    out!(
        "backend     {}",
        if r.freplace.ok {
            "freplace (auto)"
        } else if r.tail_calls.ok {
            "tailcall (auto)"
        } else {
            "none: this kernel runs neither backend"
        }
    );
    Ok(())
}

/// apply's plan: one line per claim (with the new program id of a step
/// taken), or the plan as JSON.
pub fn plan(p: &slots_runtime::Plan, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(p)?);
        return Ok(());
    }
    for s in &p.steps {
        match s.new_prog_id {
            Some(id) if s.action != slots_runtime::Action::Keep => out!("{s} (program {id})"),
            _ => out!("{s}"),
        }
    }
    Ok(())
}
