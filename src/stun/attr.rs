//! Attribute type numbers and typed decoders over borrowed values.
//!
//! Decoders take the raw attribute value (without header or padding) and return typed
//! values or [`StunError::BadValue`]; they never panic and never allocate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{MAGIC_COOKIE, StunError, TransactionId};

// RFC 8489
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const FINGERPRINT: u16 = 0x8028;
// RFC 8656 (TURN)
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const ICMP: u16 = 0x8004;
// RFC 6062
pub const CONNECTION_ID: u16 = 0x002A;
// RFC 8445 (ICE), seen in Binding requests
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;

/// Address family numbers of the address attributes and REQUESTED-ADDRESS-FAMILY.
pub const FAMILY_IPV4: u8 = 0x01;
pub const FAMILY_IPV6: u8 = 0x02;

/// Transport protocol numbers of REQUESTED-TRANSPORT.
pub const PROTO_UDP: u8 = 17;
pub const PROTO_TCP: u8 = 6;

/// Comprehension-required attributes (0x0000-0x7FFF) this server understands in requests.
/// Any other comprehension-required attribute in a request gets 420 (RFC 8489 section 6.3.1).
pub fn is_understood(t: u16) -> bool {
    t >= 0x8000
        || matches!(
            t,
            MAPPED_ADDRESS
                | USERNAME
                | MESSAGE_INTEGRITY
                | ERROR_CODE
                | UNKNOWN_ATTRIBUTES
                | REALM
                | NONCE
                | XOR_MAPPED_ADDRESS
                | CHANNEL_NUMBER
                | LIFETIME
                | XOR_PEER_ADDRESS
                | DATA
                | XOR_RELAYED_ADDRESS
                | REQUESTED_ADDRESS_FAMILY
                | EVEN_PORT
                | REQUESTED_TRANSPORT
                | DONT_FRAGMENT
                | RESERVATION_TOKEN
                | CONNECTION_ID
                | PRIORITY
                | USE_CANDIDATE
        )
}

/// A 32-bit attribute value (LIFETIME, CONNECTION-ID, PRIORITY, FINGERPRINT).
pub fn decode_u32(v: &[u8]) -> Result<u32, StunError> {
    let b: [u8; 4] = v.try_into().map_err(|_| StunError::BadValue)?;
    Ok(u32::from_be_bytes(b))
}

/// CHANNEL-NUMBER: a 16-bit number followed by 16 reserved bits.
pub fn decode_channel_number(v: &[u8]) -> Result<u16, StunError> {
    let b: [u8; 4] = v.try_into().map_err(|_| StunError::BadValue)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// REQUESTED-TRANSPORT: protocol number followed by 24 reserved bits.
pub fn decode_requested_transport(v: &[u8]) -> Result<u8, StunError> {
    let b: [u8; 4] = v.try_into().map_err(|_| StunError::BadValue)?;
    Ok(b[0])
}

/// REQUESTED-ADDRESS-FAMILY: family byte followed by 24 reserved bits.
pub fn decode_family(v: &[u8]) -> Result<u8, StunError> {
    let b: [u8; 4] = v.try_into().map_err(|_| StunError::BadValue)?;
    Ok(b[0])
}

/// EVEN-PORT: one byte whose top bit is R (reserve the next port too).
pub fn decode_even_port(v: &[u8]) -> Result<bool, StunError> {
    match v {
        [b] => Ok(b & 0x80 != 0),
        _ => Err(StunError::BadValue),
    }
}

/// RESERVATION-TOKEN: 8 opaque bytes.
pub fn decode_token(v: &[u8]) -> Result<u64, StunError> {
    let b: [u8; 8] = v.try_into().map_err(|_| StunError::BadValue)?;
    Ok(u64::from_be_bytes(b))
}

/// ERROR-CODE: (code, reason phrase).
pub fn decode_error_code(v: &[u8]) -> Result<(u16, &str), StunError> {
    let (head, reason) = v.split_at_checked(4).ok_or(StunError::BadValue)?;
    let class = u16::from(head[2] & 0x07);
    let number = u16::from(head[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(StunError::BadValue);
    }
    let reason = std::str::from_utf8(reason).map_err(|_| StunError::BadValue)?;
    Ok((class * 100 + number, reason))
}

/// A UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE).
pub fn decode_str(v: &[u8]) -> Result<&str, StunError> {
    std::str::from_utf8(v).map_err(|_| StunError::BadValue)
}

/// XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS (RFC 8489 section 14.2).
pub fn decode_xor_addr(v: &[u8], tid: &TransactionId) -> Result<SocketAddr, StunError> {
    let (family, port, addr) = split_addr(v)?;
    let port = port ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match family {
        FAMILY_IPV4 => {
            let a: [u8; 4] = addr.try_into().map_err(|_| StunError::BadValue)?;
            let ip = u32::from_be_bytes(a) ^ MAGIC_COOKIE;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        FAMILY_IPV6 => {
            let mut a: [u8; 16] = addr.try_into().map_err(|_| StunError::BadValue)?;
            let key = cookie.iter().chain(tid.iter());
            for (b, k) in a.iter_mut().zip(key) {
                *b ^= k;
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => Err(StunError::BadValue),
    }
}

/// MAPPED-ADDRESS and the other plain address attributes.
pub fn decode_addr(v: &[u8]) -> Result<SocketAddr, StunError> {
    let (family, port, addr) = split_addr(v)?;
    match family {
        FAMILY_IPV4 => {
            let a: [u8; 4] = addr.try_into().map_err(|_| StunError::BadValue)?;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        FAMILY_IPV6 => {
            let a: [u8; 16] = addr.try_into().map_err(|_| StunError::BadValue)?;
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => Err(StunError::BadValue),
    }
}

fn split_addr(v: &[u8]) -> Result<(u8, u16, &[u8]), StunError> {
    let (head, addr) = v.split_at_checked(4).ok_or(StunError::BadValue)?;
    Ok((head[1], u16::from_be_bytes([head[2], head[3]]), addr))
}

/// Encode an (XOR-)address value into `out`, returning the value length (8 or 20).
pub(crate) fn encode_addr(
    out: &mut [u8; 20],
    addr: SocketAddr,
    xor: Option<&TransactionId>,
) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            let mut a = ip.octets();
            if xor.is_some() {
                for (b, k) in a.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            out[4..8].copy_from_slice(&a);
            8
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            let mut a = ip.octets();
            if let Some(tid) = xor {
                for (b, k) in a.iter_mut().zip(cookie.iter().chain(tid.iter())) {
                    *b ^= k;
                }
            }
            out[4..20].copy_from_slice(&a);
            20
        }
    }
}

/// The standard reason phrase of an error code (RFC 8489, 8656, 6062).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}
