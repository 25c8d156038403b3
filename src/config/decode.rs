//! From a YAML value tree to a typed, defaulted [`StunnerConfig`].
//!
//! Hand-written rather than `#[derive(Deserialize)]` because upstream's Go decoding has
//! semantics serde does not offer together: keys match fields case-insensitively (last match
//! wins), unknown keys are ignored (we warn), `null` leaves a field at its default. On top of
//! that we collect *every* type error with its path, and accept integer-valued strings in
//! numeric fields (`port: "$STUNNER_PORT"` after expansion is `"3478"`).
//!
//! Decoding also applies the defaults of spec §2.3-2.6 and parses the enum-valued strings,
//! because an unknown protocol cannot be represented in the typed struct. Checks that can be
//! expressed on the typed struct (missing names, TLS certs, endpoints, …) live in
//! [`super::validate`] so that configs built in code get them too.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

use super::types::normalize_offload_engine;
use super::{
    API_VERSION, AdminConfig, AuthConfig, AuthType, ClusterConfig, ClusterProtocol, ClusterType,
    ConfigError, DEFAULT_ADDRESS, DEFAULT_ADMIN_NAME, DEFAULT_HEALTHCHECK_ENDPOINT,
    DEFAULT_LOGLEVEL, DEFAULT_PORT, DEFAULT_REALM, FieldError, LicenseConfig, ListenerConfig,
    ListenerProtocol, StunnerConfig, UserCredential,
};

/// Parse JSON or YAML text (YAML is a superset of JSON) into a value tree.
pub(super) fn parse_tree(text: &str) -> Result<Value, ConfigError> {
    // JSON text is read as JSON: YAML folds line breaks inside double-quoted scalars and
    // counts U+0085, U+2028 and U+2029 as line breaks, so the YAML reading of a JSON string
    // holding one of those characters differs from the JSON one (found by
    // fuzz/fuzz_targets/config_decode.rs: a value did not survive serialise-then-decode).
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        if let Ok(tree) = serde_norway::to_value(json) {
            return Ok(tree);
        }
    }
    let mut tree: Value = serde_norway::from_str(text)
        .map_err(|e| ConfigError::single("", format!("cannot parse config: {e}")))?;
    // Upstream's YAML library honours `<<` merge keys; serde_norway needs to be asked.
    tree.apply_merge()
        .map_err(|e| ConfigError::single("", format!("cannot parse config: {e}")))?;
    Ok(tree)
}

/// Decode a whole config. Returns the config (with defaults wherever a field was bad, so
/// that validation can still look at the rest) unless the version or the root itself is
/// unusable, plus the errors and warnings found.
pub(super) fn decode(tree: &Value) -> (Option<StunnerConfig>, Vec<FieldError>, Vec<String>) {
    let mut d = Decoder::default();
    let config = d.config(tree);
    (config, d.errors, d.warnings)
}

#[derive(Default)]
struct Decoder {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Look through YAML tags (`!!str x`, `!custom x`): Go's YAML-to-JSON conversion drops them.
pub(super) fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        v => v,
    }
}

pub(super) fn untag_mut(v: &mut Value) -> &mut Value {
    match v {
        Value::Tagged(t) => untag_mut(&mut t.value),
        v => v,
    }
}

/// serde's wording for an unexpected value, so our messages read like serde's.
fn describe(v: &Value) -> String {
    match untag(v) {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => format!("integer `{i}`"),
            (None, Some(u), _) => format!("integer `{u}`"),
            (None, None, Some(f)) => {
                let s = f.to_string();
                let s = if s.contains(['.', 'e', 'N', 'i']) {
                    s
                } else {
                    s + ".0"
                };
                format!("floating point `{s}`")
            }
            _ => format!("number `{n}`"),
        },
        Value::String(s) => format!("string {s:?}"),
        Value::Sequence(_) => "sequence".to_string(),
        Value::Mapping(_) => "map".to_string(),
        Value::Tagged(_) => "tagged value".to_string(),
    }
}

