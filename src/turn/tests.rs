//! The core driven with fake time and fake relay sockets.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{NonceKey, rest_password};
use super::*;
use crate::snapshot::testing::snapshot_with_clusters;
use crate::snapshot::{Auth, Snapshot, long_term_key};
use crate::stun::attr::{self, *};
use crate::stun::{Class, Message, MessageWriter, Method};

const REALM_: &str = "stunner.l7mp.io";

#[derive(Default)]
struct FakeRelays {
    next: u32,
    open: BTreeSet<u32>,
    /// Held reservations: token -> port.
    reserved: Vec<(u64, u16)>,
    capacity: Option<usize>,
    last_request: Option<RelayRequest>,
    /// RFC 6062: connects the core asked for, and peer connections it closed.
    connects: Vec<(RelayId, SocketAddr, ConnectionId)>,
    closed_peers: Vec<ConnectionId>,
    /// Messages the core sent to client transports on its own.
    sent: std::collections::VecDeque<(TransportId, Vec<u8>)>,
    /// Allocations per quota key, and the cap a TURN REST credential gets (0: none).
    quotas: std::collections::HashMap<Arc<str>, u32>,
    ephemeral_cap: u32,
    /// A fake kernel offload: its epoch (None: off), the routes installed with the
    /// counters the "kernel" has for them, and what the core reported as counted.
    offload: Option<u64>,
    routes: std::collections::HashMap<OffloadRoute, OffloadCounters>,
    counted: OffloadCounters,
}

impl Relays for FakeRelays {
    fn open(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
        self.last_request = Some(req);
        if self.capacity.is_some_and(|c| self.open.len() >= c) {
            return Err(RelayError::Exhausted);
        }
        let relay = self.next;
        let mut port = 50_000 + 2 * relay as u16;
        let mut token = None;
        match req.port {
            PortRequest::Reserved(t) => {
                let pos = self
                    .reserved
                    .iter()
                    .position(|r| r.0 == t)
                    .ok_or(RelayError::UnknownToken)?;
                port = self.reserved.swap_remove(pos).1;
            }
            PortRequest::Even { reserve_next: true } => {
                let t = 1000 + u64::from(relay);
                self.reserved.push((t, port + 1));
                token = Some(t);
            }
            _ => {}
        }
        self.next += 1;
        self.open.insert(relay);
        Ok(Opened {
            relay: RelayId(relay),
            port,
            token,
        })
    }

    fn close(&mut self, relay: RelayId) {
        assert!(
            self.open.remove(&relay.0),
            "closed a relay twice or never opened"
        );
    }

    fn connect(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        conn: ConnectionId,
    ) -> Result<(), RelayError> {
        self.connects.push((relay, peer, conn));
        Ok(())
    }

    fn close_peer(&mut self, conn: ConnectionId) {
        self.closed_peers.push(conn);
    }

    fn send_to_client(&mut self, transport: TransportId, bytes: &[u8]) {
        self.sent.push_back((transport, bytes.to_vec()));
    }

    fn reserve_quota(&mut self, key: &Arc<str>, quota: crate::turn::Quota) -> bool {
        let cap = match quota {
            crate::turn::Quota::Configured(q) => q,
            crate::turn::Quota::Ephemeral => self.ephemeral_cap,
        };
        let n = self.quotas.entry(key.clone()).or_insert(0);
        if cap > 0 && *n >= cap {
            return false;
        }
        *n += 1;
        true
    }

    fn release_quota(&mut self, key: &Arc<str>) {
        if let Some(n) = self.quotas.get_mut(key) {
            *n -= 1;
        }
    }

    fn offload_epoch(&self) -> Option<u64> {
        self.offload
    }

    fn offload_install(&mut self, route: &OffloadRoute) -> bool {
        assert!(
            self.routes
                .insert(*route, OffloadCounters::default())
                .is_none(),
            "installed twice: {route:?}"
        );
        self.offload.is_some()
    }

    fn offload_read(&mut self, route: &OffloadRoute) -> Option<OffloadCounters> {
        self.routes.get(route).copied()
    }

    fn offload_remove(&mut self, route: &OffloadRoute) -> Option<OffloadCounters> {
        self.routes.remove(route)
    }

    fn offload_counted(&mut self, _: TransportId, delta: &OffloadCounters) {
        self.counted += delta;
    }
}

struct Harness {
    server: Server,
    snap: Snapshot,
    relays: FakeRelays,
    now: Now,
    out: Vec<u8>,
}

/// A client-side view of one 5-tuple.
struct Client {
    addr: SocketAddr,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    seq: std::cell::Cell<u8>,
}

fn now0() -> Now {
    Now {
        // The tests are the core's shell here: they give it a starting instant.
        #[allow(clippy::disallowed_methods)]
        mono: Instant::now(),
        unix: 1_800_000_000,
    }
}

