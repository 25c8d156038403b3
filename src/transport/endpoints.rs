//! The endpoints of one worker: the [`Endpoint`] kinds, and the slab that holds them with
//! the poll registry ([`Endpoints`]), which is what the core reaches the sockets through
//! ([`Relays`]) and what an endpoint sends to relays through ([`Io`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::Registry;
use rustc_hash::FxHashMap;

use super::budget::Budgets;
use super::core::Io;
use super::dtls::{DtlsListener, DtlsSession};
use super::offload::Offload;
use super::relay::{RelaySock, Reservations, TcpRelay, open_udp};
use super::slab::Slab;
use super::stats::{CloseReason, ListenerCounters};
use super::stream::{Conn, StreamListener};
use super::tcp_relay::PeerConn;
use super::udp::UdpListener;
use super::uring::{self, GENERATION_MASK, RelayRing};
use crate::turn::{
    ConnectionId, OffloadCounters, OffloadRoute, Opened, Quota, RelayError, RelayId, RelayRequest,
    Relays, ToClient, TransportId,
};

/// Everything a worker polls.
pub(super) enum Endpoint {
    UdpListener(UdpListener),
    StreamListener(StreamListener),
    Conn(Conn),
    DtlsListener(DtlsListener),
    DtlsSession(DtlsSession),
    Relay(RelaySock),
    TcpRelay(TcpRelay),
    PeerConn(PeerConn),
}

impl Endpoint {
    /// The listener a listener socket serves.
    pub(super) fn listener_name(&self) -> Option<&str> {
        match self {
            Endpoint::UdpListener(l) => Some(&l.name),
            Endpoint::StreamListener(l) => Some(&l.name),
            Endpoint::DtlsListener(l) => Some(&l.name),
            _ => None,
        }
    }

    /// Traffic counters, for endpoints that serve clients.
    pub(super) fn counters(&self) -> Option<&ListenerCounters> {
        match self {
            Endpoint::UdpListener(l) => Some(&l.counters),
            Endpoint::StreamListener(l) => Some(&l.counters),
            Endpoint::Conn(c) => Some(&c.counters),
            Endpoint::DtlsListener(l) => Some(&l.counters),
            Endpoint::DtlsSession(s) => Some(&s.counters),
            _ => None,
        }
    }

    pub(super) fn counters_mut(&mut self) -> Option<&mut ListenerCounters> {
        match self {
            Endpoint::UdpListener(l) => Some(&mut l.counters),
            Endpoint::StreamListener(l) => Some(&mut l.counters),
            Endpoint::DtlsListener(l) => Some(&mut l.counters),
            _ => None,
        }
    }
}

/// The worker's endpoints and the registry they are polled by: the core's [`Relays`] and
/// the endpoints' [`Io`].
pub(super) struct Endpoints {
    pub(super) registry: Registry,
    pub(super) slab: Slab<Endpoint>,
    /// The io_uring relay path, when the kernel allows it (see `uring.rs`).
    pub(super) ring: Option<RelayRing>,
    /// Receives to start again after a drain of the ring (kept to avoid allocating).
    pub(super) rearm: Vec<(u32, u32, i32)>,
    pub(super) reservations: Arc<Reservations>,
    /// The daemon's descriptor, connection and quota budgets (`budget.rs`).
    pub(super) budgets: Arc<Budgets>,
    /// RFC 6062 peer connections: endpoint key by CONNECTION-ID.
    pub(super) peers: FxHashMap<u32, usize>,
    /// Client connections to close once the current call into the core has returned
    /// (their peer connection closed, or they could not take a write).
    pub(super) doomed: Vec<(usize, CloseReason)>,
    /// Live client connections (stream), bounded by [`MAX_CONNS`].
    pub(super) conns: usize,
    /// Live DTLS sessions, bounded by [`MAX_SESSIONS`].
    pub(super) sessions: usize,
    /// The kernel offload (`admin.offload_engine`), shared by the workers.
    pub(super) offload: Arc<Offload>,
    /// Offloaded traffic the core counted, by listener socket, for the listener counters
    /// at the next publish (the socket may be out of the slab while the core runs).
    pub(super) offloaded: Vec<(u32, OffloadCounters)>,
}

impl Endpoints {
    pub(super) fn insert(&mut self, ep: Endpoint) -> usize {
        self.slab.insert(ep)
    }

