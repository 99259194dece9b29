//! What to do about an error: one clause per library error, in slotctl's
//! terms (its commands and flags). The library says what failed and why;
//! this says what the person at the terminal can do next.
use slots_runtime::{Backend, Error, ExtensionRefusal};

/// The error's causes and advice, on one line.
pub fn line(e: &anyhow::Error) -> String {
    // `what failed: cause: cause`, each cause once (some causes repeat
    // their own cause in their message).
    let mut text = String::new();
    for cause in e.chain() {
        let m = cause.to_string();
        if !text.contains(&m) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&m);
        }
    }
    if let Some(advice) = e.downcast_ref::<Error>().and_then(advice) {
        text.push_str("; ");
        text.push_str(&advice);
    }
    text
}

/// clap's usage error on one line: its message (a list it introduces
/// joined in), its tips, and the usage it shows, without the blank lines
/// and the pointer to `--help`.
pub fn usage_line(rendered: &str, usage: Option<&str>, help: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut usage = usage.map(|u| u.trim().trim_start_matches("Usage: ").to_string());
    for l in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = l.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if l.starts_with("For more information") {
            continue;
        } else if let Some(m) = l.strip_prefix("error: ") {
            parts.push(m.to_string());
        } else if let Some(last) = parts.last_mut().filter(|p| p.ends_with(':')) {
            last.push(' ');
            last.push_str(l);
        } else if let Some(last) = parts.last_mut().filter(|p| p.ends_with('>')) {
            // A list item after the first.
            last.push_str(", ");
            last.push_str(l);
        } else {
            parts.push(l.to_string());
        }
    }
    let mut line = parts.join("; ");
    match usage {
        Some(u) => line.push_str(&format!("; usage: {}", u.lines().next().unwrap_or(""))),
        None => line.push_str(&format!("; see '{help}'")),
    }
    line
}

