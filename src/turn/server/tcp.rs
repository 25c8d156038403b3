//! RFC 6062 TCP allocations: Connect, ConnectionBind, ConnectionAttempt and the life of
//! peer connections, sans-IO.
//!
//! The shell owns the sockets. The core decides: a Connect is admitted by
//! [`policy::admit`] before the shell is asked to connect ([`Relays::connect`]); the shell
//! reports the outcome with [`Server::handle_connect_result`]. A connection accepted on a
//! relay's listening socket is admitted the same way ([`Server::handle_peer_connection`]).
//! Each peer connection waits at most [`BIND_WINDOW`] for its ConnectionBind; a Connect
//! that takes [`CONNECT_TIMEOUT`] gets 447. Peer connections close with their allocation,
//! and when a new config no longer admits their peer
//! ([`Server::recheck_peer_connections`]).

use std::net::SocketAddr;
use std::time::Instant;

use super::{Allocation, Server, admit_for, refused, seal};
use crate::snapshot::Snapshot;
use crate::stun::attr::{self, CONNECTION_ID, XOR_PEER_ADDRESS};
use crate::stun::{Class, Message, MessageWriter, Method, StunError, TransactionId};
use crate::turn::auth::Authenticated;
use crate::turn::session::ConnectionInfo;
use crate::turn::{
    BIND_WINDOW, CONNECT_TIMEOUT, ClientCtx, ConnectionId, DropReason, Family, FiveTuple,
    MAX_PEER_CONNECTIONS, Now, RelayId, Relays, TransportId,
};
use crate::turn::{TurnError, policy};

pub(super) struct PeerConn {
    alloc: u32,
    peer: SocketAddr,
    state: State,
    /// Connect timeout, or end of the bind window.
    deadline: Instant,
}

enum State {
    /// The shell is connecting; the Connect transaction waits for its answer.
    Connecting {
        control: TransportId,
        tid: TransactionId,
        key: [u8; 16],
        fingerprint: bool,
    },
    /// Connected (either way), waiting for ConnectionBind.
    Ready,
    /// Piped to this client data connection.
    Bound,
}

impl Server {
    /// Live RFC 6062 peer connections (pending, ready or bound).
    pub fn peer_connection_count(&self) -> usize {
        self.peer_conns.len()
    }

    /// The outcome of a connect the core asked for with [`Relays::connect`]. Returns the
    /// Connect response (success with CONNECTION-ID, or 447) and the control transport it
    /// goes to. `None`: the connection is no longer wanted (timed out, allocation gone);
    /// the shell closes it.
    pub fn handle_connect_result(
        &mut self,
        now: Now,
        conn: ConnectionId,
        ok: bool,
        out: &mut [u8],
    ) -> Option<(TransportId, usize)> {
        let c = self.peer_conns.get_mut(&conn.0)?;
        let State::Connecting {
            control,
            tid,
            key,
            fingerprint,
        } = c.state
        else {
            return None;
        };
        let written = if ok {
            c.state = State::Ready;
            c.deadline = now.mono + BIND_WINDOW;
            connect_response(out, &tid, &key, fingerprint, Ok(conn))
        } else {
            self.peer_conns.remove(&conn.0);
            self.stats.error_responses += 1;
            connect_response(
                out,
                &tid,
                &key,
                fingerprint,
                Err(TurnError::ConnectionTimeoutOrFailure),
            )
        };
        match written {
            Ok(len) => Some((control, len)),
            Err(_) => None,
        }
    }

    /// A peer connected to the listening socket of TCP relay `relay`. Admitted peers (a
    /// permission for their IP and [`policy::admit`]) get a CONNECTION-ID and the client a
    /// ConnectionAttempt indication (through [`Relays::send_to_client`]); on `Err` the shell
    /// closes the connection at once.
    pub fn handle_peer_connection(
        &mut self,
        now: Now,
        snap: &Snapshot,
        relay: RelayId,
        peer: SocketAddr,
        relays: &mut dyn Relays,
    ) -> Result<ConnectionId, DropReason> {
        let res = self.peer_connection(now, snap, relay, peer, relays);
        if let Err(r) = res {
            self.stats.drops[r as usize] += 1;
        }
        res
    }

