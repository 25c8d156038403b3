//! The UDP worker: one thread, one mio poll, its listener sockets, its relay sockets and
//! its TURN core.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mio::net::UdpSocket as MioUdp;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use super::mmsg::{self, RecvBatch, SendBatch};
use super::sockopt;
use super::{canonical_client, for_socket};
use crate::snapshot::{ListenerIdx, Snapshot, SnapshotCache};
use crate::turn::{
    ClientCtx, ClientOutput, Family, HEADROOM, Now, Opened, PortRequest, RESERVATION_LIFETIME,
    RelayError, RelayId, RelayRequest, Relays, Server, TransportId,
};
use std::os::fd::AsRawFd;

/// Datagrams per `recvmmsg` on a listener socket, and batches per wakeup before other
/// sockets get their turn.
const LISTENER_BATCH: usize = 32;
const LISTENER_ROUNDS: usize = 4;
/// Datagrams per `recvmmsg` on a relay socket (one peer flow: usually one is waiting).
const RELAY_BATCH: usize = 8;
/// Datagrams queued per listener before a `sendmmsg`.
const SEND_BATCH: usize = 64;
/// Largest datagram handled; larger ones are truncated by the kernel and dropped.
const MAX_DATAGRAM: usize = 4096;
/// Room for a Data indication around the largest datagram.
const SEND_SLOT: usize = MAX_DATAGRAM + 64;
/// Longest sleep, so snapshot changes and timers are noticed without a wakeup.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Tries to find a free port for EVEN-PORT or a relay port range.
const PORT_TRIES: usize = 128;

const WAKER: Token = Token(usize::MAX);
const RELAY_BASE: usize = 1 << 24;

/// Messages from the runtime to a worker.
#[derive(Debug)]
pub enum Control {
    /// Stop the loop and close every socket.
    Stop,
}

/// One listener socket of this worker.
struct ListenerSock {
    name: Arc<str>,
    socket: MioUdp,
    v6: bool,
    /// Datagrams for clients, sent as one batch per wakeup.
    tx: SendBatch,
    /// Datagrams the kernel did not take (full send buffer).
    tx_dropped: u64,
    /// The kernel's receive-buffer drop counter for this socket.
    kernel_drops: u32,
    /// (snapshot generation, index of this listener in that snapshot)
    at: (u64, Option<ListenerIdx>),
}

