//! The admission matrix (issue 13, item 7): one daemon in a network namespace of its own,
//! with a TURN-UDP, TURN-TCP, TURN-TLS and TURN-DTLS listener on an IPv4 and on an IPv6
//! address, all routed to one STATIC cluster per family that names one peer address with a
//! port range (`10.10.0.2:<20000-20099>`, `fd10::2:<20000-20099>`). For every client
//! transport and relay family (REQUESTED-ADDRESS-FAMILY, RFC 6156) a client of our own:
//!
//! - allocates (the other family is 440), and towards the admitted peer gets
//!   CreatePermission and ChannelBind, and relays both ways by Send/Data and ChannelData;
//! - towards each refused peer (another address, the admitted address on a port outside
//!   the range, an IPv4-mapped IPv6 address, the unspecified address, the relay's own
//!   address, loopback, the other family) gets 403 (443 for the other family) to
//!   CreatePermission and ChannelBind, and its Send indications (and ChannelData on the
//!   channel that was not bound) reach nobody: sockets at every refused address receive 0
//!   bytes, the client gets nothing back, `stunnerd_dropped_packets_total` moves by exactly
//!   one per message (`no_permission`, or `forbidden` where the IP holds a permission but
//!   the port is outside the route) and `stunnerd_error_responses_total` by one per refusal;
//!   datagrams to the relay from unrouted sources are dropped and counted the same way;
//! - over TCP and TLS, in a TCP allocation (RFC 6062): Connect to the admitted peer, then
//!   ConnectionBind carries bytes both ways; Connect to each refused peer is 403 (443) and
//!   no listener there sees a connection; an inbound connection from a peer without a
//!   permission, or from a permitted IP on a port outside the route, is closed without a
//!   ConnectionAttempt, while one from the admitted peer is announced and piped.
//!
//! Permissions are per IP (RFC 8656 section 9), so CreatePermission for the admitted IP on
//! a port outside the route succeeds; the port is refused per packet and by ChannelBind.
//! Every wait is bounded; the whole module runs in a few seconds.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use openssl::ssl::{Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};
use socket2::{Domain, Socket, Type};
use stunnerd::snapshot::long_term_key;
use stunnerd::stun::attr::{self, *};
use stunnerd::stun::{Class, Message, MessageWriter, Method};

use crate::common::{PASS, Proc, REALM, USER, in_netns, stunnerd_bin};
use crate::ops_util::{http_get, metric, wait_for};

// ------------------------------------------------------------------------------------------
// The namespace's addresses and ports
// ------------------------------------------------------------------------------------------

/// Admitted peer ports: the route's range.
const RANGE: (u16, u16) = (20000, 20099);
/// The admitted peers' UDP sockets and TCP listeners.
const PEER_PORT: u16 = 20001;
/// Sinks on every address (dual-stack wildcard): what a refused peer would receive.
const SINK_PORT: u16 = 20002;
/// Outside the route's range: a sink on every address too.
const OUT_PORT: u16 = 21000;
const METRICS: u16 = 8080;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn name(self) -> &'static str {
        match self {
            Fam::V4 => "IPv4",
            Fam::V6 => "IPv6",
        }
    }
    fn code(self) -> u8 {
        match self {
            Fam::V4 => attr::FAMILY_IPV4,
            Fam::V6 => attr::FAMILY_IPV6,
        }
    }
    fn other(self) -> Fam {
        match self {
            Fam::V4 => Fam::V6,
            Fam::V6 => Fam::V4,
        }
    }
    /// The listeners' (and so the relays') address.
    fn server(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(10, 10, 0, 1)),
            Fam::V6 => "fd10::1".parse().unwrap(),
        }
    }
    /// The one peer address the route admits.
    fn allowed(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(10, 10, 0, 2)),
            Fam::V6 => "fd10::2".parse().unwrap(),
        }
    }
    /// An address of this host that no route names.
    fn other_addr(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::new(10, 10, 0, 3)),
            Fam::V6 => "fd10::3".parse().unwrap(),
        }
    }
    fn loopback(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Fam::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }
    fn unspecified(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Fam::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
    /// The IPv4-mapped IPv6 form that tries to get around the route: for an IPv4 relay an
    /// unrouted IPv4 address written as IPv6; for an IPv6 relay the admitted IPv4 peer,
    /// which an IPv6 relay socket could reach through the mapping.
    fn mapped(self) -> SocketAddr {
        let v4 = match self {
            Fam::V4 => Ipv4Addr::new(10, 10, 0, 3),
            Fam::V6 => Ipv4Addr::new(10, 10, 0, 2),
        };
        let port = match self {
            Fam::V4 => SINK_PORT,
            Fam::V6 => PEER_PORT,
        };
        SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port)
    }
    fn listener_port(self, t: Transport) -> u16 {
        let base = match self {
            Fam::V4 => 3478,
            Fam::V6 => 3578,
        };
        base + t as u16
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp = 0,
    Tcp = 1,
    Tls = 2,
    Dtls = 3,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Dtls => "DTLS",
        }
    }
    fn protocol(self) -> &'static str {
        match self {
            Transport::Udp => "TURN-UDP",
            Transport::Tcp => "TURN-TCP",
            Transport::Tls => "TURN-TLS",
            Transport::Dtls => "TURN-DTLS",
        }
    }
}

