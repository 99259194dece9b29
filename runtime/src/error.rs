//! The library's errors: each says what failed, why, and what to do.
use std::path::PathBuf;

use thiserror::Error;

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, worded for the person at the terminal.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "permission denied: {what} needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN); run it with sudo"
    )]
    NotPrivileged { what: String },

    #[error(
        "bpffs is not mounted at {path}: mount it with 'mount -t bpf bpf {path}' or pass another --bpffs root"
    )]
    BpffsNotMounted { path: PathBuf },

    #[error(
        "interface {name} does not exist in this network namespace: check 'ip link' (or enter the right namespace with nsenter --net=...)"
    )]
    NoSuchInterface { name: String },

    #[error(
        "the dispatcher is not attached to {iface}: run 'slotctl attach {iface}' (claim attaches it too)"
    )]
    NotAttached { iface: String },

    #[error(
        "{iface} already runs a foreign XDP program ({program}, id {id}); it was left alone: detach it first, or attach with --force to replace it"
    )]
    ForeignProgram {
        iface: String,
        program: String,
        id: u32,
    },

    #[error(
        "{iface} has a foreign XDP program ({program}, id {id}) attached through a bpf_link, which cannot be replaced from here: remove that link's owner first"
    )]
    ForeignLink {
        iface: String,
        program: String,
        id: u32,
    },

    #[error(
        "the state of {iface} in {path} is not ours or is damaged ({why}); nothing was changed: inspect it with 'bpftool map dump pinned {path}/slots', and reset it with 'slotctl detach {iface} --force'"
    )]
    CorruptState {
        iface: String,
        path: PathBuf,
        why: String,
    },

    #[error(
        "cannot read {path}: {why}; pass an ELF object built for BPF (clang -target bpf, or aya-ebpf)"
    )]
    BadObject { path: String, why: String },

    #[error(
        "{path} holds no XDP program (found: {found}); build it with SEC(\"xdp\") in C or #[xdp] with aya-ebpf"
    )]
    NoXdpProgram { path: String, found: String },

    #[error(
        "{path} has no program named {name} (XDP programs in it: {available}); pick one with --program"
    )]
    NoSuchProgram {
        path: String,
        name: String,
        available: String,
    },

    #[error("{path} has several XDP programs ({available}); pick one with --program")]
    AmbiguousProgram { path: String, available: String },

    #[error(
        "program {name} in {path} is a {kind} program, not XDP; only XDP programs can fill a slot"
    )]
    WrongProgramType {
        path: String,
        name: String,
        kind: String,
    },

    #[error(
        "the kernel's verifier rejected {name}: {summary}; fix the program (full log with RUST_LOG=debug)"
    )]
    VerifierRejected {
        name: String,
        summary: String,
        log: String,
    },

    #[error("the kernel refused to load {name} as an extension of {target}: {why}; {hint}")]
    ExtensionRefused {
        name: String,
        target: String,
        why: String,
        hint: String,
    },

    #[error("priority {prio} is out of range: use 0..={max} (lower runs first)")]
    PriorityOutOfRange { prio: u32, max: u32 },

    #[error(
        "no free slot on {iface} keeps the priority order for priority {prio}: {neighbours}; pick another priority, or release a slot"
    )]
    NoSlotForPriority {
        iface: String,
        prio: u32,
        neighbours: String,
    },

    #[error("all {count} slots of {iface} are taken: release one first ('slotctl status {iface}')")]
    SlotsFull { iface: String, count: usize },

    #[error(
        "{iface} already has {active} tail-call slots and the kernel allows {max} tail calls per packet: release one, or use the freplace backend on a kernel that allows it"
    )]
    TailCallLimit {
        iface: String,
        active: usize,
        max: usize,
    },

    #[error("the name {name} is already used by slot {slot} on {iface}: pick another --name")]
    NameTaken {
        iface: String,
        name: String,
        slot: usize,
    },

    #[error("name {name:?} is not valid: use 1..={max} bytes of letters, digits, '-', '_' or '.'")]
    BadName { name: String, max: usize },

    #[error(
        "slot {slot} on {iface} is not held by anyone: nothing to release ('slotctl status {iface}' lists the claims)"
    )]
    NotHeld { iface: String, slot: usize },

    #[error("no claim named {name} on {iface}: 'slotctl status {iface}' lists the claims")]
    NoSuchClaim { iface: String, name: String },

    #[error(
        "slot {slot} on {iface} is held by process {pid}, not by you: it is released when that process exits; use --force to release it anyway"
    )]
    HeldByOther {
        iface: String,
        slot: usize,
        pid: u32,
    },

    #[error(
        "{iface} still has {count} claimed slot(s): release them first, or detach with --force"
    )]
    SlotsInUse { iface: String, count: usize },

    #[error("slot {slot} does not exist: slots are 0..{count}")]
    NoSuchSlot { slot: usize, count: usize },

    #[error(
        "this kernel does not allow freplace (BPF_PROG_TYPE_EXT) programs ({why}); use the tail-call backend (--backend tailcall, or auto)"
    )]
    FreplaceUnsupported { why: String },

    #[error("a custom chain decision needs the freplace backend: {why}")]
    ChainNeedsFreplace { why: String },

    #[error("the custom chain decision of {iface} is not installed")]
    NoCustomChain { iface: String },

    #[error("{what} failed: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} failed: {detail}")]
    Kernel { what: String, detail: String },
}

impl Error {
    /// A failed kernel operation, with aya's error chain flattened into the
    /// message (or a privilege error when the cause is EPERM/EACCES).
    pub(crate) fn kernel(what: impl Into<String>, err: impl std::error::Error + 'static) -> Self {
        let what = what.into();
        if is_permission(&err) && !crate::sys::is_privileged() {
            return Self::NotPrivileged { what };
        }
        Self::Kernel {
            what,
            detail: chain(&err),
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        let what = what.into();
        if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            && !crate::sys::is_privileged()
        {
            return Self::NotPrivileged { what };
        }
        Self::Io { what, source }
    }
}

/// `err: cause: cause`, on one line.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let m = e.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = e.source();
    }
    s
}

/// Does the error chain end in EPERM or EACCES?
pub(crate) fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    os_error(err).is_some_and(|c| c == libc::EPERM || c == libc::EACCES)
}

/// The OS error code at the bottom of an error chain, if any.
pub(crate) fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(code) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}
