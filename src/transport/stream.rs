//! TURN over TCP and TLS (RFC 8656 section 3.1): stream listener sockets and client
//! connections, each an endpoint of the worker that accepted it.
//!
//! A connection carries STUN messages and ChannelData frames back to back; ChannelData is
//! padded to a multiple of 4 bytes in both directions (RFC 8656 section 12.5). Buffers are
//! bounded: a client that does not read loses relayed datagrams (counted), as it would on
//! UDP, instead of growing a queue. Connections have a handshake/first-request timeout and
//! an idle timeout while they hold no allocation; an allocation dies with its connection.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use tracing::debug;

use super::core::{Applied, ByteStream, Core, Io, apply, canonical_client};
use super::sockopt;
use super::stats::{CloseReason, ListenerCounters};
use crate::snapshot::{Listener, Snapshot};
use crate::stun::stream_frame_len;
use crate::turn::{ClientCtx, ConnectionId, Now, TransportId};

/// Connections one worker holds at most; further ones are refused at accept.
pub const MAX_CONNS: usize = 64 * 1024;
/// Largest frame: a ChannelData of 65535 bytes with its header and padding.
const MAX_FRAME: usize = 4 + 65536;
/// Bytes queued for one client before relayed datagrams are dropped.
const MAX_PENDING: usize = 256 * 1024;
/// Time for the TLS handshake and the first request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may sit without an allocation and without traffic.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Reads of 16 KiB per event before other sockets get their turn.
const READS_PER_EVENT: usize = 16;
/// Connections accepted per listener per wakeup.
pub const ACCEPT_BUDGET: usize = 64;

/// A TURN-TCP or TURN-TLS listener socket of one worker.
pub struct StreamListener {
    pub name: Arc<str>,
    pub signature: u64,
    socket: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Digest of the certificate material `tls` was made from.
    pem_digest: u64,
    pub counters: ListenerCounters,
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    /// Key of the listener socket that accepted it.
    pub listener: usize,
    name: Arc<str>,
    pub client: SocketAddr,
    /// Received bytes not yet framed.
    rbuf: Vec<u8>,
    /// Plain-TCP bytes not yet written (TLS buffers inside rustls).
    wbuf: Vec<u8>,
    pub deadline: Instant,
    writable_interest: bool,
    /// RFC 6062: after ConnectionBind, a raw byte pipe to this peer connection.
    pub pipe: Option<ConnectionId>,
    /// This connection's traffic, added to its listener's when it closes.
    pub counters: ListenerCounters,
    /// It holds an allocation (it left the unauthenticated pool, `budget.rs`).
    pub authenticated: bool,
    /// Its descriptor counts in the allocation pool.
    pub counted_fd: bool,
}

/// The outcome of one accept.
#[allow(clippy::large_enum_variant)] // moved once, straight into the worker's slab
pub enum Accepted {
    Conn(Conn),
    /// One was accepted and closed again (no TLS session could be made).
    Refused,
    /// None waits (or the socket failed): try again on the next event.
    None,
}

/// What a connection asks of the worker after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnEvent {
    Keep,
    /// It stopped reading with more perhaps waiting: serve it again (edge-triggered
    /// readiness would not fire again for bytes already in the socket).
    More,
    Close(CloseReason),
    /// ConnectionBind succeeded: pipe this connection to peer connection `conn`, starting
    /// with the bytes the client sent after the request.
    Bound {
        conn: ConnectionId,
        early: Vec<u8>,
    },
}

