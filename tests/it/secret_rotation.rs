//! Secret rotation with the real binary: two ephemeral (TURN REST) secrets at once, then a
//! reload that removes the old one. Credentials from both secrets allocate and relay
//! (`turnutils_uclient -W`); after the reload new credentials from the old secret get 401
//! while an allocation made with it keeps relaying and its Refresh, CreatePermission and
//! ChannelBind still succeed. The same through the Kubernetes manifests origin, with the
//! secrets in the auth Secret (`secret` and `secret.<id>` keys). Static auth with a list of
//! users is checked with uclient too.

use crate::common;
use crate::ops_util;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ops_util::*;
use serde_json::{Value, json};
use stunnerd::turn::auth::rest_password;

const OLD: &str = "old-shared-secret";
const NEW: &str = "new-shared-secret";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A TURN client holding a REST credential for `name`, valid for an hour, signed by `secret`.
fn rest_client(server: u16, name: &str, secret: &str) -> TurnClient {
    let username = format!("{}:{name}", unix_now() + 3600);
    let password = rest_password(secret.as_bytes(), &username);
    TurnClient::new(local(server), &username, &password)
}

fn echo_peer() -> UdpSocket {
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    peer
}

/// A stunnerd config with one TURN-UDP listener, health and metrics on 127.0.0.1.
fn config(port: u16, health: u16, metrics: u16, auth: Value) -> String {
    json!({
        "version": "v1",
        "admin": {"name": "rotation", "loglevel": "all:INFO",
                  "healthcheck_endpoint": format!("http://127.0.0.1:{health}"),
                  "metrics_endpoint": format!("http://127.0.0.1:{metrics}/metrics")},
        "auth": auth,
        "listeners": [{"name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1",
                       "port": port, "routes": ["local"]}],
        "clusters": [{"name": "local", "type": "STATIC", "endpoints": ["127.0.0.1/32"]}],
    })
    .to_string()
}

fn ephemeral(secret: &str, secrets: &[&str]) -> Value {
    let mut creds = json!({"secret": secret});
    if !secrets.is_empty() {
        creds["secrets"] = json!(secrets);
    }
    json!({"type": "ephemeral", "realm": REALM, "credentials": creds})
}

/// `turnutils_uclient` through `server` to the echo peer on `peer_port`: `n` messages
/// `interval_ms` apart over a channel, with `creds` flags.
fn uclient_args(
    server: u16,
    peer_port: u16,
    n: u32,
    interval_ms: u32,
    creds: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "-c",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &server.to_string(),
        "-m",
        "1",
        "-n",
        &n.to_string(),
        "-l",
        "100",
        "-z",
        &interval_ms.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(creds.iter().map(|s| s.to_string()));
    args.push("127.0.0.1".into());
    args
}

fn assert_metric_rose(metrics: u16, series: &str, before: f64) -> f64 {
    let mut now = before;
    assert!(
        wait_for(Duration::from_secs(3), || {
            now = scrape(metrics, series).unwrap_or(before);
            now > before
        }),
        "{series} stayed at {before}"
    );
    now
}

