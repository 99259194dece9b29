//! Which slot a priority gets.
//!
//! Slot order is run order, so slot order must agree with priority order:
//! every claim of lower priority sits in a lower slot, and equal priorities
//! run first come, first served. A new claim of priority `p` therefore goes
//! strictly after the last claim with priority <= p and strictly before the
//! first claim with priority > p. Within that gap it takes the free slot
//! closest to where `p` would sit on an empty dispatcher, so that later
//! claims of other priorities still find room on both sides.
use dispatcher_common::SLOT_COUNT;

use crate::error::Neighbour;

/// Highest accepted priority.
pub const PRIO_MAX: u32 = 1000;
/// libxdp's default priority.
pub const DEFAULT_PRIO: u32 = 50;

/// A slot that is not free. `prio` is `None` for slots that are unusable
/// but order nothing (a released claim whose holder still runs).
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub slot: usize,
    pub prio: Option<u32>,
    pub name: String,
}

impl Taken {
    fn neighbour(&self) -> Neighbour {
        Neighbour {
            slot: self.slot,
            name: self.name.clone(),
            prio: self.prio.unwrap_or(0),
        }
    }
}

/// No usable free slot between the claims a priority must run after
/// (`before`) and before (`after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoRoom {
    pub before: Option<Neighbour>,
    pub after: Option<Neighbour>,
}

/// Where priority `prio` would sit on an empty dispatcher: 100p/(p+50),
/// which puts the default (50) in the middle and leaves room on both sides
/// for any priority up to PRIO_MAX.
pub(crate) fn ideal(prio: u32) -> usize {
    let p = prio as usize;
    (SLOT_COUNT * p / (p + 50)).min(SLOT_COUNT - 1)
}

/// Picks a slot among those `usable` (the tail-call backend can only use
/// slots with a program array), or says which neighbours leave no room.
pub(crate) fn place(
    taken: &[Taken],
    prio: u32,
    usable: impl Fn(usize) -> bool,
) -> Result<usize, NoRoom> {
    let before = taken
        .iter()
        .filter(|t| t.prio.is_some_and(|p| p <= prio))
        .max_by_key(|t| t.slot);
    let after = taken
        .iter()
        .filter(|t| t.prio.is_some_and(|p| p > prio))
        .min_by_key(|t| t.slot);
    let lo = before.map_or(0, |t| t.slot + 1);
    let hi = after.map_or(SLOT_COUNT, |t| t.slot);
    let target = ideal(prio);
    (lo..hi)
        .filter(|s| usable(*s) && !taken.iter().any(|t| t.slot == *s))
        .min_by_key(|s| (s.abs_diff(target), *s))
        .ok_or_else(|| NoRoom {
            before: before.map(Taken::neighbour),
            after: after.map(Taken::neighbour),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: usize) -> bool {
        true
    }

    #[test]
    fn tail_call_claims_only_use_slots_with_arrays() {
        let s = place(&[], 50, dispatcher_common::has_prog_array).unwrap();
        assert!(dispatcher_common::has_prog_array(s));
        assert_eq!(s, 50);
        let s = place(&[], 70, dispatcher_common::has_prog_array).unwrap(); // ideal 58
        assert_eq!(s, 57);
    }

    fn t(slot: usize, prio: u32) -> Taken {
        Taken {
            slot,
            prio: Some(prio),
            name: format!("p{prio}"),
        }
    }

    #[test]
    fn empty_dispatcher_uses_the_ideal_slot() {
        assert_eq!(place(&[], 50, any), Ok(50));
        assert_eq!(place(&[], 0, any), Ok(0));
        assert_eq!(place(&[], PRIO_MAX, any), Ok(95));
    }

    #[test]
    fn equal_priorities_run_first_come_first() {
        let a = place(&[], 20, any).unwrap();
        let b = place(&[t(a, 20)], 20, any).unwrap();
        let c = place(&[t(a, 20), t(b, 20)], 20, any).unwrap();
        assert!(a < b && b < c);
    }

    #[test]
    fn order_always_agrees_with_priority() {
        let mut taken = Vec::new();
        for prio in [50, 10, 90, 30, 70, 50, 0, 1000, 20, 40] {
            let s = place(&taken, prio, any).unwrap();
            taken.push(t(s, prio));
            let mut by_slot = taken.clone();
            by_slot.sort_by_key(|t| t.slot);
            assert!(
                by_slot.windows(2).all(|w| w[0].prio <= w[1].prio),
                "{by_slot:?}"
            );
        }
    }

    #[test]
    fn full_gap_names_the_neighbours() {
        let taken = vec![t(10, 20), t(11, 30)];
        let err = place(&taken, 25, any).unwrap_err();
        assert_eq!(err.before.map(|n| n.slot), Some(10));
        assert_eq!(err.after.map(|n| n.slot), Some(11));
    }

    #[test]
    fn unordered_taken_slots_are_skipped() {
        let taken = vec![Taken {
            slot: 50,
            prio: None,
            name: "x".into(),
        }];
        assert_eq!(place(&taken, 50, any), Ok(49));
    }
}