impl StreamListener {
    /// The sockets of a TURN-TCP/TLS listener. A certificate that does not load is an
    /// `InvalidInput` error: this listener stays down, the rest of the config runs.
    pub fn bind(l: &Listener) -> io::Result<Vec<StreamListener>> {
        let tls = match &l.tls {
            None => None,
            Some(Ok(cfg)) => Some(cfg.clone()),
            Some(Err(e)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "listener {}: TLS certificate: {e}; listener not started",
                        l.name
                    ),
                ));
            }
        };
        let socks = sockopt::tcp_listener_sockets(l.bind_ip(), l.port).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {}: bind TCP port {}: {e}", l.name, l.port),
            )
        })?;
        Ok(socks
            .into_iter()
            .map(|s| StreamListener {
                name: l.name.clone(),
                signature: l.signature,
                socket: TcpListener::from_std(s),
                tls: tls.clone(),
                pem_digest: l.pem_digest,
                counters: ListenerCounters {
                    name: l.name.clone(),
                    protocol: l.protocol,
                    ..ListenerCounters::default()
                },
            })
            .collect())
    }

    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        registry.register(&mut self.socket, Token(key), Interest::READABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    /// Hot-swap the certificate when its material changed (a file named by path was
    /// replaced): new connections get the new certificate, established ones keep theirs.
    /// A certificate that no longer loads is not swapped in.
    pub fn refresh_cert(&mut self, l: &Listener, worker: usize) {
        if self.tls.is_none() || l.pem_digest == self.pem_digest {
            return;
        }
        self.pem_digest = l.pem_digest;
        match &l.tls {
            Some(Ok(cfg)) => {
                self.tls = Some(cfg.clone());
                debug!(target: "listener", "worker {worker}: listener {}: new certificate for new connections", self.name);
            }
            Some(Err(e)) => {
                debug!(target: "listener", "worker {worker}: listener {}: new TLS certificate does not load ({e}); keeping the old one", self.name);
            }
            None => {}
        }
    }

    /// Accept one pending connection.
    pub fn accept(&mut self, now: Now, key: usize) -> Accepted {
        let (stream, from) = match self.socket.accept() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::None,
            Err(e) => {
                debug!(target: "listener", "listener {}: accept: {e}", self.name);
                return Accepted::None;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = match &self.tls {
            Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                Ok(mut c) => {
                    c.set_buffer_limit(Some(MAX_PENDING));
                    Some(Box::new(c))
                }
                Err(_) => return Accepted::Refused,
            },
            None => None,
        };
        self.counters.connections_total += 1;
        Accepted::Conn(Conn {
            stream,
            tls,
            listener: key,
            name: self.name.clone(),
            client: canonical_client(from),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            deadline: now.mono + HANDSHAKE_TIMEOUT,
            writable_interest: false,
            pipe: None,
            counters: ListenerCounters {
                name: self.name.clone(),
                protocol: self.counters.protocol,
                connections: 1,
                ..ListenerCounters::default()
            },
            authenticated: false,
            counted_fd: false,
        })
    }
}