/// A mapping key as Go's YAML-to-JSON conversion would stringify it.
fn key_string(k: &Value) -> Option<String> {
    match untag(k) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".to_string()),
        _ => None,
    }
}

impl Decoder {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn type_error(&mut self, path: &str, v: &Value, expected: &str) {
        self.error(
            path,
            format!("invalid type: {}, expected {expected}", describe(v)),
        );
    }

    /// Pick the fields `names` out of an object: case-insensitive, last match wins, `null`
    /// counts as absent; unknown keys become warnings. `None` if `v` is not an object (the
    /// error is recorded); an absent object (`null`) has all fields absent.
    fn fields<'a, const N: usize>(
        &mut self,
        path: &str,
        v: &'a Value,
        names: [&str; N],
        expected: &str,
    ) -> Option<[Option<&'a Value>; N]> {
        let mut out = [None; N];
        let map: &Mapping = match untag(v) {
            Value::Null => return Some(out),
            Value::Mapping(m) => m,
            other => {
                self.type_error(path, other, expected);
                return None;
            }
        };
        for (k, val) in map {
            let Some(key) = key_string(k) else {
                self.warnings
                    .push(format!("non-scalar key in `{path}` ignored"));
                continue;
            };
            match names.iter().position(|n| n.eq_ignore_ascii_case(&key)) {
                Some(i) => {
                    if matches!(untag(val), Value::Null) {
                        continue;
                    }
                    if out[i].is_some() {
                        self.warnings.push(format!(
                            "duplicate key `{}`; the last one wins",
                            join(path, &key)
                        ));
                    }
                    out[i] = Some(val);
                }
                None => self
                    .warnings
                    .push(format!("unknown key `{}` ignored", join(path, &key))),
            }
        }
        Some(out)
    }

    fn string(&mut self, path: &str, v: Option<&Value>) -> String {
        match v.map(untag) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.type_error(path, other, "a string");
                String::new()
            }
        }
    }

    /// An integer field. Integer-valued strings are accepted because placeholders such as
    /// `"$STUNNER_PORT"` are strings before expansion (upstream rejects them; spec §2.1.5
    /// allows us to be lenient). `expected` names the type for the error message.
    fn int(&mut self, path: &str, v: Option<&Value>, expected: &str) -> Option<i128> {
        let v = untag(v?);
        let n = match v {
            Value::Null => return None,
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            Value::String(s) => s.parse::<i128>().ok(),
            _ => None,
        };
        if n.is_none() {
            self.type_error(path, v, expected);
        }
        n
    }

    /// A list of strings; `null` elements are empty strings, as in Go.
    fn strings(&mut self, path: &str, v: Option<&Value>) -> Vec<String> {
        match v.map(untag) {
            None | Some(Value::Null) => Vec::new(),
            // Elements of the wrong type are dropped (the error is recorded) so that they
            // do not also show up as, say, an invalid empty endpoint.
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let before = self.errors.len();
                    let s = self.string(&format!("{path}[{i}]"), Some(item));
                    (self.errors.len() == before).then_some(s)
                })
                .collect(),
            Some(other) => {
                self.type_error(path, other, "a sequence");
                Vec::new()
            }
        }
    }

    /// A list of objects, each decoded by `item`.
    fn objects<T>(
        &mut self,
        path: &str,
        v: Option<&Value>,
        item: impl Fn(&mut Self, &str, &Value) -> T,
    ) -> Vec<T> {
        match v.map(untag) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| item(self, &format!("{path}[{i}]"), v))
                .collect(),
            Some(other) => {
                self.type_error(path, other, "a sequence");
                Vec::new()
            }
        }
    }

    fn config(&mut self, tree: &Value) -> Option<StunnerConfig> {
        let [version, admin, auth, listeners, clusters] = self.fields(
            "",
            tree,
            ["version", "admin", "auth", "listeners", "clusters"],
            "a STUNner config object",
        )?;
        let before = self.errors.len();
        let version = self.string("version", version);
        // `v1alpha1` has the same field set; only the auth type names differ and those are
        // accepted as aliases anyway (spec §2.1.3).
        if version != API_VERSION && version != "v1alpha1" {
            // A mistyped version already has its type error.
            if self.errors.len() == before {
                self.error("version", format!("unsupported API version: {version:?}"));
            }
            // Another version has another schema: errors about its fields would mislead.
            return None;
        }
        Some(StunnerConfig {
            version: API_VERSION.to_string(),
            admin: self.admin("admin", admin),
            auth: self.auth("auth", auth),
            listeners: self.objects("listeners", listeners, Self::listener),
            clusters: self.objects("clusters", clusters, Self::cluster),
        })
    }

    fn admin(&mut self, path: &str, v: Option<&Value>) -> AdminConfig {
        let mut admin = AdminConfig::default();
        let Some(v) = v else { return admin };
        let Some(
            [
                name,
                loglevel,
                metrics,
                health,
                quota,
                engine,
                ifaces,
                license,
            ],
        ) = self.fields(
            path,
            v,
            [
                "name",
                "loglevel",
                "metrics_endpoint",
                "healthcheck_endpoint",
                "user_quota",
                "offload_engine",
                "offload_interfaces",
                "license_config",
            ],
            "struct AdminConfig",
        )
        else {
            return admin;
        };
        let name = self.string(&join(path, "name"), name);
        admin.name = non_empty_or(name, DEFAULT_ADMIN_NAME);
        let loglevel = self.string(&join(path, "loglevel"), loglevel);
        admin.loglevel = non_empty_or(loglevel, DEFAULT_LOGLEVEL);
        admin.metrics_endpoint = self.string(&join(path, "metrics_endpoint"), metrics);
        // A pointer upstream: absent means the default, "" means disabled.
        admin.healthcheck_endpoint = Some(match health {
            None => DEFAULT_HEALTHCHECK_ENDPOINT.to_string(),
            Some(h) => self.string(&join(path, "healthcheck_endpoint"), Some(h)),
        });
        let quota_path = join(path, "user_quota");
        if let Some(q) = self.int(&quota_path, quota, "u32") {
            // Negative quotas mean "no quota" upstream.
            match u32::try_from(q.max(0)) {
                Ok(q) => admin.user_quota = q,
                Err(_) => self.error(
                    &quota_path,
                    format!("invalid value: integer `{q}`, expected u32"),
                ),
            }
        }
        let engine_path = join(path, "offload_engine");
        let engine = self.string(&engine_path, engine);
        if !engine.is_empty() {
            match normalize_offload_engine(&engine) {
                Some(e) => admin.offload_engine = e.to_string(),
                None => self.error(&engine_path, format!("unknown offload mode: {engine:?}")),
            }
        }
        admin.offload_interfaces = self.strings(&join(path, "offload_interfaces"), ifaces);
        admin.offload_interfaces.sort();
        if let Some(license) = license {
            let lpath = join(path, "license_config");
            if let Some([key, hmac]) =
                self.fields(&lpath, license, ["key", "hmac"], "struct LicenseConfig")
            {
                admin.license_config = Some(LicenseConfig {
                    key: self.string(&join(&lpath, "key"), key),
                    hmac: self.string(&join(&lpath, "hmac"), hmac),
                });
            }
        }
        admin
    }

    fn auth(&mut self, path: &str, v: Option<&Value>) -> AuthConfig {
        let mut auth = AuthConfig::new(AuthType::Static, DEFAULT_REALM, BTreeMap::new());
        let Some(v) = v else { return auth };
        let Some([atype, realm, creds]) = self.fields(
            path,
            v,
            ["type", "realm", "credentials"],
            "struct AuthConfig",
        ) else {
            return auth;
        };
        let type_path = join(path, "type");
        let atype = self.string(&type_path, atype);
        if !atype.is_empty() {
            match AuthType::parse(&atype) {
                Some(t) => auth.auth_type = t,
                None => {
                    self.error(
                        &type_path,
                        format!("unknown authentication type: {atype:?}"),
                    );
                    // `none` needs no credentials, so a bad type does not also produce a
                    // misleading "empty username or password".
                    auth.auth_type = AuthType::None;
                }
            }
        }
        let realm = self.string(&join(path, "realm"), realm);
        auth.realm = non_empty_or(realm, DEFAULT_REALM);
        self.credentials(&join(path, "credentials"), creds, &mut auth);
        auth
    }

    /// A string map whose keys are taken verbatim: unlike struct fields, Go map keys are
    /// not case-folded, and `username` must be spelled exactly. Our extension: a list under
    /// `secrets` (strings) or `users` (`{username, password}` objects) fills
    /// [`AuthConfig::secrets`] / [`AuthConfig::users`]; a string there stays an ordinary
    /// (upstream) key.
    fn credentials(&mut self, path: &str, v: Option<&Value>, auth: &mut AuthConfig) {
        let map = match v.map(untag) {
            None | Some(Value::Null) => return,
            Some(Value::Mapping(m)) => m,
            Some(other) => {
                self.type_error(path, other, "a map of strings");
                return;
            }
        };
        for (k, val) in map {
            let Some(key) = key_string(k) else {
                self.error(path, "invalid key: expected a string");
                continue;
            };
            let kpath = join(path, &key);
            let list = matches!(untag(val), Value::Sequence(_));
            match key.as_str() {
                "secrets" if list => {
                    auth.credentials.remove(&key);
                    auth.secrets = Some(self.strings(&kpath, Some(val)));
                    continue;
                }
                "users" if list => {
                    auth.credentials.remove(&key);
                    auth.users = Some(self.objects(&kpath, Some(val), Self::user));
                    continue;
                }
                "secrets" | "users" if !matches!(untag(val), Value::String(_) | Value::Null) => {
                    self.type_error(&kpath, val, "a sequence");
                    continue;
                }
                "secrets" | "users" if matches!(untag(val), Value::String(_)) => {
                    self.warnings.push(format!(
                        "`{kpath}` is a string, kept as an ordinary credentials key; \
                         the `{key}` extension takes a list"
                    ));
                    if key == "secrets" {
                        auth.secrets = None;
                    } else {
                        auth.users = None;
                    }
                }
                _ => {}
            }
            let value = self.string(&kpath, Some(val));
            auth.credentials.insert(key, value);
        }
    }

    /// One `auth.credentials.users[]` entry: both keys must be there.
    fn user(&mut self, path: &str, v: &Value) -> UserCredential {
        let mut u = UserCredential {
            username: String::new(),
            password: String::new(),
        };
        let Some([username, password]) = self.fields(
            path,
            v,
            ["username", "password"],
            "a map with `username` and `password`",
        ) else {
            return u;
        };
        for (name, val, slot) in [
            ("username", username, &mut u.username),
            ("password", password, &mut u.password),
        ] {
            let p = join(path, name);
            if val.is_none() {
                self.error(&p, "missing");
            }
            *slot = self.string(&p, val);
        }
        u
    }

    fn listener(&mut self, path: &str, v: &Value) -> ListenerConfig {
        let mut l = ListenerConfig {
            name: String::new(),
            protocol: ListenerProtocol::TurnUdp,
            public_address: String::new(),
            public_port: 0,
            address: DEFAULT_ADDRESS.to_string(),
            port: DEFAULT_PORT,
            cert: String::new(),
            key: String::new(),
            routes: Vec::new(),
            min_relay_port: None,
            max_relay_port: None,
        };
        let Some(
            [
                name,
                protocol,
                public_address,
                public_port,
                address,
                port,
                cert,
                key,
                routes,
                min_relay,
                max_relay,
            ],
        ) = self.fields(
            path,
            v,
            [
                "name",
                "protocol",
                "public_address",
                "public_port",
                "address",
                "port",
                "cert",
                "key",
                "routes",
                "min_relay_port",
                "max_relay_port",
            ],
            "struct ListenerConfig",
        )
        else {
            return l;
        };
        l.name = self.string(&join(path, "name"), name);
        let proto_path = join(path, "protocol");
        let proto = self.string(&proto_path, protocol);
        if !proto.is_empty() {
            match ListenerProtocol::parse(&proto) {
                Some(p) => l.protocol = p,
                None => self.error(&proto_path, format!("unknown listener protocol: {proto:?}")),
            }
        }
        l.public_address = self.string(&join(path, "public_address"), public_address);
        let pp_path = join(path, "public_port");
        if let Some(p) = self.int(&pp_path, public_port, "u16") {
            match u16::try_from(p) {
                Ok(p) => l.public_port = p,
                Err(_) => self.error(
                    &pp_path,
                    format!("invalid value: integer `{p}`, expected u16"),
                ),
            }
        }
        // `$STUNNER_ADDR` unset expands to "", which upstream also turns into 0.0.0.0.
        let address = self.string(&join(path, "address"), address);
        l.address = non_empty_or(address, DEFAULT_ADDRESS);
        let port_path = join(path, "port");
        match self.int(&port_path, port, "u16") {
            // 0 means "not set" in Go, hence the default.
            None | Some(0) => {}
            Some(p) => match u16::try_from(p) {
                Ok(p) => l.port = p,
                Err(_) => self.error(&port_path, format!("invalid port: {p}")),
            },
        }
        l.cert = self.string(&join(path, "cert"), cert);
        l.key = self.string(&join(path, "key"), key);
        l.routes = self.strings(&join(path, "routes"), routes);
        l.routes.sort();
        l.min_relay_port = self.relay_port(&join(path, "min_relay_port"), min_relay);
        l.max_relay_port = self.relay_port(&join(path, "max_relay_port"), max_relay);
        l
    }

    fn relay_port(&mut self, path: &str, v: Option<&Value>) -> Option<u16> {
        let p = self.int(path, v, "u16")?;
        match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.error(path, format!("invalid relay port: {p}"));
                None
            }
        }
    }

    fn cluster(&mut self, path: &str, v: &Value) -> ClusterConfig {
        let mut c = ClusterConfig {
            name: String::new(),
            cluster_type: ClusterType::Static,
            protocol: ClusterProtocol::Udp,
            endpoints: Vec::new(),
        };
        let Some([name, ctype, protocol, endpoints]) = self.fields(
            path,
            v,
            ["name", "type", "protocol", "endpoints"],
            "struct ClusterConfig",
        ) else {
            return c;
        };
        c.name = self.string(&join(path, "name"), name);
        let type_path = join(path, "type");
        let ctype = self.string(&type_path, ctype);
        if !ctype.is_empty() {
            match ClusterType::parse(&ctype) {
                Some(t) => c.cluster_type = t,
                None => {
                    self.error(&type_path, format!("unknown cluster type: {ctype:?}"));
                    // STRICT_DNS endpoints are not checked, so the bad type is the only
                    // error reported for this cluster's endpoints.
                    c.cluster_type = ClusterType::StrictDns;
                }
            }
        }
        let proto_path = join(path, "protocol");
        let proto = self.string(&proto_path, protocol);
        if !proto.is_empty() {
            match ClusterProtocol::parse(&proto) {
                Some(p) => c.protocol = p,
                None => self.error(&proto_path, format!("unknown cluster protocol: {proto:?}")),
            }
        }
        c.endpoints = self.strings(&join(path, "endpoints"), endpoints);
        c.endpoints.sort();
        c
    }
}

fn non_empty_or(s: String, default: &str) -> String {
    if s.is_empty() { default.to_string() } else { s }
}
