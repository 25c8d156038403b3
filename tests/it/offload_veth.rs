//! The kernel fast path beyond loopback: three network namespaces joined by two veth pairs,
//!
//! ```text
//!   client ns            server ns (this test's own)              peer ns
//!   c-srv 198.18.1.2 --- s-cli 198.18.1.1   s-peer 198.18.2.1 --- p-srv 198.18.2.2
//!         fd00:14:1::2         fd00:14:1::1        fd00:14:2::1         fd00:14:2::2
//! ```
//!
//! stunnerd runs in the server ns with TURN-UDP listeners on its client-side addresses and
//! `offload_engine: TC` on both veths; `turnutils_uclient` (channels) in the client ns
//! relays to `turnutils_peer` in the peer ns, over IPv4 and IPv6. The rewritten datagrams
//! leave the server through the other veth (bpf_fib_lookup + bpf_redirect_neigh), and the
//! receiving stacks verify their checksums: transmit checksum offload is off on every veth
//! (ethtool), so each datagram carries a full checksum that the receiver checks in software
//! (a bad one is dropped and counted in InCsumErrors), and an AF_PACKET capture in the client
//! and peer namespaces recomputes every checksum as well. Needs root; skips only when this
//! build has no eBPF program.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::netns::{Netns, in_netns};
use crate::common::*;
use crate::ops_util::*;

/// The IPv4 listener's port; the IPv6 listener's is the next one (two wildcard listeners
/// on one port would share the datagrams of both families).
const PORT: u16 = 3478;
const PEER_PORT: u16 = 3480;
const HEALTH: u16 = 8086;
const METRICS: u16 = 9090;

const V4: Family = Family {
    name: "IPv4",
    server_client_side: "198.18.1.1",
    client: "198.18.1.2",
    server_peer_side: "198.18.2.1",
    peer: "198.18.2.2",
    client_net: "198.18.1.0/24",
    prefix: 24,
    port: PORT,
};
const V6: Family = Family {
    name: "IPv6",
    server_client_side: "fd00:14:1::1",
    client: "fd00:14:1::2",
    server_peer_side: "fd00:14:2::1",
    peer: "fd00:14:2::2",
    client_net: "fd00:14:1::/64",
    prefix: 64,
    port: PORT + 1,
};

struct Family {
    name: &'static str,
    server_client_side: &'static str,
    client: &'static str,
    server_peer_side: &'static str,
    peer: &'static str,
    client_net: &'static str,
    prefix: u8,
    /// The listener's port.
    port: u16,
}

impl Family {
    fn v6(&self) -> bool {
        self.peer.contains(':')
    }

    fn sock(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }
}

/// Whether this build carries the eBPF program; says so when it does not.
fn bpf_built() -> bool {
    if cfg!(stunnerd_bpf) {
        return true;
    }
    eprintln!("SKIP: this build has no eBPF program (clang/libbpf-dev missing at build time)");
    false
}

/// `ip ARGS` in this (the server) namespace.
fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// Run `bin ARGS` in `ns` (None: this namespace) and require success.
fn run_in(ns: Option<&Netns>, bin: &Path, args: &[&str]) {
    let mut cmd = match ns {
        Some(ns) => ns.command(bin),
        None => Command::new(bin),
    };
    let out = run_with_timeout(
        {
            cmd.args(args);
            cmd
        },
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(0), "{bin:?} {args:?}: {}", out.combined());
}

/// The client and peer namespaces, joined to this one by `s-cli`/`c-srv` and `s-peer`/
/// `p-srv`, addressed as the module doc shows, checksum offload off on all four ends.
struct Topology {
    client: Netns,
    peer: Netns,
}

