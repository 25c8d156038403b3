//! The data path does not allocate: a real UDP worker relays thousands of ChannelData
//! messages, Send indications and Data indications over loopback while a counting global
//! allocator watches every thread of the process. In steady state the count must not move.
//!
//! This file holds one test on purpose: the allocator is global, and another test running
//! beside it would allocate.
// A driver, not the core: clocks, threads and locks are its own (clippy.toml).
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    unreachable_pub
)]

use std::alloc::System;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use stunnerd::snapshot::{Snapshot, Store, long_term_key};
use stunnerd::stun::{Class, Message, MessageWriter, Method, attr};
use stunnerd::transport::relay::Reservations;
use stunnerd::transport::uring::RelayRing;
use stunnerd::transport::worker::{Control, Limits, Worker};
use stunnerd::turn::Server;
use stunnerd::turn::auth::NonceKey;

/// Counts every allocation of every thread in this test process.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROUNDS: usize = 3000;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    nonce: Vec<u8>,
    key: [u8; 16],
    tid: u8,
}

impl Client {
    fn request(&mut self, method: Method, add: &dyn Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        self.tid += 1;
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, &[self.tid; 12]).unwrap();
        add(&mut w);
        if !self.nonce.is_empty() {
            w.add(attr::USERNAME, b"user").unwrap();
            w.add(attr::REALM, b"stunner.l7mp.io").unwrap();
            w.add(attr::NONCE, &self.nonce).unwrap();
            w.add_integrity(&self.key).unwrap();
        }
        let n = w.finish();
        self.sock.send_to(&buf[..n], self.server).unwrap();
        let mut resp = vec![0u8; 2048];
        let n = self.sock.recv(&mut resp).unwrap();
        resp.truncate(n);
        resp
    }
}

#[test]
fn steady_state_relaying_does_not_allocate_epoll() {
    relay_without_allocating(false);
}

/// The same through the io_uring relay path (multishot receives, batched sends), where
/// the kernel offers it.
#[test]
fn steady_state_relaying_does_not_allocate_io_uring() {
    relay_without_allocating(true);
}

/// The counting allocator sees every thread: the two tests must not overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn relay_without_allocating(io_uring: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_udp_port();
    let text = format!(
        r#"{{"version":"v1","auth":{{"credentials":{{"username":"user","password":"pass"}}}},
          "listeners":[{{"name":"udp","address":"127.0.0.1","port":{port},"routes":["local"]}}],
          "clusters":[{{"name":"local","endpoints":["127.0.0.1/32"]}}]}}"#
    );
    let cfg = stunnerd::config::parse_config(&text, &|_| None)
        .unwrap()
        .config;
    let snap = Snapshot::build(cfg, 1).unwrap();
    let store = Store::new(snap);
    let (tx, rx) = mpsc::channel();
    let server = Server::new(NonceKey::from_bytes([7; 32]));
    let (mut worker, handle) = Worker::new(
        0,
        &store.load(),
        store.cache(),
        server,
        rx,
        Reservations::new(),
        Limits::default(),
    )
    .unwrap();
    worker.set_io_uring(io_uring);
    let thread = std::thread::spawn(move || worker.run());

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&peer, &peer2] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut c = Client {
        sock,
        server: SocketAddr::from(([127, 0, 0, 1], port)),
        nonce: Vec::new(),
        key: long_term_key("user", "stunner.l7mp.io", "pass"),
        tid: 0,
    };
    let transport =
        |w: &mut MessageWriter<'_>| w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
    let challenge = c.request(Method::Allocate, &transport);
    c.nonce = Message::parse(&challenge)
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .to_vec();
    let ok = c.request(Method::Allocate, &transport);
    let ok = Message::parse(&ok).unwrap();
    assert_eq!(ok.class(), Class::Success);
    let relayed = attr::decode_xor_addr(
        ok.get(attr::XOR_RELAYED_ADDRESS).unwrap(),
        ok.transaction_id(),
    )
    .unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let bind = c.request(Method::ChannelBind, &|w| {
        w.add(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]).unwrap();
        w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer_addr).unwrap();
    });
    assert_eq!(Message::parse(&bind).unwrap().class(), Class::Success);
    let peer2_addr = peer2.local_addr().unwrap();
    let perm = c.request(Method::CreatePermission, &|w| {
        w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer2_addr).unwrap();
    });
    assert_eq!(Message::parse(&perm).unwrap().class(), Class::Success);

    // Preallocated messages and buffers for the measured loop.
    let mut channel_data = vec![0x40, 0x01, 0x00, 100];
    channel_data.extend_from_slice(&[0xab; 100]);
    let mut send_ind = vec![0u8; 256];
    let n = {
        let mut w =
            MessageWriter::new(&mut send_ind, Method::Send, Class::Indication, &[9; 12]).unwrap();
        w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer2_addr).unwrap();
        w.add(attr::DATA, &[0xcd; 100]).unwrap();
        w.finish()
    };
    send_ind.truncate(n);
    let mut buf = vec![0u8; 2048];
    let relay_round = |c: &Client, buf: &mut [u8]| {
        // ChannelData out, echoed back as ChannelData.
        c.sock.send_to(&channel_data, c.server).unwrap();
        let (n, from) = peer.recv_from(buf).unwrap();
        assert_eq!((n, from), (100, relayed));
        peer.send_to(&buf[..n], relayed).unwrap();
        let n = c.sock.recv(buf).unwrap();
        assert_eq!(&buf[..4], &[0x40, 0x01, 0x00, 100]);
        assert_eq!(n, 104);
        // Send indication out, answered with a Data indication.
        c.sock.send_to(&send_ind, c.server).unwrap();
        let (n, _) = peer2.recv_from(buf).unwrap();
        assert_eq!(n, 100);
        peer2.send_to(&buf[..n], relayed).unwrap();
        let n = c.sock.recv(buf).unwrap();
        assert_eq!(&buf[..2], &[0x00, 0x17], "a Data indication");
        assert!(n > 100);
    };
    // Warm up long enough for the worker to publish its counters a few times: the first
    // publications size the report's vectors.
    let warm = std::time::Instant::now();
    for _ in 0..20_000 {
        relay_round(&c, &mut buf);
        if warm.elapsed() > Duration::from_millis(400) {
            break;
        }
    }
    // Where the kernel has io_uring at all, the worker must be on it when asked.
    let expect_ring = io_uring && RelayRing::kernel_has_io_uring();
    assert_eq!(
        handle.stats.read().io_uring,
        expect_ring,
        "relay path in use (io_uring wanted: {io_uring})"
    );
    let region = Region::new(GLOBAL);
    for _ in 0..ROUNDS {
        relay_round(&c, &mut buf);
    }
    let stats = region.change();

    tx.send(Control::Stop).unwrap();
    handle.waker.wake().unwrap();
    thread.join().unwrap();
    assert_eq!(
        (stats.allocations, stats.reallocations),
        (0, 0),
        "heap allocations while relaying {} datagrams: {stats:?}",
        ROUNDS * 8
    );
}
