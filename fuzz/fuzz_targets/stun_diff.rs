//! Differential fuzzing of our STUN codec against `stun-rs` (the design card's STUN crate).
//!
//! The same bytes go through `stunnerd::stun::Message::parse` plus our typed attribute
//! decoders, and through `stun_rs::MessageDecoder` twice (plain, and validating FINGERPRINT
//! and MESSAGE-INTEGRITY under a known key). Any disagreement about whether the message is
//! valid, which attributes it carries, an attribute's value, or whether its integrity and
//! fingerprint check out is a crash, except the differences listed (with their RFC reasons)
//! in fuzz/README.md, each excused below by a named rule.
//!
//! Input: one mode byte, then the message. Mode bit 0 fixes the header length to the bytes
//! given; bit 1 recomputes MESSAGE-INTEGRITY (HMAC-SHA1 under the key) and FINGERPRINT in
//! place, so that the fuzzer reaches messages whose checks pass.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;
use sha1::Sha1;
use stun_rs::error::StunErrorLevel;
use stun_rs::{DecoderContextBuilder, HMACKey, MessageDecoderBuilder, StunAttribute};
use stunnerd::stun::attr::*;
use stunnerd::stun::{FINGERPRINT_XOR, HEADER_LEN, Message, StunError};

const PASSWORD: &str = "fuzz-password";

/// One raw attribute as it sits in the message.
#[derive(Clone, Copy, Debug)]
struct Raw<'a> {
    typ: u16,
    value: &'a [u8],
    /// Offset of the attribute header.
    off: usize,
    /// Offset just past its padding.
    end: usize,
}

/// Every attribute that frames within the header's length, in order, stopping at the first
/// that overruns.
fn raw_attrs(buf: &[u8]) -> Vec<Raw<'_>> {
    let mut out = Vec::new();
    let Some(h) = buf.get(2..4) else { return out };
    let end = (HEADER_LEN + usize::from(u16::from_be_bytes([h[0], h[1]]))).min(buf.len());
    let mut off = HEADER_LEN;
    while let Some(a) = buf.get(off..off + 4) {
        if off + 4 > end {
            break;
        }
        let typ = u16::from_be_bytes([a[0], a[1]]);
        let len = usize::from(u16::from_be_bytes([a[2], a[3]]));
        let Some(value) = buf.get(off + 4..off + 4 + len) else {
            break;
        };
        let next = off + 4 + ((len + 3) & !3);
        out.push(Raw {
            typ,
            value,
            off,
            end: next,
        });
        if next > end {
            break;
        }
        off = next;
    }
    out
}

/// Mode bit 1: make the first MESSAGE-INTEGRITY and a FINGERPRINT right.
fn fix_up(buf: &mut [u8]) {
    let attrs: Vec<(u16, usize, usize, usize)> = raw_attrs(buf)
        .iter()
        .map(|a| (a.typ, a.off, a.value.len(), a.end))
        .collect();
    let mut done_mi = false;
    for (typ, off, len, end) in attrs {
        if end > buf.len() {
            break;
        }
        let covered = ((off + 4 + len - HEADER_LEN) as u16).to_be_bytes();
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&buf[..HEADER_LEN]);
        head[2..4].copy_from_slice(&covered);
        if typ == MESSAGE_INTEGRITY && len == 20 && !done_mi {
            done_mi = true;
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(PASSWORD.as_bytes()) else {
                return;
            };
            mac.update(&head);
            mac.update(&buf[HEADER_LEN..off]);
            let tag = mac.finalize().into_bytes();
            buf[off + 4..off + 24].copy_from_slice(&tag);
        } else if typ == FINGERPRINT && len == 4 {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&head);
            crc.update(&buf[HEADER_LEN..off]);
            let v = (crc.finalize() ^ FINGERPRINT_XOR).to_be_bytes();
            buf[off + 4..off + 8].copy_from_slice(&v);
        }
    }
}

