//! RFC 6062 TCP allocations against the real binary, with a minimal client of our own:
//! Connect to an admitted TCP peer and relay bytes both ways over ConnectionBind, a Connect
//! to refused addresses that gets 403 without any connection attempt, and pipes closed by a
//! config reload that removes the route admitting their peer.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use stunnerd::snapshot::long_term_key;
use stunnerd::stun::attr::{self, *};
use stunnerd::stun::{Class, Message, MessageWriter, Method};

/// stunnerd with one TURN-TCP listener routed to one cluster.
fn start(cluster: &str) -> (Proc, u16, tempfile::TempPath) {
    let port = free_udp_tcp_port();
    let config = write_config(&config_text(port, &[("peers", cluster)]));
    let server = spawn(port, &config, false);
    (server, port, config)
}

/// A config with one TURN-TCP listener on `port` routed to every cluster (name, endpoint).
fn config_text(port: u16, clusters: &[(&str, &str)]) -> String {
    let routes: Vec<&str> = clusters.iter().map(|c| c.0).collect();
    let clusters: Vec<_> = clusters
        .iter()
        .map(|(name, ep)| serde_json::json!({"name": name, "endpoints": [ep]}))
        .collect();
    serde_json::json!({
        "version": "v1",
        "admin": {"name": "rfc6062", "healthcheck_endpoint": ""},
        "auth": {"type": "static", "credentials": {"username": USER, "password": PASS}},
        "listeners": [{"name": "tcp", "protocol": "TURN-TCP", "address": "127.0.0.1",
                       "port": port, "routes": routes}],
        "clusters": clusters,
    })
    .to_string()
}