const TRANSPORTS: [Transport; 4] = [
    Transport::Udp,
    Transport::Tcp,
    Transport::Tls,
    Transport::Dtls,
];

// ------------------------------------------------------------------------------------------
// A TURN client over UDP, TCP, TLS and DTLS
// ------------------------------------------------------------------------------------------

/// A connected UDP socket as a byte stream of datagrams, for openssl's DTLS.
#[derive(Debug)]
struct Dgram(UdpSocket);

impl Read for Dgram {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Dgram {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A byte stream: TCP or TLS over TCP.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

enum Wire {
    Udp(UdpSocket),
    Dtls(SslStream<Dgram>),
    /// TCP or TLS, with the bytes read but not framed yet.
    Stream(Box<dyn Stream>, Vec<u8>),
}

/// Poll interval of every read: short, so that deadlines hold.
const TICK: Duration = Duration::from_millis(20);

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The first frame of a TCP/TLS byte stream (a STUN message, or ChannelData without its
/// padding), removed from `buf` with its padding.
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (frame, total) = if buf[0] & 0xC0 == 0 {
        (20 + len, 20 + len)
    } else {
        (4 + len, (4 + len + 3) & !3)
    };
    if buf.len() < total {
        return None;
    }
    let f = buf[..frame].to_vec();
    buf.drain(..total);
    Some(f)
}

/// One TURN client connection with long-term credentials.
struct Client {
    wire: Wire,
    what: String,
    key: [u8; 16],
    realm: Vec<u8>,
    nonce: Vec<u8>,
    /// Frames read while waiting for something else.
    pending: VecDeque<Vec<u8>>,
}

impl Client {
    fn open(t: Transport, server: SocketAddr, what: &str) -> Client {
        let any = SocketAddr::new(
            match server {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
            0,
        );
        let handshake = Duration::from_secs(5);
        let wire = match t {
            Transport::Udp | Transport::Dtls => {
                let sock = UdpSocket::bind(any).unwrap();
                sock.connect(server).unwrap();
                if t == Transport::Udp {
                    sock.set_read_timeout(Some(TICK)).unwrap();
                    Wire::Udp(sock)
                } else {
                    sock.set_read_timeout(Some(handshake)).unwrap();
                    let mut ctx = SslContext::builder(SslMethod::dtls()).unwrap();
                    ctx.set_verify(SslVerifyMode::NONE);
                    let mut ssl = Ssl::new(&ctx.build()).unwrap();
                    ssl.set_mtu(1200).unwrap();
                    let s = ssl
                        .connect(Dgram(sock))
                        .unwrap_or_else(|e| panic!("{what}: DTLS handshake: {e}"));
                    s.get_ref().0.set_read_timeout(Some(TICK)).unwrap();
                    Wire::Dtls(s)
                }
            }
            Transport::Tcp | Transport::Tls => {
                let tcp = TcpStream::connect_timeout(&server, handshake)
                    .unwrap_or_else(|e| panic!("{what}: connect {server}: {e}"));
                tcp.set_nodelay(true).unwrap();
                if t == Transport::Tcp {
                    tcp.set_read_timeout(Some(TICK)).unwrap();
                    Wire::Stream(Box::new(tcp), Vec::new())
                } else {
                    tcp.set_read_timeout(Some(handshake)).unwrap();
                    let mut ctx = SslContext::builder(SslMethod::tls_client()).unwrap();
                    ctx.set_verify(SslVerifyMode::NONE);
                    let s = Ssl::new(&ctx.build())
                        .unwrap()
                        .connect(tcp)
                        .unwrap_or_else(|e| panic!("{what}: TLS handshake: {e}"));
                    s.get_ref().set_read_timeout(Some(TICK)).unwrap();
                    Wire::Stream(Box::new(s), Vec::new())
                }
            }
        };
        Client {
            wire,
            what: what.to_string(),
            key: long_term_key(USER, REALM, PASS),
            realm: Vec::new(),
            nonce: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let what = &self.what;
        match &mut self.wire {
            Wire::Udp(s) => {
                s.send(bytes)
                    .unwrap_or_else(|e| panic!("{what}: send: {e}"));
            }
            Wire::Dtls(s) => s
                .write_all(bytes)
                .unwrap_or_else(|e| panic!("{what}: DTLS write: {e}")),
            Wire::Stream(s, _) => {
                // ChannelData is padded to a multiple of 4 on streams (RFC 8656 12.5).
                let pad = (4 - bytes.len() % 4) % 4;
                let mut framed = bytes.to_vec();
                framed.resize(bytes.len() + pad, 0);
                s.write_all(&framed)
                    .unwrap_or_else(|e| panic!("{what}: write: {e}"));
            }
        }
    }

    /// The next frame from the wire (not from `pending`) before `deadline`.
    fn read_frame(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            match &mut self.wire {
                Wire::Udp(s) => match s.recv(&mut buf) {
                    Ok(n) => return Some(buf[..n].to_vec()),
                    Err(e) if timed_out(&e) => {}
                    Err(e) => panic!("{}: recv: {e}", self.what),
                },
                Wire::Dtls(s) => match s.ssl_read(&mut buf) {
                    Ok(n) => return Some(buf[..n].to_vec()),
                    Err(e) if e.io_error().is_some_and(timed_out) => {}
                    Err(e) if e.code() == openssl::ssl::ErrorCode::WANT_READ => {}
                    Err(e) => panic!("{}: DTLS read: {e}", self.what),
                },
                Wire::Stream(s, acc) => {
                    if let Some(f) = take_frame(acc) {
                        return Some(f);
                    }
                    match s.read(&mut buf) {
                        Ok(0) => panic!("{}: the server closed the connection", self.what),
                        Ok(n) => acc.extend_from_slice(&buf[..n]),
                        Err(e) if timed_out(&e) => {}
                        Err(e) => panic!("{}: read: {e}", self.what),
                    }
                }
            }
        }
        None
    }

    /// The first frame (queued or new) that `want` accepts, within `wait`; others are kept.
    fn recv_matching(&mut self, wait: Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        if let Some(i) = self.pending.iter().position(|f| want(f)) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + wait;
        while let Some(f) = self.read_frame(deadline) {
            if want(&f) {
                return Some(f);
            }
            self.pending.push_back(f);
        }
        None
    }

    /// Everything that arrives within `wait`, with what was queued.
    fn drain(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut all: Vec<Vec<u8>> = self.pending.drain(..).collect();
        while let Some(f) = self.read_frame(deadline) {
            all.push(f);
        }
        all
    }

    /// An authenticated request (after the 401 challenge on the first one); the success
    /// response or the error code (0: no answer in time).
    fn request(&mut self, method: Method, add: &dyn Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        for _ in 0..3 {
            let tid: [u8; 12] = rand::random();
            let mut buf = [0u8; 1024];
            let mut w = MessageWriter::new(&mut buf, method, Class::Request, &tid).unwrap();
            add(&mut w);
            let authenticated = !self.nonce.is_empty();
            if authenticated {
                w.add(USERNAME, USER.as_bytes()).unwrap();
                w.add(attr::REALM, &self.realm).unwrap();
                w.add(NONCE, &self.nonce).unwrap();
                w.add_integrity(&self.key).unwrap();
            }
            let n = w.finish();
            self.send_raw(&buf[..n]);
            let resp = self
                .recv_matching(Duration::from_secs(3), |f| {
                    f.len() >= 20 && f[0] & 0xC0 == 0 && f[8..20] == tid
                })
                .unwrap_or_else(|| panic!("{}: no answer to {method:?}", self.what));
            let m = Message::parse(&resp).unwrap();
            if m.class() == Class::Error && (!authenticated && code(&m) == 401 || code(&m) == 438) {
                self.realm = m.get(attr::REALM).unwrap().to_vec();
                self.nonce = m.get(NONCE).unwrap().to_vec();
                continue;
            }
            return resp;
        }
        panic!("{}: {method:?} challenged three times", self.what)
    }

    /// 0 for a success, else the error code.
    fn outcome(&mut self, method: Method, add: &dyn Fn(&mut MessageWriter<'_>)) -> u16 {
        let resp = self.request(method, add);
        let m = Message::parse(&resp).unwrap();
        if m.class() == Class::Success {
            assert!(
                m.verify_integrity(&self.key),
                "{}: {method:?} success without integrity",
                self.what
            );
            0
        } else {
            code(&m)
        }
    }

    fn allocate(&mut self, fam: Fam, tcp: bool) -> Result<SocketAddr, u16> {
        let proto = if tcp {
            attr::PROTO_TCP
        } else {
            attr::PROTO_UDP
        };
        let resp = self.request(Method::Allocate, &|w| {
            w.add(REQUESTED_TRANSPORT, &[proto, 0, 0, 0]).unwrap();
            w.add(REQUESTED_ADDRESS_FAMILY, &[fam.code(), 0, 0, 0])
                .unwrap();
        });
        let m = Message::parse(&resp).unwrap();
        if m.class() != Class::Success {
            return Err(code(&m));
        }
        Ok(decode_xor_addr(m.get(XOR_RELAYED_ADDRESS).unwrap(), m.transaction_id()).unwrap())
    }

    fn create_permission(&mut self, peer: SocketAddr) -> u16 {
        self.outcome(Method::CreatePermission, &|w| {
            w.add_xor_addr(XOR_PEER_ADDRESS, peer).unwrap();
        })
    }

    fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> u16 {
        self.outcome(Method::ChannelBind, &|w| {
            w.add(CHANNEL_NUMBER, &[(number >> 8) as u8, number as u8, 0, 0])
                .unwrap();
            w.add_xor_addr(XOR_PEER_ADDRESS, peer).unwrap();
        })
    }

    /// RFC 6062 Connect: the CONNECTION-ID, or the error code.
    fn connect(&mut self, peer: SocketAddr) -> Result<u32, u16> {
        let resp = self.request(Method::Connect, &|w| {
            w.add_xor_addr(XOR_PEER_ADDRESS, peer).unwrap();
        });
        let m = Message::parse(&resp).unwrap();
        if m.class() != Class::Success {
            return Err(code(&m));
        }
        Ok(decode_u32(m.get(CONNECTION_ID).unwrap()).unwrap())
    }

    fn connection_bind(&mut self, id: u32) -> u16 {
        self.outcome(Method::ConnectionBind, &|w| {
            w.add_u32(CONNECTION_ID, id).unwrap();
        })
    }

    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let tid: [u8; 12] = rand::random();
        let mut buf = vec![0u8; 2048];
        let mut w = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &tid).unwrap();
        w.add_xor_addr(XOR_PEER_ADDRESS, peer).unwrap();
        w.add(DATA, data).unwrap();
        let n = w.finish();
        self.send_raw(&buf[..n]);
    }

