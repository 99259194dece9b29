//! Named crash points: the places, between two steps of an operation, where
//! a test can have this process killed by SIGKILL (as the OOM killer, an
//! operator or a container runtime would) and then check that the next
//! operation finds a whole state.
//!
//! They exist only with the cargo feature `failpoints`, which the
//! integration tests turn on; without it a point is an empty inline
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
    // claim: mask, load, record, fill, activate (both backends)
    "claim::mask",
    "claim::loaded",
    "claim::recorded",
    "tailcall::filled",
    "freplace::linked",
    "claim::filled",
    "claim::active",
    // a new run order, for a claim's activation and for a retirement's
    // deactivation: the table packets do not read written, then switched to
    "activate::staged",
    "activate::flipped",
    "deactivate::staged",
    "deactivate::flipped",
    // retiring a claim (release, the holder's release, collection):
    // inactive, emptied, free
    "retire::inactive",
    "tailcall::cleared",
    "retire::emptied",
    // replacing a claim's program: the new program filled into a free slot
    // (the claim's points above), then one new run order with the new slot
    // at the old one's position, staged and switched to; then the old slot
    // retired (the retirement's points)
    "replace::filled",
    "replace::staged",
    "replace::flipped",
    "replace::switched",
    // another holder's claim released by force
    "release::forced",
    // apply: after each step it takes (a claim, replace, re-claim or
    // release, each with its own points above)
    "apply::stepped",
    // upgrade: a new dispatcher built and filled beside the old one, the
    // link pinned beside it, the link switched to it, the directories
    // exchanged
    "upgrade::building",
    "upgrade::filled",
    "upgrade::linked",
    "upgrade::switched",
    "upgrade::exchanged",
    // chain decision, detach
    "chain::linked",
    "detach::unlinked",
];

/// Kills this process with SIGKILL if `FAILPOINTS` arms `name`.
#[cfg(all(feature = "failpoints", not(test)))]
pub(crate) fn point(name: &'static str) -> crate::Result<()> {
    static ARMED: std::sync::Once = std::sync::Once::new();
    debug_assert!(POINTS.contains(&name), "crash point {name} is not listed");
    // The scenario reads FAILPOINTS once and stays for the process's life.
    ARMED.call_once(|| std::mem::forget(fail::FailScenario::setup()));
    if fail::eval(name, |_| ()).is_some() {
        crate::sys::kill_self();
    }
    Ok(())
}

/// Without the `failpoints` feature a crash point is nothing.
#[cfg(all(not(feature = "failpoints"), not(test)))]
#[inline(always)]
pub(crate) fn point(_name: &'static str) -> crate::Result<()> {
    Ok(())
}

/// In unit tests a crash point records that it was passed and, if armed,
/// "kills" the operation: it fails, and so does every kernel operation of
/// the fake after it (see `fake.rs`), as if the process had died there.
#[cfg(test)]
pub(crate) fn point(name: &'static str) -> crate::Result<()> {
    assert!(POINTS.contains(&name), "crash point {name} is not listed");
    sim::PASSED.with(|p| p.borrow_mut().push(name));
    if sim::ARMED.with(|a| a.get()) == Some(name) {
        sim::CRASHED.with(|c| c.set(true));
    }
    if sim::crashed() {
        return Err(sim::dead());
    }
    Ok(())
}

/// The unit tests' crash simulation, per thread.
#[cfg(test)]
pub(crate) mod sim {
    use std::cell::{Cell, RefCell};

    thread_local! {
        pub(super) static ARMED: Cell<Option<&'static str>> = const { Cell::new(None) };
        pub(super) static CRASHED: Cell<bool> = const { Cell::new(false) };
        pub(super) static PASSED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }

    /// Arms `point` (or nothing), forgets the points passed and revives the
    /// simulated process.
    pub fn arm(point: Option<&'static str>) {
        ARMED.with(|a| a.set(point));
        CRASHED.with(|c| c.set(false));
        PASSED.with(|p| p.borrow_mut().clear());
    }

    /// Has the armed point fired?
    pub fn crashed() -> bool {
        CRASHED.with(|c| c.get())
    }

    /// The points passed since [`arm`].
    pub fn passed() -> Vec<&'static str> {
        PASSED.with(|p| p.borrow().clone())
    }

    /// The error every operation of a dead process returns.
    pub fn dead() -> crate::Error {
        crate::Error::Io {
            what: "a simulated crash".into(),
            source: std::io::Error::other("the process died at a crash point"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::POINTS;

    /// The list is the calls: each listed point is called in the source
    /// and no unlisted one is.
    #[test]
    fn every_point_is_listed_and_called() {
        let sources = [
            include_str!("apply.rs"),
            include_str!("attach.rs"),
            include_str!("dispatcher.rs"),
            include_str!("claim.rs"),
            include_str!("release.rs"),
            include_str!("replace.rs"),
            include_str!("collect.rs"),
            include_str!("objects.rs"),
            include_str!("chain.rs"),
            include_str!("upgrade.rs"),
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
