//! The CDS client of `stunnerd -w` (spec 4.2) against an independent fake server written
//! here from the protocol description (raw TCP, hand-made WebSocket frames), and against
//! our own `stunnerd cds-server`, with real TURN traffic.
//!
//! Watch mode boots on the zero config, whose health server is upstream's fixed `:8086`;
//! the tests of this binary therefore take turns (one lock) and fail loudly if something
//! else on the machine holds that port.

use crate::common;
use crate::ops_util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::{Digest, Sha1};

use common::*;
use ops_util::*;

/// The zero config's health port.
const BOOT_HEALTH: u16 = 8086;
static BOOT_PORT: Mutex<()> = Mutex::new(());

fn boot_lock() -> std::sync::MutexGuard<'static, ()> {
    let g = BOOT_PORT.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        wait_for(Duration::from_secs(5), || TcpListener::bind((
            "0.0.0.0",
            BOOT_HEALTH
        ))
        .is_ok()),
        "port {BOOT_HEALTH} is taken by another process: the watch-mode bootstrap needs it"
    );
    g
}

// ------------------------------------------------------------------------------------------
// An independent fake CDS server: raw sockets, RFC 6455 framing by hand
// ------------------------------------------------------------------------------------------

struct FakeConn {
    stream: TcpStream,
    request: String,
}

/// Accept one WebSocket client within `timeout` and complete its handshake.
fn accept_ws(listener: &TcpListener, timeout: Duration) -> Option<(FakeConn, Instant)> {
    listener.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + timeout;
    let (mut stream, at) = loop {
        match listener.accept() {
            Ok((s, _)) => break (s, Instant::now()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    };
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") && raw.len() < 8192 {
        stream.read_exact(&mut byte).ok()?;
        raw.push(byte[0]);
    }
    let request = String::from_utf8_lossy(&raw).into_owned();
    let key = header(&request, "sec-websocket-key")?;
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(resp.as_bytes()).ok()?;
    Some((FakeConn { stream, request }, at))
}

fn header(request: &str, name: &str) -> Option<String> {
    request.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

impl FakeConn {
    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        let _ = self.stream.write_all(&f);
    }

    fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes());
    }

    /// The next client frame (clients mask theirs): (opcode, payload).
    fn read_frame(&mut self, timeout: Duration) -> Option<(u8, Vec<u8>)> {
        self.stream.set_read_timeout(Some(timeout)).ok()?;
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).ok()?;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            self.stream.read_exact(&mut b).ok()?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.stream.read_exact(&mut b).ok()?;
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 {
            self.stream.read_exact(&mut mask).ok()?;
        }
        let mut payload = vec![0u8; usize::try_from(len).ok()?.min(1 << 20)];
        self.stream.read_exact(&mut payload).ok()?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        Some((head[0] & 0x0f, payload))
    }
}