impl Harness {
    fn new(clusters: &[(&str, &[&str])]) -> Harness {
        Harness {
            server: Server::new(NonceKey::from_bytes([9; 32])),
            snap: snapshot_with_clusters(clusters),
            relays: FakeRelays::default(),
            now: now0(),
            out: vec![0; 2048],
        }
    }

    fn local() -> Harness {
        Harness::new(&[("local", &["127.0.0.1/32", "8.8.8.8"])])
    }

    fn client(&self, addr: &str) -> Client {
        Client {
            addr: addr.parse().unwrap(),
            username: "user".into(),
            key: long_term_key("user", REALM_, "pass"),
            nonce: Vec::new(),
            seq: std::cell::Cell::new(0),
        }
    }

    fn ctx(&self, c: &Client) -> ClientCtx {
        ClientCtx {
            transport: TransportId(0),
            listener: 0,
            client: c.addr,
            stream: false,
        }
    }

    /// Send raw bytes from the client; returns the reply bytes, or the output kind.
    fn send(&mut self, c: &Client, bytes: &[u8]) -> Outcome {
        let ctx = self.ctx(c);
        match self.server.handle_client(
            self.now,
            &self.snap,
            ctx,
            bytes,
            &mut self.out,
            &mut self.relays,
        ) {
            ClientOutput::Reply(n) | ClientOutput::Unverified(n) => {
                Outcome::Reply(self.out[..n].to_vec())
            }
            ClientOutput::Drop(r) => Outcome::Drop(r),
            ClientOutput::Forward {
                relay,
                peer,
                payload,
            } => Outcome::Forward(relay, peer, payload.to_vec()),
            other => panic!("unexpected RFC 6062 output {other:?}"),
        }
    }

    /// An authenticated request (fetching a nonce first if the client has none).
    fn request(&mut self, c: &mut Client, method: Method, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        if c.nonce.is_empty() {
            let r = self.send(c, &build(c, method, attrs, false));
            let r = r.reply();
            let m = Message::parse(&r).unwrap();
            assert_eq!(error_code(&m), Some(401));
            c.nonce = m.get(NONCE).unwrap().to_vec();
            assert_eq!(m.get(REALM).unwrap(), REALM_.as_bytes());
        }
        self.send(c, &build(c, method, attrs, true)).reply()
    }

    fn allocate(&mut self, c: &mut Client) -> SocketAddr {
        let r = self.request(c, Method::Allocate, &[udp()]);
        let m = Message::parse(&r).unwrap();
        assert_eq!(
            m.class(),
            Class::Success,
            "allocate failed: {:?}",
            error_code(&m)
        );
        assert!(m.verify_integrity(&c.key));
        attr::decode_xor_addr(m.get(XOR_RELAYED_ADDRESS).unwrap(), m.transaction_id()).unwrap()
    }

    fn peer(
        &mut self,
        relay: u32,
        from: &str,
        payload: &[u8],
    ) -> Result<(SocketAddr, Vec<u8>), DropReason> {
        let mut buf = vec![0u8; HEADROOM + payload.len()];
        buf[HEADROOM..].copy_from_slice(payload);
        let mut scratch = vec![0u8; 2048];
        self.server
            .handle_peer(
                self.now,
                &self.snap,
                RelayId(relay),
                from.parse().unwrap(),
                &mut buf,
                payload.len(),
                &mut scratch,
            )
            .map(|t| (t.client, t.bytes.to_vec()))
    }

    fn advance(&mut self, secs: u64) {
        self.now = self.now.advance(Duration::from_secs(secs));
        self.server.handle_timeout(self.now, &mut self.relays);
    }
}

#[derive(Debug)]
enum Outcome {
    Reply(Vec<u8>),
    Drop(DropReason),
    Forward(RelayId, SocketAddr, Vec<u8>),
}

impl Outcome {
    fn drop_reason(&self) -> Option<DropReason> {
        match self {
            Outcome::Drop(r) => Some(*r),
            _ => None,
        }
    }

