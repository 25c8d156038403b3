//! RFC 6062 in the shell: peer connections of TCP relays (outbound Connects and accepted
//! peers) and the byte pipes between them and client data connections.
//!
//! The core decides everything (admission, ids, timeouts); this file moves bytes. Each
//! pipe direction has one bounded buffer: a side is not read while the buffer towards its
//! destination is full, so a slow reader stops its writer instead of growing memory. On a
//! config change the core re-checks every peer connection and the ones it no longer admits
//! are closed with their client data connection ([`Worker::recheck_pipes`]).

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustc_hash::FxHashMap;
use tracing::{debug, info};

use super::canonical_client;
use super::dtls::DTLS_SESSION_BASE;
use super::stream::{CONN_BASE, Conn, flush, read_some};
use super::udp::Worker;
use crate::snapshot::Snapshot;
use crate::turn::{ConnectionId, Now, RelayId, TransportId};

/// Tokens of peer connections start here (above every relay socket token).
pub const PEER_BASE: usize = 1 << 28;
/// Bytes buffered per pipe direction.
const MAX_PIPE: usize = 64 * 1024;
/// Peer connections accepted per relay per wakeup.
const ACCEPT_BUDGET: usize = 16;

pub(super) struct PeerSock {
    stream: TcpStream,
    conn: ConnectionId,
    /// A non-blocking connect still under way.
    connecting: bool,
    /// The client data connection (index in `Worker::conns`) once bound.
    client: Option<usize>,
    to_peer: Vec<u8>,
    to_client: Vec<u8>,
}

/// The peer connections of one worker.
#[derive(Default)]
pub struct PeerTable {
    slots: Vec<Option<PeerSock>>,
    by_conn: FxHashMap<u32, usize>,
    /// Client data connections whose peer connection the core closed; the worker closes
    /// them after the core call.
    orphans: Vec<usize>,
}

impl PeerTable {
    pub(super) fn insert(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        conn: ConnectionId,
        connecting: bool,
    ) -> io::Result<()> {
        let slot = super::free_slot(&mut self.slots);
        registry.register(
            &mut stream,
            Token(PEER_BASE + slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.slots[slot] = Some(PeerSock {
            stream,
            conn,
            connecting,
            client: None,
            to_peer: Vec::new(),
            to_client: Vec::new(),
        });
        self.by_conn.insert(conn.0, slot);
        Ok(())
    }

    /// Close a peer connection; its bound client connection becomes an orphan.
    pub(super) fn remove(&mut self, registry: &Registry, conn: ConnectionId) {
        let Some(slot) = self.by_conn.remove(&conn.0) else {
            return;
        };
        if let Some(mut p) = self.slots.get_mut(slot).and_then(Option::take) {
            let _ = registry.deregister(&mut p.stream);
            if let Some(c) = p.client {
                self.orphans.push(c);
            }
        }
    }

    /// Live peer connections.
    pub fn len(&self) -> usize {
        self.by_conn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }
}

impl Worker {
    /// Accept peer connections on the listening socket of TCP relay `relay`; true if more
    /// may wait.
    pub(super) fn accept_peers(&mut self, now: Now, snap: &Snapshot, relay: RelayId) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some((listener, _)) = self.relays.tcp.get(&relay.0) else {
                return false;
            };
            let (stream, from) = match listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return false,
            };
            let peer = canonical_client(from);
            // Refused peers are closed at once (dropping the stream).
            let Ok(conn) = self.server.handle_peer_connection(now, snap, relay, peer) else {
                debug!(target: "turn", "refused peer connection from {peer}");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let registry = &self.relays.registry;
            if self
                .relays
                .peers
                .insert(registry, stream, conn, false)
                .is_err()
            {
                self.server.close_peer_connection(conn);
            }
            self.drain_outbox();
        }
        true
    }

    /// An event on a peer connection; true if the pipe has more to move.
    pub(super) fn service_peer(&mut self, now: Now, slot: usize) -> bool {
        let Some(Some(p)) = self.relays.peers.slots.get_mut(slot) else {
            return false;
        };
        if p.connecting {
            let failed = matches!(p.stream.take_error(), Ok(Some(_)) | Err(_));
            let connected = !failed && p.stream.peer_addr().is_ok();
            if !failed && !connected {
                return false; // still connecting
            }
            p.connecting = false;
            let conn = p.conn;
            let answer = self
                .server
                .handle_connect_result(now, conn, connected, &mut self.scratch)
                .map(|(t, n)| (t, self.scratch[..n].to_vec()));
            if let Some((t, bytes)) = &answer {
                self.send_to_client(*t, bytes);
            }
            if failed || answer.is_none() {
                self.relays.peers.remove(&self.relays.registry, conn);
                self.server.close_peer_connection(conn);
            }
            return false;
        }
        // Unbound: the kernel buffers what the peer sends until ConnectionBind.
        p.client.is_some() && self.pump(slot)
    }

    /// A piped client data connection had an event; true if the pipe has more to move.
    pub(super) fn service_piped_conn(&mut self, id: usize, conn: ConnectionId) -> bool {
        match self.relays.peers.by_conn.get(&conn.0) {
            Some(&slot) => self.pump(slot),
            None => {
                self.close_conn(id);
                false
            }
        }
    }

