//! TURN over DTLS 1.2 (openssl): one UDP socket group per listener, one DTLS session per
//! client address, each carrying STUN and ChannelData messages as records.
//!
//! Cookie exchange comes before any per-client state (RFC 6347 section 4.2.1). Each
//! listener socket of a worker owns one reusable "listen" SSL object; a datagram from an
//! address without a session goes through OpenSSL's stateless `DTLSv1_listen` on it, which
//! answers a ClientHello without a valid cookie with a HelloVerifyRequest (the cookie is an
//! HMAC over the client's address and a time bucket) and keeps nothing. Only a ClientHello
//! that returns a valid cookie turns the listen object into that client's session (the
//! handshake goes on from message 1, as if the exchange had been stateful) and a fresh
//! listen object takes its place, so a flood of spoofed hellos costs no memory and no
//! handshake cryptography. Sessions past the cookie that have not finished the handshake
//! are bounded per worker ([`MAX_HALF_OPEN`], the oldest gives way) and have
//! [`HANDSHAKE_TIMEOUT`]; established sessions without an allocation close after an idle
//! timeout, and an allocation dies with its session.
//!
//! A lost handshake flight is resent on OpenSSL's DTLS retransmission timer (1 s, doubling
//! on each resend; RFC 6347 section 4.2.4), which OpenSSL does not run by itself: each
//! session still in the handshake keeps the time its timer expires, the worker keeps the
//! earliest of them ([`DtlsTimers`]) and its loop sleeps no longer than that, and when it
//! has passed, `DTLSv1_handle_timeout` resends the flight on the sessions whose timer
//! expired. The server's last flight (ChangeCipherSpec, Finished) has no timer, as the RFC
//! says: openssl resends it when the client resends its own last flight.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foreign_types::ForeignTypeRef;
use hmac::{Hmac, Mac};
use mio::net::UdpSocket as MioUdp;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslStream,
    SslVersion,
};
use rustc_hash::FxHashMap;
use sha2::Sha256;
use tracing::debug;

use super::core::{Core, Io, apply, canonical_client, for_socket};
use super::sockopt;
use super::stats::ListenerCounters;
use crate::snapshot::tls::{PemPair, openssl_pair};
use crate::snapshot::{Listener, Snapshot};
use crate::turn::{ClientCtx, Now, TransportId};

/// Sessions per worker that passed the cookie exchange but have not finished the handshake;
/// at the bound the oldest gives way to a new one.
pub const MAX_HALF_OPEN: usize = 256;
/// Established sessions per worker.
pub const MAX_SESSIONS: usize = 64 * 1024;
/// Time a session past the cookie has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Datagrams buffered for a session before openssl reads them.
const MAX_QUEUED: usize = 16;
/// Path MTU assumed for handshake flights.
const MTU: u32 = 1200;
/// Cookies are valid for the time bucket they were made in and the next one.
const COOKIE_BUCKET_SECS: u64 = 60;

/// libssl and libcrypto calls the openssl crates do not wrap (OpenSSL >= 1.1.0, where
/// `DTLSv1_listen` is stateless); they link against the same libraries as openssl-sys.
mod ffi {
    use std::os::raw::c_int;

    /// OpenSSL's opaque `BIO_ADDR` (openssl-sys declares it only for OpenSSL >= 3.2).
    #[repr(C)]
    pub(super) struct BioAddr {
        _opaque: [u8; 0],
    }

    unsafe extern "C" {
        /// Reads datagrams from the SSL's read BIO: answers a ClientHello without a valid
        /// cookie with a HelloVerifyRequest on its write BIO and returns 0 (or <0 on a fatal
        /// error), keeping no state; on a ClientHello with a valid cookie, buffers it in the
        /// SSL, sets the handshake up to continue at message sequence 1 and returns 1.
        /// `client` must be a valid BIO_ADDR: it is cleared on success when the BIO cannot
        /// tell the peer (ours cannot; we know the address ourselves).
        pub(super) fn DTLSv1_listen(s: *mut openssl_sys::SSL, client: *mut BioAddr) -> c_int;
        pub(super) fn BIO_ADDR_new() -> *mut BioAddr;
        pub(super) fn BIO_ADDR_free(a: *mut BioAddr);
    }

