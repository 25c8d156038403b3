//! The seed's promises about what a change restarts, live through the manifests origin
//! (`stunnerd -w -c DIR --id stunner/gw`), one test per promise:
//!
//! 1. GatewayConfig changes other than the realm reconcile without restarting listeners
//!    (a new password and log level, then static auth switched to an ephemeral auth Secret
//!    through `authRef` with `authLifetime` and `loadBalancerServiceAnnotations`);
//! 2. a realm change restarts all TURN listeners;
//! 3. adding or removing a Gateway listener starts or stops only that listener;
//! 4. changing a listener's protocol, port or TLS keys restarts only that listener.
//!
//! Each edit is made while turnutils_uclient sessions relay on the listeners (every session
//! has moved bytes through its allocations before the edit is written); a session that
//! survives echoes every message, keeps its allocations (the same ids in the sessions API,
//! `GET /sessions`, whose relayed byte counters keep rising after the edit) and no allocation
//! is created meanwhile (`stunnerd_allocations_created_total`); a restarted listener drops
//! its sessions' allocations (their ids leave the sessions API, `stunner_allocations_active`
//! falls by as many) and is named in the daemon's reconcile line.
//!
//! The Dataplane's metrics (:8080) and health (:8086) endpoints are fixed ports, so each test
//! re-runs itself inside a network namespace of its own (`ip netns add`, `lo` up), where the
//! listener ports are fixed too.

use crate::common;
use crate::ops_util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use ops_util::{http_get, scrape, status_of, wait_for, write_atomic};
use serde_json::{Value, json};

const METRICS: u16 = 8080;
const HEALTH: u16 = 8086;
const PEER: u16 = 9000;
const GW: &str = "stunner/gw";

// ------------------------------------------------------------------------------------------
// Manifests
// ------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Listener {
    name: &'static str,
    protocol: &'static str,
    port: u16,
}

const fn l(name: &'static str, protocol: &'static str, port: u16) -> Listener {
    Listener {
        name,
        protocol,
        port,
    }
}

fn gateway_config(realm: &str, password: &str, loglevel: &str) -> Value {
    json!({
        "apiVersion": "stunner.l7mp.io/v1", "kind": "GatewayConfig",
        "metadata": {"name": "stunner-gatewayconfig", "namespace": "stunner"},
        "spec": {"realm": realm, "authType": "static", "userName": "user-1",
                 "password": password, "logLevel": loglevel}
    })
}

/// The same GatewayConfig switched to an auth Secret of the ephemeral (TURN REST) type,
/// with the other fields the reference lists set: `authLifetime` and
/// `loadBalancerServiceAnnotations`. The realm stays.
fn gateway_config_ephemeral() -> Value {
    json!({
        "apiVersion": "stunner.l7mp.io/v1", "kind": "GatewayConfig",
        "metadata": {"name": "stunner-gatewayconfig", "namespace": "stunner"},
        "spec": {"realm": REALM, "logLevel": "all:INFO",
                 "authRef": {"name": "stunner-auth-secret", "namespace": "stunner"},
                 "authLifetime": 7200,
                 "loadBalancerServiceAnnotations": {
                     "service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}}
    })
}

const SHARED_SECRET: &str = "rest-shared-secret";

fn auth_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "stunner-auth-secret", "namespace": "stunner"},
        "stringData": {"type": "ephemeral", "secret": SHARED_SECRET}
    })
}

fn gateway(listeners: &[Listener]) -> Value {
    let ls: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let mut v = json!({"name": l.name, "port": l.port, "protocol": l.protocol});
            if l.protocol == "TURN-TLS" {
                v["tls"] = json!({"mode": "Terminate", "certificateRefs": [{"name": "turn-cert"}]});
            }
            v
        })
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "stunner"},
        "spec": {"gatewayClassName": "stunner-gatewayclass", "listeners": ls}
    })
}

/// A fresh self-signed certificate for 127.0.0.1 in a `kubernetes.io/tls` Secret.
fn cert_secret() -> Value {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "turn-cert", "namespace": "stunner"},
        "stringData": {"tls.crt": ck.cert.pem(), "tls.key": ck.signing_key.serialize_pem()}
    })
}

