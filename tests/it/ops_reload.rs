//! The daemon's front door under signals and file changes: a second SIGINT ends the drain at
//! once, SIGHUP re-reads the config file, a replaced TLS certificate file is served without
//! touching other listeners, and idle watchers (`-w` file origin, `cds-server`) stay off
//! the file system (measured with strace when it is installed).

use crate::common;
use crate::ops_util;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ops_util::*;
use serde_json::json;

/// A stunnerd on a config file, ready; extra args before `-c`.
fn start_on_file(path: &Path, cfg: &Cfg, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["-c".to_string(), format!("file://{}", path.display())]);
    let p = start_stunnerd("stunnerd", &args, &[]);
    assert!(
        wait_for(Duration::from_secs(10), || status_of(cfg.health, "/ready")
            == 200),
        "not ready\n{}",
        p.log()
    );
    p
}

fn new_cfg(name: &str) -> Cfg {
    Cfg::new(
        name,
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    )
}

/// A client with an allocation and a permission for `peer`, relaying through `server`.
fn live_allocation(server: u16, peer: &UdpSocket) -> TurnClient {
    let mut client = TurnClient::new(local(server), USER, PASS);
    client.allocate().expect("allocate");
    client
        .create_permission(peer.local_addr().expect("peer addr"))
        .expect("permission");
    assert!(relay_roundtrip(&client, peer, b"hello"), "relay works");
    client
}

fn echo_peer() -> UdpSocket {
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    peer
}

/// SIGINT starts the drain (a live allocation keeps it going); a second SIGINT exits at
/// once, status 0, saying how many allocations it dropped.
#[test]
fn second_sigint_exits_at_once_with_a_live_allocation() {
    let cfg = new_cfg("ops/sigint");
    let file = write_config(&cfg.json());
    let mut p = start_on_file(&file, &cfg, &[]);
    let peer = echo_peer();
    let client = live_allocation(cfg.listeners[0].1, &peer);
    assert!(wait_for(Duration::from_secs(2), || {
        scrape(cfg.metrics, "stunner_allocations_active") == Some(1.0)
    }));

    let t0 = Instant::now();
    signal(p.pid(), "INT");
    assert!(
        wait_for(Duration::from_secs(1), || status_of(cfg.health, "/ready")
            == 503),
        "drain did not start\n{}",
        p.log()
    );
    p.assert_running("draining with a live allocation");
    assert!(relay_roundtrip(&client, &peer, b"draining"));
    signal(p.pid(), "INT");
    let status = p
        .wait_exit(Duration::from_secs(2))
        .unwrap_or_else(|| panic!("still running 2 s after SIGINT, SIGINT\n{}", p.log()));
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}\n{}", p.log());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let log = p.log();
    assert!(
        log.contains(
            "SIGINT during graceful shutdown: exiting now, dropping 1 active allocation(s)"
        ),
        "{log}"
    );
    eprintln!("SIGINT, SIGINT with one allocation: exited in {took:?}");
}

/// SIGHUP re-reads the config file (no `-w`): an edit applies, a broken edit is refused with
/// the running config kept, and the process never dies of the signal.
#[test]
fn sighup_rereads_the_config_file() {
    let mut cfg = new_cfg("ops/hup");
    let file = write_config(&cfg.json());
    let mut p = start_on_file(&file, &cfg, &[]);
    let peer = echo_peer();
    let client = live_allocation(cfg.listeners[0].1, &peer);
    assert!(wait_generation(cfg.metrics, 1, Duration::from_secs(2)));

    // Without -w nothing follows the file: only the signal makes the edit count.
    cfg.listeners[0].2 = vec!["local".into(), "after-hup".into()];
    std::fs::write(&file, cfg.json()).expect("edit");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(scrape(cfg.metrics, "stunnerd_config_generation"), Some(1.0));
    signal(p.pid(), "HUP");
    assert!(
        wait_generation(cfg.metrics, 2, Duration::from_secs(3)),
        "SIGHUP did not apply the edit\n{}",
        p.log()
    );
    let routes = status_json(cfg.health).expect("status")["listeners"][0]["routes"].clone();
    assert_eq!(routes, json!(["after-hup", "local"]));
    // The listener did not change: the allocation survived the reload.
    assert!(relay_roundtrip(&client, &peer, b"after reload"));

    std::fs::write(&file, "version: v1\nlisteners: [{port: 99999}]\n").expect("break");
    signal(p.pid(), "HUP");
    assert!(
        wait_for(Duration::from_secs(3), || p
            .log()
            .contains("could not reconcile new configuration")),
        "{}",
        p.log()
    );
    p.assert_running("after SIGHUP with a broken file");
    assert_eq!(scrape(cfg.metrics, "stunnerd_config_generation"), Some(2.0));
    assert!(relay_roundtrip(&client, &peer, b"still"));
    assert!(
        p.log()
            .contains("SIGHUP: re-reading the configuration from file://")
    );
}

