//! The two ways of filling a slot.
//!
//! - [`freplace`]: the slot function itself is replaced by the program,
//!   loaded as an extension (BPF_PROG_TYPE_EXT) and linked. The kernel drops
//!   the link, and the slot's own body comes back, when the last fd of an
//!   unpinned link closes.
//! - [`tailcall`]: the program goes into entry 0 of the slot's own
//!   single-entry program array, which the slot body tail-calls. The kernel
//!   empties a program array when its last user reference (fd or pin) goes,
//!   so a held claim, whose holder owns the only fd, ends with its process.
pub mod freplace;
pub mod tailcall;

use serde::Serialize;

/// Which backend fills (or should fill) a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// freplace where the kernel allows extensions, otherwise tail call.
    #[default]
    Auto,
    Freplace,
    #[serde(rename = "tailcall")]
    TailCall,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Freplace => "freplace",
            Backend::TailCall => "tailcall",
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Self {
        match raw {
            dispatcher_common::BACKEND_FREPLACE => Backend::Freplace,
            dispatcher_common::BACKEND_TAILCALL => Backend::TailCall,
            _ => Backend::Auto,
        }
    }

    pub(crate) fn raw(self) -> u32 {
        match self {
            Backend::Freplace => dispatcher_common::BACKEND_FREPLACE,
            Backend::TailCall => dispatcher_common::BACKEND_TAILCALL,
            Backend::Auto => dispatcher_common::BACKEND_NONE,
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "freplace" => Ok(Backend::Freplace),
            "tailcall" | "tail-call" => Ok(Backend::TailCall),
            _ => Err(format!(
                "unknown backend {s:?}: use auto, freplace or tailcall"
            )),
        }
    }
}