    fn reply(self) -> Vec<u8> {
        match self {
            Outcome::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

fn build(c: &Client, method: Method, attrs: &[(u16, Vec<u8>)], auth: bool) -> Vec<u8> {
    c.seq.set(c.seq.get() + 1);
    let tid = [c.seq.get(); 12];
    build_tid(c, method, attrs, auth, tid)
}

fn build_tid(
    c: &Client,
    method: Method,
    attrs: &[(u16, Vec<u8>)],
    auth: bool,
    tid: [u8; 12],
) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut w = MessageWriter::new(&mut buf, method, Class::Request, &tid).unwrap();
    for (t, v) in attrs {
        if *t == XOR_PEER_ADDRESS {
            let addr: SocketAddr = std::str::from_utf8(v).unwrap().parse().unwrap();
            w.add_xor_addr(*t, addr).unwrap();
        } else {
            w.add(*t, v).unwrap();
        }
    }
    if auth {
        w.add(USERNAME, c.username.as_bytes()).unwrap();
        w.add(REALM, REALM_.as_bytes()).unwrap();
        w.add(NONCE, &c.nonce).unwrap();
        w.add_integrity(&c.key).unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn udp() -> (u16, Vec<u8>) {
    (REQUESTED_TRANSPORT, vec![17, 0, 0, 0])
}

fn peer_attr(addr: &str) -> (u16, Vec<u8>) {
    (XOR_PEER_ADDRESS, addr.as_bytes().to_vec())
}

fn lifetime(secs: u32) -> (u16, Vec<u8>) {
    (LIFETIME, secs.to_be_bytes().to_vec())
}

fn channel(n: u16) -> (u16, Vec<u8>) {
    let [a, b] = n.to_be_bytes();
    (CHANNEL_NUMBER, vec![a, b, 0, 0])
}

fn error_code(m: &Message<'_>) -> Option<u16> {
    m.get(ERROR_CODE)
        .map(|v| attr::decode_error_code(v).unwrap().0)
}

fn code_of(r: &[u8]) -> Option<u16> {
    error_code(&Message::parse(r).unwrap())
}

fn send_indication(peer: &str, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut w = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &[5; 12]).unwrap();
    w.add_xor_addr(XOR_PEER_ADDRESS, peer.parse().unwrap())
        .unwrap();
    w.add(DATA, data).unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn channel_data(n: u16, data: &[u8]) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn binding_answers_without_auth() {
    let mut h = Harness::local();
    let c = h.client("192.0.2.7:4000");
    let r = h.send(&c, &build(&c, Method::Binding, &[], false)).reply();
    let m = Message::parse(&r).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Binding, Class::Success));
    assert!(m.has_fingerprint());
    let mapped = attr::decode_xor_addr(m.get(XOR_MAPPED_ADDRESS).unwrap(), m.transaction_id());
    assert_eq!(mapped.unwrap(), c.addr);
}

#[test]
fn allocate_challenge_then_success() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    let relayed = h.allocate(&mut c);
    assert_eq!(relayed, "127.0.0.1:50000".parse().unwrap());
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.relays.open.len(), 1);
    assert_eq!(h.server.stats().auth_challenges, 1);
}

#[test]
fn allocate_retransmit_gets_cached_answer_and_new_transaction_gets_437() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    c.seq.set(c.seq.get() - 1); // same transaction id again
    let again = build(&c, Method::Allocate, &[udp()], true);
    let r1 = h.send(&c, &again).reply();
    let m = Message::parse(&r1).unwrap();
    assert_eq!(m.class(), Class::Success);
    let r2 = h.request(&mut c, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r2), Some(437));
    assert!(Message::parse(&r2).unwrap().verify_integrity(&c.key));
    assert_eq!(h.relays.open.len(), 1);
}

#[test]
fn allocate_error_codes() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    let r = h.request(&mut c, Method::Allocate, &[]);
    assert_eq!(code_of(&r), Some(400), "missing REQUESTED-TRANSPORT");
    let r = h.request(
        &mut c,
        Method::Allocate,
        &[(REQUESTED_TRANSPORT, vec![6, 0, 0, 0])],
    );
    // RFC 6062 section 5.1: TCP relaying over a UDP client transport is 400 (tcp.rs has
    // the stream side); other protocols are 442.
    assert_eq!(code_of(&r), Some(400));
    let r = h.request(
        &mut c,
        Method::Allocate,
        &[(REQUESTED_TRANSPORT, vec![1, 0, 0, 0])],
    );
    assert_eq!(code_of(&r), Some(442));
    let r = h.request(
        &mut c,
        Method::Allocate,
        &[udp(), (REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0])],
    );
    assert_eq!(
        code_of(&r),
        Some(440),
        "IPv6 relay behind an IPv4 listener address"
    );
    let r = h.request(
        &mut c,
        Method::Allocate,
        &[udp(), (REQUESTED_ADDRESS_FAMILY, vec![9, 0, 0, 0])],
    );
    assert_eq!(code_of(&r), Some(440));
    let r = h.request(
        &mut c,
        Method::Allocate,
        &[udp(), (RESERVATION_TOKEN, vec![1; 8])],
    );
    assert_eq!(code_of(&r), Some(508), "unknown reservation token");
    let r = h.request(
        &mut c,
        Method::Allocate,
        &[
            udp(),
            (RESERVATION_TOKEN, vec![1; 8]),
            (EVEN_PORT, vec![0x80]),
        ],
    );
    assert_eq!(code_of(&r), Some(400));
    h.relays.capacity = Some(0);
    let r = h.request(&mut c, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(508));
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::local();
    let c = h.client("192.0.2.7:4000");
    let r = h.send(
        &c,
        &build(
            &c,
            Method::Allocate,
            &[udp(), (0x0031, vec![1, 2, 3, 4]), (0x8077, vec![])],
            false,
        ),
    );
    let r = r.reply();
    let m = Message::parse(&r).unwrap();
    assert_eq!(error_code(&m), Some(420));
    assert_eq!(m.get(UNKNOWN_ATTRIBUTES).unwrap(), &[0x00, 0x31]);
}