/// The fixed value length of attributes that have one (RFC 8489, 8656, 8445).
fn fixed_len(typ: u16) -> Option<usize> {
    match typ {
        LIFETIME
        | PRIORITY
        | CHANNEL_NUMBER
        | REQUESTED_TRANSPORT
        | REQUESTED_ADDRESS_FAMILY
        | ADDITIONAL_ADDRESS_FAMILY
        | FINGERPRINT
        | CONNECTION_ID => Some(4),
        EVEN_PORT => Some(1),
        RESERVATION_TOKEN | ICE_CONTROLLED | ICE_CONTROLLING => Some(8),
        DONT_FRAGMENT | USE_CANDIDATE => Some(0),
        MESSAGE_INTEGRITY => Some(20),
        MESSAGE_INTEGRITY_SHA256 => None,
        _ => None,
    }
}

/// Exclusion A (README): stun-rs reads a fixed-size value (or an address) from the front of
/// a longer value and ignores the rest; the RFCs fix those lengths and our decoders reject
/// any other. Also the reverse for address values whose length does not fit the family.
fn wrong_length(typ: u16, value: &[u8]) -> bool {
    match typ {
        MAPPED_ADDRESS | XOR_MAPPED_ADDRESS | XOR_PEER_ADDRESS | XOR_RELAYED_ADDRESS
        | ALTERNATE_SERVER => match value.get(1) {
            Some(&FAMILY_IPV4) => value.len() != 8,
            Some(&FAMILY_IPV6) => value.len() != 20,
            _ => false,
        },
        _ => fixed_len(typ).is_some_and(|n| n != value.len()),
    }
}

/// Exclusion B (README): value checks stun-rs makes that a TURN server's codec leaves to
/// the code that uses the value: PRECIS OpaqueString and length limits on USERNAME (RFC 8489
/// 14.3), quoted-string syntax and length limits on REALM and NONCE (14.9, 14.10), length
/// limits on SOFTWARE and the ERROR-CODE reason (14.14, 14.8), the algorithm lists of
/// PASSWORD-ALGORITHM(S) and USERHASH, and the known ICMP types. Our decoders take any UTF-8.
fn stun_rs_only_check(typ: u16) -> bool {
    matches!(
        typ,
        USERNAME
            | REALM
            | NONCE
            | SOFTWARE
            | ERROR_CODE
            | PASSWORD_ALGORITHM
            | PASSWORD_ALGORITHMS
            | USERHASH
            | ICMP
            | ADDRESS_ERROR_CODE
            | ALTERNATE_DOMAIN
            | MESSAGE_INTEGRITY_SHA256
    )
}

/// Our typed decoding of an attribute, as a comparable value. `None`: no typed decoder
/// (opaque to us); `Some(Err)`: our decoder rejects the value.
fn ours(typ: u16, v: &[u8], tid: &[u8; 12]) -> Option<Result<String, StunError>> {
    Some(match typ {
        MAPPED_ADDRESS | ALTERNATE_SERVER => decode_addr(v).map(|a| a.to_string()),
        XOR_MAPPED_ADDRESS | XOR_PEER_ADDRESS | XOR_RELAYED_ADDRESS => {
            decode_xor_addr(v, tid).map(|a| a.to_string())
        }
        // Exclusion G: stun-rs hands out USERNAME after the PRECIS OpaqueString profile
        // (RFC 8265: e.g. U+00A0 becomes U+0020); we keep the bytes the client sent and
        // compare after applying the same profile.
        USERNAME => decode_str(v).map(|s| match OpaqueString::enforce(s) {
            Ok(p) => p.into_owned(),
            Err(_) => s.to_string(),
        }),
        REALM | NONCE | SOFTWARE => decode_str(v).map(str::to_string),
        ERROR_CODE => decode_error_code(v).map(|(c, r)| format!("{c} {r}")),
        LIFETIME | PRIORITY => decode_u32(v).map(|n| n.to_string()),
        CHANNEL_NUMBER => decode_channel_number(v).map(|n| n.to_string()),
        EVEN_PORT => decode_even_port(v).map(|b| b.to_string()),
        RESERVATION_TOKEN => decode_token(v).map(|t| format!("{:?}", t.to_be_bytes())),
        REQUESTED_TRANSPORT => decode_requested_transport(v).map(|p| p.to_string()),
        // The family byte is read by the codec and checked by the core (440 for any family
        // but IPv4 and IPv6): together they reject what stun-rs rejects.
        REQUESTED_ADDRESS_FAMILY => match decode_family(v) {
            Ok(f @ (FAMILY_IPV4 | FAMILY_IPV6)) => Ok(f.to_string()),
            Ok(_) => Err(StunError::BadValue),
            Err(e) => Err(e),
        },
        DATA => Ok(format!("{v:?}")),
        UNKNOWN_ATTRIBUTES => {
            if !v.len().is_multiple_of(2) {
                Err(StunError::BadValue)
            } else {
                // Exclusion E: stun-rs keeps the listed types as a set.
                let set: std::collections::BTreeSet<u16> = v
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                Ok(format!("{set:?}"))
            }
        }
        _ => return None,
    })
}