    /// `SSL_ctrl` commands behind the `DTLSv1_get_timeout` and `DTLSv1_handle_timeout`
    /// macros of ssl.h (OpenSSL 1.1 to 3.x), which openssl-sys does not declare.
    /// GET_TIMEOUT fills a `struct timeval` with the time left on the handshake's
    /// retransmission timer and returns 1, or returns 0 when no timer runs (OpenSSL 3
    /// reports less than 15 ms left as 0). HANDLE_TIMEOUT returns 0 when the timer has not
    /// expired, 1 when it resent the last flight (and restarted the timer, doubled), or <0
    /// when the handshake failed (too many resends).
    pub(super) const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
    pub(super) const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;
}

/// A TURN-DTLS listener socket of one worker.
pub struct DtlsListener {
    pub name: Arc<str>,
    pub signature: u64,
    /// Shared with the sessions, which send their records from it.
    socket: Arc<MioUdp>,
    v6: bool,
    ctx: SslContext,
    /// Digest of the certificate material `ctx` was made from.
    pem_digest: u64,
    /// The reusable SSL object that answers cookie-less hellos (made on first use, and again
    /// each time one becomes a session).
    listen: Option<SslStream<Datagrams>>,
    /// This socket's sessions (their endpoint keys) by client address.
    pub sessions: FxHashMap<SocketAddr, usize>,
    pub counters: ListenerCounters,
}

/// One client's DTLS session: an endpoint without a socket of its own (its datagrams come
/// through its listener socket).
pub struct DtlsSession {
    /// Key of its listener socket.
    pub listener: usize,
    pub client: SocketAddr,
    socket: Arc<MioUdp>,
    v6: bool,
    stream: SslStream<Datagrams>,
    pub established: bool,
    pub deadline: Instant,
    /// While in the handshake: when openssl's retransmission timer expires (None when it
    /// does not run).
    timer: Option<Instant>,
    /// This session's traffic, added to its listener's when it closes.
    pub counters: ListenerCounters,
}

/// A worker's DTLS retransmission timers: its sessions still in the handshake (exactly
/// those not yet established, at most [`MAX_HALF_OPEN`]), and the earliest time one of
/// their timers expires.
#[derive(Default)]
pub struct DtlsTimers {
    pub handshaking: Vec<usize>,
    pub next: Option<Instant>,
}

impl DtlsTimers {
    /// The earliest time a handshake's retransmission timer expires, for the worker's
    /// poll timeout.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    fn arm(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next = Some(self.next.map_or(at, |n| n.min(at)));
        }
    }

    pub fn forget(&mut self, key: usize) {
        self.handshaking.retain(|&h| h != key);
    }
}

/// The BIO under a session: whole datagrams in, whole datagrams out.
#[derive(Default)]
pub struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The per-process key behind cookies, and the SSL ex-data slot holding the client
/// address the cookie callbacks need.
fn cookie_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn addr_index() -> Option<Index<Ssl, SocketAddr>> {
    static INDEX: OnceLock<Option<Index<Ssl, SocketAddr>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

fn cookie_for(addr: &SocketAddr, bucket: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(cookie_key()) {
        mac.update(&bucket.to_be_bytes());
        mac.update(addr.to_string().as_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    }
    out
}

fn cookie_bucket() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / COOKIE_BUCKET_SECS)
}

