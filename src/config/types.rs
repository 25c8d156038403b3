//! The typed config structs and their wire (JSON) form.
//!
//! `Serialize` mirrors upstream's Go struct tags (l7mp/stunner `pkg/apis/v1`): the same keys,
//! and `omitempty` exactly where upstream has it, so a CDS server built on these types sends
//! what upstream's would. `Debug` is hand-written where a field holds a secret, because
//! configs end up in logs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Serialize, Serializer};

use super::{DEFAULT_ADMIN_NAME, DEFAULT_HEALTHCHECK_ENDPOINT, DEFAULT_LOGLEVEL};

/// Root of the config (spec §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StunnerConfig {
    pub version: String,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterConfig>,
}

/// `admin` (spec §2.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub loglevel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metrics_endpoint: String,
    /// `None` only before validation; `Some("")` means the health server is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck_endpoint: Option<String>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub user_quota: u32,
    /// Normalised to `None`, `XDP`, `TC` or `Auto` (see [`normalize_offload_engine`]).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub offload_engine: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offload_interfaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_config: Option<LicenseConfig>,
}

impl Default for AdminConfig {
    /// The validated defaults of spec §2.3 (not Go's zero value).
    fn default() -> Self {
        AdminConfig {
            name: DEFAULT_ADMIN_NAME.to_string(),
            loglevel: DEFAULT_LOGLEVEL.to_string(),
            metrics_endpoint: String::new(),
            healthcheck_endpoint: Some(DEFAULT_HEALTHCHECK_ENDPOINT.to_string()),
            user_quota: 0,
            offload_engine: "None".to_string(),
            offload_interfaces: Vec::new(),
            license_config: None,
        }
    }
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}

/// Normalise an offload engine name: case-insensitive `None`/`XDP`/`TC`/`Auto` (spec §2.3).
pub(super) fn normalize_offload_engine(s: &str) -> Option<&'static str> {
    ["None", "XDP", "TC", "Auto"]
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(s))
}

/// `admin.license_config` (premium; the open-source build ignores it).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct LicenseConfig {
    pub key: String,
    pub hmac: String,
}

impl fmt::Debug for LicenseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseConfig")
            .field("key", &self.key)
            .field("hmac", &mask(&self.hmac))
            .finish()
    }
}

/// `auth.type` (spec §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    Static,
    Ephemeral,
    /// STUN only: TURN requests cannot authenticate.
    None,
}

impl AuthType {
    /// Case-sensitive, like upstream, with the legacy aliases `plaintext` and `longterm`.
    pub fn parse(s: &str) -> Option<AuthType> {
        match s {
            "static" | "plaintext" => Some(AuthType::Static),
            "ephemeral" | "longterm" => Some(AuthType::Ephemeral),
            "none" => Some(AuthType::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Static => "static",
            AuthType::Ephemeral => "ephemeral",
            AuthType::None => "none",
        }
    }
}

/// `auth` (spec §2.4), plus our `credentials.secrets` and `credentials.users` extension.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub auth_type: AuthType,
    pub realm: String,
    /// The string-valued keys of `credentials` (upstream's `map[string]string`).
    pub credentials: BTreeMap<String, String>,
    /// Our extension `auth.credentials.secrets`: more TURN REST shared secrets, accepted
    /// beside `credentials.secret` (a rotation window). `None` when the key is absent; an
    /// empty list is invalid.
    pub secrets: Option<Vec<String>>,
    /// Our extension `auth.credentials.users`: more static users, accepted beside
    /// `credentials.username`/`password`. `None` when absent; an empty list is invalid.
    pub users: Option<Vec<UserCredential>>,
}

impl AuthConfig {
    /// An auth section without the extension lists.
    pub fn new(
        auth_type: AuthType,
        realm: impl Into<String>,
        credentials: BTreeMap<String, String>,
    ) -> AuthConfig {
        AuthConfig {
            auth_type,
            realm: realm.into(),
            credentials,
            secrets: None,
            users: None,
        }
    }

    /// Every shared secret ephemeral auth accepts: `credentials.secret` first, then
    /// `credentials.secrets` in order, each once.
    pub fn ephemeral_secrets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let listed = self.secrets.iter().flatten().map(String::as_str);
        for s in self
            .credentials
            .get("secret")
            .map(String::as_str)
            .into_iter()
            .chain(listed)
        {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// Every (username, password) static auth accepts: the `credentials.username` /
    /// `password` pair when both keys are there, then `credentials.users` in order.
    pub fn static_users(&self) -> Vec<(&str, &str)> {
        let pair = self
            .credentials
            .get("username")
            .zip(self.credentials.get("password"))
            .map(|(u, p)| (u.as_str(), p.as_str()));
        let listed = self
            .users
            .iter()
            .flatten()
            .map(|u| (u.username.as_str(), u.password.as_str()));
        pair.into_iter().chain(listed).collect()
    }
}

/// One entry of `auth.credentials.users` (our extension).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct UserCredential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for UserCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCredential")
            .field("username", &self.username)
            .field("password", &mask(&self.password))
            .finish()
    }
}

