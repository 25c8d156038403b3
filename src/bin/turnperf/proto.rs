//! The TURN requests turnperf sends and the pieces of responses it reads, on top of the
//! crate's zero-copy STUN codec (`stunnerd::stun`). Nothing here touches a socket or a clock.

use std::net::SocketAddr;

use stunnerd::stun::{Class, Message, MessageWriter, Method, StunError, TransactionId, attr};

/// The one channel every allocation binds: each allocation has its own 5-tuple, so the
/// number only has to be unique within an allocation.
pub(crate) const CHANNEL: u16 = 0x4000;

/// What each allocation does after its Allocate succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// ChannelBind, then ChannelData.
    Channel,
    /// CreatePermission, then Send/Data indications.
    Send,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Channel => "channel",
            Mode::Send => "send",
        }
    }
}

/// The request an allocation is working on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The first Allocate, without credentials: the server answers 401 with REALM and NONCE.
    AllocProbe,
    /// The authenticated Allocate.
    Alloc,
    /// ChannelBind or CreatePermission for the peer.
    Bind,
    /// Refresh with LIFETIME 0 (deallocation at exit).
    Dealloc,
}

impl Step {
    /// The method whose response completes this step.
    pub(crate) fn method(self, mode: Mode) -> Method {
        match self {
            Step::AllocProbe | Step::Alloc => Method::Allocate,
            Step::Bind => match mode {
                Mode::Channel => Method::ChannelBind,
                Mode::Send => Method::CreatePermission,
            },
            Step::Dealloc => Method::Refresh,
        }
    }
}

impl Step {
    /// How reports name the step.
    pub(crate) fn describe(self, mode: Mode) -> &'static str {
        match (self, mode) {
            (Step::AllocProbe, _) => "Allocate (unauthenticated)",
            (Step::Alloc, _) => "Allocate",
            (Step::Bind, Mode::Channel) => "ChannelBind",
            (Step::Bind, Mode::Send) => "CreatePermission",
            (Step::Dealloc, _) => "Refresh (deallocate)",
        }
    }
}

/// Long-term credentials as sent: USERNAME, REALM, NONCE and the key (MD5 of
/// `username:realm:password`) for MESSAGE-INTEGRITY.
pub(crate) struct Auth<'a> {
    pub username: &'a str,
    pub realm: &'a [u8],
    pub nonce: &'a [u8],
    pub key: &'a [u8; 16],
}

/// Write the request for `step` into `buf`; returns its length.
pub(crate) fn build_request(
    buf: &mut [u8],
    step: Step,
    mode: Mode,
    tid: &TransactionId,
    peer: SocketAddr,
    auth: Option<&Auth<'_>>,
) -> Result<usize, StunError> {
    let mut w = MessageWriter::new(buf, step.method(mode), Class::Request, tid)?;
    match step {
        Step::AllocProbe | Step::Alloc => {
            w.add(attr::REQUESTED_TRANSPORT, &[attr::PROTO_UDP, 0, 0, 0])?;
        }
        Step::Bind => {
            if mode == Mode::Channel {
                let [a, b] = CHANNEL.to_be_bytes();
                w.add(attr::CHANNEL_NUMBER, &[a, b, 0, 0])?;
            }
            w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer)?;
        }
        Step::Dealloc => w.add_u32(attr::LIFETIME, 0)?,
    }
    // The probe goes out bare on purpose: that is how real clients learn realm and nonce.
    if let (Some(a), false) = (auth, step == Step::AllocProbe) {
        w.add(attr::USERNAME, a.username.as_bytes())?;
        w.add(attr::REALM, a.realm)?;
        w.add(attr::NONCE, a.nonce)?;
        w.add_integrity(a.key)?;
    }
    Ok(w.finish())
}

/// The ERROR-CODE of an error response as (code, reason); code 0 when it is missing or
/// malformed (a server bug worth reporting, not a reason to panic).
pub(crate) fn error_of(msg: &Message<'_>) -> (u16, String) {
    match msg.get(attr::ERROR_CODE).map(attr::decode_error_code) {
        // Some servers pad the reason with NULs (coturn does): keep it printable.
        Some(Ok((code, reason))) => (code, reason.chars().filter(|c| !c.is_control()).collect()),
        Some(Err(_)) => (0, "malformed ERROR-CODE".into()),
        None => (0, "error response without ERROR-CODE".into()),
    }
}