/// Relay sockets of one worker: the core's [`Relays`].
pub struct RelayTable {
    registry: mio::Registry,
    sockets: Vec<Option<(MioUdp, bool)>>,
    free: Vec<u32>,
    reservations: Arc<Reservations>,
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

/// A UDP worker, built on the runtime thread and moved into its own thread by [`run`].
pub struct Worker {
    index: usize,
    poll: Poll,
    listeners: Vec<ListenerSock>,
    relays: RelayTable,
    server: Server,
    cache: SnapshotCache,
    control: Receiver<Control>,
    rx: RecvBatch,
    relay_rx: RecvBatch,
    scratch: Vec<u8>,
}

/// The runtime's handle on a worker.
pub struct Handle {
    pub waker: Arc<Waker>,
}

impl Worker {
    /// Bind this worker's socket for every TURN-UDP listener in `snap`.
    pub fn new(
        index: usize,
        snap: &Snapshot,
        cache: SnapshotCache,
        server: Server,
        control: Receiver<Control>,
        reservations: Arc<Reservations>,
    ) -> io::Result<(Worker, Handle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::new();
        for (idx, l) in snap.listeners.iter().enumerate() {
            if l.protocol != crate::config::ListenerProtocol::TurnUdp {
                continue;
            }
            let socks = sockopt::listener_sockets(l.port).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {}: bind UDP port {}: {e}", l.name, l.port),
                )
            })?;
            for std_sock in socks {
                let v6 = std_sock.local_addr()?.is_ipv6();
                // Best effort: without it only the drop counter is missing.
                let _ = mmsg::enable_rxq_ovfl(std_sock.as_raw_fd());
                let mut socket = MioUdp::from_std(std_sock);
                let token = Token(listeners.len());
                poll.registry()
                    .register(&mut socket, token, Interest::READABLE)?;
                listeners.push(ListenerSock {
                    name: l.name.clone(),
                    socket,
                    v6,
                    tx: SendBatch::new(SEND_BATCH, SEND_SLOT),
                    tx_dropped: 0,
                    kernel_drops: 0,
                    at: (snap.generation, Some(idx)),
                });
            }
        }
        let relays = RelayTable {
            registry: poll.registry().try_clone()?,
            sockets: Vec::new(),
            free: Vec::new(),
            reservations,
        };
        let worker = Worker {
            index,
            poll,
            listeners,
            relays,
            server,
            cache,
            control,
            rx: RecvBatch::new(LISTENER_BATCH, HEADROOM + MAX_DATAGRAM + 1, HEADROOM),
            relay_rx: RecvBatch::new(RELAY_BATCH, HEADROOM + MAX_DATAGRAM + 1, HEADROOM),
            scratch: vec![0; SEND_SLOT],
        };
        Ok((worker, Handle { waker }))
    }

    /// The event loop. Returns when told to stop.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // Tokens whose socket still had data when its budget ran out, and this round's.
        let mut pending: Vec<Token> = Vec::with_capacity(1024);
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        let mut next_reservation_sweep = Instant::now();
        loop {
            let timeout = if pending.is_empty() {
                let now = std::time::Instant::now();
                let next = self
                    .server
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(MAX_WAIT);
                Some(next.min(MAX_WAIT))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(target: "stunner", "worker {}: poll failed: {e}", self.index);
                }
                continue;
            }
            let snap = Arc::clone(self.cache.load());
            let now = Now::read();
            ready.clear();
            ready.append(&mut pending);
            for ev in events.iter() {
                if !ready.contains(&ev.token()) {
                    ready.push(ev.token());
                }
            }
            for &token in &ready {
                let more = if token == WAKER {
                    if self.drain_control() {
                        return;
                    }
                    false
                } else if token.0 >= RELAY_BASE {
                    let relay = RelayId((token.0 - RELAY_BASE) as u32);
                    self.drain_relay(now, &snap, relay)
                } else {
                    self.drain_listener(now, &snap, token.0)
                };
                if more {
                    pending.push(token);
                }
            }
            self.flush();
            self.server.handle_timeout(now, &mut self.relays);
            if now.mono >= next_reservation_sweep {
                self.relays.reservations.sweep();
                next_reservation_sweep = now.mono + Duration::from_secs(1);
            }
        }
    }

    /// Returns true when the worker must stop.
    fn drain_control(&mut self) -> bool {
        match self.control.try_recv() {
            Ok(Control::Stop) | Err(TryRecvError::Disconnected) => true,
            Err(TryRecvError::Empty) => false,
        }
    }

    /// Send every queued datagram of every listener.
    fn flush(&mut self) {
        for l in &mut self.listeners {
            if !l.tx.is_empty() {
                l.tx_dropped += l.tx.flush(l.socket.as_raw_fd()) as u64;
            }
        }
    }

    /// Handle up to [`LISTENER_ROUNDS`] batches from a listener socket; true if more may
    /// wait.
    fn drain_listener(&mut self, now: Now, snap: &Snapshot, index: usize) -> bool {
        let Some(listener_idx) = self.listener_index(index, snap) else {
            // The listener is gone from the config: drain and drop.
            return self.discard(index);
        };
        let Worker {
            listeners,
            rx,
            server,
            relays,
            ..
        } = self;
        let Some(l) = listeners.get_mut(index) else {
            return false;
        };
        let fd = l.socket.as_raw_fd();
        for _ in 0..LISTENER_ROUNDS {
            let n = match rx.recv(fd, rx.capacity()) {
                Ok(n) => n,
                Err(e) => {
                    debug!(target: "stunner", "listener {}: recv: {e}", l.name);
                    return false;
                }
            };
            for i in 0..n {
                let Some((slot, len, from)) = rx.get(i) else {
                    continue;
                };
                if len == 0 {
                    continue; // truncated
                }
                let client = canonical_client(from);
                let ctx = ClientCtx {
                    transport: TransportId(index as u32),
                    listener: listener_idx,
                    client,
                };
                if l.tx.is_full() {
                    l.tx_dropped += l.tx.flush(fd) as u64;
                }
                let Some(out) = l.tx.next_slot() else {
                    continue;
                };
                let bytes = &slot[HEADROOM..HEADROOM + len];
                match server.handle_client(now, snap, ctx, bytes, out, relays) {
                    ClientOutput::Drop(_) => {}
                    ClientOutput::Reply(n) => l.tx.push(n, for_socket(client, l.v6)),
                    ClientOutput::Forward {
                        relay,
                        peer,
                        payload,
                    } => {
                        if let Some((sock, v6)) = relays.get(relay) {
                            let _ = sock.send_to(payload, for_socket(peer, v6));
                        }
                    }
                }
            }
            l.kernel_drops = rx.kernel_drops();
            if n < rx.capacity() {
                return false;
            }
        }
        true
    }

    /// Handle one batch from a relay socket; true if more may wait.
    fn drain_relay(&mut self, now: Now, snap: &Snapshot, relay: RelayId) -> bool {
        let Worker {
            listeners,
            relay_rx,
            server,
            relays,
            scratch,
            ..
        } = self;
        let Some((sock, _)) = relays.get(relay) else {
            return false;
        };
        let n = match relay_rx.recv(sock.as_raw_fd(), relay_rx.capacity()) {
            Ok(n) => n,
            Err(_) => return false,
        };
        for i in 0..n {
            let Some((slot, len, from)) = relay_rx.get(i) else {
                continue;
            };
            if len == 0 {
                continue;
            }
            let peer = canonical_client(from);
            let Ok(to) = server.handle_peer(now, snap, relay, peer, slot, len, scratch) else {
                continue;
            };
            if let Some(l) = listeners.get_mut(to.transport.0 as usize) {
                if l.tx.is_full() {
                    l.tx_dropped += l.tx.flush(l.socket.as_raw_fd()) as u64;
                }
                l.tx.push_copy(to.bytes, for_socket(to.client, l.v6));
            }
        }
        n == relay_rx.capacity()
    }

    fn discard(&mut self, index: usize) -> bool {
        let Some(l) = self.listeners.get(index) else {
            return false;
        };
        match self.rx.recv(l.socket.as_raw_fd(), self.rx.capacity()) {
            Ok(n) => n == self.rx.capacity(),
            Err(_) => false,
        }
    }

    /// The index of listener socket `index` in `snap`, re-resolved by name when the
    /// snapshot generation changed.
    fn listener_index(&mut self, index: usize, snap: &Snapshot) -> Option<ListenerIdx> {
        let l = self.listeners.get_mut(index)?;
        if l.at.0 != snap.generation {
            l.at = (snap.generation, snap.listener(&l.name).map(|(i, _)| i));
        }
        l.at.1
    }
}

impl RelayTable {
    fn get(&self, relay: RelayId) -> Option<(&MioUdp, bool)> {
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

    fn random_port(range: Option<(u16, u16)>, even: bool) -> u16 {
        let (lo, hi) = range.unwrap_or((49152, 65535));
        let p = rand::random_range(lo..=hi);
        if even { p & !1 } else { p }
    }
}

impl Relays for RelayTable {
    fn open(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
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
        let Some(slot) = self.sockets.get_mut(relay.0 as usize) else {
            return;
        };
        if let Some((mut sock, _)) = slot.take() {
            let _ = self.registry.deregister(&mut sock);
            self.free.push(relay.0);
        }
    }
}