/// stunnerd on `config` (following it with `-w` if `watch`), once it listens on `port`.
fn spawn(port: u16, config: &std::path::Path, watch: bool) -> Proc {
    let mut cmd = Command::new(stunnerd_bin());
    if watch {
        cmd.arg("-w");
    }
    cmd.arg("-c").arg(format!("file://{}", config.display()));
    let server = Proc::spawn("stunnerd", cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(local(port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "stunnerd does not listen on TCP {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// One TURN-TCP connection of our client: long-term credentials with its own nonce.
struct Turn {
    stream: TcpStream,
    key: [u8; 16],
    nonce: Vec<u8>,
    seq: u8,
}

impl Turn {
    fn connect(port: u16) -> Turn {
        let stream = TcpStream::connect(local(port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Turn {
            stream,
            key: long_term_key(USER, common::REALM, PASS),
            nonce: Vec::new(),
            seq: 0,
        }
    }

    fn send(&mut self, method: Method, attrs: &[(u16, Attr)], auth: bool) -> Vec<u8> {
        self.seq += 1;
        let tid = [self.seq; 12];
        let mut buf = vec![0u8; 512];
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, &tid).unwrap();
        for (t, v) in attrs {
            match v {
                Attr::Addr(a) => w.add_xor_addr(*t, *a).unwrap(),
                Attr::Bytes(b) => w.add(*t, b).unwrap(),
            }
        }
        if auth {
            w.add(USERNAME, USER.as_bytes()).unwrap();
            w.add(attr::REALM, common::REALM.as_bytes()).unwrap();
            w.add(NONCE, &self.nonce).unwrap();
            w.add_integrity(&self.key).unwrap();
        }
        let n = w.finish();
        self.stream.write_all(&buf[..n]).unwrap();
        self.read_message()
    }

    fn read_message(&mut self) -> Vec<u8> {
        let mut head = [0u8; 20];
        self.stream.read_exact(&mut head).unwrap();
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let mut msg = head.to_vec();
        msg.resize(20 + len, 0);
        self.stream.read_exact(&mut msg[20..]).unwrap();
        msg
    }

    /// An authenticated request (fetching a nonce on the first one).
    fn request(&mut self, method: Method, attrs: &[(u16, Attr)]) -> Vec<u8> {
        if self.nonce.is_empty() {
            let r = self.send(method, attrs, false);
            let m = Message::parse(&r).unwrap();
            assert_eq!(code(&m), Some(401));
            self.nonce = m.get(NONCE).unwrap().to_vec();
        }
        self.send(method, attrs, true)
    }

    /// A TCP allocation; returns the relayed address.
    fn allocate_tcp(&mut self) -> SocketAddr {
        let r = self.request(
            Method::Allocate,
            &[(REQUESTED_TRANSPORT, Attr::Bytes(vec![6, 0, 0, 0]))],
        );
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class(), Class::Success, "allocate: {:?}", code(&m));
        attr::decode_xor_addr(m.get(XOR_RELAYED_ADDRESS).unwrap(), m.transaction_id()).unwrap()
    }
}

enum Attr {
    Addr(SocketAddr),
    Bytes(Vec<u8>),
}

fn code(m: &Message<'_>) -> Option<u16> {
    m.get(ERROR_CODE)
        .map(|v| attr::decode_error_code(v).unwrap().0)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn connect_relays_bytes_both_ways_to_an_admitted_peer() {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (_server, port, _config) = start("127.0.0.1/32");
    let mut control = Turn::connect(port);
    let _ = control.allocate_tcp();
    let r = control.request(
        Method::Connect,
        &[(XOR_PEER_ADDRESS, Attr::Addr(peer_addr))],
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Connect, Class::Success));
    assert!(m.verify_integrity(&control.key));
    let id = attr::decode_u32(m.get(CONNECTION_ID).unwrap()).unwrap();
    let (mut from_relay, _) = peer.accept().unwrap();
    from_relay
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // The peer may talk before the bind; the server holds it.
    from_relay.write_all(b"early").unwrap();
    let mut data = Turn::connect(port);
    let r = data.request(
        Method::ConnectionBind,
        &[(CONNECTION_ID, Attr::Bytes(id.to_be_bytes().to_vec()))],
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ConnectionBind, Class::Success),
        "{:?}",
        code(&m)
    );
    let mut early = [0u8; 5];
    data.stream.read_exact(&mut early).unwrap();
    assert_eq!(&early, b"early");

    // Odd sizes, more than the pipe buffers, both ways at once.
    let up = pattern(300_001, 1);
    let down = pattern(200_003, 7);
    let mut data_w = data.stream.try_clone().unwrap();
    let up_c = up.clone();
    let writer = std::thread::spawn(move || data_w.write_all(&up_c).unwrap());
    let mut peer_w = from_relay.try_clone().unwrap();
    let down_c = down.clone();
    let peer_writer = std::thread::spawn(move || peer_w.write_all(&down_c).unwrap());
    let mut got_up = vec![0u8; up.len()];
    from_relay.read_exact(&mut got_up).unwrap();
    let mut got_down = vec![0u8; down.len()];
    data.stream.read_exact(&mut got_down).unwrap();
    writer.join().unwrap();
    peer_writer.join().unwrap();
    assert!(got_up == up, "client to peer bytes differ");
    assert!(got_down == down, "peer to client bytes differ");

    // The allocation dies with its control connection, and the peer connection with it.
    drop(control);
    let mut rest = Vec::new();
    let n = from_relay.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "peer connection not closed"
    );
}

#[test]
fn connect_to_refused_addresses_is_403_and_nothing_connects() {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    peer.set_nonblocking(true).unwrap();
    // Only a wildcard route: loopback and 0.0.0.0 stay closed.
    let (_server, port, _config) = start("0.0.0.0/0");
    let mut control = Turn::connect(port);
    let _ = control.allocate_tcp();
    for addr in [
        format!("127.0.0.1:{peer_port}"),
        format!("[::ffff:127.0.0.1]:{peer_port}"),
        format!("0.0.0.0:{peer_port}"),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let r = control.request(Method::Connect, &[(XOR_PEER_ADDRESS, Attr::Addr(addr))]);
        let m = Message::parse(&r).unwrap();
        assert_eq!(code(&m), Some(403), "Connect to {addr}");
    }
    std::thread::sleep(Duration::from_millis(300));
    match peer.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the refused peer saw a connection: {other:?}"),
    }
}

#[test]
fn peer_initiated_connection_gets_connection_attempt_and_pipe() {
    let (_server, port, _config) = start("127.0.0.1/32");
    let mut control = Turn::connect(port);
    let relayed = control.allocate_tcp();
    let relayed = SocketAddr::new("127.0.0.1".parse().unwrap(), relayed.port());
    // Without a permission the relay closes the connection at once.
    let mut early = TcpStream::connect(relayed).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = [0u8; 16];
    assert!(matches!(early.read(&mut sink), Ok(0) | Err(_)));
    let r = control.request(
        Method::CreatePermission,
        &[(XOR_PEER_ADDRESS, Attr::Addr("127.0.0.1:1".parse().unwrap()))],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    let mut peer = TcpStream::connect(relayed).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ind = control.read_message();
    let m = Message::parse(&ind).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ConnectionAttempt, Class::Indication)
    );
    let from = attr::decode_xor_addr(m.get(XOR_PEER_ADDRESS).unwrap(), m.transaction_id());
    assert_eq!(from.unwrap(), peer.local_addr().unwrap());
    let id = attr::decode_u32(m.get(CONNECTION_ID).unwrap()).unwrap();
    let mut data = Turn::connect(port);
    let r = data.request(
        Method::ConnectionBind,
        &[(CONNECTION_ID, Attr::Bytes(id.to_be_bytes().to_vec()))],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    data.stream.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    peer.write_all(b"pong!").unwrap();
    let mut got = [0u8; 5];
    data.stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong!");
    // Closing the peer closes the client data connection.
    drop(peer);
    let mut rest = Vec::new();
    assert!(matches!(data.stream.read_to_end(&mut rest), Ok(0) | Err(_)));
}

/// Connect to `peer` on the control connection and bind a new data connection to it;
/// (data connection, the peer's end).
fn pipe_to(control: &mut Turn, port: u16, peer: &TcpListener) -> (Turn, TcpStream) {
    let r = control.request(
        Method::Connect,
        &[(XOR_PEER_ADDRESS, Attr::Addr(peer.local_addr().unwrap()))],
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success, "Connect: {:?}", code(&m));
    let id = attr::decode_u32(m.get(CONNECTION_ID).unwrap()).unwrap();
    let (from_relay, _) = peer.accept().unwrap();
    from_relay
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut data = Turn::connect(port);
    let r = data.request(
        Method::ConnectionBind,
        &[(CONNECTION_ID, Attr::Bytes(id.to_be_bytes().to_vec()))],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    (data, from_relay)
}

/// One message each way through a pipe.
fn ping(data: &mut Turn, peer: &mut TcpStream, what: &str) {
    data.stream.write_all(what.as_bytes()).unwrap();
    let mut got = vec![0u8; what.len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, what.as_bytes());
    peer.write_all(what.as_bytes()).unwrap();
    data.stream.read_exact(&mut got).unwrap();
    assert_eq!(got, what.as_bytes());
}

/// Whether `s` is closed by the other side within `wait` (EOF or reset; data read on the
/// way is discarded).
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_reload_that_removes_the_route_closes_its_pipes() {
    // Two peers on two loopback addresses, each admitted by its own cluster and route.
    let peer_a = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_b = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = free_udp_tcp_port();
    let config = write_config(&config_text(
        port,
        &[("peers-a", "127.0.0.1/32"), ("peers-b", "127.0.0.2/32")],
    ));
    let mut server = spawn(port, &config, true);
    let mut control = Turn::connect(port);
    let _ = control.allocate_tcp();
    let (mut data_a, mut relay_a) = pipe_to(&mut control, port, &peer_a);
    let (mut data_b, mut relay_b) = pipe_to(&mut control, port, &peer_b);
    ping(&mut data_a, &mut relay_a, "before the reload, a");
    ping(&mut data_b, &mut relay_b, "before the reload, b");

    // The route to peer A goes away; the listener itself does not change.
    let tmp = config.with_extension("rewrite");
    std::fs::write(&tmp, config_text(port, &[("peers-b", "127.0.0.2/32")])).unwrap();
    std::fs::rename(&tmp, &config).unwrap();

    // Pipe A closes, both at the peer and at the client data connection...
    assert!(
        closed_within(&mut relay_a, Duration::from_secs(10)),
        "the peer connection of the removed route stays open\n{}",
        server.log()
    );
    assert!(
        closed_within(&mut data_a.stream, Duration::from_secs(5)),
        "the client data connection of the removed route stays open"
    );
    server.assert_running("after the reload");
    // ...pipe B, whose route stays, goes on...
    ping(&mut data_b, &mut relay_b, "after the reload, b");
    // ...and a new Connect to peer A on the same control connection (its allocation
    // lives on) is 403, without a connection attempt.
    peer_a.set_nonblocking(true).unwrap();
    let r = control.request(
        Method::Connect,
        &[(XOR_PEER_ADDRESS, Attr::Addr(peer_a.local_addr().unwrap()))],
    );
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(403));
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(
        peer_a.accept(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    ));
    assert!(
        server.log().contains("no longer admits"),
        "{}",
        server.log()
    );
}

/// coturn's turnutils_uclient in its RFC 6062 mode (`-T`, which implies client to client):
/// two clients each hold a TCP allocation; one Connects to the other's relayed address, the
/// other gets a ConnectionAttempt for that connection; both bind a data connection with the
/// nonce of their control connection and exchange messages through the two relays. Over
/// TURN-TCP and TURN-TLS, with a few message sizes, everything arrives.
#[test]
fn coturn_uclient_tcp_relay_mode_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (tcp, tls) = (free_udp_tcp_port(), free_udp_tcp_port());
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "rfc6062-uclient", "healthcheck_endpoint": ""},
            "auth": {"type": "static", "credentials": {"username": USER, "password": PASS}},
            "listeners": [
                {"name": "tcp", "protocol": "TURN-TCP", "address": "127.0.0.1", "port": tcp,
                 "routes": ["relays"]},
                {"name": "tls", "protocol": "TURN-TLS", "address": "127.0.0.1", "port": tls,
                 "routes": ["relays"], "cert": cert.to_str().unwrap(),
                 "key": key.to_str().unwrap()}
            ],
            // The peers are the clients' own relayed addresses.
            "clusters": [{"name": "relays", "endpoints": ["127.0.0.1/32"]}],
        })
        .to_string(),
    );
    let mut server = spawn(tcp, &config, false);
    for (port, secure, size) in [(tcp, false, 100), (tcp, false, 1001), (tls, true, 333)] {
        let mut args = vec!["-T".to_string()];
        if secure {
            args.push("-S".into());
        }
        let port = port.to_string();
        let size = size.to_string();
        for a in [
            "-u",
            USER,
            "-w",
            PASS,
            "-p",
            &port,
            "-n",
            "10",
            "-m",
            "1",
            "-l",
            &size,
            "-z",
            "5",
            "127.0.0.1",
        ] {
            args.push(a.into());
        }
        let r = run_uclient(&args);
        server.assert_running("after uclient -T");
        // Two clients, 10 messages each.
        r.assert_all_echoed(20, &server.log());
        assert_eq!(r.lost_pct, Some(0.0), "{}", r.output);
    }
}
