//! Writing STUN messages into a caller's buffer.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::attr::{self, ERROR_CODE, FINGERPRINT, MESSAGE_INTEGRITY, UNKNOWN_ATTRIBUTES};
use super::{
    Class, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE, Method, StunError, TransactionId,
    message_type,
};

type HmacSha1 = Hmac<Sha1>;

/// Builds one message in place. Every `add_*` keeps the header length current, so the
/// buffer holds a valid message after each call; [`MessageWriter::finish`] returns its
/// length. Errors only when the buffer is too small.
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
}

impl<'b> MessageWriter<'b> {
    pub fn new(
        buf: &'b mut [u8],
        method: Method,
        class: Class,
        tid: &TransactionId,
    ) -> Result<Self, StunError> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(StunError::BufferTooSmall)?;
        header[0..2].copy_from_slice(&message_type(method, class).to_be_bytes());
        header[2..4].copy_from_slice(&[0, 0]);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(tid);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
            tid: *tid,
        })
    }

    /// Add an attribute with a raw value (padded with zeros).
    pub fn add(&mut self, typ: u16, value: &[u8]) -> Result<(), StunError> {
        let slot = self.reserve(typ, value.len())?;
        slot.copy_from_slice(value);
        Ok(())
    }

    /// Reserve an attribute of `len` value bytes and return the value slot to fill.
    pub fn reserve(&mut self, typ: u16, len: usize) -> Result<&mut [u8], StunError> {
        let vlen = u16::try_from(len).map_err(|_| StunError::BufferTooSmall)?;
        let padded = (len + 3) & !3;
        let start = self.len;
        let end = start + 4 + padded;
        let new_body = u16::try_from(end - HEADER_LEN).map_err(|_| StunError::BufferTooSmall)?;
        let area = self
            .buf
            .get_mut(start..end)
            .ok_or(StunError::BufferTooSmall)?;
        area[0..2].copy_from_slice(&typ.to_be_bytes());
        area[2..4].copy_from_slice(&vlen.to_be_bytes());
        area[4 + len..].fill(0);
        self.len = end;
        self.buf[2..4].copy_from_slice(&new_body.to_be_bytes());
        Ok(&mut self.buf[start + 4..start + 4 + len])
    }

    pub fn add_u32(&mut self, typ: u16, v: u32) -> Result<(), StunError> {
        self.add(typ, &v.to_be_bytes())
    }

    /// An XOR-encoded address attribute (XOR-MAPPED/RELAYED/PEER-ADDRESS).
    pub fn add_xor_addr(&mut self, typ: u16, addr: SocketAddr) -> Result<(), StunError> {
        let mut v = [0u8; 20];
        let n = attr::encode_addr(&mut v, addr, Some(&self.tid));
        self.add(typ, &v[..n])
    }

    /// A plain address attribute (MAPPED-ADDRESS).
    pub fn add_addr(&mut self, typ: u16, addr: SocketAddr) -> Result<(), StunError> {
        let mut v = [0u8; 20];
        let n = attr::encode_addr(&mut v, addr, None);
        self.add(typ, &v[..n])
    }

    /// ERROR-CODE with the standard reason phrase.
    pub fn add_error_code(&mut self, code: u16) -> Result<(), StunError> {
        let reason = attr::reason_phrase(code).as_bytes();
        let slot = self.reserve(ERROR_CODE, 4 + reason.len())?;
        slot[0] = 0;
        slot[1] = 0;
        slot[2] = (code / 100) as u8;
        slot[3] = (code % 100) as u8;
        slot[4..].copy_from_slice(reason);
        Ok(())
    }

    /// UNKNOWN-ATTRIBUTES listing `types`.
    pub fn add_unknown_attributes(&mut self, types: &[u16]) -> Result<(), StunError> {
        let slot = self.reserve(UNKNOWN_ATTRIBUTES, types.len() * 2)?;
        for (chunk, t) in slot.chunks_exact_mut(2).zip(types) {
            chunk.copy_from_slice(&t.to_be_bytes());
        }
        Ok(())
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1 with the long-term key) over everything so far.
    pub fn add_integrity(&mut self, key: &[u8]) -> Result<(), StunError> {
        let start = self.len;
        self.reserve(MESSAGE_INTEGRITY, 20)?;
        // The header length already covers the attribute, as the HMAC requires.
        let mut mac = HmacSha1::new_from_slice(key).map_err(|_| StunError::BadValue)?;
        mac.update(&self.buf[..start]);
        let tag = mac.finalize().into_bytes();
        self.buf[start + 4..start + 24].copy_from_slice(&tag);
        Ok(())
    }

    /// FINGERPRINT over everything so far; must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<(), StunError> {
        let start = self.len;
        self.reserve(FINGERPRINT, 4)?;
        let crc = crc32fast::hash(&self.buf[..start]) ^ FINGERPRINT_XOR;
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Finish, returning the message length.
    pub fn finish(self) -> usize {
        self.len
    }
}