/// stun-rs's decoding of the same attribute, in the same form; `None` for types we do not
/// decode (compared by type only).
fn theirs(a: &StunAttribute) -> Option<String> {
    Some(match a {
        StunAttribute::MappedAddress(x) => x.socket_address().to_string(),
        StunAttribute::AlternateServer(x) => x.socket_address().to_string(),
        StunAttribute::XorMappedAddress(x) => x.socket_address().to_string(),
        StunAttribute::XorPeerAddress(x) => x.socket_address().to_string(),
        StunAttribute::XorRelayedAddress(x) => x.socket_address().to_string(),
        StunAttribute::UserName(x) => x.as_str().to_string(),
        StunAttribute::Realm(x) => x.as_str().to_string(),
        StunAttribute::Nonce(x) => x.as_str().to_string(),
        StunAttribute::Software(x) => x.as_str().to_string(),
        StunAttribute::ErrorCode(x) => {
            format!(
                "{} {}",
                x.error_code().error_code(),
                x.error_code().reason()
            )
        }
        StunAttribute::LifeTime(x) => x.as_u32().to_string(),
        StunAttribute::Priority(x) => x.as_u32().to_string(),
        StunAttribute::ChannelNumber(x) => x.number().to_string(),
        StunAttribute::EvenPort(x) => x.reserve().to_string(),
        StunAttribute::ReservationToken(x) => format!("{:?}", x.token()),
        StunAttribute::RequestedTrasport(x) => x.protocol().as_u8().to_string(),
        StunAttribute::RequestedAddressFamily(x) => match x.family() {
            stun_rs::AddressFamily::IPv4 => FAMILY_IPV4.to_string(),
            stun_rs::AddressFamily::IPv6 => FAMILY_IPV6.to_string(),
        },
        StunAttribute::Data(x) => format!("{:?}", x.as_bytes()),
        StunAttribute::UnknownAttributes(x) => {
            let set: std::collections::BTreeSet<u16> = x.attributes().iter().copied().collect();
            format!("{set:?}")
        }
        _ => return None,
    })
}

