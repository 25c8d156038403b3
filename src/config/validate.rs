//! Semantic checks on a typed config (spec §2.7 plus our additions from spec §8).
//!
//! Upstream stops at the first error; we report all of them. Everything that can be checked
//! on the typed struct is checked here rather than while decoding, so configs built in code
//! (tests, the TURN-URI default config, a future CDS server) go through the same rules.

use std::collections::HashMap;

use super::parse_endpoint;
use super::types::{normalize_offload_engine, parse_listener_address};
use super::{
    API_VERSION, AuthConfig, AuthType, ClusterType, ConfigError, FieldError, ListenerConfig,
    ListenerProtocol, StunnerConfig,
};

/// Check a typed config. Does not normalise; see [`StunnerConfig::normalize`].
pub fn validate(config: &StunnerConfig) -> Result<(), ConfigError> {
    validate_with(config, true)
}

/// `check_tls` is off for the TURN-URI default config, whose TLS/DTLS listener gets a
/// self-signed certificate from the transport layer later (spec §2.9).
pub(super) fn validate_with(config: &StunnerConfig, check_tls: bool) -> Result<(), ConfigError> {
    let mut errors = Vec::new();
    let mut err = |path: String, message: String| errors.push(FieldError::new(path, message));

    if config.version != API_VERSION {
        err(
            "version".into(),
            format!("unsupported API version: {:?}", config.version),
        );
    }

    // admin
    let admin = &config.admin;
    if let Err(e) = check_url(&admin.metrics_endpoint) {
        err(
            "admin.metrics_endpoint".into(),
            format!(
                "invalid metric server endpoint URL {}: {e}",
                admin.metrics_endpoint
            ),
        );
    }
    if let Some(h) = &admin.healthcheck_endpoint {
        if let Err(e) = check_url(h) {
            err(
                "admin.healthcheck_endpoint".into(),
                format!("invalid health-check server endpoint URL {h}: {e}"),
            );
        }
    }
    if normalize_offload_engine(&admin.offload_engine) != Some(admin.offload_engine.as_str()) {
        err(
            "admin.offload_engine".into(),
            format!("unknown offload mode: {:?}", admin.offload_engine),
        );
    }

    // auth: upstream only wants the keys present; empty strings are accepted. Our
    // extension lists may stand in for them, but are checked strictly.
    let auth = &config.auth;
    let creds = &auth.credentials;
    let (has_user, has_pass) = (
        creds.contains_key("username"),
        creds.contains_key("password"),
    );
    match auth.auth_type {
        AuthType::Static if has_user != has_pass || !has_user && auth.users.is_none() => {
            err(
                "auth.credentials".into(),
                "static: empty username or password".into(),
            );
        }
        AuthType::Ephemeral if !creds.contains_key("secret") && auth.secrets.is_none() => {
            err(
                "auth.credentials".into(),
                "no secret found in ephemeral auth config".into(),
            );
        }
        _ => {}
    }
    check_credential_lists(auth, &mut err);

    // listeners
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let path = |field: &str| format!("listeners[{i}].{field}");
        if l.name.is_empty() {
            err(
                path("name"),
                format!("missing name in listener configuration: {}", l.summary()),
            );
        } else if let Some(first) = seen.insert(&l.name, i) {
            // Names are the registry key; a duplicate would silently replace the first
            // listener (spec §8.8).
            seen.insert(&l.name, first);
            err(
                path("name"),
                format!(
                    "duplicate listener name {:?} (also listeners[{first}])",
                    l.name
                ),
            );
        }
        if l.port == 0 {
            err(path("port"), "invalid port: 0".into());
        } else if let Some(j) = port_clash(&config.listeners[..i], l) {
            // Upstream binds both into one SO_REUSEPORT group and the kernel spreads
            // clients between them at random; only distinct loopback addresses (bound
            // alone) can share a port.
            err(
                path("port"),
                format!(
                    "{} port {} already used by listener {:?} (listeners[{j}])",
                    if is_tcp(l.protocol) { "TCP" } else { "UDP" },
                    l.port,
                    config.listeners[j].name
                ),
            );
        }
        // Upstream only finds a bad address when the listener starts; we reject it up
        // front. Empty means the default 0.0.0.0.
        if !l.address.is_empty() && parse_listener_address(&l.address).is_none() {
            err(
                path("address"),
                format!(
                    "invalid listener address: {:?}: must be an IP address or \"localhost\"",
                    l.address
                ),
            );
        }
        if check_tls && l.protocol.needs_cert() {
            if l.cert.is_empty() {
                err(
                    path("cert"),
                    format!("empty TLS cert for {} listener {:?}", l.protocol, l.name),
                );
            }
            if l.key.is_empty() {
                err(
                    path("key"),
                    format!("empty TLS key for {} listener {:?}", l.protocol, l.name),
                );
            }
        }
        match (l.min_relay_port, l.max_relay_port) {
            (None, None) => {}
            (Some(_), None) => err(
                path("max_relay_port"),
                "must be set together with min_relay_port".into(),
            ),
            (None, Some(_)) => err(
                path("min_relay_port"),
                "must be set together with max_relay_port".into(),
            ),
            (Some(min), Some(max)) => {
                if min == 0 {
                    err(path("min_relay_port"), "invalid relay port: 0".into());
                }
                if max == 0 {
                    err(path("max_relay_port"), "invalid relay port: 0".into());
                }
                if min > max {
                    err(
                        path("min_relay_port"),
                        format!(
                            "invalid relay port range: min_relay_port {min} > max_relay_port {max}"
                        ),
                    );
                }
            }
        }
    }

    // clusters
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, c) in config.clusters.iter().enumerate() {
        let path = |field: &str| format!("clusters[{i}].{field}");
        if c.name.is_empty() {
            err(
                path("name"),
                format!("missing name in cluster configuration: {}", c.summary()),
            );
        } else if let Some(first) = seen.insert(&c.name, i) {
            seen.insert(&c.name, first);
            err(
                path("name"),
                format!(
                    "duplicate cluster name {:?} (also clusters[{first}])",
                    c.name
                ),
            );
        }
        // STRICT_DNS endpoints are host names, resolved later; nothing to check here.
        if c.cluster_type == ClusterType::Static {
            for e in &c.endpoints {
                if let Err(msg) = parse_endpoint(e) {
                    err(path("endpoints"), msg);
                }
            }
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::new(errors))
    }
}

