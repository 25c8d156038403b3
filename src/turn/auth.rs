//! Long-term credentials (RFC 8489 section 9.2) with static and TURN REST (ephemeral)
//! users, and stateless nonces.
//!
//! Ephemeral auth accepts a credential signed by any of the configured shared secrets, and
//! an allocation keeps the credential it was created with ([`HeldCredential`]): after a
//! rotation removes the secret that signed it, that allocation's own requests still
//! authenticate until the credential's expiry, while new allocations with it are refused.
//!
//! Nothing here keeps per-client state: a nonce is `hex(timestamp || HMAC-SHA256(key,
//! timestamp || client address)[..12])` under a per-process key, so a server verifies it
//! from the request alone, it is bound to the client's address, and it expires.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::snapshot::{Auth, Snapshot, long_term_key};
use crate::stun::{Message, attr};
use crate::turn::TurnError;

/// How long a nonce stays valid.
pub const NONCE_LIFETIME_SECS: u64 = 3600;
/// Length of an encoded nonce: hex of 4 timestamp bytes and 12 MAC bytes.
pub const NONCE_LEN: usize = 32;

/// The per-process secret behind nonces.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl NonceKey {
    pub fn from_bytes(b: [u8; 32]) -> NonceKey {
        NonceKey(b)
    }

    /// A fresh nonce for `client` at `unix` seconds.
    pub fn make(&self, unix: u64, client: SocketAddr) -> [u8; NONCE_LEN] {
        let ts = (unix as u32).to_be_bytes();
        let mac = self.mac(ts, client);
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&ts);
        raw[4..].copy_from_slice(&mac[..12]);
        let mut out = [0u8; NONCE_LEN];
        for (i, b) in raw.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        out
    }

    /// Whether `nonce` was made by this key for `client` and is not older than the
    /// lifetime at `unix` seconds.
    pub fn check(&self, nonce: &[u8], unix: u64, client: SocketAddr) -> bool {
        let Ok(hex): Result<&[u8; NONCE_LEN], _> = nonce.try_into() else {
            return false;
        };
        let mut raw = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let (Some(hi), Some(lo)) = (unhex(pair[0]), unhex(pair[1])) else {
                return false;
            };
            raw[i] = hi << 4 | lo;
        }
        let ts = [raw[0], raw[1], raw[2], raw[3]];
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return false;
        };
        feed(&mut mac, ts, client);
        if mac.verify_truncated_left(&raw[4..]).is_err() {
            return false;
        }
        // 32-bit seconds wrap in 2106; compare in the same width.
        let age = (unix as u32).wrapping_sub(u32::from_be_bytes(ts));
        u64::from(age) <= NONCE_LIFETIME_SECS
    }

    fn mac(&self, ts: [u8; 4], client: SocketAddr) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return [0; 32];
        };
        feed(&mut mac, ts, client);
        mac.finalize().into_bytes().into()
    }
}

fn feed(mac: &mut Hmac<Sha256>, ts: [u8; 4], client: SocketAddr) {
    mac.update(&ts);
    match client.ip() {
        IpAddr::V4(ip) => mac.update(&ip.octets()),
        IpAddr::V6(ip) => mac.update(&ip.octets()),
    }
    mac.update(&client.port().to_be_bytes());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Proof that a request authenticated. Only [`authenticate`] creates one.
#[derive(Clone, Debug)]
pub struct Authenticated {
    user: Arc<str>,
    key: [u8; 16],
    /// A TURN REST (ephemeral) credential.
    ephemeral: bool,
}

/// The ephemeral credential an allocation was created with: the full REST username and its
/// long-term key. Once the secret that signed it is rotated out of the config, requests on
/// that allocation with exactly this credential still authenticate, until the expiry in
/// the username.
#[derive(Clone)]
pub struct HeldCredential {
    username: Box<str>,
    key: [u8; 16],
}

impl fmt::Debug for HeldCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HeldCredential {{ username: {:?}, key: <SECRET> }}",
            self.username
        )
    }
}

