//! What slotctl prints: a table for people, JSON for programs.
use anyhow::Result;
use slots_runtime::{Attached, Claim, Status, mask_names, probe::Report};

pub fn claimed(c: &Claim, json: bool) {
    if json {
        let v = serde_json::json!({
            "iface": c.iface, "slot": c.slot, "prio": c.prio, "name": c.name,
            "prog_id": c.prog_id, "proceed_on": mask_names(c.proceed_on),
            "backend": c.backend, "persistent": c.persistent,
        });
        println!("{v}");
    } else {
        println!(
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
    let how = if a.new {
        "attached the dispatcher to"
    } else {
        "the dispatcher is already on"
    };
    println!(
        "{how} {} ({} mode, backend {}, program id {})",
        a.iface,
        a.mode,
        a.backend.as_str(),
        a.prog_id
    );
    for (passed, why) in &a.passed_over {
        println!(
            "backend {}: {passed} unavailable ({})",
            a.backend,
            slots_runtime::error_chain(why)
        );
    }
}

pub fn status(all: &[Status], json: bool) -> Result<()> {
    if json {
        let v = if all.len() == 1 {
            serde_json::to_value(&all[0])?
        } else {
            serde_json::to_value(all)?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no interface of this network namespace has the dispatcher");
    }
    for s in all {
        println!(
            "{} (ifindex {}, {} mode, backend {}, {} active slot(s){}{})",
            s.iface,
            s.ifindex,
            s.mode,
            s.backend.as_str(),
            s.active_slots,
            if s.stats { ", counters on" } else { "" },
            s.custom_chain
                .map(|id| format!(", chain decision prog {id}"))
                .unwrap_or_default()
        );
        if s.claims.is_empty() {
            println!("  no claims");
            continue;
        }
        println!(
            "  {:>3} {:>4} {:>5} {:<20} {:>7} {:<12} {:<9} {:<10} {:>7}{}",
            "POS",
            "SLOT",
            "PRIO",
            "NAME",
            "PROG",
            "PROCEED_ON",
            "BACKEND",
            "STATE",
            "OWNER",
            if s.stats {
                "   PACKETS   DROP   PASS"
            } else {
                ""
            }
        );
        for c in &s.claims {
            let counters = c
                .counters
                .as_ref()
                .map(|k| format!(" {:>9} {:>6} {:>6}", k.packets, k.drop, k.pass))
                .unwrap_or_default();
            println!(
                "  {:>3} {:>4} {:>5} {:<20} {:>7} {:<12} {:<9} {:<10} {:>7}{}",
                c.position.map_or("-".to_string(), |p| p.to_string()),
                c.slot,
                c.prio,
                c.name,
                c.prog_id,
                c.proceed_on.join(","),
                c.backend.as_str(),
                c.state,
                c.owner,
                counters
            );
        }
    }
    Ok(())
}

pub fn probe(r: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let line = |name: &str, p: &slots_runtime::probe::ProbeResult| {
        println!(
            "{name:<11} {}{}",
            if p.ok { "yes" } else { "no" },
            p.detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    };
    println!("kernel      {}", r.kernel);
    if !r.privileged {
        println!(
            "note        not root: the kernel refuses BPF to unprivileged users, so the answers below say little; run with sudo"
        );
    }
    println!("btf         {}", if r.btf { "yes" } else { "no" });
    println!(
        "lockdown    {}",
        r.lockdown
            .as_deref()
            .unwrap_or("unknown (securityfs not mounted)")
    );
    line("xdp", &r.xdp);
    line("tail calls", &r.tail_calls);
    line("freplace", &r.freplace);
    line("frags", &r.frags);
    println!(
        "backend     {}",
        if r.freplace.ok {
            "freplace (auto)"
        } else {
            "tailcall (auto)"
        }
    );
    Ok(())
}