    /// Insert and register with the poll; the entry is removed again if that fails.
    pub(super) fn insert_registered(
        &mut self,
        ep: Endpoint,
        register: impl FnOnce(&mut Endpoint, &Registry, usize) -> io::Result<()>,
    ) -> io::Result<usize> {
        let key = self.slab.insert(ep);
        let Some(e) = self.slab.get_mut(key) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        if let Err(err) = register(e, &self.registry, key) {
            self.slab.remove(key);
            return Err(err);
        }
        Ok(key)
    }

    pub(super) fn relay_generation(&self, key: usize) -> u32 {
        self.slab.generation(key) & GENERATION_MASK
    }

    /// A relayed datagram for a client.
    pub(super) fn deliver(&mut self, to: ToClient<'_>) {
        deliver_to(&mut self.slab, &self.registry, &mut self.doomed, to);
    }

    /// A message of the core for a stream or DTLS client (the RFC 6062 answers, which
    /// never go to UDP clients).
    pub(super) fn message_to_client(&mut self, transport: TransportId, bytes: &[u8]) {
        let key = transport.0 as usize;
        match self.slab.get_mut(key) {
            Some(Endpoint::Conn(c)) => {
                let closed = !c.send(bytes, &self.registry, key);
                self.doomed
                    .extend(closed.then_some((key, CloseReason::WriteFailed)));
            }
            Some(Endpoint::DtlsSession(s)) => s.send(bytes),
            _ => {}
        }
    }
}

impl Relays for Endpoints {
    fn offload_epoch(&self) -> Option<u64> {
        self.offload.epoch()
    }

    fn offload_install(&mut self, route: &OffloadRoute) -> bool {
        // Only routes of this worker's own UDP listener sockets.
        matches!(
            self.slab.get(route.transport.0 as usize),
            Some(Endpoint::UdpListener(_)) | None
        ) && self.offload.install(route)
    }

    fn offload_read(&mut self, route: &OffloadRoute) -> Option<OffloadCounters> {
        self.offload.read(route)
    }

    fn offload_remove(&mut self, route: &OffloadRoute) -> Option<OffloadCounters> {
        self.offload.remove(route)
    }

    fn offload_counted(&mut self, transport: TransportId, delta: &OffloadCounters) {
        self.offload.counted(delta);
        match self.offloaded.iter_mut().find(|(t, _)| *t == transport.0) {
            Some((_, c)) => *c += delta,
            None => self.offloaded.push((transport.0, *delta)),
        }
    }

    fn open(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
        if !self.budgets.take_alloc_fd() {
            return Err(RelayError::Exhausted);
        }
        let opened = self.open_socket(req);
        if opened.is_err() {
            self.budgets.give_alloc_fd();
        }
        opened
    }

    fn close(&mut self, relay: RelayId) {
        let key = relay.0 as usize;
        let generation = self.relay_generation(key);
        match self.slab.get_mut(key) {
            Some(Endpoint::Relay(s)) => {
                if s.on_ring {
                    // The kernel holds the socket until the receive is cancelled.
                    if let Some(ring) = &mut self.ring {
                        ring.cancel(key as u32, generation);
                    }
                } else {
                    s.deregister(&self.registry);
                }
            }
            Some(Endpoint::TcpRelay(t)) => t.deregister(&self.registry),
            _ => return,
        }
        self.slab.remove(key);
        self.budgets.give_alloc_fd();
    }

    fn connect(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        conn: ConnectionId,
    ) -> Result<(), RelayError> {
        let Some(Endpoint::TcpRelay(t)) = self.slab.get(relay.0 as usize) else {
            return Err(RelayError::Family);
        };
        if !self.budgets.take_alloc_fd() {
            return Err(RelayError::Exhausted);
        }
        let connected = t.connect(peer).and_then(|stream| {
            self.insert_registered(
                Endpoint::PeerConn(PeerConn::new(stream, conn, true)),
                |e, r, k| match e {
                    Endpoint::PeerConn(p) => p.register(r, k),
                    _ => Ok(()),
                },
            )
            .map_err(|_| RelayError::Exhausted)
        });
        match connected {
            Ok(key) => {
                self.peers.insert(conn.0, key);
                Ok(())
            }
            Err(e) => {
                self.budgets.give_alloc_fd();
                Err(e)
            }
        }
    }