/// Spec 4.2 end to end against the fake: zero-config bootstrap while the server is away,
/// the URL with `node`, the Origin header, `$STUNNER_ADDR` expansion, invalid configs and
/// deletes ignored without dropping the connection, the `keepalive` ping every 5 s, the
/// 8 s read timeout and the 1 s reconnect, and relaying that outlives the server.
#[test]
fn cds_watch_against_independent_fake_server() {
    let _g = boot_lock();
    let cds_port = free_udp_tcp_port();
    let cfg_port = free_udp_port();
    let mut cfg = Cfg::new("ns/gw", cfg_port, free_udp_tcp_port(), free_udp_tcp_port());
    cfg.address = "$STUNNER_ADDR".into();
    let args = ["-w", "--udp-thread-num=2"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let env = [
        (
            "STUNNER_CONFIG_ORIGIN",
            format!("http://127.0.0.1:{cds_port}"),
        ),
        ("STUNNER_NAME", "gw".into()),
        ("STUNNER_NAMESPACE", "ns".into()),
        ("STUNNER_NODENAME", "node-1".into()),
        ("STUNNER_ADDR", "127.0.0.1".into()),
    ];
    let mut cmd = std::process::Command::new(stunnerd_bin());
    cmd.args(&args);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut p = Proc::spawn("stunnerd", cmd);

    // No server yet: alive, not ready.
    assert!(
        wait_for(Duration::from_secs(5), || status_of(BOOT_HEALTH, "/live")
            == 200),
        "{}",
        p.log()
    );
    assert_eq!(status_of(BOOT_HEALTH, "/ready"), 503);
    // Still not ready after it has retried (a watch that fails logs each attempt).
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .matches("reconnecting in 1 s")
            .count()
            >= 2),
        "{}",
        p.log()
    );
    assert_eq!(status_of(BOOT_HEALTH, "/ready"), 503);

    let server = TcpListener::bind(("127.0.0.1", cds_port)).expect("bind fake CDS");
    let appeared = Instant::now();
    let (mut conn, _) =
        accept_ws(&server, Duration::from_secs(3)).expect("client connects within its 1 s retry");
    let first_line = conn.request.lines().next().unwrap_or("").to_string();
    assert_eq!(
        first_line,
        "GET /api/v1/configs/ns/gw?node=node-1&watch=true HTTP/1.1"
    );
    assert_eq!(
        header(&conn.request, "origin").as_deref(),
        Some(format!("http://127.0.0.1:{cds_port}").as_str())
    );
    conn.send_text(&cfg.json());
    assert!(
        wait_for(Duration::from_secs(2), || status_of(cfg.health, "/ready")
            == 200),
        "config did not arrive within 2 s\n{}",
        p.log()
    );
    assert!(appeared.elapsed() < Duration::from_secs(3));
    let st = status_json(cfg.health).expect("status");
    assert_eq!(
        st["listeners"][0]["address"], "127.0.0.1",
        "$STUNNER_ADDR expanded"
    );

    // Garbage and a delete are ignored, and the connection stays up.
    conn.send_text("{ this is not a config");
    conn.send_text(&stunnerd::config::zero_config_wire("ns/gw"));
    assert!(wait_for(Duration::from_secs(2), || {
        scrape(
            cfg.metrics,
            "stunnerd_config_reloads_total{result=\"invalid\"}",
        ) == Some(1.0)
            && scrape(
                cfg.metrics,
                "stunnerd_config_reloads_total{result=\"ignored_delete\"}",
            ) == Some(1.0)
    }));
    assert_eq!(status_of(cfg.health, "/ready"), 200);
    assert!(wait_udp_ready(local(cfg_port)).is_ok());

    // Keepalive: a Ping `keepalive` about every 5 s; answer the first one.
    let t0 = Instant::now();
    let ping = conn
        .read_frame(Duration::from_secs(7))
        .expect("a ping within 7 s");
    assert_eq!(ping, (0x9, b"keepalive".to_vec()));
    assert!(t0.elapsed() < Duration::from_secs(6));
    conn.send_frame(0xA, b"keepalive");
    let last_pong = Instant::now();
    // Stop answering: the client gives up 8 s after the last frame it got, then redials 1 s
    // later.
    let (mut conn2, at) =
        accept_ws(&server, Duration::from_secs(15)).expect("reconnect after the read timeout");
    let gap = at.duration_since(last_pong);
    assert!(
        gap >= Duration::from_secs(8) && gap < Duration::from_secs(11),
        "reconnected {gap:?} after the last pong"
    );
    // On reconnect the current config is pushed again: identical, a no-op.
    conn2.send_text(&cfg.json());
    drop(conn);

    // The server goes away for good: relaying goes on.
    let retries = p.log().matches("reconnecting in 1 s").count();
    drop(conn2);
    drop(server);
    // The daemon has noticed (and tried again) before relaying is checked.
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .matches("reconnecting in 1 s")
            .count()
            > retries),
        "{}",
        p.log()
    );
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let report = run_uclient(
        [
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-p",
            &cfg_port.to_string(),
            "-n",
            "20",
            "-l",
            "100",
            "-z",
            "5",
            "-c",
            "-u",
            USER,
            "-w",
            PASS,
            "127.0.0.1",
        ]
        .iter(),
    );
    report.assert_all_echoed(20, &p.log());
    p.assert_running("after the CDS server left");
    assert_eq!(status_of(cfg.health, "/ready"), 200);
    assert!(p.log().contains("reconnecting in 1 s"));
}

