//! The STUNner v1 config as typed values.
//!
//! The wire format (spec §2) is what the operator renders and what a CDS server serves, so
//! the structs here serialise to exactly the upstream JSON keys with the upstream `omitempty`
//! behaviour. Parsing does not go through `serde::Deserialize`: upstream's Go decoder matches
//! keys case-insensitively, ignores unknown keys and reports the *first* type error only,
//! and we want all errors with their field paths plus warnings for unknown keys, so the text
//! is parsed into a YAML value tree and walked by hand (`decode.rs`).
//!
//! A [`StunnerConfig`] obtained from [`parse_config`] or [`from_turn_uri`] is normalised and
//! validated: enums are typed, defaults are filled in, lists are sorted.
//!
//! Submodules: `decode` (value tree to typed config), `env` (`$VAR` expansion), `validate`
//! (semantic checks), `endpoint` (STATIC endpoint grammar), `uri` (the TURN-URI default
//! config), `types` (the structs and their wire form), `error`.

mod decode;
mod endpoint;
mod env;
mod error;
mod types;
mod uri;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_credentials;
#[cfg(test)]
mod tests_errors;

pub use endpoint::{Endpoint, parse_endpoint};
pub use env::{expand_env, stunner_env};
pub use error::{ConfigError, FieldError};
pub use types::{
    AdminConfig, AuthConfig, AuthType, ClusterConfig, ClusterProtocol, ClusterType, LicenseConfig,
    ListenerConfig, ListenerProtocol, StunnerConfig, UserCredential,
};
pub use uri::from_turn_uri;
pub use validate::validate;

/// The only API version we run; `v1alpha1` input is converted to it.
pub const API_VERSION: &str = "v1";
/// Default `admin.name` (spec §2.3).
pub const DEFAULT_ADMIN_NAME: &str = "default-stunnerd";
/// Default `admin.loglevel` (spec §2.3).
pub const DEFAULT_LOGLEVEL: &str = "all:INFO";
/// Default `admin.healthcheck_endpoint` when the key is absent (spec §2.3).
pub const DEFAULT_HEALTHCHECK_ENDPOINT: &str = "http://:8086";
/// Default `auth.realm` (spec §2.4).
pub const DEFAULT_REALM: &str = "stunner.l7mp.io";
/// Default listener port, the standard TURN port (spec §2.5).
pub const DEFAULT_PORT: u16 = 3478;
/// Default listener `address` (spec §2.5).
pub const DEFAULT_ADDRESS: &str = "0.0.0.0";

/// The result of [`parse_config`]: a validated config plus non-fatal findings.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub config: StunnerConfig,
    /// Human-readable, each naming its field path, e.g. "unknown key `listeners[0].foo` ignored".
    pub warnings: Vec<String>,
}

/// Parse, env-expand and validate a config text (JSON or YAML), per spec §2.1.
///
/// `env` looks up environment variables; production passes `|k| std::env::var(k).ok()`,
/// tests pass a closure over a map. The `STUNNER_PORT` fallback of spec §1.3 is applied on
/// top of it (see [`stunner_env`]), without touching the process environment.
///
/// All errors are collected, each with its field path.
pub fn parse_config(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let lookup = |name: &str| stunner_env(name, env);
    let mut warnings = Vec::new();

    // Credentials must come from the *unexpanded* text so that secrets containing `$`
    // survive (spec §2.1.5), so that text has to be parsed on its own first.
    let raw_tree = decode::parse_tree(text);
    let expanded = expand_env(text, &lookup);
    let mut tree = match decode::parse_tree(&expanded) {
        Ok(t) => t,
        // Report the syntax error against the text the user wrote when that one is broken
        // too: positions in the expanded text could be misleading.
        Err(e) => return Err(raw_tree.err().unwrap_or(e)),
    };
    match raw_tree {
        Ok(raw) => env::transplant_credentials(&raw, &mut tree),
        // Upstream rejects such a text outright. We are lenient (e.g. `"port": ${PORT}` in
        // JSON is only valid after expansion) but must say that secrets were expanded.
        Err(_) => warnings.push(
            "config text is only valid after environment expansion; \
             `auth.credentials` values were environment-expanded too"
                .to_string(),
        ),
    }

    let (config, mut errors, decode_warnings) = decode::decode(&tree);
    warnings.extend(decode_warnings);
    let Some(config) = config else {
        return Err(ConfigError::new(errors));
    };
    if let Err(e) = validate::validate_with(&config, true) {
        // A field that failed to decode holds a default (and so do the fields inside it):
        // one error about it is enough.
        let bad: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
        let covered = |path: &str| {
            bad.iter().any(|b| {
                path.strip_prefix(b.as_str()).is_some_and(|rest| {
                    rest.is_empty() || !b.is_empty() && rest.starts_with(['.', '['])
                })
            })
        };
        errors.extend(e.errors.into_iter().filter(|e| !covered(&e.path)));
    }
    if !errors.is_empty() {
        error::sort_by_section(&mut errors);
        return Err(ConfigError::new(errors));
    }
    warnings.extend(validate::warnings(&config));
    Ok(Parsed { config, warnings })
}

/// The zero config of spec §2.8 for id `<ns>/<name>`, in its validated form (so that it
/// compares equal to a received zero config after validation).
pub fn zero_config(id: &str) -> StunnerConfig {
    StunnerConfig {
        version: API_VERSION.to_string(),
        admin: AdminConfig {
            name: id.to_string(),
            ..AdminConfig::default()
        },
        auth: AuthConfig::new(
            AuthType::Static,
            DEFAULT_REALM,
            [
                ("username", "dummy-username"),
                ("password", "dummy-password"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        listeners: Vec::new(),
        clusters: Vec::new(),
    }
}

/// The zero config exactly as upstream's CDS server puts it on the wire (spec §2.8): Go
/// field order and no defaults filled in, which `serde_json` on [`zero_config`] would not
/// reproduce. For fake CDS servers and golden tests.
pub fn zero_config_wire(id: &str) -> String {
    // serde_json::to_string of a &str cannot fail; the fallback keeps us panic-free anyway.
    let name = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_string());
    format!(
        r#"{{"version":"v1","admin":{{"name":{name}}},"auth":{{"type":"static","realm":"stunner.l7mp.io","credentials":{{"password":"dummy-password","username":"dummy-username"}}}}}}"#
    )
}

impl StunnerConfig {
    /// Delete detection (spec §2.8): a validated config is a delete iff it equals the
    /// validated zero config of its own `admin.name`.
    pub fn is_zero(&self) -> bool {
        *self == zero_config(&self.admin.name)
    }

    /// Like [`is_zero`](Self::is_zero) but ignoring `admin.loglevel`: readiness is not
    /// granted by a zero config whatever its loglevel (spec §2.8).
    pub fn is_zero_ignoring_loglevel(&self) -> bool {
        let mut zero = zero_config(&self.admin.name);
        zero.admin.loglevel.clone_from(&self.admin.loglevel);
        *self == zero
    }

    /// Find a listener by name.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Find a cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Sort the lists that upstream keeps sorted (routes, endpoints, offload interfaces), so
    /// that configs built in code compare equal to parsed ones.
    pub fn normalize(&mut self) {
        self.admin.offload_interfaces.sort();
        for l in &mut self.listeners {
            l.routes.sort();
        }
        for c in &mut self.clusters {
            c.endpoints.sort();
        }
    }
}
