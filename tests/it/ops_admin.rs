//! Health endpoints, metrics and graceful drain of the real `stunnerd` binary (spec 3.8,
//! 3.9, 3.10). Each test runs its own stunnerd on fresh 127.0.0.1 ports.

use crate::common;
use crate::ops_util;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use ops_util::*;

/// A stunnerd on a config file; (process, config file, udp port, health port, metrics port).
fn start(extra: &[&str], envs: &[(&str, &str)]) -> (Proc, tempfile::TempPath, Cfg) {
    let cfg = Cfg::new(
        "ops/admin",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    let file = write_config(&cfg.json());
    let mut args = vec!["-c".to_string(), format!("file://{}", file.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = start_stunnerd("stunnerd", &args, envs);
    assert!(
        wait_for(Duration::from_secs(10), || status_of(cfg.health, "/ready")
            == 200),
        "not ready\n{}",
        p.log()
    );
    (p, file, cfg)
}

#[test]
fn health_endpoints_answer_like_upstream() {
    let (mut p, _f, cfg) = start(&[], &[]);
    assert_eq!(
        http_get(cfg.health, "/live"),
        Some((200, "{}\n".to_string()))
    );
    assert_eq!(
        http_get(cfg.health, "/ready"),
        Some((200, "{\"status\":200,\"message\":\"READY\"}\n".to_string()))
    );
    let (code, body) = http_get(cfg.health, "/nope").expect("answer");
    assert_eq!((code, body.as_str()), (404, "404 page not found\n"));
    let st = status_json(cfg.health).expect("/status");
    assert_eq!(st["status"], "READY");
    assert_eq!(st["allocationCount"], 0);
    assert_eq!(st["admin"]["name"], "ops/admin");
    assert_eq!(st["admin"]["quota"], "0");
    assert_eq!(st["admin"]["offload"], "None[all]");
    // Secrets never leave the process.
    assert_eq!(st["auth"]["credentials"]["password"], "<SECRET>");
    assert!(
        !http_get(cfg.health, "/status")
            .expect("status")
            .1
            .contains("\"pass\"")
    );
    assert_eq!(st["listeners"][0]["name"], "udp");
    assert!(st["listeners"][0]["stats"]["rx"]["pkts"].is_u64());
    // Metrics are served on their own path only.
    assert_eq!(status_of(cfg.metrics, "/metrics"), 200);
    assert_eq!(status_of(cfg.metrics, "/other"), 404);
    p.assert_running("after probes");
}

/// Metrics move with traffic and match what the clients saw: every message uclient sent
/// went to the peer once (cluster tx) and came back once (cluster rx).
#[test]
fn metrics_match_client_counts() {
    let (mut p, _f, cfg) = start(&[], &[]);
    let port = cfg.listeners[0].1;
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let (clients, messages) = (4u64, 50u64);
    let args: Vec<String> = [
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port.to_string(),
        "-m",
        &clients.to_string(),
        "-n",
        &messages.to_string(),
        "-l",
        "120",
        "-z",
        "5",
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
    let report = run_uclient(&args);
    report.assert_all_echoed(clients * messages, &p.log());
    let series = |s: &str| scrape(cfg.metrics, s).unwrap_or(-1.0);
    // Workers publish every 100 ms.
    let expected = (clients * messages) as f64;
    assert!(
        wait_for(Duration::from_secs(3), || {
            series("stunner_cluster_packets_total{direction=\"tx\",name=\"local\"}") == expected
                && series("stunner_cluster_packets_total{direction=\"rx\",name=\"local\"}")
                    == expected
        }),
        "cluster packets do not match {expected}:\n{}",
        http_get(cfg.metrics, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default()
    );
    let bytes_tx = series("stunner_cluster_bytes_total{direction=\"tx\",name=\"local\"}");
    assert_eq!(bytes_tx, expected * 120.0, "payload bytes to the peer");
    // Every relayed message crossed the listener both ways, plus the TURN requests.
    let rx = series("stunner_listener_packets_total{direction=\"rx\",name=\"udp\"}");
    let tx = series("stunner_listener_packets_total{direction=\"tx\",name=\"udp\"}");
    assert!(rx > expected && tx > expected, "listener rx {rx} tx {tx}");
    assert!(
        series("stunner_listener_bytes_total{direction=\"rx\",name=\"udp\"}") > expected * 120.0
    );
    assert_eq!(series("stunner_listener_connections{name=\"udp\"}"), 1.0);
    assert!(series("stunnerd_allocations_created_total") >= clients as f64);
    assert!(series("stunnerd_auth_challenges_total") >= clients as f64);
    assert_eq!(series("stunnerd_auth_failures_total"), 0.0);
    assert_eq!(series("stunnerd_ready"), 1.0);
    assert_eq!(series("stunnerd_config_generation"), 1.0);
    assert!(series("stunnerd_dropped_packets_total{reason=\"forbidden\"}") >= 0.0);
    // /status carries the same counts.
    let st = status_json(cfg.health).expect("status");
    assert_eq!(
        st["clusters"][0]["stats"]["tx"]["pkts"].as_f64(),
        Some(expected)
    );

    // A wrong password is counted as an auth failure.
    let mut bad = TurnClient::new(local(port), USER, "wrong");
    assert!(bad.allocate().is_err(), "a wrong password must be refused");
    assert!(wait_for(Duration::from_secs(2), || series(
        "stunnerd_auth_failures_total"
    ) >= 1.0));
    p.assert_running("after traffic");
}

/// SIGTERM with a live allocation: /ready turns 503 at once, /status says TERMINATING,
/// relaying (and allocating) goes on, and the process exits 0 right after the last
/// allocation ends.
#[test]
fn sigterm_drains_until_last_allocation_ends() {
    let (mut p, _f, cfg) = start(&[], &[]);
    let server = local(cfg.listeners[0].1);
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("addr");
    let mut client = TurnClient::new(server, USER, PASS);
    client.allocate().expect("allocate");
    client.create_permission(peer_addr).expect("permission");
    assert!(relay_roundtrip(&client, &peer, b"before"));
    assert!(wait_for(Duration::from_secs(2), || {
        scrape(cfg.metrics, "stunner_allocations_active") == Some(1.0)
    }));

    signal(p.pid(), "TERM");
    let t0 = Instant::now();
    assert!(
        wait_for(Duration::from_secs(1), || status_of(cfg.health, "/ready")
            == 503),
        "/ready did not turn 503"
    );
    assert!(t0.elapsed() < Duration::from_millis(1000));
    assert_eq!(status_of(cfg.health, "/live"), 200);
    assert_eq!(
        status_json(cfg.health).expect("status")["status"],
        "TERMINATING"
    );
    // Relaying continues (a second signal would end the drain at once: tests/ops_reload.rs).
    assert!(relay_roundtrip(&client, &peer, b"draining"));
    std::thread::sleep(Duration::from_millis(1500));
    p.assert_running("draining with a live allocation");
    assert!(relay_roundtrip(&client, &peer, b"still"));
    // New allocations are still accepted (upstream relies on the pod leaving the Service).
    let mut late = TurnClient::new(server, USER, PASS);
    late.allocate().expect("allocate while draining");
    late.refresh(0).expect("delete late allocation");

    client.refresh(0).expect("delete allocation");
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("exit after the last allocation");
    assert!(status.success(), "exit status {status}\n{}", p.log());
    assert!(p.log().contains("normal exit on graceful shutdown"));
}

/// The drain ends at `STUNNERD_DRAIN_TIMEOUT` even with allocations left; with
/// `--force-ready-status` /ready stays 200 throughout.
#[test]
fn drain_timeout_and_forced_readiness() {
    let (mut p, _f, cfg) = start(
        &["--force-ready-status"],
        &[("STUNNERD_DRAIN_TIMEOUT", "2")],
    );
    let mut client = TurnClient::new(local(cfg.listeners[0].1), USER, PASS);
    client.allocate().expect("allocate");
    assert!(wait_for(Duration::from_secs(2), || {
        scrape(cfg.metrics, "stunner_allocations_active") == Some(1.0)
    }));
    signal(p.pid(), "INT");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        status_of(cfg.health, "/ready"),
        200,
        "forced ready while draining"
    );
    let status = p
        .wait_exit(Duration::from_secs(6))
        .expect("exit at the drain timeout");
    assert!(status.success(), "exit status {status}\n{}", p.log());
    assert!(p.log().contains("drain timeout"));
}

/// A command's trimmed stdout (panics with its stderr if it fails).
fn run_out(prog: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(require_tool(prog))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// (soft, hard) RLIMIT_NOFILE of a process, as `prlimit` reads it.
fn nofile(pid: u32) -> (u64, u64) {
    let out = run_out(
        "prlimit",
        &[
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--noheadings",
            "--raw",
            "--output",
            "SOFT,HARD",
        ],
    );
    let mut it = out.split_whitespace().map(|v| v.parse().expect("limit"));
    (it.next().expect("soft"), it.next().expect("hard"))
}

/// User + system CPU ticks of a process (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().expect("ticks"))
        .collect();
    f[0] + f[1]
}

/// The standard process series, each checked against what the kernel says about the
/// daemon through another channel (prlimit, /proc/PID/status, getconf, /proc/PID/fd), and
/// computed at scrape time: a limit changed from outside shows on the next scrape.
#[test]
fn process_series_describe_the_running_daemon() {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let (mut p, _f, cfg) = start(&[], &[]);
    let pid = p.pid();
    let hz: f64 = run_out("getconf", &["CLK_TCK"]).parse().expect("CLK_TCK");

    let before = cpu_ticks(pid) as f64 / hz;
    let (code, body) = http_get(cfg.metrics, "/metrics").expect("scrape");
    let after = cpu_ticks(pid) as f64 / hz;
    assert_eq!(code, 200);
    let get = |s: &str| metric(&body, s).unwrap_or_else(|| panic!("no {s} in\n{body}"));
    for (name, typ) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            body.contains(&format!("\n# TYPE {name} {typ}\n")),
            "{name} {typ}"
        );
    }

    let cpu = get("process_cpu_seconds_total");
    assert!(
        before <= cpu && cpu <= after,
        "cpu {cpu} outside [{before}, {after}]"
    );
    let start = get("process_start_time_seconds");
    assert!(
        start >= t0 - 1.0 && start <= t0 + 30.0,
        "start time {start}, test began at {t0}"
    );

    // Resident memory against VmRSS (kB) of /proc/PID/status, read right after.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in {status}"))
    };
    let rss = get("process_resident_memory_bytes");
    let vm_rss = kb("VmRSS:") * 1024.0;
    assert!(
        rss > 1e6 && (rss - vm_rss).abs() < vm_rss * 0.25,
        "rss {rss} vs VmRSS {vm_rss}"
    );
    let vsz = get("process_virtual_memory_bytes");
    assert!(vsz > rss, "virtual {vsz} resident {rss}");

    // Open fds: the daemon's sockets, eventfds and the scrape's own connection.
    let fds = get("process_open_fds");
    let listed = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count() as f64;
    assert!(
        fds >= 5.0 && (fds - listed).abs() <= 4.0,
        "open fds {fds}, /proc lists {listed}"
    );

    // Max fds is the soft RLIMIT_NOFILE, read at each scrape.
    let (soft, hard) = nofile(pid);
    assert_eq!(get("process_max_fds"), soft as f64);
    let lowered = soft - 7;
    run_out(
        "prlimit",
        &[
            "--pid",
            &pid.to_string(),
            &format!("--nofile={lowered}:{hard}"),
        ],
    );
    assert_eq!(nofile(pid).0, lowered);
    assert_eq!(scrape(cfg.metrics, "process_max_fds"), Some(lowered as f64));
    p.assert_running("after scrapes");
}