/// The advice for one library error, if there is any to give.
pub fn advice(e: &Error) -> Option<String> {
    Some(match e {
        Error::NotPrivileged { .. } if is_root() => {
            "grant it (the container's or the service's capability set; setpriv and capsh show it)".into()
        }
        Error::NotPrivileged { .. } => "run it as root (e.g. with sudo)".into(),
        Error::BpffsNotMounted { path } => format!(
            "mount it with 'mount -t bpf bpf {}' or pass another --bpffs root",
            path.display()
        ),
        Error::BadDesired { .. } => "fix the file and run apply again; nothing was changed".into(),
        Error::NoSuchInterface { .. } => {
            "check 'ip link' (or enter the right namespace with nsenter --net=...)".into()
        }
        Error::NotAttached { iface } => {
            format!("run 'slotctl attach {iface}' (claim attaches it too)")
        }
        Error::ForeignProgram { iface, .. } => format!(
            "detach it first ('xdp-loader unload {iface} --all' if xdp-loader loaded it, else 'ip link set dev {iface} xdp off'), or replace it with 'slotctl attach {iface} --force'"
        ),
        Error::ForeignLink { .. } => "stop or ask the program that attached it".into(),
        Error::ForeignDispatcher { iface, .. } => format!(
            "remove it with 'xdp-loader unload {iface} --all' (this unloads every program on it), then try again"
        ),
        Error::CorruptState {
            iface, path, pin, ..
        } => {
            let inspect = match pin {
                Some(p) if *p == slots_runtime::pin::DISPATCHER || *p == slots_runtime::pin::LINK => {
                    format!("'bpftool prog show pinned {}'", path.join(p).display())
                }
                Some(p) => format!("'bpftool map dump pinned {}'", path.join(p).display()),
                None => format!("'ls -l {}'", path.display()),
            };
            format!(
                "inspect it with {inspect}, and reset it with 'slotctl detach {iface} --force' (this drops its claims)"
            )
        }
        Error::BadObject { .. } => {
            "pass an ELF object built for BPF (clang -target bpf, or aya-ebpf)".into()
        }
        Error::NotBpf { .. } => "build it for BPF (clang -target bpf, or aya-ebpf)".into(),
        Error::NoXdpProgram { .. } => {
            "build it with SEC(\"xdp\") in C or #[xdp] with aya-ebpf".into()
        }
        Error::NoSuchProgram { .. } | Error::AmbiguousProgram { .. } => {
            "pick one with --program".into()
        }
        Error::MapSizeNeeded { maps, .. } => format!(
            "give {} a size: {}",
            if maps.len() == 1 { "it" } else { "each" },
            maps.iter()
                .map(|m| format!("--map-size {m}=N"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Error::NoSuchMap { .. } => "give --map-size one of those names".into(),
        Error::VerifierRejected { .. } => {
            "fix the program (the full verifier log is shown with RUST_LOG=debug)".into()
        }
        Error::ExtensionRefused { reason, .. } => match reason {
            ExtensionRefusal::KernelRefusesExtensions => {
                "this kernel refuses extensions: use --backend tailcall (or auto)".into()
            }
            ExtensionRefusal::NoBtf => {
                "build it with BTF (clang -g), or use --backend tailcall".into()
            }
            ExtensionRefusal::NotPacketChanging { .. } => {
                "the slot functions are packet-changing, so the object may be built for another target".into()
            }
            _ => "check the program's signature: an XDP program taking struct xdp_md *".into(),
        },
        Error::TailCallRefused { .. } => {
            "use the freplace backend, or a program built without xdp.frags".into()
        }
        Error::PriorityOutOfRange { .. } => "pass --prio between 0 and 1000".into(),
        Error::SlotsFull { iface, .. } => {
            format!("release one first ('slotctl status {iface}')")
        }
        Error::BackendFull { backend, .. } => match backend {
            Backend::TailCall => "the kernel allows 33 tail calls per packet: release one, or use the freplace backend on a kernel that allows it".into(),
            _ => "release one first".into(),
        },
        Error::NameTaken { .. } => "pick another --name".into(),
        Error::BadName { .. } => "pass another --name".into(),
        Error::MapPinDirNotBpffs { .. } => {
            "pass a directory under /sys/fs/bpf (or another bpffs mount)".into()
        }
        Error::NotHeld { iface, .. }
        | Error::NoSuchClaim { iface, .. }
        | Error::NothingToReplace { iface, .. } => {
            format!("'slotctl status {iface}' lists the claims")
        }
        Error::HeldByOther { .. } => "use --force to release it anyway".into(),
        Error::ReplaceHeldByOther { .. } => {
            "replace it from the holding process (Claim::replace), or release it and claim the new program".into()
        }
        Error::NoSpareSlot { iface, .. } => {
            format!("a replace needs one free slot besides the old one: release one first ('slotctl status {iface}')")
        }
        Error::SlotsInUse { .. } => "release them first, or detach with --force".into(),
        Error::BackendUnsupported { backend, .. } => match backend {
            Backend::Freplace => "use --backend tailcall (or auto)".into(),
            _ => "run 'slotctl probe' to see what this kernel allows".into(),
        },
        Error::ChainInstalled { iface, .. } => {
            format!("remove it first with 'slotctl chain {iface} --remove'")
        }
        Error::ChainNeedsFreplace { .. } => {
            "the default chain rule (--proceed-on per claim) works on every kernel".into()
        }
        Error::OldLayout { iface, current, .. } => format!(
            "run 'slotctl upgrade {iface}' to move it and its persistent claims to layout {current}"
        ),
        Error::NewerLayout { iface, .. } => format!(
            "use a newer slotctl (or 'slotctl detach --force {iface}' to drop its claims)"
        ),
        Error::UpgradeInterrupts { iface, .. } => format!(
            "their holders cannot hand them over: stop them first, or run 'slotctl upgrade {iface} --interrupt-held' (they stop running; their holders can claim again)"
        ),
        Error::UpgradeUnsupported { iface, .. } => format!(
            "remove it first ('slotctl chain {iface} --remove'), upgrade, then install it again"
        ),
        Error::NoXdpLink { .. } => "upgrade the kernel".into(),
        _ => return None,
    })
}

/// Is slotctl running as root (its effective uid, which owns
/// /proc/self)? Root that lacks a capability is not helped by sudo.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