fn put(dir: &Path, name: &str, v: &Value) {
    write_atomic(&dir.join(name), &serde_json::to_string_pretty(v).unwrap());
}

/// Namespace, class, config, a Dataplane with metrics on, a StaticService admitting the
/// local peer, a route to it from every listener of `gw`, the TLS Secret and the Gateway.
fn write_manifests(dir: &Path, listeners: &[Listener]) {
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
        &gateway_config(REALM, "pass-1", "all:INFO"),
    );
    put(
        dir,
        "03-dataplane.json",
        &json!({
            "apiVersion": "stunner.l7mp.io/v1", "kind": "Dataplane",
            "metadata": {"name": "default"},
            "spec": {"image": "l7mp/stunnerd:latest", "enableMetricsEndpoint": true}
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
    put(dir, "06-secret.json", &cert_secret());
    put(dir, "10-gateway.json", &gateway(listeners));
}

// ------------------------------------------------------------------------------------------
// The daemon, its metrics and its log
// ------------------------------------------------------------------------------------------

struct Daemon {
    proc: Proc,
    _peer: Proc,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Write the manifests, start `stunnerd -w -c DIR --id stunner/gw` and the echo peer,
    /// and wait until the daemon is ready and every listener answers.
    fn start(listeners: &[Listener]) -> Daemon {
        let dir = tempfile::tempdir().expect("dir");
        write_manifests(dir.path(), listeners);
        let mut cmd = Command::new(stunnerd_bin());
        cmd.args(["-w", "--id", GW, "-c"])
            .arg(dir.path())
            .env("STUNNER_ADDR", "127.0.0.1")
            .env_remove("STUNNER_CONFIG_ORIGIN");
        let proc = Proc::spawn("stunnerd", cmd);
        let peer = start_peer(PEER);
        let d = Daemon {
            proc,
            _peer: peer,
            dir,
        };
        assert!(
            wait_for(Duration::from_secs(10), || status_of(HEALTH, "/ready")
                == 200),
            "not ready\n{}",
            d.proc.log()
        );
        for l in listeners {
            d.wait_bound(l);
        }
        d
    }

    fn put(&self, name: &str, v: &Value) {
        put(self.dir.path(), name, v);
    }

    fn metric(&self, series: &str) -> u64 {
        scrape(METRICS, series)
            .unwrap_or_else(|| panic!("no {series} in /metrics\n{}", tail(&self.proc.log(), 30)))
            as u64
    }

    fn generation(&self) -> u64 {
        self.metric("stunnerd_config_generation")
    }

    fn active(&self) -> u64 {
        self.metric("stunner_allocations_active")
    }

    fn created(&self) -> u64 {
        self.metric("stunnerd_allocations_created_total")
    }

    /// The sessions API (`GET /sessions` on the health server): id -> session.
    fn session_list(&self) -> BTreeMap<u64, Value> {
        let (code, body) = http_get(HEALTH, "/sessions")
            .unwrap_or_else(|| panic!("no /sessions\n{}", tail(&self.proc.log(), 30)));
        assert_eq!(code, 200, "/sessions: {body}");
        let v: Value = serde_json::from_str(&body).expect("/sessions JSON");
        v["sessions"]
            .as_array()
            .expect("sessions array")
            .iter()
            .map(|s| (s["id"].as_u64().expect("session id"), s.clone()))
            .collect()
    }

    /// Wait until the config generation passes `after`; the daemon's reconcile line for it.
    fn wait_applied(&self, after: u64) -> String {
        let ok = wait_for(Duration::from_secs(5), || {
            scrape(METRICS, "stunnerd_config_generation").is_some_and(|g| g as u64 > after)
        });
        assert!(
            ok,
            "the edit was not applied\n{}",
            tail(&self.proc.log(), 30)
        );
        let g = after + 1;
        let mut line = String::new();
        wait_for(Duration::from_secs(2), || {
            line = self
                .proc
                .log()
                .lines()
                .find(|l| l.contains(&format!("new configuration applied (generation {g})")))
                .unwrap_or_default()
                .to_string();
            !line.is_empty()
        });
        assert!(
            !line.is_empty(),
            "no reconcile line\n{}",
            tail(&self.proc.log(), 30)
        );
        line
    }

    /// Wait until a listener is bound, without allocating: a STUN Binding answer (UDP) or
    /// an accepted connection (TCP, TLS).
    fn wait_bound(&self, l: &Listener) {
        let ok = if l.protocol == "TURN-UDP" {
            wait_udp_ready(local(l.port)).is_ok()
        } else {
            wait_for(Duration::from_secs(5), || {
                std::net::TcpStream::connect_timeout(&local(l.port), Duration::from_millis(200))
                    .is_ok()
            })
        };
        assert!(
            ok,
            "listener {} ({} {}) is not bound\n{}",
            l.name,
            l.protocol,
            l.port,
            tail(&self.proc.log(), 30)
        );
    }

    /// A short uclient run relays through the listener.
    fn assert_serves(&self, l: &Listener, password: &str) {
        self.assert_serves_auth(l, &["-u", "user-1", "-w", password]);
    }

    /// A short uclient run with the credential flags `auth` relays through the listener.
    fn assert_serves_auth(&self, l: &Listener, auth: &[&str]) {
        self.wait_bound(l);
        let r = run_uclient(uclient_args_auth(l, 3, 5, auth));
        assert!(
            r.summary && r.sent == 3 && r.recv == 3,
            "listener {} ({} {}) does not relay: {}\n{}",
            l.name,
            l.protocol,
            l.port,
            tail(&r.output, 20),
            tail(&self.proc.log(), 30)
        );
    }
}

fn uclient_args(l: &Listener, n: u32, interval_ms: u32, password: &str) -> Vec<String> {
    uclient_args_auth(l, n, interval_ms, &["-u", "user-1", "-w", password])
}

/// uclient arguments with the given credential flags (`-u USER -w PASSWORD`, or `-u USER
/// -W SHARED_SECRET` for a TURN REST credential).
fn uclient_args_auth(l: &Listener, n: u32, interval_ms: u32, auth: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = auth.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "-c",
            "-e",
            "127.0.0.1",
            "-r",
            &PEER.to_string(),
            "-p",
            &l.port.to_string(),
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
        .map(|s| s.to_string()),
    );
    match l.protocol {
        "TURN-TCP" => args.push("-t".into()),
        "TURN-TLS" => args.extend(["-t".into(), "-S".into()]),
        _ => {}
    }
    args.push("127.0.0.1".into());
    args
}

/// Messages per session and the interval: 7.5 s of traffic. uclient starts sending 2-3 s
/// after it allocated; the edit is made once every session relays, and lands well before
/// the sessions end.
const N: u64 = 300;
const INTERVAL_MS: u32 = 25;
/// A session expected to be cut is stopped after this long (a client whose relay went away
/// waits long for lost packets); were it not cut, it would have ended by itself by then.
/// Sessions expected to survive get the usual 60 s: a loaded machine slows uclient down.
const CUT_SESSION_LIMIT_SECS: u64 = 15;

/// One uclient session (`-m 1`) on a listener, in the background.
struct Session {
    listener: &'static str,
    handle: JoinHandle<UclientReport>,
    /// Allocations it holds on the listener.
    allocations: u64,
    /// Their ids in the sessions API.
    ids: BTreeSet<u64>,
    /// Whether the edit is expected to cut it.
    cut: bool,
}

fn session(l: &Listener, limit_secs: u64, cut: bool, password: &str) -> Session {
    let args = uclient_args(l, N as u32, INTERVAL_MS, password);
    Session {
        listener: l.name,
        handle: std::thread::spawn(move || run_uclient_within(args, limit_secs)),
        allocations: 0,
        ids: BTreeSet::new(),
        cut,
    }
}

/// Start one session per listener (at once), and wait until each holds its allocations and
/// relays through them. A session's allocations (uclient may allocate more than once) are
/// the sessions API's new entries on its listener. Sessions on the listeners named in `cut`
/// are expected to be cut by the edit.
fn sessions(d: &Daemon, on: &[&Listener], cut: &[&str]) -> Vec<Session> {
    sessions_with(d, on, cut, "pass-1")
}

/// [`sessions`] with user-1's current password.
fn sessions_with(d: &Daemon, on: &[&Listener], cut: &[&str], password: &str) -> Vec<Session> {
    let before = d.active();
    let known: BTreeSet<u64> = d.session_list().into_keys().collect();
    let mut out: Vec<Session> = on
        .iter()
        .map(|l| {
            let is_cut = cut.contains(&l.name);
            let limit = if is_cut { CUT_SESSION_LIMIT_SECS } else { 60 };
            session(l, limit, is_cut, password)
        })
        .collect();
    let t = Instant::now();
    // Every session relays through allocations of its own listener (bytes counted both
    // ways), and the allocation count stayed put for 300 ms.
    let mut last = (before, Instant::now());
    let mut fresh = BTreeMap::new();
    let settled = wait_for(Duration::from_secs(15), || {
        let now = d.active();
        if now != last.0 {
            last = (now, Instant::now());
        }
        fresh = d.session_list();
        fresh.retain(|id, _| !known.contains(id));
        let relaying = out.iter().all(|s| {
            let ids = ids_on(&fresh, s.listener);
            !ids.is_empty() && relayed(&fresh, &ids) > 0
        });
        relaying && last.1.elapsed() >= Duration::from_millis(300)
    });
    assert!(
        settled,
        "sessions did not allocate and relay on {:?}: new sessions {:?}\n{}",
        on.iter().map(|l| l.name).collect::<Vec<_>>(),
        fresh.values().collect::<Vec<_>>(),
        tail(&d.proc.log(), 30)
    );
    for s in &mut out {
        s.ids = ids_on(&fresh, s.listener);
        s.allocations = s.ids.len() as u64;
        println!(
            "measured: session on {} holds {} allocation(s), ids {:?}, relaying {:?} after start",
            s.listener,
            s.allocations,
            s.ids,
            t.elapsed()
        );
    }
    let listed: usize = out.iter().map(|s| s.ids.len()).sum();
    assert_eq!(
        listed,
        fresh.len(),
        "allocations on no session's listener: {fresh:?}"
    );
    out
}

/// The ids of the sessions in `list` on listener `name` of the Gateway.
fn ids_on(list: &BTreeMap<u64, Value>, name: &str) -> BTreeSet<u64> {
    let full = full(name);
    list.iter()
        .filter(|(_, v)| v["listener"].as_str() == Some(full.as_str()))
        .map(|(id, _)| *id)
        .collect()
}

/// The PEM certificate a TLS listener on 127.0.0.1:`port` presents (`openssl s_client`).
fn served_cert(port: u16) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["5", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"));
    let out = run_with_timeout(cmd, Duration::from_secs(8));
    let text = out.combined();
    let (begin, end) = ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----");
    match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => text[b..e + end.len()].to_string(),
        _ => panic!("no certificate from 127.0.0.1:{port}:\n{text}"),
    }
}

