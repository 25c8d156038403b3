//! Relay sockets: one per allocation, owned by the worker that created it, and the
//! RESERVATION-TOKEN registry shared by all workers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use mio::net::UdpSocket as MioUdp;
use mio::{Interest, Token};

use super::sockopt;
use super::uring::{Completion, GENERATION_MASK, RelayRing};
use crate::turn::{
    ConnectionId, Family, Opened, PortRequest, RESERVATION_LIFETIME, RelayError, RelayId,
    RelayRequest, Relays,
};

/// Tries to find a free port for EVEN-PORT or a relay port range.
const PORT_TRIES: usize = 128;
/// Relay sockets are registered with tokens from here up.
pub const RELAY_BASE: usize = 1 << 24;

/// Relay sockets of one worker: the core's [`Relays`].
pub struct RelayTable {
    pub(super) registry: mio::Registry,
    sockets: Vec<Option<RelaySock>>,
    /// Per slot, bumped when its socket closes, so that late completions of a closed
    /// socket's receive are told apart from those of the slot's next socket.
    generations: Vec<u32>,
    free: Vec<u32>,
    /// The io_uring relay path, when the kernel allows it (see `uring.rs`).
    pub(super) ring: Option<RelayRing>,
    /// Receives to start again after a drain of the ring (kept to avoid allocating).
    rearm: Vec<(u32, u32, i32)>,
    pub(super) reservations: Arc<Reservations>,
    /// RFC 6062 relays (listening TCP sockets) by relay id, with their bound address.
    pub(super) tcp: rustc_hash::FxHashMap<u32, (mio::net::TcpListener, SocketAddr)>,
    /// RFC 6062 peer connections.
    pub(super) peers: super::tcp_relay::PeerTable,
}

/// A UDP relay socket: its receives come through the ring or through epoll.
struct RelaySock {
    socket: MioUdp,
    v6: bool,
    on_ring: bool,
}

/// Ports held by RESERVATION-TOKENs (RFC 8656 EVEN-PORT with R), shared by all workers:
/// the allocation that redeems a token comes from another 5-tuple, which the kernel may
/// hash to another worker. Only Allocate requests touch it, never the data path.
#[derive(Default)]
pub struct Reservations {
    held: Mutex<Vec<Reserved>>,
}

struct Reserved {
    token: u64,
    socket: UdpSocket,
    port: u16,
    family: Family,
    expires: Instant,
}

impl Reservations {
    pub fn new() -> Arc<Reservations> {
        Arc::new(Reservations::default())
    }

    fn put(&self, socket: UdpSocket, port: u16, family: Family) -> u64 {
        let token = rand::random::<u64>();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        held.retain(|r| r.expires > now);
        held.push(Reserved {
            token,
            socket,
            port,
            family,
            expires: now + RESERVATION_LIFETIME,
        });
        token
    }