impl HeldCredential {
    /// The whole TURN REST username (`<expiry>:<user>`).
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl Authenticated {
    /// The credential to keep with an allocation this request creates: `Some` for an
    /// ephemeral credential (static users are checked against the live config only, so
    /// removing one revokes it).
    pub fn held_credential(&self, msg: &Message<'_>) -> Option<HeldCredential> {
        if !self.ephemeral {
            return None;
        }
        let username = attr::decode_str(msg.get(attr::USERNAME)?).ok()?;
        Some(HeldCredential {
            username: username.into(),
            key: self.key,
        })
    }

    /// The user id an allocation is bound to (the REST user part for ephemeral users).
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }

    /// The long-term key, for MESSAGE-INTEGRITY on responses.
    pub fn key(&self) -> &[u8; 16] {
        &self.key
    }
}

/// Why a request did not authenticate; each maps to one STUN error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No MESSAGE-INTEGRITY: challenge with 401 + REALM + NONCE.
    Challenge,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE: 400.
    Malformed,
    /// Unknown or expired nonce: 438 + REALM + NONCE.
    StaleNonce,
    /// Unknown user, expired REST credential, or integrity mismatch: 401 + REALM + NONCE.
    Rejected(Rejection),
    /// Auth type `none`: TURN is off, 401 without a way in.
    Disabled,
}

/// Why a request with credentials was rejected (for the failed-authentication log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Static auth: USERNAME is not the configured user.
    UnknownUser,
    /// MESSAGE-INTEGRITY does not match the key of the user (a wrong password or secret).
    BadIntegrity,
    /// TURN REST: the username's timestamp is in the past.
    Expired,
    /// TURN REST: the username carries no non-zero timestamp.
    MalformedRestUsername,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownUser => "unknown user",
            Rejection::BadIntegrity => "bad message integrity (wrong password or secret)",
            Rejection::Expired => "expired REST credential",
            Rejection::MalformedRestUsername => "malformed REST username (no timestamp)",
        }
    }
}

impl AuthError {
    /// The STUN error the client gets.
    pub fn error(self) -> TurnError {
        match self {
            AuthError::Challenge | AuthError::Rejected(_) | AuthError::Disabled => {
                TurnError::Unauthorized
            }
            AuthError::Malformed => TurnError::BadRequest,
            AuthError::StaleNonce => TurnError::StaleNonce,
        }
    }

    pub fn code(self) -> u16 {
        self.error().code()
    }
}

/// Authenticate a request against the snapshot's credentials (RFC 8489 section 9.2.4).
/// Runs on every authenticated request, so an expired REST credential stops working at
/// once, and a credential change applies to the next request. The nonce must be bound to
/// `client`, or to `also` when given (an RFC 6062 ConnectionBind may carry the nonce of
/// its control connection). `held` is the credential of the allocation the request is
/// about, if any: with ephemeral auth it is accepted even when no configured secret signs
/// it any more.
pub fn authenticate(
    snap: &Snapshot,
    nonces: &NonceKey,
    unix: u64,
    client: SocketAddr,
    also: Option<SocketAddr>,
    held: Option<&HeldCredential>,
    msg: &Message<'_>,
) -> Result<Authenticated, AuthError> {
    if matches!(snap.auth, Auth::None) {
        return Err(AuthError::Disabled);
    }
    if !msg.has_integrity() {
        return Err(AuthError::Challenge);
    }
    let (Some(username), Some(_realm), Some(nonce)) = (
        msg.get(attr::USERNAME),
        msg.get(attr::REALM),
        msg.get(attr::NONCE),
    ) else {
        return Err(AuthError::Malformed);
    };
    if !nonces.check(nonce, unix, client) && !also.is_some_and(|a| nonces.check(nonce, unix, a)) {
        return Err(AuthError::StaleNonce);
    }
    let username = attr::decode_str(username).map_err(|_| AuthError::Malformed)?;
    let ok = |user: &str, key: [u8; 16], ephemeral: bool| Authenticated {
        user: user.into(),
        key,
        ephemeral,
    };
    match &snap.auth {
        Auth::Static { .. } => {
            let key = snap
                .auth
                .static_key(username)
                .ok_or(AuthError::Rejected(Rejection::UnknownUser))?;
            if !msg.verify_integrity(key) {
                return Err(AuthError::Rejected(Rejection::BadIntegrity));
            }
            Ok(ok(username, *key, false))
        }
        Auth::Ephemeral { secrets } => {
            let expiry = rest_expiry(username)
                .ok_or(AuthError::Rejected(Rejection::MalformedRestUsername))?;
            if expiry < unix as i64 {
                return Err(AuthError::Rejected(Rejection::Expired));
            }
            let user = rest_user_id(username);
            // Each check is a constant-time MAC comparison; which secret matched is no
            // secret (they are tried in config order).
            for secret in secrets {
                let password = rest_password(secret, username);
                let key = long_term_key(username, &snap.realm, &password);
                if msg.verify_integrity(&key) {
                    return Ok(ok(user, key, true));
                }
            }
            match held {
                Some(h) if *h.username == *username && msg.verify_integrity(&h.key) => {
                    Ok(ok(user, h.key, true))
                }
                _ => Err(AuthError::Rejected(Rejection::BadIntegrity)),
            }
        }
        Auth::None => Err(AuthError::Disabled),
    }
}