fn topology() -> Topology {
    let client = Netns::create("vclient");
    let peer = Netns::create("vpeer");
    ip(&[
        "link", "add", "s-cli", "type", "veth", "peer", "name", "c-srv", "netns", &client.0,
    ]);
    ip(&[
        "link", "add", "s-peer", "type", "veth", "peer", "name", "p-srv", "netns", &peer.0,
    ]);
    for f in [&V4, &V6] {
        let p = f.prefix.to_string();
        let addr = |a: &str| format!("{a}/{p}");
        let nodad: &[&str] = if f.v6() { &["nodad"] } else { &[] };
        let add = |ns: Option<&Netns>, a: &str, dev: &str| {
            let a = addr(a);
            let mut args = vec!["addr", "add", a.as_str(), "dev", dev];
            args.extend_from_slice(nodad);
            match ns {
                Some(ns) => ns.ip(&args),
                None => ip(&args),
            }
        };
        add(None, f.server_client_side, "s-cli");
        add(None, f.server_peer_side, "s-peer");
        add(Some(&client), f.client, "c-srv");
        add(Some(&peer), f.peer, "p-srv");
    }
    ip(&["link", "set", "s-cli", "up"]);
    ip(&["link", "set", "s-peer", "up"]);
    client.ip(&["link", "set", "c-srv", "up"]);
    peer.ip(&["link", "set", "p-srv", "up"]);
    // The peer answers the relayed address (the listener's, on the client side) through the
    // server; the client only talks to the listener, which is on its link.
    peer.ip(&["route", "add", V4.client_net, "via", V4.server_peer_side]);
    peer.ip(&[
        "-6",
        "route",
        "add",
        V6.client_net,
        "via",
        V6.server_peer_side,
    ]);
    // Every datagram carries a full checksum, which the receiver verifies in software.
    let ethtool = require_tool("ethtool");
    run_in(None, &ethtool, &["-K", "s-cli", "tx", "off"]);
    run_in(None, &ethtool, &["-K", "s-peer", "tx", "off"]);
    run_in(Some(&client), &ethtool, &["-K", "c-srv", "tx", "off"]);
    run_in(Some(&peer), &ethtool, &["-K", "p-srv", "tx", "off"]);
    Topology { client, peer }
}

/// Forwarding in this namespace (bpf_fib_lookup answers only for interfaces that forward).
fn set_forwarding(on: bool) {
    let v = if on { "1" } else { "0" };
    std::fs::write("/proc/sys/net/ipv4/ip_forward", v).expect("ip_forward");
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", v).expect("ipv6 forwarding");
}

fn config(engine: &str) -> String {
    let listener = |name: &str, f: &Family| {
        json!({"name": name, "protocol": "TURN-UDP", "address": f.server_client_side,
               "port": f.port, "routes": ["peers"]})
    };
    json!({
        "version": "v1",
        "admin": {"name": "offload-veth", "loglevel": "all:INFO",
                  "healthcheck_endpoint": format!("http://127.0.0.1:{HEALTH}"),
                  "metrics_endpoint": format!("http://127.0.0.1:{METRICS}/metrics"),
                  "offload_engine": engine,
                  "offload_interfaces": ["s-cli", "s-peer"]},
        "auth": {"type": "static", "realm": REALM,
                 "credentials": {"username": USER, "password": PASS}},
        "listeners": [listener("udp4", &V4), listener("udp6", &V6)],
        "clusters": [{"name": "peers", "type": "STATIC",
                      "endpoints": [format!("{}/32", V4.peer), format!("{}/128", V6.peer)]}],
    })
    .to_string()
}

/// Whether the listener on `ip` answers a Binding request (from the same address: the
/// listener socket is a wildcard one, which answers from the address the route prefers).
fn stun_answers(f: &Family) -> bool {
    let ip = f.server_client_side;
    let sock = UdpSocket::bind(Family::sock(ip, 0)).expect("probe socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 512];
    (0..50).any(|_| {
        let (req, tid) = binding_request();
        let _ = sock.send_to(&req, Family::sock(ip, f.port));
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 20 && buf[8..20] == tid)
    })
}

/// `turnutils_peer` on `ip` in the peer namespace, echoing (probed from here, routed).
fn start_peer_in(ns: &Netns, ip: &str) -> Proc {
    let mut cmd = ns.command(&require_tool("turnutils_peer"));
    cmd.args(["-L", ip, "-p", &PEER_PORT.to_string()]);
    let mut p = Proc::spawn(&format!("turnutils_peer {ip}"), cmd);
    let addr = Family::sock(ip, PEER_PORT);
    let any = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = UdpSocket::bind(any).expect("probe socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    let echoed = (0..50).any(|_| {
        let _ = sock.send_to(b"probe", addr);
        matches!(sock.recv_from(&mut buf), Ok((5, from)) if from == addr)
    });
    if !echoed {
        p.assert_running("turnutils_peer");
        panic!("turnutils_peer on {addr} does not echo\n{}", p.log());
    }
    p
}

