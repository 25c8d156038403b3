//! The hostile suite's probes as a measurement of a chosen server: our `stunnerd` with its
//! defaults, or Debian's coturn (`turnserver`) with its default configuration plus what it
//! needs to run at all. Nothing here asserts an outcome: each probe prints what it observed
//! as `CELL<TAB>row<TAB>text` lines, and `scripts/hostile-compare.sh` puts both servers'
//! lines side by side (docs/security.md). The test is ignored; the script runs it with
//! `--ignored`, once per server and probe, each time in a network namespace of its own that
//! it made (the run refuses to start anywhere else, since it binds fixed ports and floods).
//!
//! The probes are those of `hostile.rs` (and `transports.rs`'s large datagrams), with the
//! same traffic and the same descriptor limits; where `hostile.rs` reads a stunnerd metric,
//! this reads something both servers have: a STUN Binding answered, the daemon's descriptors
//! and memory in `/proc`, datagrams arriving at the peer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stunnerd::stun::{Method, attr};

use crate::common::*;
use crate::hostile::{StreamTurn, burst_bytes, flood, legit_uclient, other_user_uclient};
use crate::ops_util::*;

/// Both servers listen here: TURN over UDP and TCP on 3478, TLS on 5349 (coturn's defaults).
const PORT: u16 = 3478;
const TLS_PORT: u16 = 5349;
/// stunnerd's health and metrics servers.
const HEALTH: u16 = 8086;
const METRICS: u16 = 8080;
/// turnutils_peer (UDP echo on this port and the next).
const PEER: u16 = 9000;
/// The descriptor limit of the probes that are not about descriptors.
const NOFILE: u32 = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Stunnerd,
    Coturn,
}

/// The server under test, started under `prlimit --nofile=N:N`; killed (by PID) on drop.
struct Target {
    kind: Kind,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Target {
    fn start(kind: Kind, nofile: u32) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}")).arg("--");
        match kind {
            Kind::Stunnerd => {
                let l = |name: &str, proto: &str, port: u16| {
                    serde_json::json!({"name": name, "protocol": proto,
                        "address": "127.0.0.1", "port": port, "routes": ["local"],
                        "cert": cert.to_str().unwrap(), "key": key.to_str().unwrap()})
                };
                let config = serde_json::json!({
                    "version": "v1",
                    "admin": {"name": "hostile-compare",
                              "healthcheck_endpoint": format!("http://127.0.0.1:{HEALTH}"),
                              "metrics_endpoint": format!("http://127.0.0.1:{METRICS}/metrics")},
                    "auth": {"type": "static", "realm": REALM,
                             "credentials": {"users": [{"username": USER, "password": PASS},
                                                       {"username": "other", "password": "other-pass"}]}},
                    "listeners": [l("udp", "TURN-UDP", PORT), l("tcp", "TURN-TCP", PORT),
                                  l("tls", "TURN-TLS", TLS_PORT)],
                    "clusters": [{"name": "local", "endpoints": ["127.0.0.1/32"]}],
                });
                let path = dir.path().join("stunnerd.json");
                std::fs::write(&path, config.to_string()).unwrap();
                let bin = std::env::var_os("HOSTILE_STUNNERD")
                    .map_or_else(stunnerd_bin, std::path::PathBuf::from);
                cmd.arg(bin).arg("-c").arg(&path);
            }
            Kind::Coturn => {
                // Debian's /etc/turnserver.conf (syslog, no-rfc5780,
                // no-stun-backward-compatibility, response-origin-only-with-rfc5780), plus
                // what it takes to run here: a listening address (coturn skips loopback when
                // it picks addresses itself, and a namespace has nothing else), users and a
                // realm, a certificate for TLS, loopback peers (the echo peer is on
                // loopback), no CLI (coturn refuses loopback peers with a password-less CLI),
                // and its pid file and user database out of /var.
                cmd.arg(require_tool("turnserver")).args([
                    "-c",
                    "/etc/turnserver.conf",
                    "--listening-ip=127.0.0.1",
                    "--lt-cred-mech",
                    &format!("--realm={REALM}"),
                    &format!("--user={USER}:{PASS}"),
                    "--user=other:other-pass",
                    &format!("--cert={}", cert.display()),
                    &format!("--pkey={}", key.display()),
                    "--allow-loopback-peers",
                    "--no-cli",
                    &format!("--pidfile={}", dir.path().join("turnserver.pid").display()),
                    &format!("--userdb={}", dir.path().join("turndb").display()),
                ]);
            }
        }
        let mut proc = Proc::spawn(&format!("{kind:?}"), cmd);
        if let Err(e) = wait_udp_ready(local(PORT)) {
            proc.assert_running("start");
            panic!("{kind:?} does not answer on UDP: {e}\n{}", proc.log());
        }
        assert!(
            wait_for(Duration::from_secs(5), || TcpStream::connect(local(
                TLS_PORT
            ))
            .is_ok()),
            "{kind:?} does not listen for TLS\n{}",
            proc.log()
        );
        Target {
            kind,
            proc,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Descriptors the daemon holds.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Peak resident memory (VmHWM), KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// "" while running, else a note that it exited.
    fn exited(&mut self) -> String {
        match self.proc.try_status() {
            None => String::new(),
            Some(st) => format!(" ({:?} EXITED: {st})", self.kind),
        }
    }
}

/// One cell of the table.
fn cell(row: &str, text: &str) {
    println!("CELL\t{row}\t{text}");
}

/// A STUN Binding over UDP from a fresh socket, answered within `wait`.
fn binding_udp(wait: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let (req, tid) = binding_request();
    if sock.send_to(&req, local(PORT)).is_err() {
        return false;
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            if n >= 20 && buf[8..20] == tid {
                return true;
            }
        }
    }
    false
}

