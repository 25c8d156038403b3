//! Per-packet costs: classify + ChannelData parse, the relay decision through the core in
//! both directions, Data indication build, and the MESSAGE-INTEGRITY check.
//!
//! Run: `cargo bench --bench codec`.
// A driver, not the core: clocks, threads and locks are its own (clippy.toml).
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    unreachable_pub
)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stunnerd::snapshot::{Snapshot, long_term_key};
use stunnerd::stun::{ChannelData, Class, Message, MessageWriter, Method, attr, classify};
use stunnerd::turn::auth::NonceKey;
use stunnerd::turn::{
    ClientCtx, ClientOutput, HEADROOM, Now, Opened, RelayError, RelayId, RelayRequest, Relays,
    Server, TransportId,
};

const PAYLOAD: usize = 100;

struct OneRelay;

impl Relays for OneRelay {
    fn open(&mut self, _: RelayRequest) -> Result<Opened, RelayError> {
        Ok(Opened {
            relay: RelayId(0),
            port: 50_000,
            token: None,
        })
    }
    fn close(&mut self, _: RelayId) {}
}

fn snapshot() -> Snapshot {
    let text = r#"{"version":"v1","auth":{"credentials":{"username":"user","password":"pass"}},
      "listeners":[{"name":"udp","address":"127.0.0.1","port":3478,"routes":["local"]}],
      "clusters":[{"name":"local","endpoints":["127.0.0.1/32"]}]}"#;
    let cfg = stunnerd::config::parse_config(text, &|_| None)
        .expect("bench config")
        .config;
    Snapshot::build(cfg, 1).expect("bench snapshot")
}

/// A server with one allocation from `client`, a channel 0x4000 to `peer` and a
/// permission for the peer's IP.
fn server_with_channel(snap: &Snapshot, now: Now, client: SocketAddr, peer: SocketAddr) -> Server {
    let mut server = Server::new(NonceKey::from_bytes([1; 32]));
    let key = long_term_key("user", "stunner.l7mp.io", "pass");
    let ctx = ClientCtx {
        transport: TransportId(0),
        listener: 0,
        client,
        stream: false,
    };
    let mut out = vec![0u8; 2048];
    let mut relays = OneRelay;
    // Get a nonce.
    let mut req = vec![0u8; 512];
    let n = MessageWriter::new(&mut req, Method::Allocate, Class::Request, &[1; 12])
        .unwrap()
        .finish();
    let ClientOutput::Unverified(len) =
        server.handle_client(now, snap, ctx, &req[..n], &mut out, &mut relays)
    else {
        panic!("no challenge")
    };
    let nonce = Message::parse(&out[..len])
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .to_vec();
    let mut tid = 2u8;
    let mut request = |method: Method, f: &dyn Fn(&mut MessageWriter<'_>)| {
        let mut req = vec![0u8; 512];
        let mut w = MessageWriter::new(&mut req, method, Class::Request, &[tid; 12]).unwrap();
        tid += 1;
        f(&mut w);
        w.add(attr::USERNAME, b"user").unwrap();
        w.add(attr::REALM, b"stunner.l7mp.io").unwrap();
        w.add(attr::NONCE, &nonce).unwrap();
        w.add_integrity(&key).unwrap();
        let n = w.finish();
        let ClientOutput::Reply(len) =
            server.handle_client(now, snap, ctx, &req[..n], &mut out, &mut relays)
        else {
            panic!("no response")
        };
        assert_eq!(Message::parse(&out[..len]).unwrap().class(), Class::Success);
    };
    request(Method::Allocate, &|w| {
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap()
    });
    request(Method::ChannelBind, &|w| {
        w.add(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]).unwrap();
        w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer).unwrap();
    });
    server
}