// ------------------------------------------------------------------------------------------
// Our own cds-server
// ------------------------------------------------------------------------------------------

fn start_cds_server(dir: &Path, port: u16) -> Proc {
    let mut cmd = std::process::Command::new(stunnerd_bin());
    cmd.args(["cds-server", "--dir"]).arg(dir).args([
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--node-address",
        "node-7=127.0.0.1",
    ]);
    let p = Proc::spawn("cds-server", cmd);
    assert!(
        wait_for(Duration::from_secs(5), || status_of(
            port,
            "/api/v1/license"
        ) == 200),
        "cds-server not up\n{}",
        p.log()
    );
    p
}

/// The HTTP side of the API (spec 4.1): get, 404, list, license, bad `watch`, node
/// patching, and the WebSocket Origin check.
#[test]
fn cds_server_http_api() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_udp_tcp_port();
    let mut cfg = Cfg::new("ns/gw", 3478, 0, 0);
    cfg.address = "__node_address_placeholder".into();
    std::fs::write(dir.path().join("gw.json"), cfg.json()).expect("write");
    std::fs::write(dir.path().join("broken.yaml"), "version: v1\nauth: [").expect("write");
    let _srv = start_cds_server(dir.path(), port);

    let (code, body) = http_get(port, "/api/v1/configs/ns/gw").expect("get");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["admin"]["name"], "ns/gw");
    assert_eq!(v["listeners"][0]["address"], "__node_address_placeholder");
    let (_, body) = http_get(port, "/api/v1/configs/ns/gw?node=node-7").expect("get");
    assert!(body.contains("\"address\":\"127.0.0.1\""), "{body}");
    let (_, body) = http_get(port, "/api/v1/configs/ns/gw?node=unknown").expect("get");
    assert!(body.contains("\"address\":\"$STUNNER_ADDR\""), "{body}");
    let (code, body) = http_get(port, "/api/v1/configs/ns/none").expect("get");
    assert_eq!(code, 404);
    assert_eq!(
        body,
        "{\"code\":404,\"message\":\"Config not found for ID ns/none\"}"
    );
    let (code, body) = http_get(port, "/api/v1/configs/ns").expect("list");
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(list["version"], "v1");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(status_of(port, "/api/v1/configs?watch=maybe"), 400);
    assert_eq!(status_of(port, "/api/v2/whatever"), 404);
    let upgrade = |origin: &str| {
        http_request(
            port,
            &format!(
                "GET /api/v1/configs/ns/gw?watch=true HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Origin: {origin}\r\n\r\n"
            ),
        )
        .map_or(0, |r| r.0)
    };
    assert_eq!(upgrade("http://evil.example:1"), 403);
}