    fn take(&self, token: u64, family: Family) -> Option<(UdpSocket, u16)> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        held.retain(|r| r.expires > now);
        let pos = held
            .iter()
            .position(|r| r.token == token && r.family == family)?;
        let r = held.swap_remove(pos);
        Some((r.socket, r.port))
    }

    /// Close the sockets of expired reservations.
    pub fn sweep(&self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        held.retain(|r| r.expires > now);
    }

    /// Reservations currently held.
    pub fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RelayTable {
    pub fn new(registry: mio::Registry, reservations: Arc<Reservations>) -> RelayTable {
        RelayTable {
            registry,
            sockets: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            ring: None,
            rearm: Vec::with_capacity(64),
            reservations,
            tcp: Default::default(),
            peers: Default::default(),
        }
    }

    /// Open relay sockets.
    pub fn len(&self) -> usize {
        self.sockets.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn get(&self, relay: RelayId) -> Option<(&MioUdp, bool)> {
        self.sockets
            .get(relay.0 as usize)
            .and_then(Option::as_ref)
            .map(|s| (&s.socket, s.v6))
    }

    /// Send `payload` from relay socket `relay` to `peer`. On the ring the send is only
    /// queued (the ring keeps its own copy of the payload) until [`RelayTable::submit`].
    pub(super) fn send_from(&mut self, relay: RelayId, payload: &[u8], peer: SocketAddr) {
        let Some(ring) = &mut self.ring else {
            return self.send_now(relay, payload, peer);
        };
        let Some(Some(s)) = self.sockets.get(relay.0 as usize) else {
            return;
        };
        let to = super::for_socket(peer, s.v6);
        if let Err(e) = ring.send(s.socket.as_raw_fd(), payload, to) {
            if e.kind() == std::io::ErrorKind::InvalidInput {
                let _ = s.socket.send_to(payload, to);
            }
        }
    }

    /// Send `payload` from relay socket `relay` to `peer` at once (one `sendto`), for
    /// callers whose payload buffer does not outlive the call.
    pub(super) fn send_now(&self, relay: RelayId, payload: &[u8], peer: SocketAddr) {
        if let Some((sock, v6)) = self.get(relay) {
            let _ = sock.send_to(payload, super::for_socket(peer, v6));
        }
    }

    /// Hand queued ring work (sends, receives, cancels) to the kernel.
    pub(super) fn submit(&mut self) {
        if let Some(ring) = &mut self.ring {
            if let Err(e) = ring.submit() {
                tracing::debug!(target: "stunner", "io_uring submit: {e}");
            }
        }
    }

    /// Handle up to `budget` ring completions, passing each datagram of a live relay to
    /// `on_datagram(relay, from, buf, len)` (payload at `buf[uring::PAYLOAD_AT..]`, free
    /// bytes before it); true if more may wait.
    pub(super) fn drain_ring(
        &mut self,
        budget: usize,
        mut on_datagram: impl FnMut(RelayId, SocketAddr, &mut [u8], usize),
    ) -> bool {
        let RelayTable {
            ring,
            sockets,
            generations,
            rearm,
            ..
        } = self;
        let Some(r) = ring.as_mut() else {
            return false;
        };
        let live = |slot: u32, generation: u32| {
            generations.get(slot as usize) == Some(&generation)
                && sockets
                    .get(slot as usize)
                    .is_some_and(|s| s.as_ref().is_some_and(|s| s.on_ring))
        };
        let mut more = true;
        for _ in 0..budget {
            let got = r.next(|c| match c {
                Completion::Datagram {
                    slot,
                    generation,
                    from,
                    buf,
                    len,
                } if live(slot, generation) => on_datagram(RelayId(slot), from, buf, len),
                Completion::Stopped {
                    slot,
                    generation,
                    error,
                } if live(slot, generation) => rearm.push((slot, generation, error)),
                _ => {}
            });
            if !got {
                more = false;
                break;
            }
        }
        let mut pending = std::mem::take(&mut self.rearm);
        for (slot, generation, error) in pending.drain(..) {
            self.restart_receive(slot, generation, error);
        }
        self.rearm = pending;
        more
    }

    /// A relay socket's multishot receive ended: start it again, or move the socket to
    /// epoll if the ring refuses it.
    fn restart_receive(&mut self, slot: u32, generation: u32, error: i32) {
        let Some(Some(s)) = self.sockets.get_mut(slot as usize) else {
            return;
        };
        let fd = s.socket.as_raw_fd();
        // ENOBUFS: every buffer was in use; they are back now. 0: the kernel ended it
        // (e.g. a full completion queue). Anything else: this socket leaves the ring.
        let transient = error == 0 || error == -libc::ENOBUFS;
        let armed = transient
            && self
                .ring
                .as_mut()
                .is_some_and(|r| r.arm(fd, slot, generation).is_ok());
        if !armed {
            s.on_ring = false;
            let _ = self.registry.register(
                &mut s.socket,
                Token(RELAY_BASE + slot as usize),
                Interest::READABLE,
            );
        }
    }

    /// A free relay id: a closed one, or a new slot.
    fn new_slot(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.sockets.push(None);
            self.generations.push(0);
            (self.sockets.len() - 1) as u32
        })
    }

    fn add(&mut self, socket: UdpSocket, v6: bool) -> io::Result<RelayId> {
        let mut socket = MioUdp::from_std(socket);
        let id = self.new_slot();
        let generation = self.generations[id as usize];
        let on_ring = self
            .ring
            .as_mut()
            .is_some_and(|r| r.arm(socket.as_raw_fd(), id, generation).is_ok());
        if !on_ring {
            if let Err(e) = self.registry.register(
                &mut socket,
                Token(RELAY_BASE + id as usize),
                Interest::READABLE,
            ) {
                self.free.push(id);
                return Err(e);
            }
        }
        self.sockets[id as usize] = Some(RelaySock {
            socket,
            v6,
            on_ring,
        });
        Ok(RelayId(id))
    }

    fn bind(family: Family, port: u16) -> io::Result<UdpSocket> {
        let ip = match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        sockopt::relay_socket(SocketAddr::new(ip, port))
    }

    /// A socket on a random free port of `range` (default: the IANA dynamic range), even
    /// if asked, plus the socket holding port + 1 when `reserve_next`.
    fn bind_in_range(
        family: Family,
        range: Option<(u16, u16)>,
        even: bool,
        reserve_next: bool,
    ) -> Result<(UdpSocket, Option<(UdpSocket, u16)>), RelayError> {
        let (lo, hi) = range.unwrap_or((49152, 65535));
        for _ in 0..PORT_TRIES {
            let port = Self::random_port(Some((lo, hi)), even);
            if port == 0 || port < lo || (reserve_next && port >= hi) {
                continue;
            }
            let Ok(sock) = Self::bind(family, port) else {
                continue;
            };
            if !reserve_next {
                return Ok((sock, None));
            }
            if let Ok(next) = Self::bind(family, port + 1) {
                return Ok((sock, Some((next, port + 1))));
            }
        }
        Err(RelayError::Exhausted)
    }

    /// A listening TCP relay socket (RFC 6062) on the kernel's port or one of `range`.
    fn open_tcp(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
        let ip = match req.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let listener = match req.range {
            None => sockopt::tcp_relay_listener(SocketAddr::new(ip, 0))
                .map_err(|_| RelayError::Exhausted)?,
            Some(range) => (0..PORT_TRIES)
                .find_map(|_| {
                    let port = Self::random_port(Some(range), false);
                    sockopt::tcp_relay_listener(SocketAddr::new(ip, port)).ok()
                })
                .ok_or(RelayError::Exhausted)?,
        };
        let addr = listener.local_addr().map_err(|_| RelayError::Exhausted)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let id = self.new_slot();
        if self
            .registry
            .register(
                &mut listener,
                Token(RELAY_BASE + id as usize),
                Interest::READABLE,
            )
            .is_err()
        {
            self.free.push(id);
            return Err(RelayError::Exhausted);
        }
        self.tcp.insert(id, (listener, addr));
        Ok(Opened {
            relay: RelayId(id),
            port: addr.port(),
            token: None,
        })
    }

    fn random_port(range: Option<(u16, u16)>, even: bool) -> u16 {
        let (lo, hi) = range.unwrap_or((49152, 65535));
        let p = rand::random_range(lo..=hi);
        if even { p & !1 } else { p }
    }
}