    fn channel_data(&mut self, number: u16, data: &[u8]) {
        let mut f = number.to_be_bytes().to_vec();
        f.extend_from_slice(&(data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        self.send_raw(&f);
    }

    /// The next Data indication: (XOR-PEER-ADDRESS, DATA).
    fn recv_data(&mut self, wait: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        let f = self.recv_matching(wait, |f| {
            Message::parse(f)
                .is_ok_and(|m| (m.method(), m.class()) == (Method::Data, Class::Indication))
        })?;
        let m = Message::parse(&f).unwrap();
        let peer = decode_xor_addr(m.get(XOR_PEER_ADDRESS)?, m.transaction_id()).ok()?;
        Some((peer, m.get(DATA)?.to_vec()))
    }

    /// The next ChannelData: (number, data).
    fn recv_channel(&mut self, wait: Duration) -> Option<(u16, Vec<u8>)> {
        let f = self.recv_matching(wait, |f| f.len() >= 4 && (0x40..0x80).contains(&f[0]))?;
        Some((u16::from_be_bytes([f[0], f[1]]), f[4..].to_vec()))
    }

    /// The next ConnectionAttempt: (CONNECTION-ID, XOR-PEER-ADDRESS).
    fn recv_connection_attempt(&mut self, wait: Duration) -> Option<(u32, SocketAddr)> {
        let f = self.recv_matching(wait, is_connection_attempt)?;
        let m = Message::parse(&f).unwrap();
        let id = decode_u32(m.get(CONNECTION_ID)?).ok()?;
        Some((
            id,
            decode_xor_addr(m.get(XOR_PEER_ADDRESS)?, m.transaction_id()).ok()?,
        ))
    }

    /// After a successful ConnectionBind: the raw byte stream and the bytes already read.
    fn into_pipe(self) -> (Box<dyn Stream>, Vec<u8>) {
        match self.wire {
            Wire::Stream(s, acc) => (s, acc),
            _ => panic!("{}: not a stream", self.what),
        }
    }
}

fn is_connection_attempt(f: &[u8]) -> bool {
    Message::parse(f)
        .is_ok_and(|m| (m.method(), m.class()) == (Method::ConnectionAttempt, Class::Indication))
}

fn code(m: &Message<'_>) -> u16 {
    m.get(ERROR_CODE)
        .and_then(|v| decode_error_code(v).ok())
        .map_or(0, |c| c.0)
}

/// What a frame is, for failure messages.
fn describe_frame(f: &[u8]) -> String {
    match Message::parse(f) {
        Ok(m) => {
            let peer = m
                .get(XOR_PEER_ADDRESS)
                .and_then(|v| decode_xor_addr(v, m.transaction_id()).ok());
            let data = m.get(DATA).map(String::from_utf8_lossy);
            format!(
                "{:?} {:?} peer {peer:?} data {data:?}",
                m.method(),
                m.class()
            )
        }
        Err(_) => format!("{} bytes: {:?}", f.len(), String::from_utf8_lossy(f)),
    }
}

// ------------------------------------------------------------------------------------------
// Peers
// ------------------------------------------------------------------------------------------

/// A dual-stack wildcard socket (UDP or TCP listener) on `port`.
fn wildcard(port: u16, ty: Type) -> Socket {
    let s = Socket::new(Domain::IPV6, ty, None).unwrap();
    s.set_only_v6(false).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())
        .unwrap();
    if ty == Type::STREAM {
        s.listen(64).unwrap();
    }
    s.set_nonblocking(true).unwrap();
    s
}

/// Every UDP socket a refused peer could be reached at; (what, datagram) it received.
struct Sinks {
    udp: Vec<(String, UdpSocket)>,
    tcp: Vec<(String, TcpListener)>,
}

impl Sinks {
    fn new() -> Sinks {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for port in [SINK_PORT, OUT_PORT] {
            udp.push((
                format!("UDP sink [::]:{port}"),
                wildcard(port, Type::DGRAM).into(),
            ));
            tcp.push((
                format!("TCP sink [::]:{port}"),
                wildcard(port, Type::STREAM).into(),
            ));
        }
        Sinks { udp, tcp }
    }