/// A self-signed certificate and key (PEM) whose subject CN is `cn`.
fn cert_pair(cn: &str) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-sign");
    (cert.pem(), key.serialize_pem())
}

/// A TLS connection to 127.0.0.1:`port` (no verification).
fn tls_connect(port: u16) -> Option<openssl::ssl::SslStream<TcpStream>> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls()).ok()?;
    b.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect_timeout(&local(port), Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    tcp.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    b.build()
        .configure()
        .ok()?
        .verify_hostname(false)
        .connect("localhost", tcp)
        .ok()
}

/// The subject CN of the certificate a new TLS connection to `port` is served.
fn served_cn(port: u16) -> Option<String> {
    let s = tls_connect(port)?;
    let cert = s.ssl().peer_certificate()?;
    let entry = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()?;
    entry.data().to_string().ok()
}

/// A STUN Binding over an established TLS connection answers.
fn tls_binding_works(s: &mut openssl::ssl::SslStream<TcpStream>) -> bool {
    let (req, tid) = binding_request();
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut head = [0u8; 20];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).is_ok() && head[0..2] == [0x01, 0x01] && head[8..20] == tid
}

/// The config: `cfg`'s TURN-UDP listener plus a TURN-TLS listener on `tls_port` whose
/// certificate and key are the files `cert` and `key`.
fn config_with_tls(cfg: &Cfg, tls_port: u16, cert: &Path, key: &Path) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&cfg.json()).expect("json");
    v["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(json!({
            "name": "tls", "protocol": "TURN-TLS", "address": "127.0.0.1", "port": tls_port,
            "cert": cert.display().to_string(), "key": key.display().to_string(),
            "routes": ["local"],
        }));
    v.to_string()
}

/// Replacing the certificate and key files of a TURN-TLS listener (as a renewal does) makes
/// new connections get the new certificate after the next watch tick, while an established
/// TLS connection keeps working and a UDP allocation on the other listener keeps relaying
/// the whole time.
#[test]
fn replaced_tls_certificate_is_served_while_udp_keeps_relaying() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (
        dir.path().join("fullchain.pem"),
        dir.path().join("privkey.pem"),
    );
    let (c1, k1) = cert_pair("first.example");
    std::fs::write(&cert, &c1).expect("cert");
    std::fs::write(&key, &k1).expect("key");
    let cfg = new_cfg("ops/tls");
    let tls_port = free_udp_tcp_port();
    let conf = dir.path().join("stunnerd.json");
    std::fs::write(&conf, config_with_tls(&cfg, tls_port, &cert, &key)).expect("config");
    let p = start_on_file(&conf, &cfg, &["-w"]);
    assert!(
        wait_for(Duration::from_secs(3), || served_cn(tls_port).is_some()),
        "{}",
        p.log()
    );
    assert_eq!(served_cn(tls_port).as_deref(), Some("first.example"));
    let mut established = tls_connect(tls_port).expect("tls connection");
    assert!(tls_binding_works(&mut established));

    // A UDP allocation on the other listener relays throughout.
    let peer = echo_peer();
    let client = live_allocation(cfg.listeners[0].1, &peer);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let relay = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                i += 1;
                let payload = format!("relay-{i}");
                if relay_roundtrip(&client, &peer, payload.as_bytes()) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // The renewal: both files replaced (rename over), certificate first.
    let (c2, k2) = cert_pair("second.example");
    let t0 = Instant::now();
    write_atomic(&cert, &c2);
    write_atomic(&key, &k2);
    assert!(
        wait_for(Duration::from_secs(5), || served_cn(tls_port).as_deref()
            == Some("second.example")),
        "new certificate not served\n{}",
        p.log()
    );
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    relay.join().expect("relay thread");

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok >= 20, "only {ok} round trips\n{}", p.log());
    assert_eq!(failed, 0, "{failed} lost round trips of {}", ok + failed);
    // The established connection kept its session (and its certificate).
    assert!(
        tls_binding_works(&mut established),
        "established TLS connection broke\n{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains("certificate reloaded from file"), "{log}");
    assert!(!log.contains("listeners restarted"), "{log}");
    eprintln!("new certificate served {took:?} after the replace; {ok} UDP round trips, 0 lost");
}

/// The total of file-system calls `strace -f -c` counts in `pid` over `secs` seconds.
fn fs_syscalls(pid: u32, secs: u64) -> (u64, String) {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "-s",
        "INT",
        &secs.to_string(),
        "strace",
        "-f",
        "-c",
        "-e",
        "trace=%file,inotify_add_watch,inotify_rm_watch",
        "-p",
        &pid.to_string(),
    ]);
    let out = run_with_timeout(cmd, Duration::from_secs(secs + 10));
    let text = out.combined();
    assert!(text.contains("attached"), "strace did not attach:\n{text}");
    let total = text
        .lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (total, text)
}