#[test]
fn dont_fragment_is_understood_and_passed_to_the_relay() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    let r = h.request(&mut c, Method::Allocate, &[udp(), (DONT_FRAGMENT, vec![])]);
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    assert!(h.relays.last_request.unwrap().dont_fragment);
}

#[test]
fn wrong_password_and_stale_nonce() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    c.key = long_term_key("user", REALM_, "wrong");
    let r = h.request(&mut c, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));
    let mut c = h.client("192.0.2.7:4001");
    c.username = "mallory".into();
    c.key = long_term_key("mallory", REALM_, "pass");
    let r = h.request(&mut c, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));

    let mut c = h.client("192.0.2.7:4002");
    h.allocate(&mut c);
    // Keep the allocation alive past the nonce lifetime.
    h.request(&mut c, Method::Refresh, &[lifetime(3600)]);
    h.advance(auth::NONCE_LIFETIME_SECS - 100);
    h.request(&mut c, Method::Refresh, &[lifetime(3600)]);
    h.advance(101);
    let r = h.send(&c, &build(&c, Method::Refresh, &[], true)).reply();
    let m = Message::parse(&r).unwrap();
    assert_eq!(error_code(&m), Some(438));
    assert!(m.get(NONCE).is_some() && m.get(REALM).is_some());
    // A nonce made for another client address is stale for this one.
    let mut other = h.client("192.0.2.8:4002");
    other.nonce = m.get(NONCE).unwrap().to_vec();
    let r = h
        .send(&other, &build(&other, Method::Allocate, &[udp()], true))
        .reply();
    assert_eq!(code_of(&r), Some(438));
    // With the fresh nonce the refresh works.
    c.nonce = m.get(NONCE).unwrap().to_vec();
    let r = h.send(&c, &build(&c, Method::Refresh, &[], true)).reply();
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    // MESSAGE-INTEGRITY without NONCE is a bad request.
    c.nonce.clear();
    let mut tid_client = h.client("192.0.2.7:4002");
    tid_client.nonce = Vec::new();
    let mut buf = vec![0u8; 256];
    let mut w = MessageWriter::new(&mut buf, Method::Refresh, Class::Request, &[1; 12]).unwrap();
    w.add(USERNAME, b"user").unwrap();
    w.add_integrity(&c.key).unwrap();
    let n = w.finish();
    let r = h.send(&c, &buf[..n]).reply();
    assert_eq!(code_of(&r), Some(400));
}

#[test]
fn refresh_lifetimes_and_delete() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    let lt =
        |r: &[u8]| attr::decode_u32(Message::parse(r).unwrap().get(LIFETIME).unwrap()).unwrap();
    let r = h.request(&mut c, Method::Refresh, &[lifetime(7200)]);
    assert_eq!(lt(&r), 3600);
    let r = h.request(&mut c, Method::Refresh, &[lifetime(10)]);
    assert_eq!(lt(&r), 600);
    let r = h.request(&mut c, Method::Refresh, &[lifetime(0)]);
    assert_eq!(lt(&r), 0);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.relays.open.is_empty());
    let r = h.request(&mut c, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(437));
    let r = h.request(
        &mut c,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:9")],
    );
    assert_eq!(code_of(&r), Some(437));
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:9")],
    );
    assert_eq!(code_of(&r), Some(437));
}

#[test]
fn allocation_expires_on_time() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.relays.open.is_empty());
    assert_eq!(h.server.stats().allocations_expired, 1);
    assert_eq!(h.server.poll_timeout(), None);
}

