//! The checks the API server's CRD schemas would make (spec 2.13), applied here because no
//! API server stands between a manifest directory and the adapter.
//!
//! An object failing them is treated as the cluster would: it does not exist. The render
//! reports the violation (object, field, rule) and names it again wherever the missing
//! object matters, e.g. in the GatewayClass status when its GatewayConfig was rejected.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::objects::{Dataplane, Gateway, GatewayConfig, Object, StaticService, UdpRoute};

/// One violation: field path and the rule it breaks.
pub(super) type Violation = (String, String);

/// All violations of one object (empty when it is valid).
pub(super) fn check(obj: &Object) -> Vec<Violation> {
    let mut v = Vec::new();
    match obj {
        Object::GatewayConfig(o) => gateway_config(o, &mut v),
        Object::Gateway(o) => gateway(o, &mut v),
        Object::UdpRoute(o) => udp_route(o, &mut v),
        Object::StaticService(o) => static_service(o, &mut v),
        Object::Dataplane(o) => dataplane(o, &mut v),
        Object::GatewayClass(o) if o.spec.controller_name.is_empty() => {
            v.push(("spec.controllerName".into(), "required".into()));
        }
        _ => {}
    }
    v
}

/// The inline authType values the CRD admits (`none` is only valid inside an auth Secret).
pub(super) const AUTH_TYPES: [&str; 5] = [
    "plaintext",
    "static",
    "longterm",
    "ephemeral",
    "timewindowed",
];

fn gateway_config(o: &GatewayConfig, v: &mut Vec<Violation>) {
    let s = &o.spec;
    if let Some(realm) = &s.realm {
        if !is_realm(realm) {
            v.push((
                "spec.realm".into(),
                format!(
                    "invalid realm {realm:?}: must consist of lower case alphanumeric characters, \
                     '-' or '.', and each dot-separated part must start and end with an \
                     alphanumeric character"
                ),
            ));
        }
    }
    if let Some(t) = &s.auth_type {
        if !AUTH_TYPES.contains(&t.as_str()) {
            v.push((
                "spec.authType".into(),
                format!(
                    "unsupported value {t:?}: must be one of {}",
                    AUTH_TYPES.join(", ")
                ),
            ));
        }
    }
    for (field, value) in [
        ("spec.userName", &s.user_name),
        ("spec.password", &s.password),
    ] {
        if let Some(val) = value {
            if !is_token(val) {
                v.push((
                    field.into(),
                    "must be one or more letters, digits or any of !#$%&'*+-.^_`|~".into(),
                ));
            }
        }
    }
    if let Some(dp) = &s.dataplane {
        if dp.is_empty() {
            v.push(("spec.dataplane".into(), "must not be empty".into()));
        }
    }
}

/// Realm: dot-separated labels of `[a-z0-9-]`, each starting and ending alphanumeric. The
/// seed states the per-label rule; the default `stunner.l7mp.io` shows dots are allowed.
pub(super) fn is_realm(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            match (b.first(), b.last()) {
                (Some(first), Some(last)) => {
                    alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
                }
                _ => false,
            }
        })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn gateway(o: &Gateway, v: &mut Vec<Violation>) {
    let s = &o.spec;
    if s.gateway_class_name.is_empty() {
        v.push(("spec.gatewayClassName".into(), "required".into()));
    }
    if s.listeners.is_empty() {
        v.push((
            "spec.listeners".into(),
            "at least one listener is required".into(),
        ));
    }
    if s.listeners.len() > 64 {
        v.push((
            "spec.listeners".into(),
            "at most 64 listeners are allowed".into(),
        ));
    }
    let mut names = HashSet::new();
    for (i, l) in s.listeners.iter().enumerate() {
        if l.name.is_empty() {
            v.push((format!("spec.listeners[{i}].name"), "required".into()));
        } else if !names.insert(l.name.as_str()) {
            v.push((
                format!("spec.listeners[{i}].name"),
                format!(
                    "duplicate listener name {:?}: names must be unique per Gateway",
                    l.name
                ),
            ));
        }
        if !(1..=65535).contains(&l.port) {
            v.push((
                format!("spec.listeners[{i}].port"),
                format!("invalid port {}: must be 1-65535", l.port),
            ));
        }
        if l.protocol.is_empty() {
            v.push((format!("spec.listeners[{i}].protocol"), "required".into()));
        }
    }
    for (i, a) in s.addresses.iter().enumerate() {
        let ip_typed = a.address_type.as_deref().is_none_or(|t| t == "IPAddress");
        if ip_typed && a.value.parse::<IpAddr>().is_err() {
            v.push((
                format!("spec.addresses[{i}].value"),
                format!("{:?} is not an IP address (type IPAddress)", a.value),
            ));
        }
    }
}

