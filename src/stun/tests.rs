//! Codec tests: RFC 5769 vectors, round trips, and hostile input.

use std::net::SocketAddr;

use md5::{Digest, Md5};
use proptest::prelude::*;

use super::attr::*;
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// RFC 5769 section 2.1: sample request (short-term credentials).
const SAMPLE_REQUEST: &str = "
 00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
 80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
 00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
 00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
 00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
 80 28 00 04 e5 7a 3b cf";

// RFC 5769 section 2.2: sample IPv4 response.
const SAMPLE_V4_RESPONSE: &str = "
 01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
 80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
 00 20 00 08 00 01 a1 47 e1 12 a6 43
 00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
 80 28 00 04 c0 7d 4c 96";

// RFC 5769 section 2.3: sample IPv6 response.
const SAMPLE_V6_RESPONSE: &str = "
 01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
 80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
 00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
 00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
 80 28 00 04 c8 fb 0b 4c";

// RFC 5769 section 2.4: sample request with long-term authentication.
const SAMPLE_LONG_TERM: &str = "
 00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
 00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
 00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
 00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
 00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn rfc5769_sample_request() {
    let bytes = hex(SAMPLE_REQUEST);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.method(), Method::Binding);
    assert_eq!(msg.class(), Class::Request);
    assert!(msg.has_fingerprint());
    assert_eq!(decode_str(msg.get(USERNAME).unwrap()).unwrap(), "evtj:h6vY");
    assert_eq!(
        decode_str(msg.get(SOFTWARE).unwrap()).unwrap(),
        "STUN test client"
    );
    assert_eq!(decode_u32(msg.get(PRIORITY).unwrap()).unwrap(), 0x6e0001ff);
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD));
    assert!(!msg.verify_integrity(b"wrong"));
}

#[test]
fn rfc5769_ipv4_response() {
    let bytes = hex(SAMPLE_V4_RESPONSE);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.class(), Class::Success);
    let addr = decode_xor_addr(msg.get(XOR_MAPPED_ADDRESS).unwrap(), msg.transaction_id());
    assert_eq!(addr.unwrap(), "192.0.2.1:32853".parse().unwrap());
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD));
}

#[test]
fn rfc5769_ipv6_response() {
    let bytes = hex(SAMPLE_V6_RESPONSE);
    let msg = Message::parse(&bytes).unwrap();
    let addr = decode_xor_addr(msg.get(XOR_MAPPED_ADDRESS).unwrap(), msg.transaction_id());
    let want: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(addr.unwrap(), want);
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD));
}

#[test]
fn rfc5769_long_term_request() {
    let bytes = hex(SAMPLE_LONG_TERM);
    let msg = Message::parse(&bytes).unwrap();
    let username = decode_str(msg.get(USERNAME).unwrap()).unwrap();
    assert_eq!(username, "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}");
    assert_eq!(decode_str(msg.get(REALM).unwrap()).unwrap(), "example.org");
    assert_eq!(
        decode_str(msg.get(NONCE).unwrap()).unwrap(),
        "f//499k954d6OL34oL9FSTvy64sA"
    );
    // The password after SASLprep is "TheMatrIX".
    let key = Md5::digest(format!("{username}:example.org:TheMatrIX").as_bytes());
    assert!(msg.verify_integrity(&key));
}

#[test]
fn writer_reproduces_rfc5769_long_term_request() {
    let want = hex(SAMPLE_LONG_TERM);
    let tid: TransactionId = want[8..20].try_into().unwrap();
    let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    let key = Md5::digest(format!("{username}:example.org:TheMatrIX").as_bytes());
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &tid).unwrap();
    w.add(USERNAME, username.as_bytes()).unwrap();
    w.add(NONCE, b"f//499k954d6OL34oL9FSTvy64sA").unwrap();
    w.add(REALM, b"example.org").unwrap();
    w.add_integrity(&key).unwrap();
    let n = w.finish();
    assert_eq!(&buf[..n], &want[..]);
}

#[test]
fn message_type_round_trip() {
    for m in 0..0x1000u16 {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let t = message_type(Method::from_number(m), class);
            assert_eq!(t & 0xC000, 0);
            let (m2, c2) = split_message_type(t);
            assert_eq!((m2.number(), c2), (m, class));
        }
    }
    assert_eq!(message_type(Method::Allocate, Class::Request), 0x0003);
    assert_eq!(message_type(Method::Allocate, Class::Success), 0x0103);
    assert_eq!(message_type(Method::Allocate, Class::Error), 0x0113);
    assert_eq!(message_type(Method::Send, Class::Indication), 0x0016);
    assert_eq!(message_type(Method::Data, Class::Indication), 0x0017);
}