/// An optional send rate per allocation: ChannelData and Send over a second's budget are
/// dropped and counted, and the budget refills with time.
#[test]
fn allocation_send_rate_is_enforced_when_set() {
    let mut h = Harness::local();
    h.server.set_send_rate(1000);
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:9")],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    let frame = |len: usize| {
        let mut f = vec![0x40, 0x00];
        f.extend_from_slice(&(len as u16).to_be_bytes());
        f.extend(std::iter::repeat_n(7u8, len));
        f
    };
    let outcomes: Vec<bool> = (0..4)
        .map(|_| matches!(h.send(&c, &frame(300)), Outcome::Forward(..)))
        .collect();
    assert_eq!(outcomes, [true, true, true, false], "1,000 bytes a second");
    let dropped = h.server.stats().drops[DropReason::RateLimited as usize];
    assert_eq!(dropped, 1);
    h.now = h.now.advance(Duration::from_millis(300));
    assert!(
        matches!(h.send(&c, &frame(300)), Outcome::Forward(..)),
        "refilled"
    );
}

/// The timer wakes the core only when an allocation, permission or channel is due, for the
/// allocation that is due: a permission's expiry is its own deadline, and a Refresh that
/// extends an allocation is not cut short by its earlier deadline.
#[test]
fn timers_follow_each_allocations_own_deadlines() {
    let secs = Duration::from_secs;
    let mut h = Harness::local();
    let mut a = h.client("192.0.2.7:4000");
    let mut b = h.client("192.0.2.8:4000");
    h.allocate(&mut a);
    h.allocate(&mut b);
    let t0 = h.now.mono;
    assert_eq!(h.server.poll_timeout(), Some(t0 + secs(600)));
    // a's permission expires in 300 s, before any allocation does.
    let r = h.request(
        &mut a,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:9")],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    assert_eq!(h.server.poll_timeout(), Some(t0 + secs(300)));
    assert!(h.peer(0, "127.0.0.1:9", b"early").is_ok());
    h.advance(300);
    assert_eq!(
        h.peer(0, "127.0.0.1:9", b"late"),
        Err(DropReason::NoPermission)
    );
    assert_eq!(h.server.poll_timeout(), Some(t0 + secs(600)));
    // a extends to an hour; b expires at 600 s and a lives on.
    let r = h.request(&mut a, Method::Refresh, &[lifetime(3600)]);
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    h.advance(300);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().allocations_expired, 1);
    assert_eq!(h.server.poll_timeout(), Some(t0 + secs(300 + 3600)));
    h.advance(3299);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn permissions_send_and_data_indications() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    // No permission yet: both directions drop.
    assert!(matches!(
        h.send(&c, &send_indication("127.0.0.1:7000", b"hi")),
        Outcome::Drop(DropReason::NoPermission)
    ));
    assert_eq!(
        h.peer(0, "127.0.0.1:7000", b"yo"),
        Err(DropReason::NoPermission)
    );

    let r = h.request(
        &mut c,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:7000")],
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert!(m.verify_integrity(&c.key));
    match h.send(&c, &send_indication("127.0.0.1:7000", b"hi")) {
        Outcome::Forward(relay, peer, data) => {
            assert_eq!(
                (relay, peer, data.as_slice()),
                (RelayId(0), "127.0.0.1:7000".parse().unwrap(), &b"hi"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    // Any port of the permitted IP may answer, as a Data indication.
    let (to, bytes) = h.peer(0, "127.0.0.1:7001", b"yo").unwrap();
    assert_eq!(to, c.addr);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Data, Class::Indication));
    assert_eq!(m.get(DATA).unwrap(), b"yo");
    let from = attr::decode_xor_addr(m.get(XOR_PEER_ADDRESS).unwrap(), m.transaction_id()).unwrap();
    assert_eq!(from, "127.0.0.1:7001".parse().unwrap());
    // Another IP still has no permission.
    assert_eq!(h.peer(0, "8.8.8.8:53", b"x"), Err(DropReason::NoPermission));
    // Permissions last 300 s.
    h.advance(300);
    assert_eq!(
        h.peer(0, "127.0.0.1:7000", b"yo"),
        Err(DropReason::NoPermission)
    );
}

#[test]
fn create_permission_refuses_peers_outside_routes() {
    let mut h = Harness::new(&[("any", &["0.0.0.0/0"]), ("local", &["127.0.0.1/32"])]);
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    for peer in [
        "127.0.0.2:7000",
        "10.0.0.1:1",
        "169.254.169.254:80",
        "0.0.0.0:1",
    ] {
        let r = h.request(&mut c, Method::CreatePermission, &[peer_attr(peer)]);
        assert_eq!(code_of(&r), Some(403), "{peer}");
    }
    // All or nothing: one bad peer refuses the request and installs none.
    let r = h.request(
        &mut c,
        Method::CreatePermission,
        &[peer_attr("8.8.8.8:53"), peer_attr("10.0.0.1:1")],
    );
    assert_eq!(code_of(&r), Some(403));
    assert_eq!(h.peer(0, "8.8.8.8:53", b"x"), Err(DropReason::NoPermission));
    let r = h.request(
        &mut c,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:7000"), peer_attr("8.8.8.8:53")],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    let r = h.request(&mut c, Method::CreatePermission, &[]);
    assert_eq!(code_of(&r), Some(400));
}

#[test]
fn wildcard_route_does_not_open_loopback() {
    let mut h = Harness::new(&[("any", &["0.0.0.0/0"])]);
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    for peer in ["127.0.0.1:7000", "[::ffff:127.0.0.1]:7000"] {
        let r = h.request(&mut c, Method::CreatePermission, &[peer_attr(peer)]);
        assert_eq!(code_of(&r), Some(403), "{peer}");
        let r = h.request(
            &mut c,
            Method::ChannelBind,
            &[channel(0x4001), peer_attr(peer)],
        );
        assert_eq!(code_of(&r), Some(403), "{peer}");
    }
}

#[test]
fn channel_bind_rules_and_channel_data_both_ways() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    for bad in [0x0000, 0x3FFF, 0x8000, 0xFFFF] {
        let r = h.request(
            &mut c,
            Method::ChannelBind,
            &[channel(bad), peer_attr("127.0.0.1:7000")],
        );
        assert_eq!(code_of(&r), Some(400), "{bad:#x}");
    }
    let r = h.request(&mut c, Method::ChannelBind, &[channel(0x4000)]);
    assert_eq!(code_of(&r), Some(400), "missing peer");
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:7000")],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    // Rebinding the same pair refreshes; conflicts are 400.
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:7000")],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:7001")],
    );
    assert_eq!(code_of(&r), Some(400));
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4001), peer_attr("127.0.0.1:7000")],
    );
    assert_eq!(code_of(&r), Some(400));
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4002), peer_attr("127.0.0.2:7000")],
    );
    assert_eq!(code_of(&r), Some(403));

    match h.send(&c, &channel_data(0x4000, b"abc")) {
        Outcome::Forward(RelayId(0), peer, data) => {
            assert_eq!(peer, "127.0.0.1:7000".parse().unwrap());
            assert_eq!(data, b"abc");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        h.send(&c, &channel_data(0x4001, b"abc")),
        Outcome::Drop(DropReason::NoPermission)
    ));
    let (to, bytes) = h.peer(0, "127.0.0.1:7000", b"xyz").unwrap();
    assert_eq!(to, c.addr);
    assert_eq!(bytes, channel_data(0x4000, b"xyz"));
    // Another port of the same IP has a permission but no channel: Data indication.
    let (_, bytes) = h.peer(0, "127.0.0.1:7005", b"xyz").unwrap();
    assert_eq!(Message::parse(&bytes).unwrap().method(), Method::Data);
    // Channels last 600 s, even when the allocation lives on.
    h.request(&mut c, Method::Refresh, &[lifetime(3600)]);
    h.advance(600);
    assert!(matches!(
        h.send(&c, &channel_data(0x4000, b"abc")),
        Outcome::Drop(DropReason::NoPermission)
    ));
}

