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

use super::*;

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

impl Server {
    /// Expire allocations, permissions and channels whose time has come (only those:
    /// the deadlines are kept earliest first), and time out RFC 6062 peer connections.
    pub fn handle_timeout(&mut self, now: Now, relays: &mut dyn Relays) {
        while let Some((at, id, serial)) = self.deadlines.pop_due(now.mono) {
            let Some(a) = self
                .alloc_mut(id)
                .filter(|a| a.serial == serial && a.scheduled == at)
            else {
                continue; // gone, or rescheduled to an earlier time since
            };
            if a.expires <= now.mono {
                self.stats.allocations_expired += 1;
                self.delete(id, DeleteReason::Expired, now.mono, relays);
                continue;
            }
            // Kernel routes of what expires go first (their last counters are read).
            self.offload_sync(id, now.mono, None, relays);
            let Some(a) = self.alloc_mut(id) else {
                continue;
            };
            a.perms.retain(|p| p.expires > now.mono);
            a.channels.retain(|c| c.expires > now.mono);
            let next = a.next_deadline();
            a.scheduled = next;
            self.deadlines.push(next, id, serial);
        }
        if self.peer_conns.is_empty() {
            self.next_peer_check = None;
        } else if self.next_peer_check.is_none_or(|t| t <= now.mono) {
            self.expire_peer_conns(now, relays);
            self.next_peer_check = Some(now.mono + SWEEP_INTERVAL);
        }
    }

    /// After a request that set a lifetime (Refresh, CreatePermission, ChannelBind): if the
    /// allocation now needs the timer sooner than scheduled, schedule it sooner (a later
    /// time is found when the scheduled one comes).
    pub(super) fn reschedule(&mut self, ctx: ClientCtx) {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let Some(&id) = self.by_client.get(&five) else {
            return;
        };
        let Some(a) = self.alloc_mut(id) else {
            return;
        };
        let next = a.next_deadline();
        if next < a.scheduled {
            a.scheduled = next;
            let serial = a.serial;
            self.deadlines.push(next, id, serial);
        }
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
