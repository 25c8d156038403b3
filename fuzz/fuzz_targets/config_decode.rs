//! The config decoder (JSON and YAML, with environment expansion): any text, no panic; a
//! config that decodes and validates serialises (JSON and YAML, the wire form the operator
//! and CDS servers use) and decodes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stunnerd::config::{StunnerConfig, parse_config};

fn env(name: &str) -> Option<String> {
    match name {
        "STUNNER_ADDR" => Some("10.0.0.5".to_string()),
        "STUNNER_PORT" => Some("3478".to_string()),
        "RELAY" => Some("192.0.2.1".to_string()),
        _ => None,
    }
}

/// Whether serialised text holds something environment expansion would rewrite (`$NAME`,
/// `${...}`, `$1`...): the decoder expands the whole text before parsing (spec §2.1.4), so a
/// value that spells a variable reference (it can only come from an escape such as JSON's
/// `\u0024`) is not a fixed point of decode-encode. Such inputs skip the round trip.
fn expandable(text: &str) -> bool {
    let b = text.as_bytes();
    b.windows(2).any(|w| {
        w[0] == b'$'
            && (w[1] == b'{'
                || w[1] == b'_'
                || w[1].is_ascii_alphanumeric()
                || b"*#$@!?-".contains(&w[1]))
    })
}

fn round_trip(config: &StunnerConfig, text: &str, how: &str) {
    if expandable(text) {
        return;
    }
    match parse_config(text, &env) {
        Ok(again) => assert_eq!(
            &again.config, config,
            "{how} round trip changed the config; re-encoded text:\n{text}"
        ),
        Err(e) => panic!("{how} re-encoding does not decode: {e}\ntext:\n{text}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = parse_config(&text, &env) else {
        return;
    };
    let config = parsed.config;
    let json = serde_json::to_string(&config).expect("a config serialises to JSON");
    round_trip(&config, &json, "JSON");
    let yaml = serde_norway::to_string(&config).expect("a config serialises to YAML");
    round_trip(&config, &yaml, "YAML");
});
