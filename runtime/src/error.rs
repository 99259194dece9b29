//! The library's errors: each says what failed and why, and keeps the
//! underlying cause as its [`source`](std::error::Error::source). What to do
//! about it is the caller's to say (slotctl adds one line of advice per
//! variant); the variants carry what that advice needs.
use std::path::PathBuf;

use thiserror::Error;

use crate::{backend::Backend, probe::ProbeError};

/// Result with the runtime's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed underlying cause (an aya error, an I/O error).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the kernel refused a program as an extension of a slot function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtensionRefusal {
    /// EPERM with an empty verifier log: this kernel refuses every
    /// extension (lockdown, or a kernel built without it).
    KernelRefusesExtensions,
    /// The object has no BTF, which an extension needs (the kernel
    /// checks the program's signature against the slot function's).
    NoBtf,
    /// The program changes packet data and its target does not.
    NotPacketChanging {
        /// The verifier's reason.
        summary: String,
    },
    /// Anything else, usually the program's signature.
    Other {
        /// The verifier's reason.
        summary: String,
    },
}

impl std::fmt::Display for ExtensionRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KernelRefusesExtensions => f.write_str("EPERM with an empty verifier log"),
            Self::NoBtf => f.write_str("the object has no BTF, which an extension needs"),
            Self::NotPacketChanging { summary } | Self::Other { summary } => f.write_str(summary),
        }
    }
}