impl Serialize for AuthConfig {
    /// Upstream's shape (`type`, `realm` omitted when empty, `credentials` always), with the
    /// extension lists inside `credentials` only when they are set, so a config without them
    /// serialises byte for byte as upstream's would.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let n = if self.realm.is_empty() { 2 } else { 3 };
        let mut st = s.serialize_struct("AuthConfig", n)?;
        st.serialize_field("type", &self.auth_type)?;
        if !self.realm.is_empty() {
            st.serialize_field("realm", &self.realm)?;
        }
        st.serialize_field("credentials", &CredentialsWire(self))?;
        st.end()
    }
}

/// `credentials` on the wire: the string keys and the extension lists, in key order.
struct CredentialsWire<'a>(&'a AuthConfig);

impl Serialize for CredentialsWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        enum V<'a> {
            Str(&'a String),
            Secrets(&'a [String]),
            Users(&'a [UserCredential]),
        }
        let a = self.0;
        let mut entries: Vec<(&str, V<'_>)> = a
            .credentials
            .iter()
            .map(|(k, v)| (k.as_str(), V::Str(v)))
            .collect();
        // A string-valued `secrets`/`users` key (an upstream extra key) and the list of the
        // same name cannot both exist: the decoder keeps one or the other.
        if let Some(list) = &a.secrets {
            entries.retain(|(k, _)| *k != "secrets");
            entries.push(("secrets", V::Secrets(list)));
        }
        if let Some(list) = &a.users {
            entries.retain(|(k, _)| *k != "users");
            entries.push(("users", V::Users(list)));
        }
        entries.sort_by(|x, y| x.0.cmp(y.0));
        let mut m = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            match v {
                V::Str(v) => m.serialize_entry(k, v)?,
                V::Secrets(v) => m.serialize_entry(k, v)?,
                V::Users(v) => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are harmless and useful ("is `secret` there?"); values never get printed.
        let creds: BTreeMap<&str, &str> = self
            .credentials
            .iter()
            .map(|(k, v)| (k.as_str(), mask(v)))
            .collect();
        let secrets: Option<Vec<&str>> = self
            .secrets
            .as_ref()
            .map(|l| l.iter().map(|s| mask(s)).collect());
        f.debug_struct("AuthConfig")
            .field("auth_type", &self.auth_type)
            .field("realm", &self.realm)
            .field("credentials", &creds)
            .field("secrets", &secrets)
            .field("users", &self.users)
            .finish()
    }
}

/// `listeners[].protocol` (spec §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ListenerProtocol {
    #[default]
    TurnUdp,
    TurnTcp,
    TurnTls,
    TurnDtls,
}

impl ListenerProtocol {
    /// Case-insensitive; the legacy `UDP`/`TCP`/`TLS`/`DTLS` are aliases (spec §8.1).
    pub fn parse(s: &str) -> Option<ListenerProtocol> {
        match s.to_ascii_uppercase().as_str() {
            "TURN-UDP" | "UDP" => Some(ListenerProtocol::TurnUdp),
            "TURN-TCP" | "TCP" => Some(ListenerProtocol::TurnTcp),
            "TURN-TLS" | "TLS" => Some(ListenerProtocol::TurnTls),
            "TURN-DTLS" | "DTLS" => Some(ListenerProtocol::TurnDtls),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::TurnUdp => "TURN-UDP",
            ListenerProtocol::TurnTcp => "TURN-TCP",
            ListenerProtocol::TurnTls => "TURN-TLS",
            ListenerProtocol::TurnDtls => "TURN-DTLS",
        }
    }

    /// TLS and DTLS listeners need a certificate and key.
    pub fn needs_cert(self) -> bool {
        matches!(self, ListenerProtocol::TurnTls | ListenerProtocol::TurnDtls)
    }

    /// Whether the transport underneath is TCP (TURN-TCP, TURN-TLS).
    pub fn uses_tcp(self) -> bool {
        matches!(self, ListenerProtocol::TurnTcp | ListenerProtocol::TurnTls)
    }

    /// Whether the transport underneath is datagram-based (UDP, DTLS).
    pub fn is_datagram(self) -> bool {
        matches!(self, ListenerProtocol::TurnUdp | ListenerProtocol::TurnDtls)
    }
}

/// `listeners[]` (spec §2.5), plus our `min_relay_port`/`max_relay_port` extension.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ListenerConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: ListenerProtocol,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub public_address: String,
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub public_port: u16,
    /// As given (after env expansion; empty becomes `0.0.0.0`). `localhost` is kept as
    /// written; [`relay_ip`](Self::relay_ip) resolves it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub port: u16,
    /// Base64 of PEM (operator) or a path to a PEM file (hand-written); loaded elsewhere.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_relay_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_relay_port: Option<u16>,
}