/// A fleet member on our cds-server: 20 changes written to the server's directory under
/// a steady uclient load lose nothing; a removed config is a delete the client ignores;
/// the client survives the server's exit; one-shot mode loads by GET.
#[test]
fn cds_server_drives_stunnerd_under_load() {
    let _g = boot_lock();
    let dir = tempfile::tempdir().expect("dir");
    let cds_port = free_udp_tcp_port();
    let (port_b, port_b2) = (free_udp_port(), free_udp_port());
    let mut cfg = Cfg::new(
        "fleet/gw",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    cfg.listeners
        .push(("other".into(), port_b, vec!["local".into()]));
    let file = dir.path().join("gw.json");
    std::fs::write(&file, cfg.json()).expect("write");
    let mut srv = start_cds_server(dir.path(), cds_port);
    let origin = format!("http://127.0.0.1:{cds_port}");
    let args: Vec<String> = ["-w", "-c", &origin, "-i", "fleet/gw"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut p = start_stunnerd("stunnerd", &args, &[]);
    assert!(
        wait_for(Duration::from_secs(5), || status_of(cfg.health, "/ready")
            == 200),
        "{}",
        p.log()
    );
    let base = scrape(cfg.metrics, "stunnerd_config_generation").expect("generation") as u64;

    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let (clients, messages) = (2u64, 600u64);
    let uargs: Vec<String> = [
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &cfg.listeners[0].1.to_string(),
        "-m",
        &clients.to_string(),
        "-n",
        &messages.to_string(),
        "-l",
        "120",
        "-z",
        "20",
        "-c",
        "-u",
        USER,
        "-w",
        PASS,
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let load = std::thread::spawn(move || run_uclient(&uargs));
    assert!(wait_for(Duration::from_secs(5), || {
        scrape(cfg.metrics, "stunner_allocations_active").is_some_and(|a| a >= clients as f64)
    }));
    for i in 0..20 {
        mutate(&mut cfg, i, (port_b, port_b2));
        write_atomic(&file, &cfg.json());
        assert!(
            wait_generation(cfg.metrics, base + 1 + i as u64, Duration::from_secs(5)),
            "change {i} not applied\n{}\n{}",
            tail(&p.log(), 20),
            tail(&srv.log(), 20)
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        !load.is_finished(),
        "uclient ended before the 20 changes were applied"
    );
    let report = load.join().expect("uclient thread");
    report.assert_all_echoed(clients * messages, &p.log());
    let log = p.log();
    assert!(log.contains("listeners restarted: [other]"));
    assert!(!log.contains("listeners restarted: [udp"), "{log}");

    // Removing the file deletes the config: the client gets the zero config and ignores it.
    std::fs::remove_file(&file).expect("rm");
    assert!(wait_for(Duration::from_secs(5), || {
        scrape(
            cfg.metrics,
            "stunnerd_config_reloads_total{result=\"ignored_delete\"}",
        ) == Some(1.0)
    }));
    assert!(wait_udp_ready(local(cfg.listeners[0].1)).is_ok());

    // One-shot mode: a GET at start; an unknown id is fatal.
    std::fs::write(&file, cfg.json()).expect("write");
    assert!(wait_for(Duration::from_secs(3), || status_of(
        cds_port,
        "/api/v1/configs/fleet/gw"
    ) == 200));
    let mut once = cfg.clone();
    once.name = "fleet/once".into();
    once.health = free_udp_tcp_port();
    once.metrics = 0;
    once.listeners = vec![("udp".into(), free_udp_port(), vec!["local".into()])];
    std::fs::write(dir.path().join("once.yaml"), once.json()).expect("write");
    assert!(wait_for(Duration::from_secs(3), || status_of(
        cds_port,
        "/api/v1/configs/fleet/once"
    ) == 200));
    let one_shot: Vec<String> = ["-c", &origin, "-i", "fleet/once"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut p2 = start_stunnerd("stunnerd-once", &one_shot, &[]);
    assert!(
        wait_for(Duration::from_secs(5), || status_of(once.health, "/ready")
            == 200),
        "{}",
        p2.log()
    );
    p2.assert_running("one-shot");
    let missing: Vec<String> = ["-c", &origin, "-i", "fleet/missing"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut p3 = start_stunnerd("stunnerd-missing", &missing, &[]);
    let st = p3.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(st.code(), Some(1), "{}", p3.log());
    assert!(
        p3.log().contains("HTTP error (status: 404)"),
        "{}",
        p3.log()
    );

    // The server leaves: stunnerd keeps serving.
    signal(srv.pid(), "TERM");
    assert!(
        srv.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .contains("reconnecting in 1 s")),
        "{}",
        p.log()
    );
    p.assert_running("after the CDS server left");
    assert!(wait_udp_ready(local(cfg.listeners[0].1)).is_ok());
    assert_eq!(status_of(cfg.health, "/ready"), 200);
}