    /// Datagrams any sink received within `wait`, named.
    fn received(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            for (name, s) in &self.udp {
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    got.push(format!(
                        "{name} got {n} bytes from {from}: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ));
                }
            }
            if Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(TICK);
        }
    }

    /// Connections any TCP sink accepted, named.
    fn accepted(&self) -> Vec<String> {
        let mut got = Vec::new();
        for (name, l) in &self.tcp {
            while let Ok((_, from)) = l.accept() {
                got.push(format!("{name} accepted a connection from {from}"));
            }
        }
        got
    }
}

/// The admitted UDP peer of a family.
fn peer_socket(fam: Fam) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(fam.allowed(), PEER_PORT)).unwrap();
    s.set_read_timeout(Some(TICK)).unwrap();
    s
}

fn recv_within(s: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}

/// A TCP connection from `from` (bound, so the relay sees that address and port) to `to`.
fn tcp_from(from: SocketAddr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::for_address(from), Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&from.into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TICK)).unwrap();
    s
}

/// Whether the other side closes `s` within `wait` (EOF or reset); what it read meanwhile.
fn closed_within(s: &mut dyn Read, wait: Duration) -> (bool, usize) {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    let mut read = 0;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (true, read),
            Ok(n) => read += n,
            Err(e) if timed_out(&e) => {}
            Err(_) => return (true, read),
        }
    }
    (false, read)
}

