//! Relay sockets: one per allocation, owned by the worker that created it, and the
//! RESERVATION-TOKEN registry shared by all workers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use mio::net::UdpSocket as MioUdp;
use mio::{Interest, Token};

use super::sockopt;
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
    sockets: Vec<Option<(MioUdp, bool)>>,
    free: Vec<u32>,
    pub(super) reservations: Arc<Reservations>,
    /// RFC 6062 relays (listening TCP sockets) by relay id, with their bound address.
    pub(super) tcp: rustc_hash::FxHashMap<u32, (mio::net::TcpListener, SocketAddr)>,
    /// RFC 6062 peer connections.
    pub(super) peers: super::tcp_relay::PeerTable,
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
            free: Vec::new(),
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
            .map(|(s, v6)| (s, *v6))
    }

    fn add(&mut self, socket: UdpSocket, v6: bool) -> io::Result<RelayId> {
        let mut socket = MioUdp::from_std(socket);
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.sockets.push(None);
                (self.sockets.len() - 1) as u32
            }
        };
        if let Err(e) = self.registry.register(
            &mut socket,
            Token(RELAY_BASE + id as usize),
            Interest::READABLE,
        ) {
            self.free.push(id);
            return Err(e);
        }
        self.sockets[id as usize] = Some((socket, v6));
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
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.sockets.push(None);
                (self.sockets.len() - 1) as u32
            }
        };
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
        if let Some((mut sock, _)) = slot.take() {
            let _ = self.registry.deregister(&mut sock);
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
