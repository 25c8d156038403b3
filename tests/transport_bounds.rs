//! Connection state stays bounded: 1,000 idle TCP connections and a flood of DTLS
//! ClientHellos from 300 sources grow the server's memory by a bounded amount, the
//! half-open DTLS sessions are capped, and real clients still get through. The figures are
//! printed (see BENCHMARKS.md).

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A client-side DTLS ClientHello, made by openssl over an in-memory datagram pipe.
fn client_hello() -> Vec<u8> {
    #[derive(Default)]
    struct Pipe(Vec<Vec<u8>>);
    impl Read for Pipe {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let ctx = openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::dtls())
        .unwrap()
        .build();
    let mut ssl = openssl::ssl::Ssl::new(&ctx).unwrap();
    ssl.set_connect_state();
    let mut stream = openssl::ssl::SslStream::new(ssl, Pipe::default()).unwrap();
    let _ = stream.do_handshake();
    stream.get_ref().0[0].clone()
}

#[test]
fn idle_tcp_connections_and_dtls_hello_floods_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (udp, tcp, dtls) = (
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
            "admin": {"name": "bounds", "healthcheck_endpoint": ""},
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

    // 300 sources each send a DTLS ClientHello and never answer the cookie.
    let hello = client_hello();
    let socks: Vec<UdpSocket> = (0..300)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for s in &socks {
        s.send_to(&hello, local(dtls)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    // The answer is a HelloVerifyRequest (handshake record, message type 3).
    let mut buf = [0u8; 2048];
    let probe = &socks[socks.len() - 1];
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let n = probe.recv(&mut buf).expect("a HelloVerifyRequest");
    assert!(
        n > 13 && buf[0] == 22 && buf[13] == 3,
        "not a HelloVerifyRequest: {:?}",
        &buf[..n.min(16)]
    );
    let with_dtls = rss_kib(server.pid());
    eprintln!(
        "FIGURE dtls_half_open_sources=300 rss_kib_before={with_tcp} rss_kib_after={with_dtls}"
    );
    assert!(
        with_dtls.saturating_sub(base) < 64 * 1024,
        "half-open DTLS grew RSS to {with_dtls} KiB"
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
}