/// Everything that can go wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The process lacks capabilities the operation needs.
    #[error("permission denied: {what} needs {missing} (have: {have})")]
    NotPrivileged {
        /// What was being done.
        what: String,
        /// The capabilities it lacks, e.g. `CAP_SYS_ADMIN`.
        missing: String,
        /// Those of CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN it has, or
        /// `none of them`.
        have: String,
    },

    /// The state root is not on a bpffs mount.
    #[error("bpffs is not mounted at {path}")]
    BpffsNotMounted {
        /// The nearest existing directory of the state root.
        path: PathBuf,
    },

    /// No interface of that name in the caller's network namespace.
    #[error("interface {name} does not exist in this network namespace")]
    NoSuchInterface {
        /// The name asked for.
        name: String,
    },

    /// The interface has no dispatcher of ours.
    #[error("the dispatcher is not attached to {iface}")]
    NotAttached {
        /// The interface.
        iface: String,
    },

    /// Another XDP program sits on the interface; it was left alone.
    #[error("{iface} already runs a foreign XDP program ({program}, id {id}); it was left alone")]
    ForeignProgram {
        /// The interface.
        iface: String,
        /// The program's name.
        program: String,
        /// Its kernel id.
        id: u32,
    },

    /// A foreign XDP program attached through a bpf_link: only its owner
    /// can remove it.
    #[error(
        "{iface} has a foreign XDP program ({program}, id {id}) attached through a bpf_link, which only its owner can remove"
    )]
    ForeignLink {
        /// The interface.
        iface: String,
        /// The program's name.
        program: String,
        /// Its kernel id.
        id: u32,
    },

    /// Another manager's XDP dispatcher (libxdp's) sits on the interface
    /// with its programs; it was left alone, even with `force`.
    #[error(
        "{iface} runs {manager}'s dispatcher ({program}, id {id}) with {}; it is not ours to remove, so it was left alone",
        programs_phrase(programs)
    )]
    ForeignDispatcher {
        /// The interface.
        iface: String,
        /// Who manages it (`libxdp`).
        manager: String,
        /// The dispatcher program's name.
        program: String,
        /// Its kernel id.
        id: u32,
        /// The programs it runs (`name (id N)`), as far as its pins tell.
        programs: Vec<String>,
    },

    /// The interface's state directory is not ours or is damaged; nothing
    /// was changed.
    #[error("the state of {iface} in {} is not ours or is damaged ({why}); nothing was changed", path.display())]
    CorruptState {
        /// The interface.
        iface: String,
        /// Its state directory.
        path: PathBuf,
        /// The pin in it whose content is damaged, if it exists (see
        /// [`crate::pin`]); `None` when a pin is missing.
        pin: Option<&'static str>,
        /// What is wrong with it.
        why: String,
    },

    /// The interface's state has an older layout than this runtime writes:
    /// status reads it, changes need `upgrade` first.
    #[error(
        "{iface}'s dispatcher uses state layout {found}, older than this runtime's layout {current}; nothing was changed"
    )]
    OldLayout {
        /// The interface.
        iface: String,
        /// Its state's layout.
        found: u32,
        /// This runtime's ([`crate::LAYOUT_VERSION`]).
        current: u32,
    },

    /// The interface's state has a layout newer than this runtime knows.
    #[error(
        "{iface}'s dispatcher uses state layout {found}; this runtime knows layouts up to {known}; nothing was changed"
    )]
    NewerLayout {
        /// The interface.
        iface: String,
        /// Its state's layout.
        found: u32,
        /// The newest this runtime knows ([`crate::LAYOUT_VERSION`]).
        known: u32,
    },

    /// An upgrade would stop held claims (their programs live with their
    /// holders' fds, which no other process can carry to the new
    /// dispatcher); nothing was changed.
    #[error("upgrading {iface} would interrupt {} held claim(s): {}; nothing was changed", held.len(), held.join(", "))]
    UpgradeInterrupts {
        /// The interface.
        iface: String,
        /// The held claims, `name (slot N, held by pid P)`.
        held: Vec<String>,
    },

    /// The interface's state has what an upgrade cannot carry (a custom
    /// chain decision); nothing was changed.
    #[error("cannot upgrade {iface}: {why}; nothing was changed")]
    UpgradeUnsupported {
        /// The interface.
        iface: String,
        /// What it cannot carry.
        why: String,
    },

    /// The object file cannot be read or parsed as a BPF object.
    #[error("cannot read {path} as a BPF object")]
    BadObject {
        /// The object's path or label.
        path: String,
        /// Why.
        #[source]
        source: Cause,
    },

    /// A declarative claims file (`apply`) is wrong: nothing was changed.
    #[error("{file}:{line}: {why}")]
    BadDesired {
        /// The file.
        file: String,
        /// The line (of the claim, or of the syntax error).
        line: usize,
        /// What is wrong.
        why: String,
    },

    /// An ELF file built for another machine than BPF.
    #[error("{path} is an ELF file for {machine}, not for BPF")]
    NotBpf {
        /// The object's path or label.
        path: String,
        /// The machine it was built for.
        machine: String,
    },

    /// The object holds no XDP program.
    #[error("{path} holds no XDP program (found: {found})")]
    NoXdpProgram {
        /// The object's path or label.
        path: String,
        /// The programs it does hold.
        found: String,
    },

    /// The object has no program of the requested name.
    #[error("{path} has no program named {name} (XDP programs in it: {available})")]
    NoSuchProgram {
        /// The object's path or label.
        path: String,
        /// The name asked for.
        name: String,
        /// The XDP programs it has.
        available: String,
    },

    /// The object has several XDP programs and none was named.
    #[error("{path} has several XDP programs ({available})")]
    AmbiguousProgram {
        /// The object's path or label.
        path: String,
        /// Its XDP programs.
        available: String,
    },

    /// The named program is not an XDP program.
    #[error(
        "program {name} in {path} is a {kind} program, not XDP; only XDP programs can fill a slot"
    )]
    WrongProgramType {
        /// The object's path or label.
        path: String,
        /// The program.
        name: String,
        /// Its program type.
        kind: String,
    },

    /// Maps the program uses are declared with `max_entries` 0: the
    /// object's own loader sizes them at start, and nothing gave them a
    /// size ([`ProgramSource::map_sizes`](crate::ProgramSource::map_sizes)).
    #[error(
        "{program} in {path} uses {} with max_entries 0, a size its own loader sets at start",
        map_list(maps)
    )]
    MapSizeNeeded {
        /// The object's path or label.
        path: String,
        /// The program.
        program: String,
        /// The maps without a size.
        maps: Vec<String>,
    },

    /// A size was given for a map the object does not have.
    #[error("{path} has no map named {name} (maps in it: {maps})")]
    NoSuchMap {
        /// The object's path or label.
        path: String,
        /// The name given.
        name: String,
        /// The maps it has.
        maps: String,
    },

    /// The verifier refused the program.
    #[error("the kernel's verifier rejected {name}: {summary}")]
    VerifierRejected {
        /// The program.
        name: String,
        /// The verifier's reason (the log's last lines).
        summary: String,
        /// The whole verifier log.
        log: String,
    },

    /// The kernel refused the program as an extension of a slot function.
    #[error("the kernel refused to load {name} as an extension of {target}: {reason}")]
    ExtensionRefused {
        /// The program.
        name: String,
        /// The function it was to replace.
        target: String,
        /// Why.
        reason: ExtensionRefusal,
    },

    /// The kernel refused the program as a tail-call target of the
    /// dispatcher (an `xdp.frags` program behind a non-frags dispatcher).
    #[error(
        "the kernel refused {name} as a tail-call target of the dispatcher in slot {slot}: an xdp.frags program cannot follow a non-frags dispatcher"
    )]
    TailCallRefused {
        /// The program.
        name: String,
        /// The slot.
        slot: usize,
        /// The kernel's answer.
        #[source]
        source: Cause,
    },

    /// A priority above [`PRIO_MAX`](crate::PRIO_MAX).
    #[error("priority {prio} is out of range 0..={max} (lower runs first)")]
    PriorityOutOfRange {
        /// The priority asked for.
        prio: u32,
        /// The highest allowed.
        max: u32,
    },

    /// Every slot is claimed.
    #[error("all {count} slots of {iface} are taken")]
    SlotsFull {
        /// The interface.
        iface: String,
        /// The number of slots.
        count: usize,
    },

    /// The backend cannot run another claim (the tail-call backend: the
    /// kernel's tail calls per packet).
    #[error("{iface} already has {active} claims on the {backend} backend, the most it can run")]
    BackendFull {
        /// The interface.
        iface: String,
        /// The backend.
        backend: Backend,
        /// Its claims on the interface.
        active: usize,
        /// Its capacity.
        max: usize,
    },

    /// The claim name is used by another claim of the interface.
    #[error("the name {name} is already used by slot {slot} on {iface}")]
    NameTaken {
        /// The interface.
        iface: String,
        /// The name.
        name: String,
        /// The slot that has it.
        slot: usize,
    },

    /// A claim name that cannot be stored.
    #[error("name {name:?} is not valid: use 1..={max} bytes of letters, digits, '-', '_' or '.'")]
    BadName {
        /// The name.
        name: String,
        /// The longest allowed.
        max: usize,
    },

    /// A map pin directory that is not on bpffs.
    #[error("the map pin directory {dir} is not on bpffs: maps can only be pinned there")]
    MapPinDirNotBpffs {
        /// The directory.
        dir: String,
    },

    /// The slot has no claim.
    #[error("slot {slot} on {iface} is not held by anyone: nothing to release")]
    NotHeld {
        /// The interface.
        iface: String,
        /// The slot.
        slot: usize,
    },

    /// No claim of that name.
    #[error("no claim named {name} on {iface}")]
    NoSuchClaim {
        /// The interface.
        iface: String,
        /// The name.
        name: String,
    },

    /// Another live process holds the claim.
    #[error(
        "slot {slot} on {iface} is held by process {pid}, not by this one: it is released when that process exits"
    )]
    HeldByOther {
        /// The interface.
        iface: String,
        /// The slot.
        slot: usize,
        /// The holder's pid.
        pid: u32,
    },

    /// A replace of another live process's held claim: its program lives
    /// with that process's fds, which no other process can hand over.
    #[error(
        "slot {slot} on {iface} is held by process {pid}: only its holder can replace a held claim"
    )]
    ReplaceHeldByOther {
        /// The interface.
        iface: String,
        /// The slot.
        slot: usize,
        /// The holder's pid.
        pid: u32,
    },

    /// A replace of a slot that holds no running claim (free, draining, or
    /// no longer the handle's claim).
    #[error(
        "slot {slot} on {iface} has no running claim to replace (it is free or draining, or no longer the handle's claim)"
    )]
    NothingToReplace {
        /// The interface.
        iface: String,
        /// The slot.
        slot: usize,
    },

    /// A replace found no free slot its backend can fill for the new
    /// program (the old one keeps its slot until the switch).
    #[error("no free slot on {iface} that the {backend} backend can fill for the new program")]
    NoSpareSlot {
        /// The interface.
        iface: String,
        /// The claim's backend.
        backend: Backend,
    },

    /// Detach refused: slots are claimed.
    #[error("{iface} still has {count} claimed slot(s)")]
    SlotsInUse {
        /// The interface.
        iface: String,
        /// Claimed slots.
        count: usize,
    },

    /// A slot number past the last slot.
    #[error("slot {slot} does not exist: slots are 0..={last}")]
    NoSuchSlot {
        /// The slot asked for.
        slot: usize,
        /// The last slot.
        last: usize,
    },

    /// A backend name this version does not know.
    #[error("unknown backend {name:?}: the backends are freplace and tailcall")]
    UnknownBackend {
        /// The name given.
        name: String,
    },

    /// The kernel cannot use the backend asked for.
    #[error("this kernel cannot use the {backend} backend")]
    BackendUnsupported {
        /// The backend.
        backend: Backend,
        /// What the probe found.
        #[source]
        source: ProbeError,
    },

    /// A custom chain decision needs extensions, which this kernel refuses.
    #[error("a custom chain decision needs the freplace backend, which this kernel refuses")]
    ChainNeedsFreplace {
        /// What the probe found.
        #[source]
        source: ProbeError,
    },

    /// A chain decision is installed already.
    #[error("{iface} already has a custom chain decision (program {prog_id})")]
    ChainInstalled {
        /// The interface.
        iface: String,
        /// Its program id.
        prog_id: u32,
    },

    /// No custom chain decision to remove.
    #[error("the custom chain decision of {iface} is not installed")]
    NoCustomChain {
        /// The interface.
        iface: String,
    },

    /// The kernel gave no bpf_link for the XDP attach (kernels before 5.9).
    #[error("attaching to {iface} gave no bpf_link; kernel 5.9 or newer is needed")]
    NoXdpLink {
        /// The interface.
        iface: String,
        /// The kernel's answer.
        #[source]
        source: Cause,
    },

    /// A file system operation failed.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A BPF operation failed.
    #[error("{what} failed")]
    Kernel {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Cause,
    },
}

