//! TURN ChannelData framing (RFC 8656 section 12.4).

use super::StunError;

/// Length of the ChannelData header: channel number and length.
pub const CHANNEL_HEADER_LEN: usize = 4;

/// A borrowed ChannelData message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub number: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parse a ChannelData message at the start of `buf`. Bytes after the declared length
    /// (padding over UDP, or the next frame's bytes) are ignored. The number must be in the
    /// ChannelData space 0x4000-0x7FFF; whether it is bound is the core's business.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        let Some([n0, n1, l0, l1]) = buf.first_chunk::<4>().copied() else {
            return Err(StunError::Truncated);
        };
        let number = u16::from_be_bytes([n0, n1]);
        if number & 0xC000 != 0x4000 {
            return Err(StunError::NotChannelData);
        }
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let data = buf
            .get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)
            .ok_or(StunError::Truncated)?;
        Ok(ChannelData { number, data })
    }
}

/// Write a ChannelData header for `len` bytes of data on `number`.
#[inline]
pub fn write_channel_header(out: &mut [u8; CHANNEL_HEADER_LEN], number: u16, len: u16) {
    let [a, b] = number.to_be_bytes();
    let [c, d] = len.to_be_bytes();
    *out = [a, b, c, d];
}