/// Read exactly `want.len()` bytes (after `already`) within `wait`.
fn read_exactly(s: &mut dyn Read, mut already: Vec<u8>, len: usize, wait: Duration) -> Vec<u8> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while already.len() < len && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => already.extend_from_slice(&buf[..n]),
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
    }
    already
}

// ------------------------------------------------------------------------------------------
// Counters
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    no_permission: u64,
    forbidden: u64,
    error_responses: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            no_permission: self.no_permission - o.no_permission,
            forbidden: self.forbidden - o.forbidden,
            error_responses: self.error_responses - o.error_responses,
        }
    }
}

fn counts() -> Counts {
    let (status, body) = http_get(METRICS, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let get = |series: &str| {
        metric(&body, series).unwrap_or_else(|| panic!("no {series} in /metrics")) as u64
    };
    // Error responses other than the 401 challenges (and 438s) of new connections.
    Counts {
        no_permission: get("stunnerd_dropped_packets_total{reason=\"no_permission\"}"),
        forbidden: get("stunnerd_dropped_packets_total{reason=\"forbidden\"}"),
        error_responses: get("stunnerd_error_responses_total")
            - get("stunnerd_auth_challenges_total")
            - get("stunnerd_stale_nonces_total"),
    }
}

/// The counters once everything before has been published (the workers publish every
/// 100 ms): two reads 250 ms apart that agree (bounded: 12 tries).
fn settled() -> Counts {
    let mut last = counts();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(250));
        let now = counts();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the counters do not settle: {last:?}")
}

/// Waits (bounded: the workers publish their counters a few times a second) until the
/// counters moved by at least `want` since `before`, then requires exactly `want`.
fn assert_counted(cell: &str, before: Counts, want: Counts) {
    let mut got = Counts::default();
    wait_for(Duration::from_secs(3), || {
        got = counts() - before;
        got.no_permission >= want.no_permission
            && got.forbidden >= want.forbidden
            && got.error_responses >= want.error_responses
    });
    assert_eq!(
        got, want,
        "{cell}: counters moved by {got:?}, expected {want:?}"
    );
}

// ------------------------------------------------------------------------------------------
// The daemon
// ------------------------------------------------------------------------------------------

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

fn start_daemon(dir: &Path) -> Proc {
    // The addresses, on `lo` of this namespace.
    for fam in [Fam::V4, Fam::V6] {
        for a in [fam.server(), fam.allowed(), fam.other_addr()] {
            match a {
                IpAddr::V4(_) => ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]),
                IpAddr::V6(_) => ip(&["addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"]),
            }
        }
    }
    let ck = rcgen::generate_simple_self_signed(vec!["stunnerd.test".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut listeners = Vec::new();
    for fam in [Fam::V4, Fam::V6] {
        for t in TRANSPORTS {
            listeners.push(serde_json::json!({
                "name": format!("{}-{}", t.name().to_lowercase(), fam.name().to_lowercase()),
                "protocol": t.protocol(), "address": fam.server().to_string(),
                "port": fam.listener_port(t), "routes": ["peers"],
                "cert": cert.to_str().unwrap(), "key": key.to_str().unwrap(),
            }));
        }
    }
    let (lo, hi) = RANGE;
    let config = dir.join("stunnerd.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "version": "v1",
            "admin": {"name": "admission", "loglevel": "all:INFO", "healthcheck_endpoint": "",
                      "metrics_endpoint": format!("http://127.0.0.1:{METRICS}/metrics")},
            "auth": {"type": "static", "realm": REALM,
                     "credentials": {"username": USER, "password": PASS}},
            "listeners": listeners,
            "clusters": [{"name": "peers", "type": "STATIC", "endpoints": [
                format!("{}:<{lo}-{hi}>", Fam::V4.allowed()),
                format!("{}:<{lo}-{hi}>", Fam::V6.allowed()),
            ]}],
        })
        .to_string(),
    )
    .unwrap();
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg("-c").arg(format!("file://{}", config.display()));
    let mut p = Proc::spawn("stunnerd", cmd);
    let ready = wait_for(Duration::from_secs(10), || {
        [Fam::V4, Fam::V6].iter().all(|&f| {
            [Transport::Tcp, Transport::Tls].iter().all(|&t| {
                TcpStream::connect(SocketAddr::new(f.server(), f.listener_port(t))).is_ok()
            })
        }) && http_get(METRICS, "/metrics").is_some_and(|(s, _)| s == 200)
    });
    p.assert_running("start");
    assert!(ready, "stunnerd does not listen\n{}", p.log());
    p
}