impl Conn {
    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        registry.register(&mut self.stream, Token(key), Interest::READABLE)
    }

    /// Read and handle what the client sent, then write what is pending. `key` is this
    /// connection's transport id.
    pub fn service(
        &mut self,
        key: usize,
        now: Now,
        snap: &Snapshot,
        core: &mut Core,
        io: &mut impl Io,
        registry: &Registry,
    ) -> ConnEvent {
        let event = self.read(key, now, snap, core, io);
        if let ConnEvent::Close(_) = event {
            return event;
        }
        if !self.write(registry, key) {
            return ConnEvent::Close(CloseReason::WriteFailed);
        }
        event
    }

    /// Read what the client sent and hand each complete frame to the core as soon as it is
    /// in, so a connection holds at most one partial frame and one read's worth of bytes,
    /// however much a client pipelines. Reading stops (backpressure) while the answers
    /// queued for the client exceed half of [`MAX_PENDING`]: a client that does not read
    /// stops being read, and its kernel buffers and TCP flow control hold the rest.
    fn read(
        &mut self,
        key: usize,
        now: Now,
        snap: &Snapshot,
        core: &mut Core,
        io: &mut impl Io,
    ) -> ConnEvent {
        let listener_idx = snap.listener(&self.name).map(|(i, _)| i);
        let mut chunk = [0u8; 16 * 1024];
        // Bounded: at most this many reads per event; `More` brings the worker back.
        for _ in 0..READS_PER_EVENT {
            if self.backlog() > MAX_PENDING / 2 {
                return ConnEvent::Keep;
            }
            let n = match read_some(self, &mut chunk) {
                Ok(0) => return ConnEvent::Close(CloseReason::ClientClosed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ConnEvent::Keep,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return ConnEvent::Close(CloseReason::Tls);
                }
                Err(_) => return ConnEvent::Close(CloseReason::Reset),
            };
            self.rbuf.extend_from_slice(&chunk[..n]);
            self.counters.rx_bytes += n as u64;
            match self.frames(key, now, snap, listener_idx, core, io) {
                ConnEvent::Keep => {}
                other => return other,
            }
        }
        ConnEvent::More
    }

    /// Hand every complete frame in the read buffer to the core, keeping a partial one.
    fn frames(
        &mut self,
        key: usize,
        now: Now,
        snap: &Snapshot,
        listener_idx: Option<crate::snapshot::ListenerIdx>,
        core: &mut Core,
        io: &mut impl Io,
    ) -> ConnEvent {
        let mut off = 0;
        let mut bound = None;
        let mut event = ConnEvent::Keep;
        loop {
            let frame_len = match stream_frame_len(&self.rbuf[off..]) {
                Ok(Some(len)) if len <= MAX_FRAME => len,
                Ok(Some(_)) | Err(_) => return ConnEvent::Close(CloseReason::Malformed),
                Ok(None) => break,
            };
            if self.rbuf.len() - off < frame_len {
                break;
            }
            let Some(listener) = listener_idx else {
                event = ConnEvent::Close(CloseReason::ListenerStopped);
                break;
            };
            let frame = &self.rbuf[off..off + frame_len];
            off += frame_len;
            self.counters.rx_packets += 1;
            self.deadline = now.mono + IDLE_TIMEOUT;
            let ctx = ClientCtx {
                transport: TransportId(key as u32),
                listener,
                client: self.client,
                stream: true,
            };
            let answer = core
                .server
                .handle_client(now, snap, ctx, frame, &mut core.scratch, io);
            let (tls, wbuf, counters) = (&mut self.tls, &mut self.wbuf, &mut self.counters);
            let scratch = &core.scratch;
            let applied = apply(answer, io, |n, _| {
                let sent = queue(tls, wbuf, &scratch[..n]);
                count_tx(counters, sent, n);
            });
            if let Applied::Bind { len, conn } = applied {
                let sent = queue(&mut self.tls, &mut self.wbuf, &core.scratch[..len]);
                count_tx(&mut self.counters, sent, len);
                // Everything after the ConnectionBind request is pipe data.
                self.pipe = Some(conn);
                bound = Some(conn);
                break;
            }
        }
        self.rbuf.drain(..off);
        // Give back memory a burst took.
        if self.rbuf.capacity() > 2 * MAX_FRAME {
            self.rbuf.shrink_to(MAX_FRAME);
        }
        match bound {
            Some(conn) => ConnEvent::Bound {
                conn,
                early: std::mem::take(&mut self.rbuf),
            },
            None => event,
        }
    }

    /// Bytes queued for the client and not yet written.
    fn backlog(&self) -> usize {
        match &self.tls {
            Some(tls) => {
                if tls.wants_write() {
                    MAX_PENDING
                } else {
                    0
                }
            }
            None => self.wbuf.len(),
        }
    }

    /// Flush pending output and follow it with the writable interest. Returns false when
    /// the connection must close.
    pub fn write(&mut self, registry: &Registry, key: usize) -> bool {
        let pending = match flush(&mut self.tls, &mut self.stream, &mut self.wbuf) {
            // A pipe keeps both interests: either side may wait for the other.
            Ok(p) => p || self.pipe.is_some(),
            Err(_) => return false,
        };
        if pending != self.writable_interest {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry
                .reregister(&mut self.stream, Token(key), interest)
                .is_err()
            {
                return false;
            }
            self.writable_interest = pending;
        }
        true
    }

    /// Send relayed bytes (a ChannelData frame or a Data indication) or a message of the
    /// core, padding ChannelData to 4 bytes. Returns false when the connection must close.
    pub fn send(&mut self, bytes: &[u8], registry: &Registry, key: usize) -> bool {
        let sent = queue(&mut self.tls, &mut self.wbuf, bytes);
        count_tx(&mut self.counters, sent, bytes.len());
        self.write(registry, key)
    }

    /// The name of the listener that accepted it.
    pub fn listener_name(&self) -> &str {
        &self.name
    }

    /// Whether the connection may be closed as idle at `now` (the worker also checks that
    /// it holds no allocation).
    pub fn idle(&self, now: Now) -> bool {
        self.deadline <= now.mono && self.pipe.is_none()
    }

    /// Close: TLS says goodbye, the socket leaves the poll. Returns the counters to add to
    /// the listener's, this close counted under `reason`.
    pub fn close(mut self, registry: &Registry, reason: CloseReason) -> ListenerCounters {
        self.counters.closes[reason as usize] += 1;
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.stream);
        }
        let _ = registry.deregister(&mut self.stream);
        debug!(target: "listener", "listener {}: connection from {} closed: {}", self.name, self.client, reason.as_str());
        self.counters.connections = 0;
        self.counters
    }
}