/// A new TCP connection that gets a STUN Binding answered within 2 s.
fn binding_tcp() -> bool {
    let Ok(mut t) = TcpStream::connect_timeout(&local(PORT), Duration::from_secs(2)) else {
        return false;
    };
    let (req, tid) = binding_request();
    let _ = t.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 20];
    t.write_all(&req).is_ok() && t.read_exact(&mut head).is_ok() && head[8..20] == tid
}

/// What the watcher saw of one check: slowest answer, failures, polls.
#[derive(Default, Clone, Copy)]
struct Watched {
    slowest: Duration,
    failed: u32,
    polls: u32,
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} failed, slowest {} ms",
            self.failed,
            self.polls,
            self.slowest.as_millis()
        )
    }
}

/// Polls every 100 ms until stopped (at most 180 s): a STUN Binding over UDP (answered
/// within 1 s) and, for stunnerd, `/live` and `/metrics` (200).
fn watch(kind: Kind, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Watched, Option<Watched>)> {
    std::thread::spawn(move || {
        let (mut stun, mut admin) = (Watched::default(), Watched::default());
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let t = Instant::now();
            stun.polls += 1;
            if !binding_udp(Duration::from_secs(1)) {
                stun.failed += 1;
            }
            stun.slowest = stun.slowest.max(t.elapsed());
            if kind == Kind::Stunnerd {
                for (port, path) in [(HEALTH, "/live"), (METRICS, "/metrics")] {
                    let t = Instant::now();
                    admin.polls += 1;
                    if http_get(port, path).is_none_or(|(s, _)| s != 200) {
                        admin.failed += 1;
                    }
                    admin.slowest = admin.slowest.max(t.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (stun, (kind == Kind::Stunnerd).then_some(admin))
    })
}

fn responsiveness(w: (Watched, Option<Watched>)) -> String {
    match w.1 {
        Some(admin) => format!("Binding: {}; /live + /metrics: {admin}", w.0),
        None => format!("Binding: {}", w.0),
    }
}

fn echoed(r: &UclientReport, expected: u64) -> String {
    if !r.summary || r.recv != expected {
        // For the run's log, not the table.
        println!(
            "uclient {:?} (exit {:?}):\n{}",
            r.args,
            r.exit_code,
            tail(&r.output, 15)
        );
    }
    if r.summary {
        format!("{} of {expected} echoed", r.recv)
    } else if let Some(line) = r.output.lines().find(|l| l.contains("error ")) {
        // "0: : error 508 (Cannot create socket)"
        let e = &line[line.find("error ").unwrap_or(0)..];
        format!("nothing relayed: uclient got {}", e.trim())
    } else if r.allocation_failed() {
        "could not allocate".into()
    } else {
        format!("no summary (exit {:?})", r.exit_code)
    }
}

fn allocate_other() -> String {
    match TurnClient::new(local(PORT), "other", "other-pass").allocate() {
        Ok(_) => "allocates".into(),
        Err(0) => "no answer".into(),
        Err(code) => format!("refused ({code})"),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// 10,000 Allocates from one address in about a second (hostile.rs's flood), while a
/// turnutils_uclient client on 127.0.0.2 relays.
fn probe_flood(kind: Kind) {
    let mut t = Target::start(kind, NOFILE);
    let _peer = start_peer(PEER);
    let legit = legit_uclient(PORT, PEER, 200);
    let f = flood(local(PORT), 10_000);
    let legit = legit.join().unwrap();
    let ratio = |recv: u64, sent: u64| recv as f64 / sent.max(1) as f64;
    cell(
        "401 flood, no credentials: bytes answered / sent",
        &format!(
            "{} / {} B = {:.2}x ({} answers)",
            f.bare_recv,
            f.bare_sent,
            ratio(f.bare_recv, f.bare_sent),
            f.bare_answers
        ),
    );
    cell(
        "flood, wrong password + forged nonce: answered / sent",
        &format!(
            "{} / {} B = {:.2}x ({} answers)",
            f.forged_recv,
            f.forged_sent,
            ratio(f.forged_recv, f.forged_sent),
            f.forged_answers
        ),
    );
    let (recv, sent) = (f.bare_recv + f.forged_recv, f.bare_sent + f.forged_sent);
    cell(
        "flood, both halves (10,000 requests)",
        &format!(
            "{recv} / {sent} B = {:.2}x in {:.2} s",
            ratio(recv, sent),
            f.flood_secs
        ),
    );
    cell(
        "flood: uclient from 127.0.0.2 meanwhile",
        &format!("{}{}", echoed(&legit, 100), t.exited()),
    );
}

/// One user opens allocations until refused, under a limit of 512 descriptors, while
/// another user's turnutils_uclient session relays.
fn probe_allocations(kind: Kind) {
    let mut t = Target::start(kind, 512);
    let _peer = start_peer(PEER);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(kind, stop.clone());
    let other = other_user_uclient(PORT, PEER, 150);
    std::thread::sleep(Duration::from_millis(500));
    let mut clients = Vec::new();
    let refusal = loop {
        if clients.len() >= 2000 {
            break None;
        }
        let mut c = TurnClient::new(local(PORT), USER, PASS);
        match c.allocate() {
            Ok(_) => clients.push(c),
            Err(code) => break Some(code),
        }
    };
    let fds = t.fds();
    let other_new = allocate_other();
    let tcp = binding_tcp();
    let other = other.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let w = watcher.join().unwrap();
    cell(
        "one user allocating, nofile 512: allocations, then",
        &format!(
            "{}, then {} (daemon holds {fds} fds)",
            clients.len(),
            match refusal {
                None => "never refused".into(),
                Some(0) => "no answer".into(),
                Some(c) => c.to_string(),
            }
        ),
    );
    cell("allocations: responsiveness throughout", &responsiveness(w));
    cell(
        "allocations: other user's uclient (allocated first)",
        &echoed(&other, 300),
    );
    cell(
        "allocations: other user's new Allocate / new TCP conn + Binding, at the limit",
        &format!("{} / {}{}", other_new, yes_no(tcp), t.exited()),
    );
}

/// 5,000 idle TCP connections from one address, under a limit of 2,048 descriptors, while
/// another user's turnutils_uclient session relays.
fn probe_idle_tcp(kind: Kind) {
    let mut t = Target::start(kind, 2048);
    let _peer = start_peer(PEER);
    let fds_before = t.fds();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(kind, stop.clone());
    let other = other_user_uclient(PORT, PEER, 150);
    let mut idle = Vec::new();
    let mut error = None;
    let start = Instant::now();
    for _ in 0..5000 {
        match TcpStream::connect_timeout(&local(PORT), Duration::from_secs(5)) {
            Ok(s) => idle.push(s),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let fds = t.fds();
    let other_new = allocate_other();
    let tcp = binding_tcp();
    let other = other.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let w = watcher.join().unwrap();
    cell(
        "5,000 idle TCP conns, nofile 2,048: connects / daemon fds",
        &format!(
            "{} connected in {open_secs:.1} s{}; fds {fds_before} -> {fds}",
            idle.len(),
            error.map_or(String::new(), |e| format!(" (then: {e})"))
        ),
    );
    cell("idle TCP: responsiveness throughout", &responsiveness(w));
    cell(
        "idle TCP: other user's uclient over UDP",
        &echoed(&other, 300),
    );
    cell(
        "idle TCP: other user's new Allocate / new TCP conn + Binding, while held",
        &format!("{} / {}{}", other_new, yes_no(tcp), t.exited()),
    );
}

/// A UDP peer with a receive buffer large enough for a whole burst.
fn big_peer() -> UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    s.set_recv_buffer_size(4 << 20).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.into()
}

/// Five pipelined 1 MiB bursts of ChannelData (1,024 frames of 1,020 bytes) over TURN-TCP
/// and five over TURN-TLS, each on a fresh connection and allocation.
fn probe_bursts(kind: Kind) {
    const ROUNDS: usize = 5;
    const FRAMES: usize = 1024;
    const PAYLOAD: usize = 1020;
    let mut t = Target::start(kind, NOFILE);
    let rss_before = rss_kib(t.pid());
    let burst = burst_bytes(FRAMES, PAYLOAD);
    for (name, port, tls) in [("TCP", PORT, false), ("TLS", TLS_PORT, true)] {
        let (mut survived, mut frames, mut notes) = (0, 0, Vec::new());
        for _ in 0..ROUNDS {
            let peer = big_peer();
            let peer_addr = peer.local_addr().unwrap();
            let setup = StreamTurn::connect(port, tls).and_then(|mut c| {
                let a = c.try_request(Method::Allocate, &|w| {
                    w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
                })?;
                let b = c.try_request(Method::ChannelBind, &|w| {
                    w.add(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]).unwrap();
                    w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer_addr).unwrap();
                })?;
                match (a, b) {
                    (None, None) => Ok(c),
                    _ => Err(std::io::Error::other(format!(
                        "Allocate {a:?}, ChannelBind {b:?}"
                    ))),
                }
            });
            let mut c = match setup {
                Ok(c) => c,
                Err(e) => {
                    notes.push(format!("setup failed: {e}"));
                    continue;
                }
            };
            let wrote = c.s.write_all(&burst).and_then(|()| c.s.flush());
            // Count what reaches the peer until it has been quiet for a second.
            peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut buf = vec![0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                match peer.recv(&mut buf) {
                    Ok(n) if n == PAYLOAD => frames += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let after = wrote.and_then(|()| {
                c.try_request(Method::Refresh, &|w| {
                    w.add(attr::LIFETIME, &600u32.to_be_bytes()).unwrap();
                })
            });
            match after {
                Ok(None) => survived += 1,
                Ok(Some(code)) => notes.push(format!("Refresh got {code}")),
                Err(e) => notes.push(e.kind().to_string()),
            }
        }
        notes.dedup();
        cell(
            &format!(
                "{ROUNDS} x 1 MiB ChannelData bursts over TURN-{name}: connections reset / frames at peer"
            ),
            &format!(
                "{} of {ROUNDS} reset{}; {frames} of {} frames relayed",
                ROUNDS - survived,
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join(", "))
                },
                ROUNDS * FRAMES
            ),
        );
    }
    cell(
        "bursts: daemon RSS before -> after (peak)",
        &format!(
            "{:.1} -> {:.1} MiB ({:.1} MiB){}",
            rss_before as f64 / 1024.0,
            rss_kib(t.pid()) as f64 / 1024.0,
            t.peak_rss_kib() as f64 / 1024.0,
            t.exited()
        ),
    );
}

/// turnutils_uclient with 16,000-byte messages over channels, on UDP and on TCP.
fn probe_large(kind: Kind) {
    let mut t = Target::start(kind, NOFILE);
    let _peer = start_peer(PEER);
    for (name, flags) in [("UDP", &["-c"][..]), ("TCP", &["-t", "-c"][..])] {
        let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        for a in [
            "-u",
            USER,
            "-w",
            PASS,
            "-e",
            "127.0.0.1",
            "-r",
            &PEER.to_string(),
            "-p",
            &PORT.to_string(),
            "-m",
            "4",
            "-n",
            "30",
            "-l",
            "16000",
            "-z",
            "5",
            "127.0.0.1",
        ] {
            args.push(a.to_string());
        }
        let r = run_uclient(&args);
        let mut text = echoed(&r, 120);
        if kind == Kind::Stunnerd {
            let too_big = scrape(
                METRICS,
                "stunnerd_dropped_packets_total{reason=\"too_big\"}",
            )
            .unwrap_or(0.0);
            text.push_str(&format!(", {too_big} counted too_big"));
        }
        cell(
            &format!("16,000-byte ChannelData over {name} (turnutils_uclient -l 16000)"),
            &format!("{text}{}", t.exited()),
        );
    }
}

/// Run by scripts/hostile-compare.sh: `HOSTILE_TARGET` (stunnerd or coturn), `HOSTILE_PROBE`
/// (flood, allocations, idle_tcp, bursts, large) and `HOSTILE_NETNS`, the namespace the
/// script made and runs this in.
#[test]
#[ignore = "a measurement, run by scripts/hostile-compare.sh in a namespace of its own"]
fn measure() {
    let ns =
        std::env::var("HOSTILE_NETNS").expect("HOSTILE_NETNS (run scripts/hostile-compare.sh)");
    let out = Command::new("ip")
        .args(["netns", "identify", &std::process::id().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ns,
        "not inside network namespace {ns}"
    );
    // This process holds the attacker's sockets.
    let me = std::process::id().to_string();
    let st = Command::new("prlimit")
        .args(["--pid", &me, "--nofile=16384:16384"])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit on the test process");
    let kind = match std::env::var("HOSTILE_TARGET").as_deref() {
        Ok("stunnerd") => Kind::Stunnerd,
        Ok("coturn") => Kind::Coturn,
        other => panic!("HOSTILE_TARGET must be stunnerd or coturn, not {other:?}"),
    };
    match std::env::var("HOSTILE_PROBE").as_deref() {
        Ok("flood") => probe_flood(kind),
        Ok("allocations") => probe_allocations(kind),
        Ok("idle_tcp") => probe_idle_tcp(kind),
        Ok("bursts") => probe_bursts(kind),
        Ok("large") => probe_large(kind),
        other => panic!("unknown HOSTILE_PROBE {other:?}"),
    }
}
