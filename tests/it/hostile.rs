//! The hostile suite: what an attacker on the open Internet would try, each probe asserting
//! what a legitimate user sees meanwhile. Probes that flood the daemon run in a network
//! namespace of their own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use stunnerd::stun::{Class, Message, MessageWriter, Method, attr};

use crate::common::*;
use crate::ops_util::*;

/// Pre-authentication amplification (RFC 8656 section 21): 10,000 Allocates in about a
/// second from one source, half without credentials (each answered by a 401 challenge
/// about 3.5 times its size) and half with a wrong password and a nonce we never issued
/// (438): what the source receives stays within the configured per-source budget, far below
/// what it sent, and the excess is counted. Meanwhile a client from another address
/// allocates and relays with turnutils_uclient without loss.
#[test]
fn a_spoofable_allocate_flood_is_not_amplified() {
    in_netns(
        module_path!(),
        "a_spoofable_allocate_flood_is_not_amplified",
        amplification,
    );
}

fn amplification() {
    const BUDGET: u64 = 8 * 1024;
    const FLOOD: usize = 10_000;
    let (port, health, metrics) = (3478, 8086, 8080);
    let cfg = Cfg::new("hostile", port, health, metrics);
    let path = write_config(&cfg.json());
    let args: Vec<String> = [
        "-u",
        "1",
        "--preauth-budget",
        &BUDGET.to_string(),
        "-c",
        &path.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = start_stunnerd("stunnerd", &args, &[]);
    wait_udp_ready(local(port)).expect("listener up");
    let server: SocketAddr = local(port);
    let peer_port = 9000;
    let _peer = start_peer(peer_port);

    // A legitimate client on another address, during the flood.
    let legit = legit_uclient(port, peer_port, 200);
    let f = flood(server, FLOOD);
    let legit = legit.join().unwrap();

    let dropped = scrape(
        metrics,
        "stunnerd_listener_unverified_drops_total{name=\"udp\"}",
    )
    .unwrap_or(0.0);
    let Flood {
        bare_sent,
        bare_recv,
        bare_answers,
        forged_sent,
        forged_recv,
        forged_answers,
        flood_secs,
        elapsed,
    } = f;
    println!(
        "FIGURE flood_requests={FLOOD} flood_secs={:.2} budget_bytes_per_sec={BUDGET} \
         unauthenticated: sent={bare_sent} B answered={bare_recv} B ({bare_answers} answers); \
         forged nonce: sent={forged_sent} B answered={forged_recv} B ({forged_answers} answers); \
         unverified_drops={dropped}",
        flood_secs
    );
    // Answers larger than their requests: the budget, plus one second's burst.
    let allowed = (BUDGET as f64 * (elapsed + 1.0)) as u64;
    assert!(
        bare_recv <= allowed,
        "the flood source got {bare_recv} bytes in {elapsed:.2} s (budget {allowed})"
    );
    assert!(bare_answers > 0, "the budget lets some challenges through");
    assert!(dropped > 0.0, "suppressed answers are counted");
    // Answers no larger than their requests multiply nothing.
    assert!(
        forged_recv <= forged_sent,
        "{forged_recv} bytes answered for {forged_sent}"
    );
    assert!(
        bare_recv + forged_recv <= bare_sent + forged_sent,
        "the flood as a whole is not amplified"
    );
    legit.assert_all_echoed(100, &p.log());
    p.assert_running("after the flood");
}

/// What one source sent and received in [`flood`]: half the Allocates without credentials,
/// half with a wrong password and a nonce the server never issued.
pub(crate) struct Flood {
    pub bare_sent: u64,
    pub bare_recv: u64,
    pub bare_answers: u64,
    pub forged_sent: u64,
    pub forged_recv: u64,
    pub forged_answers: u64,
    /// How long sending took.
    pub flood_secs: f64,
    /// From the first request to the end of the 500 ms spent collecting late answers.
    pub elapsed: f64,
}

/// The two requests of the flood: an Allocate without credentials (28 bytes) and one with
/// a wrong password and a forged nonce (116 bytes).
pub(crate) fn flood_requests() -> (Vec<u8>, Vec<u8>) {
    let mut bare = vec![0u8; 64];
    let n = {
        let mut w =
            MessageWriter::new(&mut bare, Method::Allocate, Class::Request, &[1; 12]).unwrap();
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
        w.finish()
    };
    bare.truncate(n);
    let mut forged = vec![0u8; 256];
    let n = {
        let mut w =
            MessageWriter::new(&mut forged, Method::Allocate, Class::Request, &[2; 12]).unwrap();
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
        w.add(attr::USERNAME, USER.as_bytes()).unwrap();
        w.add(attr::REALM, REALM.as_bytes()).unwrap();
        w.add(attr::NONCE, &[b'0'; 32]).unwrap();
        w.add_integrity(&stunnerd::snapshot::long_term_key(USER, REALM, "wrong"))
            .unwrap();
        w.finish()
    };
    forged.truncate(n);
    (bare, forged)
}

/// Sends `count` Allocates from 127.0.0.1 to `server` in about a second (1 ms pause every
/// ten), alternating the two requests of [`flood_requests`] on two sockets of that one
/// address, and tallies what comes back until 500 ms after the last.
pub(crate) fn flood(server: SocketAddr, count: usize) -> Flood {
    let (bare, forged) = flood_requests();
    let bare_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forged_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    bare_sock.set_nonblocking(true).unwrap();
    forged_sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    // (sent bytes, received bytes, answers) per socket
    let mut tally = [(0u64, 0u64, 0u64); 2];
    let mut drain = |tally: &mut [(u64, u64, u64); 2]| {
        for (i, sock) in [&bare_sock, &forged_sock].into_iter().enumerate() {
            while let Ok(n) = sock.recv(&mut buf) {
                tally[i].1 += n as u64;
                tally[i].2 += 1;
            }
        }
    };
    let start = Instant::now();
    for i in 0..count {
        let (k, sock, req) = if i % 2 == 0 {
            (0, &bare_sock, &bare)
        } else {
            (1, &forged_sock, &forged)
        };
        if sock.send_to(req, server).is_ok() {
            tally[k].0 += req.len() as u64;
        }
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
            drain(&mut tally);
        }
    }
    let flood_secs = start.elapsed().as_secs_f64();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        drain(&mut tally);
        std::thread::sleep(Duration::from_millis(10));
    }
    let [
        (bare_sent, bare_recv, bare_answers),
        (forged_sent, forged_recv, forged_answers),
    ] = tally;
    Flood {
        bare_sent,
        bare_recv,
        bare_answers,
        forged_sent,
        forged_recv,
        forged_answers,
        flood_secs,
        elapsed: start.elapsed().as_secs_f64(),
    }
}