/// An idle `stunnerd -w` on a config file with a TURN-TLS listener whose certificate and
/// key are files makes fewer than 20 file-system calls in 10 s (the safety poll only).
#[test]
fn idle_watching_daemon_stays_off_the_file_system() {
    if which("strace").is_none() {
        eprintln!("SKIP: strace not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (
        dir.path().join("fullchain.pem"),
        dir.path().join("privkey.pem"),
    );
    let (c, k) = cert_pair("idle.example");
    std::fs::write(&cert, c).expect("cert");
    std::fs::write(&key, k).expect("key");
    let cfg = new_cfg("ops/idle");
    let conf = dir.path().join("stunnerd.json");
    std::fs::write(
        &conf,
        config_with_tls(&cfg, free_udp_tcp_port(), &cert, &key),
    )
    .expect("config");
    let mut p = start_on_file(&conf, &cfg, &["-w"]);
    std::thread::sleep(Duration::from_secs(1));
    let (calls, text) = fs_syscalls(p.pid(), 10);
    eprintln!("idle -w daemon: {calls} file-system syscalls in 10 s\n{text}");
    assert!(calls < 20, "{calls} file-system syscalls in 10 s:\n{text}");
    p.assert_running("after the strace window");
}

/// An idle `stunnerd cds-server` on a directory holding a duplicate config id makes fewer
/// than 20 file-system calls in 10 s and warns about the duplicate once.
#[test]
fn idle_cds_server_stays_off_the_file_system() {
    if which("strace").is_none() {
        eprintln!("SKIP: strace not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let a = new_cfg("ns/a");
    std::fs::write(dir.path().join("a.json"), a.json()).expect("a");
    std::fs::write(dir.path().join("a-copy.json"), a.json()).expect("copy");
    std::fs::write(dir.path().join("b.json"), new_cfg("ns/b").json()).expect("b");
    let port = free_udp_tcp_port();
    let args: Vec<String> = [
        "cds-server",
        "-d",
        &dir.path().display().to_string(),
        "-a",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = start_stunnerd("cds-server", &args, &[]);
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .contains("serving 2 config(s)")),
        "{}",
        p.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let (calls, text) = fs_syscalls(p.pid(), 10);
    eprintln!("idle cds-server: {calls} file-system syscalls in 10 s\n{text}");
    assert!(calls < 20, "{calls} file-system syscalls in 10 s:\n{text}");
    p.assert_running("after the strace window");
    let log = p.log();
    let warnings = log.matches("also defined elsewhere").count();
    assert_eq!(warnings, 1, "the duplicate is warned about once:\n{log}");
}

/// The subject CN a new DTLS session to `port` is served (openssl s_client).
fn dtls_served_cn(port: u16) -> Option<String> {
    let mut cmd = Command::new(require_tool("openssl"));
    cmd.args([
        "s_client",
        "-dtls",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ]);
    let out = run_with_timeout(cmd, Duration::from_secs(5));
    let text = out.combined();
    let subject = text.lines().find(|l| l.starts_with("subject="))?;
    Some(subject.rsplit("CN = ").next()?.trim().to_string())
}

/// Without `-w` certificate files are not followed; SIGHUP re-reads them, and a TURN-DTLS
/// listener serves the new certificate to new sessions without restarting.
#[test]
fn sighup_reloads_dtls_certificate_files() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (c1, k1) = cert_pair("dtls-one.example");
    std::fs::write(&cert, &c1).expect("cert");
    std::fs::write(&key, &k1).expect("key");
    let cfg = new_cfg("ops/dtls");
    let dtls_port = free_udp_tcp_port();
    let mut v: serde_json::Value = serde_json::from_str(&cfg.json()).expect("json");
    v["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(json!({
            "name": "dtls", "protocol": "TURN-DTLS", "address": "127.0.0.1", "port": dtls_port,
            "cert": cert.display().to_string(), "key": key.display().to_string(),
            "routes": ["local"],
        }));
    let conf = dir.path().join("stunnerd.json");
    std::fs::write(&conf, v.to_string()).expect("config");
    let mut p = start_on_file(&conf, &cfg, &[]);
    let peer = echo_peer();
    let client = live_allocation(cfg.listeners[0].1, &peer);
    assert_eq!(
        dtls_served_cn(dtls_port).as_deref(),
        Some("dtls-one.example"),
        "{}",
        p.log()
    );

    let (c2, k2) = cert_pair("dtls-two.example");
    write_atomic(&cert, &c2);
    write_atomic(&key, &k2);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        dtls_served_cn(dtls_port).as_deref(),
        Some("dtls-one.example"),
        "without -w the files are read on SIGHUP only"
    );
    signal(p.pid(), "HUP");
    assert!(
        wait_for(Duration::from_secs(5), || dtls_served_cn(dtls_port)
            .as_deref()
            == Some("dtls-two.example")),
        "{}",
        p.log()
    );
    p.assert_running("after SIGHUP");
    assert!(relay_roundtrip(&client, &peer, b"udp kept"));
    let log = p.log();
    assert!(
        log.contains("certificate reloaded from file") && log.contains("[\"dtls\"]"),
        "{log}"
    );
}
