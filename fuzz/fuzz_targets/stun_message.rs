//! Any bytes through the STUN message reader and every typed decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stunnerd::stun::{Message, attr, stream_frame_len};

fuzz_target!(|data: &[u8]| {
    let _ = stream_frame_len(data);
    if let Ok(msg) = Message::parse(data) {
        for a in msg.attrs() {
            let _ = attr::decode_xor_addr(a.value, msg.transaction_id());
            let _ = attr::decode_addr(a.value);
            let _ = attr::decode_error_code(a.value);
            let _ = attr::decode_str(a.value);
            let _ = attr::decode_u32(a.value);
            let _ = attr::decode_channel_number(a.value);
            let _ = attr::decode_even_port(a.value);
            let _ = attr::decode_token(a.value);
        }
        let _ = msg.verify_integrity(b"fuzz-key");
    }
});
