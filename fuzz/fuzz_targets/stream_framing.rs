//! TCP/TLS stream framing (RFC 8656 section 12.5): STUN messages and ChannelData frames,
//! padded to 4 bytes, cut from a byte stream that arrives in arbitrary chunks.
//!
//! The framer below is the one the stream transport runs (`stun::stream_frame_len` over an
//! accumulating buffer, frames cut as soon as they are complete). Checked:
//! * the frames cut from any chunking of the bytes equal the frames cut from them in one
//!   piece, and so does where the stream stops (unframeable bytes, or an incomplete tail);
//! * a frame's length is fixed by its first 4 bytes (every longer prefix agrees), so a frame
//!   never depends on how much of the next one has arrived;
//! * every ChannelData frame parses, carries exactly its declared length and is padded to a
//!   multiple of 4; every STUN frame that parses spans exactly its frame;
//! * in the structured mode the stream is built from frames written with our own writer, and
//!   exactly those frames come back out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stunnerd::stun::{
    CHANNEL_HEADER_LEN, ChannelData, Class, Kind, Message, MessageWriter, Method, attr, classify,
    stream_frame_len, write_channel_header,
};

/// Where a stream stopped being framed.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// All bytes framed except an incomplete tail of this many bytes.
    Tail(usize),
    /// The stream cannot be framed from this absolute offset on.
    Unframeable(usize),
}

#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    /// Absolute stream offset of `buf[0]`.
    base: usize,
    frames: Vec<Vec<u8>>,
    dead: Option<usize>,
}

impl Framer {
    fn push(&mut self, chunk: &[u8]) {
        if self.dead.is_some() {
            return;
        }
        self.buf.extend_from_slice(chunk);
        let mut off = 0;
        loop {
            match stream_frame_len(&self.buf[off..]) {
                Ok(Some(len)) if self.buf.len() - off >= len => {
                    check_frame(&self.buf[off..off + len]);
                    self.frames.push(self.buf[off..off + len].to_vec());
                    off += len;
                }
                Ok(_) => break,
                Err(_) => {
                    self.dead = Some(self.base + off);
                    break;
                }
            }
        }
        self.buf.drain(..off);
        self.base += off;
    }

    fn end(&self) -> End {
        match self.dead {
            Some(at) => End::Unframeable(at),
            None => End::Tail(self.buf.len()),
        }
    }
}

fn check_frame(frame: &[u8]) {
    let len = frame.len();
    // The length is decided by the first 4 bytes: every prefix from 4 bytes on agrees.
    for cut in [4, 5, 8, 20, len.saturating_sub(1), len] {
        if (4..=len).contains(&cut) {
            assert_eq!(stream_frame_len(&frame[..cut]), Ok(Some(len)));
        }
    }
    match classify(frame) {
        Kind::ChannelData => {
            let cd = ChannelData::parse(frame).expect("a framed ChannelData must parse");
            let declared = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
            assert_eq!(cd.data.len(), declared);
            assert_eq!(
                cd.data,
                &frame[CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + declared]
            );
            assert_eq!(len % 4, 0, "ChannelData over a stream is padded to 4 bytes");
            assert!(len - CHANNEL_HEADER_LEN - declared < 4);
        }
        Kind::Stun => {
            if let Ok(msg) = Message::parse(frame) {
                assert_eq!(msg.as_bytes().len(), len);
            }
        }
        Kind::Other => panic!("framed bytes that are neither STUN nor ChannelData"),
    }
}

/// Chunk lengths from the control bytes: 1..=64 bytes each, cycling.
fn chunked(stream: &[u8], control: &[u8]) -> Framer {
    let mut f = Framer::default();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let c = control.get(i % control.len().max(1)).copied().unwrap_or(0);
        let n = (usize::from(c) % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        f.push(chunk);
        rest = tail;
        i += 1;
    }
    f
}

/// Build a stream of frames from a recipe, returning the stream and the frames.
fn build(recipe: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    let mut rest = recipe;
    while let [sel, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let mut frame = vec![0u8; 4 + 4 * 1024];
        let flen = if sel & 1 == 0 {
            // ChannelData on channel 0x4000 + sel, padded with zeros.
            let mut h = [0u8; CHANNEL_HEADER_LEN];
            write_channel_header(&mut h, 0x4000 | u16::from(*sel), n as u16);
            frame[..4].copy_from_slice(&h);
            frame[4..4 + n].copy_from_slice(body);
            4 + ((n + 3) & !3)
        } else {
            let tid = [*sel; 12];
            let Ok(mut w) = MessageWriter::new(&mut frame, Method::Send, Class::Indication, &tid)
            else {
                continue;
            };
            if w.add(attr::DATA, body).is_err() {
                continue;
            }
            if sel & 2 != 0 && w.add_fingerprint().is_err() {
                continue;
            }
            w.finish()
        };
        frame.truncate(flen);
        stream.extend_from_slice(&frame);
        frames.push(frame);
    }
    (stream, frames)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let split = usize::from(mode >> 1).min(data.len());
    let (control, payload) = data.split_at(split.min(16));
    let (stream, expected) = if mode & 1 == 1 {
        let (s, f) = build(payload);
        (s, Some(f))
    } else {
        (payload.to_vec(), None)
    };

    let mut whole = Framer::default();
    whole.push(&stream);
    let pieces = chunked(&stream, control);
    let bytewise = chunked(&stream, &[0]);
    assert_eq!(whole.frames, pieces.frames);
    assert_eq!(whole.end(), pieces.end());
    assert_eq!(whole.frames, bytewise.frames);
    assert_eq!(whole.end(), bytewise.end());
    if let Some(expected) = expected {
        assert_eq!(whole.frames, expected);
        assert_eq!(whole.end(), End::Tail(0));
    }
});
