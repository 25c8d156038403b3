//! Error reporting (exact strings and paths) and the TURN-URI default config.

use super::tests::env_of;
use super::*;

/// The errors of `text`, one `path: message` string each.
fn errors(text: &str) -> Vec<String> {
    match parse_config(text, &env_of(&[])) {
        Ok(p) => panic!("expected errors, got {:?}", p.config),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

/// The single error of `text`.
fn error(text: &str) -> String {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap_or_default()
}

const AUTH: &str = "auth: {credentials: {username: u, password: p}}";

fn with_listener(listener: &str) -> String {
    format!("version: v1\n{AUTH}\nlisteners: [{listener}]")
}

fn with_cluster(cluster: &str) -> String {
    format!("version: v1\n{AUTH}\nclusters: [{cluster}]")
}

#[test]
fn version_errors() {
    assert_eq!(
        error("version: v2\nlisteners: [{port: x}]"),
        r#"version: unsupported API version: "v2""#
    );
    assert_eq!(error(AUTH), r#"version: unsupported API version: """#);
    assert_eq!(error(""), r#"version: unsupported API version: """#);
    assert_eq!(
        error("version: 1"),
        "version: invalid type: integer `1`, expected a string"
    );
}

#[test]
fn syntax_and_root_errors() {
    let e = error("version: v1\n  bad: [");
    assert!(e.starts_with("cannot parse config: "), "{e}");
    assert_eq!(
        error("[1, 2]"),
        "invalid type: sequence, expected a STUNner config object"
    );
}

#[test]
fn admin_errors() {
    assert_eq!(
        error(&format!(
            "version: v1\n{AUTH}\nadmin: {{offload_engine: ebpf}}"
        )),
        r#"admin.offload_engine: unknown offload mode: "ebpf""#
    );
    assert_eq!(
        error(&format!(
            "version: v1\n{AUTH}\nadmin: {{metrics_endpoint: \"http://:8080/%zz\"}}"
        )),
        r#"admin.metrics_endpoint: invalid metric server endpoint URL http://:8080/%zz: invalid URL escape "%zz""#
    );
    assert_eq!(
        error(&format!("version: v1\n{AUTH}\nadmin: {{user_quota: 1.5}}")),
        "admin.user_quota: invalid type: floating point `1.5`, expected u32"
    );
    assert_eq!(
        error(&format!("version: v1\n{AUTH}\nadmin: [1]")),
        "admin: invalid type: sequence, expected struct AdminConfig"
    );
}

#[test]
fn auth_errors() {
    assert_eq!(
        error("version: v1\nauth: {type: Static, credentials: {username: u, password: p}}"),
        r#"auth.type: unknown authentication type: "Static""#
    );
    assert_eq!(
        error("version: v1\nauth: {credentials: {username: u}}"),
        "auth.credentials: static: empty username or password"
    );
    assert_eq!(
        error("version: v1"),
        "auth.credentials: static: empty username or password"
    );
    assert_eq!(
        error("version: v1\nauth: {type: ephemeral, credentials: {username: u}}"),
        "auth.credentials: no secret found in ephemeral auth config"
    );
    assert_eq!(
        error("version: v1\nauth: {credentials: {username: u, password: 1234}}"),
        "auth.credentials.password: invalid type: integer `1234`, expected a string"
    );
    // Empty values are fine as long as the keys are there (upstream behaviour).
    let ok = parse_config(
        r#"{"version":"v1","auth":{"credentials":{"username":"","password":""}}}"#,
        &env_of(&[]),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn listener_errors() {
    assert_eq!(
        error(&with_listener("{address: 10.0.0.1, protocol: TURN-UDP}")),
        r#"listeners[0].name: missing name in listener configuration: "-":{turn://10.0.0.1:3478?transport=TURN-UDP,public=-:-,cert/key=-/-,routes=[]}"#
    );
    assert_eq!(
        error(&with_listener(
            "{name: l, address: 10.0.0.1, protocol: FOO}"
        )),
        r#"listeners[0].protocol: unknown listener protocol: "FOO""#
    );
    assert_eq!(
        error(&with_listener("{name: l, address: 10.0.0.1, port: 70000}")),
        "listeners[0].port: invalid port: 70000"
    );
    assert_eq!(
        error(&with_listener("{name: l, address: 10.0.0.1, port: -1}")),
        "listeners[0].port: invalid port: -1"
    );
    assert_eq!(
        error(&with_listener("{name: l, address: 10.0.0.1, port: abc}")),
        r#"listeners[0].port: invalid type: string "abc", expected u16"#
    );
    assert_eq!(
        error(&with_listener("{name: l, address: 10.0.0.1, port: 3478.0}")),
        "listeners[0].port: invalid type: floating point `3478.0`, expected u16"
    );
    assert_eq!(
        error(&with_listener("{name: l, address: my-host}")),
        r#"listeners[0].address: invalid listener address: "my-host": must be an IP address or "localhost""#
    );
    assert_eq!(
        error(&with_listener("{name: l, address: 10.0.0.1, routes: r}")),
        r#"listeners[0].routes: invalid type: string "r", expected a sequence"#
    );
    assert_eq!(
        errors(&with_listener(
            "{name: l, address: 10.0.0.1, protocol: TURN-TLS}"
        )),
        [
            "listeners[0].cert: empty TLS cert for TURN-TLS listener \"l\"",
            "listeners[0].key: empty TLS key for TURN-TLS listener \"l\"",
        ]
    );
    assert_eq!(
        error(&with_listener(
            "{name: l, address: 10.0.0.1, protocol: dtls, cert: c}"
        )),
        "listeners[0].key: empty TLS key for TURN-DTLS listener \"l\""
    );
    assert_eq!(
        error(&with_listener(
            "{name: l, address: 10.0.0.1}, {name: l, address: 10.0.0.2, port: 3479}"
        )),
        r#"listeners[1].name: duplicate listener name "l" (also listeners[0])"#
    );
}

/// Two listeners of one transport on one port would share one SO_REUSEPORT group (upstream's
/// quirk: clients land on either at random); only distinct loopback addresses, each bound
/// alone, may share a port.
#[test]
fn listeners_sharing_a_port() {
    assert_eq!(
        error(&with_listener(
            "{name: a, address: 10.0.0.1, port: 3478}, {name: b, address: 'fd00::1', port: 3478}"
        )),
        r#"listeners[1].port: UDP port 3478 already used by listener "a" (listeners[0])"#
    );
    assert_eq!(
        error(&with_listener(
            "{name: a, address: 10.0.0.1, protocol: TURN-TCP, port: 443}, \
             {name: b, address: 10.0.0.1, protocol: TURN-TLS, port: 443, cert: c, key: k}"
        )),
        r#"listeners[1].port: TCP port 443 already used by listener "a" (listeners[0])"#
    );
    assert_eq!(
        error(&with_listener(
            "{name: a, address: 127.0.0.1, protocol: TURN-DTLS, port: 3478, cert: c, key: k}, \
             {name: b, address: 127.0.0.1, port: 3478}"
        )),
        r#"listeners[1].port: UDP port 3478 already used by listener "a" (listeners[0])"#
    );
    // UDP and TCP on one port, and two loopback addresses on one port, are fine.
    for ok in [
        "{name: a, address: 10.0.0.1, port: 3478}, {name: b, address: 10.0.0.1, protocol: TURN-TCP, port: 3478}",
        "{name: a, address: 127.0.0.1, port: 3478}, {name: b, address: 127.0.0.2, port: 3478}",
    ] {
        let parsed = parse_config(&with_listener(ok), &env_of(&[]));
        assert!(parsed.is_ok(), "{ok}: {:?}", parsed.err());
    }
}

#[test]
fn relay_port_errors() {
    let l = |extra: &str| with_listener(&format!("{{name: l, address: 10.0.0.1, {extra}}}"));
    assert_eq!(
        error(&l("min_relay_port: 10000")),
        "listeners[0].max_relay_port: must be set together with min_relay_port"
    );
    assert_eq!(
        error(&l("max_relay_port: 10000")),
        "listeners[0].min_relay_port: must be set together with max_relay_port"
    );
    assert_eq!(
        error(&l("min_relay_port: 20000, max_relay_port: 10000")),
        "listeners[0].min_relay_port: invalid relay port range: min_relay_port 20000 > max_relay_port 10000"
    );
    // No extra "must be set together" for fields that already failed to decode.
    assert_eq!(
        errors(&l("min_relay_port: 0, max_relay_port: 70000")),
        [
            "listeners[0].min_relay_port: invalid relay port: 0",
            "listeners[0].max_relay_port: invalid relay port: 70000",
        ]
    );
}

#[test]
fn cluster_errors() {
    assert_eq!(
        error(&with_cluster("{endpoints: [10.0.0.1]}")),
        r#"clusters[0].name: missing name in cluster configuration: "-":{type="STATIC",protocol="UDP",endpoints=[10.0.0.1]}"#
    );
    assert_eq!(
        error(&with_cluster(
            "{name: c, type: LOGICAL_DNS, endpoints: [not-an-ip]}"
        )),
        r#"clusters[0].type: unknown cluster type: "LOGICAL_DNS""#
    );
    assert_eq!(
        error(&with_cluster("{name: c, protocol: SCTP}")),
        r#"clusters[0].protocol: unknown cluster protocol: "SCTP""#
    );
    assert_eq!(
        error(&with_cluster(
            "{name: c, endpoints: [10.0.0.1, 'bogus:<1-2>']}"
        )),
        r#"clusters[0].endpoints: invalid endpoint "bogus:<1-2>": invalid IP address "bogus""#
    );
    assert_eq!(
        error(&with_cluster("{name: c, endpoints: [1, 10.0.0.1]}")),
        "clusters[0].endpoints[0]: invalid type: integer `1`, expected a string"
    );
    // STRICT_DNS endpoints are names and are not checked.
    assert!(
        parse_config(
            &with_cluster("{name: c, type: STRICT_DNS, endpoints: [svc.ns.svc.cluster.local]}"),
            &env_of(&[])
        )
        .is_ok()
    );
    assert_eq!(
        error(&with_cluster("{name: c}, {name: c}")),
        r#"clusters[1].name: duplicate cluster name "c" (also clusters[0])"#
    );
}

#[test]
fn all_errors_are_collected_in_document_order() {
    let text = r#"
clusters:
  - {name: c, type: nope}
  - {endpoints: ["10.0.0.300"]}
listeners:
  - {name: a, port: "x", protocol: TURN-TLS, address: 10.0.0.1}
  - {name: a, address: nowhere}
auth: {type: ephemeral}
admin: {offload_engine: fast}
version: v1
"#;
    let err = parse_config(text, &env_of(&[])).unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "admin.offload_engine",
            "auth.credentials",
            "listeners[0].port",
            "listeners[0].cert",
            "listeners[0].key",
            "listeners[1].name",
            "listeners[1].address",
            "clusters[0].type",
            "clusters[1].name",
            "clusters[1].endpoints",
        ]
    );
    assert_eq!(err.to_string().lines().count(), 10);
    assert_eq!(
        err.find("listeners[0].port").map(|e| e.message.as_str()),
        Some(r#"invalid type: string "x", expected u16"#)
    );
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut c = zero_config("a/b");
    c.version = "v0".into();
    c.admin.offload_engine = "xdp".into(); // not normalised
    c.auth.auth_type = AuthType::Ephemeral;
    let e = validate(&c).unwrap_err();
    assert_eq!(
        e.to_string(),
        "version: unsupported API version: \"v0\"\n\
         admin.offload_engine: unknown offload mode: \"xdp\"\n\
         auth.credentials: no secret found in ephemeral auth config"
    );
}

#[test]
fn turn_uri_variants() {
    let c = from_turn_uri("turn://user:pass@1.2.3.4:3478?transport=udp").unwrap();
    assert_eq!(c.admin, AdminConfig::default());
    assert_eq!(c.auth.auth_type, AuthType::Static);
    assert_eq!(c.auth.realm, "stunner.l7mp.io");
    assert_eq!(c.auth.credentials["username"], "user");
    assert_eq!(c.auth.credentials["password"], "pass");
    let l = &c.listeners[0];
    assert_eq!(l.name, "default-listener");
    assert_eq!(l.protocol, ListenerProtocol::TurnUdp);
    assert_eq!((l.address.as_str(), l.port), ("1.2.3.4", 3478));
    assert_eq!(l.routes, ["allow-any"]);
    assert_eq!(c.clusters[0].name, "allow-any");
    assert_eq!(c.clusters[0].cluster_type, ClusterType::Static);
    assert_eq!(c.clusters[0].endpoints, ["0.0.0.0/0"]);

    let proto = |uri: &str| from_turn_uri(uri).map(|c| c.listeners[0].protocol);
    use ListenerProtocol::*;
    for (uri, want) in [
        ("turn://u:p@1.2.3.4", TurnUdp),
        ("turn://u:p@1.2.3.4?transport=tcp", TurnTcp),
        ("turn://u:p@1.2.3.4?transport=TLS", TurnTls),
        ("turn://u:p@1.2.3.4?transport=dtls", TurnDtls),
        ("turns://u:p@1.2.3.4", TurnDtls),
        ("turns://u:p@1.2.3.4?transport=udp", TurnDtls),
        ("turns://u:p@1.2.3.4?transport=tcp", TurnTls),
        ("turn:u:p@1.2.3.4:5000?transport=tcp", TurnTcp),
        ("TURNS:u:p@1.2.3.4", TurnDtls),
    ] {
        assert_eq!(proto(uri), Ok(want), "{uri}");
    }
    // TLS/DTLS configs come without cert/key; the transport layer generates them.
    let c = from_turn_uri("turns://u:p@1.2.3.4:5349?transport=tcp").unwrap();
    assert_eq!(
        (c.listeners[0].cert.as_str(), c.listeners[0].port),
        ("", 5349)
    );

    let c = from_turn_uri("turn:us%40er:p%3Ass@localhost:3479").unwrap();
    assert_eq!(c.auth.credentials["username"], "us@er");
    assert_eq!(c.auth.credentials["password"], "p:ss");
    assert_eq!(c.listeners[0].relay_ip().to_string(), "127.0.0.1");
    assert_eq!(c.listeners[0].port, 3479);
}

/// A loopback TURN URI serves this machine only: its listener binds the loopback address
/// and its route opens loopback peers (a wildcard never does); any other host keeps the
/// wildcard bind and the wildcard route alone.
#[test]
fn turn_uri_on_loopback_admits_loopback_peers_and_binds_loopback() {
    use crate::snapshot::Snapshot;
    use crate::turn::policy::{Denied, admit};
    use std::net::{IpAddr, SocketAddr};

    let peer = |s: &str| s.parse::<SocketAddr>().unwrap();
    for (uri, bind) in [
        ("turn://u:p@127.0.0.1:3478", "127.0.0.1"),
        ("turn://u:p@127.0.1.1:3478?transport=tcp", "127.0.1.1"),
        ("turn://u:p@localhost", "127.0.0.1"),
    ] {
        let c = from_turn_uri(uri).unwrap();
        assert_eq!(
            c.clusters[0].endpoints,
            ["0.0.0.0/0", "127.0.0.0/8"],
            "{uri}"
        );
        let snap = Snapshot::build(c, 1).unwrap();
        let l = &snap.listeners[0];
        assert_eq!(l.bind_ip(), Some(bind.parse::<IpAddr>().unwrap()), "{uri}");
        assert!(admit(&snap, l, peer("127.0.0.1:3490")).is_ok(), "{uri}");
        assert!(admit(&snap, l, peer("127.5.6.7:9")).is_ok(), "{uri}");
        assert!(
            admit(&snap, l, peer("[::ffff:127.0.0.1]:3490")).is_ok(),
            "{uri}"
        );
        assert!(admit(&snap, l, peer("8.8.8.8:53")).is_ok(), "{uri}");
        // Only loopback opens: other special-purpose ranges stay closed.
        for denied in ["10.0.0.1:1", "169.254.169.254:80", "192.168.1.1:1"] {
            assert_eq!(
                admit(&snap, l, peer(denied)),
                Err(Denied::SpecialPurpose),
                "{uri} {denied}"
            );
        }
    }

    let c = from_turn_uri("turn://u:p@1.2.3.4:3478").unwrap();
    assert_eq!(c.clusters[0].endpoints, ["0.0.0.0/0"]);
    let snap = Snapshot::build(c, 1).unwrap();
    let l = &snap.listeners[0];
    assert_eq!(l.bind_ip(), None);
    assert_eq!(
        admit(&snap, l, peer("127.0.0.1:3490")),
        Err(Denied::SpecialPurpose)
    );
    assert!(admit(&snap, l, peer("8.8.8.8:53")).is_ok());
}

#[test]
fn turn_uri_errors() {
    let err = |uri: &str| match from_turn_uri(uri) {
        Ok(c) => panic!("{uri} accepted: {c:?}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err("turn://1.2.3.4:3478"),
        "uri: username/password must be set"
    );
    assert_eq!(
        err("turn://user@1.2.3.4"),
        "uri: username/password must be set"
    );
    assert_eq!(
        err("turn://:pass@1.2.3.4"),
        "uri: username/password must be set"
    );
    assert_eq!(
        err("http://u:p@1.2.3.4"),
        r#"uri: not a TURN URI: unsupported scheme "http""#
    );
    assert_eq!(err("1.2.3.4"), "uri: invalid TURN URI: missing scheme");
    assert_eq!(
        err("turn://u:p@1.2.3.4:99999"),
        r#"uri: invalid port "99999""#
    );
    assert_eq!(
        err("turn://u:p@1.2.3.4?transport=sctp"),
        r#"uri: unknown transport "sctp""#
    );
    assert_eq!(
        err("turn://u:p@[::1]:3478"),
        "uri: host must be IPv4, got an IPv6 address"
    );
    assert_eq!(err("turn://u:p@:3478"), "uri: missing host");
    assert_eq!(
        err("turn://u:p%zz@1.2.3.4"),
        "uri: invalid password: invalid percent-escape"
    );
    // The password never appears in an error.
    assert!(!err("turn://user:s3cret@host.invalid").contains("s3cret"));
}