#[test]
fn data_for_unknown_five_tuples_and_relays_is_dropped() {
    let mut h = Harness::local();
    let c = h.client("192.0.2.7:4000");
    assert!(matches!(
        h.send(&c, &channel_data(0x4000, b"abc")),
        Outcome::Drop(DropReason::NoAllocation)
    ));
    assert!(matches!(
        h.send(&c, &send_indication("127.0.0.1:1", b"x")),
        Outcome::Drop(DropReason::NoAllocation)
    ));
    assert_eq!(
        h.peer(42, "127.0.0.1:1", b"x"),
        Err(DropReason::NoAllocation)
    );
    assert!(matches!(
        h.send(&c, &[0xff; 30]),
        Outcome::Drop(DropReason::Malformed)
    ));
    assert!(matches!(
        h.send(&c, &[0x00; 3]),
        Outcome::Drop(DropReason::Malformed)
    ));
}

#[test]
fn new_snapshot_without_the_route_revokes_channels_lazily() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:7000")],
    );
    assert!(matches!(
        h.send(&c, &channel_data(0x4000, b"a")),
        Outcome::Forward(..)
    ));
    let mut next = snapshot_with_clusters(&[("other", &["8.8.8.8"])]);
    next.generation = 2;
    h.snap = next;
    assert!(matches!(
        h.send(&c, &channel_data(0x4000, b"a")),
        Outcome::Drop(DropReason::Forbidden)
    ));
    assert_eq!(
        h.peer(0, "127.0.0.1:7000", b"x"),
        Err(DropReason::Forbidden)
    );
}

