//! No amplification on UDP (RFC 8656 section 21; RFC 8489 section 16.1): answers to
//! requests whose source address has not been shown to be real are bounded per source.
//!
//! A UDP source address may be spoofed. A request without a valid nonce (a Binding, the
//! first Allocate that gets the 401 challenge, a 438, a 400 or 420) proves nothing about its
//! source, and its answer is usually larger than the request (a 401 with REALM and NONCE is
//! about 100 bytes for a 28-byte Allocate): sent blindly, it would make the server a
//! reflector that multiplies an attacker's bytes towards a victim. An answer no larger than
//! its request is always sent (it multiplies nothing). A larger one draws its size from a
//! token bucket of the source's prefix (/32 for IPv4, /64 for IPv6, the unit one host or
//! subscriber usually has): a spoofed victim receives at most the configured bytes per
//! second from the whole daemon (each worker gets its share), and whatever exceeds that is
//! dropped and counted. A request with a valid nonce (bound to its source address by an
//! HMAC) comes from a source that received our earlier answer: it is not limited.
//!
//! The table is bounded: at [`MAX_PREFIXES`] tracked prefixes, new ones share one overflow
//! bucket until the once-a-second sweep forgets prefixes whose bucket has refilled.

use std::net::IpAddr;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::turn::bucket::ByteBucket;

/// Source prefixes tracked per worker.
pub const MAX_PREFIXES: usize = 16 * 1024;
/// Default bytes per second of answers larger than their request, per source prefix, for
/// the whole daemon; the burst is one second's worth.
pub const DEFAULT_BYTES_PER_SEC: u32 = 32 * 1024;

/// One worker's per-prefix budgets.
pub struct PreauthBudget {
    /// Bytes per second and burst, this worker's share; 0: no limit.
    rate: u32,
    table: FxHashMap<u128, ByteBucket>,
    /// Shared by new prefixes while the table is full.
    overflow: ByteBucket,
}

impl PreauthBudget {
    /// `bytes_per_sec` for the whole daemon (0: no limit), shared by `workers` workers.
    pub fn new(bytes_per_sec: u32, workers: usize, now: Instant) -> PreauthBudget {
        let share = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        let rate = if bytes_per_sec == 0 {
            0
        } else {
            (bytes_per_sec / share).max(1)
        };
        PreauthBudget {
            rate,
            table: FxHashMap::default(),
            overflow: ByteBucket::full(rate, now),
        }
    }

    /// May an answer of `answer` bytes to a request of `request` bytes from `ip` go out?
    pub fn admit(&mut self, ip: IpAddr, request: usize, answer: usize, now: Instant) -> bool {
        if self.rate == 0 || answer <= request {
            return true;
        }
        let rate = self.rate;
        let key = prefix(ip);
        let bucket = if self.table.len() < MAX_PREFIXES || self.table.contains_key(&key) {
            self.table.entry(key).or_insert(ByteBucket::full(rate, now))
        } else {
            &mut self.overflow
        };
        bucket.take(rate, answer, now)
    }

    /// Forget prefixes whose bucket has refilled (idle for a second or more).
    pub fn sweep(&mut self, now: Instant) {
        let rate = self.rate;
        self.table.retain(|_, b| {
            b.refill(rate, now);
            !b.is_full(rate)
        });
    }
}

/// The /32 of an IPv4 address, the /64 of an IPv6 one (IPv4-mapped addresses are IPv4).
fn prefix(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !u128::from(u64::MAX),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_beyond_their_request_draw_from_the_source_prefix_budget() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut b = PreauthBudget::new(1000, 1, t0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // Never larger than the request: always sent.
        for _ in 0..100 {
            assert!(b.admit(a, 100, 100, t0));
        }
        // 10 answers of 100 bytes fill the second's budget; the 11th waits.
        for _ in 0..10 {
            assert!(b.admit(a, 28, 100, t0));
        }
        assert!(!b.admit(a, 28, 100, t0));
        // Another /32 has its own budget; the same /64 of IPv6 shares one.
        assert!(b.admit("192.0.2.2".parse().unwrap(), 28, 100, t0));
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        for _ in 0..10 {
            assert!(b.admit(v6a, 28, 100, t0));
        }
        assert!(!b.admit(v6b, 28, 100, t0));
        assert!(b.admit("2001:db8:0:1::1".parse().unwrap(), 28, 100, t0));
        // A mapped IPv4 address is that IPv4 address.
        assert!(!b.admit("::ffff:192.0.2.1".parse().unwrap(), 28, 100, t0));
        // Refill: 100 bytes after 100 ms.
        assert!(b.admit(a, 28, 100, t0 + Duration::from_millis(100)));
        assert!(!b.admit(a, 28, 100, t0 + Duration::from_millis(100)));
        // Idle prefixes are forgotten once refilled.
        b.sweep(t0 + Duration::from_secs(2));
        assert!(b.table.is_empty());
    }

    #[test]
    fn a_full_table_shares_one_overflow_bucket_and_zero_means_no_limit() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut b = PreauthBudget::new(2 * 1000, 2, t0);
        for i in 0..MAX_PREFIXES as u32 {
            assert!(b.admit(IpAddr::V4((0x0a00_0000 + i).into()), 0, 1, t0));
        }
        let late: IpAddr = "198.51.100.1".parse().unwrap();
        let later: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(
            b.admit(late, 0, 1000, t0),
            "the overflow bucket has this worker's share"
        );
        assert!(!b.admit(later, 0, 1, t0), "and shares it");
        assert_eq!(b.table.len(), MAX_PREFIXES);
        let mut open = PreauthBudget::new(0, 4, t0);
        for _ in 0..1000 {
            assert!(open.admit(late, 0, 60_000, t0));
        }
    }
}