/// Allocations of the sessions on listener `name`, and of the others.
fn split(sessions: &[Session], name: &str) -> (u64, u64) {
    let on = |mine: bool| -> u64 {
        sessions
            .iter()
            .filter(|s| (s.listener == name) == mine)
            .map(|s| s.allocations)
            .sum()
    };
    (on(true), on(false))
}

/// Make an edit while `sessions` run: returns the reconcile line, after checking that the
/// edit was applied while every session was still running.
fn edit_under_load(d: &Daemon, sessions: &[Session], edit: impl FnOnce()) -> String {
    let g = d.generation();
    edit();
    let line = d.wait_applied(g);
    for s in sessions {
        assert!(
            !s.handle.is_finished(),
            "session on {} ended before the edit was applied: the test proves nothing",
            s.listener
        );
    }
    check_session_list(d, sessions);
    line
}

/// Relayed bytes (both ways) of the allocations `ids` in a session list.
fn relayed(list: &BTreeMap<u64, Value>, ids: &BTreeSet<u64>) -> u64 {
    ids.iter()
        .filter_map(|id| list.get(id))
        .map(|v| {
            v["to_peer_bytes"].as_u64().expect("to_peer_bytes")
                + v["to_client_bytes"].as_u64().expect("to_client_bytes")
        })
        .sum()
}