fn codec(c: &mut Criterion) {
    let mut frame = vec![0x40, 0x00, 0x00, PAYLOAD as u8];
    frame.extend_from_slice(&[0xab; PAYLOAD]);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("classify_and_parse_channel_data", |b| {
        b.iter(|| {
            let buf = black_box(&frame[..]);
            let kind = classify(buf);
            let cd = ChannelData::parse(buf).unwrap();
            black_box((kind, cd.number, cd.data.len()))
        })
    });

    let key = long_term_key("user", "stunner.l7mp.io", "pass");
    let mut req = vec![0u8; 512];
    let mut w = MessageWriter::new(&mut req, Method::Refresh, Class::Request, &[7; 12]).unwrap();
    w.add(attr::USERNAME, b"user").unwrap();
    w.add(attr::REALM, b"stunner.l7mp.io").unwrap();
    w.add(attr::NONCE, &[b'a'; 32]).unwrap();
    w.add_integrity(&key).unwrap();
    let n = w.finish();
    req.truncate(n);
    g.bench_function("parse_and_check_message_integrity", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(&req)).unwrap();
            black_box(msg.verify_integrity(&key))
        })
    });
    g.finish();
}

fn relay(c: &mut Criterion) {
    let snap = snapshot();
    let now = stunnerd::transport::now();
    let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let peer: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let mut server = server_with_channel(&snap, now, client, peer);
    let mut relays = OneRelay;
    let ctx = ClientCtx {
        transport: TransportId(0),
        listener: 0,
        client,
        stream: false,
    };
    let mut frame = vec![0x40, 0x00, 0x00, PAYLOAD as u8];
    frame.extend_from_slice(&[0xab; PAYLOAD]);
    let mut out = vec![0u8; 2048];
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("client_channel_data_to_peer", |b| {
        b.iter(|| {
            let r = server.handle_client(now, &snap, ctx, black_box(&frame), &mut out, &mut relays);
            assert!(matches!(r, ClientOutput::Forward { .. }));
        })
    });
    let mut buf = vec![0u8; HEADROOM + PAYLOAD];
    let mut scratch = vec![0u8; 2048];
    g.bench_function("peer_to_client_channel_data", |b| {
        b.iter(|| {
            let r = server.handle_peer(
                now,
                &snap,
                RelayId(0),
                peer,
                &mut buf,
                PAYLOAD,
                &mut scratch,
            );
            black_box(r.unwrap().bytes.len())
        })
    });
    // Another port of the peer's IP has a permission but no channel: Data indication.
    let other: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    g.bench_function("peer_to_client_data_indication", |b| {
        b.iter(|| {
            let r = server.handle_peer(
                now,
                &snap,
                RelayId(0),
                other,
                &mut buf,
                PAYLOAD,
                &mut scratch,
            );
            black_box(r.unwrap().bytes.len())
        })
    });
    g.finish();
}

/// The once-a-second sweep over 100,000 live allocations (nothing expiring): the whole
/// per-second timer cost of a busy worker. The data path itself only compares deadlines.
fn timers(c: &mut Criterion) {
    const N: u32 = 100_000;
    let snap = snapshot();
    let now = stunnerd::transport::now();
    let keys = NonceKey::from_bytes([1; 32]);
    let mut server = Server::new(keys.clone());
    let mut relays = OneRelay;
    let key = long_term_key("user", "stunner.l7mp.io", "pass");
    let mut out = vec![0u8; 1024];
    let mut req = vec![0u8; 512];
    for i in 0..N {
        let client = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000));
        let nonce = keys.make(now.unix, client);
        let tid = [(i % 251) as u8; 12];
        let mut w = MessageWriter::new(&mut req, Method::Allocate, Class::Request, &tid).unwrap();
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
        w.add_u32(attr::LIFETIME, 3600).unwrap();
        w.add(attr::USERNAME, b"user").unwrap();
        w.add(attr::REALM, b"stunner.l7mp.io").unwrap();
        w.add(attr::NONCE, &nonce).unwrap();
        w.add_integrity(&key).unwrap();
        let n = w.finish();
        let ctx = ClientCtx {
            transport: TransportId(0),
            listener: 0,
            client,
            stream: false,
        };
        let r = server.handle_client(now, &snap, ctx, &req[..n], &mut out, &mut relays);
        assert!(matches!(r, ClientOutput::Reply(_)));
    }
    assert_eq!(server.allocation_count(), N as usize);
    let mut g = c.benchmark_group("timers");
    g.sample_size(10);
    let mut t = now;
    g.bench_function("sweep_100k_allocations", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                t = t.advance(Duration::from_secs(1));
                server.handle_timeout(t, &mut relays);
            }
            start.elapsed()
        })
    });
    g.finish();
    assert_eq!(
        server.allocation_count(),
        N as usize,
        "nothing expired during the bench"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = codec, relay, timers
}
criterion_main!(benches);
