//! `admin` and `auth` of a rendered config, from the GatewayConfig, its auth Secret and the
//! Dataplane (spec 2.5, 2.6).

use std::collections::BTreeMap;

use crate::config::{
    AdminConfig, AuthConfig, AuthType, DEFAULT_LOGLEVEL, DEFAULT_REALM, UserCredential,
};

use super::objects::{Dataplane, GatewayConfig, Secret};
use super::schema::offload_engine;
use super::store::{Store, key};
use super::{DEFAULT_ADMIN_NAME, Mode};

/// Error texts of spec 2.11, kept verbatim: users search for them.
pub const ERR_AUTH_TYPE: &str = "invalid authentication type";
pub const ERR_STATIC_CREDS: &str = "missing username and/or password for plaintext authentication";
pub const ERR_EPHEMERAL_SECRET: &str = "missing shared-secret for longterm authentication";
pub const ERR_EXTERNAL_AUTH: &str = "missing or invalid external authentication credentials";

/// The admin section. In managed mode the Dataplane contributes the metrics and health-check
/// endpoints and the offload settings; the name is set by the caller per Gateway.
pub(super) fn render_admin(gc: &GatewayConfig, dp: Option<&Dataplane>, mode: Mode) -> AdminConfig {
    let loglevel = gc
        .spec
        .log_level
        .clone()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| DEFAULT_LOGLEVEL.to_string());
    let mut admin = AdminConfig {
        name: DEFAULT_ADMIN_NAME.to_string(),
        loglevel,
        metrics_endpoint: String::new(),
        healthcheck_endpoint: Some("http://:8086".to_string()),
        user_quota: 0,
        offload_engine: "None".to_string(),
        offload_interfaces: Vec::new(),
        license_config: None,
    };
    if let (Mode::Managed, Some(dp)) = (mode, dp) {
        let s = &dp.spec;
        if s.enable_metrics_endpoint {
            admin.metrics_endpoint = "http://:8080/metrics".to_string();
        }
        if s.disable_health_check {
            // Present but empty: "health checks off", not "use the default".
            admin.healthcheck_endpoint = Some(String::new());
        }
        // Schema-checked already, so an unknown engine cannot reach here; `None` is safe.
        admin.offload_engine = s
            .offload_engine
            .as_deref()
            .and_then(offload_engine)
            .unwrap_or("None")
            .to_string();
        admin.offload_interfaces = s.offload_interfaces.clone();
        admin.offload_interfaces.sort();
    }
    admin
}

/// The auth section, or the (critical) error that invalidates the Gateway or class. The
/// error text starts with the spec's wording and adds what exactly is missing.
pub(super) fn render_auth(store: &Store<'_>, gc: &GatewayConfig) -> Result<AuthConfig, String> {
    let realm = gc
        .spec
        .realm
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REALM.to_string());
    let mut creds = BTreeMap::new();
    let (mut secrets, mut users) = (None, None);
    let auth_type;
    if let Some(r) = &gc.spec.auth_ref {
        // External auth: inline fields, including authType, are ignored entirely (seed:
        // "External authentication settings override inline settings").
        let group_ok = r.group.as_deref().is_none_or(|g| g.is_empty() || g == "v1");
        let kind_ok = r.kind.as_deref().is_none_or(|k| k == "Secret");
        if !group_ok || !kind_ok {
            return Err(format!(
                "{ERR_EXTERNAL_AUTH}: authRef must refer to a core Secret (group {:?}, kind {:?})",
                r.group.as_deref().unwrap_or(""),
                r.kind.as_deref().unwrap_or("")
            ));
        }
        let ns = r
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| gc.metadata.namespace.clone());
        let id = format!("{ns}/{}", r.name);
        let Some(secret) = store.secrets.get(&key(&ns, &r.name)) else {
            return Err(format!(
                "{ERR_EXTERNAL_AUTH}: {}",
                store.why_missing("Secret", &id)
            ));
        };
        let t = secret
            .get_str("type")
            .unwrap_or_else(|| "static".to_string());
        auth_type = auth_alias(&t)
            .ok_or_else(|| format!("{ERR_AUTH_TYPE}: {t:?} in key `type` of Secret {id}"))?;
        match auth_type {
            AuthType::Static => {
                let pair = (secret.get_str("username"), secret.get_str("password"));
                let extra = extra_users(secret, &id, pair.0.as_deref())?;
                match pair {
                    (Some(u), Some(p)) => {
                        creds.insert("username".to_string(), u);
                        creds.insert("password".to_string(), p);
                    }
                    (None, None) if !extra.is_empty() => {}
                    _ => {
                        return Err(format!(
                            "{ERR_STATIC_CREDS}: Secret {id} needs the keys `username` and `password`"
                        ));
                    }
                }
                users = (!extra.is_empty()).then_some(extra);
            }
            AuthType::Ephemeral => {
                let primary = secret
                    .get_str("secret")
                    .or_else(|| secret.get_str("sharedSecret"));
                let extra = extra_secrets(secret, &id, primary.as_deref())?;
                match primary {
                    Some(s) => {
                        creds.insert("secret".to_string(), s);
                    }
                    None if !extra.is_empty() => {}
                    None => {
                        return Err(format!(
                            "{ERR_EPHEMERAL_SECRET}: Secret {id} needs the key `secret` (or `sharedSecret`)"
                        ));
                    }
                }
                secrets = (!extra.is_empty()).then_some(extra);
            }
            AuthType::None => {}
        }
    } else {
        let t = gc.spec.auth_type.as_deref().unwrap_or("static");
        auth_type = auth_alias(t).ok_or_else(|| format!("{ERR_AUTH_TYPE}: authType {t:?}"))?;
        match auth_type {
            AuthType::Static => {
                let (Some(u), Some(p)) = (&gc.spec.user_name, &gc.spec.password) else {
                    return Err(format!(
                        "{ERR_STATIC_CREDS}: set spec.userName and spec.password, or spec.authRef"
                    ));
                };
                creds.insert("username".to_string(), u.clone());
                creds.insert("password".to_string(), p.clone());
            }
            AuthType::Ephemeral => {
                let Some(s) = &gc.spec.shared_secret else {
                    return Err(format!(
                        "{ERR_EPHEMERAL_SECRET}: set spec.sharedSecret, or spec.authRef"
                    ));
                };
                creds.insert("secret".to_string(), s.clone());
            }
            AuthType::None => {}
        }
    }
    let mut auth = AuthConfig::new(auth_type, realm, creds);
    auth.secrets = secrets;
    auth.users = users;
    Ok(auth)
}