fn udp_route(o: &UdpRoute, v: &mut Vec<Violation>) {
    let s = &o.spec;
    if s.parent_refs.is_empty() {
        v.push((
            "spec.parentRefs".into(),
            "at least one parentRef is required".into(),
        ));
    }
    for (i, p) in s.parent_refs.iter().enumerate() {
        if p.name.is_empty() {
            v.push((format!("spec.parentRefs[{i}].name"), "required".into()));
        }
    }
    if s.rules.len() > 16 {
        v.push(("spec.rules".into(), "at most 16 rules are allowed".into()));
    }
    for (i, r) in s.rules.iter().enumerate() {
        if r.backend_refs.len() > 16 {
            v.push((
                format!("spec.rules[{i}].backendRefs"),
                "at most 16 backendRefs are allowed".into(),
            ));
        }
        for (j, b) in r.backend_refs.iter().enumerate() {
            let path = |f: &str| format!("spec.rules[{i}].backendRefs[{j}].{f}");
            if b.name.is_empty() {
                v.push((path("name"), "required".into()));
            }
            for (field, port) in [("port", b.port), ("endPort", b.end_port)] {
                if let Some(p) = port {
                    if !(1..=65535).contains(&p) {
                        v.push((path(field), format!("invalid port {p}: must be 1-65535")));
                    }
                }
            }
        }
    }
}

fn static_service(o: &StaticService, v: &mut Vec<Violation>) {
    for (i, p) in o.spec.prefixes.iter().enumerate() {
        let ok = p.parse::<IpNet>().is_ok() || p.parse::<IpAddr>().is_ok();
        if !ok {
            v.push((
                format!("spec.prefixes[{i}]"),
                format!("{p:?} is not an IPv4 or IPv6 prefix (e.g. 192.0.2.0/24)"),
            ));
        }
    }
}

fn dataplane(o: &Dataplane, v: &mut Vec<Violation>) {
    let s = &o.spec;
    if let Some(r) = &s.dataplane_resource {
        if r != "Deployment" && r != "DaemonSet" {
            v.push((
                "spec.dataplaneResource".into(),
                format!("unsupported value {r:?}: must be Deployment or DaemonSet"),
            ));
        }
    }
    if let Some(e) = &s.offload_engine {
        if offload_engine(e).is_none() {
            v.push((
                "spec.offloadEngine".into(),
                format!("unsupported value {e:?}: must be None, XDP, TC or Auto"),
            ));
        }
    }
    if let Some(p) = &s.image_pull_policy {
        if !matches!(p.as_str(), "Always" | "Never" | "IfNotPresent") {
            v.push((
                "spec.imagePullPolicy".into(),
                format!("unsupported value {p:?}: must be Always, Never or IfNotPresent"),
            ));
        }
    }
    if let Some(r) = s.replicas {
        if r < 0 {
            v.push((
                "spec.replicas".into(),
                format!("invalid value {r}: must be >= 0"),
            ));
        }
    }
    if let Some(t) = s.termination_grace_period_seconds {
        if t < 0 {
            v.push((
                "spec.terminationGracePeriodSeconds".into(),
                format!("invalid value {t}: must be >= 0"),
            ));
        }
    }
}

/// Offload engine names, case-insensitive, normalised (spec 2.5).
pub(super) fn offload_engine(s: &str) -> Option<&'static str> {
    ["None", "XDP", "TC", "Auto"]
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(s))
}
