//! Every example config in `config/` must parse and validate, so the examples cannot rot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use stunnerd::config::{AuthType, ClusterType, ListenerProtocol, Parsed, parse_config};

/// The environment the operator's Deployment provides (spec §1.5); the examples use
/// `$STUNNER_ADDR` like operator-rendered configs do.
fn pod_env(name: &str) -> Option<String> {
    let env: HashMap<&str, &str> = [("STUNNER_ADDR", "10.0.0.5")].into_iter().collect();
    env.get(name).map(|v| v.to_string())
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn load(name: &str) -> Parsed {
    let path = config_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_config(&text, &pod_env)
        .unwrap_or_else(|e| panic!("{} does not validate:\n{e}", path.display()))
}

#[test]
fn every_example_parses_without_warnings() {
    let mut seen = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("readable dir entry").path();
        let is_config = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "json" | "yaml" | "yml" | "conf"));
        if !is_config {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let parsed = load(name);
        assert!(parsed.warnings.is_empty(), "{name}: {:?}", parsed.warnings);
        assert!(!parsed.config.is_zero(), "{name} is a zero config");
        seen += 1;
    }
    assert!(
        seen >= 4,
        "expected at least 4 example configs, found {seen}"
    );
}

#[test]
fn udp_example() {
    let c = load("stunnerd-udp.yaml").config;
    assert_eq!(c.auth.auth_type, AuthType::Static);
    assert_eq!(c.auth.credentials["username"], "user-1");
    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::TurnUdp);
    assert_eq!(l.relay_ip().to_string(), "127.0.0.1");
    assert_eq!(l.port, 3478);
    assert_eq!(c.clusters[0].endpoints, ["127.0.0.1/32"]);
}

#[test]
fn ephemeral_example_keeps_dollar_in_secret() {
    let c = load("stunnerd-ephemeral.json").config;
    assert_eq!(c.auth.auth_type, AuthType::Ephemeral);
    assert_eq!(c.auth.credentials["secret"], "my-$hared-secret");
    assert_eq!(c.admin.metrics_endpoint, "http://:8080/metrics");
}

#[test]
fn full_example() {
    let c = load("stunnerd-full.json").config;
    assert_eq!(c.admin.user_quota, 10);
    assert_eq!(c.auth.realm, "turn.example.net");
    let protocols: Vec<&str> = c.listeners.iter().map(|l| l.protocol.as_str()).collect();
    assert_eq!(protocols, ["TURN-UDP", "TURN-TCP", "TURN-TLS", "TURN-DTLS"]);
    assert!(c.listeners.iter().all(|l| l.address == "10.0.0.5"));
    // Routes are sorted.
    assert_eq!(c.listeners[0].routes, ["media/recorder", "media/sfu"]);
    let recorder = c.cluster("media/recorder").expect("recorder cluster");
    assert_eq!(recorder.cluster_type, ClusterType::StrictDns);
}

#[test]
fn operator_example() {
    let c = load("operator-udp-gateway.json").config;
    assert_eq!(c.admin.name, "stunner/udp-gateway");
    assert_eq!(
        c.admin.healthcheck_endpoint.as_deref(),
        Some("http://:8086")
    );
    let l = &c.listeners[0];
    assert_eq!(l.relay_ip().to_string(), "10.0.0.5");
    assert_eq!(
        (l.public_address.as_str(), l.public_port),
        ("198.51.100.20", 3478)
    );
    assert_eq!(c.clusters[0].endpoints, ["10.76.1.3", "10.80.7.104"]);
}