/// Our extension: the additional shared secrets of an auth Secret, under the keys
/// `secret.<id>` in key order, each once and not repeating `primary`. An empty value is an
/// error naming its key (an empty shared secret lets anyone sign credentials).
fn extra_secrets(secret: &Secret, id: &str, primary: Option<&str>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for k in secret.keys() {
        if extension_id(k, "secret").is_none() {
            continue;
        }
        let v = secret.get_str(k).unwrap_or_default();
        if v.is_empty() {
            return Err(format!(
                "{ERR_EPHEMERAL_SECRET}: key `{k}` of Secret {id} is empty"
            ));
        }
        if primary != Some(v.as_str()) && !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// Our extension: the additional static users of an auth Secret, one per `username.<id>`
/// key with its `password.<id>`, in key order. A half pair, an empty value or a user name
/// given twice (`username` included) is an error naming the keys.
fn extra_users(
    secret: &Secret,
    id: &str,
    primary: Option<&str>,
) -> Result<Vec<UserCredential>, String> {
    let mut out: Vec<(String, UserCredential)> = Vec::new();
    for k in secret.keys() {
        if let Some(x) = extension_id(k, "password") {
            if secret.get(&format!("username.{x}")).is_none() {
                return Err(format!(
                    "{ERR_STATIC_CREDS}: Secret {id} has `{k}` without `username.{x}`"
                ));
            }
        }
        let Some(x) = extension_id(k, "username") else {
            continue;
        };
        let pk = format!("password.{x}");
        let (Some(username), Some(password)) = (secret.get_str(k), secret.get_str(&pk)) else {
            return Err(format!(
                "{ERR_STATIC_CREDS}: Secret {id} has `{k}` without `{pk}`"
            ));
        };
        if username.is_empty() || password.is_empty() {
            return Err(format!(
                "{ERR_STATIC_CREDS}: key `{k}` or `{pk}` of Secret {id} is empty"
            ));
        }
        if primary == Some(username.as_str()) {
            return Err(format!(
                "{ERR_STATIC_CREDS}: Secret {id} names user {username:?} in `username` and `{k}`"
            ));
        }
        if let Some((first, _)) = out.iter().find(|(_, u)| u.username == username) {
            return Err(format!(
                "{ERR_STATIC_CREDS}: Secret {id} names user {username:?} in `{first}` and `{k}`"
            ));
        }
        out.push((k.to_string(), UserCredential { username, password }));
    }
    Ok(out.into_iter().map(|(_, u)| u).collect())
}

/// `<id>` of an extension key `<base>.<id>` (non-empty id).
fn extension_id<'k>(key: &'k str, base: &str) -> Option<&'k str> {
    key.strip_prefix(base)?
        .strip_prefix('.')
        .filter(|id| !id.is_empty())
}

/// The operator's auth type aliases (spec 2.6), case-sensitive like upstream.
pub(super) fn auth_alias(s: &str) -> Option<AuthType> {
    match s {
        "static" | "plaintext" => Some(AuthType::Static),
        "ephemeral" | "timewindowed" | "longterm" => Some(AuthType::Ephemeral),
        "none" => Some(AuthType::None),
        _ => None,
    }
}