#[test]
fn written_message_parses_with_integrity_and_fingerprint() {
    let tid = [7u8; 12];
    let key = b"0123456789abcdef";
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Error, &tid).unwrap();
    w.add_error_code(437).unwrap();
    w.add_unknown_attributes(&[0x0031, 0x0032, 0x0033]).unwrap();
    w.add_xor_addr(XOR_RELAYED_ADDRESS, "[2001:db8::1]:4000".parse().unwrap())
        .unwrap();
    w.add_u32(LIFETIME, 600).unwrap();
    w.add_integrity(key).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.method(), Method::Allocate);
    assert_eq!(msg.class(), Class::Error);
    assert_eq!(
        decode_error_code(msg.get(ERROR_CODE).unwrap()).unwrap(),
        (437, "Allocation Mismatch")
    );
    let relayed = decode_xor_addr(msg.get(XOR_RELAYED_ADDRESS).unwrap(), &tid).unwrap();
    assert_eq!(relayed, "[2001:db8::1]:4000".parse().unwrap());
    assert_eq!(decode_u32(msg.get(LIFETIME).unwrap()).unwrap(), 600);
    assert!(msg.has_fingerprint());
    assert!(msg.verify_integrity(key));
}

#[test]
fn attributes_after_integrity_are_ignored() {
    let tid = [1u8; 12];
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, Method::Refresh, Class::Request, &tid).unwrap();
    w.add_integrity(b"k").unwrap();
    w.add_u32(LIFETIME, 0).unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert!(msg.get(LIFETIME).is_none());
    // The HMAC covers only what precedes it (with the length rewritten), so trailing
    // attributes do not break it.
    assert!(msg.verify_integrity(b"k"));
}

/// Found by the differential fuzz target (fuzz/fuzz_targets/stun_diff.rs): RFC 8489 section
/// 14.6 says attributes after MESSAGE-INTEGRITY-SHA256, other than FINGERPRINT, are ignored,
/// so a MESSAGE-INTEGRITY after it must not authenticate the message, and the attributes
/// that count end before it.
#[test]
fn attributes_after_integrity_sha256_are_ignored() {
    let tid = [2u8; 12];
    let key = b"k";
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Request, &tid).unwrap();
    w.add_u32(LIFETIME, 600).unwrap();
    w.add(MESSAGE_INTEGRITY_SHA256, &[0u8; 32]).unwrap();
    w.add_u32(LIFETIME, 0).unwrap();
    w.add_integrity(key).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    let types: Vec<u16> = msg.attrs().map(|a| a.typ).collect();
    assert_eq!(types, [LIFETIME]);
    assert_eq!(decode_u32(msg.get(LIFETIME).unwrap()).unwrap(), 600);
    assert!(!msg.has_integrity());
    assert!(!msg.verify_integrity(key));
    assert!(msg.has_fingerprint());

    // MESSAGE-INTEGRITY then MESSAGE-INTEGRITY-SHA256 is the order RFC 8489 senders use:
    // the SHA-1 integrity still counts.
    let mut w = MessageWriter::new(&mut buf, Method::Allocate, Class::Request, &tid).unwrap();
    w.add_u32(LIFETIME, 600).unwrap();
    w.add_integrity(key).unwrap();
    w.add(MESSAGE_INTEGRITY_SHA256, &[0u8; 32]).unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert!(msg.has_integrity());
    assert!(msg.verify_integrity(key));
    assert_eq!(msg.attrs().count(), 1);
}

#[test]
fn rejects_malformed_headers() {
    let good = hex(SAMPLE_REQUEST);
    assert_eq!(
        Message::parse(&good[..19]).unwrap_err(),
        StunError::Truncated
    );
    assert_eq!(
        Message::parse(&good[..40]).unwrap_err(),
        StunError::Truncated
    );
    let mut bad = good.clone();
    bad[4] = 0;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::BadCookie);
    let mut bad = good.clone();
    bad[0] = 0x40;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::NotStun);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::BadFingerprint);
    let mut bad = good.clone();
    bad[22] = 0xff; // SOFTWARE length overruns the message
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::BadAttribute);
}

