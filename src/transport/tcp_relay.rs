//! RFC 6062 in the shell: a peer connection of a TCP relay (an outbound Connect or an
//! accepted peer), and the byte pipe between it and a client data connection.
//!
//! The core decides everything (admission, ids, timeouts); this file moves bytes. Each
//! pipe direction has one bounded buffer: a side is not read while the buffer towards its
//! destination is full, so a slow reader stops its writer instead of growing memory.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::core::ByteStream;
use crate::turn::ConnectionId;

/// Bytes buffered per pipe direction.
const MAX_PIPE: usize = 64 * 1024;
/// Peer connections accepted per relay per wakeup.
pub const ACCEPT_BUDGET: usize = 16;

/// One TCP connection to a peer.
pub struct PeerConn {
    stream: TcpStream,
    pub conn: ConnectionId,
    /// A non-blocking connect still under way.
    pub connecting: bool,
    /// The client data connection (its endpoint key) once bound.
    pub client: Option<usize>,
    to_peer: Vec<u8>,
    to_client: Vec<u8>,
    /// (reads, bytes) moved each way since [`PeerConn::take_moved`], for the session.
    moved: ((u64, u64), (u64, u64)),
}

/// How a pump round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pumped {
    /// The round budget ran out with bytes still moving: come back (edge-triggered
    /// readiness would not fire again for bytes already waiting).
    More,
    /// Neither side can make progress now.
    Idle,
    /// One side ended or failed: close both.
    Ended,
}

impl PeerConn {
    pub fn new(stream: TcpStream, conn: ConnectionId, connecting: bool) -> PeerConn {
        let _ = stream.set_nodelay(true);
        PeerConn {
            stream,
            conn,
            connecting,
            client: None,
            to_peer: Vec::new(),
            to_client: Vec::new(),
            moved: Default::default(),
        }
    }

    /// What the pipe moved since the last call: (reads, bytes) client to peer and peer to
    /// client.
    pub fn take_moved(&mut self) -> ((u64, u64), (u64, u64)) {
        std::mem::take(&mut self.moved)
    }

    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        registry.register(
            &mut self.stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// The outcome of the connect under way: `Some(true)` connected, `Some(false)` failed,
    /// None still connecting.
    pub fn connect_outcome(&mut self) -> Option<bool> {
        let failed = matches!(self.stream.take_error(), Ok(Some(_)) | Err(_));
        let connected = !failed && self.stream.peer_addr().is_ok();
        if !failed && !connected {
            return None;
        }
        self.connecting = false;
        Some(connected)
    }

    /// ConnectionBind succeeded: pipe to client connection `client`, starting with the
    /// bytes the client sent after the request.
    pub fn bind(&mut self, client: usize, early: &[u8]) {
        self.client = Some(client);
        self.to_peer.extend_from_slice(early);
    }

    /// Move bytes both ways until neither side makes progress, or the round budget is
    /// spent.
    pub fn pump(&mut self, client: &mut dyn ByteStream) -> Pumped {
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..16 {
            let mut progress = false;
            // Peer to client.
            while self.to_client.len() < MAX_PIPE {
                let room = (MAX_PIPE - self.to_client.len()).min(chunk.len());
                match self.stream.read(&mut chunk[..room]) {
                    Ok(0) => return Pumped::Ended,
                    Ok(n) => {
                        self.to_client.extend_from_slice(&chunk[..n]);
                        progress = true;
                        self.moved.1.0 += 1;
                        self.moved.1.1 += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Pumped::Ended,
                }
            }
            match client.write_plain(&self.to_client) {
                Ok(n) => {
                    self.to_client.drain(..n);
                    progress |= n > 0;
                }
                Err(_) => return Pumped::Ended,
            }
            // Client to peer.
            while self.to_peer.len() < MAX_PIPE {
                let room = (MAX_PIPE - self.to_peer.len()).min(chunk.len());
                match client.read_plain(&mut chunk[..room]) {
                    Ok(0) => return Pumped::Ended,
                    Ok(n) => {
                        self.to_peer.extend_from_slice(&chunk[..n]);
                        progress = true;
                        self.moved.0.0 += 1;
                        self.moved.0.1 += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Pumped::Ended,
                }
            }
            while !self.to_peer.is_empty() {
                match self.stream.write(&self.to_peer) {
                    Ok(0) => return Pumped::Ended,
                    Ok(n) => {
                        self.to_peer.drain(..n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Pumped::Ended,
                }
            }
            if !progress {
                return Pumped::Idle;
            }
        }
        Pumped::More
    }

    /// One side ended: hand over what is buffered, best effort.
    pub fn finish(&mut self, client: Option<&mut dyn ByteStream>) {
        if let Some(c) = client {
            let _ = c.write_plain(&self.to_client);
        }
        let _ = self.stream.write(&self.to_peer);
    }
}
