//! What an operator sees of live traffic: the INFO log lines (listeners, failed
//! authentications, refused peers, sessions created and deleted) and the session list with
//! its kill switch (`GET/DELETE /sessions`, `stunnerd sessions`), driven by real clients
//! (`turnutils_uclient`) and the tests' own TURN client.
//!
//! The access test runs its daemon in a network namespace it creates, with a dummy
//! interface, so that a non-loopback client exists.

use crate::common;
use crate::ops_util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ops_util::{TurnClient, signal, wait_for};
use serde_json::{Value, json};

const PASSWORD: &str = "Pw-9x7Qz-never-logged";
const SECRET_: &str = "rest-secret-never-logged";

struct Ports {
    udp: u16,
    tcp: u16,
    health: u16,
    peer: u16,
    relay_lo: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            udp: free_udp_tcp_port(),
            tcp: free_udp_tcp_port(),
            health: free_udp_tcp_port(),
            peer: free_udp_port_pair(),
            relay_lo: free_port_range(64),
        }
    }
}

/// A TURN-UDP listener with a relay port range and a TURN-TCP listener, routed to the
/// turnutils_peer ports only (`127.0.0.1:<peer-peer+1>`), health on `health`.
fn config(p: &Ports, auth: Value) -> String {
    json!({
        "version": "v1",
        "admin": {"name": "ops-sessions", "loglevel": "all:INFO",
                  "healthcheck_endpoint": format!("http://127.0.0.1:{}", p.health),
                  "metrics_endpoint": ""},
        "auth": auth,
        "listeners": [
            {"name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1", "port": p.udp,
             "routes": ["peers"], "min_relay_port": p.relay_lo, "max_relay_port": p.relay_lo + 63},
            {"name": "tcp", "protocol": "TURN-TCP", "address": "127.0.0.1", "port": p.tcp,
             "routes": ["peers"]}
        ],
        "clusters": [{"name": "peers", "type": "STATIC",
                      "endpoints": [format!("127.0.0.1:<{}-{}>", p.peer, p.peer + 1)]}]
    })
    .to_string()
}

fn static_auth() -> Value {
    json!({"type": "static", "realm": REALM,
           "credentials": {"username": USER, "password": PASSWORD}})
}

fn start(p: &Ports, auth: Value, envs: &[(&str, &str)]) -> (Proc, tempfile::TempPath) {
    let cfg = write_config(&config(p, auth));
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg("-c").arg(format!("file://{}", cfg.display()));
    cmd.env_remove("STUNNERD_ADMIN_TOKEN")
        .env_remove("STUNNERD_ADMIN_TOKEN_FILE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn("stunnerd", cmd);
    if let Err(e) = wait_udp_ready(local(p.udp)) {
        proc.assert_running("start");
        panic!("stunnerd not ready: {e}");
    }
    (proc, cfg)
}

/// Wait (bounded) until the log has a line containing every one of `parts`; that line.
fn wait_line(proc: &Proc, parts: &[&str]) -> String {
    wait_line_after(proc, 0, parts)
}

/// [`wait_line`] among the lines after the first `skip`.
fn wait_line_after(proc: &Proc, skip: usize, parts: &[&str]) -> String {
    let mut found = None;
    wait_for(Duration::from_secs(10), || {
        found = proc
            .log()
            .lines()
            .skip(skip)
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_string);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no log line with {parts:?}\n--- log ---\n{}", proc.log()))
}

/// Sleep to just past the next wall-clock second, where the rate limiter of each log kind
/// lets a line through again.
fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 20_000_000,
    ));
}

/// The suppressed count a rate-limited line reports (0 if none).
fn suppressed(line: &str) -> u64 {
    let Some(i) = line.find(" similar line") else {
        return 0;
    };
    let head = &line[..i];
    head[head.rfind('(').map_or(0, |j| j + 1)..]
        .trim()
        .parse()
        .unwrap_or(0)
}

fn uclient(p: &Ports, extra: &[&str]) -> UclientReport {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["-e", "127.0.0.1"].map(String::from));
    if !extra.contains(&"-r") {
        args.extend(["-r".into(), p.peer.to_string()]);
    }
    if !extra.contains(&"-p") {
        args.extend(["-p".into(), p.udp.to_string()]);
    }
    args.push("127.0.0.1".into());
    run_uclient_within(args, 30)
}

