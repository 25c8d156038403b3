//! The UDP worker: one thread, one mio poll, its listener sockets, its relay sockets and
//! its TURN core.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use mio::net::UdpSocket as MioUdp;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use super::sockopt;
use super::{canonical_client, for_socket};
use crate::snapshot::{ListenerIdx, Snapshot, SnapshotCache};
use crate::turn::{
    ClientCtx, ClientOutput, Family, HEADROOM, Now, Opened, PortRequest, RelayError, RelayId,
    RelayRequest, Relays, Server, TransportId,
};

/// Datagrams handled per socket per wakeup before other sockets get their turn.
const BUDGET: usize = 64;
/// Largest datagram handled; larger ones are truncated by the kernel and dropped.
const MAX_DATAGRAM: usize = 4096;
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
    /// (snapshot generation, index of this listener in that snapshot)
    at: (u64, Option<ListenerIdx>),
}

/// Relay sockets of one worker: the core's [`Relays`].
pub struct RelayTable {
    registry: mio::Registry,
    sockets: Vec<Option<(MioUdp, bool)>>,
    free: Vec<u32>,
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
    ) -> io::Result<(Worker, Handle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::new();
        for (idx, l) in snap.listeners.iter().enumerate() {
            if l.protocol != crate::config::ListenerProtocol::TurnUdp {
                continue;
            }
            let std_sock = sockopt::listener_socket(l.port).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {}: bind UDP port {}: {e}", l.name, l.port),
                )
            })?;
            let v6 = std_sock.local_addr()?.is_ipv6();
            let mut socket = MioUdp::from_std(std_sock);
            let token = Token(listeners.len());
            poll.registry()
                .register(&mut socket, token, Interest::READABLE)?;
            listeners.push(ListenerSock {
                name: l.name.clone(),
                socket,
                v6,
                at: (snap.generation, Some(idx)),
            });
        }
        let relays = RelayTable {
            registry: poll.registry().try_clone()?,
            sockets: Vec::new(),
            free: Vec::new(),
        };
        let worker = Worker {
            index,
            poll,
            listeners,
            relays,
            server,
            cache,
            control,
        };
        Ok((worker, Handle { waker }))
    }

    /// The event loop. Returns when told to stop.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut recv = vec![0u8; HEADROOM + MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM + 64];
        // Tokens whose socket still had data when its budget ran out.
        let mut pending: Vec<Token> = Vec::new();
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
            let mut ready = std::mem::take(&mut pending);
            ready.extend(events.iter().map(|e| e.token()));
            for token in ready {
                let more = if token == WAKER {
                    if self.drain_control() {
                        return;
                    }
                    false
                } else if token.0 >= RELAY_BASE {
                    let relay = RelayId((token.0 - RELAY_BASE) as u32);
                    self.drain_relay(now, &snap, relay, &mut recv, &mut out)
                } else {
                    self.drain_listener(now, &snap, token.0, &mut recv, &mut out)
                };
                if more && !pending.contains(&token) {
                    pending.push(token);
                }
            }
            self.server.handle_timeout(now, &mut self.relays);
        }
    }

    /// Returns true when the worker must stop.
    fn drain_control(&mut self) -> bool {
        match self.control.try_recv() {
            Ok(Control::Stop) | Err(TryRecvError::Disconnected) => true,
            Err(TryRecvError::Empty) => false,
        }
    }

    /// Handle up to [`BUDGET`] datagrams from a listener socket; true if more may wait.
    fn drain_listener(
        &mut self,
        now: Now,
        snap: &Snapshot,
        index: usize,
        recv: &mut [u8],
        out: &mut [u8],
    ) -> bool {
        let Some(listener_idx) = self.listener_index(index, snap) else {
            // The listener is gone from the config: drain and drop.
            return self.discard(index, recv);
        };
        for _ in 0..BUDGET {
            let Some(l) = self.listeners.get(index) else {
                return false;
            };
            let (len, from) = match l.socket.recv_from(recv) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!(target: "stunner", "listener {}: recv: {e}", l.name);
                    continue;
                }
            };
            if len >= recv.len() {
                continue; // truncated
            }
            let client = canonical_client(from);
            let ctx = ClientCtx {
                transport: TransportId(index as u32),
                listener: listener_idx,
                client,
            };
            let bytes = &recv[..len];
            match self
                .server
                .handle_client(now, snap, ctx, bytes, out, &mut self.relays)
            {
                ClientOutput::Drop(_) => {}
                ClientOutput::Reply(n) => {
                    let _ = l.socket.send_to(&out[..n], for_socket(client, l.v6));
                }
                ClientOutput::Forward {
                    relay,
                    peer,
                    payload,
                } => {
                    if let Some((sock, v6)) = self.relays.get(relay) {
                        let _ = sock.send_to(payload, for_socket(peer, v6));
                    }
                }
            }
        }
        true
    }

    /// Handle up to [`BUDGET`] datagrams from a relay socket; true if more may wait.
    fn drain_relay(
        &mut self,
        now: Now,
        snap: &Snapshot,
        relay: RelayId,
        recv: &mut [u8],
        out: &mut [u8],
    ) -> bool {
        for _ in 0..BUDGET {
            let Some((sock, _)) = self.relays.get(relay) else {
                return false;
            };
            let (len, from) = match sock.recv_from(&mut recv[HEADROOM..]) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => continue,
            };
            if len >= recv.len() - HEADROOM {
                continue; // truncated
            }
            let peer = canonical_client(from);
            let Ok(to) = self
                .server
                .handle_peer(now, snap, relay, peer, recv, len, out)
            else {
                continue;
            };
            if let Some(l) = self.listeners.get(to.transport.0 as usize) {
                let _ = l.socket.send_to(to.bytes, for_socket(to.client, l.v6));
            }
        }
        true
    }

    fn discard(&mut self, index: usize, recv: &mut [u8]) -> bool {
        let Some(l) = self.listeners.get(index) else {
            return false;
        };
        for _ in 0..BUDGET {
            if l.socket.recv_from(recv).is_err() {
                return false;
            }
        }
        true
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

    fn random_port(range: Option<(u16, u16)>, even: bool) -> u16 {
        let (lo, hi) = range.unwrap_or((49152, 65535));
        let p = rand::random_range(lo..=hi);
        if even { p & !1 } else { p }
    }
}

