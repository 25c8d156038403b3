//! What the core logs at INFO for a person running the server: failed authentications and
//! refused peers (rate-limited), allocations created and deleted.
//!
//! Failed authentications and refused peers come from clients, so a client can make as
//! many as it sends requests: each kind logs at most one line per second, across all
//! workers, and the next line it logs says how many were suppressed meanwhile. Strings a
//! client sent (user names, realms) are shown quoted and escaped, and cut to
//! [`SHOWN_MAX`] characters. No line carries a password, key, HMAC or secret.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest client-sent string shown in a log line, in characters.
pub const SHOWN_MAX: usize = 64;

/// At most one line per second of one kind, counting the lines it held back.
pub struct Limiter {
    /// Unix second of the last line let through, plus one (0: never).
    second: AtomicU64,
    suppressed: AtomicU64,
}

impl Limiter {
    pub const fn new() -> Limiter {
        Limiter {
            second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, and say that `n` lines were suppressed since the last one.
    /// `None`: a line already went out this second; this one is counted and dropped.
    pub fn admit(&self, unix: u64) -> Option<u64> {
        let mark = unix.wrapping_add(1);
        let last = self.second.load(Ordering::Relaxed);
        if last != mark
            && self
                .second
                .compare_exchange(last, mark, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

/// Failed authentications (all workers).
pub static AUTH_FAILURES: Limiter = Limiter::new();
/// Refused peers (all workers).
pub static REFUSED_PEERS: Limiter = Limiter::new();

/// A suffix naming the suppressed lines, empty when there were none.
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            1 => f.write_str(" (1 similar line suppressed)"),
            n => write!(f, " ({n} similar lines suppressed)"),
        }
    }
}

/// A client-sent string for a log line: quoted, escaped, at most [`SHOWN_MAX`] characters.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cut = self.0;
        let mut more = false;
        if let Some((i, _)) = self.0.char_indices().nth(SHOWN_MAX) {
            cut = &self.0[..i];
            more = true;
        }
        write!(f, "{:?}", cut)?;
        if more {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// The transport of a client, lower case, from its listener's protocol.
pub fn transport_name(p: crate::config::ListenerProtocol) -> &'static str {
    use crate::config::ListenerProtocol::*;
    match p {
        TurnUdp => "udp",
        TurnTcp => "tcp",
        TurnTls => "tls",
        TurnDtls => "dtls",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second_and_the_count_comes_with_the_next() {
        let l = Limiter::new();
        assert_eq!(l.admit(100), Some(0));
        assert_eq!(l.admit(100), None);
        assert_eq!(l.admit(100), None);
        assert_eq!(l.admit(101), Some(2));
        assert_eq!(l.admit(101), None);
        assert_eq!(l.admit(105), Some(1));
        assert_eq!(l.admit(0), Some(0), "second 0 is a second like any other");
        assert_eq!(l.admit(0), None);
    }

    #[test]
    fn shown_strings_are_escaped_and_cut() {
        assert_eq!(Shown("alice").to_string(), "\"alice\"");
        assert_eq!(Shown("a\nb\u{1b}").to_string(), "\"a\\nb\\u{1b}\"");
        let long = "x".repeat(200);
        let s = Shown(&long).to_string();
        assert_eq!(s.len(), SHOWN_MAX + 2 + 3);
        assert!(s.ends_with("\"..."));
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(Suppressed(3).to_string(), " (3 similar lines suppressed)");
    }
}
