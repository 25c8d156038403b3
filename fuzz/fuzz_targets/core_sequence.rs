//! The TURN core driven by random input sequences with a fake clock.
//!
//! Three clients (two IPv4, one IPv6) send requests built from the fuzz input with valid
//! long-term credentials and nonces (or deliberately wrong ones), ChannelData and raw bytes;
//! peers send datagrams to relays; time advances by values from the input and is passed to
//! the core's `handle_*` functions (the core never reads a clock). Checked after every step:
//! * no panic;
//! * live allocations = created - deleted (expiries count as deletions), never more than were created, and each
//!   holds exactly one relay socket (no leak, no double close);
//! * every reply is a well-formed STUN response to the request's transaction, and a success
//!   to an authenticated request carries a MESSAGE-INTEGRITY valid under the user's key;
//! * after time moves past every lifetime, no allocation and no relay remain.
#![no_main]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stunnerd::config::parse_config;
use stunnerd::snapshot::{Snapshot, long_term_key};
use stunnerd::stun::{Class, Message, MessageWriter, Method, attr, write_channel_header};
use stunnerd::turn::auth::NonceKey;
use stunnerd::turn::session::DeleteReason;
use stunnerd::turn::{
    ClientCtx, ClientOutput, HEADROOM, MAX_LIFETIME, Now, Opened, RelayError, RelayId,
    RelayRequest, Relays, Server, TransportId,
};

const REALM: &str = "fuzz.example";
const USER: &str = "alice";
const PASS: &str = "wonderland";
const CONFIG: &str = r#"{
  "version": "v1",
  "admin": {"name": "fuzz"},
  "auth": {"type": "static", "realm": "fuzz.example",
           "credentials": {"username": "alice", "password": "wonderland"}},
  "listeners": [
    {"name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1", "port": 3478,
     "routes": ["media"]},
    {"name": "tcp", "protocol": "TURN-TCP", "address": "127.0.0.1", "port": 3478,
     "routes": ["media"]}
  ],
  "clusters": [
    {"name": "media", "type": "STATIC", "protocol": "UDP",
     "endpoints": ["10.0.0.0/8", "2001:db8::/32"]}
  ]
}"#;

#[derive(Default)]
struct FakeRelays {
    next: u32,
    open: BTreeSet<u32>,
}

impl Relays for FakeRelays {
    fn open(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
        if self.open.len() >= 6 {
            return Err(RelayError::Exhausted);
        }
        self.next += 1;
        self.open.insert(self.next);
        let even = matches!(req.port, stunnerd::turn::PortRequest::Even { .. });
        let port = 40000 + 2 * (self.next % 10000) as u16;
        Ok(Opened {
            relay: RelayId(self.next),
            port: if even { port } else { port + 1 },
            token: None,
        })
    }

    fn close(&mut self, relay: RelayId) {
        assert!(
            self.open.remove(&relay.0),
            "relay {relay:?} closed twice or never opened"
        );
    }
}

const CLIENTS: [&str; 3] = ["192.0.2.1:5000", "192.0.2.2:6000", "[2001:db8:1::1]:7000"];
const PEERS: [&str; 6] = [
    "10.0.0.1:9000",
    "10.0.0.2:9001",
    "[2001:db8::2]:9002",
    "192.0.2.200:9003",
    "127.0.0.1:9004",
    "[::ffff:10.0.0.1]:9000",
];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("constant address")
}

/// Reads the input as a stream of bytes; 0 once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

struct Sent {
    tid: [u8; 12],
    authed: bool,
}