impl ByteStream for Conn {
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_some(self, buf)?;
        self.counters.rx_bytes += n as u64;
        Ok(n)
    }

    /// Pipe bytes to the client: after any queued STUN output, raw (no padding).
    fn write_plain(&mut self, buf: &[u8]) -> io::Result<usize> {
        if flush(&mut self.tls, &mut self.stream, &mut self.wbuf)? {
            return Ok(0); // earlier output (the ConnectionBind response) first
        }
        let mut taken = 0;
        while taken < buf.len() {
            let n = match self.tls.as_mut() {
                Some(tls) => tls.writer().write(&buf[taken..])?,
                None => match self.stream.write(&buf[taken..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                },
            };
            if n == 0 {
                break;
            }
            taken += n;
            if self.tls.is_some() && flush(&mut self.tls, &mut self.stream, &mut self.wbuf)? {
                break;
            }
        }
        self.counters.tx_bytes += taken as u64;
        Ok(taken)
    }
}

/// Read plaintext: straight from the socket, or through rustls.
fn read_some(c: &mut Conn, buf: &mut [u8]) -> io::Result<usize> {
    let Some(tls) = c.tls.as_mut() else {
        return c.stream.read(buf);
    };
    loop {
        match tls.reader().read(buf) {
            Ok(0) => return Ok(0),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        // No plaintext buffered: pull more TLS records.
        match tls.read_tls(&mut c.stream) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    // Tell the peer why, then close.
                    let _ = tls.write_tls(&mut c.stream);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                // Handshake messages may need an answer right away.
                while tls.wants_write() {
                    match tls.write_tls(&mut c.stream) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Queue bytes for the client, padded to a multiple of 4 (only ChannelData needs it;
/// STUN messages already are). Returns false when the bound was hit and they were dropped.
fn queue(
    tls: &mut Option<Box<rustls::ServerConnection>>,
    wbuf: &mut Vec<u8>,
    bytes: &[u8],
) -> bool {
    const PAD: [u8; 3] = [0; 3];
    let pad = (4 - bytes.len() % 4) % 4;
    match tls.as_mut() {
        Some(tls) => {
            let mut w = tls.writer();
            // With the buffer limit set, a full buffer takes nothing: write_all would loop.
            match w.write(bytes) {
                Ok(n) if n == bytes.len() => {
                    w.write(&PAD[..pad]).map(|n| n == pad).unwrap_or(false)
                }
                _ => false,
            }
        }
        None => {
            if wbuf.len() + bytes.len() + pad > MAX_PENDING {
                return false;
            }
            wbuf.extend_from_slice(bytes);
            wbuf.extend_from_slice(&PAD[..pad]);
            true
        }
    }
}

/// Write as much pending output as the socket takes; returns whether some is left.
fn flush(
    tls: &mut Option<Box<rustls::ServerConnection>>,
    stream: &mut TcpStream,
    wbuf: &mut Vec<u8>,
) -> io::Result<bool> {
    match tls.as_mut() {
        Some(tls) => {
            while tls.wants_write() {
                match tls.write_tls(stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            Ok(false)
        }
        None => {
            while !wbuf.is_empty() {
                match stream.write(wbuf) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        wbuf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            // Give back memory a burst took.
            if wbuf.capacity() > 64 * 1024 {
                wbuf.shrink_to(4096);
            }
            Ok(false)
        }
    }
}

fn count_tx(c: &mut ListenerCounters, sent: bool, len: usize) {
    if sent {
        c.tx_packets += 1;
        c.tx_bytes += len as u64;
    } else {
        c.tx_drops += 1;
    }
}