// ------------------------------------------------------------------------------------------
// The matrix
// ------------------------------------------------------------------------------------------

/// A refused peer of a cell: what it is, where, and what the daemon must answer.
struct Refused {
    what: &'static str,
    peer: SocketAddr,
    /// CreatePermission: 0 (success: permissions are per IP) or the error code.
    permission: u16,
    /// ChannelBind and RFC 6062 Connect.
    bind: u16,
    /// Whether the Send indication is dropped as `forbidden` (the IP holds a permission)
    /// rather than `no_permission`.
    forbidden: bool,
}

fn refused_peers(fam: Fam, relayed: SocketAddr) -> Vec<Refused> {
    let at = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    let row = |what, peer, permission, bind, forbidden| Refused {
        what,
        peer,
        permission,
        bind,
        forbidden,
    };
    // An IPv4-mapped address on an IPv6 relay is an IPv4 peer: another family.
    let mapped = if fam == Fam::V4 { 403 } else { 443 };
    vec![
        row(
            "another address",
            at(fam.other_addr(), SINK_PORT),
            403,
            403,
            false,
        ),
        row(
            "port outside the range",
            at(fam.allowed(), OUT_PORT),
            0,
            403,
            true,
        ),
        row("IPv4-mapped IPv6", fam.mapped(), mapped, mapped, false),
        row(
            "unspecified",
            at(fam.unspecified(), SINK_PORT),
            403,
            403,
            false,
        ),
        row("the relay's own address", relayed, 403, 403, false),
        row("loopback", at(fam.loopback(), SINK_PORT), 403, 403, false),
        row(
            "the other family",
            at(fam.other().allowed(), PEER_PORT),
            443,
            443,
            false,
        ),
    ]
}