/// The must-show: two secrets, both allocate; a reload removes the old one; new credentials
/// from it are refused with 401 (our client and uclient) while live allocations made with it
/// keep relaying, and Refresh, CreatePermission and ChannelBind on them succeed.
#[test]
fn two_secrets_then_the_old_one_rotated_out() {
    let (port, health, metrics) = (free_udp_port(), free_udp_tcp_port(), free_udp_tcp_port());
    let file = write_config(&config(port, health, metrics, ephemeral(NEW, &[OLD])));
    let args = [
        "-w".to_string(),
        "-c".to_string(),
        format!("file://{}", file.display()),
    ];
    let mut p = start_stunnerd("stunnerd", &args, &[]);
    assert!(
        wait_for(Duration::from_secs(10), || status_of(health, "/ready")
            == 200),
        "not ready\n{}",
        p.log()
    );
    assert!(wait_generation(metrics, 1, Duration::from_secs(2)));
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);

    // 1. Credentials from both secrets allocate and relay with uclient (REST auth, -W).
    for secret in [OLD, NEW] {
        let r = run_uclient(uclient_args(
            port,
            peer_port,
            20,
            5,
            &["-u", "user", "-W", secret],
        ));
        r.assert_all_echoed(20, &p.log());
    }

    // 2. Live allocations made with the old secret: our client (with a permission and a
    // channel) and a 6-second uclient session that spans the reload.
    // One peer over Send/Data indications, one over a channel (a bound peer's answers
    // come back as ChannelData).
    let echo = echo_peer();
    let echo_addr = echo.local_addr().expect("addr");
    let echo_ch = echo_peer();
    let echo_ch_addr = echo_ch.local_addr().expect("addr");
    let mut live = rest_client(port, "alice", OLD);
    live.allocate().expect("allocate with the old secret");
    live.create_permission(echo_addr).expect("permission");
    live.channel_bind(0x4000, echo_ch_addr)
        .expect("channel bind");
    assert!(relay_roundtrip(&live, &echo, b"before"));
    assert!(channel_roundtrip(&live, 0x4000, &echo_ch, b"before-ch"));
    let active_before = scrape(metrics, "stunner_allocations_active").unwrap_or(0.0);
    let session_args = uclient_args(port, peer_port, 300, 20, &["-u", "bob", "-W", OLD]);
    let session: JoinHandle<UclientReport> =
        std::thread::spawn(move || run_uclient_within(session_args, 60));
    assert!(
        wait_for(Duration::from_secs(5), || {
            scrape(metrics, "stunner_allocations_active").unwrap_or(0.0) > active_before
        }),
        "the uclient session did not allocate"
    );

    // 3. The reload: the old secret goes.
    write_atomic(&file, &config(port, health, metrics, ephemeral(NEW, &[])));
    assert!(
        wait_generation(metrics, 2, Duration::from_secs(5)),
        "the edit was not applied\n{}",
        p.log()
    );
    assert!(
        !session.is_finished(),
        "the uclient session ended before the reload; it must span it"
    );

    // 4. New credentials from the old secret: 401, counted as an auth failure.
    let failures = scrape(metrics, "stunnerd_auth_failures_total").unwrap_or(0.0);
    let mut refused = rest_client(port, "carol", OLD);
    assert_eq!(
        refused.allocate(),
        Err(401),
        "a new allocation with the old secret"
    );
    let failures = assert_metric_rose(metrics, "stunnerd_auth_failures_total", failures);
    let r = run_uclient_within(
        uclient_args(port, peer_port, 5, 5, &["-u", "dave", "-W", OLD]),
        20,
    );
    // uclient prints no error code: it cannot allocate, exits non-zero, and the daemon
    // counts another auth failure.
    assert!(
        r.allocation_failed() && !r.summary && r.exit_code != Some(0),
        "uclient with the old secret after the reload: exit {:?}\n{}",
        r.exit_code,
        tail(&r.output, 20)
    );
    assert_metric_rose(metrics, "stunnerd_auth_failures_total", failures);
    // The new secret still works.
    let mut fresh = rest_client(port, "erin", NEW);
    fresh.allocate().expect("allocate with the new secret");
    let r = run_uclient(uclient_args(
        port,
        peer_port,
        10,
        5,
        &["-u", "user", "-W", NEW],
    ));
    r.assert_all_echoed(10, &p.log());

    // 5. The live allocation made with the old secret keeps relaying, both ways, and its
    // authenticated requests succeed.
    assert!(relay_roundtrip(&live, &echo, b"after"));
    assert!(channel_roundtrip(&live, 0x4000, &echo_ch, b"after-ch"));
    live.refresh(600).expect("refresh after the rotation");
    let echo2 = echo_peer();
    let echo2_addr = echo2.local_addr().expect("addr");
    live.create_permission(echo2_addr)
        .expect("permission after the rotation");
    live.channel_bind(0x4001, echo2_addr)
        .expect("channel bind after the rotation");
    assert!(channel_roundtrip(&live, 0x4001, &echo2, b"new channel"));
    // The uclient session kept going across the reload: every message came back.
    let report = session.join().expect("session thread");
    report.assert_all_echoed(300, &p.log());
    println!(
        "measured: session across the rotation sent {} received {}; auth failures after it {}",
        report.sent,
        report.recv,
        scrape(metrics, "stunnerd_auth_failures_total").unwrap_or(-1.0)
    );
    // Deleting it works too (a Refresh with lifetime 0).
    live.refresh(0).expect("delete after the rotation");
    p.assert_running("after the rotation");
}

