//! Any bytes through the ChannelData view and the first-byte classifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stunnerd::stun::{ChannelData, classify};

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    if let Ok(cd) = ChannelData::parse(data) {
        assert!(cd.data.len() + 4 <= data.len());
        assert_eq!(cd.number & 0xC000, 0x4000);
    }
});
