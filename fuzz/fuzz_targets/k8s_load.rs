//! The Kubernetes manifest loader and renderer over arbitrary YAML/JSON documents: no panic;
//! rendering is a pure function (the same objects render to the same output twice); and
//! every config the renderer produces is one stunnerd accepts: its JSON wire form (what the
//! operator serves over CDS) decodes and validates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stunnerd::config::parse_config;
use stunnerd::k8s::{Mode, output, parse_str, render, render_config_for};

/// The Pod environment stunnerd runs in (the operator renders `$STUNNER_ADDR` and friends
/// into configs for stunnerd to expand).
fn env(name: &str) -> Option<String> {
    match name {
        "STUNNER_ADDR" => Some("10.0.0.5".to_string()),
        "STUNNER_PORT" => Some("3478".to_string()),
        "STUNNER_PUBLIC_ADDR" => Some("192.0.2.10".to_string()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (objects, _errors) = parse_str(&text, "fuzz.yaml");
    for mode in [Mode::Managed, Mode::Legacy] {
        let out = render(&objects, mode);
        let json = output::to_json(&out);
        let yaml = output::to_yaml(&out);
        let again = render(&objects, mode);
        assert_eq!(json, output::to_json(&again), "render is not deterministic");
        assert_eq!(yaml, output::to_yaml(&again), "render is not deterministic");
        for config in &out.configs {
            let wire = serde_json::to_string(config).expect("a config serialises");
            if let Err(e) = parse_config(&wire, &env) {
                panic!("rendered config is rejected by stunnerd: {e}\n{wire}");
            }
        }
        for s in out.statuses.iter().filter(|s| s.kind == "Gateway") {
            let id = format!("{}/{}", s.metadata.namespace, s.metadata.name);
            let _ = render_config_for(&objects, &id, mode);
        }
    }
});