#[test]
fn ephemeral_credentials_expire_and_bind_allocations_to_users() {
    let mut h = Harness::local();
    h.snap.auth = Auth::Ephemeral {
        secrets: vec![b"s3cret".to_vec()],
    };
    let unix = h.now.unix;
    let rest_client = |h: &Harness, addr: &str, username: String| {
        let mut c = h.client(addr);
        c.key = long_term_key(&username, REALM_, &rest_password(b"s3cret", &username));
        c.username = username;
        c
    };
    let mut c = rest_client(&h, "192.0.2.7:4000", format!("{}:alice", unix + 100));
    h.allocate(&mut c);
    let mut expired = rest_client(&h, "192.0.2.7:4001", format!("{}:bob", unix - 1));
    let r = h.request(&mut expired, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));
    // Another user on alice's 5-tuple may not touch her allocation.
    let mut mallory = rest_client(&h, "192.0.2.7:4000", format!("{}:mallory", unix + 100));
    let r = h.request(&mut mallory, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(441));
    // Once alice's credential expires, her refreshes fail.
    h.advance(101);
    let r = h.request(&mut c, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(401));
}

#[test]
fn user_quota_is_enforced() {
    let mut h = Harness::local();
    h.snap.user_quota = 2;
    for port in 1..=2 {
        let mut c = h.client(&format!("192.0.2.7:{port}"));
        h.allocate(&mut c);
    }
    let mut c = h.client("192.0.2.7:3");
    let r = h.request(&mut c, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(486));
}

#[test]
fn even_port_reservation_round_trip() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    let r = h.request(&mut c, Method::Allocate, &[udp(), (EVEN_PORT, vec![0x80])]);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(
        h.relays.last_request.unwrap().port,
        PortRequest::Even { reserve_next: true }
    );
    let token = m.get(RESERVATION_TOKEN).unwrap().to_vec();
    assert_eq!(h.relays.reserved.len(), 1);
    // Another 5-tuple redeems the token and gets port + 1.
    let mut c2 = h.client("192.0.2.7:4001");
    let r = h.request(
        &mut c2,
        Method::Allocate,
        &[udp(), (RESERVATION_TOKEN, token.clone())],
    );
    let m = Message::parse(&r).unwrap();
    let relayed =
        attr::decode_xor_addr(m.get(XOR_RELAYED_ADDRESS).unwrap(), m.transaction_id()).unwrap();
    assert_eq!(relayed.port(), 50_001);
    assert!(h.relays.reserved.is_empty());
    let mut c3 = h.client("192.0.2.7:4002");
    let r = h.request(
        &mut c3,
        Method::Allocate,
        &[udp(), (RESERVATION_TOKEN, token)],
    );
    assert_eq!(code_of(&r), Some(508), "a token works once");
    // Without the R bit no token is handed out.
    let mut c4 = h.client("192.0.2.7:4003");
    let r = h.request(&mut c4, Method::Allocate, &[udp(), (EVEN_PORT, vec![0x00])]);
    assert!(Message::parse(&r).unwrap().get(RESERVATION_TOKEN).is_none());
}

#[test]
fn responses_carry_fingerprint_when_the_request_did() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    let mut bytes = build(&c, Method::Refresh, &[], true);
    // Append a FINGERPRINT to the request.
    let mut buf = vec![0u8; bytes.len() + 8];
    buf[..bytes.len()].copy_from_slice(&bytes);
    let body = (bytes.len() + 8 - 20) as u16;
    buf[2..4].copy_from_slice(&body.to_be_bytes());
    let crc = crc32fast::hash(&{
        let mut b = buf[..bytes.len()].to_vec();
        b[2..4].copy_from_slice(&body.to_be_bytes());
        b
    }) ^ crate::stun::FINGERPRINT_XOR;
    buf[bytes.len()..bytes.len() + 4].copy_from_slice(&[0x80, 0x28, 0, 4]);
    buf[bytes.len() + 4..].copy_from_slice(&crc.to_be_bytes());
    bytes = buf;
    let r = h.send(&c, &bytes).reply();
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert!(m.has_fingerprint());
    assert!(m.verify_integrity(&c.key));
}

#[test]
fn responses_and_indications_from_clients_are_ignored() {
    let mut h = Harness::local();
    let c = h.client("192.0.2.7:4000");
    let mut buf = vec![0u8; 64];
    let n = MessageWriter::new(&mut buf, Method::Allocate, Class::Success, &[1; 12])
        .unwrap()
        .finish();
    assert!(matches!(
        h.send(&c, &buf[..n]),
        Outcome::Drop(DropReason::Unexpected)
    ));
    let n = MessageWriter::new(&mut buf, Method::Binding, Class::Indication, &[1; 12])
        .unwrap()
        .finish();
    assert!(matches!(
        h.send(&c, &buf[..n]),
        Outcome::Drop(DropReason::Unexpected)
    ));
    let n = MessageWriter::new(&mut buf, Method::Other(0x0FF), Class::Request, &[1; 12])
        .unwrap()
        .finish();
    assert_eq!(code_of(&h.send(&c, &buf[..n]).reply()), Some(400));
}

