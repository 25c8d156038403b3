//! Our auth-Secret extension keys, rendered: `secret.<id>` adds shared secrets and
//! `username.<id>`/`password.<id>` add static users to the config's `credentials.secrets` /
//! `credentials.users`; a Secret without them renders exactly as before. The live rotation
//! through the manifests origin is in `tests/secret_rotation.rs`.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::config::{AuthType, UserCredential};

const ID: &str = "testnamespace/gateway-1";

/// The upstream fixture with the GatewayConfig pointing at the auth Secret, whose
/// `stringData` is `data`.
fn with_secret(data: &str) -> stunnerd::k8s::RenderOutput {
    let cfg = CONFIG.replace(
        "spec: {realm: testrealm, authType: static, userName: testuser, password: testpass, logLevel: testloglevel}",
        "spec: {realm: testrealm, authRef: {name: testauthsecret-ok}}",
    );
    let secret = AUTH_SECRET.replace(
        "stringData: {username: ext-testuser, password: ext-testpass, secret: ext-secret}",
        &format!("stringData: {{{data}}}"),
    );
    let mut pieces: Vec<String> = upstream()
        .into_iter()
        .filter(|p| *p != CONFIG && *p != AUTH_SECRET)
        .map(str::to_string)
        .collect();
    pieces.extend([cfg, secret]);
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    render(&refs)
}

fn user(u: &str, p: &str) -> UserCredential {
    UserCredential {
        username: u.into(),
        password: p.into(),
    }
}

#[test]
fn secret_keys_add_shared_secrets() {
    let out = with_secret("type: ephemeral, secret: new, secret.old: old, secret.older: older");
    let a = &config(&out, ID).auth;
    assert_eq!(a.auth_type, AuthType::Ephemeral);
    assert_eq!(a.credentials["secret"], "new");
    assert_eq!(
        a.secrets.as_deref(),
        Some(&["old".to_string(), "older".into()][..])
    );
    assert_eq!(a.ephemeral_secrets(), ["new", "old", "older"]);
    // The rendered JSON carries them inside `credentials`.
    let wire = serde_json::to_value(a).unwrap();
    assert_eq!(
        wire["credentials"],
        serde_json::json!({"secret": "new", "secrets": ["old", "older"]})
    );
    // sharedSecret as the primary, a duplicate value once, and extension keys alone.
    let out = with_secret("type: ephemeral, sharedSecret: s, secret.a: s, secret.b: t");
    assert_eq!(config(&out, ID).auth.ephemeral_secrets(), ["s", "t"]);
    let out = with_secret("type: ephemeral, secret.b: b, secret.a: a");
    let a = &config(&out, ID).auth;
    assert!(!a.credentials.contains_key("secret"));
    assert_eq!(a.ephemeral_secrets(), ["a", "b"]);
    // A rendered config goes through the daemon's own parser unchanged.
    let text = serde_json::to_string(config(&out, ID)).unwrap();
    let parsed = stunnerd::config::parse_config(&text, &|_| None).expect("parses");
    assert_eq!(&parsed.config.auth, a);
}

#[test]
fn username_password_keys_add_static_users() {
    let out = with_secret(
        "username: u, password: p, username.b: bob, password.b: pb, username.a: alice, password.a: pa",
    );
    let a = &config(&out, ID).auth;
    assert_eq!(a.auth_type, AuthType::Static);
    assert_eq!(
        a.users.as_deref(),
        Some(&[user("alice", "pa"), user("bob", "pb")][..])
    );
    assert_eq!(
        a.static_users(),
        [("u", "p"), ("alice", "pa"), ("bob", "pb")]
    );
    let out = with_secret("username.x: xu, password.x: xp");
    assert_eq!(config(&out, ID).auth.static_users(), [("xu", "xp")]);
    // Extension keys of the other type are ignored, as upstream ignores extra keys.
    let out = with_secret("type: ephemeral, secret: s, username.x: xu, password.x: xp");
    assert_eq!(config(&out, ID).auth.users, None);
}

#[test]
fn bad_extension_keys_are_errors_naming_the_keys() {
    let cases = [
        (
            "username: u, password: p, username.x: xu",
            "Secret testnamespace/testauthsecret-ok has `username.x` without `password.x`",
        ),
        (
            "username: u, password: p, password.x: xp",
            "Secret testnamespace/testauthsecret-ok has `password.x` without `username.x`",
        ),
        (
            "username: u, password: p, username.x: u, password.x: q",
            "names user \"u\" in `username` and `username.x`",
        ),
        (
            "username.x: v, password.x: q, username.y: v, password.y: r",
            "names user \"v\" in `username.x` and `username.y`",
        ),
        (
            "username: u, password: p, username.x: '', password.x: q",
            "key `username.x` or `password.x` of Secret testnamespace/testauthsecret-ok is empty",
        ),
        (
            "type: ephemeral, secret: s, secret.x: ''",
            "missing shared-secret for longterm authentication: key `secret.x` of Secret testnamespace/testauthsecret-ok is empty",
        ),
        (
            "username: u, username.x: xu, password.x: xp",
            "missing username and/or password for plaintext authentication: Secret testnamespace/testauthsecret-ok needs the keys `username` and `password`",
        ),
    ];
    for (data, want) in cases {
        let out = with_secret(data);
        assert!(out.config(ID).is_none(), "{data}: rendered a config");
        assert!(
            out.errors().any(|f| f.to_string().contains(want)),
            "{data}: want {want:?}, got {:?}",
            out.errors().map(|f| f.to_string()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn secrets_without_extension_keys_render_as_upstream() {
    let out = with_secret("type: ephemeral, secret: s, other: x, secret.: y, secretx: z");
    let a = &config(&out, ID).auth;
    assert_eq!((&a.secrets, &a.users), (&None, &None));
    let wire = serde_json::to_value(a).unwrap();
    assert_eq!(wire["credentials"], serde_json::json!({"secret": "s"}));
}
