//! The core's timers: allocations by the time they next need attention, earliest first.
//!
//! A sweep at a fixed interval would touch every allocation; this heap touches only those
//! whose time has come. Entries are never removed early: when an allocation is deleted or
//! its time moves, its old entry stays and is told apart when it comes due (the allocation's
//! serial number and its `scheduled` time no longer match). A time only moves earlier
//! through a new entry, and each allocation has at most one entry per such move, so the
//! heap holds a few entries per allocation; at steady state its capacity stays and pushing
//! allocates nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// (when, allocation id, allocation serial), earliest first.
#[derive(Default)]
pub(super) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl Deadlines {
    pub(super) fn push(&mut self, at: Instant, id: u32, serial: u32) {
        self.heap.push(Reverse((at, id, serial)));
    }

    /// The earliest time, if any.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next entry due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, u32, u32)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_earliest_first_and_later_ones_stay() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Deadlines::default();
        d.push(t0 + s(10), 1, 0);
        d.push(t0 + s(5), 2, 0);
        d.push(t0 + s(20), 3, 0);
        assert_eq!(d.next(), Some(t0 + s(5)));
        assert_eq!(d.pop_due(t0), None);
        assert_eq!(d.pop_due(t0 + s(10)), Some((t0 + s(5), 2, 0)));
        assert_eq!(d.pop_due(t0 + s(10)), Some((t0 + s(10), 1, 0)));
        assert_eq!(d.pop_due(t0 + s(10)), None);
        assert_eq!(d.next(), Some(t0 + s(20)));
    }
}