#[test]
fn logs_name_listeners_auth_failures_refused_peers_and_sessions() {
    let p = Ports::new();
    let _peer = start_peer(p.peer);
    let (mut d, cfg) = start(&p, static_auth(), &[]);

    // One start-up line per listener: name, protocol, port, address, relay range.
    wait_line(
        &d,
        &[&format!(
            "listener udp started: TURN-UDP on port {} (127.0.0.1 only), address 127.0.0.1, relay ports {}-{}",
            p.udp,
            p.relay_lo,
            p.relay_lo + 63
        )],
    );
    wait_line(
        &d,
        &[&format!(
            "listener tcp started: TURN-TCP on port {} (127.0.0.1 only), address 127.0.0.1, relay ports any",
            p.tcp
        )],
    );

    // A wrong password: which user, realm, client, why.
    let r = uclient(&p, &["-u", USER, "-w", "wrong-password", "-n", "1", "-c"]);
    assert!(r.allocation_failed(), "{}", r.output);
    let line = wait_line(
        &d,
        &[
            "auth INFO: authentication failed: user \"user\", realm \"stunner.l7mp.io\", client udp 127.0.0.1:",
            ": bad message integrity (wrong password or secret)",
        ],
    );
    println!("measured: {line}");
    next_second();
    let r = uclient(&p, &["-u", "mallory", "-w", PASSWORD, "-n", "1", "-c"]);
    assert!(r.allocation_failed(), "{}", r.output);
    wait_line(
        &d,
        &["authentication failed: user \"mallory\"", ": unknown user"],
    );

    // Refused peers, with the rule: a port outside the routed range, an unrouted address.
    next_second();
    let outside = (p.peer + 10).to_string();
    let r = uclient(
        &p,
        &["-u", USER, "-w", PASSWORD, "-n", "1", "-c", "-r", &outside],
    );
    assert!(r.peer_refused(), "{}", r.output);
    let line = wait_line(
        &d,
        &[
            "turn INFO: peer refused: user \"user\", client udp 127.0.0.1:",
            ": port outside the routed endpoint's port range",
        ],
    );
    // uclient binds channels to the RTP and RTCP ports (-r PORT and PORT+1).
    let peer_port = line
        .split(", peer 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse::<u16>().ok());
    let outside_port = p.peer + 10;
    assert!(
        peer_port == Some(outside_port) || peer_port == Some(outside_port + 1),
        "{line}"
    );
    println!("measured: {line}");
    next_second();
    let mut tc = TurnClient::new(local(p.udp), USER, PASSWORD);
    tc.allocate().expect("allocate");
    assert_eq!(
        tc.create_permission("127.0.0.2:9".parse().unwrap()),
        Err(403)
    );
    wait_line(
        &d,
        &[
            "peer refused: user \"user\"",
            "peer 127.0.0.2: no route admits it",
        ],
    );

    // Rate limit: one line a second per kind; the next line counts the suppressed ones.
    next_second();
    assert_eq!(
        tc.create_permission("127.0.0.3:9".parse().unwrap()),
        Err(403)
    );
    wait_line(&d, &["peer 127.0.0.3: no route admits it"]);
    let before = d.log().lines().count();
    next_second();
    for _ in 0..4 {
        assert_eq!(
            tc.create_permission("127.0.0.4:9".parse().unwrap()),
            Err(403)
        );
    }
    next_second();
    assert_eq!(
        tc.create_permission("127.0.0.5:9".parse().unwrap()),
        Err(403)
    );
    let last = wait_line(&d, &["peer 127.0.0.5: no route admits it"]);
    let log = d.log();
    let lines: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("peer refused"))
        .collect();
    let reported: u64 = lines.iter().map(|l| suppressed(l)).sum();
    assert_eq!(
        lines.len() as u64 + reported,
        5,
        "every refusal is either logged or counted: {lines:#?}"
    );
    assert_eq!(lines.len(), 2, "one line for the burst of four: {lines:#?}");
    assert!(
        last.ends_with("(3 similar lines suppressed)"),
        "the next line counts the suppressed ones: {last}"
    );
    println!("measured: {last}");
    // A stale nonce is not a failure: nothing at INFO.
    assert!(!log.contains("stale"), "{log}");

    // A real allocation over UDP, then over TCP: created and deleted, as coturn logs sessions.
    let mark = d.log().lines().count();
    let r = uclient(
        &p,
        &["-u", USER, "-w", PASSWORD, "-n", "10", "-l", "100", "-c"],
    );
    r.assert_all_echoed(10, &d.log());
    // uclient allocates twice (RTP and RTCP) and relays through one of them.
    let deleted = wait_line_after(
        &d,
        mark,
        &[
            "turn INFO: session ",
            " deleted: user \"user\", client udp 127.0.0.1:",
            &format!(" -> 127.0.0.1:{}, relayed 127.0.0.1:", p.udp),
            ", duration ",
            "s, to peers 10 packets 1000 bytes, to client 10 packets 1000 bytes, reason: refreshed to 0",
        ],
    );
    let id = deleted
        .split("session ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .to_string();
    let relay_port: u16 = deleted
        .split("relayed 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        (p.relay_lo..=p.relay_lo + 63).contains(&relay_port),
        "{deleted}"
    );
    let created = wait_line(
        &d,
        &[
            &format!("session {id} created: user \"user\", client udp 127.0.0.1:"),
            &format!(
                " -> 127.0.0.1:{} (listener udp), relayed 127.0.0.1:{relay_port} (udp), lifetime ",
                p.udp
            ),
        ],
    );
    println!("measured: {created}\nmeasured: {deleted}");
    let r = uclient(
        &p,
        &[
            "-t",
            "-u",
            USER,
            "-w",
            PASSWORD,
            "-n",
            "10",
            "-c",
            "-p",
            &p.tcp.to_string(),
        ],
    );
    r.assert_all_echoed(10, &d.log());
    wait_line(
        &d,
        &[
            " created: user \"user\", client tcp 127.0.0.1:",
            &format!(" -> 127.0.0.1:{} (listener tcp)", p.tcp),
        ],
    );
    wait_line(
        &d,
        &[
            "deleted: user \"user\", client tcp 127.0.0.1:",
            "to peers 10 packets 1000 bytes, to client 10 packets 1000 bytes",
        ],
    );

    // A reload names the listeners it stops, starts and restarts.
    let mut next: Value = serde_json::from_str(&config(&p, static_auth())).unwrap();
    let udp2 = free_udp_tcp_port();
    let listeners = next["listeners"].as_array_mut().unwrap();
    listeners[1] = json!({"name": "udp2", "protocol": "TURN-UDP", "address": "127.0.0.1",
                          "port": udp2, "routes": ["peers"]});
    listeners[0]["port"] = json!(p.tcp);
    std::fs::write(&cfg, next.to_string()).unwrap();
    signal(d.pid(), "HUP");
    wait_line(
        &d,
        &[&format!("listener tcp stopped: TURN-TCP on port {}", p.tcp)],
    );
    wait_line(
        &d,
        &[&format!(
            "listener udp2 started: TURN-UDP on port {udp2} (127.0.0.1 only)"
        )],
    );
    wait_line(
        &d,
        &[&format!(
            "listener udp restarted (its allocations were closed): TURN-UDP on port {} (127.0.0.1 only)",
            p.tcp
        )],
    );
    wait_udp_ready(local(p.tcp)).expect("udp listener on its new port");
    let p = Ports { udp: p.tcp, ..p };

    // An allocation left at shutdown is logged with that reason.
    let mut held = TurnClient::new(local(p.udp), USER, PASSWORD);
    let relayed = held.allocate().expect("allocate");
    signal(d.pid(), "INT");
    wait_line(&d, &["commencing graceful shutdown"]);
    signal(d.pid(), "INT");
    assert!(d.wait_exit(Duration::from_secs(5)).is_some(), "exits");
    wait_line(
        &d,
        &[&format!("relayed {relayed}, duration "), "reason: shutdown"],
    );

    let log = d.log();
    for secret in [PASSWORD, "wrong-password"] {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}

/// `stunnerd sessions ARGS` against `health`, with extra environment.
fn sessions_cli(health: u16, args: &[&str], envs: &[(&str, &str)]) -> CmdOutput {
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg("sessions")
        .args(args)
        .arg("--endpoint")
        .arg(format!("http://127.0.0.1:{health}"));
    cmd.env_remove("STUNNERD_ADMIN_TOKEN")
        .env_remove("STUNNERD_ADMIN_TOKEN_FILE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, Duration::from_secs(15))
}

fn rest_user(name: &str) -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let username = format!("{expiry}:{name}");
    let password = stunnerd::turn::auth::rest_password(SECRET_.as_bytes(), &username);
    (username, password)
}

#[test]
fn sessions_lists_a_uclient_allocation_by_user_and_kill_ends_it() {
    let p = Ports::new();
    let _peer = start_peer(p.peer);
    let auth = json!({"type": "ephemeral", "realm": REALM, "credentials": {"secret": SECRET_}});
    let (d, _cfg) = start(&p, auth, &[]);

    // Long uclient runs (about a minute each): alice over UDP, carol over TCP.
    let spawn_uclient = |name: &str, extra: &[&str], port: u16| {
        let mut cmd = Command::new(require_tool("turnutils_uclient"));
        cmd.args(extra).args([
            "-u",
            name,
            "-W",
            SECRET_,
            "-n",
            "3000",
            "-z",
            "20",
            "-c",
            "-e",
            "127.0.0.1",
            "-r",
            &p.peer.to_string(),
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ]);
        Proc::spawn(&format!("uclient-{name}"), cmd)
    };
    let _alice = spawn_uclient("alice", &[], p.udp);
    let _carol = spawn_uclient("carol", &["-t"], p.tcp);

    let mut table = String::new();
    let listed = wait_for(Duration::from_secs(15), || {
        let out = sessions_cli(p.health, &[], &[]);
        table = out.stdout;
        // uclient holds two allocations (RTP and RTCP); one of them relays.
        let relaying = |user: &str, transport: &str| {
            table.lines().any(|l| {
                l.split_whitespace().nth(1) == Some(user)
                    && l.contains(&format!("{transport} 127.0.0.1:"))
                    && !l.contains(" 0 pkts")
            })
        };
        out.status.is_some_and(|s| s.success())
            && relaying("alice", "udp")
            && relaying("carol", "tcp")
    });
    assert!(
        listed,
        "alice and carol relaying in the list:\n{table}\n{}",
        d.log()
    );
    println!("measured: stunnerd sessions\n{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "USER", "CLIENT", "RELAYED", "PEERS", "CHANNELS", "TO", "PEER", "TO", "CLIENT",
            "AGE", "EXPIRES"
        ]
    );
    assert!(!table.contains(SECRET_));

    // The JSON: 5-tuple, relay, channels, counters, times; no secret.
    let out = sessions_cli(p.health, &["--json"], &[]);
    assert!(!out.stdout.contains(SECRET_));
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let all = v["sessions"].as_array().expect("sessions");
    let alice = all
        .iter()
        .find(|s| s["user"] == "alice" && s["to_peer_packets"].as_u64() > Some(0))
        .expect("alice");
    assert_eq!(alice["transport"], "udp");
    assert_eq!(alice["server"], format!("127.0.0.1:{}", p.udp));
    assert_eq!(alice["relay_transport"], "udp");
    assert!(
        alice["channels"].as_array().is_some_and(|c| !c.is_empty()),
        "{alice}"
    );
    assert_eq!(alice["peers"][0]["ip"], "127.0.0.1");
    assert!(alice["to_peer_packets"].as_u64() > Some(0));
    assert!(alice["to_client_bytes"].as_u64() > Some(0));
    assert!(alice["expires_in"].as_u64() > Some(500));
    let alice_relay = alice["relayed"].as_str().unwrap().to_string();

    // Kill all of alice's sessions: gone from the list, logged, relay freed.
    let out = sessions_cli(p.health, &["kill", "--user", "alice"], &[]);
    assert_eq!(out.code(), Some(0), "{}", out.combined());
    assert!(
        out.stdout
            .starts_with("killed 2 session(s) of user \"alice\""),
        "{}",
        out.stdout
    );
    let out = sessions_cli(p.health, &[], &[]);
    assert!(!out.stdout.contains("alice"), "{}", out.stdout);
    assert!(out.stdout.contains("carol"), "{}", out.stdout);
    wait_line(
        &d,
        &[
            "deleted: user \"alice\"",
            &format!("relayed {alice_relay}"),
            "reason: killed",
        ],
    );
    assert_eq!(
        sessions_cli(p.health, &["kill", "--user", "alice"], &[]).code(),
        Some(1),
        "nothing left to kill"
    );

    // Kill by id: the client's next Refresh gets 437 Allocation Mismatch.
    let (user, pass) = rest_user("bob");
    let mut bob = TurnClient::new(local(p.udp), &user, &pass);
    let relayed = bob.allocate().expect("allocate");
    let out = sessions_cli(p.health, &["--json"], &[]);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let id = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["relayed"] == relayed.to_string())
        .map(|s| s["id"].as_u64().unwrap())
        .expect("bob's session");
    let out = sessions_cli(p.health, &["kill", &id.to_string()], &[]);
    assert_eq!(out.code(), Some(0), "{}", out.combined());
    assert_eq!(out.stdout.trim(), format!("killed session {id}"));
    assert_eq!(bob.refresh(600), Err(437));
    let out = sessions_cli(p.health, &["kill", &id.to_string()], &[]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains(&format!("no session {id}")),
        "{}",
        out.stderr
    );
}

