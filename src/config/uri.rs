//! The default config built from a TURN URI given on the command line (spec §2.9):
//! `stunnerd turn://user:pass@1.2.3.4:3478?transport=udp`.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use super::types::parse_listener_address;
use super::validate::validate_with;
use super::{
    API_VERSION, AdminConfig, AuthConfig, AuthType, ClusterConfig, ClusterProtocol, ClusterType,
    ConfigError, DEFAULT_PORT, DEFAULT_REALM, ListenerConfig, ListenerProtocol, StunnerConfig,
};

/// Where URI errors are reported: the URI is the one "field" of this config.
const PATH: &str = "uri";

/// Build the default config of spec §2.9 from `turn[s]:[//]user:pass@host[:port][?transport=…]`.
///
/// `host` must be an IPv4 literal, `localhost`, or a name resolving to IPv4 (resolved here,
/// once, with the system resolver, since the listener `address` must be an IP). User and
/// password are mandatory and percent-decoded. TLS/DTLS listeners are returned without
/// cert/key: the transport layer generates a self-signed pair.
///
/// The route `allow-any` admits `0.0.0.0/0`; when the host is a loopback address it also
/// admits `127.0.0.0/8` (the wildcard never opens special-purpose ranges), and the listener
/// then binds that loopback address only.
///
/// Error messages never repeat the URI, because it carries a password.
pub fn from_turn_uri(uri: &str) -> Result<StunnerConfig, ConfigError> {
    let fail = |msg: String| ConfigError::single(PATH, msg);

    let (scheme, rest) = uri
        .split_once(':')
        .ok_or_else(|| fail("invalid TURN URI: missing scheme".into()))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "turn" => false,
        "turns" => true,
        other => {
            return Err(fail(format!(
                "not a TURN URI: unsupported scheme {other:?}"
            )));
        }
    };
    // Both the RFC 7065 form (`turn:host`) and the URL form (`turn://host`) are accepted.
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    // Like Go's url.Parse, the authority ends at the first '/' and userinfo at the last '@'.
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .ok_or_else(|| fail("username/password must be set".into()))?;
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let user = percent_decode(user).map_err(|e| fail(format!("invalid username: {e}")))?;
    let pass = percent_decode(pass).map_err(|e| fail(format!("invalid password: {e}")))?;
    if user.is_empty() || pass.is_empty() {
        return Err(fail("username/password must be set".into()));
    }

    let (host, port) = split_host_port(hostport).map_err(fail)?;
    let address = resolve_ipv4(host, port).map_err(fail)?;

    let transport = transport_param(query).map_err(fail)?;
    let protocol = match (transport.as_str(), secure) {
        ("tls", _) | ("tcp", true) => ListenerProtocol::TurnTls,
        ("dtls", _) | ("udp", true) => ListenerProtocol::TurnDtls,
        ("tcp", false) => ListenerProtocol::TurnTcp,
        ("udp", false) => ListenerProtocol::TurnUdp,
        (other, _) => return Err(fail(format!("unknown transport {other:?}"))),
    };

    // A loopback URI serves this machine only (its listener binds the loopback address, see
    // `snapshot::Listener::bind_ip`), so its route also opens the loopback peers a local
    // client relays to (turnutils_peer, a local media server): the wildcard never opens them.
    let mut endpoints = vec!["0.0.0.0/0".to_string()];
    if parse_listener_address(&address).is_some_and(|ip| ip.is_loopback()) {
        endpoints.push("127.0.0.0/8".to_string());
    }

    let config = StunnerConfig {
        version: API_VERSION.to_string(),
        admin: AdminConfig::default(),
        auth: AuthConfig::new(
            AuthType::Static,
            DEFAULT_REALM,
            [("username", user), ("password", pass)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        ),
        listeners: vec![ListenerConfig {
            name: "default-listener".to_string(),
            protocol,
            public_address: String::new(),
            public_port: 0,
            address,
            port,
            cert: String::new(),
            key: String::new(),
            routes: vec!["allow-any".to_string()],
            min_relay_port: None,
            max_relay_port: None,
        }],
        clusters: vec![ClusterConfig {
            name: "allow-any".to_string(),
            cluster_type: ClusterType::Static,
            protocol: ClusterProtocol::Udp,
            endpoints,
        }],
    };
    validate_with(&config, false)?;
    Ok(config)
}

/// `host[:port]`; no port (or port 0, Go's "unset") means 3478. Bracketed IPv6 is rejected
/// because the relay address must be IPv4 (spec §2.9).
fn split_host_port(hostport: &str) -> Result<(&str, u16), String> {
    if hostport.starts_with('[') {
        return Err("host must be IPv4, got an IPv6 address".into());
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, "")) => (h, DEFAULT_PORT),
        Some((h, p)) => {
            let p: u16 = p.parse().map_err(|_| format!("invalid port {p:?}"))?;
            (h, if p == 0 { DEFAULT_PORT } else { p })
        }
        None => (hostport, DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    Ok((host, port))
}

/// The listener address for `host`: kept as written when it is an IPv4 literal or
/// `localhost`, else the first IPv4 address it resolves to.
fn resolve_ipv4(host: &str, port: u16) -> Result<String, String> {
    if host.eq_ignore_ascii_case("localhost") || host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_string());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err("host must be IPv4, got an IPv6 address".into());
    }
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?;
    addrs
        .into_iter()
        .find(|a| a.is_ipv4())
        .map(|a| a.ip().to_string())
        .ok_or_else(|| format!("host {host:?} does not resolve to an IPv4 address"))
}

/// The first `transport` query parameter, lower-cased; `udp` when absent.
fn transport_param(query: &str) -> Result<String, String> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "transport" {
            return Ok(percent_decode(v)?.to_ascii_lowercase());
        }
    }
    Ok("udp".to_string())
}

/// RFC 3986 percent-decoding into UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|c| (*c as char).to_digit(16));
            let lo = b.get(i + 2).and_then(|c| (*c as char).to_digit(16));
            match (hi, lo) {
                // Two hex digits are at most 0xff, so the cast is lossless.
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err("invalid percent-escape".into()),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-escapes are not valid UTF-8".into())
}