/// Static auth with `credentials.users`: every user relays with uclient, a wrong password
/// does not; removing a user by a reload refuses it.
#[test]
fn static_users_list_with_uclient() {
    let (port, health, metrics) = (free_udp_port(), free_udp_tcp_port(), free_udp_tcp_port());
    let auth = |users: Value| {
        json!({"type": "static", "realm": REALM,
               "credentials": {"username": "alice", "password": "pa", "users": users}})
    };
    let file = write_config(&config(
        port,
        health,
        metrics,
        auth(
            json!([{"username": "bob", "password": "pb"}, {"username": "carol", "password": "pc"}]),
        ),
    ));
    let args = [
        "-w".to_string(),
        "-c".to_string(),
        format!("file://{}", file.display()),
    ];
    let p = start_stunnerd("stunnerd", &args, &[]);
    assert!(
        wait_for(Duration::from_secs(10), || status_of(health, "/ready")
            == 200),
        "not ready\n{}",
        p.log()
    );
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    for (u, pw) in [("alice", "pa"), ("bob", "pb"), ("carol", "pc")] {
        let r = run_uclient(uclient_args(port, peer_port, 10, 5, &["-u", u, "-w", pw]));
        r.assert_all_echoed(10, &p.log());
    }
    let mut wrong = TurnClient::new(local(port), "bob", "pc");
    assert_eq!(wrong.allocate(), Err(401));
    write_atomic(
        &file,
        &config(
            port,
            health,
            metrics,
            auth(json!([{"username": "bob", "password": "pb"}])),
        ),
    );
    assert!(
        wait_generation(metrics, 2, Duration::from_secs(5)),
        "{}",
        p.log()
    );
    let mut carol = TurnClient::new(local(port), "carol", "pc");
    assert_eq!(carol.allocate(), Err(401));
    let mut bob = TurnClient::new(local(port), "bob", "pb");
    bob.allocate().expect("bob still allocates");
}

// ------------------------------------------------------------------------------------------
// Through the Kubernetes manifests origin
// ------------------------------------------------------------------------------------------

fn put(dir: &Path, name: &str, v: &Value) {
    write_atomic(&dir.join(name), &serde_json::to_string_pretty(v).unwrap());
}

fn auth_secret(data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "turn-auth", "namespace": "stunner"},
        "stringData": data
    })
}

/// Class, GatewayConfig with an authRef, a Dataplane without the fixed-port health and
/// metrics endpoints (so the test needs no namespace of its own), a StaticService for the
/// local peers, a route, the auth Secret and a Gateway with one TURN-UDP listener.
fn write_manifests(dir: &Path, port: u16, secret: Value) {
    put(
        dir,
        "00-namespace.json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stunner"}}),
    );
    put(
        dir,
        "01-class.json",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "stunner-gatewayclass"},
            "spec": {"controllerName": "stunner.l7mp.io/gateway-operator",
                     "parametersRef": {"group": "stunner.l7mp.io", "kind": "GatewayConfig",
                                       "name": "stunner-gatewayconfig", "namespace": "stunner"}}
        }),
    );
    put(
        dir,
        "02-config.json",
        &json!({
            "apiVersion": "stunner.l7mp.io/v1", "kind": "GatewayConfig",
            "metadata": {"name": "stunner-gatewayconfig", "namespace": "stunner"},
            "spec": {"realm": REALM, "authRef": {"name": "turn-auth"}}
        }),
    );
    put(
        dir,
        "03-dataplane.json",
        &json!({
            "apiVersion": "stunner.l7mp.io/v1", "kind": "Dataplane",
            "metadata": {"name": "default"},
            "spec": {"image": "l7mp/stunnerd:latest", "disableHealthCheck": true}
        }),
    );
    put(
        dir,
        "04-peers.json",
        &json!({
            "apiVersion": "stunner.l7mp.io/v1", "kind": "StaticService",
            "metadata": {"name": "local-peers", "namespace": "stunner"},
            "spec": {"prefixes": ["127.0.0.1/32"]}
        }),
    );
    put(
        dir,
        "05-route.json",
        &json!({
            "apiVersion": "stunner.l7mp.io/v1", "kind": "UDPRoute",
            "metadata": {"name": "media-plane-route", "namespace": "stunner"},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"backendRefs": [{"group": "stunner.l7mp.io",
                                                 "kind": "StaticService", "name": "local-peers"}]}]}
        }),
    );
    put(dir, "06-auth.json", &auth_secret(secret));
    put(
        dir,
        "10-gateway.json",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "stunner"},
            "spec": {"gatewayClassName": "stunner-gatewayclass",
                     "listeners": [{"name": "udp", "port": port, "protocol": "TURN-UDP"}]}
        }),
    );
}