/// UDP counters of a namespace: (InDatagrams, InCsumErrors) for IPv4 and IPv6, and IPv4's
/// InHdrErrors (a bad IP header checksum).
#[derive(Debug, Clone, Copy, Default)]
struct Snmp {
    udp_in: u64,
    udp_csum: u64,
    udp6_in: u64,
    udp6_csum: u64,
    ip_hdr_errors: u64,
}

fn snmp(ns: &Netns) -> Snmp {
    let read = |file: &str| {
        let out = run_with_timeout(
            {
                let mut c = ns.command(Path::new("cat"));
                c.arg(file);
                c
            },
            Duration::from_secs(5),
        );
        assert_eq!(out.code(), Some(0), "cat {file}");
        out.stdout
    };
    // /proc/net/snmp: a header line and a value line per protocol.
    let text = read("/proc/net/snmp");
    let lines: Vec<&str> = text.lines().collect();
    let field = |proto: &str, name: &str| -> u64 {
        let rows: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{proto}:")))
            .collect();
        let (head, vals) = (rows[0], rows[1]);
        let i = head
            .split_whitespace()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{proto} {name} in /proc/net/snmp"));
        vals.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    let text6 = read("/proc/net/snmp6");
    let field6 = |name: &str| -> u64 {
        text6
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                (k == name).then(|| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{name} in /proc/net/snmp6"))
    };
    Snmp {
        udp_in: field("Udp", "InDatagrams"),
        udp_csum: field("Udp", "InCsumErrors"),
        udp6_in: field6("Udp6InDatagrams"),
        udp6_csum: field6("Udp6InCsumErrors"),
        ip_hdr_errors: field("Ip", "InHdrErrors"),
    }
}

/// An AF_PACKET capture of `iface` in `ns` that recomputes every UDP checksum to/from `port`.
struct Capture(Proc);

impl Capture {
    fn start(ns: &Netns, iface: &str, port: u16) -> Capture {
        let script = repo_root().join("tests/python/udp_csum_capture.py");
        let mut cmd = ns.command(&python());
        cmd.arg(&script)
            .args(["--iface", iface, "--port", &port.to_string()])
            .args(["--seconds", "90"])
            .env("PYTHONUNBUFFERED", "1");
        let mut p = Proc::spawn(&format!("capture {iface}"), cmd);
        if !wait_for(Duration::from_secs(10), || p.log().contains("READY")) {
            p.assert_running("capture");
            panic!("capture on {iface} not ready\n{}", p.log());
        }
        Capture(p)
    }

    /// Stop it (once what it should see has arrived); its counts.
    fn finish(mut self) -> serde_json::Value {
        signal(self.0.pid(), "TERM");
        let st = self.0.wait_exit(Duration::from_secs(30));
        let log = self.0.log();
        assert!(st.is_some_and(|s| s.success()), "capture: {st:?}\n{log}");
        let line = log
            .lines()
            .find_map(|l| l.strip_prefix("CAPTURE "))
            .unwrap_or_else(|| panic!("no CAPTURE line\n{log}"));
        serde_json::from_str(line).unwrap()
    }
}

fn offload(name: &str, direction: &str) -> f64 {
    scrape(METRICS, &format!("{name}{{direction=\"{direction}\"}}")).unwrap_or(0.0)
}

fn fallbacks(reason: &str) -> f64 {
    scrape(
        METRICS,
        &format!("stunnerd_offload_fallbacks_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// `turnutils_uclient` in the client namespace: `clients` x `messages` over channels to
/// the peer of `f`; (sent, received, lost %, output).
fn uclient(
    t: &Topology,
    f: &Family,
    clients: u64,
    messages: u64,
) -> (u64, u64, Option<f64>, String) {
    let mut cmd = t.client.command(Path::new("timeout"));
    cmd.arg("60").arg(require_tool("turnutils_uclient"));
    cmd.args(["-e", f.peer, "-r", &PEER_PORT.to_string()])
        .args(["-p", &f.port.to_string(), "-u", USER, "-w", PASS])
        .args(["-m", &clients.to_string(), "-n", &messages.to_string()])
        .args(["-l", "120", "-z", "5", "-c", "-v"]);
    if f.v6() {
        cmd.arg("-x"); // REQUESTED-ADDRESS-FAMILY IPv6 (RFC 6156)
    }
    cmd.arg(f.server_client_side);
    let out = run_with_timeout(cmd, Duration::from_secs(75));
    let text = format!("exit {:?}\n{}", out.code(), out.combined());
    let (totals, lost) = parse_uclient_output(&text);
    let (sent, recv) = totals.unwrap_or((0, 0));
    (sent, recv, lost, text)
}

/// Relay `clients` x `messages` for family `f` with the offload forwarding, and check what
/// the receivers saw.
fn relay_through_the_kernel(t: &Topology, p: &mut Proc, f: &Family) {
    let (clients, messages) = (2u64, 300u64);
    let want = clients * messages;
    let (c0, p0) = (snmp(&t.client), snmp(&t.peer));
    let (to_peer0, to_client0) = (
        offload("stunnerd_offload_packets_total", "to_peer"),
        offload("stunnerd_offload_packets_total", "to_client"),
    );
    let cap_client = Capture::start(&t.client, "c-srv", f.port);
    let cap_peer = Capture::start(&t.peer, "p-srv", PEER_PORT);
    let (sent, recv, lost, text) = uclient(t, f, clients, messages);
    p.assert_running("after uclient");
    assert!(
        sent == want && recv == sent && lost == Some(0.0),
        "{}: sent {sent} received {recv} lost {lost:?}\n{}\n{}",
        f.name,
        tail(&text, 30),
        tail(&p.log(), 30)
    );
    // The kernel's counters are read back when the channels go (Refresh 0) and published.
    let moved = wait_for(Duration::from_secs(5), || {
        scrape(METRICS, "stunnerd_offload_entries") == Some(0.0)
            && offload("stunnerd_offload_packets_total", "to_client") > to_client0
    });
    let to_peer = offload("stunnerd_offload_packets_total", "to_peer") - to_peer0;
    let to_client = offload("stunnerd_offload_packets_total", "to_client") - to_client0;
    assert!(
        moved && to_peer >= want as f64 * 0.9 && to_client >= want as f64 * 0.9,
        "{}: the kernel relayed {to_peer} to peers and {to_client} to clients of {want}\n{}",
        f.name,
        tail(&p.log(), 30)
    );
    let (c1, p1) = (snmp(&t.client), snmp(&t.peer));
    let (cc, cp) = (cap_client.finish(), cap_peer.finish());
    // The receivers verified every checksum: nothing counted as bad, everything delivered.
    let (rx_client, rx_peer, csum_client, csum_peer) = if f.v6() {
        (
            c1.udp6_in - c0.udp6_in,
            p1.udp6_in - p0.udp6_in,
            c1.udp6_csum - c0.udp6_csum,
            p1.udp6_csum - p0.udp6_csum,
        )
    } else {
        (
            c1.udp_in - c0.udp_in,
            p1.udp_in - p0.udp_in,
            c1.udp_csum - c0.udp_csum,
            p1.udp_csum - p0.udp_csum,
        )
    };
    assert_eq!(
        (csum_client, csum_peer),
        (0, 0),
        "{}: UDP checksum errors",
        f.name
    );
    assert_eq!(
        (
            c1.ip_hdr_errors - c0.ip_hdr_errors,
            p1.ip_hdr_errors - p0.ip_hdr_errors
        ),
        (0, 0),
        "{}: IP header errors",
        f.name
    );
    assert!(
        rx_client >= want && rx_peer >= want,
        "{}: {rx_client} {rx_peer}",
        f.name
    );
    let key = if f.v6() { "v6" } else { "v4" };
    for (who, c) in [("client", &cc), ("peer", &cp)] {
        assert!(
            c[key].as_u64().unwrap() >= want
                && c["bad"] == 0
                && c["bad_ip"] == 0
                && c["partial"] == 0
                && c["zero"] == 0,
            "{}: capture at the {who}: {c}",
            f.name
        );
    }
    println!(
        "measured: {}: {sent} sent, {recv} echoed, 0 lost; kernel relayed {to_peer} to the peer \
         and {to_client} to the clients across the veths; receivers took {rx_peer} (peer) and \
         {rx_client} (client) datagrams with 0 checksum errors; capture recomputed {} (peer) and \
         {} (client) checksums, 0 bad",
        f.name, cp["udp"], cc["udp"]
    );
}

#[test]
fn relays_across_veth_namespaces_with_verified_checksums() {
    in_netns(
        module_path!(),
        "relays_across_veth_namespaces_with_verified_checksums",
        || across_veth("TC"),
    );
}

#[test]
fn xdp_relays_across_veth_namespaces_with_verified_checksums() {
    in_netns(
        module_path!(),
        "xdp_relays_across_veth_namespaces_with_verified_checksums",
        || across_veth("XDP"),
    );
}

/// Both families relayed by `engine` across the veths, checksums verified; without
/// forwarding everything falls back to user space as no_route.
fn across_veth(engine: &str) {
    {
        {
            if !bpf_built() {
                return;
            }
            let t = topology();
            set_forwarding(false);
            let conf = write_config(&config(engine));
            let args = vec!["-c".to_string(), format!("file://{}", conf.display())];
            let mut p = start_stunnerd("stunnerd-offload-veth", &args, &[]);
            for f in [&V4, &V6] {
                if !stun_answers(f) {
                    p.assert_running("start");
                    panic!("no STUN answer on {}\n{}", f.server_client_side, p.log());
                }
            }
            assert!(wait_generation(METRICS, 1, Duration::from_secs(5)));
            let _peer4 = start_peer_in(&t.peer, V4.peer);
            let _peer6 = start_peer_in(&t.peer, V6.peer);

            // Forwarding off in the server: the route lookup fails, so the kernel passes the
            // datagrams up untouched and user space relays them, counted as no_route.
            let no_route0 = fallbacks("no_route");
            let to_peer0 = offload("stunnerd_offload_packets_total", "to_peer");
            let (sent, recv, lost, text) = uclient(&t, &V4, 1, 50);
            assert!(
                sent == 50 && recv == 50 && lost == Some(0.0),
                "without forwarding: sent {sent} received {recv}\n{}",
                tail(&text, 30)
            );
            assert!(
                wait_for(Duration::from_secs(3), || fallbacks("no_route")
                    >= no_route0 + 50.0),
                "no_route fallbacks: {}",
                fallbacks("no_route")
            );
            assert_eq!(
                offload("stunnerd_offload_packets_total", "to_peer"),
                to_peer0,
                "nothing can be relayed in the kernel without a route"
            );
            println!(
                "measured: forwarding off: 50/50 relayed by user space, {} no_route fallbacks",
                fallbacks("no_route") - no_route0
            );

            set_forwarding(true);
            let started = Instant::now();
            relay_through_the_kernel(&t, &mut p, &V4);
            relay_through_the_kernel(&t, &mut p, &V6);
            println!(
                "measured: {engine}: both families in {:?}",
                started.elapsed()
            );
            if engine == "XDP" {
                // Generic mode: a native-mode redirect into a veth whose peer runs no XDP
                // would be lost.
                for dev in ["s-cli", "s-peer"] {
                    let out = Command::new("ip")
                        .args(["-d", "link", "show", "dev", dev])
                        .output()
                        .expect("ip link");
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert!(text.contains("xdpgeneric"), "{dev}: {text}");
                }
            }
            let status = status_json(HEALTH).expect("status");
            assert_eq!(
                status["admin"]["offload"],
                format!("{engine}[s-cli,s-peer]"),
                "{status}"
            );
            p.assert_running("end");
        }
    }
}
