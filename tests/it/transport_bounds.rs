//! Connection state stays bounded: 1,000 idle TCP connections grow the server's memory by a
//! bounded amount; 1,000 DTLS ClientHello sources that never return the cookie create no
//! per-client state at all (the cookie exchange is stateless: no session, flat RSS); 300
//! sources that do return it but never finish are capped at the half-open bound and time
//! out; and real clients still get through. The figures are printed.

use crate::common;
use crate::ops_util;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::*;
use ops_util::{scrape, wait_for};

/// The per-worker bound on DTLS sessions past the cookie (`transport::dtls::MAX_HALF_OPEN`).
const MAX_HALF_OPEN: f64 = 256.0;

/// Datagrams in and out of a client-side openssl DTLS session, in memory.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.outgoing.push(b.to_vec());
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Client = openssl::ssl::SslStream<Pipe>;

fn client_ctx() -> openssl::ssl::SslContext {
    openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::dtls())
        .unwrap()
        .build()
}

/// A client-side DTLS session that has written its first ClientHello (without cookie).
fn client(ctx: &openssl::ssl::SslContext) -> (Client, Vec<u8>) {
    let mut ssl = openssl::ssl::Ssl::new(ctx).unwrap();
    ssl.set_connect_state();
    let mut stream = openssl::ssl::SslStream::new(ssl, Pipe::default()).unwrap();
    let _ = stream.do_handshake();
    let hello = stream.get_mut().outgoing.remove(0);
    (stream, hello)
}

/// Whether a datagram is a HelloVerifyRequest (handshake record, message type 3).
fn is_hello_verify_request(d: &[u8]) -> bool {
    d.len() > 13 && d[0] == 22 && d[13] == 3
}

/// A gauge of the DTLS listener, read once the worker has published (it does every
/// 100 ms): the value it settles on within `wait`.
fn gauge(metrics: u16, series: &str, want: f64, wait: Duration) -> f64 {
    let mut last = f64::NAN;
    wait_for(wait, || {
        last = scrape(metrics, series).unwrap_or(f64::NAN);
        last == want
    });
    last
}

