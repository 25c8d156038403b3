//! TURN over TCP and TLS (RFC 8656 section 3.1): stream listeners and client connections,
//! owned by the worker that accepted them.
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
use mio::{Interest, Token};
use tracing::{debug, warn};

use super::canonical_client;
use super::stats::ListenerCounters;
use super::udp::Worker;
use crate::snapshot::{ListenerIdx, Snapshot};
use crate::stun::stream_frame_len;
use crate::turn::{ClientCtx, ClientOutput, ConnectionId, FiveTuple, Now, TransportId};

/// Tokens of stream listener sockets start here; connections at [`CONN_BASE`].
pub const STREAM_LISTENER_BASE: usize = 1 << 16;
pub const CONN_BASE: usize = 1 << 20;
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
/// Connections accepted per listener per wakeup.
const ACCEPT_BUDGET: usize = 64;

/// A TURN-TCP or TURN-TLS listener socket of one worker.
pub(super) struct StreamListener {
    pub(super) name: Arc<str>,
    pub(super) signature: u64,
    pub(super) socket: TcpListener,
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    /// Digest of the certificate material `tls` was made from.
    pub(super) pem_digest: u64,
    pub(super) counters: ListenerCounters,
}

/// One client connection.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) tls: Option<Box<rustls::ServerConnection>>,
    /// Slot of the listener that accepted it.
    pub(super) listener: usize,
    name: Arc<str>,
    client: SocketAddr,
    /// Received bytes not yet framed.
    rbuf: Vec<u8>,
    /// Plain-TCP bytes not yet written (TLS buffers inside rustls).
    wbuf: Vec<u8>,
    deadline: Instant,
    writable_interest: bool,
    /// RFC 6062: after ConnectionBind, a raw byte pipe to this peer connection.
    pipe: Option<ConnectionId>,
}