    fn reserve_quota(&mut self, key: &Arc<str>, quota: Quota) -> bool {
        self.budgets.take_quota(key, quota)
    }

    fn release_quota(&mut self, key: &Arc<str>) {
        self.budgets.give_quota(key);
    }

    fn send_to_client(&mut self, transport: TransportId, bytes: &[u8]) {
        self.message_to_client(transport, bytes);
    }

    fn close_peer(&mut self, conn: ConnectionId) {
        let Some(key) = self.peers.remove(&conn.0) else {
            return;
        };
        // The peer connection may be out of the slab while it is being served; the
        // worker closes it then.
        if let Some(Endpoint::PeerConn(mut p)) = self.slab.remove(key) {
            p.deregister(&self.registry);
            self.budgets.give_alloc_fd();
            if let Some(c) = p.client {
                self.doomed.push((c, CloseReason::PipeEnded));
            }
        }
    }
}

impl Endpoints {
    /// Open a relay socket (its descriptor already taken from the budget).
    fn open_socket(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
        if req.tcp {
            let relay = TcpRelay::open(&req)?;
            let port = relay.addr.port();
            let key = self
                .insert_registered(Endpoint::TcpRelay(relay), |e, r, k| match e {
                    Endpoint::TcpRelay(t) => t.register(r, k),
                    _ => Ok(()),
                })
                .map_err(|_| RelayError::Exhausted)?;
            return Ok(Opened {
                relay: RelayId(key as u32),
                port,
                token: None,
            });
        }
        let (socket, port, token) = open_udp(&req, &self.reservations)?;
        let mut sock = RelaySock::new(socket, req.family == crate::turn::Family::V6);
        let key = self.slab.vacant_key();
        let generation = self.relay_generation(key);
        sock.on_ring = self.ring.as_mut().is_some_and(|r| {
            r.arm(sock.socket.as_raw_fd(), key as u32, generation)
                .is_ok()
        });
        if !sock.on_ring {
            sock.register(&self.registry, key)
                .map_err(|_| RelayError::Exhausted)?;
        }
        let key = self.insert(Endpoint::Relay(sock));
        Ok(Opened {
            relay: RelayId(key as u32),
            port,
            token,
        })
    }
}

impl Io for Endpoints {
    #[inline]
    fn send_to_peer(&mut self, relay: RelayId, payload: &[u8], peer: SocketAddr) {
        let Some(Endpoint::Relay(s)) = self.slab.get(relay.0 as usize) else {
            return;
        };
        if let Some(ring) = &mut self.ring {
            if payload.len() <= uring::MAX_SEND {
                let to = super::core::for_socket(peer, s.v6);
                if ring.send(s.socket.as_raw_fd(), payload, to).is_ok() {
                    return;
                }
            }
        }
        s.send_now(payload, peer);
    }

    fn submit(&mut self) {
        if let Some(ring) = &mut self.ring {
            if let Err(e) = ring.submit() {
                tracing::debug!(target: "stunner", "io_uring submit: {e}");
            }
        }
    }
}

/// Whether a ring completion is for the live relay socket of `slot` (not for a closed one
/// whose key was reused).
pub(super) fn on_ring(slab: &Slab<Endpoint>, slot: u32, generation: u32) -> bool {
    slab.generation(slot as usize) & GENERATION_MASK == generation
        && matches!(slab.get(slot as usize), Some(Endpoint::Relay(s)) if s.on_ring)
}

/// [`Endpoints::deliver`] on the borrowed parts (inside a ring drain).
pub(super) fn deliver_to(
    slab: &mut Slab<Endpoint>,
    registry: &Registry,
    doomed: &mut Vec<(usize, CloseReason)>,
    to: ToClient<'_>,
) {
    let key = to.transport.0 as usize;
    match slab.get_mut(key) {
        Some(Endpoint::UdpListener(l)) => l.queue(to.bytes, to.client),
        Some(Endpoint::Conn(c)) => {
            let closed = !c.send(to.bytes, registry, key);
            doomed.extend(closed.then_some((key, CloseReason::WriteFailed)));
        }
        Some(Endpoint::DtlsSession(s)) => s.send(to.bytes),
        _ => {}
    }
}
