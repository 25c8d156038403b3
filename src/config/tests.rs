//! Parsing, defaults, env expansion and serialisation. Error strings are in `tests_errors`.

use std::collections::HashMap;

use super::*;

/// An environment made of `pairs`, as the `env` closure of [`parse_config`] sees it.
pub(super) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

pub(super) fn parse(text: &str) -> Parsed {
    parse_with(text, &[])
}

pub(super) fn parse_with(text: &str, env: &[(&str, &str)]) -> Parsed {
    match parse_config(text, &env_of(env)) {
        Ok(p) => p,
        Err(e) => panic!("unexpected config error:\n{e}"),
    }
}

const MINIMAL: &str = r#"{
  "version": "v1",
  "auth": { "credentials": { "username": "alice", "password": "wonderland" } },
  "listeners": [ { "name": "udp", "address": "192.0.2.10", "routes": ["media"] } ],
  "clusters":  [ { "name": "media", "endpoints": ["10.0.0.0/8"] } ]
}"#;

#[test]
fn minimal_example_gets_spec_defaults() {
    let p = parse(MINIMAL);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let c = p.config;
    assert_eq!(c.version, "v1");
    assert_eq!(c.admin.name, "default-stunnerd");
    assert_eq!(c.admin.loglevel, "all:INFO");
    assert_eq!(c.admin.metrics_endpoint, "");
    assert_eq!(
        c.admin.healthcheck_endpoint.as_deref(),
        Some("http://:8086")
    );
    assert_eq!(c.admin.user_quota, 0);
    assert_eq!(c.admin.offload_engine, "None");
    assert!(c.admin.offload_interfaces.is_empty());
    assert_eq!(c.admin.license_config, None);
    assert_eq!(c.auth.auth_type, AuthType::Static);
    assert_eq!(c.auth.realm, "stunner.l7mp.io");
    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::TurnUdp);
    assert_eq!(l.port, 3478);
    assert_eq!(l.relay_ip().to_string(), "192.0.2.10");
    assert_eq!((l.min_relay_port, l.max_relay_port), (None, None));
    let cl = &c.clusters[0];
    assert_eq!(cl.cluster_type, ClusterType::Static);
    assert_eq!(cl.protocol, ClusterProtocol::Udp);
}