    fn peer_connection(
        &mut self,
        now: Now,
        snap: &Snapshot,
        relay: RelayId,
        peer: SocketAddr,
        relays: &mut dyn Relays,
    ) -> Result<ConnectionId, DropReason> {
        let id = *self.by_relay.get(&relay).ok_or(DropReason::NoAllocation)?;
        let peer = policy::canonical(peer);
        let a = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(DropReason::NoAllocation)?;
        if !a.tcp || a.expires <= now.mono {
            return Err(DropReason::NoAllocation);
        }
        if !a.permits(peer, now.mono) {
            return Err(DropReason::NoPermission);
        }
        if let Err(why) = admit_for(a, snap, peer) {
            return Err(refused(a, peer, why, now.unix));
        }
        let five = a.five;
        if self.conns_of(id) >= MAX_PEER_CONNECTIONS {
            return Err(DropReason::TooBig);
        }
        let conn = self.new_conn_id();
        self.peer_conns.insert(
            conn.0,
            PeerConn {
                alloc: id,
                peer,
                state: State::Ready,
                deadline: now.mono + BIND_WINDOW,
            },
        );
        let seq = self.indication_seq;
        self.indication_seq = seq.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&seq.to_be_bytes());
        tid[8..].copy_from_slice(&id.to_be_bytes());
        let mut buf = [0u8; 64];
        let n = (|| -> Result<usize, StunError> {
            let mut w =
                MessageWriter::new(&mut buf, Method::ConnectionAttempt, Class::Indication, &tid)?;
            w.add_u32(CONNECTION_ID, conn.0)?;
            w.add_xor_addr(XOR_PEER_ADDRESS, peer)?;
            Ok(w.finish())
        })()
        .map_err(|_| DropReason::TooBig)?;
        relays.send_to_client(five.transport, &buf[..n]);
        Ok(conn)
    }

    /// Count what the pipe of peer connection `conn` moved (reads from the client data
    /// connection, reads from the peer: packets are reads, bytes are payload) for its
    /// session. The shell calls this once per pipe wakeup, not per read.
    pub fn count_pipe(&mut self, conn: ConnectionId, to_peer: (u64, u64), to_client: (u64, u64)) {
        let Some(c) = self.peer_conns.get(&conn.0) else {
            return;
        };
        if let Some(a) = self
            .allocs
            .get_mut(c.alloc as usize)
            .and_then(Option::as_mut)
        {
            a.traffic.to_peer_packets += to_peer.0;
            a.traffic.to_peer_bytes += to_peer.1;
            a.traffic.to_client_packets += to_client.0;
            a.traffic.to_client_bytes += to_client.1;
        }
    }

    /// The shell closed a peer connection or the client data connection piped to it.
    pub fn close_peer_connection(&mut self, conn: ConnectionId) {
        self.peer_conns.remove(&conn.0);
    }

    /// After a config change: ask [`policy::admit`] again about the peer of every live peer
    /// connection (connecting, waiting for its bind, or piped) and close those it no longer
    /// admits, as a new Connect to that peer would be refused. The shell closes each one
    /// with the client data connection piped to it ([`Relays::close_peer`]); a Connect
    /// still under way gets 403. Returns how many were closed.
    pub fn recheck_peer_connections(&mut self, snap: &Snapshot, relays: &mut dyn Relays) -> usize {
        if self.peer_conns.is_empty() {
            return 0;
        }
        let mut refused = Vec::new();
        for (&k, c) in &self.peer_conns {
            let admitted = self
                .allocs
                .get_mut(c.alloc as usize)
                .and_then(Option::as_mut)
                .is_some_and(|a| admit_for(a, snap, c.peer).is_ok());
            if !admitted {
                refused.push(k);
            }
        }
        for &k in &refused {
            self.fail_peer_conn(k, TurnError::Forbidden, relays);
        }
        refused.len()
    }

    /// Connect (RFC 6062 section 5.2) on a control connection.
    pub(super) fn connect(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        relays: &mut dyn Relays,
    ) -> Result<(), TurnError> {
        let id = self.owned(ctx, auth)?;
        let peer = msg
            .get(XOR_PEER_ADDRESS)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| {
                attr::decode_xor_addr(v, msg.transaction_id()).map_err(|_| TurnError::BadRequest)
            })?;
        let peer = policy::canonical(peer);
        let a: &mut Allocation = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(TurnError::ServerError)?;
        if !a.tcp {
            return Err(TurnError::BadRequest);
        }
        if Family::of(peer.ip()) != Family::of(a.relayed.ip()) {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        // The one admission function, before any connection attempt.
        admit_for(a, snap, peer).map_err(|why| {
            refused(a, peer, why, now.unix);
            TurnError::Forbidden
        })?;
        let relay = a.relay;
        if self
            .peer_conns
            .values()
            .any(|c| c.alloc == id && c.peer == peer)
        {
            return Err(TurnError::ConnectionAlreadyExists);
        }
        if self.conns_of(id) >= MAX_PEER_CONNECTIONS {
            return Err(TurnError::ConnectionTimeoutOrFailure);
        }
        let conn = self.new_conn_id();
        relays
            .connect(relay, peer, conn)
            .map_err(|_| TurnError::ConnectionTimeoutOrFailure)?;
        self.peer_conns.insert(
            conn.0,
            PeerConn {
                alloc: id,
                peer,
                state: State::Connecting {
                    control: ctx.transport,
                    tid: *msg.transaction_id(),
                    key: *auth.key(),
                    fingerprint: msg.has_fingerprint(),
                },
                deadline: now.mono + CONNECT_TIMEOUT,
            },
        );
        Ok(())
    }

    /// ConnectionBind (RFC 6062 section 5.4) on a new client connection.
    pub(super) fn connection_bind(
        &mut self,
        now: Now,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> Result<(usize, ConnectionId), TurnError> {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        // A control connection cannot become a data connection.
        if self.by_client.contains_key(&five) {
            return Err(TurnError::BadRequest);
        }
        let conn = msg
            .get(CONNECTION_ID)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| attr::decode_u32(v).map_err(|_| TurnError::BadRequest))?;
        let c = self.peer_conns.get(&conn).ok_or(TurnError::BadRequest)?;
        if !matches!(c.state, State::Ready) || c.deadline <= now.mono {
            return Err(TurnError::BadRequest);
        }
        let a = self.alloc(c.alloc).ok_or(TurnError::BadRequest)?;
        if a.user != *auth.user() {
            return Err(TurnError::WrongCredentials);
        }
        let w = MessageWriter::new(
            out,
            Method::ConnectionBind,
            Class::Success,
            msg.transaction_id(),
        )
        .map_err(|_| TurnError::ServerError)?;
        let len = seal(w, auth, msg)?;
        if let Some(c) = self.peer_conns.get_mut(&conn) {
            c.state = State::Bound;
        }
        Ok((len, ConnectionId(conn)))
    }

    /// The control connection's address of the allocation whose peer connection a
    /// ConnectionBind names, if it is on the IP of `data` (the data connection).
    /// The allocation a ConnectionBind's CONNECTION-ID belongs to.
    pub(super) fn connection_alloc(&self, msg: &Message<'_>) -> Option<u32> {
        let conn = attr::decode_u32(msg.get(CONNECTION_ID)?).ok()?;
        self.peer_conns.get(&conn).map(|c| c.alloc)
    }

    pub(super) fn control_client_of(
        &self,
        msg: &Message<'_>,
        data: SocketAddr,
    ) -> Option<SocketAddr> {
        let conn = attr::decode_u32(msg.get(CONNECTION_ID)?).ok()?;
        let c = self.peer_conns.get(&conn)?;
        let control = self.alloc(c.alloc)?.five.client;
        (control.ip() == data.ip()).then_some(control)
    }

    /// Time out Connects (447 to the client) and unbound peer connections.
    pub(super) fn expire_peer_conns(&mut self, now: Now, relays: &mut dyn Relays) {
        if self.peer_conns.is_empty() {
            return;
        }
        let expired: Vec<u32> = self
            .peer_conns
            .iter()
            .filter(|(_, c)| !matches!(c.state, State::Bound) && c.deadline <= now.mono)
            .map(|(&k, _)| k)
            .collect();
        for k in expired {
            self.fail_peer_conn(k, TurnError::ConnectionTimeoutOrFailure, relays);
        }
    }

    /// Close peer connection `k`; a Connect still under way gets error `code`.
    fn fail_peer_conn(&mut self, k: u32, code: TurnError, relays: &mut dyn Relays) {
        let Some(c) = self.peer_conns.remove(&k) else {
            return;
        };
        relays.close_peer(ConnectionId(k));
        if let State::Connecting {
            control,
            tid,
            key,
            fingerprint,
        } = c.state
        {
            let mut buf = [0u8; 128];
            if let Ok(n) = connect_response(&mut buf, &tid, &key, fingerprint, Err(code)) {
                self.stats.error_responses += 1;
                relays.send_to_client(control, &buf[..n]);
            }
        }
    }

    /// Close every peer connection of allocation `id` (it is being deleted).
    pub(super) fn close_peer_conns_of(&mut self, id: u32, relays: &mut dyn Relays) {
        if self.peer_conns.is_empty() {
            return;
        }
        let mine: Vec<u32> = self
            .peer_conns
            .iter()
            .filter(|(_, c)| c.alloc == id)
            .map(|(&k, _)| k)
            .collect();
        for k in mine {
            self.peer_conns.remove(&k);
            relays.close_peer(ConnectionId(k));
        }
    }

    /// The peer connections of allocation `id`, for its session entry.
    pub(super) fn connections_of(&self, id: u32) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self
            .peer_conns
            .iter()
            .filter(|(_, c)| c.alloc == id)
            .map(|(&k, c)| ConnectionInfo {
                id: k,
                peer: c.peer,
                state: match c.state {
                    State::Connecting { .. } => "connecting",
                    State::Ready => "ready",
                    State::Bound => "bound",
                },
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    fn conns_of(&self, id: u32) -> usize {
        self.peer_conns.values().filter(|c| c.alloc == id).count()
    }

    /// A fresh, non-zero CONNECTION-ID not in use.
    fn new_conn_id(&mut self) -> ConnectionId {
        loop {
            self.next_conn = self.next_conn.wrapping_add(1);
            if self.next_conn != 0 && !self.peer_conns.contains_key(&self.next_conn) {
                return ConnectionId(self.next_conn);
            }
        }
    }
}

/// The Connect response: success with CONNECTION-ID, or an error code; integrity with
/// the key of the request.
fn connect_response(
    out: &mut [u8],
    tid: &TransactionId,
    key: &[u8; 16],
    fingerprint: bool,
    result: Result<ConnectionId, TurnError>,
) -> Result<usize, StunError> {
    let class = if result.is_ok() {
        Class::Success
    } else {
        Class::Error
    };
    let mut w = MessageWriter::new(out, Method::Connect, class, tid)?;
    match result {
        Ok(conn) => w.add_u32(CONNECTION_ID, conn.0)?,
        Err(e) => w.add_error_code(e.code())?,
    }
    w.add_integrity(key)?;
    if fingerprint {
        w.add_fingerprint()?;
    }
    Ok(w.finish())
}