// ------------------------------------------------------------------------------------------
// Access: loopback only, or a bearer token
// ------------------------------------------------------------------------------------------

/// A network namespace with `lo` up, also holding 10.77.0.1 (a local address that is not
/// loopback).
fn session_netns() -> Netns {
    let ns = Netns::create("sessions");
    ns.ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    ns
}

/// `bin` inside `ns`, without the admin token of this environment.
fn in_ns(ns: &Netns, bin: &Path) -> Command {
    let mut cmd = ns.command(bin);
    cmd.env_remove("STUNNERD_ADMIN_TOKEN")
        .env_remove("STUNNERD_ADMIN_TOKEN_FILE");
    cmd
}

#[test]
fn sessions_answer_loopback_only_or_the_bearer_token() {
    let ns = session_netns();
    let cfg = write_config(
        &json!({
            "version": "v1",
            "admin": {"name": "access", "healthcheck_endpoint": "http://:8086", "metrics_endpoint": ""},
            "auth": static_auth(),
            "listeners": [{"name": "udp", "protocol": "TURN-UDP", "address": "10.77.0.1",
                           "port": 3478, "routes": []}],
            "clusters": []
        })
        .to_string(),
    );
    let daemon = |envs: &[(&str, &str)]| {
        let mut cmd = in_ns(&ns, &stunnerd_bin());
        cmd.arg("-c").arg(format!("file://{}", cfg.display()));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc::spawn("stunnerd-netns", cmd)
    };
    let cli = |endpoint: &str, envs: &[(&str, &str)]| {
        let mut cmd = in_ns(&ns, &stunnerd_bin());
        cmd.args(["sessions", "--endpoint", endpoint]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        run_with_timeout(cmd, Duration::from_secs(15))
    };
    let lo = "http://127.0.0.1:8086";
    let outside = "http://10.77.0.1:8086";

    // No token: loopback is served, another address is refused with 403.
    let mut d = daemon(&[]);
    let up = wait_for(Duration::from_secs(10), || cli(lo, &[]).code() == Some(0));
    d.assert_running("no token");
    assert!(up, "sessions on loopback\n{}", d.log());
    let out = cli(outside, &[]);
    assert_eq!(out.code(), Some(1), "{}", out.combined());
    assert!(out.stderr.contains("answered 403"), "{}", out.stderr);
    assert!(
        out.stderr.contains("loopback clients only"),
        "{}",
        out.stderr
    );
    // A token the client sends does not open it while the daemon has none.
    let out = cli(outside, &[("STUNNERD_ADMIN_TOKEN", "anything")]);
    assert!(out.stderr.contains("answered 403"), "{}", out.stderr);
    d.kill();

    // A token from a file: without it or with a wrong one 401, from any address; with it,
    // served from outside too.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-3f9a-long-enough\n").unwrap();
    let token_env = token_file.display().to_string();
    let mut d = daemon(&[("STUNNERD_ADMIN_TOKEN_FILE", &token_env)]);
    let up = wait_for(Duration::from_secs(10), || {
        cli(lo, &[("STUNNERD_ADMIN_TOKEN", "tok-3f9a-long-enough")]).code() == Some(0)
    });
    d.assert_running("token");
    assert!(up, "sessions with the token\n{}", d.log());
    for endpoint in [lo, outside] {
        let out = cli(endpoint, &[]);
        assert!(
            out.stderr.contains("answered 401"),
            "{endpoint}: {}",
            out.stderr
        );
        let out = cli(
            endpoint,
            &[("STUNNERD_ADMIN_TOKEN", "tok-3f9a-long-enougH")],
        );
        assert!(
            out.stderr.contains("answered 401"),
            "{endpoint}: {}",
            out.stderr
        );
        let out = cli(endpoint, &[("STUNNERD_ADMIN_TOKEN_FILE", &token_env)]);
        assert_eq!(out.code(), Some(0), "{endpoint}: {}", out.combined());
        assert!(out.stdout.contains("0 session(s)"), "{}", out.stdout);
    }
    assert!(!d.log().contains("tok-3f9a"), "the token is never logged");
}
