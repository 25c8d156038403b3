//! A token bucket of bytes: `rate` bytes a second, with a second's worth of burst. Used by
//! the core for the optional per-allocation send rate and by the shell for the
//! pre-authentication answer budget; the caller keeps the rate (one per table, not per
//! bucket) and the clock comes in as an argument.

use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct ByteBucket {
    tokens: u32,
    at: Instant,
}

impl ByteBucket {
    /// A bucket holding a second's worth at `now`.
    pub fn full(rate: u32, now: Instant) -> ByteBucket {
        ByteBucket {
            tokens: rate,
            at: now,
        }
    }

    /// Add what `rate` earned since the last refill, up to a second's worth.
    pub fn refill(&mut self, rate: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = u64::from(rate) * elapsed.as_micros() as u64 / 1_000_000;
        if earned > 0 {
            self.tokens = u32::try_from(u64::from(self.tokens) + earned)
                .unwrap_or(u32::MAX)
                .min(rate);
            self.at = now;
        }
    }

    /// Whether `bytes` may go at `now` (taking them); a `rate` of 0 means no limit.
    #[inline]
    pub fn take(&mut self, rate: u32, bytes: usize, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        self.refill(rate, now);
        match u32::try_from(bytes) {
            Ok(b) if b <= self.tokens => {
                self.tokens -= b;
                true
            }
            _ => false,
        }
    }

    /// Whether it holds a second's worth (nothing drawn lately).
    pub fn is_full(&self, rate: u32) -> bool {
        self.tokens >= rate
    }
}