/// Build a request (or indication) from the input. Returns its length and what to check.
fn request(
    inp: &mut Input,
    now: Now,
    nonces: &NonceKey,
    client: SocketAddr,
    out: &mut [u8],
) -> Option<(usize, Sent)> {
    let m = inp.byte();
    let (method, class) = match m % 9 {
        0 | 1 => (Method::Allocate, Class::Request),
        2 => (Method::Refresh, Class::Request),
        3 => (Method::CreatePermission, Class::Request),
        4 => (Method::ChannelBind, Class::Request),
        5 => (Method::Send, Class::Indication),
        6 => (Method::Binding, Class::Request),
        7 => (Method::Connect, Class::Request),
        _ => (Method::Other(u16::from(inp.byte()) & 0xFFF), Class::Request),
    };
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&(u32::from(m) << 8 | u32::from(inp.byte())).to_be_bytes());
    tid[11] = inp.byte();
    let mut w = MessageWriter::new(out, method, class, &tid).ok()?;
    let flags = inp.byte();
    // Attributes chosen by the flags, values from the input.
    if flags & 1 != 0 {
        let proto = match inp.byte() % 4 {
            0 | 1 => attr::PROTO_UDP,
            2 => attr::PROTO_TCP,
            _ => 99,
        };
        w.add(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0]).ok()?;
    }
    if flags & 2 != 0 {
        w.add_u32(attr::LIFETIME, u32::from(inp.byte()) * 30).ok()?;
    }
    if flags & 4 != 0 {
        let n = 1 + usize::from(inp.byte() % 2);
        for _ in 0..n {
            let peer = addr(PEERS[usize::from(inp.byte()) % PEERS.len()]);
            w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer).ok()?;
        }
    }
    if flags & 8 != 0 {
        let ch = match inp.byte() % 4 {
            0..=2 => 0x4000 + u16::from(inp.byte() % 4),
            _ => u16::from_be_bytes([inp.byte(), inp.byte()]),
        };
        w.add(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0])
            .ok()?;
    }
    if flags & 16 != 0 {
        let n = usize::from(inp.byte()) % 64;
        let data = inp.bytes(n).to_vec();
        w.add(attr::DATA, &data).ok()?;
    }
    if flags & 32 != 0 {
        // One more attribute of any type with any value (EVEN-PORT, DONT-FRAGMENT,
        // REQUESTED-ADDRESS-FAMILY, RESERVATION-TOKEN, unknown comprehension-required...).
        let typ = match inp.byte() % 6 {
            0 => attr::EVEN_PORT,
            1 => attr::DONT_FRAGMENT,
            2 => attr::REQUESTED_ADDRESS_FAMILY,
            3 => attr::RESERVATION_TOKEN,
            4 => attr::ADDITIONAL_ADDRESS_FAMILY,
            _ => u16::from_be_bytes([inp.byte(), inp.byte()]),
        };
        let len = usize::from(inp.byte() % 9);
        let v = inp.bytes(len).to_vec();
        w.add(typ, &v).ok()?;
    }
    // Credentials: 0 none, 1 valid, 2 wrong password, 3 stale nonce, 4 wrong user.
    let cred = (flags >> 6) | (inp.byte() & 4);
    let authed = cred == 1;
    if cred != 0 {
        let user = if cred == 4 { "mallory" } else { USER };
        w.add(attr::USERNAME, user.as_bytes()).ok()?;
        w.add(attr::REALM, REALM.as_bytes()).ok()?;
        let nonce_at = if cred == 3 {
            now.unix.saturating_sub(7200)
        } else {
            now.unix
        };
        w.add(attr::NONCE, &nonces.make(nonce_at, client)).ok()?;
        let pass = if cred == 2 { "wrong" } else { PASS };
        w.add_integrity(&long_term_key(user, REALM, pass)).ok()?;
    }
    if inp.byte() & 1 != 0 {
        w.add_fingerprint().ok()?;
    }
    Some((w.finish(), Sent { tid, authed }))
}

fn check_reply(reply: &[u8], sent: &Sent, key: &[u8; 16]) {
    let msg = Message::parse(reply).expect("a reply is a well-formed STUN message");
    assert_eq!(
        msg.transaction_id(),
        &sent.tid,
        "reply to another transaction"
    );
    assert!(matches!(msg.class(), Class::Success | Class::Error));
    if sent.authed && msg.class() == Class::Success && msg.method() != Method::Binding {
        assert!(
            msg.verify_integrity(key),
            "authenticated success without valid integrity"
        );
    }
}

