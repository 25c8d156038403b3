//! Small pure helpers: realm and token rules, label selectors, protocol names, conflicts,
//! auth aliases, pull policies, config discovery URLs.

use std::collections::BTreeMap;

use crate::config::{AuthType, ListenerProtocol};
use crate::k8s::attach::matches_selector;
use crate::k8s::auth::auth_alias;
use crate::k8s::listener::{conflicts, parse_protocol};
use crate::k8s::objects::{LabelSelector, LabelSelectorRequirement, Listener};
use crate::k8s::schema::{is_realm, offload_engine};
use crate::k8s::{cds_uri, default_pull_policy, parse_port_map};

#[test]
fn realms() {
    for ok in ["stunner.l7mp.io", "a", "a-b.c-d", "0.1", "x1"] {
        assert!(is_realm(ok), "{ok}");
    }
    for bad in ["", "A", "a_b", "-a", "a-", "a..b", ".a", "a.", "a b", "ü"] {
        assert!(!is_realm(bad), "{bad}");
    }
}

#[test]
fn label_selectors() {
    let labels: BTreeMap<String, String> = [("app", "dev"), ("tier", "media")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let sel = |labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        match_expressions: exprs,
    };
    let cases = [
        (sel(&[], vec![]), Ok(true)),
        (sel(&[("app", "dev")], vec![]), Ok(true)),
        (sel(&[("app", "prod")], vec![]), Ok(false)),
        (sel(&[], vec![req("tier", "In", &["media", "x"])]), Ok(true)),
        (sel(&[], vec![req("tier", "NotIn", &["media"])]), Ok(false)),
        (sel(&[], vec![req("zone", "NotIn", &["a"])]), Ok(true)),
        (sel(&[], vec![req("app", "Exists", &[])]), Ok(true)),
        (sel(&[], vec![req("app", "DoesNotExist", &[])]), Ok(false)),
        (
            sel(&[("app", "dev")], vec![req("zone", "Exists", &[])]),
            Ok(false),
        ),
    ];
    for (s, want) in cases {
        assert_eq!(matches_selector(&s, &labels), want, "{s:?}");
    }
    for bad in [
        req("a", "Like", &["x"]),
        req("a", "In", &[]),
        req("a", "Exists", &["x"]),
    ] {
        assert!(matches_selector(&sel(&[], vec![bad]), &labels).is_err());
    }
}

#[test]
fn protocols_and_conflicts() {
    use ListenerProtocol::*;
    for (s, want) in [
        ("TURN-UDP", Some(TurnUdp)),
        ("turn-tcp", Some(TurnTcp)),
        ("TLS", Some(TurnTls)),
        ("dtls", Some(TurnDtls)),
        ("udp", Some(TurnUdp)),
        ("SCTP", None),
        ("", None),
    ] {
        assert_eq!(parse_protocol(s), want, "{s}");
    }
    let l = |port: i64, protocol: &str| Listener {
        name: format!("{protocol}-{port}"),
        port,
        protocol: protocol.into(),
        ..Listener::default()
    };
    let ls = [
        l(1, "TURN-UDP"),
        l(1, "TURN-TCP"),
        l(1, "TURN-DTLS"),
        l(1, "tls"),
        l(1, "bogus"),
        l(1, "bogus"),
        l(2, "udp"),
    ];
    assert_eq!(
        conflicts(&ls),
        [false, false, true, true, false, false, false]
    );
}

#[test]
fn auth_aliases_are_case_sensitive() {
    assert_eq!(auth_alias("plaintext"), Some(AuthType::Static));
    assert_eq!(auth_alias("timewindowed"), Some(AuthType::Ephemeral));
    assert_eq!(auth_alias("none"), Some(AuthType::None));
    assert_eq!(auth_alias("Static"), None);
}

#[test]
fn offload_engines() {
    assert_eq!(offload_engine("xdp"), Some("XDP"));
    assert_eq!(offload_engine("AUTO"), Some("Auto"));
    assert_eq!(offload_engine("ebpf"), None);
}

#[test]
fn pull_policies() {
    for (image, want) in [
        ("l7mp/stunnerd", "Always"),
        ("l7mp/stunnerd:latest", "Always"),
        ("l7mp/stunnerd:1.0", "IfNotPresent"),
        ("localhost:5000/stunnerd", "Always"),
        ("localhost:5000/stunnerd:dev", "IfNotPresent"),
        ("l7mp/stunnerd@sha256:0123", "IfNotPresent"),
    ] {
        assert_eq!(default_pull_policy(image), want, "{image}");
    }
}

#[test]
fn port_maps_and_cds_uris() {
    assert_eq!(parse_port_map(" ").map(|m| m.len()), Ok(0));
    assert!(parse_port_map("{\"a\": 1.5}").is_err());
    assert!(parse_port_map("{\"a\": \"1\"}").is_err());
    assert_eq!(cds_uri("[::1]"), "http://[::1]:13478");
    assert_eq!(cds_uri("host:"), "http://host:13478");
}