/// Constant time: the comparison must not tell an attacker how much matched.
fn cookie_matches(cookie: &[u8], want: &[u8; 16]) -> bool {
    cookie.len() == want.len()
        && cookie
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The SSL object under a stream, mutably (the openssl crate only lends it shared).
fn ssl_mut(stream: &mut SslStream<Datagrams>) -> &mut SslRef {
    // SAFETY: the pointer is the live SSL the stream owns for as long as the stream lives;
    // the exclusive borrow of the stream makes the returned reference the only one in use
    // while it lives (SslRef is an opaque FFI type: no Rust data is aliased).
    unsafe { SslRef::from_ptr_mut(stream.ssl().as_ptr()) }
}

/// Time left on the handshake's DTLS retransmission timer, or None when it does not run.
fn dtls_timeout(stream: &SslStream<Datagrams>) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: the SSL pointer is live (owned by `stream`) and is a DTLS SSL, whose
    // DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` through `parg` and keeps no pointer
    // to it; `tv` is a valid, exclusively borrowed timeval for the call.
    let rc = unsafe {
        openssl_sys::SSL_ctrl(
            stream.ssl().as_ptr(),
            ffi::DTLS_CTRL_GET_TIMEOUT,
            0,
            (&raw mut tv).cast(),
        )
    };
    if rc != 1 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Run the handshake's DTLS retransmission timer at `now`: if it expired, openssl puts the
/// last flight in the BIO's outgoing queue again and restarts the timer, doubled. Returns
/// when the timer expires next (None when it does not run), or Err when openssl gave up on
/// the handshake (too many resends).
fn drive_timer(stream: &mut SslStream<Datagrams>, now: Instant) -> Result<Option<Instant>, ()> {
    // SAFETY: the SSL pointer is live (owned by `stream`, borrowed exclusively here) and is
    // a DTLS SSL; DTLS_CTRL_HANDLE_TIMEOUT takes no argument and writes only to the SSL's
    // write BIO, which is the stream's `Datagrams`.
    let rc = unsafe {
        openssl_sys::SSL_ctrl(
            stream.ssl().as_ptr(),
            ffi::DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        // The failure is in this thread's error queue; it must not be taken for the next
        // session's error.
        let _ = ErrorStack::get();
        return Err(());
    }
    // The timer of a flight just resent runs for at least 2 s; the floor only keeps a timer
    // openssl reports as expired but did not handle from spinning the loop.
    Ok(dtls_timeout(stream).map(|left| now + left.max(Duration::from_millis(10))))
}

/// A fresh listen object for a listener context.
fn listen_stream(ctx: &SslContext) -> Option<SslStream<Datagrams>> {
    let mut ssl = Ssl::new(ctx)
        .map_err(|e| debug!(target: "listener", "DTLS: new listen SSL: {e}"))
        .ok()?;
    ssl.set_accept_state();
    SslStream::new(ssl, Datagrams::default())
        .map_err(|e| debug!(target: "listener", "DTLS: new listen stream: {e}"))
        .ok()
}

/// Run one datagram from `client` through `DTLSv1_listen` on the listen object. Whatever it
/// answered (a HelloVerifyRequest, or nothing for a datagram that is not a ClientHello) is
/// left in the BIO's outgoing queue; true when the datagram was a ClientHello with a valid
/// cookie, which the SSL object now holds as the start of this client's handshake.
fn listen_once(stream: &mut SslStream<Datagrams>, client: SocketAddr, datagram: &[u8]) -> bool {
    let Some(index) = addr_index() else {
        return false;
    };
    // The cookie callbacks read the address from here (the session's handshake checks the
    // cookie once more, so it must stay set once the object becomes the session).
    ssl_mut(stream).set_ex_data(index, client);
    let bio = stream.get_mut();
    bio.incoming.clear();
    bio.incoming.push_back(datagram.to_vec());
    // SAFETY: BIO_ADDR_new has no preconditions; a null result is handled below.
    let peer = unsafe { ffi::BIO_ADDR_new() };
    if peer.is_null() {
        return false;
    }
    // SAFETY: the SSL pointer is live (owned by `stream`, borrowed exclusively here) and has
    // the stream's BIO as both read and write BIO; `peer` is a valid BIO_ADDR that
    // DTLSv1_listen may write to or clear. The BIO callbacks only touch `Datagrams`.
    let rc = unsafe { ffi::DTLSv1_listen(stream.ssl().as_ptr(), peer) };
    // SAFETY: `peer` came from BIO_ADDR_new above and nothing else holds it.
    unsafe { ffi::BIO_ADDR_free(peer) };
    // A rejected datagram leaves errors in this thread's queue; they must not be taken for
    // the next session's error.
    let _ = ErrorStack::get();
    stream.get_mut().incoming.clear();
    rc == 1
}

/// A DTLS 1.2 server context with cookie exchange.
pub fn dtls_context(pem: &PemPair) -> Result<SslContext, String> {
    let (chain, key) = openssl_pair(pem)?;
    let mut b = SslContextBuilder::new(SslMethod::dtls()).map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(|e| e.to_string())?;
    let mut certs = chain.into_iter();
    let leaf = certs.next().ok_or("cert: no certificate in PEM")?;
    b.set_certificate(&leaf).map_err(|e| format!("cert: {e}"))?;
    for c in certs {
        b.add_extra_chain_cert(c)
            .map_err(|e| format!("cert chain: {e}"))?;
    }
    b.set_private_key(&key).map_err(|e| format!("key: {e}"))?;
    b.check_private_key()
        .map_err(|e| format!("key does not match cert: {e}"))?;
    // The MTU is ours (set on each session): do not ask the in-memory BIO, which would
    // answer 0 and make OpenSSL fall back to its minimum after lost flights.
    b.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU);
    b.set_cookie_generate_cb(|ssl, buf| {
        let addr = addr_index()
            .and_then(|i| ssl.ex_data(i).copied())
            .ok_or_else(ErrorStack::get)?;
        let cookie = cookie_for(&addr, cookie_bucket());
        let n = cookie.len().min(buf.len());
        buf[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(|ssl, cookie| {
        addr_index()
            .and_then(|i| ssl.ex_data(i).copied())
            .is_some_and(|addr| {
                let now = cookie_bucket();
                // Both checks run, so the time taken does not tell which bucket matched.
                let current = cookie_matches(cookie, &cookie_for(&addr, now));
                let previous = cookie_matches(cookie, &cookie_for(&addr, now.saturating_sub(1)));
                current | previous
            })
    });
    Ok(b.build())
}

impl DtlsListener {
    /// The sockets of a TURN-DTLS listener. A certificate that does not load is an
    /// `InvalidInput` error: this listener stays down, the rest of the config runs.
    pub fn bind(l: &Listener) -> io::Result<Vec<DtlsListener>> {
        let ctx = match &l.dtls {
            Some(Ok(pem)) => dtls_context(pem),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no certificate".into()),
        }
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "listener {}: DTLS certificate: {e}; listener not started",
                    l.name
                ),
            )
        })?;
        let socks = sockopt::listener_sockets(l.bind_ip(), l.port).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {}: bind UDP port {}: {e}", l.name, l.port),
            )
        })?;
        let mut out = Vec::with_capacity(socks.len());
        for std_sock in socks {
            let v6 = std_sock.local_addr()?.is_ipv6();
            out.push(DtlsListener {
                name: l.name.clone(),
                signature: l.signature,
                socket: Arc::new(MioUdp::from_std(std_sock)),
                v6,
                ctx: ctx.clone(),
                pem_digest: l.pem_digest,
                listen: None,
                sessions: FxHashMap::default(),
                counters: ListenerCounters {
                    name: l.name.clone(),
                    protocol: l.protocol,
                    ..ListenerCounters::default()
                },
            });
        }
        Ok(out)
    }

    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        registry.register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let fd = self.socket.as_raw_fd();
        let _ = registry.deregister(&mut SourceFd(&fd));
    }

    /// Hot-swap the certificate when its material changed: new sessions get the new
    /// certificate (the stateless listen object is remade from the new context),
    /// established ones keep theirs. A certificate that no longer loads is not swapped in.
    pub fn refresh_cert(&mut self, l: &Listener, worker: usize) {
        if l.pem_digest == self.pem_digest {
            return;
        }
        self.pem_digest = l.pem_digest;
        let ctx = match &l.dtls {
            Some(Ok(pem)) => dtls_context(pem),
            Some(Err(e)) => Err(e.clone()),
            None => return,
        };
        match ctx {
            Ok(ctx) => {
                self.ctx = ctx;
                self.listen = None;
                debug!(target: "listener", "worker {worker}: listener {}: new certificate for new sessions", self.name);
            }
            Err(e) => {
                debug!(target: "listener", "worker {worker}: listener {}: new DTLS certificate does not load ({e}); keeping the old one", self.name);
            }
        }
    }

    /// Read one datagram: its length and its sender, or None when none waits.
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let (n, from) = self.socket.recv_from(buf).ok()?;
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += n as u64;
        Some((n, canonical_client(from)))
    }

    /// A datagram from an address without a session: the stateless cookie exchange. Sends
    /// the HelloVerifyRequest (if any) and returns None, or, for a ClientHello with a valid
    /// cookie, the new session (its datagram already consumed: pump it). `key` is this
    /// socket's endpoint key.
    pub fn listen(
        &mut self,
        now: Now,
        key: usize,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Option<DtlsSession> {
        if self.listen.is_none() {
            self.listen = listen_stream(&self.ctx);
        }
        let stream = self.listen.as_mut()?;
        let verified = listen_once(stream, client, datagram);
        let answer = std::mem::take(&mut stream.get_mut().outgoing);
        for d in answer {
            match self.socket.send_to(&d, for_socket(client, self.v6)) {
                Ok(_) => {
                    self.counters.tx_packets += 1;
                    self.counters.tx_bytes += d.len() as u64;
                }
                Err(_) => self.counters.tx_drops += 1,
            }
        }
        if !verified {
            return None;
        }
        let mut stream = self.listen.take()?;
        // DTLSv1_listen cleared the SSL object, MTU included.
        ssl_mut(&mut stream)
            .set_mtu(MTU)
            .map_err(|e| debug!(target: "listener", "DTLS: set MTU: {e}"))
            .ok()?;
        Some(DtlsSession {
            listener: key,
            client,
            socket: self.socket.clone(),
            v6: self.v6,
            stream,
            established: false,
            deadline: now.mono + HANDSHAKE_TIMEOUT,
            timer: None,
            counters: ListenerCounters {
                name: self.name.clone(),
                protocol: self.counters.protocol,
                handshakes: 1,
                ..ListenerCounters::default()
            },
        })
    }
}