    /// ConnectionBind succeeded on client connection `id`: pipe it to peer connection
    /// `conn`, starting with the bytes the client sent after the request.
    pub(super) fn bind_pipe(&mut self, id: usize, conn: ConnectionId, early: &[u8]) -> bool {
        let Some(&slot) = self.relays.peers.by_conn.get(&conn.0) else {
            return false;
        };
        let Some(Some(p)) = self.relays.peers.slots.get_mut(slot) else {
            return false;
        };
        p.client = Some(id);
        p.to_peer.extend_from_slice(early);
        true
    }

    /// Move bytes both ways until neither side makes progress (or the round budget is
    /// spent: then true, and the event loop comes back, since edge-triggered readiness
    /// would not fire again for bytes already waiting); close both on an end.
    fn pump(&mut self, slot: usize) -> bool {
        let Worker {
            conns,
            relays,
            stream_listeners,
            ..
        } = self;
        let Some(Some(p)) = relays.peers.slots.get_mut(slot) else {
            return false;
        };
        let Some(cid) = p.client else {
            return false;
        };
        let Some(Some(c)) = conns.get_mut(cid) else {
            return false;
        };
        let mut chunk = [0u8; 16 * 1024];
        let mut open = true;
        let mut more = true;
        // (reads, bytes) each way, for the session's counters.
        let (mut up, mut down) = ((0u64, 0u64), (0u64, 0u64));
        for _ in 0..16 {
            let mut progress = false;
            // Peer to client.
            while open && p.to_client.len() < MAX_PIPE {
                let room = (MAX_PIPE - p.to_client.len()).min(chunk.len());
                match p.stream.read(&mut chunk[..room]) {
                    Ok(0) => open = false,
                    Ok(n) => {
                        p.to_client.extend_from_slice(&chunk[..n]);
                        progress = true;
                        down = (down.0 + 1, down.1 + n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => open = false,
                }
            }
            match write_client(c, &mut p.to_client) {
                Ok(n) => {
                    progress |= n > 0;
                    if let Some(Some(l)) = stream_listeners.get_mut(c.listener) {
                        l.counters.tx_bytes += n as u64;
                    }
                }
                Err(_) => open = false,
            }
            // Client to peer.
            while open && p.to_peer.len() < MAX_PIPE {
                let room = (MAX_PIPE - p.to_peer.len()).min(chunk.len());
                match read_some(c, &mut chunk[..room]) {
                    Ok(0) => open = false,
                    Ok(n) => {
                        p.to_peer.extend_from_slice(&chunk[..n]);
                        progress = true;
                        up = (up.0 + 1, up.1 + n as u64);
                        if let Some(Some(l)) = stream_listeners.get_mut(c.listener) {
                            l.counters.rx_bytes += n as u64;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => open = false,
                }
            }
            while !p.to_peer.is_empty() {
                match p.stream.write(&p.to_peer) {
                    Ok(0) => {
                        open = false;
                        break;
                    }
                    Ok(n) => {
                        p.to_peer.drain(..n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        open = false;
                        break;
                    }
                }
            }
            if !open || !progress {
                more = false;
                break;
            }
        }
        if up.0 + down.0 > 0 {
            self.server.count_pipe(p.conn, up, down);
        }
        if open {
            return more;
        }
        // One side ended: hand over what is buffered, best effort, then close both.
        let _ = write_client(c, &mut p.to_client);
        let _ = p.stream.write(&p.to_peer);
        let conn = p.conn;
        relays.peers.remove(&relays.registry, conn);
        relays.peers.orphans.retain(|&o| o != cid);
        self.server.close_peer_connection(conn);
        self.close_conn(cid);
        false
    }

    /// A new snapshot: close the peer connections whose peer it no longer admits, with the
    /// client data connections piped to them (a Connect under way gets 403).
    pub(super) fn recheck_pipes(&mut self, snap: &Snapshot) {
        let closed = self.server.recheck_peer_connections(snap, &mut self.relays);
        if closed > 0 {
            info!(target: "turn", "worker {}: closed {closed} TCP peer connection(s) the new config no longer admits", self.index);
        }
        self.drain_outbox();
        self.close_orphans();
    }

    /// Send a message the core made to a stream or DTLS client.
    fn send_to_client(&mut self, t: TransportId, bytes: &[u8]) {
        let i = t.0 as usize;
        if i >= DTLS_SESSION_BASE {
            self.send_to_session(t, bytes);
        } else if i >= CONN_BASE {
            self.send_to_conn(t, bytes);
        }
    }

    /// Send what the core queued (447 after a Connect timeout, ConnectionAttempt).
    pub(super) fn drain_outbox(&mut self) {
        while let Some((t, bytes)) = self.server.poll_transmit() {
            self.send_to_client(t, &bytes);
        }
    }

    /// Close client data connections whose peer connection the core closed.
    pub(super) fn close_orphans(&mut self) {
        while let Some(id) = self.relays.peers.orphans.pop() {
            self.close_conn(id);
        }
    }
}

/// Write pipe bytes to a client: after any queued STUN output, raw (no padding).
/// Returns the bytes taken from `buf`.
fn write_client(c: &mut Conn, buf: &mut Vec<u8>) -> io::Result<usize> {
    if flush(c)? {
        return Ok(0); // earlier output (the ConnectionBind response) first
    }
    let mut taken = 0;
    while !buf.is_empty() {
        let n = match c.tls.as_mut() {
            Some(tls) => tls.writer().write(buf)?,
            None => match c.stream.write(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            },
        };
        if n == 0 {
            break;
        }
        buf.drain(..n);
        taken += n;
        if c.tls.is_some() && flush(c)? {
            break;
        }
    }
    Ok(taken)
}