#[test]
fn channel_data_views() {
    let buf = [0x40, 0x01, 0x00, 0x03, 1, 2, 3, 0];
    let cd = ChannelData::parse(&buf).unwrap();
    assert_eq!(cd.number, 0x4001);
    assert_eq!(cd.data, &[1, 2, 3]);
    assert_eq!(
        ChannelData::parse(&buf[..6]).unwrap_err(),
        StunError::Truncated
    );
    assert_eq!(
        ChannelData::parse(&[0x80, 0, 0, 0]).unwrap_err(),
        StunError::NotChannelData
    );
    let mut h = [0u8; 4];
    write_channel_header(&mut h, 0x4fff, 1200);
    assert_eq!(h, [0x4f, 0xff, 0x04, 0xb0]);
    assert_eq!(stream_frame_len(&buf).unwrap(), Some(8));
    assert_eq!(stream_frame_len(&[0x40, 0, 0, 4]).unwrap(), Some(8));
    assert_eq!(stream_frame_len(&[0x40, 0, 0, 5]).unwrap(), Some(12));
    assert_eq!(stream_frame_len(&[0, 1, 0, 8]).unwrap(), Some(28));
    assert_eq!(stream_frame_len(&[0, 1]).unwrap(), None);
    assert!(stream_frame_len(&[0x80, 3, 1, 0]).is_err());
}

#[test]
fn classify_first_bits() {
    assert_eq!(classify(&[]), Kind::Other);
    assert_eq!(classify(&[0x00]), Kind::Stun);
    assert_eq!(classify(&[0x40]), Kind::ChannelData);
    assert_eq!(classify(&[0x7f]), Kind::ChannelData);
    assert_eq!(classify(&[0x80]), Kind::Other);
    assert_eq!(classify(&[0x16]), Kind::Stun); // DTLS records start 20..63: caller demuxes
}

#[test]
fn writer_reports_small_buffers() {
    let mut buf = [0u8; 10];
    assert!(MessageWriter::new(&mut buf, Method::Binding, Class::Request, &[0; 12]).is_err());
    let mut buf = [0u8; 28];
    let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Request, &[0; 12]).unwrap();
    assert_eq!(w.add_u32(LIFETIME, 1), Ok(()));
    assert_eq!(w.add_u32(LIFETIME, 1), Err(StunError::BufferTooSmall));
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(msg) = Message::parse(&bytes) {
            for a in msg.attrs() {
                let _ = decode_xor_addr(a.value, msg.transaction_id());
                let _ = decode_error_code(a.value);
                let _ = decode_str(a.value);
            }
            let _ = msg.verify_integrity(b"key");
        }
        let _ = ChannelData::parse(&bytes);
        let _ = stream_frame_len(&bytes);
    }

    #[test]
    fn structured_garbage_never_panics(
        typ in 0u16..0x3fff,
        attrs in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        cut in 0usize..400,
    ) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&typ.to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&[9; 12]);
        for (t, v) in &attrs {
            bytes.extend_from_slice(&t.to_be_bytes());
            bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
            bytes.extend_from_slice(v);
            while bytes.len() % 4 != 0 { bytes.push(0); }
        }
        let body = (bytes.len() - 20) as u16;
        bytes[2..4].copy_from_slice(&body.to_be_bytes());
        let cut = cut.min(bytes.len());
        for b in [&bytes[..], &bytes[..cut]] {
            if let Ok(msg) = Message::parse(b) {
                let n = msg.attrs().count();
                prop_assert!(n <= attrs.len());
                let _ = msg.verify_integrity(b"key");
            }
        }
    }

    #[test]
    fn xor_address_round_trip(v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), port in any::<u16>(), tid in any::<[u8; 12]>()) {
        for addr in [SocketAddr::from((v4, port)), SocketAddr::from((v6, port))] {
            let mut buf = [0u8; 128];
            let mut w = MessageWriter::new(&mut buf, Method::Binding, Class::Success, &tid).unwrap();
            w.add_xor_addr(XOR_PEER_ADDRESS, addr).unwrap();
            w.add_addr(MAPPED_ADDRESS, addr).unwrap();
            let n = w.finish();
            let msg = Message::parse(&buf[..n]).unwrap();
            prop_assert_eq!(decode_xor_addr(msg.get(XOR_PEER_ADDRESS).unwrap(), &tid).unwrap(), addr);
            prop_assert_eq!(decode_addr(msg.get(MAPPED_ADDRESS).unwrap()).unwrap(), addr);
        }
    }
}
