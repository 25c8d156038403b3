//! Relay sockets: a UDP socket per allocation (or a listening TCP socket for RFC 6062),
//! each an endpoint of the worker that opened it, and the RESERVATION-TOKEN registry shared
//! by all workers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use mio::net::{TcpListener, TcpStream, UdpSocket as MioUdp};
use mio::{Interest, Registry, Token};

use super::sockopt;
use crate::turn::{Family, PortRequest, RESERVATION_LIFETIME, RelayError, RelayRequest};

/// Tries to find a free port for EVEN-PORT or a relay port range.
const PORT_TRIES: usize = 128;

/// A UDP relay socket: its receives come through the worker's io_uring or through epoll.
pub struct RelaySock {
    pub socket: MioUdp,
    pub v6: bool,
    pub on_ring: bool,
}

/// An RFC 6062 relay: a listening TCP socket on the relayed address.
pub struct TcpRelay {
    listener: TcpListener,
    pub addr: SocketAddr,
}

/// A UDP relay socket for `req`, with its port and the RESERVATION-TOKEN of the port held
/// next to it (EVEN-PORT with R).
pub fn open_udp(
    req: &RelayRequest,
    reservations: &Reservations,
) -> Result<(UdpSocket, u16, Option<u64>), RelayError> {
    let v6 = req.family == Family::V6;
    let mut reserved = None;
    let socket = match req.port {
        PortRequest::Reserved(token) => {
            let (sock, _) = reservations
                .take(token, req.family)
                .ok_or(RelayError::UnknownToken)?;
            sock
        }
        PortRequest::Any if req.range.is_none() => {
            bind(req.family, 0).map_err(|_| RelayError::Exhausted)?
        }
        PortRequest::Any | PortRequest::Even { .. } => {
            let reserve_next = req.port == PortRequest::Even { reserve_next: true };
            let even = req.port != PortRequest::Any;
            let (sock, next) = bind_in_range(req.family, req.range, even, reserve_next)?;
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
    let token = reserved.map(|(sock, p)| reservations.put(sock, p, req.family));
    Ok((socket, port, token))
}

impl RelaySock {
    pub fn new(socket: UdpSocket, v6: bool) -> RelaySock {
        RelaySock {
            socket: MioUdp::from_std(socket),
            v6,
            on_ring: false,
        }
    }

    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        registry.register(&mut self.socket, Token(key), Interest::READABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    /// Send at once (one `sendto`).
    pub fn send_now(&self, payload: &[u8], peer: SocketAddr) {
        let _ = self
            .socket
            .send_to(payload, super::core::for_socket(peer, self.v6));
    }
}

impl TcpRelay {
    /// A listening TCP relay socket (RFC 6062) on the kernel's port or one of the range.
    pub fn open(req: &RelayRequest) -> Result<TcpRelay, RelayError> {
        let ip = unspecified(req.family);
        let listener = match req.range {
            None => sockopt::tcp_relay_listener(SocketAddr::new(ip, 0))
                .map_err(|_| RelayError::Exhausted)?,
            Some(range) => (0..PORT_TRIES)
                .find_map(|_| {
                    let port = random_port(Some(range), false);
                    sockopt::tcp_relay_listener(SocketAddr::new(ip, port)).ok()
                })
                .ok_or(RelayError::Exhausted)?,
        };
        let addr = listener.local_addr().map_err(|_| RelayError::Exhausted)?;
        Ok(TcpRelay {
            listener: TcpListener::from_std(listener),
            addr,
        })
    }

    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        registry.register(&mut self.listener, Token(key), Interest::READABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
    }

    /// Accept one peer connection, or None when none waits.
    pub fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        let (stream, from) = self.listener.accept().ok()?;
        Some((stream, super::core::canonical_client(from)))
    }

    /// Start a non-blocking connect from the relayed address to `peer`.
    pub fn connect(&self, peer: SocketAddr) -> Result<TcpStream, RelayError> {
        let stream = sockopt::tcp_relay_connect(
            self.addr,
            super::core::for_socket(peer, self.addr.is_ipv6()),
        )
        .map_err(|_| RelayError::Exhausted)?;
        Ok(TcpStream::from_std(stream))
    }
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn bind(family: Family, port: u16) -> io::Result<UdpSocket> {
    sockopt::relay_socket(SocketAddr::new(unspecified(family), port))
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
        let port = random_port(Some((lo, hi)), even);
        if port == 0 || port < lo || (reserve_next && port >= hi) {
            continue;
        }
        let Ok(sock) = bind(family, port) else {
            continue;
        };
        if !reserve_next {
            return Ok((sock, None));
        }
        if let Ok(next) = bind(family, port + 1) {
            return Ok((sock, Some((next, port + 1))));
        }
    }
    Err(RelayError::Exhausted)
}

fn random_port(range: Option<(u16, u16)>, even: bool) -> u16 {
    let (lo, hi) = range.unwrap_or((49152, 65535));
    let p = rand::random_range(lo..=hi);
    if even { p & !1 } else { p }
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

    pub fn put(&self, socket: UdpSocket, port: u16, family: Family) -> u64 {
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

    pub fn take(&self, token: u64, family: Family) -> Option<(UdpSocket, u16)> {
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