#[test]
fn hostile_sequences_never_panic_or_leak() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:7000")],
    );
    let valid = [
        build(&c, Method::Refresh, &[], true),
        channel_data(0x4000, b"abcd"),
        send_indication("127.0.0.1:7000", b"x"),
    ];
    for i in 0..20_000 {
        let mut m = valid[i % valid.len()].clone();
        let flips = rng.random_range(0..4);
        for _ in 0..flips {
            let at = rng.random_range(0..m.len());
            m[at] = rng.random();
        }
        let cut = rng.random_range(0..=m.len());
        m.truncate(cut);
        let _ = h.send(&c, &m);
        let _ = h.peer(rng.random_range(0..3), "127.0.0.1:7000", &m);
    }
    // Whatever happened, the table and the relays agree.
    h.advance(3601);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.relays.open.is_empty());
}

#[test]
fn cluster_traffic_is_counted_per_cluster_and_survives_generations() {
    let mut h = Harness::new(&[("a", &["127.0.0.1/32"]), ("b", &["8.8.8.8"])]);
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:7000")],
    );
    h.request(&mut c, Method::CreatePermission, &[peer_attr("8.8.8.8:53")]);
    h.send(&c, &channel_data(0x4000, b"abc"));
    h.send(&c, &send_indication("8.8.8.8:53", b"12345"));
    h.peer(0, "127.0.0.1:7000", b"xy").unwrap();
    let mut next = snapshot_with_clusters(&[("a", &["127.0.0.1/32"]), ("b", &["8.8.8.8"])]);
    next.generation = 2;
    h.snap = next;
    h.send(&c, &channel_data(0x4000, b"abcd"));
    let mut seen = Vec::new();
    h.server
        .for_each_cluster(|n, t| seen.push((n.to_string(), t)));
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "a");
    assert_eq!(
        (
            seen[0].1.tx_packets,
            seen[0].1.tx_bytes,
            seen[0].1.rx_packets,
            seen[0].1.rx_bytes
        ),
        (2, 7, 1, 2)
    );
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.tx_packets, seen[1].1.tx_bytes),
        ("b", 1, 5)
    );
}

#[test]
fn ipv6_listener_allocates_ipv6_relays_and_checks_peer_families() {
    let mut h = Harness::new(&[("v6", &["2001:4860::/32", "::1/128"]), ("v4", &["8.8.8.8"])]);
    h.snap.listeners[0].relay_ip = "2001:db8::5".parse().unwrap();
    let mut c = h.client("[2001:db8::7]:4000");
    // No REQUESTED-ADDRESS-FAMILY: the family follows the listener.
    let relayed = h.allocate(&mut c);
    assert_eq!(relayed, "[2001:db8::5]:50000".parse().unwrap());
    assert_eq!(h.relays.last_request.unwrap().family, Family::V6);
    // An IPv4 peer on an IPv6 allocation: 443.
    let r = h.request(&mut c, Method::CreatePermission, &[peer_attr("8.8.8.8:53")]);
    assert_eq!(code_of(&r), Some(443));
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("8.8.8.8:53")],
    );
    assert_eq!(code_of(&r), Some(443));
    // IPv6 peers inside a routed prefix relay; others are refused.
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("[2001:4860::8888]:53")],
    );
    assert_eq!(Message::parse(&r).unwrap().class(), Class::Success);
    let r = h.request(
        &mut c,
        Method::CreatePermission,
        &[peer_attr("[2606:4700::1]:53")],
    );
    assert_eq!(code_of(&r), Some(403));
    match h.send(&c, &channel_data(0x4000, b"v6")) {
        Outcome::Forward(_, peer, _) => assert_eq!(peer, "[2001:4860::8888]:53".parse().unwrap()),
        other => panic!("{other:?}"),
    }
    let (_, bytes) = h.peer(0, "[2001:4860::8888]:53", b"back").unwrap();
    assert_eq!(bytes, channel_data(0x4000, b"back"));
    // Asking for IPv4 behind an IPv6 listener address: 440.
    let mut c2 = h.client("[2001:db8::7]:4001");
    let r = h.request(
        &mut c2,
        Method::Allocate,
        &[udp(), (REQUESTED_ADDRESS_FAMILY, vec![1, 0, 0, 0])],
    );
    assert_eq!(code_of(&r), Some(440));
    // Refresh asking for the other family: 443.
    let r = h.request(
        &mut c,
        Method::Refresh,
        &[(REQUESTED_ADDRESS_FAMILY, vec![1, 0, 0, 0])],
    );
    assert_eq!(code_of(&r), Some(443));
}

mod offload;
mod rotation;
mod sessions;
mod tcp;
