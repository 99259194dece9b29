//! slotctl's command line: every command, argument and option with its
//! help. The binary parses it; `cargo xtask dist` renders it into man
//! pages and shell completions (`examples/dist.rs`).
use std::{path::PathBuf, sync::LazyLock};

use clap::{Parser, Subcommand};
use slots_runtime::{Backend, LAYOUT_VERSION, Mode, PRIO_MAX, SLOT_COUNT, parse_mask};

use crate::exit;

/// `--version`: the program's version and the state layout it reads.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (state layout {LAYOUT_VERSION}, {SLOT_COUNT} slots)",
        env!("CARGO_PKG_VERSION")
    )
});

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "slotctl",
    version = VERSION.as_str(),
    about = "Run several XDP programs on one interface, each in its own slot of a dispatcher attached once",
    after_help = exit::HELP.as_str(),
)]
pub struct Cli {
    /// bpffs directory holding the per-interface state.
    #[arg(long, global = true, value_name = "DIR", default_value = slots_runtime::DEFAULT_ROOT)]
    pub bpffs: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `--pin-maps`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PinMapsArg {
    /// Under the claim's own directory in its interface's state; removed
    /// with the claim.
    Scoped,
    /// At the top of bpffs (/sys/fs/bpf/NAME), as libbpf does: shared with
    /// every program, in every namespace, that pins a map of that name;
    /// left in place.
    Shared,
}

/// `--mode`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ModeArg {
    /// Native (driver) mode where the driver has it, else skb.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Skb,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Native => Mode::Native,
            ModeArg::Skb => Mode::Skb,
        }
    }
}

/// `--backend`: `auto` (None) or a backend's name.
#[derive(Clone, Copy, Debug)]
pub struct BackendArg(pub Option<Backend>);

fn parse_backend(s: &str) -> Result<BackendArg, String> {
    match s {
        "auto" => Ok(BackendArg(None)),
        other => other
            .parse()
            .map(|b| BackendArg(Some(b)))
            .map_err(|e| format!("{e}, or auto")),
    }
}

/// `--prio`: 0..=PRIO_MAX; a negative number is a value, refused here.
/// `stats`' notes on counting.
const STATS_HELP: &str = "Counting costs time per packet and counted slot (figures in docs/benchmarks.md); \
a claim's counters start at zero when it fills its slot. Rates are packets per second \
between two samples an interval apart.";

fn parse_interval(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("{s} s is out of range: use 0.01 to 3600 seconds"));
    }
    Ok(secs)
}

fn parse_prio(s: &str) -> Result<u32, String> {
    s.parse::<i64>()
        .ok()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p <= PRIO_MAX)
        .ok_or_else(|| format!("priorities run from 0 to {PRIO_MAX}, lower first"))
}

/// `--map-size NAME=N`.
fn parse_map_size(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=N (e.g. rx_cnt=64)"))?;
    if name.is_empty() {
        return Err(format!("{s:?} has no map name (NAME=N, e.g. rx_cnt=64)"));
    }
    match n.parse::<u32>() {
        Ok(0) => Err(format!("{name} needs at least 1 entry")),
        Ok(n) => Ok((name.to_string(), n)),
        Err(_) => Err(format!(
            "{n:?} is not a number of entries (NAME=N, e.g. rx_cnt=64)"
        )),
    }
}

