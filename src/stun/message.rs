//! A checked, zero-copy view over one received STUN message.

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::attr::{FINGERPRINT, MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256};
use super::{
    Class, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE, Method, StunError, TransactionId,
    split_message_type,
};

type HmacSha1 = Hmac<Sha1>;

/// A STUN message whose structure has been checked: header, length, every attribute's
/// bounds, the position of MESSAGE-INTEGRITY and, if present, a valid FINGERPRINT.
/// Attribute values stay in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    method: Method,
    class: Class,
    tid: TransactionId,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if any.
    integrity: Option<usize>,
    /// Whether the message carried a (valid) FINGERPRINT.
    fingerprint: bool,
    /// End of the attributes that count: everything after MESSAGE-INTEGRITY or
    /// MESSAGE-INTEGRITY-SHA256 except FINGERPRINT must be ignored (RFC 8489 sections 14.5,
    /// 14.6).
    attrs_end: usize,
}

/// One raw attribute: its type and its value without padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    pub typ: u16,
    pub value: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parse exactly one message occupying all of `buf` (a datagram, or a frame cut from a
    /// stream with [`super::stream_frame_len`]).
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        let header: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(StunError::Truncated)?;
        let typ = u16::from_be_bytes([header[0], header[1]]);
        if typ & 0xC000 != 0 {
            return Err(StunError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE {
            return Err(StunError::BadCookie);
        }
        if len % 4 != 0 {
            return Err(StunError::BadLength);
        }
        if buf.len() != HEADER_LEN + len {
            return Err(StunError::Truncated);
        }
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&header[8..20]);
        let (method, class) = split_message_type(typ);

        let mut msg = Message {
            buf,
            method,
            class,
            tid,
            integrity: None,
            fingerprint: false,
            attrs_end: buf.len(),
        };
        // Where the attributes that count end: at the first MESSAGE-INTEGRITY or
        // MESSAGE-INTEGRITY-SHA256, else at FINGERPRINT (RFC 8489 sections 14.5-14.7).
        let mut counted_end = None;
        let mut off = HEADER_LEN;
        while off < buf.len() {
            let (t, vlen) = attr_header(buf, off)?;
            let padded = (vlen + 3) & !3;
            let next = off + 4 + padded;
            if next > buf.len() {
                return Err(StunError::BadAttribute);
            }
            match t {
                MESSAGE_INTEGRITY if counted_end.is_none() => {
                    if vlen != 20 {
                        return Err(StunError::BadAttribute);
                    }
                    msg.integrity = Some(off);
                    counted_end = Some(off);
                }
                // We do not verify SHA-256 integrity, but everything after it except
                // FINGERPRINT must be ignored (section 14.6), a later MESSAGE-INTEGRITY too.
                MESSAGE_INTEGRITY_SHA256 if counted_end.is_none() => counted_end = Some(off),
                FINGERPRINT => {
                    if vlen != 4 || next != buf.len() {
                        return Err(StunError::BadFingerprint);
                    }
                    if !fingerprint_matches(buf, off) {
                        return Err(StunError::BadFingerprint);
                    }
                    msg.fingerprint = true;
                    counted_end.get_or_insert(off);
                }
                _ => {}
            }
            off = next;
        }
        msg.attrs_end = counted_end.unwrap_or(buf.len());
        Ok(msg)
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn class(&self) -> Class {
        self.class
    }

    pub fn transaction_id(&self) -> &TransactionId {
        &self.tid
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether the message carried MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether the message carried a FINGERPRINT (already verified by [`Message::parse`]).
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// The attributes before MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 (or before
    /// FINGERPRINT), in order.
    pub fn attrs(&self) -> AttrIter<'a> {
        AttrIter {
            buf: self.buf.get(..self.attrs_end).unwrap_or_default(),
            off: HEADER_LEN,
        }
    }

    /// The value of the first attribute of type `typ`.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs().find(|a| a.typ == typ).map(|a| a.value)
    }

    /// Check MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(off) = self.integrity else {
            return false;
        };
        let (Some(head), Some(body), Some(tag)) = (
            self.buf.get(..HEADER_LEN),
            self.buf.get(HEADER_LEN..off),
            self.buf.get(off + 4..off + 24),
        ) else {
            return false;
        };
        // The HMAC covers the message up to MESSAGE-INTEGRITY with the header length
        // rewritten to end just after it.
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(head);
        let covered = (off + 24 - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&covered.to_be_bytes());
        let Ok(mut mac) = HmacSha1::new_from_slice(key) else {
            return false;
        };
        mac.update(&header);
        mac.update(body);
        mac.verify_slice(tag).is_ok()
    }
}

/// Iterator over raw attributes of a structurally checked message.
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let (typ, vlen) = attr_header(self.buf, self.off).ok()?;
        let value = self.buf.get(self.off + 4..self.off + 4 + vlen)?;
        self.off += 4 + ((vlen + 3) & !3);
        Some(Attr { typ, value })
    }
}

fn attr_header(buf: &[u8], off: usize) -> Result<(u16, usize), StunError> {
    let h = buf.get(off..off + 4).ok_or(StunError::BadAttribute)?;
    Ok((
        u16::from_be_bytes([h[0], h[1]]),
        usize::from(u16::from_be_bytes([h[2], h[3]])),
    ))
}

fn fingerprint_matches(buf: &[u8], off: usize) -> bool {
    let (Some(head), Some(body), Some(value)) = (
        buf.get(..HEADER_LEN),
        buf.get(HEADER_LEN..off),
        buf.get(off + 4..off + 8),
    ) else {
        return false;
    };
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(head);
    let covered = (off + 8 - HEADER_LEN) as u16;
    header[2..4].copy_from_slice(&covered.to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(body);
    let want = crc.finalize() ^ FINGERPRINT_XOR;
    value == want.to_be_bytes()
}