/// The payload stamp every load message carries at its start: magic, allocation index,
/// sequence number and send time. Little-endian: only turnperf reads it.
pub(crate) const STAMP_LEN: usize = 20;
const STAMP_MAGIC: u32 = 0x3146_5054; // "TPF1"

pub(crate) fn write_stamp(out: &mut [u8], idx: u32, seq: u32, ts_ns: u64) {
    if let Some(s) = out.get_mut(..STAMP_LEN) {
        s[0..4].copy_from_slice(&STAMP_MAGIC.to_le_bytes());
        s[4..8].copy_from_slice(&idx.to_le_bytes());
        s[8..12].copy_from_slice(&seq.to_le_bytes());
        s[12..20].copy_from_slice(&ts_ns.to_le_bytes());
    }
}

/// (allocation index, sequence, send time) of a stamped payload, or None if it is not ours.
pub(crate) fn read_stamp(p: &[u8]) -> Option<(u32, u32, u64)> {
    let s: &[u8; STAMP_LEN] = p.get(..STAMP_LEN)?.try_into().ok()?;
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    if word(0) != STAMP_MAGIC {
        return None;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&s[12..20]);
    Some((word(4), word(8), u64::from_le_bytes(ts)))
}

/// Write one load message for allocation `idx` into `buf`: ChannelData on [`CHANNEL`], or a
/// Send indication to `peer`. `size` payload bytes, of which the first [`STAMP_LEN`] are the
/// stamp and the rest whatever the buffer held (content does not matter to a relay).
pub(crate) fn build_data(
    buf: &mut [u8],
    mode: Mode,
    peer: SocketAddr,
    size: usize,
    idx: u32,
    seq: u32,
    ts_ns: u64,
) -> Result<usize, StunError> {
    match mode {
        Mode::Channel => {
            let total = 4 + size;
            let len = u16::try_from(size).map_err(|_| StunError::BufferTooSmall)?;
            let out = buf.get_mut(..total).ok_or(StunError::BufferTooSmall)?;
            let [a, b] = CHANNEL.to_be_bytes();
            let [c, d] = len.to_be_bytes();
            out[..4].copy_from_slice(&[a, b, c, d]);
            write_stamp(&mut out[4..], idx, seq, ts_ns);
            Ok(total)
        }
        Mode::Send => {
            // Indications need no unique transaction id; index and sequence make one anyway.
            let mut tid = [0u8; 12];
            tid[..4].copy_from_slice(&idx.to_le_bytes());
            tid[4..8].copy_from_slice(&seq.to_le_bytes());
            let mut w = MessageWriter::new(buf, Method::Send, Class::Indication, &tid)?;
            w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer)?;
            let data = w.reserve(attr::DATA, size)?;
            write_stamp(data, idx, seq, ts_ns);
            Ok(w.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stunnerd::stun::ChannelData;

    #[test]
    fn stamps_round_trip_through_both_framings() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut buf = [0u8; 256];
        let n = build_data(&mut buf, Mode::Channel, peer, 100, 7, 42, 123_456).unwrap();
        assert_eq!(n, 104);
        let cd = ChannelData::parse(&buf[..n]).unwrap();
        assert_eq!(cd.number, CHANNEL);
        assert_eq!(read_stamp(cd.data), Some((7, 42, 123_456)));

        let n = build_data(&mut buf, Mode::Send, peer, 21, 3, 4, 5).unwrap();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!((m.method(), m.class()), (Method::Send, Class::Indication));
        assert_eq!(read_stamp(m.get(attr::DATA).unwrap()), Some((3, 4, 5)));
        assert_eq!(read_stamp(&[0; 19]), None);
        assert_eq!(read_stamp(&[0; 40]), None);
    }

    #[test]
    fn requests_carry_credentials_except_the_probe() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let key = [1u8; 16];
        let auth = Auth {
            username: "u",
            realm: b"r",
            nonce: b"n",
            key: &key,
        };
        let mut buf = [0u8; 512];
        let tid = [9u8; 12];
        let n = build_request(
            &mut buf,
            Step::AllocProbe,
            Mode::Channel,
            &tid,
            peer,
            Some(&auth),
        )
        .unwrap();
        let m = Message::parse(&buf[..n]).unwrap();
        assert!(!m.has_integrity());
        let n =
            build_request(&mut buf, Step::Bind, Mode::Channel, &tid, peer, Some(&auth)).unwrap();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.method(), Method::ChannelBind);
        assert!(m.verify_integrity(&key));
        assert_eq!(m.get(attr::USERNAME), Some(&b"u"[..]));
    }
}