#[test]
fn idle_tcp_connections_and_dtls_hello_floods_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (udp, tcp, dtls, metrics) = (
        free_udp_tcp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    let l = |name: &str, proto: &str, port: u16| {
        serde_json::json!({"name": name, "protocol": proto, "address": "127.0.0.1", "port": port,
            "routes": ["local"], "cert": cert.to_str().unwrap(), "key": key.to_str().unwrap()})
    };
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "bounds", "healthcheck_endpoint": "",
                      "metrics_endpoint": format!("http://127.0.0.1:{metrics}/metrics")},
            "auth": {"credentials": {"username": "user", "password": "pass"}},
            "listeners": [l("udp", "TURN-UDP", udp), l("tcp", "TURN-TCP", tcp), l("dtls", "TURN-DTLS", dtls)],
            "clusters": [{"name": "local", "endpoints": ["127.0.0.1/32"]}],
        })
        .to_string(),
    );
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg("-c").arg(format!("file://{}", config.display()));
    let mut server = Proc::spawn("stunnerd", cmd);
    wait_udp_ready(local(udp)).expect("stunnerd answers");
    std::thread::sleep(Duration::from_millis(200));
    let base = rss_kib(server.pid());

    // 1,000 idle TCP connections.
    let conns: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(local(tcp)).ok())
        .collect();
    assert_eq!(conns.len(), 1000, "all connections accepted");
    std::thread::sleep(Duration::from_millis(500));
    let with_tcp = rss_kib(server.pid());
    let per_conn = (with_tcp.saturating_sub(base)) * 1024 / 1000;
    eprintln!(
        "FIGURE idle_tcp_connections=1000 rss_base_kib={base} rss_kib={with_tcp} bytes_per_conn={per_conn}"
    );
    assert!(
        with_tcp - base < 64 * 1024,
        "1,000 idle connections grew RSS by {} KiB",
        with_tcp - base
    );
    server.assert_running("after 1,000 connections");
    drop(conns);

    // Two rounds of 1,000 sources each send a DTLS ClientHello and never answer the cookie:
    // each gets a HelloVerifyRequest, and the server keeps nothing for any of them. The
    // first round also pays for one-time allocations (the listener's reusable listen
    // object, the metrics scrape); the second shows the per-source cost.
    let ctx = client_ctx();
    let (_, hello) = client(&ctx);
    let handshakes = "stunnerd_listener_dtls_handshakes{name=\"dtls\"}".to_string();
    let connections = "stunner_listener_connections{name=\"dtls\"}".to_string();
    let mut buf = [0u8; 2048];
    let mut rss = with_tcp;
    for round in 1..=2 {
        let socks: Vec<UdpSocket> = (0..1000)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for s in &socks {
            s.send_to(&hello, local(dtls)).unwrap();
        }
        let mut answered = 0;
        for s in &socks {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            if s.recv(&mut buf)
                .is_ok_and(|n| is_hello_verify_request(&buf[..n]))
            {
                answered += 1;
            }
        }
        assert!(
            answered >= 990,
            "round {round}: only {answered} of 1,000 hellos got a HelloVerifyRequest"
        );
        // Give the worker time to publish, then check that nothing was created.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            gauge(metrics, &handshakes, 0.0, Duration::from_secs(2)),
            0.0,
            "round {round}: cookie-less hellos created handshake state"
        );
        assert_eq!(
            gauge(metrics, &connections, 0.0, Duration::from_secs(2)),
            0.0
        );
        let after = rss_kib(server.pid());
        eprintln!(
            "FIGURE dtls_cookieless_hello_round={round} sources=1000 \
             hello_verify_requests={answered} rss_kib_before={rss} rss_kib_after={after} \
             growth_kib={}",
            after.saturating_sub(rss)
        );
        let bound = if round == 1 { 2 * 1024 } else { 256 };
        assert!(
            after.saturating_sub(rss) < bound,
            "round {round}: 1,000 cookie-less hellos grew RSS from {rss} to {after} KiB"
        );
        rss = after;
    }
    let with_hellos = rss;

    // 300 sources return the cookie (the server now does handshake work for them) and go
    // silent: at most MAX_HALF_OPEN of them hold a session.
    let mut verified = 0;
    let mut silent = Vec::new();
    for _ in 0..300 {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (mut c, hello) = client(&ctx);
        sock.send_to(&hello, local(dtls)).unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        assert!(is_hello_verify_request(&buf[..n]));
        c.get_mut().incoming.push_back(buf[..n].to_vec());
        let _ = c.do_handshake();
        for d in std::mem::take(&mut c.get_mut().outgoing) {
            sock.send_to(&d, local(dtls)).unwrap();
        }
        verified += 1;
        silent.push(sock);
    }
    assert!(verified >= 290, "only {verified} of 300 cookie exchanges");
    let half_open = gauge(metrics, &handshakes, MAX_HALF_OPEN, Duration::from_secs(3));
    let with_half_open = rss_kib(server.pid());
    eprintln!(
        "FIGURE dtls_cookie_returning_sources={verified} half_open_sessions={half_open} \
         rss_kib_before={with_hellos} rss_kib_after={with_half_open}"
    );
    assert_eq!(half_open, MAX_HALF_OPEN, "half-open sessions not capped");
    assert!(
        with_half_open.saturating_sub(base) < 64 * 1024,
        "half-open DTLS grew RSS to {with_half_open} KiB"
    );

    // A real DTLS client still gets through at once.
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let r = run_uclient([
        "-S",
        "-u",
        "user",
        "-w",
        "pass",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &dtls.to_string(),
        "-m",
        "2",
        "-n",
        "20",
        "-z",
        "5",
        "127.0.0.1",
    ]);
    server.assert_running("after the DTLS flood");
    r.assert_all_echoed(40, &server.log());

    // The silent handshakes time out (10 s).
    assert_eq!(
        gauge(metrics, &handshakes, 0.0, Duration::from_secs(15)),
        0.0,
        "half-open DTLS sessions did not time out"
    );
    drop(silent);
}