/// `auth.credentials.secrets` and `auth.credentials.users` (our extension): a given list
/// is not empty, holds no empty secret, user name or password, and names each user once
/// (the `username` key included).
fn check_credential_lists(auth: &AuthConfig, err: &mut impl FnMut(String, String)) {
    const SECRETS: &str = "auth.credentials.secrets";
    const USERS: &str = "auth.credentials.users";
    if let Some(list) = &auth.secrets {
        if list.is_empty() {
            err(
                SECRETS.into(),
                "empty list: give at least one secret or leave the key out".into(),
            );
        }
        for (i, s) in list.iter().enumerate() {
            if s.is_empty() {
                err(format!("{SECRETS}[{i}]"), "empty secret".into());
            }
        }
    }
    let Some(list) = &auth.users else { return };
    if list.is_empty() {
        err(
            USERS.into(),
            "empty list: give at least one user or leave the key out".into(),
        );
    }
    let mut seen: HashMap<&str, String> = HashMap::new();
    if let Some(u) = auth.credentials.get("username") {
        seen.insert(u, "auth.credentials.username".into());
    }
    for (i, u) in list.iter().enumerate() {
        let path = format!("{USERS}[{i}]");
        if u.username.is_empty() {
            err(format!("{path}.username"), "empty username".into());
        } else if let Some(first) = seen.get(u.username.as_str()) {
            err(
                format!("{path}.username"),
                format!("duplicate username {:?} (also {first})", u.username),
            );
        } else {
            seen.insert(&u.username, path.clone());
        }
        if u.password.is_empty() {
            err(format!("{path}.password"), "empty password".into());
        }
    }
}

/// Things that are legal but almost certainly not what the operator meant.
pub(super) fn warnings(config: &StunnerConfig) -> Vec<String> {
    let mut out = Vec::new();
    let auth = &config.auth;
    if auth.secrets.is_some() && auth.auth_type != AuthType::Ephemeral {
        out.push(format!(
            "auth.credentials.secrets: only ephemeral auth uses it; ignored with type {}",
            auth.auth_type
        ));
    }
    if auth.users.is_some() && auth.auth_type != AuthType::Static {
        out.push(format!(
            "auth.credentials.users: only static auth uses it; ignored with type {}",
            auth.auth_type
        ));
    }
    for (i, l) in config.listeners.iter().enumerate() {
        // Upstream silently advertises 0.0.0.0 as the relay address, e.g. when
        // `$STUNNER_ADDR` is unset (spec §2.5); clients cannot use such a relay.
        if l.relay_ip().is_unspecified() {
            out.push(format!(
                "listeners[{i}].address: relay address {:?} is unspecified; clients will be \
                 told to send to it (is $STUNNER_ADDR set?)",
                l.address
            ));
        }
        for r in &l.routes {
            if config.cluster(r).is_none() {
                out.push(format!(
                    "listeners[{i}].routes: no cluster named {r:?}; the route matches nothing"
                ));
            }
        }
    }
    out
}

/// A lenient URL check in the spirit of Go's `url.Parse`, which is all upstream does for the
/// metrics and health-check endpoints: it only fails on control characters, bad
/// percent-escapes and a missing scheme before a colon. The empty string is valid (disabled).
fn check_url(s: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_ascii_control()) {
        return Err("net/url: invalid control character in URL".into());
    }
    if s.starts_with(':') {
        return Err("missing protocol scheme".into());
    }
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                let end = (i + 3).min(s.len());
                let escape = s.get(i..end).unwrap_or("%");
                return Err(format!("invalid URL escape {escape:?}"));
            }
        }
    }
    Ok(())
}

/// TURN-TCP and TURN-TLS listen on TCP ports; TURN-UDP and TURN-DTLS on UDP ports.
fn is_tcp(p: ListenerProtocol) -> bool {
    matches!(p, ListenerProtocol::TurnTcp | ListenerProtocol::TurnTls)
}

/// The index of an earlier listener that would bind the same port of the same transport as
/// `l`. A loopback listener binds its address only (`Listener::bind_ip`), so two loopback
/// listeners on different addresses do not clash; every other listener binds the wildcard.
fn port_clash(earlier: &[ListenerConfig], l: &ListenerConfig) -> Option<usize> {
    let bound =
        |c: &ListenerConfig| parse_listener_address(&c.address).filter(|ip| ip.is_loopback());
    earlier.iter().position(|o| {
        o.port == l.port
            && is_tcp(o.protocol) == is_tcp(l.protocol)
            && match (bound(o), bound(l)) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    })
}