/// The interface, as `ip link` names it.
const IFACE_HELP: &str =
    "Network interface (as 'ip link' names it, in slotctl's network namespace)";

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Claim a slot for an XDP program (attaches the dispatcher if needed).
    #[command(
        long_about = "Claim a slot for an XDP program (attaches the dispatcher if needed).\n\n\
            The claim is persistent by default: it stays after slotctl exits, until \
            'slotctl release'. With --hold it is held instead: released when slotctl exits \
            (also when it is killed). The library's default (ClaimRequest) is held."
    )]
    Claim {
        #[arg(help = IFACE_HELP)]
        iface: String,
        /// The XDP object file (C `SEC("xdp")` or aya-ebpf `#[xdp]`).
        object: PathBuf,
        /// Lower runs first (0..=1000). Default: the object's XDP_RUN_CONFIG, else 50.
        #[arg(long, allow_negative_numbers = true, value_parser = parse_prio)]
        prio: Option<u32>,
        /// The program in the object to claim with, if it has several XDP programs.
        #[arg(long, value_name = "NAME")]
        program: Option<String>,
        /// Verdicts after which the next slot runs, e.g. `pass,drop`
        /// (aborted, drop, pass, tx, redirect). Default: the object's
        /// XDP_RUN_CONFIG, else `pass`.
        #[arg(long, value_name = "VERDICTS", value_parser = parse_mask)]
        proceed_on: Option<u32>,
        /// Claim name, unique on the interface (default: the program's
        /// name, cut to 32 bytes with a hash of the rest when longer).
        #[arg(long)]
        name: Option<String>,
        /// Size (max_entries) of a map the object leaves for its loader to
        /// size (declared with max_entries 0), e.g. `rx_cnt=64`. Repeatable.
        #[arg(long = "map-size", value_name = "NAME=N", value_parser = parse_map_size)]
        map_size: Vec<(String, u32)>,
        /// Where maps the program pins by name (LIBBPF_PIN_BY_NAME) go:
        /// scoped (the claim's own, removed with it) or shared (the top of
        /// bpffs, as libbpf does, left in place).
        #[arg(long, value_enum, default_value = "scoped")]
        pin_maps: PinMapsArg,
        /// Pin the maps the program pins by name in DIR (on bpffs) instead:
        /// shared with whoever uses DIR, left in place.
        #[arg(long, value_name = "DIR", conflicts_with = "pin_maps")]
        map_pin_dir: Option<PathBuf>,
        /// Hold the slot only while slotctl runs (in the foreground, showing
        /// the program's aya-log output) instead of persistently; released
        /// when slotctl exits.
        #[arg(long)]
        hold: bool,
        /// How the slot is filled: auto (the interface's backend), freplace or tailcall.
        #[arg(long, default_value = "auto", value_parser = parse_backend)]
        backend: BackendArg,
        /// XDP mode, if the dispatcher has to be attached first.
        #[arg(long, value_enum, default_value = "auto")]
        mode: ModeArg,
        /// Print the claim as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release a claim by slot number or name.
    Release {
        #[arg(help = IFACE_HELP)]
        iface: String,
        /// Slot number (0..=99) or claim name.
        #[arg(value_name = "SLOT|NAME")]
        which: String,
        /// Release another process's held claim (its slot is reused once
        /// that process exits).
        #[arg(long)]
        force: bool,
    },
    /// Replace a claim's program by another at the same run position: no
    /// packet meets neither or both. The claim keeps its name, priority,
    /// verdicts and backend. Persistent claims only: a held claim is
    /// replaced by its holder (the library's Claim::replace).
    Replace {
        #[arg(help = IFACE_HELP)]
        iface: String,
        /// Slot number (0..=99) or claim name.
        #[arg(value_name = "SLOT|NAME")]
        which: String,
        /// The XDP object file with the new program.
        object: PathBuf,
        /// The program in the object, if it has several XDP programs.
        #[arg(long, value_name = "NAME")]
        program: Option<String>,
        /// Size (max_entries) of a map the object leaves for its loader to
        /// size (declared with max_entries 0), e.g. `rx_cnt=64`. Repeatable.
        #[arg(long = "map-size", value_name = "NAME=N", value_parser = parse_map_size)]
        map_size: Vec<(String, u32)>,
    },
    /// Move an interface's dispatcher and its persistent claims to the
    /// state layout this slotctl uses, without a packet missing the chain:
    /// the new dispatcher is filled first and swapped in with one update of
    /// the XDP link. Held claims cannot be carried: they are listed and
    /// nothing changes, unless --interrupt-held.
    Upgrade {
        #[arg(help = IFACE_HELP)]
        iface: String,
        /// Upgrade even if held claims stop running (their holders can
        /// claim again).
        #[arg(long)]
        interrupt_held: bool,
    },
    /// Show the claims (in run order) of one interface, or of all of this
    /// network namespace's interfaces that have the dispatcher, or of every
    /// namespace's (--all-namespaces).
    Status {
        /// Network interface (default: every one with the dispatcher).
        iface: Option<String>,
        /// Every dispatcher under the state root, in any network namespace
        /// (containers' too), with its namespace: cookie, and a /run/netns
        /// name or a process inside it where one is found. Dispatchers whose
        /// interface is gone are flagged dead ('slotctl clean' frees them).
        #[arg(long, short = 'A', conflicts_with = "iface")]
        all_namespaces: bool,
        /// Print JSON: {"schema": 1, "interfaces": [...], "errors": [...]}
        /// (docs/status-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Print the persistent claims (of one interface, or of every one of
    /// this network namespace) as a declarative TOML file for 'apply'.
    /// Held claims belong to running processes and are left out (named
    /// in a comment).
    Export {
        /// Network interface (default: every one with the dispatcher).
        iface: Option<String>,
    },
    /// Make the node match declarative TOML files (as 'export' writes
    /// them): claim what is missing, replace a claim whose object changed
    /// (at its run position), re-claim one whose priority, verdicts or
    /// backend changed, release what no file names (only claims apply
    /// made, unless --prune). Idempotent: a second run changes nothing.
    #[command(
        long_about = "Make the node match declarative TOML files (as 'export' writes them).\n\n\
            Claims what is missing (attaching the dispatcher where needed), replaces a claim \
            whose object, program or object content changed at its run position (no packet \
            lost), re-claims one whose priority, proceed-on verdicts or backend changed, and \
            releases what no file names any more: only claims apply made, unless --prune. A \
            second run changes nothing. Every file and every object is checked before anything \
            changes. Prints one line per claim: claim, replace, reclaim, release, keep or leave."
    )]
    Apply {
        /// Files, or directories whose *.toml files are read (by name).
        #[arg(required = true, value_name = "FILE|DIR")]
        files: Vec<PathBuf>,
        /// Also release persistent claims apply did not make that no file names.
        #[arg(long)]
        prune: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the plan (with the new program ids) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach the dispatcher (idempotent).
    Attach {
        #[arg(help = IFACE_HELP)]
        iface: String,
        /// XDP mode.
        #[arg(long, value_enum, default_value = "auto")]
        mode: ModeArg,
        /// Default backend for claims: auto takes the first this kernel
        /// allows (freplace, then tailcall).
        #[arg(long, default_value = "auto", value_parser = parse_backend)]
        backend: BackendArg,
        /// Remove a foreign XDP program attached through netlink (named in
        /// the output). Another manager's dispatcher (libxdp's) and programs
        /// attached through a bpf_link are never removed.
        #[arg(long)]
        force: bool,
    },
    /// Detach the dispatcher and remove its state.
    Detach {
        #[arg(help = IFACE_HELP)]
        iface: String,
        /// Even while slots are claimed, or its state is damaged: the claims
        /// are dropped (named in the output).
        #[arg(long)]
        force: bool,
    },
    /// Free the state of every dispatcher, in any network namespace, whose
    /// interface is gone (deleted alone or with its namespace), with its
    /// claims: the kernel then frees its programs, maps and links. Live
    /// interfaces are not touched. Attach and claim do this in passing.
    Clean {
        /// Print JSON: {"freed": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Per-slot packets, verdicts and rates in run order; or switch the
    /// counters on or off (they are off after attach).
    #[command(after_help = STATS_HELP)]
    Stats {
        /// The interface; without one, --prometheus and --listen cover
        /// every interface of this network namespace.
        #[arg(required_unless_present_any = ["prometheus", "listen"])]
        iface: Option<String>,
        /// on or off: switch counting (instead of showing the counters).
        #[arg(value_parser = ["on", "off"], requires = "iface",
              conflicts_with_all = ["json", "watch", "prometheus", "listen", "interval"])]
        state: Option<String>,
        /// Seconds between the two samples rates are taken from.
        #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
        interval: f64,
        /// Print JSON (docs/status-json.md, "stats --json").
        #[arg(long, conflicts_with_all = ["prometheus", "listen", "watch"])]
        json: bool,
        /// Refresh in place every interval, like top, until Ctrl-C.
        #[arg(long, conflicts_with_all = ["prometheus", "listen"])]
        watch: bool,
        /// Print the Prometheus text format.
        #[arg(long, conflicts_with = "listen")]
        prometheus: bool,
        /// Serve the Prometheus text format over HTTP (GET /metrics) on
        /// ADDR (e.g. 127.0.0.1:9100; port 0 picks a free one) until
        /// Ctrl-C or SIGTERM.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Install (or remove) a replacement chain-decision program (freplace).
    Chain {
        #[arg(help = IFACE_HELP)]
        iface: String,
        /// Object with a function `int f(struct xdp_md *, __u32 slot, __u32 action)`.
        #[arg(required_unless_present = "remove")]
        object: Option<PathBuf>,
        /// The function in the object, if it has several.
        #[arg(long, value_name = "NAME")]
        program: Option<String>,
        /// Remove the installed (persistent) chain decision.
        #[arg(long, conflicts_with = "object")]
        remove: bool,
        /// Keep it only while slotctl runs.
        #[arg(long)]
        hold: bool,
    },
    /// What this kernel permits: extensions, tail calls, frags, lockdown
    /// (needs root).
    Probe {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command, argument and option says what it is.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && path != "slotctl help" {
                missing.push(path.to_string());
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "slotctl", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }

    #[test]
    fn claim_help_says_claims_are_persistent_by_default() {
        let mut cmd = Cli::command();
        let claim = cmd.find_subcommand_mut("claim").unwrap();
        let help = claim.render_long_help().to_string();
        assert!(help.contains("persistent by default"), "{help}");
        assert!(help.contains("library's default"), "{help}");
    }

    #[test]
    fn version_shows_the_state_layout() {
        let v = Cli::command().render_version();
        assert!(v.contains(&format!("state layout {LAYOUT_VERSION}")), "{v}");
    }

    #[test]
    fn help_lists_every_exit_status() {
        let help = Cli::command().render_long_help().to_string();
        for e in exit::Exit::ALL {
            assert!(
                help.contains(&format!("  {}  {}", e.code(), e.meaning())),
                "{help}"
            );
        }
    }

    #[test]
    fn negative_priorities_are_values_refused_in_one_line() {
        let e =
            Cli::try_parse_from(["slotctl", "claim", "eth0", "x.o", "--prio", "-1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            e.to_string().contains("priorities run from 0 to 1000"),
            "{e}"
        );
        assert!(Cli::try_parse_from(["slotctl", "claim", "eth0", "x.o", "--prio", "1000"]).is_ok());
        assert!(
            Cli::try_parse_from(["slotctl", "claim", "eth0", "x.o", "--prio", "1001"]).is_err()
        );
    }
}
