//! The `auth.credentials.secrets` and `auth.credentials.users` extension: parsing, errors
//! naming their fields, serialisation, and upstream configs staying as they were.

use super::tests::{env_of, parse, parse_with};
use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse_config(text, &env_of(&[])) {
        Ok(p) => panic!("expected errors, got {:?}", p.config),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

fn ephemeral(creds: &str) -> String {
    format!("version: v1\nauth: {{type: ephemeral, credentials: {creds}}}")
}

fn static_(creds: &str) -> String {
    format!("version: v1\nauth: {{type: static, credentials: {creds}}}")
}

#[test]
fn ephemeral_secrets_list_beside_secret() {
    let p = parse(&ephemeral("{secret: new, secrets: [old, older, new]}"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let a = &p.config.auth;
    assert_eq!(a.credentials.get("secret").map(String::as_str), Some("new"));
    assert!(!a.credentials.contains_key("secrets"));
    assert_eq!(
        a.secrets.as_deref(),
        Some(&["old".to_string(), "older".into(), "new".into()][..])
    );
    // Each once, the upstream key first.
    assert_eq!(a.ephemeral_secrets(), ["new", "old", "older"]);
    // The list alone is enough.
    let p = parse(&ephemeral("{secrets: [a, b]}"));
    assert_eq!(p.config.auth.ephemeral_secrets(), ["a", "b"]);
    // Secrets with `$` survive env expansion, like every credentials value.
    let p = parse_with(&ephemeral("{secrets: [\"x$HOME\"]}"), &[("HOME", "/root")]);
    assert_eq!(p.config.auth.ephemeral_secrets(), ["x$HOME"]);
}

#[test]
fn static_users_list_beside_username() {
    let p = parse(&static_(
        "{username: alice, password: a, users: [{username: bob, password: b}, {USERNAME: carol, password: c}]}",
    ));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(
        p.config.auth.static_users(),
        [("alice", "a"), ("bob", "b"), ("carol", "c")]
    );
    let p = parse(&static_("{users: [{username: bob, password: b}]}"));
    assert_eq!(p.config.auth.static_users(), [("bob", "b")]);
}

#[test]
fn credential_list_errors_name_the_field() {
    assert_eq!(
        errors(&ephemeral("{secret: s, secrets: []}")),
        ["auth.credentials.secrets: empty list: give at least one secret or leave the key out"]
    );
    assert_eq!(
        errors(&ephemeral("{secrets: [a, '']}")),
        ["auth.credentials.secrets[1]: empty secret"]
    );
    assert_eq!(
        errors(&ephemeral("{secrets: [a, [b]]}")),
        ["auth.credentials.secrets[1]: invalid type: sequence, expected a string"]
    );
    assert_eq!(
        errors(&ephemeral("{secret: s, secrets: {a: b}}")),
        ["auth.credentials.secrets: invalid type: map, expected a sequence"]
    );
    assert_eq!(
        errors(&static_("{username: u, password: p, users: []}")),
        ["auth.credentials.users: empty list: give at least one user or leave the key out"]
    );
    assert_eq!(
        errors(&static_(
            "{username: u, password: p, users: [{username: v, password: q}, {username: v, password: r}, {username: u, password: s}]}"
        )),
        [
            r#"auth.credentials.users[1].username: duplicate username "v" (also auth.credentials.users[0])"#,
            r#"auth.credentials.users[2].username: duplicate username "u" (also auth.credentials.username)"#,
        ]
    );
    assert_eq!(
        errors(&static_(
            "{users: [{username: v}, {password: q}, {username: '', password: ''}]}"
        )),
        [
            "auth.credentials.users[0].password: missing",
            "auth.credentials.users[1].username: missing",
            "auth.credentials.users[2].username: empty username",
            "auth.credentials.users[2].password: empty password",
        ]
    );
    assert_eq!(
        errors(&static_("{users: [x]}")),
        [
            r#"auth.credentials.users[0]: invalid type: string "x", expected a map with `username` and `password`"#
        ]
    );
    // Half of the upstream pair is still the upstream error, list or not.
    assert_eq!(
        errors(&static_(
            "{username: u, users: [{username: v, password: q}]}"
        )),
        ["auth.credentials: static: empty username or password"]
    );
}

#[test]
fn lists_for_the_other_auth_type_are_ignored_with_a_warning() {
    let p = parse(&static_("{username: u, password: p, secrets: [s]}"));
    assert_eq!(
        p.warnings,
        ["auth.credentials.secrets: only ephemeral auth uses it; ignored with type static"]
    );
    let p = parse(&ephemeral(
        "{secret: s, users: [{username: u, password: p}]}",
    ));
    assert_eq!(
        p.warnings,
        ["auth.credentials.users: only static auth uses it; ignored with type ephemeral"]
    );
}

#[test]
fn upstream_configs_parse_as_before() {
    // No list: nothing of the extension is set, and serialisation is upstream's.
    let text = r#"{"version":"v1","auth":{"type":"ephemeral","realm":"r","credentials":{"secret":"s","x":"y"}}}"#;
    let p = parse(text);
    assert_eq!(
        (&p.config.auth.secrets, &p.config.auth.users),
        (&None, &None)
    );
    let wire = serde_json::to_value(&p.config).unwrap();
    assert_eq!(
        wire["auth"],
        serde_json::json!({"type": "ephemeral", "realm": "r", "credentials": {"secret": "s", "x": "y"}})
    );
    // Upstream takes any string under any key: a string `secrets` or `users` stays an
    // ordinary key (with a warning), not a list.
    let p = parse(&ephemeral("{secret: s, secrets: t, users: u}"));
    assert_eq!(p.config.auth.ephemeral_secrets(), ["s"]);
    assert_eq!(
        p.config.auth.credentials.get("secrets").map(String::as_str),
        Some("t")
    );
    assert_eq!(p.config.auth.users, None);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("`auth.credentials.secrets` is a string"));
}

#[test]
fn extension_lists_serialise_inside_credentials_and_round_trip() {
    let p = parse(&static_(
        "{username: u, password: p, users: [{username: v, password: q}]}",
    ));
    let wire = serde_json::to_string(&p.config.auth).unwrap();
    assert_eq!(
        wire,
        r#"{"type":"static","realm":"stunner.l7mp.io","credentials":{"password":"p","username":"u","users":[{"username":"v","password":"q"}]}}"#
    );
    let p = parse(&ephemeral("{secret: s, secrets: [t]}"));
    let text = serde_json::to_string(&p.config).unwrap();
    assert!(
        text.contains(r#""credentials":{"secret":"s","secrets":["t"]}"#),
        "{text}"
    );
    assert_eq!(parse(&text).config, p.config);
    // Debug never shows a secret or password.
    let p = parse(&ephemeral(
        "{secret: topsecret1, secrets: [topsecret2], users: [{username: v, password: topsecret3}]}",
    ));
    let dbg = format!("{:?}", p.config);
    assert!(!dbg.contains("topsecret"), "{dbg}");
}
