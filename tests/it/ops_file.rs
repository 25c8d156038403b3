//! Hot reload from a watched file (`stunnerd -w -c file://PATH`), with real TURN traffic:
//! config changes under load, broken configs, ConfigMap-style symlink swaps, editor
//! renames, log levels and STRICT_DNS clusters.

use crate::common;
use crate::ops_util;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ops_util::*;

/// stunnerd watching `path`; waits until ready.
fn start_watching(path: &Path, cfg: &Cfg, extra: &[&str]) -> Proc {
    let mut args = vec![
        "-w".to_string(),
        "-c".into(),
        format!("file://{}", path.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = start_stunnerd("stunnerd", &args, &[]);
    assert!(
        wait_for(Duration::from_secs(10), || status_of(cfg.health, "/ready")
            == 200),
        "not ready\n{}",
        p.log()
    );
    p
}

fn uclient_args(
    port: u16,
    peer_port: u16,
    clients: u64,
    messages: u64,
    gap_ms: u64,
) -> Vec<String> {
    [
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
        &gap_ms.to_string(),
        "-c",
        "-u",
        USER,
        "-w",
        PASS,
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// 20 config changes through the file watch under a steady uclient load: not one relayed
/// packet of the unchanged listener is lost, and moving the second listener's port
/// restarts that listener only.
#[test]
fn twenty_changes_under_load_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("stunnerd.conf");
    let (port_b, port_b2) = (free_udp_port(), free_udp_port());
    let mut cfg = Cfg::new(
        "ops/file",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    cfg.listeners
        .push(("other".into(), port_b, vec!["local".into()]));
    std::fs::write(&path, cfg.json()).expect("write");
    let mut p = start_watching(&path, &cfg, &[]);
    assert!(wait_udp_ready(local(port_b)).is_ok());

    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let (clients, messages) = (2u64, 600u64);
    let args = uclient_args(cfg.listeners[0].1, peer_port, clients, messages, 20);
    let load = std::thread::spawn(move || run_uclient(&args));
    // Let uclient allocate and start sending before the first change.
    assert!(wait_for(Duration::from_secs(5), || {
        scrape(cfg.metrics, "stunner_allocations_active").is_some_and(|a| a >= clients as f64)
    }));

    for i in 0..20 {
        let moved = mutate(&mut cfg, i, (port_b, port_b2));
        // Alternate the two ways files change: rename over, and truncate-then-write.
        if i % 2 == 0 {
            write_atomic(&path, &cfg.json());
        } else {
            std::fs::write(&path, cfg.json()).expect("write in place");
        }
        assert!(
            wait_generation(cfg.metrics, 2 + i as u64, Duration::from_secs(5)),
            "change {i} not applied\n{}",
            tail(&p.log(), 30)
        );
        if moved {
            let new_port = cfg.listeners[1].1;
            assert!(
                wait_udp_ready(local(new_port)).is_ok(),
                "listener not on its new port {new_port}"
            );
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    // The changes all landed while the load ran.
    assert!(
        !load.is_finished(),
        "uclient ended before the 20 changes were applied"
    );
    let report = load.join().expect("uclient thread");
    report.assert_all_echoed(clients * messages, &p.log());
    p.assert_running("after 20 changes");

    let log = p.log();
    assert!(
        log.contains("listeners restarted: [other]"),
        "{}",
        tail(&log, 40)
    );
    assert!(
        !log.contains("listeners restarted: [udp"),
        "the loaded listener restarted:\n{log}"
    );
    assert_eq!(
        scrape(
            cfg.metrics,
            "stunnerd_config_reloads_total{result=\"applied\"}"
        ),
        Some(20.0)
    );
    // The old port of the moved listener is closed.
    let old_port = if cfg.listeners[1].1 == port_b {
        port_b2
    } else {
        port_b
    };
    let probe = UdpSocket::bind("127.0.0.1:0").expect("probe");
    probe
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let (req, _) = binding_request();
    let _ = probe.send_to(&req, local(old_port));
    let mut buf = [0u8; 512];
    assert!(
        probe.recv_from(&mut buf).is_err(),
        "old port {old_port} still answers"
    );
}

/// Invalid JSON, a bad field and a port in use each leave the old config serving, /ready
/// 200, a log line with the reason and a count; a good config afterwards applies.
#[test]
fn broken_configs_keep_the_old_one() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("stunnerd.conf");
    let cfg = Cfg::new(
        "ops/broken",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    std::fs::write(&path, cfg.json()).expect("write");
    let mut p = start_watching(&path, &cfg, &[]);
    let serving = |p: &mut Proc| {
        p.assert_running("serving");
        assert_eq!(status_of(cfg.health, "/ready"), 200);
        assert!(wait_udp_ready(local(cfg.listeners[0].1)).is_ok());
        let st = status_json(cfg.health).expect("status");
        assert_eq!(st["listeners"].as_array().map(Vec::len), Some(1), "{st}");
        assert_eq!(scrape(cfg.metrics, "stunnerd_config_generation"), Some(1.0));
    };
    let counted = |result: &str, n: f64| {
        wait_for(Duration::from_secs(5), || {
            scrape(
                cfg.metrics,
                &format!("stunnerd_config_reloads_total{{result=\"{result}\"}}"),
            ) == Some(n)
        })
    };

    write_atomic(&path, "{ \"version\": \"v1\", \"auth\": ");
    assert!(counted("invalid", 1.0), "{}", tail(&p.log(), 20));
    serving(&mut p);

    let bad_field = cfg.json().replace(
        &format!("\"port\":{}", cfg.listeners[0].1),
        "\"port\":\"many\"",
    );
    assert_ne!(bad_field, cfg.json());
    write_atomic(&path, &bad_field);
    assert!(counted("invalid", 2.0), "{}", tail(&p.log(), 20));
    serving(&mut p);
    assert!(
        p.log().contains("listeners[0].port"),
        "reason names the field:\n{}",
        p.log()
    );

    let blocker = UdpSocket::bind("0.0.0.0:0").expect("blocker");
    let taken = blocker.local_addr().expect("addr").port();
    let mut clash = cfg.clone();
    clash.listeners.push(("clash".into(), taken, vec![]));
    write_atomic(&path, &clash.json());
    assert!(counted("apply_failed", 1.0), "{}", tail(&p.log(), 20));
    serving(&mut p);
    let log = p.log();
    assert!(
        log.contains("could not reconcile new configuration (running configuration unchanged)")
            && log.contains(&format!("port {taken}")),
        "{log}"
    );

    let mut good = cfg.clone();
    good.listeners[0].2.push("none".into());
    write_atomic(&path, &good.json());
    assert!(wait_generation(cfg.metrics, 2, Duration::from_secs(5)));
    assert_eq!(status_of(cfg.health, "/ready"), 200);
}

/// A Kubernetes ConfigMap volume: `stunnerd.conf -> ..data/stunnerd.conf`, `..data ->
/// ..v1`, updated by swapping `..data`; then an editor replacing the file by rename, a
/// truncate-then-write, and a file that disappears and comes back.
#[test]
fn configmap_swaps_and_editor_renames_are_seen() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();
    let mut cfg = Cfg::new(
        "ops/cm",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    let version = |n: u32, text: &str| -> PathBuf {
        let v = root.join(format!("..v{n}"));
        std::fs::create_dir(&v).expect("mkdir");
        std::fs::write(v.join("stunnerd.conf"), text).expect("write");
        v
    };
    let v1 = version(1, &cfg.json());
    std::os::unix::fs::symlink("..v1", root.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/stunnerd.conf", root.join("stunnerd.conf"))
        .expect("symlink");
    let path = root.join("stunnerd.conf");
    let mut p = start_watching(&path, &cfg, &[]);
    let routes = || status_json(cfg.health).map(|s| s["listeners"][0]["routes"].clone());

    // The kubelet's atomic update.
    cfg.listeners[0].2 = vec!["local".into(), "swap".into()];
    version(2, &cfg.json());
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).expect("symlink");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    std::fs::remove_dir_all(v1).expect("rm old");
    assert!(
        wait_generation(cfg.metrics, 2, Duration::from_secs(3)),
        "{}",
        p.log()
    );
    assert_eq!(routes(), Some(serde_json::json!(["local", "swap"])));

    cfg.listeners[0].2 = vec!["local".into(), "rename".into()];
    write_atomic(&path, &cfg.json());
    assert!(
        wait_generation(cfg.metrics, 3, Duration::from_secs(3)),
        "{}",
        p.log()
    );

    cfg.listeners[0].2 = vec!["local".into(), "inplace".into()];
    std::fs::write(&path, cfg.json()).expect("write");
    assert!(
        wait_generation(cfg.metrics, 4, Duration::from_secs(3)),
        "{}",
        p.log()
    );

    std::fs::remove_file(&path).expect("rm");
    std::thread::sleep(Duration::from_millis(1500));
    p.assert_running("config file removed");
    assert_eq!(status_of(cfg.health, "/ready"), 200);
    cfg.listeners[0].2 = vec!["local".into(), "back".into()];
    std::fs::write(&path, cfg.json()).expect("write");
    assert!(
        wait_generation(cfg.metrics, 5, Duration::from_secs(3)),
        "{}",
        p.log()
    );
    assert_eq!(routes(), Some(serde_json::json!(["back", "local"])));
}

/// `admin.loglevel` applies on each config unless `-l` overrides it.
#[test]
fn loglevel_follows_config_unless_cli_overrides() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("stunnerd.conf");
    let mut cfg = Cfg::new(
        "ops/log",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    cfg.loglevel = "all:DEBUG".into();
    std::fs::write(&path, cfg.json()).expect("write");
    // The watch re-reads the file at start: a DEBUG "configuration unchanged" line.
    let p = start_watching(&path, &cfg, &[]);
    assert!(
        wait_for(Duration::from_secs(3), || p
            .log()
            .contains(" DEBUG: configuration unchanged")),
        "{}",
        p.log()
    );
    drop(p);

    let mut cfg2 = Cfg::new(
        "ops/log",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    cfg2.loglevel = "all:DEBUG".into();
    std::fs::write(&path, cfg2.json()).expect("write");
    let p = start_watching(&path, &cfg2, &["-l", "all:INFO"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !p.log().contains(" DEBUG: "),
        "-l all:INFO must win:\n{}",
        p.log()
    );
    // And the config shows the CLI level, as upstream's override does.
    let st = status_json(cfg2.health).expect("status");
    assert_eq!(st["admin"]["loglevel"], "all:INFO");
}

/// A STRICT_DNS cluster admits the addresses its name resolves to (resolved in the
/// background), and relaying through it works.
#[test]
fn strict_dns_cluster_admits_resolved_addresses() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("stunnerd.conf");
    let mut cfg = Cfg::new(
        "ops/dns",
        free_udp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    cfg.clusters = vec![(
        "local".into(),
        "STRICT_DNS".into(),
        vec!["localhost".into()],
    )];
    std::fs::write(&path, cfg.json()).expect("write");
    let p = start_watching(&path, &cfg, &[]);
    assert!(
        wait_for(Duration::from_secs(5), || {
            scrape(
                cfg.metrics,
                "stunnerd_config_reloads_total{result=\"dns_update\"}",
            ) >= Some(1.0)
        }),
        "no DNS answer published\n{}",
        p.log()
    );
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let report = run_uclient(uclient_args(cfg.listeners[0].1, peer_port, 1, 20, 5));
    report.assert_all_echoed(20, &p.log());
}