/// A turnutils_uclient session from 127.0.0.2 (50 messages on 2 channels to the UDP echo
/// peer at `peer_port`, 100 expected back), started after `delay_ms`.
pub(crate) fn legit_uclient(
    port: u16,
    peer_port: u16,
    delay_ms: u64,
) -> std::thread::JoinHandle<UclientReport> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(delay_ms));
        run_uclient([
            "-L",
            "127.0.0.2",
            "-u",
            USER,
            "-w",
            PASS,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-p",
            &port.to_string(),
            "-n",
            "50",
            "-m",
            "2",
            "-l",
            "100",
            "-c",
            "-z",
            "10",
            "127.0.0.1",
        ])
    })
}

/// A stream (TCP, or TLS through openssl) to a TURN listener.
pub(crate) trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A TURN client over a stream, enough for an allocation with one channel.
pub(crate) struct StreamTurn {
    pub s: Box<dyn Stream>,
    key: [u8; 16],
    nonce: Vec<u8>,
    seq: u8,
}

impl StreamTurn {
    fn new(port: u16, tls: bool) -> StreamTurn {
        StreamTurn::connect(port, tls).unwrap()
    }

    /// Connects to 127.0.0.1:`port` (through TLS without verifying the certificate).
    pub(crate) fn connect(port: u16, tls: bool) -> std::io::Result<StreamTurn> {
        let tcp = TcpStream::connect_timeout(&local(port), Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let s: Box<dyn Stream> = if tls {
            let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
                .map_err(std::io::Error::other)?;
            b.set_verify(openssl::ssl::SslVerifyMode::NONE);
            Box::new(
                b.build()
                    .connect("localhost", tcp)
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            )
        } else {
            Box::new(tcp)
        };
        Ok(StreamTurn {
            s,
            key: stunnerd::snapshot::long_term_key(USER, REALM, PASS),
            nonce: Vec::new(),
            seq: 0,
        })
    }

    fn read_message(&mut self) -> std::io::Result<Vec<u8>> {
        let mut head = [0u8; 20];
        self.s.read_exact(&mut head)?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let mut msg = head.to_vec();
        msg.resize(20 + len, 0);
        self.s.read_exact(&mut msg[20..])?;
        Ok(msg)
    }

    /// An authenticated request (fetching the nonce first); returns the error code, if any.
    fn request(&mut self, method: Method, attrs: &dyn Fn(&mut MessageWriter<'_>)) -> Option<u16> {
        self.try_request(method, attrs).unwrap()
    }

    /// [`StreamTurn::request`], with the connection's failure as an error.
    pub(crate) fn try_request(
        &mut self,
        method: Method,
        attrs: &dyn Fn(&mut MessageWriter<'_>),
    ) -> std::io::Result<Option<u16>> {
        loop {
            self.seq += 1;
            let mut buf = vec![0u8; 512];
            let mut w =
                MessageWriter::new(&mut buf, method, Class::Request, &[self.seq; 12]).unwrap();
            attrs(&mut w);
            let auth = !self.nonce.is_empty();
            if auth {
                w.add(attr::USERNAME, USER.as_bytes()).unwrap();
                w.add(attr::REALM, REALM.as_bytes()).unwrap();
                w.add(attr::NONCE, &self.nonce).unwrap();
                w.add_integrity(&self.key).unwrap();
            }
            let n = w.finish();
            self.s.write_all(&buf[..n])?;
            // Skip what is not the answer (a Data indication, say).
            let r = loop {
                let r = self.read_message()?;
                if r[8..20] == [self.seq; 12] {
                    break r;
                }
            };
            let m = Message::parse(&r).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            let code = m
                .get(attr::ERROR_CODE)
                .map(|v| attr::decode_error_code(v).unwrap().0);
            if code == Some(401) && !auth {
                self.nonce = m.get(attr::NONCE).unwrap().to_vec();
                continue;
            }
            return Ok(code);
        }
    }
}

/// `frames` ChannelData frames on channel 0x4000, each of `payload` bytes (filled with the
/// frame's index mod 251), back to back.
pub(crate) fn burst_bytes(frames: usize, payload: usize) -> Vec<u8> {
    let mut burst = Vec::with_capacity(frames * (payload + 4));
    for i in 0..frames {
        burst.extend_from_slice(&[0x40, 0x00]);
        burst.extend_from_slice(&(payload as u16).to_be_bytes());
        burst.extend(std::iter::repeat_n((i % 251) as u8, payload));
    }
    burst
}

/// Pipelined ChannelData over TURN-TCP and TURN-TLS (RFC 8656 section 12.5): a client
/// writes 1 MiB of ChannelData frames in one burst, as fast as its socket takes them. Every
/// frame is relayed (the server's cluster counter moves by exactly the frame count), the
/// connection is not reset (a Refresh answers afterwards), no close is counted, and the
/// daemon's memory does not grow with the burst.
#[test]
fn pipelined_channeldata_bursts_over_tcp_and_tls_are_relayed_without_reset() {
    in_netns(
        module_path!(),
        "pipelined_channeldata_bursts_over_tcp_and_tls_are_relayed_without_reset",
        bursts,
    );
}

fn bursts() {
    const FRAMES: usize = 1024;
    const PAYLOAD: usize = 1020; // with its 4-byte header, 1 KiB a frame
    let (tcp, tls, metrics) = (3478, 5349, 8080);
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let listener = |name: &str, proto: &str, port: u16| {
        serde_json::json!({"name": name, "protocol": proto, "address": "127.0.0.1",
                           "port": port, "routes": ["local"],
                           "cert": cert.to_str().unwrap(), "key": key.to_str().unwrap()})
    };
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "bursts", "healthcheck_endpoint": "",
                      "metrics_endpoint": format!("http://127.0.0.1:{metrics}/metrics")},
            "auth": {"type": "static", "realm": REALM,
                     "credentials": {"username": USER, "password": PASS}},
            "listeners": [listener("tcp", "TURN-TCP", tcp), listener("tls", "TURN-TLS", tls)],
            "clusters": [{"name": "local", "endpoints": ["127.0.0.1/32"]}],
        })
        .to_string(),
    );
    let args: Vec<String> = ["-c", &config.to_string_lossy()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut p = start_stunnerd("stunnerd", &args, &[]);
    assert!(
        wait_for(Duration::from_secs(5), || TcpStream::connect(local(tls))
            .is_ok()
            && scrape(metrics, "stunner_allocations_active").is_some()),
        "{}",
        p.log()
    );
    let tx = || {
        scrape(
            metrics,
            "stunner_cluster_packets_total{direction=\"tx\",name=\"local\"}",
        )
        .unwrap_or(0.0) as usize
    };
    let rss_before = rss_kib(p.pid());
    let mut relayed = 0;
    for (name, port, is_tls) in [("tcp", tcp, false), ("tls", tls, true)] {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let mut t = StreamTurn::new(port, is_tls);
        assert_eq!(
            t.request(Method::Allocate, &|w| {
                w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
            }),
            None
        );
        assert_eq!(
            t.request(Method::ChannelBind, &|w| {
                w.add(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]).unwrap();
                w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer_addr).unwrap();
            }),
            None
        );
        let burst = burst_bytes(FRAMES, PAYLOAD);
        let before = tx();
        t.s.write_all(&burst).unwrap();
        t.s.flush().unwrap();
        relayed += FRAMES;
        assert!(
            wait_for(Duration::from_secs(10), || tx() - before >= FRAMES),
            "{name}: {} of {FRAMES} frames relayed\n{}",
            tx() - before,
            tail(&p.log(), 20)
        );
        assert_eq!(tx() - before, FRAMES, "{name}: every frame once");
        // The peer got them (at least the ones its socket buffer held).
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(n, PAYLOAD, "{name}: the payload without its header");
        // The connection still serves requests.
        assert_eq!(
            t.request(Method::Refresh, &|w| {
                w.add(attr::LIFETIME, &600u32.to_be_bytes()).unwrap();
            }),
            None,
            "{name}: refresh after the burst"
        );
    }
    let rss_after = rss_kib(p.pid());
    let closes = |reason: &str| {
        ["tcp", "tls"]
            .iter()
            .map(|l| {
                scrape(
                    metrics,
                    &format!("stunnerd_listener_closes_total{{name=\"{l}\",reason=\"{reason}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    println!(
        "FIGURE burst_frames={FRAMES} frame_bytes={} relayed={relayed} rss_kib_before={rss_before} rss_kib_after={rss_after}",
        PAYLOAD + 4
    );
    for reason in ["reset", "malformed", "tls_error", "write_failed"] {
        assert_eq!(closes(reason), 0.0, "no connection closed for {reason}");
    }
    assert!(
        rss_after.saturating_sub(rss_before) < 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    p.assert_running("after the bursts");
}

/// Starts stunnerd under a lowered descriptor limit, with health and metrics on the
/// namespace's loopback; returns it with its TURN-UDP and TURN-TCP ports.
fn limited_daemon(nofile: u32, extra: &[&str]) -> (Proc, u16, u16, u16, u16) {
    let (udp, tcp, health, metrics) = (3478, 3479, 8086, 8080);
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "limits", "loglevel": "all:INFO",
                      "healthcheck_endpoint": format!("http://127.0.0.1:{health}"),
                      "metrics_endpoint": format!("http://127.0.0.1:{metrics}/metrics")},
            "auth": {"type": "static", "realm": REALM,
                     "credentials": {"users": [{"username": USER, "password": PASS},
                                               {"username": "other", "password": "other-pass"}]}},
            "listeners": [
                {"name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1", "port": udp, "routes": ["local"]},
                {"name": "tcp", "protocol": "TURN-TCP", "address": "127.0.0.1", "port": tcp, "routes": ["local"]}],
            "clusters": [{"name": "local", "endpoints": ["127.0.0.1/32"]}],
        })
        .to_string(),
    );
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(stunnerd_bin())
        .args(extra)
        .arg("-c")
        .arg(config.to_string_lossy().to_string());
    let p = Proc::spawn("stunnerd", cmd);
    // The config file must outlive the daemon's start.
    std::mem::forget(config);
    wait_udp_ready(local(udp)).expect("listener up");
    (p, udp, tcp, health, metrics)
}