fn is_integrity_or_fp(t: u16) -> bool {
    matches!(
        t,
        MESSAGE_INTEGRITY | MESSAGE_INTEGRITY_SHA256 | FINGERPRINT
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if mode & 1 != 0 && buf.len() >= HEADER_LEN && buf.len() - HEADER_LEN <= 0xFFFF {
        let n = ((buf.len() - HEADER_LEN) as u16).to_be_bytes();
        buf[2..4].copy_from_slice(&n);
    }
    if mode & 2 != 0 {
        fix_up(&mut buf);
    }
    let buf = &buf[..];

    let plain = MessageDecoderBuilder::default().build().decode(buf);
    let key = HMACKey::new_short_term(PASSWORD).expect("ASCII password");
    let ctx = DecoderContextBuilder::default()
        .with_key(key)
        .with_validation()
        .build();
    let validating = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(buf);
    let mine = Message::parse(buf);
    let raws = raw_attrs(buf);
    // The first integrity-type attribute: everything after it (but FINGERPRINT) is ignored
    // (RFC 8489 14.5, 14.6).
    let first_mi = raws
        .iter()
        .position(|a| matches!(a.typ, MESSAGE_INTEGRITY | MESSAGE_INTEGRITY_SHA256));
    let fp_pos = raws.iter().position(|a| a.typ == FINGERPRINT);

    match (&mine, &plain) {
        (Ok(m), Ok((sm, size))) => {
            assert_eq!(
                *size,
                buf.len(),
                "both accept but disagree on the message length"
            );
            assert_eq!(m.method().number(), sm.method().as_u16(), "method");
            assert_eq!(
                m.transaction_id(),
                sm.transaction_id().as_bytes(),
                "transaction id"
            );
            // Attributes that count: ours up to MESSAGE-INTEGRITY (or FINGERPRINT); theirs
            // without the integrity and fingerprint attributes it keeps.
            let my_attrs: Vec<_> = m.attrs().collect();
            let their_attrs: Vec<&StunAttribute> = sm
                .attributes()
                .iter()
                .filter(|a| !is_integrity_or_fp(a.attribute_type().as_u16()))
                .collect();
            assert_eq!(
                my_attrs.iter().map(|a| a.typ).collect::<Vec<_>>(),
                their_attrs
                    .iter()
                    .map(|a| a.attribute_type().as_u16())
                    .collect::<Vec<_>>(),
                "attribute lists differ"
            );
            for (a, b) in my_attrs.iter().zip(&their_attrs) {
                let (Some(o), Some(t)) = (ours(a.typ, a.value, m.transaction_id()), theirs(b))
                else {
                    continue;
                };
                match o {
                    Ok(o) => assert_eq!(o, t, "value of attribute {:#06x}", a.typ),
                    Err(_) if wrong_length(a.typ, a.value) => {}
                    Err(e) => panic!(
                        "stun-rs decodes attribute {:#06x} as {t}, we reject it: {e}",
                        a.typ
                    ),
                }
            }
            // Integrity and fingerprint, against the validating decoder.
            let failed_check = match &validating {
                Ok(_) => None,
                Err(e) => match &e.0 {
                    StunErrorLevel::Attribute(ae) => ae.attr_type.map(|t| t.as_u16()),
                    StunErrorLevel::Message(_) => panic!("validating decoder: {e}"),
                },
            };
            assert!(
                failed_check != Some(FINGERPRINT),
                "stun-rs finds the FINGERPRINT wrong, we accepted it"
            );
            if m.has_integrity() && first_mi.is_some_and(|i| raws[i].typ == MESSAGE_INTEGRITY) {
                let theirs_ok = failed_check != Some(MESSAGE_INTEGRITY);
                assert_eq!(
                    m.verify_integrity(PASSWORD.as_bytes()),
                    theirs_ok,
                    "MESSAGE-INTEGRITY verdicts differ"
                );
            }
        }
        (Ok(m), Err(e)) => {
            let StunErrorLevel::Attribute(ae) = &e.0 else {
                panic!("we accept a message stun-rs rejects: {e}");
            };
            let Some(t) = ae.attr_type.map(|t| t.as_u16()) else {
                panic!("we accept a message whose attributes stun-rs cannot frame: {e}");
            };
            let raw = raws
                .get(ae.position)
                .expect("stun-rs failed at an attribute we framed");
            assert_eq!(raw.typ, t);
            let ignored = first_mi.is_some_and(|i| ae.position > i) && t != FINGERPRINT;
            let excused = ignored // exclusion C
                || stun_rs_only_check(t) // exclusion B
                || wrong_length(t, raw.value) // exclusion A
                || match ours(t, raw.value, m.transaction_id()) {
                    // Our decoder rejects it too: the message is refused when it is read.
                    Some(r) => r.is_err(),
                    // Exclusion F: a comprehension-optional attribute we never read.
                    None => t >= 0x8000,
                };
            assert!(
                excused,
                "we accept attribute {t:#06x} {:?} that stun-rs rejects: {e}",
                raw.value
            );
        }
        (Err(err), Ok((_, size))) => {
            if *size != buf.len() {
                return; // stun-rs decoded a message from the front of the bytes only
            }
            let excused = match err {
                StunError::BadFingerprint => {
                    let fp = fp_pos.map(|i| raws[i]);
                    // exclusion D: FINGERPRINT not last; exclusion A: its length.
                    fp.is_some_and(|fp| fp.end != buf.len() || fp.value.len() != 4)
                        || validating.is_err()
                }
                // exclusion A for MESSAGE-INTEGRITY's length
                StunError::BadAttribute => raws
                    .iter()
                    .any(|a| a.typ == MESSAGE_INTEGRITY && a.value.len() != 20),
                _ => false,
            };
            assert!(excused, "stun-rs accepts a message we reject with {err:?}");
        }
        (Err(_), Err(_)) => {}
    }
});