impl ListenerConfig {
    /// The IP advertised in XOR-RELAYED-ADDRESS: the validated `address` (`localhost` is
    /// 127.0.0.1). Falls back to 0.0.0.0 for an address that validation would reject.
    pub fn relay_ip(&self) -> IpAddr {
        parse_listener_address(&self.address).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// Upstream's one-line rendering (Go `ListenerConfig.String()`), secrets masked. Used in
    /// the "missing name" error message and handy in logs.
    pub fn summary(&self) -> String {
        let name = if self.name.is_empty() {
            "-"
        } else {
            &self.name
        };
        let addr = if self.address.is_empty() || self.address == "$STUNNER_ADDR" {
            "0.0.0.0"
        } else {
            &self.address
        };
        let pa = if self.public_address.is_empty() {
            "-"
        } else {
            &self.public_address
        };
        let pp = if self.public_port == 0 {
            "-".to_string()
        } else {
            self.public_port.to_string()
        };
        let secret = |s: &str| if s.is_empty() { "-" } else { "<SECRET>" };
        format!(
            "{name:?}:{{turn://{addr}:{}?transport={},public={pa}:{pp},cert/key={}/{},routes=[{}]}}",
            self.port,
            self.protocol.as_str(),
            secret(&self.cert),
            secret(&self.key),
            self.routes.join(",")
        )
    }
}

/// An IP literal or `localhost`, the only forms accepted for a listener `address`.
pub(crate) fn parse_listener_address(s: &str) -> Option<IpAddr> {
    if s.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    s.parse().ok()
}

impl fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a private key; the cert is public but long, so only its size is shown.
        let cert = format!("<{} chars>", self.cert.len());
        f.debug_struct("ListenerConfig")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("public_address", &self.public_address)
            .field("public_port", &self.public_port)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("cert", &cert)
            .field("key", &mask(&self.key))
            .field("routes", &self.routes)
            .field("min_relay_port", &self.min_relay_port)
            .field("max_relay_port", &self.max_relay_port)
            .finish()
    }
}

/// `clusters[].type` (spec §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterType {
    Static,
    StrictDns,
}

impl ClusterType {
    /// Case-insensitive.
    pub fn parse(s: &str) -> Option<ClusterType> {
        match s.to_ascii_uppercase().as_str() {
            "STATIC" => Some(ClusterType::Static),
            "STRICT_DNS" => Some(ClusterType::StrictDns),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterType::Static => "STATIC",
            ClusterType::StrictDns => "STRICT_DNS",
        }
    }
}

/// `clusters[].protocol` (spec §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterProtocol {
    Udp,
    Tcp,
}

impl ClusterProtocol {
    /// Case-insensitive.
    pub fn parse(s: &str) -> Option<ClusterProtocol> {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Some(ClusterProtocol::Udp),
            "TCP" => Some(ClusterProtocol::Tcp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterProtocol::Udp => "UDP",
            ClusterProtocol::Tcp => "TCP",
        }
    }
}

/// `clusters[]` (spec §2.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// Not `omitempty` upstream.
    pub name: String,
    #[serde(rename = "type")]
    pub cluster_type: ClusterType,
    pub protocol: ClusterProtocol,
    /// Sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

impl ClusterConfig {
    /// Upstream's one-line rendering (Go `ClusterConfig.String()`).
    pub fn summary(&self) -> String {
        let name = if self.name.is_empty() {
            "-"
        } else {
            &self.name
        };
        format!(
            "{name:?}:{{type={:?},protocol={:?},endpoints=[{}]}}",
            self.cluster_type.as_str(),
            self.protocol.as_str(),
            self.endpoints.join(",")
        )
    }
}

macro_rules! str_enum_impls {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
str_enum_impls!(AuthType, ListenerProtocol, ClusterType, ClusterProtocol);

/// How secrets appear in `Debug` output: whether one is set, never what it is.
fn mask(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "<SECRET>" }
}