/// Polls `/live` and `/metrics` every 100 ms until told to stop; returns the slowest
/// answer and how many polls failed.
fn watch_admin(
    health: u16,
    metrics: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Duration, u32)> {
    std::thread::spawn(move || {
        let (mut slowest, mut failed) = (Duration::ZERO, 0);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            for (port, path) in [(health, "/live"), (metrics, "/metrics")] {
                let t = Instant::now();
                if http_get(port, path).is_none_or(|(s, _)| s != 200) {
                    failed += 1;
                }
                slowest = slowest.max(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (slowest, failed)
    })
}

pub(crate) fn other_user_uclient(
    port: u16,
    peer_port: u16,
    n: u32,
) -> std::thread::JoinHandle<UclientReport> {
    std::thread::spawn(move || {
        run_uclient([
            "-u",
            "other",
            "-w",
            "other-pass",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-p",
            &port.to_string(),
            "-n",
            &n.to_string(),
            "-m",
            "2",
            "-l",
            "100",
            "-c",
            "-z",
            "20",
            "127.0.0.1",
        ])
    })
}

/// One user opens allocations until refused, under a descriptor limit of 512: the daemon
/// answers 508 once its allocation budget is spent (no descriptor of the reserve is used),
/// `/live` and `/metrics` answer within a second throughout, and another user's
/// turnutils_uclient session relays without loss.
#[test]
fn one_user_allocating_until_refused_does_not_take_the_daemon_down() {
    in_netns(
        module_path!(),
        "one_user_allocating_until_refused_does_not_take_the_daemon_down",
        allocations_until_refused,
    );
}

fn allocations_until_refused() {
    let (mut p, udp, _tcp, health, metrics) = limited_daemon(512, &[]);
    let peer_port = 9000;
    let _peer = start_peer(peer_port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = watch_admin(health, metrics, stop.clone());
    let other = other_user_uclient(udp, peer_port, 150);
    std::thread::sleep(Duration::from_millis(500));
    let mut clients = Vec::new();
    let refusal = loop {
        let mut c = TurnClient::new(local(udp), USER, PASS);
        match c.allocate() {
            Ok(_) => clients.push(c),
            Err(code) => break code,
        }
        assert!(clients.len() < 1000, "never refused");
    };
    let other = other.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (slowest, failed) = admin.join().unwrap();
    println!(
        "FIGURE nofile=512 allocations_before_refusal={} refusal={refusal} admin_slowest_ms={} admin_failed={failed}",
        clients.len(),
        slowest.as_millis()
    );
    assert_eq!(refusal, 508, "refused with 508 Insufficient Capacity");
    assert!(clients.len() > 100, "only {} allocations", clients.len());
    assert!(
        slowest < Duration::from_secs(1) && failed == 0,
        "admin: {slowest:?}, {failed} failed"
    );
    other.assert_all_echoed(300, &p.log());
    // A new TCP connection is still accepted and served (a Binding).
    let mut t = TcpStream::connect(local(_tcp)).unwrap();
    let (req, _) = binding_request();
    t.write_all(&req).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut head = [0u8; 20];
    t.read_exact(&mut head).expect("a Binding answer over TCP");
    p.assert_running("after the allocation flood");
}

/// 5,000 idle TCP connections from one address under a descriptor limit of 2,048: the
/// daemon holds at most its unauthenticated budget of them (the oldest give way), `/live`
/// and `/metrics` answer within a second throughout, and another user relays over UDP
/// without loss.
#[test]
fn idle_tcp_connections_from_one_address_do_not_take_the_daemon_down() {
    in_netns(
        module_path!(),
        "idle_tcp_connections_from_one_address_do_not_take_the_daemon_down",
        idle_connections,
    );
}

fn idle_connections() {
    // This test process holds the attacker's 5,000 sockets.
    let me = std::process::id().to_string();
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &me, "--nofile=16384:16384"])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit on the test process");
    let (mut p, udp, tcp, health, metrics) = limited_daemon(2048, &[]);
    let peer_port = 9000;
    let _peer = start_peer(peer_port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = watch_admin(health, metrics, stop.clone());
    let other = other_user_uclient(udp, peer_port, 150);
    let mut idle = Vec::new();
    let mut error = None;
    let start = Instant::now();
    for _ in 0..5000 {
        match TcpStream::connect_timeout(&local(tcp), Duration::from_secs(5)) {
            Ok(s) => idle.push(s),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let opened = idle.len();
    let open_secs = start.elapsed().as_secs_f64();
    let held = wait_for(Duration::from_secs(3), || {
        scrape(metrics, "stunner_listener_connections{name=\"tcp\"}").is_some_and(|v| v <= 600.0)
    });
    let connections = scrape(metrics, "stunner_listener_connections{name=\"tcp\"}").unwrap_or(-1.0);
    let evicted = scrape(
        metrics,
        "stunnerd_listener_closes_total{name=\"tcp\",reason=\"evicted\"}",
    )
    .unwrap_or(0.0);
    let other = other.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (slowest, failed) = admin.join().unwrap();
    println!(
        "FIGURE nofile=2048 idle_connections_opened={opened} in {open_secs:.1}s held={connections} evicted={evicted} admin_slowest_ms={} admin_failed={failed}",
        slowest.as_millis()
    );
    assert_eq!(
        opened, 5000,
        "the kernel accepted every connect ({error:?})"
    );
    assert!(held, "the daemon holds {connections} of them");
    assert!(evicted > 0.0, "the oldest gave way");
    assert!(
        slowest < Duration::from_secs(1) && failed == 0,
        "admin: {slowest:?}, {failed} failed"
    );
    other.assert_all_echoed(300, &p.log());
    p.assert_running("after the connection flood");
}