impl Relays for RelayTable {
    fn open(&mut self, req: RelayRequest) -> Result<Opened, RelayError> {
        let v6 = req.family == Family::V6;
        let fixed_ports = req.range.is_some() || req.port != PortRequest::Any;
        let mut reserved = None;
        let socket = if !fixed_ports {
            Self::bind(req.family, 0).map_err(|_| RelayError::Exhausted)?
        } else {
            let reserve_next = req.port == PortRequest::Even { reserve_next: true };
            let even = matches!(req.port, PortRequest::Even { .. });
            let mut found = None;
            for _ in 0..PORT_TRIES {
                let port = Self::random_port(req.range, even);
                if port == 0 || (even && port == u16::MAX) {
                    continue;
                }
                if even
                    && req
                        .range
                        .is_some_and(|(lo, hi)| port < lo || (reserve_next && port + 1 > hi))
                {
                    continue;
                }
                let Ok(sock) = Self::bind(req.family, port) else {
                    continue;
                };
                if reserve_next {
                    let Ok(next) = Self::bind(req.family, port + 1) else {
                        continue;
                    };
                    reserved = Some((next, port + 1));
                }
                found = Some(sock);
                break;
            }
            found.ok_or(RelayError::Exhausted)?
        };
        if req.dont_fragment {
            let _ = sockopt::set_dont_fragment(&socket, v6);
        }
        let port = socket
            .local_addr()
            .map_err(|_| RelayError::Exhausted)?
            .port();
        let relay = self.add(socket, v6).map_err(|_| RelayError::Exhausted)?;
        let reserved = match reserved {
            Some((sock, p)) => match self.add(sock, v6) {
                Ok(id) => Some((id, p)),
                Err(_) => {
                    self.close(relay);
                    return Err(RelayError::Exhausted);
                }
            },
            None => None,
        };
        Ok(Opened {
            relay,
            port,
            reserved,
        })
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