impl Worker {
    /// Bind this worker's TCP listener sockets for a TURN-TCP/TLS listener.
    pub(super) fn bind_stream_listener(
        &mut self,
        snap: &Snapshot,
        idx: ListenerIdx,
    ) -> io::Result<()> {
        let Some(l) = snap.listeners.get(idx) else {
            return Ok(());
        };
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
        let socks = super::sockopt::tcp_listener_sockets(l.bind_ip(), l.port).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {}: bind TCP port {}: {e}", l.name, l.port),
            )
        })?;
        for std_sock in socks {
            let mut socket = TcpListener::from_std(std_sock);
            let slot = super::free_slot(&mut self.stream_listeners);
            self.poll.registry().register(
                &mut socket,
                Token(STREAM_LISTENER_BASE + slot),
                Interest::READABLE,
            )?;
            self.stream_listeners[slot] = Some(StreamListener {
                name: l.name.clone(),
                signature: l.signature,
                socket,
                tls: tls.clone(),
                pem_digest: l.pem_digest,
                counters: ListenerCounters {
                    name: l.name.clone(),
                    protocol: l.protocol.as_str(),
                    ..ListenerCounters::default()
                },
            });
        }
        Ok(())
    }

    /// Hot-swap the certificate of every kept TURN-TLS listener socket whose certificate
    /// material changed (a file named by path was replaced): new connections get the new
    /// certificate, established ones keep theirs. A certificate that no longer loads is
    /// not swapped in.
    pub(super) fn refresh_stream_certs(&mut self, snap: &Snapshot) {
        for l in self.stream_listeners.iter_mut().flatten() {
            let Some((_, n)) = snap.listener(&l.name) else {
                continue;
            };
            if l.tls.is_none() || n.pem_digest == l.pem_digest {
                continue;
            }
            match &n.tls {
                Some(Ok(cfg)) => {
                    l.tls = Some(cfg.clone());
                    l.pem_digest = n.pem_digest;
                    debug!(target: "listener", "worker {}: listener {}: new certificate for new connections", self.index, l.name);
                }
                Some(Err(e)) => {
                    l.pem_digest = n.pem_digest;
                    debug!(target: "listener", "worker {}: listener {}: new TLS certificate does not load ({e}); keeping the old one", self.index, l.name);
                }
                None => {}
            }
        }
    }

    /// Close a stream listener socket and every connection it accepted.
    pub(super) fn close_stream_listener(&mut self, slot: usize) {
        let Some(mut l) = self.stream_listeners.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut l.socket);
        for id in 0..self.conns.len() {
            if self.conns[id].as_ref().is_some_and(|c| c.listener == slot) {
                self.close_conn(id);
            }
        }
    }

    /// Accept pending connections; true if more may wait.
    pub(super) fn accept(&mut self, now: Now, slot: usize) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Some(l)) = self.stream_listeners.get_mut(slot) else {
                return false;
            };
            let (mut stream, from) = match l.socket.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!(target: "listener", "listener {}: accept: {e}", l.name);
                    return false;
                }
            };
            if self.conns.iter().flatten().count() >= MAX_CONNS {
                continue; // dropping the stream closes it
            }
            let _ = stream.set_nodelay(true);
            let tls = match &l.tls {
                Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(mut c) => {
                        c.set_buffer_limit(Some(MAX_PENDING));
                        Some(Box::new(c))
                    }
                    Err(_) => continue,
                },
                None => None,
            };
            l.counters.connections += 1;
            l.counters.connections_total += 1;
            let name = l.name.clone();
            let id = super::free_slot(&mut self.conns);
            if self
                .poll
                .registry()
                .register(&mut stream, Token(CONN_BASE + id), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.conns[id] = Some(Conn {
                stream,
                tls,
                listener: slot,
                name,
                client: canonical_client(from),
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                deadline: now.mono + HANDSHAKE_TIMEOUT,
                writable_interest: false,
                pipe: None,
            });
        }
        true
    }

    /// Read and handle what a connection sent, then write what is pending.
    /// Returns true when a pipe has more to move right away.
    pub(super) fn service_conn(&mut self, now: Now, snap: &Snapshot, id: usize) -> bool {
        if let Some(Some(Conn {
            pipe: Some(conn), ..
        })) = self.conns.get(id)
        {
            let conn = *conn;
            return self.service_piped_conn(id, conn);
        }
        let keep = self.read_conn(now, snap, id);
        let keep = keep && self.write_conn(id);
        if !keep {
            self.close_conn(id);
            return false;
        }
        let mut more = false;
        if let Some(Some(Conn {
            pipe: Some(conn), ..
        })) = self.conns.get(id)
        {
            // Just bound: move the early bytes and what the peer sent meanwhile.
            let conn = *conn;
            more = self.service_piped_conn(id, conn);
        }
        self.drain_outbox();
        self.close_orphans();
        more
    }

    /// Returns false when the connection must close.
    fn read_conn(&mut self, now: Now, snap: &Snapshot, id: usize) -> bool {
        let Worker {
            conns,
            stream_listeners,
            server,
            relays,
            scratch,
            ..
        } = self;
        let Some(Some(c)) = conns.get_mut(id) else {
            return false;
        };
        let mut chunk = [0u8; 16 * 1024];
        // Bounded: at most this many reads per wakeup, then the next event continues.
        for _ in 0..16 {
            let n = match read_some(c, &mut chunk) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            };
            if c.rbuf.len() + n > MAX_FRAME * 2 {
                return false;
            }
            c.rbuf.extend_from_slice(&chunk[..n]);
            if let Some(Some(l)) = stream_listeners.get_mut(c.listener) {
                l.counters.rx_bytes += n as u64;
            }
        }
        let listener_idx = snap.listener(&c.name).map(|(i, _)| i);
        let mut off = 0;
        let mut bound = None;
        loop {
            let frame_len = match stream_frame_len(&c.rbuf[off..]) {
                Ok(Some(len)) if len <= MAX_FRAME => len,
                Ok(Some(_)) | Err(_) => return false, // unframeable stream
                Ok(None) => break,
            };
            if c.rbuf.len() - off < frame_len {
                break;
            }
            let Some(listener) = listener_idx else {
                return false;
            };
            let frame = &c.rbuf[off..off + frame_len];
            off += frame_len;
            if let Some(Some(l)) = stream_listeners.get_mut(c.listener) {
                l.counters.rx_packets += 1;
            }
            c.deadline = now.mono + IDLE_TIMEOUT;
            let ctx = ClientCtx {
                transport: TransportId((CONN_BASE + id) as u32),
                listener,
                client: c.client,
                stream: true,
            };
            match server.handle_client(now, snap, ctx, frame, scratch, relays) {
                ClientOutput::Drop(_) | ClientOutput::Pending => {}
                ClientOutput::Bind { len, conn } => {
                    let sent = queue(c, &scratch[..len]);
                    if let Some(Some(l)) = stream_listeners.get_mut(c.listener) {
                        count_tx(&mut l.counters, sent, len);
                    }
                    // Everything after the ConnectionBind request is pipe data.
                    c.pipe = Some(conn);
                    bound = Some(conn);
                    break;
                }
                ClientOutput::Reply(n) => {
                    let sent = queue(c, &scratch[..n]);
                    if let Some(Some(l)) = stream_listeners.get_mut(c.listener) {
                        count_tx(&mut l.counters, sent, n);
                    }
                }
                ClientOutput::Forward {
                    relay,
                    peer,
                    payload,
                } => relays.send_now(relay, payload, peer),
            }
        }
        c.rbuf.drain(..off);
        if let Some(conn) = bound {
            let early = std::mem::take(&mut c.rbuf);
            return self.bind_pipe(id, conn, &early);
        }
        true
    }

    /// Flush pending output. Returns false when the connection must close.
    fn write_conn(&mut self, id: usize) -> bool {
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return false;
        };
        let pending = match flush(c) {
            // A pipe keeps both interests: either side may wait for the other.
            Ok(p) => p || c.pipe.is_some(),
            Err(_) => return false,
        };
        if pending != c.writable_interest {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(CONN_BASE + id), interest)
                .is_err()
            {
                return false;
            }
            c.writable_interest = pending;
        }
        true
    }

    /// Send relayed bytes (a ChannelData frame or a Data indication) to a stream client,
    /// padding ChannelData to 4 bytes.
    pub(super) fn send_to_conn(&mut self, transport: TransportId, bytes: &[u8]) {
        let id = transport.0 as usize - CONN_BASE;
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        let sent = queue(c, bytes);
        if let Some(Some(l)) = self.stream_listeners.get_mut(c.listener) {
            count_tx(&mut l.counters, sent, bytes.len());
        }
        if !self.write_conn(id) {
            self.close_conn(id);
        }
    }

    /// Close connections past their deadline that hold no allocation.
    pub(super) fn expire_conns(&mut self, now: Now) {
        for id in 0..self.conns.len() {
            let Some(c) = &self.conns[id] else {
                continue;
            };
            if c.deadline > now.mono || c.pipe.is_some() {
                continue;
            }
            let five = FiveTuple {
                transport: TransportId((CONN_BASE + id) as u32),
                client: c.client,
            };
            if self.server.has_allocation(five) {
                continue;
            }
            debug!(target: "listener", "listener {}: closing idle connection from {}", c.name, c.client);
            self.close_conn(id);
        }
    }

    pub(super) fn close_conn(&mut self, id: usize) {
        let Some(mut c) = self.conns.get_mut(id).and_then(Option::take) else {
            return;
        };
        if let Some(tls) = c.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut c.stream);
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        if let Some(conn) = c.pipe {
            self.relays.peers.remove(&self.relays.registry, conn);
            self.server.close_peer_connection(conn);
        }
        self.server
            .close_transport(TransportId((CONN_BASE + id) as u32), &mut self.relays);
        self.close_orphans();
        if let Some(Some(l)) = self.stream_listeners.get_mut(c.listener) {
            l.counters.connections = l.counters.connections.saturating_sub(1);
        }
    }

    /// Log a listener that cannot start (once per worker 0, to avoid duplicates).
    pub(super) fn report_listener_error(&self, e: &io::Error) {
        if self.index == 0 {
            warn!(target: "listener", "{e}");
        }
    }
}

/// Read plaintext: straight from the socket, or through rustls.
pub(super) fn read_some(c: &mut Conn, buf: &mut [u8]) -> io::Result<usize> {
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
fn queue(c: &mut Conn, bytes: &[u8]) -> bool {
    const PAD: [u8; 3] = [0; 3];
    let pad = (4 - bytes.len() % 4) % 4;
    match c.tls.as_mut() {
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
            if c.wbuf.len() + bytes.len() + pad > MAX_PENDING {
                return false;
            }
            c.wbuf.extend_from_slice(bytes);
            c.wbuf.extend_from_slice(&PAD[..pad]);
            true
        }
    }
}

/// Write as much pending output as the socket takes; returns whether some is left.
pub(super) fn flush(c: &mut Conn) -> io::Result<bool> {
    match c.tls.as_mut() {
        Some(tls) => {
            while tls.wants_write() {
                match tls.write_tls(&mut c.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            Ok(false)
        }
        None => {
            while !c.wbuf.is_empty() {
                match c.stream.write(&c.wbuf) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        c.wbuf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            // Give back memory a burst took.
            if c.wbuf.capacity() > 64 * 1024 {
                c.wbuf.shrink_to(4096);
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
