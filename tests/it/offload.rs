//! The kernel fast path (`admin.offload_engine: TC` and `XDP` on `lo`), with real clients and with
//! the revocations that must stop it. Each test runs in a network namespace of its own
//! (fixed ports, and the program attaches to that namespace's `lo`); they need root and a
//! kernel with BPF, and skip only when this build has no eBPF program (no clang when it
//! was built).

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::netns::in_netns;
use crate::common::*;
use crate::ops_util::*;

const PORT: u16 = 3478;
const HEALTH: u16 = 8086;
const METRICS: u16 = 9090;

/// Whether this build carries the eBPF program; says so when it does not.
fn bpf_built() -> bool {
    if cfg!(stunnerd_bpf) {
        return true;
    }
    eprintln!("SKIP: this build has no eBPF program (clang/libbpf-dev missing at build time)");
    false
}

/// A config with one TURN-UDP listener on 127.0.0.1:3478 routed to `peers`.
fn config(engine: &str, peers: &[&str]) -> String {
    json!({
        "version": "v1",
        "admin": {"name": "offload", "loglevel": "all:INFO",
                  "healthcheck_endpoint": format!("http://127.0.0.1:{HEALTH}"),
                  "metrics_endpoint": format!("http://127.0.0.1:{METRICS}/metrics"),
                  "offload_engine": engine},
        "auth": {"type": "static", "realm": REALM,
                 "credentials": {"username": USER, "password": PASS}},
        "listeners": [{"name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1",
                       "port": PORT, "routes": ["local"]}],
        "clusters": [{"name": "local", "type": "STATIC", "endpoints": peers}],
    })
    .to_string()
}

/// stunnerd on `path` (watched), ready to answer.
fn start(path: &Path) -> Proc {
    let args = vec![
        "-w".to_string(),
        "-c".to_string(),
        format!("file://{}", path.display()),
    ];
    let mut p = start_stunnerd("stunnerd-offload", &args, &[]);
    if let Err(e) = wait_udp_ready(local(PORT)) {
        p.assert_running("start");
        panic!("not ready: {e}\n{}", p.log());
    }
    assert!(wait_generation(METRICS, 1, Duration::from_secs(5)));
    p
}

fn series(name: &str, direction: &str) -> f64 {
    scrape(METRICS, &format!("{name}{{direction=\"{direction}\"}}")).unwrap_or(0.0)
}