impl DtlsSession {
    /// Queue a datagram from the client for openssl (bounded; the excess is dropped, as
    /// the network would).
    pub fn input(&mut self, datagram: &[u8]) {
        let queue = &mut self.stream.get_mut().incoming;
        if queue.len() < MAX_QUEUED {
            queue.push_back(datagram.to_vec());
        }
    }

    /// Drive the session: handshake, then read records and hand them to the core; send
    /// whatever openssl produced. `key` is this session's transport id. Returns false when
    /// the session must close.
    pub fn pump(
        &mut self,
        key: usize,
        now: Now,
        snap: &Snapshot,
        core: &mut Core,
        io: &mut impl Io,
        timers: &mut DtlsTimers,
    ) -> bool {
        let mut keep = true;
        if !self.established {
            match self.stream.do_handshake() {
                Ok(()) => {
                    self.established = true;
                    self.deadline = now.mono + IDLE_TIMEOUT;
                    self.timer = None;
                    timers.forget(key);
                    self.counters.handshakes = 0;
                    self.counters.connections = 1;
                    self.counters.connections_total = 1;
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                    // A flight sent (or resent) just now (re)started the timer.
                    self.timer = dtls_timeout(&self.stream).map(|left| now.mono + left);
                    timers.arm(self.timer);
                }
                Err(e) => {
                    debug!(target: "listener", "DTLS handshake with {} failed: {e}", self.client);
                    keep = false;
                }
            }
        }
        if keep && self.established {
            let listener_idx = snap.listener(&self.counters.name).map(|(i, _)| i);
            // A DTLS record carries at most 2^14 bytes of plaintext (RFC 6347 section 4.1).
            let mut record = [0u8; 16 * 1024];
            for _ in 0..MAX_QUEUED {
                let n = match self.stream.ssl_read(&mut record) {
                    Ok(0) => {
                        keep = false;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.code() == ErrorCode::WANT_READ => break,
                    Err(_) => {
                        keep = false;
                        break;
                    }
                };
                let Some(listener) = listener_idx else {
                    keep = false;
                    break;
                };
                self.deadline = now.mono + IDLE_TIMEOUT;
                let ctx = ClientCtx {
                    transport: TransportId(key as u32),
                    listener,
                    client: self.client,
                    stream: false,
                };
                let answer =
                    core.server
                        .handle_client(now, snap, ctx, &record[..n], &mut core.scratch, io);
                let (stream, scratch) = (&mut self.stream, &core.scratch);
                apply(answer, io, |len, _| {
                    let _ = stream.ssl_write(&scratch[..len]);
                });
            }
        }
        self.send_pending();
        keep
    }

    fn send_pending(&mut self) {
        let out = std::mem::take(&mut self.stream.get_mut().outgoing);
        for d in out {
            match self.socket.send_to(&d, for_socket(self.client, self.v6)) {
                Ok(_) => {
                    self.counters.tx_packets += 1;
                    self.counters.tx_bytes += d.len() as u64;
                }
                Err(_) => self.counters.tx_drops += 1,
            }
        }
    }

    /// Relayed bytes, or a message of the core, for the client.
    pub fn send(&mut self, bytes: &[u8]) {
        if self.established && self.stream.ssl_write(bytes).is_ok() {
            self.send_pending();
        }
    }

    /// Run the retransmission timer if it expired: resend the lost flight. Returns false
    /// when openssl gave up on the handshake.
    pub fn retransmit(&mut self, now: Now) -> bool {
        if self.timer.is_some_and(|t| t <= now.mono) {
            match drive_timer(&mut self.stream, now.mono) {
                Ok(at) => self.timer = at,
                Err(()) => {
                    debug!(target: "listener", "DTLS handshake with {}: no answer to resent flights", self.client);
                    return false;
                }
            }
            self.send_pending();
        }
        true
    }

    /// When the retransmission timer expires next.
    pub fn timer(&self) -> Option<Instant> {
        self.timer
    }

    /// Close: an established session says goodbye. Returns the counters to add to the
    /// listener's.
    pub fn close(mut self) -> ListenerCounters {
        if self.established {
            let _ = self.stream.shutdown();
            self.send_pending();
        }
        self.counters.connections = 0;
        self.counters.handshakes = 0;
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_ctx() -> SslContext {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        dtls_context(&PemPair {
            cert: ck.cert.pem().into_bytes(),
            key: ck.signing_key.serialize_pem().into_bytes(),
        })
        .unwrap()
    }

    fn client() -> SslStream<Datagrams> {
        let ctx = SslContext::builder(SslMethod::dtls()).unwrap().build();
        let mut ssl = Ssl::new(&ctx).unwrap();
        ssl.set_connect_state();
        SslStream::new(ssl, Datagrams::default()).unwrap()
    }

    fn carry(from: &mut SslStream<Datagrams>, to: &mut SslStream<Datagrams>) -> Vec<Vec<u8>> {
        let out = std::mem::take(&mut from.get_mut().outgoing);
        to.get_mut().incoming.extend(out.iter().cloned());
        out
    }

    /// The handshake message types of the plaintext handshake records in `flight`.
    fn messages(flight: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in flight {
            let mut off = 0;
            while off + 13 < d.len() {
                let len = usize::from(u16::from_be_bytes([d[off + 11], d[off + 12]]));
                if d[off] == 22 && d[off + 3..off + 5] == [0, 0] {
                    out.push(d[off + 13]);
                }
                off += 13 + len;
            }
        }
        out
    }

    /// A server session whose ServerHello..ServerHelloDone flight is lost resends it when its
    /// retransmission timer (1 s) has expired, and not before; the client completes the
    /// handshake with the resent flight.
    #[test]
    fn an_expired_handshake_timer_resends_the_lost_flight() {
        let ctx = server_ctx();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut c = client();
        let mut server = listen_stream(&ctx).unwrap();

        // The cookie exchange, as the listener runs it.
        let _ = c.do_handshake();
        let hello = std::mem::take(&mut c.get_mut().outgoing);
        assert!(!listen_once(&mut server, addr, &hello[0]));
        carry(&mut server, &mut c);
        let _ = c.do_handshake();
        let hello = std::mem::take(&mut c.get_mut().outgoing);
        assert!(listen_once(&mut server, addr, &hello[0]));
        ssl_mut(&mut server).set_mtu(MTU).unwrap();
        assert_eq!(dtls_timeout(&server), None, "no timer before a flight");

        // The server's flight: sent, and lost.
        assert!(server.do_handshake().is_err());
        let sent_at = Instant::now();
        let lost = std::mem::take(&mut server.get_mut().outgoing);
        // ServerHello, Certificate, ServerKeyExchange, ServerHelloDone.
        assert_eq!(messages(&lost), [2, 11, 12, 14]);
        let left = dtls_timeout(&server).expect("the flight started the timer");
        assert!(left <= Duration::from_secs(1) && left > Duration::from_millis(500));

        // Not expired yet: nothing is resent.
        let next = drive_timer(&mut server, Instant::now()).unwrap();
        assert!(next.is_some());
        assert!(server.get_mut().outgoing.is_empty());

        // Expired: the whole flight again, and the timer restarted, doubled.
        std::thread::sleep(left + Duration::from_millis(30));
        let now = Instant::now();
        let next = drive_timer(&mut server, now)
            .unwrap()
            .expect("timer restarted");
        let resent = carry(&mut server, &mut c);
        assert_eq!(
            messages(&resent),
            messages(&lost),
            "the whole flight is resent"
        );
        assert!(
            next >= now + Duration::from_millis(1500),
            "the timer doubles"
        );
        assert!(sent_at.elapsed() < Duration::from_secs(3));

        // The client finishes with the resent flight, and so does the server.
        let _ = c.do_handshake();
        carry(&mut c, &mut server);
        server.do_handshake().expect("server handshake completes");
        carry(&mut server, &mut c);
        c.do_handshake().expect("client handshake completes");
    }
}
