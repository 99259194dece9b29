//! Which slot a claim gets.
//!
//! A slot's index says nothing about when it runs (the run tables say
//! that), so any free slot the backend can fill will do: the lowest one.
//! A claim is refused only when the backend has no room left.
use dispatcher_common::SLOT_COUNT;

/// Highest accepted priority.
pub const PRIO_MAX: u32 = 1000;
/// libxdp's default priority.
pub const DEFAULT_PRIO: u32 = 50;

/// The lowest slot that is not `taken` and that `usable` accepts (the
/// tail-call backend can only use slots with a program array).
pub(crate) fn place(
    taken: impl Fn(usize) -> bool,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    (0..SLOT_COUNT).find(|&s| usable(s) && !taken(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_usable_slot() {
        assert_eq!(place(|_| false, |_| true), Some(0));
        assert_eq!(place(|s| s < 3, |_| true), Some(3));
        let arrays = dispatcher_common::has_prog_array;
        let s = place(|s| s == 0, arrays).unwrap();
        assert!(arrays(s) && s != 0);
        assert_eq!(place(|_| true, |_| true), None);
    }
}