/// TURN REST password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The expiry of a REST username: the first `:`-separated field that is a decimal integer
/// (sign allowed); 0 or none means invalid.
pub fn rest_expiry(username: &str) -> Option<i64> {
    username
        .split(':')
        .find_map(|f| f.parse::<i64>().ok())
        .filter(|&t| t != 0)
}

/// The user id of a REST username: `user` for exactly `timestamp:user`, else the whole.
pub fn rest_user_id(username: &str) -> &str {
    match username.split_once(':') {
        Some((ts, user)) if ts.parse::<i64>().is_ok() && !user.contains(':') => user,
        _ => username,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nonce_round_trip_binds_address_and_expires() {
        let k = NonceKey::from_bytes([3; 32]);
        let c = addr("192.0.2.1:5000");
        let n = k.make(1_000_000, c);
        assert!(k.check(&n, 1_000_000, c));
        assert!(k.check(&n, 1_000_000 + NONCE_LIFETIME_SECS, c));
        assert!(!k.check(&n, 1_000_001 + NONCE_LIFETIME_SECS, c));
        assert!(!k.check(&n, 1_000_000, addr("192.0.2.1:5001")));
        assert!(
            !k.check(&n, 999_999, c),
            "a nonce from the future is invalid"
        );
        assert!(!NonceKey::from_bytes([4; 32]).check(&n, 1_000_000, c));
        let mut bad = n;
        bad[31] = if bad[31] == b'0' { b'1' } else { b'0' };
        assert!(!k.check(&bad, 1_000_000, c));
        assert!(!k.check(b"short", 1_000_000, c));
        assert!(!k.check(&[b'Z'; NONCE_LEN], 1_000_000, c));
    }

    #[test]
    fn rest_username_forms() {
        assert_eq!(rest_expiry("1767225600:alice"), Some(1_767_225_600));
        assert_eq!(rest_expiry("alice:1767225600"), Some(1_767_225_600));
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry("0:alice"), None);
        assert_eq!(rest_user_id("1767225600:alice"), "alice");
        assert_eq!(rest_user_id("alice:1767225600"), "alice:1767225600");
        assert_eq!(rest_user_id("1767225600"), "1767225600");
        assert_eq!(rest_user_id("1:a:b"), "1:a:b");
    }

    #[test]
    fn rest_password_matches_known_hmac_vector() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog")
        // = de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9.
        let p = rest_password(b"key", "The quick brown fox jumps over the lazy dog");
        assert_eq!(p, "3nybhbi3iqa8ino29wqQcBydtNk=");
    }
}