/// Right after an edit, through the sessions API: the allocations of the sessions it cut are
/// gone; those of the others are still listed, on their listener, and keep relaying (their
/// byte counters rise after the edit).
fn check_session_list(d: &Daemon, sessions: &[Session]) {
    let gone = wait_for(Duration::from_secs(3), || {
        let list = d.session_list();
        sessions
            .iter()
            .filter(|s| s.cut)
            .all(|s| s.ids.iter().all(|id| !list.contains_key(id)))
    });
    let list = d.session_list();
    assert!(
        gone,
        "allocations of the restarted listener's sessions are still listed: {:?}",
        sessions
            .iter()
            .filter(|s| s.cut)
            .map(|s| (
                s.listener,
                s.ids.iter().filter(|id| list.contains_key(id)).count()
            ))
            .collect::<Vec<_>>()
    );
    let kept: Vec<(&Session, u64)> = sessions
        .iter()
        .filter(|s| !s.cut)
        .map(|s| {
            for id in &s.ids {
                let v = list.get(id).unwrap_or_else(|| {
                    panic!(
                        "session on {}: allocation {id} is gone after the edit
{}",
                        s.listener,
                        tail(&d.proc.log(), 30)
                    )
                });
                assert_eq!(
                    v["listener"].as_str(),
                    Some(full(s.listener).as_str()),
                    "{v}"
                );
            }
            (s, relayed(&list, &s.ids))
        })
        .collect();
    let mut now = Vec::new();
    let flowing = wait_for(Duration::from_secs(3), || {
        let list = d.session_list();
        now = kept
            .iter()
            .map(|(s, at_edit)| (s.listener, *at_edit, relayed(&list, &s.ids)))
            .collect();
        now.iter().all(|(_, at_edit, later)| later > at_edit)
    });
    assert!(
        flowing,
        "a surviving session's allocations stopped relaying after the edit \
         (listener, bytes at the edit, bytes later): {now:?}"
    );
    println!("measured: relayed bytes across the edit (listener, at the edit, later): {now:?}");
}