/// One cell with a UDP allocation; returns its row of the printed matrix.
fn udp_cell(t: Transport, fam: Fam, sinks: &Sinks, peers: &[UdpSocket; 2]) -> String {
    let cell = format!("{} client, {} relay", t.name(), fam.name());
    let server = SocketAddr::new(fam.server(), fam.listener_port(t));
    let mut c = Client::open(t, server, &cell);
    let peer = &peers[fam as usize];
    let peer_addr = peer.local_addr().unwrap();

    // The other family is not served by this listener: 440 (RFC 8656 7.2).
    assert_eq!(
        c.allocate(fam.other(), false),
        Err(440),
        "{cell}: Allocate for the other family"
    );
    let relayed = c
        .allocate(fam, false)
        .unwrap_or_else(|e| panic!("{cell}: Allocate: {e}"));
    assert_eq!(relayed.ip(), fam.server(), "{cell}: relayed address");

    // The admitted peer: permission, Send, Data back.
    assert_eq!(
        c.create_permission(peer_addr),
        0,
        "{cell}: CreatePermission to {peer_addr}"
    );
    let msg = format!("{cell}: Send");
    c.send_indication(peer_addr, msg.as_bytes());
    let (got, from) = recv_within(peer, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{cell}: the admitted peer got no Send indication bytes"));
    assert_eq!(got, msg.as_bytes(), "{cell}: Send bytes at the peer");
    assert_eq!(
        from.port(),
        relayed.port(),
        "{cell}: Send bytes came from the relay"
    );
    let back = format!("{cell}: Data");
    peer.send_to(back.as_bytes(), relayed).unwrap();
    assert_eq!(
        c.recv_data(Duration::from_secs(2)),
        Some((peer_addr, back.into_bytes())),
        "{cell}: peer to client as a Data indication"
    );

    // ChannelBind and ChannelData both ways.
    assert_eq!(
        c.channel_bind(0x4001, peer_addr),
        0,
        "{cell}: ChannelBind to {peer_addr}"
    );
    let msg = format!("{cell}: ChannelData");
    c.channel_data(0x4001, msg.as_bytes());
    let (got, _) = recv_within(peer, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{cell}: the admitted peer got no ChannelData bytes"));
    assert_eq!(got, msg.as_bytes(), "{cell}: ChannelData bytes at the peer");
    let back = format!("{cell}: ChannelData back");
    peer.send_to(back.as_bytes(), relayed).unwrap();
    assert_eq!(
        c.recv_channel(Duration::from_secs(2)),
        Some((0x4001, back.into_bytes())),
        "{cell}: peer to client as ChannelData"
    );

    // The refused peers.
    let before = settled();
    let mut want = Counts::default();
    let rows = refused_peers(fam, relayed);
    let mut outcome = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let row = format!("{cell}, {} {}", r.what, r.peer);
        let p = c.create_permission(r.peer);
        assert_eq!(p, r.permission, "{row}: CreatePermission");
        let b = c.channel_bind(0x4010 + i as u16, r.peer);
        assert_eq!(b, r.bind, "{row}: ChannelBind");
        want.error_responses += u64::from(p != 0) + u64::from(b != 0);
        c.send_indication(r.peer, row.as_bytes());
        if r.forbidden {
            want.forbidden += 1;
        } else {
            want.no_permission += 1;
        }
        // ChannelData on the channel the refused ChannelBind did not bind.
        c.channel_data(0x4010 + i as u16, row.as_bytes());
        want.no_permission += 1;
        outcome.push(format!("{}: CP {p} CB {b}", r.what));
    }
    // Datagrams to the relay from sources no permission or route covers: from another
    // address (no permission), and from the permitted IP on a port outside the route.
    for (src, forbidden) in [
        (SocketAddr::new(fam.other_addr(), PEER_PORT + 10), false),
        (SocketAddr::new(fam.allowed(), OUT_PORT + 10), true),
    ] {
        let s = UdpSocket::bind(src).unwrap();
        s.send_to(format!("{cell}: from {src}").as_bytes(), relayed)
            .unwrap();
        if forbidden {
            want.forbidden += 1;
        } else {
            want.no_permission += 1;
        }
    }
    // Nothing reaches any peer, nothing comes back to the client, and every indication
    // and datagram is counted as dropped.
    let leaked = sinks.received(Duration::from_millis(300));
    assert!(
        leaked.is_empty(),
        "{cell}: refused peers received bytes: {leaked:?}"
    );
    for p in peers {
        if let Some((got, from)) = recv_within(p, Duration::from_millis(10)) {
            panic!(
                "{cell}: {} received {:?} from {from}",
                p.local_addr().unwrap(),
                String::from_utf8_lossy(&got)
            );
        }
    }
    let back: Vec<String> = c
        .drain(Duration::from_millis(100))
        .iter()
        .map(|f| describe_frame(f))
        .collect();
    assert!(back.is_empty(), "{cell}: the client got {back:?}");
    assert_counted(&cell, before, want);
    format!(
        "{cell}: admitted peer relayed 4/4 ways; refused: {}",
        outcome.join(", ")
    )
}

/// One RFC 6062 cell: a TCP allocation over a TCP or TLS client.
fn tcp_cell(t: Transport, fam: Fam, sinks: &Sinks, peers: &[TcpListener; 2], n: u16) -> String {
    let cell = format!("{} client, {} TCP relay", t.name(), fam.name());
    let server = SocketAddr::new(fam.server(), fam.listener_port(t));
    let mut c = Client::open(t, server, &cell);
    let relayed = c
        .allocate(fam, true)
        .unwrap_or_else(|e| panic!("{cell}: Allocate: {e}"));
    assert_eq!(relayed.ip(), fam.server(), "{cell}: relayed address");
    let listener = &peers[fam as usize];
    // Source ports inside the route's range, distinct per cell (no TIME_WAIT clashes).
    let base = RANGE.0 + 40 + n * 10;
    let before = settled();
    let mut want = Counts::default();

    // Inbound connections that must not be announced: from the admitted IP before it has
    // a permission, from an address that never gets one, and (after the permission) from
    // the admitted IP on a port outside the route.
    let mut quiet = Vec::new();
    let mut inbound = |from: SocketAddr, what: &str, want: &mut Counts| {
        let mut s = tcp_from(from, relayed);
        let (closed, read) = closed_within(&mut s, Duration::from_secs(3));
        assert!(
            closed && read == 0,
            "{cell}: inbound from {from} ({what}) not closed at once (closed {closed}, read {read})"
        );
        if what.contains("outside") {
            want.forbidden += 1;
        } else {
            want.no_permission += 1;
        }
        quiet.push(format!("{what} {from}: closed"));
    };
    inbound(
        SocketAddr::new(fam.allowed(), base),
        "admitted IP, no permission yet",
        &mut want,
    );
    inbound(
        SocketAddr::new(fam.other_addr(), base + 1),
        "another address",
        &mut want,
    );
    assert_eq!(
        c.create_permission(SocketAddr::new(fam.allowed(), 1)),
        0,
        "{cell}: CreatePermission for the admitted IP"
    );
    inbound(
        SocketAddr::new(fam.allowed(), OUT_PORT + 20 + n),
        "permitted IP, port outside the range",
        &mut want,
    );
    let attempts: Vec<String> = c
        .drain(Duration::from_millis(200))
        .iter()
        .map(|f| describe_frame(f))
        .collect();
    assert!(
        attempts.is_empty(),
        "{cell}: unadmitted inbound connections were announced: {attempts:?}"
    );

    // A permitted peer's inbound connection is announced and piped.
    let from = SocketAddr::new(fam.allowed(), base + 2);
    let mut inbound_peer = tcp_from(from, relayed);
    let (id, announced) = c
        .recv_connection_attempt(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("{cell}: no ConnectionAttempt for {from}"));
    assert_eq!(announced, from, "{cell}: ConnectionAttempt peer");
    let mut data = Client::open(t, server, &format!("{cell} data (inbound)"));
    assert_eq!(
        data.connection_bind(id),
        0,
        "{cell}: ConnectionBind (inbound)"
    );
    pipe_both_ways(&cell, "inbound", data, &mut inbound_peer);

    // Connect to the admitted peer.
    let peer_addr = listener.local_addr().unwrap();
    let id = c
        .connect(peer_addr)
        .unwrap_or_else(|e| panic!("{cell}: Connect to {peer_addr}: {e}"));
    let mut accepted = None;
    wait_for(Duration::from_secs(3), || {
        accepted = listener.accept().ok();
        accepted.is_some()
    });
    let (mut at_peer, _) =
        accepted.unwrap_or_else(|| panic!("{cell}: the admitted peer saw no connection"));
    at_peer.set_nonblocking(false).unwrap();
    at_peer.set_read_timeout(Some(TICK)).unwrap();
    let mut data = Client::open(t, server, &format!("{cell} data (Connect)"));
    assert_eq!(
        data.connection_bind(id),
        0,
        "{cell}: ConnectionBind (Connect)"
    );
    pipe_both_ways(&cell, "Connect", data, &mut at_peer);

    // Connect to refused peers: 403 (443 for another family), and no connection anywhere.
    let mut outcome = Vec::new();
    for r in refused_peers(fam, relayed) {
        let got = c.connect(r.peer);
        assert_eq!(got, Err(r.bind), "{cell}, {} {}: Connect", r.what, r.peer);
        want.error_responses += 1;
        outcome.push(format!("{}: Connect {}", r.what, r.bind));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut seen = sinks.accepted();
    for l in peers {
        if let Ok((_, from)) = l.accept() {
            seen.push(format!("{} accepted from {from}", l.local_addr().unwrap()));
        }
    }
    assert!(
        seen.is_empty(),
        "{cell}: refused Connects reached a peer: {seen:?}"
    );
    assert_counted(&cell, before, want);
    format!(
        "{cell}: Connect+ConnectionBind both ways, inbound announced+piped; refused inbound: {}; {}",
        quiet.join(", "),
        outcome.join(", ")
    )
}

/// Bytes both ways through a bound data connection and the peer's end.
fn pipe_both_ways(cell: &str, what: &str, data: Client, peer: &mut TcpStream) {
    let (mut pipe, early) = data.into_pipe();
    assert!(
        early.is_empty(),
        "{cell} ({what}): unexpected bytes {early:?}"
    );
    let up = format!("{cell} ({what}): client to peer");
    pipe.write_all(up.as_bytes()).unwrap();
    let got = read_exactly(peer, Vec::new(), up.len(), Duration::from_secs(3));
    assert_eq!(got, up.as_bytes(), "{cell} ({what}): bytes at the peer");
    let down = format!("{cell} ({what}): peer to client");
    peer.write_all(down.as_bytes()).unwrap();
    let got = read_exactly(&mut pipe, Vec::new(), down.len(), Duration::from_secs(3));
    assert_eq!(got, down.as_bytes(), "{cell} ({what}): bytes at the client");
}

#[test]
fn admission_matrix() {
    in_netns(module_path!(), "admission_matrix", matrix);
}

fn matrix() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start_daemon(dir.path());
    let sinks = Sinks::new();
    let udp_peers = [peer_socket(Fam::V4), peer_socket(Fam::V6)];
    let tcp_peers = [Fam::V4, Fam::V6].map(|f| {
        let l = TcpListener::bind(SocketAddr::new(f.allowed(), PEER_PORT)).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    });
    let mut rows = Vec::new();
    for t in TRANSPORTS {
        for fam in [Fam::V4, Fam::V6] {
            rows.push(udp_cell(t, fam, &sinks, &udp_peers));
            daemon.assert_running("after a cell");
        }
    }
    let mut n = 0;
    for t in [Transport::Tcp, Transport::Tls] {
        for fam in [Fam::V4, Fam::V6] {
            rows.push(tcp_cell(t, fam, &sinks, &tcp_peers, n));
            n += 1;
            daemon.assert_running("after a cell");
        }
    }
    for r in &rows {
        println!("FIGURE admission {r}");
    }
    println!(
        "FIGURE admission_matrix cells={} seconds={:.1}",
        rows.len(),
        start.elapsed().as_secs_f64()
    );
}