fn listener(name: &str, direction: &str) -> f64 {
    scrape(
        METRICS,
        &format!("{name}{{direction=\"{direction}\",name=\"udp\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn uclient_channels_relay_in_the_kernel() {
    in_netns(
        module_path!(),
        "uclient_channels_relay_in_the_kernel",
        || uclient_through("TC"),
    );
}

#[test]
fn uclient_channels_relay_in_xdp() {
    in_netns(module_path!(), "uclient_channels_relay_in_xdp", || {
        uclient_through("XDP")
    });
}

/// turnutils_uclient's channels relay with 0 loss and every ChannelData goes through
/// `engine` on `lo`, both ways.
fn uclient_through(engine: &str) {
    {
        {
            if !bpf_built() {
                return;
            }
            let conf = write_config(&config(engine, &["127.0.0.1/32"]));
            let mut p = start(&conf);
            let status = status_json(HEALTH).expect("status");
            assert_eq!(
                status["admin"]["offload"],
                format!("{engine}[all]"),
                "{status}"
            );
            let _peer = start_peer(3480);
            let (clients, messages) = (4u64, 200u64);
            let report = run_uclient([
                "-e",
                "127.0.0.1",
                "-r",
                "3480",
                "-p",
                "3478",
                "-u",
                USER,
                "-w",
                PASS,
                "-m",
                &clients.to_string(),
                "-n",
                &messages.to_string(),
                "-l",
                "120",
                "-z",
                "5",
                "-c",
                "127.0.0.1",
            ]);
            p.assert_running("after uclient");
            report.assert_all_echoed(clients * messages, &p.log());
            assert_eq!(report.lost_pct, Some(0.0), "{}", report.output);
            let want = (clients * messages) as f64;
            // The routes went with the allocations (Refresh 0); the last counters were read
            // back then and appear at the next publish.
            assert!(
                wait_for(Duration::from_secs(3), || {
                    scrape(METRICS, "stunnerd_offload_entries") == Some(0.0)
                        && series("stunnerd_offload_packets_total", "to_client") >= want
                        && scrape(
                            METRICS,
                            "stunner_cluster_packets_total{direction=\"tx\",name=\"local\"}",
                        ) >= Some(want)
                }),
                "offload counters: to_peer {} to_client {}, entries {:?}\n{}",
                series("stunnerd_offload_packets_total", "to_peer"),
                series("stunnerd_offload_packets_total", "to_client"),
                scrape(METRICS, "stunnerd_offload_entries"),
                tail(&p.log(), 30)
            );
            let to_peer = series("stunnerd_offload_packets_total", "to_peer");
            let to_client = series("stunnerd_offload_packets_total", "to_client");
            assert_eq!(to_peer, want, "every ChannelData went through the kernel");
            assert_eq!(to_client, want);
            assert_eq!(
                series("stunnerd_offload_bytes_total", "to_peer"),
                want * 120.0
            );
            // The listener and cluster counters include what the kernel relayed.
            assert!(listener("stunner_listener_packets_total", "rx") >= want + clients as f64);
            assert!(listener("stunner_listener_packets_total", "tx") >= want + clients as f64);
            let cluster = scrape(
                METRICS,
                "stunner_cluster_packets_total{direction=\"tx\",name=\"local\"}",
            );
            assert_eq!(cluster, Some(want));
            println!(
                "measured: {engine}: {to_peer} datagrams to peers and {to_client} to clients relayed in the kernel, 0 lost"
            );
        }
    }
}

#[test]
fn aioice_relays_with_the_offload_on() {
    in_netns(module_path!(), "aioice_relays_with_the_offload_on", || {
        if !bpf_built() {
            return;
        }
        let conf = write_config(&config("TC", &["127.0.0.0/8"]));
        let mut p = start(&conf);
        let _peer = start_peer(3480);
        let script = repo_root().join("tests/python/aioice_scenario.py");
        let mut cmd = Command::new("timeout");
        cmd.arg("50")
            .arg(python())
            .arg(&script)
            .args(["--server", "127.0.0.1:3478", "--transport", "udp"])
            .args([
                "--peer",
                "127.0.0.1:3480",
                "--forbidden-peer",
                "192.0.2.1:9",
            ])
            .args(["--stranger-ip", "127.0.0.2", "--timeout", "40"])
            .args(["--username", USER, "--password", PASS])
            .env("PYTHONUNBUFFERED", "1");
        let out = run_with_timeout(cmd, Duration::from_secs(55));
        p.assert_running("after aioice");
        let text = out.combined();
        for step in [
            "allocate",
            "channel_bind",
            "channel_data",
            "refresh",
            "deallocate",
        ] {
            assert!(
                text.contains(&format!("STEP {step} OK")),
                "step {step}:\n{text}\n{}",
                tail(&p.log(), 30)
            );
        }
        assert_eq!(out.code(), Some(0), "{text}");
        assert!(
            wait_for(Duration::from_secs(3), || series(
                "stunnerd_offload_packets_total",
                "to_peer"
            ) >= 1.0
                && series("stunnerd_offload_packets_total", "to_client") >= 1.0),
            "aioice's ChannelData did not go through the kernel\n{text}"
        );
    });
}

// ----- revocation ------------------------------------------------------------------------

/// A client with a channel (0x4000) to a peer socket of the test, relayed in the kernel.
struct Relayed {
    client: TurnClient,
    peer: UdpSocket,
}

fn relayed() -> Relayed {
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut client = TurnClient::new(local(PORT), USER, PASS);
    client.allocate().expect("allocate");
    let peer_addr = peer.local_addr().expect("peer addr");
    client
        .channel_bind(0x4000, peer_addr)
        .expect("channel bind");
    if !channel_roundtrip(&client, 0x4000, &peer, b"before") {
        let m = http_get(METRICS, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let m: Vec<&str> = m
            .lines()
            .filter(|l| {
                l.contains("offload") || l.contains("listener_packets") || l.contains("dropped")
            })
            .collect();
        panic!("no round trip before the revocation:\n{}", m.join("\n"));
    }
    assert!(
        wait_for(Duration::from_secs(2), || scrape(
            METRICS,
            "stunnerd_offload_entries"
        ) == Some(1.0)),
        "the channel was not offloaded"
    );
    Relayed { client, peer }
}

impl Relayed {
    /// Whether one datagram client -> peer arrives (within 100 ms).
    fn reaches_peer(&self, tag: u32) -> bool {
        let payload = tag.to_be_bytes();
        self.client.send_channel(0x4000, &payload);
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            match self.peer.recv_from(&mut buf) {
                Ok((n, _)) if buf[..n] == payload => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Whether one datagram peer -> relay reaches the client.
    fn reaches_client(&self) -> bool {
        let Some(relay) = self.client.relayed else {
            return false;
        };
        let _ = self.peer.send_to(b"back", relay);
        self.client
            .recv_channel(0x4000, Duration::from_millis(100))
            .is_some()
    }
}

/// After the revocation started at `t0`, relaying must stop within 1 s and stay stopped.
fn assert_stops(r: &Relayed, t0: Instant, what: &str) {
    let mut tag = 0;
    let stopped = loop {
        tag += 1;
        if !r.reaches_peer(tag) {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{what}: still relaying {:?} after",
            t0.elapsed()
        );
    };
    for _ in 0..5 {
        tag += 1;
        assert!(!r.reaches_peer(tag), "{what}: relaying resumed");
    }
    assert!(!r.reaches_client(), "{what}: peer -> client still relayed");
    println!("measured: {what}: relaying stopped {stopped:?} after the revocation began");
}

#[test]
fn a_reload_that_removes_the_route_stops_kernel_relaying() {
    in_netns(
        module_path!(),
        "a_reload_that_removes_the_route_stops_kernel_relaying",
        || reload_stops("TC"),
    );
}

#[test]
fn a_reload_that_removes_the_route_stops_xdp_relaying() {
    in_netns(
        module_path!(),
        "a_reload_that_removes_the_route_stops_xdp_relaying",
        || reload_stops("XDP"),
    );
}

#[test]
fn refresh_zero_stops_kernel_relaying() {
    in_netns(module_path!(), "refresh_zero_stops_kernel_relaying", || {
        refresh_zero_stops("TC")
    });
}

#[test]
fn refresh_zero_stops_xdp_relaying() {
    in_netns(module_path!(), "refresh_zero_stops_xdp_relaying", || {
        refresh_zero_stops("XDP")
    });
}

/// A reload whose routes no longer admit the peer stops `engine`'s relaying within 1 s.
fn reload_stops(engine: &str) {
    if !bpf_built() {
        return;
    }
    let conf = write_config(&config(engine, &["127.0.0.1/32"]));
    let _p = start(&conf);
    let r = relayed();
    let t0 = Instant::now();
    write_atomic(&conf, &config(engine, &["192.0.2.0/24"]));
    assert!(wait_generation(METRICS, 2, Duration::from_secs(5)));
    assert_stops(&r, t0, &format!("{engine}: reload"));
    assert!(wait_for(Duration::from_secs(2), || scrape(
        METRICS,
        "stunnerd_offload_entries"
    ) == Some(0.0)));
}

/// Refresh(0) stops `engine`'s relaying within 1 s.
fn refresh_zero_stops(engine: &str) {
    if !bpf_built() {
        return;
    }
    let conf = write_config(&config(engine, &["127.0.0.1/32"]));
    let _p = start(&conf);
    let mut r = relayed();
    let t0 = Instant::now();
    r.client.refresh(0).expect("refresh 0");
    assert_stops(&r, t0, &format!("{engine}: Refresh(0)"));
}

#[test]
fn sigkill_of_the_daemon_detaches_xdp() {
    in_netns(module_path!(), "sigkill_of_the_daemon_detaches_xdp", || {
        if !bpf_built() {
            return;
        }
        let conf = write_config(&config("XDP", &["127.0.0.1/32"]));
        let mut p = start(&conf);
        let r = relayed();
        assert!(lo_has_xdp(), "XDP is not attached to lo");
        let t0 = Instant::now();
        signal(p.pid(), "KILL");
        assert!(p.wait_exit(Duration::from_secs(5)).is_some());
        assert_stops(&r, t0, "XDP: SIGKILL");
        // The XDP bpf_link ended with its process.
        assert!(
            wait_for(Duration::from_secs(1), || !lo_has_xdp()),
            "an XDP program is still attached to lo"
        );
    });
}

/// Whether `ip link` shows an XDP program on `lo`.
fn lo_has_xdp() -> bool {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "dev", "lo"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn a_session_kill_stops_kernel_relaying() {
    in_netns(
        module_path!(),
        "a_session_kill_stops_kernel_relaying",
        || {
            if !bpf_built() {
                return;
            }
            let conf = write_config(&config("TC", &["127.0.0.1/32"]));
            let _p = start(&conf);
            let r = relayed();
            let t0 = Instant::now();
            let mut cmd = Command::new(stunnerd_bin());
            cmd.args(["sessions", "kill", "--user", USER, "--endpoint"])
                .arg(format!("http://127.0.0.1:{HEALTH}"))
                .env_remove("STUNNERD_ADMIN_TOKEN")
                .env_remove("STUNNERD_ADMIN_TOKEN_FILE");
            let out = run_with_timeout(cmd, Duration::from_secs(10));
            assert_eq!(out.code(), Some(0), "{}", out.combined());
            assert_stops(&r, t0, "session kill");
        },
    );
}

#[test]
fn sigkill_of_the_daemon_stops_kernel_relaying() {
    in_netns(
        module_path!(),
        "sigkill_of_the_daemon_stops_kernel_relaying",
        || {
            if !bpf_built() {
                return;
            }
            let conf = write_config(&config("TC", &["127.0.0.1/32"]));
            let mut p = start(&conf);
            let r = relayed();
            let t0 = Instant::now();
            signal(p.pid(), "KILL");
            assert!(p.wait_exit(Duration::from_secs(5)).is_some());
            assert_stops(&r, t0, "SIGKILL");
            // Nothing of ours is left on lo: a tcx link ends with its process.
            let out = Command::new("tc")
                .args(["filter", "show", "dev", "lo", "ingress"])
                .output();
            if let Ok(out) = out {
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(!text.contains("stunnerd"), "stale filter: {text}");
            }
        },
    );
}

#[test]
fn tc_without_kernel_support_refuses_the_config_and_auto_falls_back() {
    // Without the program (a build without clang) TC must be refused naming the field and
    // Auto must run in user space; with it, both run. Either way the daemon answers.
    in_netns(
        module_path!(),
        "tc_without_kernel_support_refuses_the_config_and_auto_falls_back",
        || {
            let conf = write_config(&config("Auto", &["127.0.0.1/32"]));
            let mut p = start(&conf);
            let status = status_json(HEALTH).expect("status");
            let engine = status["admin"]["offload"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
            peer.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let mut client = TurnClient::new(local(PORT), USER, PASS);
            client.allocate().expect("allocate");
            client
                .channel_bind(0x4000, peer.local_addr().expect("addr"))
                .expect("bind");
            assert!(channel_roundtrip(&client, 0x4000, &peer, b"auto"));
            if cfg!(stunnerd_bpf) {
                // Auto prefers TC (correct checksum bookkeeping on every interface).
                assert_eq!(engine, "TC[all]");
                assert!(
                    wait_for(Duration::from_secs(3), || {
                        channel_roundtrip(&client, 0x4000, &peer, b"auto")
                            && series("stunnerd_offload_packets_total", "to_peer") >= 1.0
                    }),
                    "Auto's engine relayed nothing"
                );
            } else {
                assert_eq!(engine, "None[all]");
                p.kill();
                let conf = write_config(&config("TC", &["127.0.0.1/32"]));
                let out = run_with_timeout(
                    {
                        let mut c = Command::new(stunnerd_bin());
                        c.arg("-c").arg(format!("file://{}", conf.display()));
                        c
                    },
                    Duration::from_secs(10),
                );
                assert_ne!(out.code(), Some(0));
                assert!(
                    out.combined().contains("admin.offload_engine"),
                    "{}",
                    out.combined()
                );
            }
        },
    );
}

#[test]
fn xdp_that_cannot_attach_refuses_the_config_and_auto_falls_back_through_tc() {
    in_netns(
        module_path!(),
        "xdp_that_cannot_attach_refuses_the_config_and_auto_falls_back_through_tc",
        || {
            if !bpf_built() {
                return;
            }
            let on = |engine: &str| {
                let mut c: serde_json::Value =
                    serde_json::from_str(&config(engine, &["127.0.0.1/32"])).expect("json");
                c["admin"]["offload_interfaces"] = json!(["nosuch0"]);
                write_config(&c.to_string())
            };
            // XDP where it cannot attach: refused, naming the field.
            let conf = on("XDP");
            let mut c = Command::new(stunnerd_bin());
            c.arg("-c").arg(format!("file://{}", conf.display()));
            let out = run_with_timeout(c, Duration::from_secs(10));
            assert_ne!(out.code(), Some(0), "{}", out.combined());
            assert!(
                out.combined()
                    .contains("admin.offload_engine: XDP offload unavailable"),
                "{}",
                out.combined()
            );
            // Auto: TC fails, then XDP, then user space, one line each.
            let conf = on("Auto");
            let p = start(&conf);
            let status = status_json(HEALTH).expect("status");
            assert_eq!(status["admin"]["offload"], "None[nosuch0]", "{status}");
            let log = p.log();
            assert_eq!(
                log.matches("offload: Auto: TC unavailable").count(),
                1,
                "{log}"
            );
            assert!(log.contains("trying XDP"), "{log}");
            assert_eq!(
                log.matches("offload: Auto: kernel offload unavailable")
                    .count(),
                1,
                "{log}"
            );
        },
    );
}