/// Join the sessions: (listener name, report).
fn outcome(sessions: Vec<Session>) -> Vec<(&'static str, UclientReport)> {
    sessions
        .into_iter()
        .map(|s| (s.listener, s.handle.join().expect("uclient thread")))
        .inspect(|(name, r)| {
            println!(
                "measured: session on {name}: sent {} recv {} (summary {})",
                r.sent, r.recv, r.summary
            );
        })
        .collect()
}

fn assert_survived(name: &str, r: &UclientReport, d: &Daemon) {
    assert!(
        r.summary && r.sent == N && r.recv == N,
        "session on {name} should have survived: sent {} recv {}\n{}\n--- daemon ---\n{}",
        r.sent,
        r.recv,
        tail(&r.output, 20),
        tail(&d.proc.log(), 30)
    );
}

fn assert_cut(name: &str, r: &UclientReport) {
    assert!(
        !(r.summary && r.recv == N),
        "session on {name} should have been cut by the restart, but all {N} messages came back\n{}",
        tail(&r.output, 20)
    );
}

/// The names of the listeners in a `what: [a, b]` part of a reconcile line.
fn named(line: &str, what: &str) -> Vec<String> {
    let Some(i) = line.find(&format!("{what}: [")) else {
        return Vec::new();
    };
    let rest = &line[i + what.len() + 3..];
    let list = &rest[..rest.find(']').unwrap_or(0)];
    list.split(", ")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn full(name: &str) -> String {
    format!("{GW}/{name}")
}

const UDP_A: Listener = l("udp-a", "TURN-UDP", 3478);
const UDP_B: Listener = l("udp-b", "TURN-UDP", 3479);
const TCP: Listener = l("tcp", "TURN-TCP", 3480);
const TLS: Listener = l("tls", "TURN-TLS", 3481);

// ------------------------------------------------------------------------------------------
// The promises
// ------------------------------------------------------------------------------------------

/// "Except the TURN authentication realm, all GatewayConfig resources are safe for
/// modification": a new password and log level, then static auth switched to an ephemeral
/// auth Secret (with `authLifetime` and `loadBalancerServiceAnnotations`), each with sessions
/// on a UDP and a TCP listener.
#[test]
fn gatewayconfig_change_other_than_realm_keeps_listeners() {
    in_netns(
        module_path!(),
        "gatewayconfig_change_other_than_realm_keeps_listeners",
        || {
            let d = Daemon::start(&[UDP_A, TCP]);
            let s = sessions(&d, &[&UDP_A, &TCP], &[]);
            let (created, active) = (d.created(), d.active());
            let line = edit_under_load(&d, &s, || {
                d.put(
                    "02-config.json",
                    &gateway_config(REALM, "pass-2", "all:INFO,reconciler:DEBUG"),
                )
            });
            println!("measured: {line}");
            assert!(line.contains("auth updated"), "{line}");
            assert!(line.contains("admin updated"), "{line}");
            assert!(named(&line, "listeners restarted").is_empty(), "{line}");
            assert!(named(&line, "listeners removed").is_empty(), "{line}");
            assert_eq!(d.active(), active, "every allocation kept");
            for (name, r) in outcome(s) {
                assert_survived(name, &r, &d);
            }
            assert_eq!(d.created(), created, "no allocation was created meanwhile");
            println!("measured: allocations created {created}, active at the edit {active}");
            // The change took effect on the running listeners: new sessions need the new password.
            let old = run_uclient(uclient_args(&UDP_A, 3, 5, "pass-1"));
            assert!(
                !(old.summary && old.recv > 0),
                "the old password still works\n{}",
                tail(&old.output, 20)
            );
            d.assert_serves(&UDP_A, "pass-2");
            d.assert_serves(&TCP, "pass-2");

            // The other fields: static inline auth becomes an ephemeral (TURN REST) auth
            // Secret named by authRef, with authLifetime and loadBalancerServiceAnnotations.
            // The Secret alone changes no rendered config (nothing names it yet).
            d.put("07-auth-secret.json", &auth_secret());
            let s = sessions_with(&d, &[&UDP_A, &TCP], &[], "pass-2");
            let (created, active) = (d.created(), d.active());
            let line = edit_under_load(&d, &s, || {
                d.put("02-config.json", &gateway_config_ephemeral())
            });
            println!("measured: ephemeral: {line}");
            assert!(line.contains("auth updated"), "{line}");
            assert!(named(&line, "listeners restarted").is_empty(), "{line}");
            assert!(named(&line, "listeners removed").is_empty(), "{line}");
            assert!(named(&line, "listeners added").is_empty(), "{line}");
            assert_eq!(d.active(), active, "every allocation kept");
            for (name, r) in outcome(s) {
                assert_survived(name, &r, &d);
            }
            assert_eq!(d.created(), created, "no allocation was created meanwhile");
            // New sessions need a TURN REST credential signed with the Secret's secret.
            let old = run_uclient(uclient_args(&UDP_A, 3, 5, "pass-2"));
            assert!(
                !(old.summary && old.recv > 0),
                "the static password still works\n{}",
                tail(&old.output, 20)
            );
            for l in [&UDP_A, &TCP] {
                d.assert_serves_auth(l, &["-u", "user-1", "-W", SHARED_SECRET]);
            }
        },
    );
}

/// "Changing the realm, however, induces a full dataplane restart": every listener restarts
/// and every session's allocation is gone.
#[test]
fn realm_change_restarts_all_listeners() {
    in_netns(
        module_path!(),
        "realm_change_restarts_all_listeners",
        || {
            let all = [UDP_A, UDP_B, TCP, TLS];
            let d = Daemon::start(&all);
            let s = sessions(&d, &[&UDP_A, &TCP, &TLS], &["udp-a", "tcp", "tls"]);
            let created = d.created();
            let line = edit_under_load(&d, &s, || {
                d.put(
                    "02-config.json",
                    &gateway_config("realm-2.example.com", "pass-1", "all:INFO"),
                )
            });
            println!("measured: {line}");
            let mut restarted = named(&line, "listeners restarted");
            restarted.sort();
            let mut want: Vec<String> = all.iter().map(|l| full(l.name)).collect();
            want.sort();
            assert_eq!(restarted, want, "{line}");
            assert!(
                wait_for(Duration::from_secs(3), || d.active() == 0),
                "allocations left after a realm change: {}",
                d.active()
            );
            for (name, r) in outcome(s) {
                assert_cut(name, &r);
            }
            assert_eq!(d.created(), created, "no client re-allocated on its own");
            // Every listener serves again, in the new realm (uclient takes the realm it is told).
            for l in &all {
                d.assert_serves(l, "pass-1");
            }
        },
    );
}

/// "Adding or removing a listener will start/stop only the TURN listener being
/// created/removed, without affecting the rest of the listeners on the same Gateway."
#[test]
fn adding_or_removing_a_listener_touches_only_that_listener() {
    in_netns(
        module_path!(),
        "adding_or_removing_a_listener_touches_only_that_listener",
        || {
            let d = Daemon::start(&[UDP_A, TCP]);

            // Add udp-b while sessions run on udp-a and tcp.
            let s = sessions(&d, &[&UDP_A, &TCP], &[]);
            let (created, active) = (d.created(), d.active());
            let line = edit_under_load(&d, &s, || {
                d.put("10-gateway.json", &gateway(&[UDP_A, TCP, UDP_B]))
            });
            println!("measured: add: {line}");
            assert_eq!(named(&line, "listeners added"), [full("udp-b")], "{line}");
            assert!(named(&line, "listeners restarted").is_empty(), "{line}");
            assert!(named(&line, "listeners removed").is_empty(), "{line}");
            d.wait_bound(&UDP_B);
            assert_eq!(d.active(), active, "every allocation kept");
            for (name, r) in outcome(s) {
                assert_survived(name, &r, &d);
            }
            assert_eq!(d.created(), created, "no allocation was created meanwhile");
            d.assert_serves(&UDP_B, "pass-1");

            // Remove udp-b while sessions run on all three.
            let s = sessions(&d, &[&UDP_A, &TCP, &UDP_B], &["udp-b"]);
            let (created, active) = (d.created(), d.active());
            let line =
                edit_under_load(&d, &s, || d.put("10-gateway.json", &gateway(&[UDP_A, TCP])));
            println!("measured: remove: {line}");
            assert_eq!(named(&line, "listeners removed"), [full("udp-b")], "{line}");
            assert!(named(&line, "listeners restarted").is_empty(), "{line}");
            assert!(named(&line, "listeners added").is_empty(), "{line}");
            let (target, others) = split(&s, "udp-b");
            assert!(
                wait_for(Duration::from_secs(3), || d.active() <= active - target),
                "udp-b's {target} allocation(s) should be gone: {} of {active} active",
                d.active()
            );
            let kept = d.active();
            assert!(
                kept >= others,
                "{kept} allocations left for the others' {others}"
            );
            for (name, r) in outcome(s) {
                if name == "udp-b" {
                    assert_cut(name, &r);
                } else {
                    assert_survived(name, &r, &d);
                }
            }
            assert_eq!(d.created(), created, "no allocation was created meanwhile");
            println!("measured: remove: active {active} -> {kept}");
            let gone = run_uclient(uclient_args(&UDP_B, 3, 5, "pass-1"));
            assert!(
                !(gone.summary && gone.recv > 0),
                "udp-b still relays\n{}",
                tail(&gone.output, 20)
            );
        },
    );
}

/// One edit that must restart `target` (now `after`) and nothing else, under sessions on
/// `target` and on every listener in `others`.
fn restart_only(
    d: &Daemon,
    what: &str,
    target: &Listener,
    after: &Listener,
    others: &[&Listener],
    edit: impl FnOnce(),
) {
    let start = Instant::now();
    let mut on = others.to_vec();
    on.push(target);
    let s = sessions(d, &on, &[target.name]);
    let (created, active) = (d.created(), d.active());
    let line = edit_under_load(d, &s, edit);
    println!("measured: {what}: {line}");
    assert_eq!(
        named(&line, "listeners restarted"),
        [full(target.name)],
        "{what}: {line}"
    );
    assert!(named(&line, "listeners added").is_empty(), "{line}");
    assert!(named(&line, "listeners removed").is_empty(), "{line}");
    // The target's session allocations are dropped; the others' stay (their sessions keep
    // relaying through them).
    let (mine, theirs) = split(&s, target.name);
    assert!(
        wait_for(Duration::from_secs(3), || d.active() <= active - mine),
        "{what}: {}'s {mine} allocation(s) should be gone: {} of {active} active",
        target.name,
        d.active()
    );
    let kept = d.active();
    assert!(
        kept >= theirs,
        "{what}: {kept} allocations left for the surviving sessions' {theirs}"
    );
    println!("measured: {what}: edit applied after {:?}", start.elapsed());
    for (name, r) in outcome(s) {
        if name == target.name {
            assert_cut(name, &r);
        } else {
            assert_survived(name, &r, d);
        }
    }
    println!(
        "measured: {what}: sessions over after {:?}",
        start.elapsed()
    );
    assert_eq!(
        d.created(),
        created,
        "{what}: no allocation was created meanwhile"
    );
    // The restarted listener serves with its new settings.
    d.assert_serves(after, "pass-1");
    println!(
        "measured: {what}: active {active} -> {kept}, step took {:?}",
        start.elapsed()
    );
}

/// "Changing the transport protocol, port or TLS keys/certs of an existing listener will
/// restart the TURN listener but leave the rest of the listeners intact."
#[test]
fn changing_protocol_port_or_tls_keys_restarts_only_that_listener() {
    in_netns(
        module_path!(),
        "changing_protocol_port_or_tls_keys_restarts_only_that_listener",
        || {
            let d = Daemon::start(&[UDP_A, UDP_B, TCP, TLS]);
            let moved = l("udp-b", "TURN-UDP", 3489);
            let as_tcp = l("udp-b", "TURN-TCP", 3489);
            restart_only(&d, "port", &UDP_B, &moved, &[&UDP_A, &TCP, &TLS], || {
                d.put(
                    "10-gateway.json",
                    &gateway(&[UDP_A, moved.clone(), TCP, TLS]),
                )
            });
            restart_only(
                &d,
                "protocol",
                &moved,
                &as_tcp,
                &[&UDP_A, &TCP, &TLS],
                || {
                    d.put(
                        "10-gateway.json",
                        &gateway(&[UDP_A, as_tcp.clone(), TCP, TLS]),
                    )
                },
            );
            // The Gateway is unchanged; the Secret it names gets a new certificate and key
            // (what a certificate renewal does), and the restarted listener serves it.
            let pem = |secret: &Value| {
                secret["stringData"]["tls.crt"]
                    .as_str()
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            let text =
                std::fs::read_to_string(d.dir.path().join("06-secret.json")).expect("secret");
            let old = pem(&serde_json::from_str(&text).expect("secret json"));
            assert_eq!(
                served_cert(TLS.port),
                old,
                "the TLS listener serves the Secret's certificate"
            );
            let renewed = cert_secret();
            restart_only(&d, "TLS keys", &TLS, &TLS, &[&UDP_A, &as_tcp, &TCP], || {
                d.put("06-secret.json", &renewed)
            });
            assert_eq!(
                served_cert(TLS.port),
                pem(&renewed),
                "the renewed certificate is served"
            );
        },
    );
}
