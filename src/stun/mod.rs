//! STUN wire format (RFC 8489), sans-IO and zero-copy.
//!
//! Everything here works on borrowed byte slices: [`Message`] is a checked view over a
//! received datagram, [`MessageWriter`] writes a message into a caller's buffer, and
//! [`ChannelData`] is the TURN ChannelData framing (RFC 8656 section 12). No function in
//! this module allocates, panics on any input, or touches a socket or a clock.
//!
//! Why not `stun-rs`: it decodes each message into owned attribute values (heap-allocated
//! strings and vectors) and has no borrowed view, which is the wrong shape for a relay whose
//! data path must not allocate. Its types also cover far more than a TURN server answers.

pub mod attr;
mod channel;
mod message;
mod writer;

pub use channel::{CHANNEL_HEADER_LEN, ChannelData, write_channel_header};
pub use message::{Attr, AttrIter, Message};
pub use writer::MessageWriter;

/// The fixed magic cookie of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// The XOR applied to the CRC-32 of a FINGERPRINT attribute.
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// A 96-bit transaction id.
pub type TransactionId = [u8; 12];

/// What the first bytes of a datagram say it is (RFC 7983 demultiplexing, first two bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Top bits `00`: a STUN message.
    Stun,
    /// Top bits `01`: TURN ChannelData.
    ChannelData,
    /// Anything else (DTLS, RTP, garbage, or too short to tell).
    Other,
}

/// Classify a datagram or a stream frame by its first byte.
#[inline]
pub fn classify(buf: &[u8]) -> Kind {
    match buf.first().map(|b| b >> 6) {
        Some(0) => Kind::Stun,
        Some(1) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// The length of the next complete STUN message or ChannelData frame at the start of a
/// byte stream (RFC 8656 section 12.5: ChannelData is padded to 4 bytes over streams), or
/// `None` when fewer than 4 bytes are available. Returns `Err` when the stream cannot be
/// framed (it does not start with STUN or ChannelData).
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, StunError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match classify(buf) {
        Kind::Stun => Ok(Some(HEADER_LEN + len)),
        Kind::ChannelData => Ok(Some(CHANNEL_HEADER_LEN + ((len + 3) & !3))),
        Kind::Other => Err(StunError::NotStun),
    }
}

/// STUN message classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// The methods a TURN server meets (RFC 8489, RFC 8656, RFC 6062).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
    ConnectionAttempt,
    /// Any other 12-bit method number.
    Other(u16),
}

impl Method {
    pub const fn number(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
            Method::Connect => 0x00A,
            Method::ConnectionBind => 0x00B,
            Method::ConnectionAttempt => 0x00C,
            Method::Other(n) => n & 0x0FFF,
        }
    }

    pub const fn from_number(n: u16) -> Method {
        match n {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            0x00A => Method::Connect,
            0x00B => Method::ConnectionBind,
            0x00C => Method::ConnectionAttempt,
            n => Method::Other(n),
        }
    }
}

/// Encode method and class into the 14-bit message type (RFC 8489 section 5).
pub const fn message_type(method: Method, class: Class) -> u16 {
    let m = method.number();
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Decode a 16-bit message type into method and class. The top two bits must be zero.
pub const fn split_message_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (Method::from_number(m), class)
}

/// Everything that can be wrong with bytes on the wire. Small and `Copy`: the core maps
/// it to a STUN error code or a counted silent drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("not a STUN message")]
    NotStun,
    #[error("message truncated")]
    Truncated,
    #[error("bad magic cookie")]
    BadCookie,
    #[error("length not a multiple of 4")]
    BadLength,
    #[error("attribute overruns the message")]
    BadAttribute,
    #[error("FINGERPRINT is not the last attribute or does not match")]
    BadFingerprint,
    #[error("malformed attribute value")]
    BadValue,
    #[error("buffer too small")]
    BufferTooSmall,
    #[error("not a ChannelData message")]
    NotChannelData,
}

#[cfg(test)]
mod tests;
