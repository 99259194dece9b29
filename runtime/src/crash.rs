//! Named crash points: the places, between two steps of an operation, where
//! a test can have this process killed by SIGKILL (as the OOM killer, an
//! operator or a container runtime would) and then check that the next
//! operation finds a whole state.
//!
//! They exist only with the cargo feature `failpoints`, which the
//! integration tests turn on; without it [`point`] is an empty inline
//! function. With it, a point fires when the `FAILPOINTS` environment
//! variable of the process gives it the action `return`:
//!
//! ```text
//! FAILPOINTS='claim::recorded=return' slotctl claim vr0 prog.o
//! ```
//!
//! [`POINTS`] lists every point, in the order an operation passes them; a
//! unit test keeps it equal to the calls in the source.

/// Every crash point, by operation (docs/design.md says what each step
/// leaves behind).
pub const POINTS: &[&str] = &[
    // attach: build in a side directory, rename it into place
    "attach::building",
    "attach::linked",
    "attach::built",
    "attach::renamed",
    // claim: mask, then load and record and fill (tail call: load, record,
    // fill; freplace: load and link, then record), then activate
    "claim::mask",
    "claim::loaded",
    "claim::recorded",
    "tailcall::filled",
    "freplace::loaded",
    "freplace::linked",
    "claim::filled",
    "state::activating",
    "claim::active",
    // release of a persistent claim, and collection of a dead one
    "state::deactivating",
    "empty::inactive",
    "tailcall::cleared",
    "empty::emptied",
    // release of a held claim by its holder, and by force
    "held::inactive",
    "held::emptied",
    "release::forced",
    // collection of an extension pinned by a claim that died before its
    // record
    "collect::unlinked",
    // chain decision, detach
    "chain::linked",
    "detach::unlinked",
];

/// Kills this process with SIGKILL if `FAILPOINTS` arms `name`.
#[cfg(feature = "failpoints")]
pub(crate) fn point(name: &'static str) {
    static ARMED: std::sync::Once = std::sync::Once::new();
    debug_assert!(POINTS.contains(&name), "crash point {name} is not listed");
    // The scenario reads FAILPOINTS once and stays for the process's life.
    ARMED.call_once(|| std::mem::forget(fail::FailScenario::setup()));
    if fail::eval(name, |_| ()).is_some() {
        crate::sys::kill_self();
    }
}

/// Without the `failpoints` feature a crash point is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn point(_name: &'static str) {}

#[cfg(test)]
mod tests {
    use super::POINTS;

    /// The list is the calls: each listed point is called in the source
    /// (`claim::recorded` and `claim::filled` once per backend), and no
    /// unlisted one is.
    #[test]
    fn every_point_is_listed_and_called() {
        let sources = [
            include_str!("attach.rs"),
            include_str!("dispatcher.rs"),
            include_str!("claim.rs"),
            include_str!("state.rs"),
            include_str!("chain.rs"),
            include_str!("backend/tailcall.rs"),
            include_str!("backend/freplace.rs"),
        ];
        let mut sorted = Vec::new();
        for src in sources {
            for piece in src.split("crash::point(\"").skip(1) {
                sorted.push(piece.split('"').next().unwrap().to_string());
            }
        }
        sorted.sort();
        sorted.dedup();
        let mut listed: Vec<String> = POINTS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(sorted, listed);
    }
}