fn check_counts(server: &Server, relays: &FakeRelays) {
    let s = server.stats();
    let live = server.allocation_count() as u64;
    // `allocations_deleted` counts every deletion, expiries included.
    assert!(s.allocations_deleted <= s.allocations_created);
    assert!(s.allocations_expired <= s.allocations_deleted);
    assert_eq!(live, s.allocations_created - s.allocations_deleted);
    assert_eq!(
        server.allocation_count(),
        relays.open.len(),
        "one relay per allocation"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_config(CONFIG, &|_| None) else {
        panic!("the fuzz config must parse");
    };
    let snap = Snapshot::build(parsed.config, 1).expect("the fuzz config must build");
    let udp = snap.listener("udp").expect("udp listener").0;
    let tcp = snap.listener("tcp").expect("tcp listener").0;
    let key = long_term_key(USER, REALM, PASS);
    let nonces = NonceKey::from_bytes([7; 32]);
    let mut server = Server::new(nonces.clone());
    let mut relays = FakeRelays::default();
    let mut now = Now {
        mono: Instant::now(),
        unix: 1_700_000_000,
    };
    let mut out = vec![0u8; 4096];
    let mut msg = vec![0u8; 2048];
    let mut scratch = vec![0u8; 4200];
    let mut inp = Input(data);
    let mut steps = 0;
    while !inp.0.is_empty() && steps < 256 {
        steps += 1;
        let op = inp.byte();
        let ci = usize::from(op >> 4) % CLIENTS.len();
        let client = addr(CLIENTS[ci]);
        // Client 0 also uses the TCP listener (RFC 6062 methods need a stream transport).
        let stream = op & 0x80 != 0 && ci == 0;
        let ctx = ClientCtx {
            transport: TransportId(u32::from(stream)),
            listener: if stream { tcp } else { udp },
            client,
            stream,
        };
        match op % 8 {
            0..=3 => {
                let Some((n, sent)) = request(&mut inp, now, &nonces, client, &mut msg) else {
                    continue;
                };
                let res = server.handle_client(now, &snap, ctx, &msg[..n], &mut out, &mut relays);
                if let ClientOutput::Reply(len) = res {
                    check_reply(&out[..len], &sent, &key);
                }
            }
            4 => {
                let len = usize::from(inp.byte());
                let raw = inp.bytes(len).to_vec();
                let _ = server.handle_client(now, &snap, ctx, &raw, &mut out, &mut relays);
            }
            5 => {
                let ch = 0x4000 + u16::from(inp.byte() % 4);
                let len = usize::from(inp.byte() % 128);
                let payload = inp.bytes(len).to_vec();
                let mut h = [0u8; 4];
                write_channel_header(&mut h, ch, payload.len() as u16);
                let mut frame = h.to_vec();
                frame.extend_from_slice(&payload);
                if stream {
                    frame.resize((frame.len() + 3) & !3, 0);
                }
                if let ClientOutput::Forward { payload: p, .. } =
                    server.handle_client(now, &snap, ctx, &frame, &mut out, &mut relays)
                {
                    assert_eq!(p, &payload[..]);
                }
            }
            6 => {
                let relay = RelayId(u32::from(inp.byte() % 8));
                let peer = addr(PEERS[usize::from(inp.byte()) % PEERS.len()]);
                let len = usize::from(inp.byte());
                let payload = inp.bytes(len).to_vec();
                let mut buf = vec![0u8; HEADROOM + payload.len()];
                buf[HEADROOM..].copy_from_slice(&payload);
                let _ = server.handle_peer(
                    now,
                    &snap,
                    relay,
                    peer,
                    &mut buf,
                    payload.len(),
                    &mut scratch,
                );
            }
            _ => {
                let secs = u64::from(inp.byte()) * u64::from(inp.byte() % 16 + 1);
                now = now.advance(Duration::from_secs(secs));
                server.handle_timeout(now, &mut relays);
                if op & 0x40 != 0 {
                    server.close_transport(
                        TransportId(1),
                        DeleteReason::ConnectionClosed,
                        now,
                        &mut relays,
                    );
                }
            }
        }
        check_counts(&server, &relays);
    }
    now = now.advance(MAX_LIFETIME + Duration::from_secs(120));
    server.handle_timeout(now, &mut relays);
    assert_eq!(
        server.allocation_count(),
        0,
        "allocations outlived every lifetime"
    );
    assert!(
        relays.open.is_empty(),
        "relays left open: {:?}",
        relays.open
    );
    check_counts(&server, &relays);
});