/// "map a" or "maps a, b".
fn map_list(maps: &[String]) -> String {
    match maps {
        [one] => format!("map {one}"),
        many => format!("maps {}", many.join(", ")),
    }
}

/// The class of an [`Error`](enum@Error): what a caller (a script, through
/// slotctl's exit status) may act on without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request or the object is wrong: fix the input.
    BadInput,
    /// The interface, the dispatcher on it, the claim or the slot asked for
    /// is not there.
    NotFound,
    /// The process lacks the privileges.
    Permission,
    /// Something else is in the way: another program, claim or name, a
    /// full dispatcher.
    Conflict,
    /// The kernel refused: the verifier, a program type, a backend.
    KernelRefused,
    /// The interface's state is damaged or not ours.
    Damaged,
    /// Anything else: the environment (bpffs), file system errors.
    Other,
}

impl Error {
    /// The error's class. Every variant is in one arm: a new variant joins
    /// the arm of its class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadObject { .. }
            | Self::BadDesired { .. }
            | Self::NoXdpProgram { .. }
            | Self::NoSuchProgram { .. }
            | Self::AmbiguousProgram { .. }
            | Self::WrongProgramType { .. }
            | Self::PriorityOutOfRange { .. }
            | Self::BadName { .. }
            | Self::MapPinDirNotBpffs { .. }
            | Self::NoSuchSlot { .. }
            | Self::UnknownBackend { .. }
            | Self::NotBpf { .. }
            | Self::MapSizeNeeded { .. }
            | Self::NoSuchMap { .. } => ErrorKind::BadInput,
            Self::NoSuchInterface { .. }
            | Self::NotAttached { .. }
            | Self::NotHeld { .. }
            | Self::NoSuchClaim { .. }
            | Self::NothingToReplace { .. }
            | Self::NoCustomChain { .. } => ErrorKind::NotFound,
            Self::NotPrivileged { .. } => ErrorKind::Permission,
            Self::ForeignProgram { .. }
            | Self::ForeignLink { .. }
            | Self::ForeignDispatcher { .. }
            | Self::SlotsFull { .. }
            | Self::BackendFull { .. }
            | Self::NameTaken { .. }
            | Self::HeldByOther { .. }
            | Self::ReplaceHeldByOther { .. }
            | Self::NoSpareSlot { .. }
            | Self::SlotsInUse { .. }
            | Self::ChainInstalled { .. }
            | Self::OldLayout { .. }
            | Self::NewerLayout { .. }
            | Self::UpgradeInterrupts { .. }
            | Self::UpgradeUnsupported { .. } => ErrorKind::Conflict,
            Self::VerifierRejected { .. }
            | Self::ExtensionRefused { .. }
            | Self::TailCallRefused { .. }
            | Self::BackendUnsupported { .. }
            | Self::ChainNeedsFreplace { .. }
            | Self::NoXdpLink { .. }
            | Self::Kernel { .. } => ErrorKind::KernelRefused,
            Self::CorruptState { .. } => ErrorKind::Damaged,
            Self::BpffsNotMounted { .. } | Self::Io { .. } => ErrorKind::Other,
        }
    }

    /// A failed kernel operation (or a privilege error when the cause is
    /// EPERM/EACCES and the process is unprivileged).
    pub(crate) fn kernel(
        what: impl Into<String>,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let what = what.into();
        if is_permission(&err) && !crate::sys::is_privileged() {
            return Self::not_privileged(what, crate::privilege::Access::Manage);
        }
        Self::Kernel {
            what,
            source: Box::new(err),
        }
    }

    /// A failed file system operation (or a privilege error, as above).
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        let what = what.into();
        if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            && !crate::sys::is_privileged()
        {
            return Self::not_privileged(what, crate::privilege::Access::Manage);
        }
        Self::Io { what, source }
    }

    /// [`Error::NotPrivileged`] for `what`, naming what this process lacks
    /// of what managing dispatchers needs (CAP_BPF, CAP_NET_ADMIN and
    /// CAP_SYS_ADMIN).
    pub fn lacking_privileges(what: impl Into<String>) -> Self {
        Self::not_privileged(what, crate::privilege::Access::Manage)
    }

    pub(crate) fn not_privileged(
        what: impl Into<String>,
        access: crate::privilege::Access,
    ) -> Self {
        let (missing, have) = crate::privilege::missing(access);
        Self::NotPrivileged {
            what: what.into(),
            missing: if missing.is_empty() {
                // The kernel refused though the capabilities are there
                // (an LSM, a user namespace): name them all.
                crate::privilege::names(access.needs()).join(", ")
            } else {
                missing.join(", ")
            },
            have: if have.is_empty() {
                "none of them".into()
            } else {
                have.join(", ")
            },
        }
    }

    /// The OS error code at the bottom of this error's causes, if any.
    pub fn os_error(&self) -> Option<i32> {
        os_error(self)
    }
}

/// `2 programs (a (id 7), b (id 9))`, `no programs`.
fn programs_phrase(programs: &[String]) -> String {
    match programs.len() {
        0 => "no programs".into(),
        1 => format!("1 program ({})", programs[0]),
        n => format!("{n} programs ({})", programs.join(", ")),
    }
}

/// `err: cause: cause`, on one line (causes already in a message are not
/// repeated).
pub fn chain(err: &dyn std::error::Error) -> String {
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