/// The auth Secret of a Gateway carries the new secret under `secret` and the old one under
/// `secret.previous`: credentials from both allocate. Removing `secret.previous` from the
/// manifest refuses new credentials from it, while the allocation made with it keeps
/// relaying and refreshing.
#[test]
fn k8s_auth_secret_rotation_through_manifests() {
    let port = free_udp_port();
    let dir = tempfile::tempdir().expect("dir");
    write_manifests(
        dir.path(),
        port,
        json!({"type": "ephemeral", "secret": NEW, "secret.previous": OLD}),
    );
    let mut cmd = Command::new(stunnerd_bin());
    cmd.args(["-w", "--id", "stunner/gw", "-c"])
        .arg(dir.path())
        .env("STUNNER_ADDR", "127.0.0.1")
        .env_remove("STUNNER_CONFIG_ORIGIN");
    let mut p = Proc::spawn("stunnerd", cmd);
    // No health endpoint here: ready once a new-secret credential allocates.
    let mut first = None;
    let up = wait_for(Duration::from_secs(10), || {
        let mut c = rest_client(port, "probe", NEW);
        let ok = c.allocate().is_ok();
        if ok {
            first = Some(c);
        }
        ok
    });
    assert!(up, "the Gateway's listener never allocated\n{}", p.log());

    let echo = echo_peer();
    let echo_addr = echo.local_addr().expect("addr");
    let mut live = rest_client(port, "alice", OLD);
    live.allocate()
        .expect("allocate with the secret under `secret.previous`");
    live.create_permission(echo_addr).expect("permission");
    assert!(relay_roundtrip(&live, &echo, b"before"));

    // Rotate: the Secret now holds the new secret only.
    put(
        dir.path(),
        "06-auth.json",
        &auth_secret(json!({"type": "ephemeral", "secret": NEW})),
    );
    let mut last = Ok(());
    let refused = wait_for(Duration::from_secs(10), || {
        last = rest_client(port, "carol", OLD).allocate().map(|_| ());
        last == Err(401)
    });
    assert!(
        refused,
        "new credentials from the removed secret still allocate ({last:?})\n{}",
        tail(&p.log(), 30)
    );
    // The snapshot is swapped before the reload is logged: wait for the line.
    assert!(
        wait_for(Duration::from_secs(2), || p
            .log()
            .contains("new configuration applied")),
        "{}",
        tail(&p.log(), 30)
    );
    assert!(relay_roundtrip(&live, &echo, b"after"));
    live.refresh(600).expect("refresh after the rotation");
    let echo_ch = echo_peer();
    live.channel_bind(0x4000, echo_ch.local_addr().expect("addr"))
        .expect("channel bind after the rotation");
    assert!(channel_roundtrip(&live, 0x4000, &echo_ch, b"after-ch"));
    rest_client(port, "dave", NEW)
        .allocate()
        .expect("the new secret allocates");
    p.assert_running("after the rotation");
}