#[test]
fn yaml_and_defaults_for_absent_sections() {
    let c = parse("version: v1\nauth:\n  type: none\n").config;
    assert_eq!(c.auth.auth_type, AuthType::None);
    assert_eq!(c.admin, AdminConfig::default());
    assert!(c.listeners.is_empty() && c.clusters.is_empty());
    // An address that expands to nothing is the default, with a warning.
    let p =
        parse("version: v1\nauth: {type: none}\nlisteners: [{name: a, address: $STUNNER_ADDR}]");
    assert_eq!(p.config.listeners[0].address, "0.0.0.0");
    assert!(
        p.warnings[0].starts_with("listeners[0].address: relay address"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn healthcheck_endpoint_pointer_semantics() {
    let c = parse("version: v1\nauth: {type: none}\nadmin: {healthcheck_endpoint: \"\"}").config;
    assert_eq!(c.admin.healthcheck_endpoint.as_deref(), Some(""));
    let c = parse("version: v1\nauth: {type: none}\nadmin: {healthcheck_endpoint: null}").config;
    assert_eq!(
        c.admin.healthcheck_endpoint.as_deref(),
        Some("http://:8086")
    );
}

#[test]
fn normalisation_of_enums_and_lists() {
    let p = parse(
        r#"version: v1
admin: {offload_engine: xdp, offload_interfaces: [eth1, eth0], user_quota: -5}
auth: {type: longterm, credentials: {secret: s}}
listeners:
  - {name: a, protocol: turn-tcp, routes: [z, a, m]}
  - {name: b, protocol: dtls, port: 3479, cert: c, key: k}
  - {name: c, protocol: Udp, address: localhost}
clusters:
  - {name: z, type: strict_dns, protocol: tcp, endpoints: [b.example, a.example]}
  - {name: a, endpoints: ["10.0.0.2", "10.0.0.1:<1-2>"]}
  - {name: m, endpoints: []}
"#,
    );
    let c = p.config;
    assert_eq!(c.admin.offload_engine, "XDP");
    assert_eq!(c.admin.offload_interfaces, ["eth0", "eth1"]);
    assert_eq!(c.admin.user_quota, 0);
    assert_eq!(c.auth.auth_type, AuthType::Ephemeral);
    assert_eq!(c.listeners[0].protocol, ListenerProtocol::TurnTcp);
    assert_eq!(c.listeners[0].routes, ["a", "m", "z"]);
    assert_eq!(c.listeners[1].protocol.as_str(), "TURN-DTLS");
    assert_eq!(c.listeners[2].protocol, ListenerProtocol::TurnUdp);
    assert_eq!(c.listeners[2].address, "localhost");
    assert_eq!(c.listeners[2].relay_ip().to_string(), "127.0.0.1");
    assert_eq!(c.clusters[0].cluster_type, ClusterType::StrictDns);
    assert_eq!(c.clusters[0].protocol, ClusterProtocol::Tcp);
    assert_eq!(c.clusters[0].endpoints, ["a.example", "b.example"]);
    assert_eq!(c.clusters[1].endpoints, ["10.0.0.1:<1-2>", "10.0.0.2"]);
    // Listeners a and b have no usable relay address.
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
}

#[test]
fn v1alpha1_is_converted() {
    let c = parse(
        "version: v1alpha1\nauth: {type: plaintext, credentials: {username: u, password: p}}",
    )
    .config;
    assert_eq!(c.version, "v1");
    assert_eq!(c.auth.auth_type, AuthType::Static);
}

#[test]
fn keys_match_case_insensitively() {
    let c = parse(
        r#"{"Version":"v1",
            "ADMIN":{"logLevel":"all:DEBUG","Name":"x/y","Metrics_Endpoint":"http://:8080/metrics"},
            "Auth":{"Type":"static","Realm":"r","Credentials":{"username":"u","password":"p"}},
            "Listeners":[{"Name":"l","Protocol":"TURN-TCP","Address":"10.0.0.1","PORT":5000,"Public_Address":"1.2.3.4","Public_Port":30000}],
            "Clusters":[{"NAME":"c","Type":"STATIC","Endpoints":["10.0.0.0/8"]}]}"#,
    )
    .config;
    assert_eq!(c.admin.loglevel, "all:DEBUG");
    assert_eq!(c.admin.name, "x/y");
    assert_eq!(c.admin.metrics_endpoint, "http://:8080/metrics");
    assert_eq!(c.auth.realm, "r");
    assert_eq!(c.listeners[0].port, 5000);
    assert_eq!(c.listeners[0].public_address, "1.2.3.4");
    assert_eq!(c.listeners[0].public_port, 30000);
    assert_eq!(c.clusters[0].name, "c");
}

#[test]
fn credential_keys_are_not_case_folded() {
    let err = parse_config(
        "version: v1\nauth: {credentials: {Username: u, Password: p}}",
        &env_of(&[]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "auth.credentials: static: empty username or password"
    );
}

#[test]
fn unknown_keys_are_warnings_with_paths() {
    let p = parse(
        r#"version: v1
admin: {health-check: "http://:1", realm: old}
auth: {credentials: {username: u, password: p, extra: kept}}
listeners: [{name: l, address: 10.0.0.1, foo: 1}]
clusters: [{name: c, bar: [1]}]
extra: true
"#,
    );
    assert_eq!(
        p.warnings,
        [
            // The root is scanned before its sections are decoded.
            "unknown key `extra` ignored",
            "unknown key `admin.health-check` ignored",
            "unknown key `admin.realm` ignored",
            "unknown key `listeners[0].foo` ignored",
            "unknown key `clusters[0].bar` ignored",
        ]
    );
    // Unknown credential keys are not warned about: they are just map entries.
    assert_eq!(p.config.auth.credentials["extra"], "kept");
}

#[test]
fn env_expansion_spares_credentials() {
    let text = r#"version: v1
admin: {name: "$NS/${NAME}"}
auth:
  credentials:
    username: "$USER_NAME"
    password: "pa$$word"
listeners: [{name: l, address: $STUNNER_ADDR, public_address: "${PUBLIC}x"}]
"#;
    let env = [
        ("NS", "media"),
        ("NAME", "gw"),
        ("USER_NAME", "expanded"),
        ("STUNNER_ADDR", "10.1.2.3"),
    ];
    let c = parse_with(text, &env).config;
    assert_eq!(c.admin.name, "media/gw");
    assert_eq!(c.listeners[0].address, "10.1.2.3");
    assert_eq!(c.listeners[0].public_address, "x");
    assert_eq!(c.auth.credentials["username"], "$USER_NAME");
    assert_eq!(c.auth.credentials["password"], "pa$$word");
}

#[test]
fn ephemeral_secret_with_dollar_survives_in_json() {
    let text =
        r#"{"version":"v1","auth":{"type":"ephemeral","credentials":{"secret":"$ecret-${X}"}}}"#;
    let c = parse_with(text, &[("X", "no"), ("ecret", "no")]).config;
    assert_eq!(c.auth.credentials["secret"], "$ecret-${X}");
}

#[test]
fn numeric_placeholders_are_accepted() {
    let text = r#"version: v1
auth: {type: none}
admin: {user_quota: "$QUOTA"}
listeners: [{name: l, address: 10.0.0.1, port: "$STUNNER_PORT", public_port: $PP}]
"#;
    let c = parse_with(text, &[("QUOTA", "7"), ("PP", "30478")]).config;
    assert_eq!(c.listeners[0].port, 3478, "STUNNER_PORT falls back to 3478");
    assert_eq!(c.listeners[0].public_port, 30478);
    assert_eq!(c.admin.user_quota, 7);
    let c = parse_with(text, &[("QUOTA", "1"), ("STUNNER_PUBLIC_PORT", "443")]).config;
    assert_eq!(c.listeners[0].port, 443);
    let c = parse_with(text, &[("QUOTA", "1"), ("STUNNER_PORT", "5349")]).config;
    assert_eq!(c.listeners[0].port, 5349);
}

#[test]
fn text_only_valid_after_expansion_is_accepted_with_warning() {
    // `${PORT}` is not a valid plain scalar in a JSON (flow) mapping before expansion.
    let text = r#"{"version":"v1","auth":{"type":"none"},"listeners":[{"name":"l","address":"10.0.0.1","port":${PORT}}]}"#;
    let p = parse_with(text, &[("PORT", "4000")]);
    assert_eq!(p.config.listeners[0].port, 4000);
    assert!(
        p.warnings[0].contains("environment-expanded"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn yaml_merge_keys_and_tags() {
    let c = parse(
        r#"version: v1
auth: {type: none}
defaults: &d {protocol: TURN-TCP, port: !!str 4000, address: 10.0.0.1}
listeners:
  - <<: *d
    name: a
"#,
    )
    .config;
    assert_eq!(c.listeners[0].protocol, ListenerProtocol::TurnTcp);
    assert_eq!(c.listeners[0].port, 4000);
}

#[test]
fn port_zero_means_default_and_null_means_absent() {
    let c = parse("version: v1\nauth: {type: none}\nlisteners: [{name: l, address: 10.0.0.1, port: 0, protocol: null}]").config;
    assert_eq!(c.listeners[0].port, 3478);
    assert_eq!(c.listeners[0].protocol, ListenerProtocol::TurnUdp);
}

#[test]
fn relay_port_extension() {
    let c = parse("version: v1\nauth: {type: none}\nlisteners: [{name: l, address: 10.0.0.1, min_relay_port: 10000, max_relay_port: 20000}]").config;
    assert_eq!(c.listeners[0].min_relay_port, Some(10000));
    assert_eq!(c.listeners[0].max_relay_port, Some(20000));
}

#[test]
fn json_round_trip_of_serialize() {
    let full = parse_with(
        include_str!("../../config/stunnerd-full.json"),
        &[("STUNNER_ADDR", "10.0.0.5")],
    )
    .config;
    let json = serde_json::to_string(&full).unwrap();
    // Listener addresses are already expanded; nothing in the output needs the env.
    assert_eq!(parse(&json).config, full);
    let yaml = serde_norway::to_string(&full).unwrap();
    assert_eq!(parse(&yaml).config, full);
}

/// Found by the config_decode fuzz target: a JSON string holding U+0085 (or U+2028, U+2029)
/// came back as a space when the JSON text was read as YAML, so a serialised config did not
/// decode to itself.
#[test]
fn json_strings_keep_yaml_line_break_characters() {
    for c in ['\u{85}', '\u{2028}', '\u{2029}'] {
        let mut full = parse(MINIMAL).config;
        full.admin.name = format!("a{c}b");
        let json = serde_json::to_string(&full).unwrap();
        assert!(json.contains(c), "serde_json writes the character raw");
        assert_eq!(parse(&json).config, full);
    }
}

#[test]
fn serialize_uses_upstream_keys_and_omitempty() {
    let c = parse(MINIMAL).config;
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "version": "v1",
            "admin": {"name": "default-stunnerd", "loglevel": "all:INFO",
                      "healthcheck_endpoint": "http://:8086", "offload_engine": "None"},
            "auth": {"type": "static", "realm": "stunner.l7mp.io",
                     "credentials": {"password": "wonderland", "username": "alice"}},
            "listeners": [{"name": "udp", "protocol": "TURN-UDP", "address": "192.0.2.10",
                           "port": 3478, "routes": ["media"]}],
            "clusters": [{"name": "media", "type": "STATIC", "protocol": "UDP",
                          "endpoints": ["10.0.0.0/8"]}]
        })
    );
    // Empty lists are omitted; the disabled health check ("") is not.
    let mut z = zero_config("a/b");
    z.admin.healthcheck_endpoint = Some(String::new());
    let s = serde_json::to_string(&z).unwrap();
    assert!(!s.contains("listeners") && !s.contains("clusters"), "{s}");
    assert!(s.contains(r#""healthcheck_endpoint":"""#), "{s}");
}

#[test]
fn debug_masks_secrets() {
    let mut c = parse(MINIMAL).config;
    c.listeners[0].key = "PRIVATE-KEY-MATERIAL".into();
    c.admin.license_config = Some(LicenseConfig {
        key: "k".into(),
        hmac: "HMAC-VALUE".into(),
    });
    let dbg = format!("{c:?}");
    for secret in ["wonderland", "alice", "PRIVATE-KEY-MATERIAL", "HMAC-VALUE"] {
        assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
    }
    assert!(
        dbg.contains("username") && dbg.contains("<SECRET>"),
        "{dbg}"
    );
}

#[test]
fn zero_config_and_delete_detection() {
    let z = zero_config("stunner/udp-gateway");
    assert!(z.is_zero());
    assert!(validate(&z).is_ok());
    // What the CDS server sends for a deleted config parses into a zero config.
    let wire = zero_config_wire("stunner/udp-gateway");
    assert_eq!(
        wire,
        r#"{"version":"v1","admin":{"name":"stunner/udp-gateway"},"auth":{"type":"static","realm":"stunner.l7mp.io","credentials":{"password":"dummy-password","username":"dummy-username"}}}"#
    );
    let parsed = parse(&wire).config;
    assert_eq!(parsed, z);
    assert!(parsed.is_zero());
    // The loglevel counts for delete detection but not for readiness.
    let mut quiet = parsed.clone();
    quiet.admin.loglevel = "all:WARN".into();
    assert!(!quiet.is_zero());
    assert!(quiet.is_zero_ignoring_loglevel());
    // Anything else is not a zero config.
    let mut other = z.clone();
    other
        .auth
        .credentials
        .insert("password".into(), "real".into());
    assert!(!other.is_zero());
    assert!(!parse(MINIMAL).config.is_zero());
}