impl Relays for RelayTable {
    fn open(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
        if req.tcp {
            return self.open_tcp(req);
        }
        let v6 = req.family == Family::V6;
        let mut reserved = None;
        let socket = match req.port {
            PortRequest::Reserved(token) => {
                let (sock, _) = self
                    .reservations
                    .take(token, req.family)
                    .ok_or(RelayError::UnknownToken)?;
                sock
            }
            PortRequest::Any if req.range.is_none() => {
                Self::bind(req.family, 0).map_err(|_| RelayError::Exhausted)?
            }
            PortRequest::Any | PortRequest::Even { .. } => {
                let reserve_next = req.port == PortRequest::Even { reserve_next: true };
                let even = req.port != PortRequest::Any;
                let (sock, next) = Self::bind_in_range(req.family, req.range, even, reserve_next)?;
                reserved = next;
                sock
            }
        };
        if req.dont_fragment {
            let _ = sockopt::set_dont_fragment(&socket, v6);
        }
        let port = socket
            .local_addr()
            .map_err(|_| RelayError::Exhausted)?
            .port();
        let relay = self.add(socket, v6).map_err(|_| RelayError::Exhausted)?;
        let token = reserved.map(|(sock, p)| self.reservations.put(sock, p, req.family));
        Ok(Opened { relay, port, token })
    }

    fn close(&mut self, relay: RelayId) {
        if let Some((mut l, _)) = self.tcp.remove(&relay.0) {
            let _ = self.registry.deregister(&mut l);
            self.free.push(relay.0);
            return;
        }
        let Some(slot) = self.sockets.get_mut(relay.0 as usize) else {
            return;
        };
        if let Some(mut s) = slot.take() {
            let generation = &mut self.generations[relay.0 as usize];
            if s.on_ring {
                // The kernel holds the socket until the receive is cancelled.
                if let Some(ring) = &mut self.ring {
                    ring.cancel(relay.0, *generation);
                }
            } else {
                let _ = self.registry.deregister(&mut s.socket);
            }
            *generation = generation.wrapping_add(1) & GENERATION_MASK;
            self.free.push(relay.0);
        }
    }

    fn connect(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        conn: ConnectionId,
    ) -> Result<(), RelayError> {
        let local = self
            .tcp
            .get(&relay.0)
            .map(|(_, a)| *a)
            .ok_or(RelayError::Family)?;
        let stream = sockopt::tcp_relay_connect(local, super::for_socket(peer, local.is_ipv6()))
            .map_err(|_| RelayError::Exhausted)?;
        self.peers
            .insert(
                &self.registry,
                mio::net::TcpStream::from_std(stream),
                conn,
                true,
            )
            .map_err(|_| RelayError::Exhausted)
    }

    fn close_peer(&mut self, conn: ConnectionId) {
        self.peers.remove(&self.registry, conn);
    }
}
