//! The UDP worker: one thread, one mio poll, its listener sockets, its relay sockets and
//! its TURN core. Listener sockets are read with `recvmmsg` and answered with one
//! `sendmmsg` per wakeup; relay sockets run on the worker's io_uring (`uring.rs`) or, where
//! the kernel refuses it, on the same mio poll.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::UdpSocket as MioUdp;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use super::dtls::{DTLS_LISTENER_BASE, DTLS_SESSION_BASE, DtlsListener, DtlsTimers, Session};
use super::mmsg::{self, RecvBatch, SendBatch};
use super::relay::{RELAY_BASE, RelayTable, Reservations};
use super::sockopt;
use super::stats::{ClusterCounters, ListenerCounters, StatsSlot};
use super::stream::{CONN_BASE, Conn, STREAM_LISTENER_BASE, StreamListener};
use super::tcp_relay::PEER_BASE;
use super::uring::{self, RelayRing};
use super::{canonical_client, for_socket};
use crate::config::ListenerProtocol;
use crate::snapshot::{ListenerIdx, Snapshot, SnapshotCache};
use crate::turn::{ClientCtx, ClientOutput, HEADROOM, Now, RelayId, Server, ToClient, TransportId};

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
/// How often the worker publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Relay ring completions handled per loop iteration before other sockets get a turn.
const RING_BUDGET: usize = 256;

const WAKER: Token = Token(usize::MAX);
/// The relay ring's file descriptor: readable when completions wait.
const RING: Token = Token(usize::MAX - 1);

/// Messages from the runtime to a worker.
#[derive(Debug)]
pub enum Control {
    /// Stop the loop and close every socket.
    Stop,
}

/// One listener socket of this worker. Its index in [`Worker::listeners`] is its
/// [`TransportId`], stable for the socket's life.
struct ListenerSock {
    name: Arc<str>,
    signature: u64,
    socket: MioUdp,
    v6: bool,
    /// Datagrams for clients, sent as one batch per wakeup.
    tx: SendBatch,
    counters: ListenerCounters,
    /// (snapshot generation, index of this listener in that snapshot)
    at: (u64, Option<ListenerIdx>),
}

/// A UDP worker, built on the runtime thread and moved into its own thread by
/// [`Worker::run`].
pub struct Worker {
    pub(super) index: usize,
    pub(super) poll: Poll,
    listeners: Vec<Option<ListenerSock>>,
    pub(super) stream_listeners: Vec<Option<StreamListener>>,
    pub(super) conns: Vec<Option<Conn>>,
    pub(super) dtls_listeners: Vec<Option<DtlsListener>>,
    pub(super) sessions: Vec<Option<Session>>,
    pub(super) session_index: rustc_hash::FxHashMap<(usize, std::net::SocketAddr), usize>,
    pub(super) dtls_timers: DtlsTimers,
    pub(super) relays: RelayTable,
    pub(super) server: Server,
    cache: SnapshotCache,
    /// Generation whose listeners this worker has bound.
    bound_generation: u64,
    control: Receiver<Control>,
    stats: Arc<StatsSlot>,
    rx: RecvBatch,
    relay_rx: RecvBatch,
    pub(super) scratch: Vec<u8>,
    /// Relayed datagrams for stream clients, gathered during a relay batch.
    stream_out: StreamOut,
    /// Whether to try io_uring for relay sockets when the loop starts.
    want_ring: bool,
}

/// A reusable queue of (transport, bytes) pairs: one byte arena and its index, so steady
/// state does not allocate.
#[derive(Default)]
struct StreamOut {
    bytes: Vec<u8>,
    items: Vec<(TransportId, usize, usize)>,
}

impl StreamOut {
    fn push(&mut self, transport: TransportId, bytes: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.items.push((transport, start, bytes.len()));
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (TransportId, &[u8])> {
        self.items
            .iter()
            .map(|&(t, start, len)| (t, &self.bytes[start..start + len]))
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }
}

/// The runtime's handle on a worker.
pub struct Handle {
    pub waker: Arc<Waker>,
    pub stats: Arc<StatsSlot>,
}

impl Worker {
    /// Bind this worker's sockets for every TURN-UDP listener in `snap`.
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
        let relays = RelayTable::new(poll.registry().try_clone()?, reservations);
        let stats = StatsSlot::new();
        let mut worker = Worker {
            index,
            poll,
            listeners: Vec::new(),
            stream_listeners: Vec::new(),
            conns: Vec::new(),
            dtls_listeners: Vec::new(),
            sessions: Vec::new(),
            session_index: Default::default(),
            dtls_timers: DtlsTimers::default(),
            relays,
            server,
            cache,
            bound_generation: snap.generation,
            control,
            stats: stats.clone(),
            rx: RecvBatch::new(LISTENER_BATCH, HEADROOM + MAX_DATAGRAM + 1, HEADROOM),
            relay_rx: RecvBatch::new(RELAY_BATCH, HEADROOM + MAX_DATAGRAM + 1, HEADROOM),
            scratch: vec![0; SEND_SLOT],
            stream_out: StreamOut::default(),
            want_ring: !RelayRing::disabled_by_env(),
        };
        for (idx, l) in snap.listeners.iter().enumerate() {
            match l.protocol {
                ListenerProtocol::TurnUdp => worker.bind_listener(snap, idx)?,
                ListenerProtocol::TurnTcp | ListenerProtocol::TurnTls => {
                    // A bad certificate stops this listener only; the rest runs.
                    match worker.bind_stream_listener(snap, idx) {
                        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                            worker.report_listener_error(&e)
                        }
                        other => other?,
                    }
                }
                ListenerProtocol::TurnDtls => match worker.bind_dtls_listener(snap, idx) {
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                        worker.report_listener_error(&e)
                    }
                    other => other?,
                },
            }
        }
        Ok((worker, Handle { waker, stats }))
    }

    /// Whether relay sockets may use io_uring (default: yes, unless
    /// `STUNNERD_IO_URING=off`); without it, or when the kernel refuses it, they use epoll.
    pub fn set_io_uring(&mut self, on: bool) {
        self.want_ring = on;
    }

    /// The event loop. Returns when told to stop.
    pub fn run(mut self) {
        self.start_ring();
        let mut events = Events::with_capacity(1024);
        // Tokens whose socket still had data when its budget ran out, and this round's.
        let mut pending: Vec<Token> = Vec::with_capacity(1024);
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        let mut next_sweep = Instant::now();
        let mut next_publish = Instant::now();
        let mut ring_more = false;
        loop {
            let idle = pending.is_empty()
                && !ring_more
                && !self
                    .relays
                    .ring
                    .as_mut()
                    .is_some_and(|r| r.has_completions());
            let timeout = if idle {
                let now = Instant::now();
                let next = self
                    .server
                    .poll_timeout()
                    .into_iter()
                    .chain(self.dtls_timers.next())
                    .min()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(MAX_WAIT);
                Some(next.min(MAX_WAIT).min(PUBLISH_EVERY))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                // Interrupted also means ring completions arrived while we slept.
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(target: "stunner", "worker {}: poll failed: {e}", self.index);
                    continue;
                }
                events.clear();
            }
            let snap = Arc::clone(self.cache.load());
            let now = Now::read();
            if snap.generation != self.bound_generation {
                self.reconcile(&snap);
            }
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
                } else if token == RING {
                    false
                } else if token.0 >= PEER_BASE {
                    self.service_peer(now, token.0 - PEER_BASE)
                } else if token.0 >= RELAY_BASE {
                    let relay = RelayId((token.0 - RELAY_BASE) as u32);
                    if self.relays.tcp.contains_key(&relay.0) {
                        self.accept_peers(now, &snap, relay)
                    } else {
                        self.drain_relay(now, &snap, relay)
                    }
                } else if token.0 >= CONN_BASE {
                    self.service_conn(now, &snap, token.0 - CONN_BASE)
                } else if token.0 >= DTLS_LISTENER_BASE {
                    self.drain_dtls(now, &snap, token.0 - DTLS_LISTENER_BASE)
                } else if token.0 >= STREAM_LISTENER_BASE {
                    self.accept(now, token.0 - STREAM_LISTENER_BASE)
                } else {
                    self.drain_listener(now, &snap, token.0)
                };
                if more {
                    pending.push(token);
                }
            }
            ring_more = self.drain_ring(now, &snap);
            self.flush();
            self.server.handle_timeout(now, &mut self.relays);
            self.drain_outbox();
            self.close_orphans();
            self.run_dtls_timers(now);
            if now.mono >= next_sweep {
                self.relays.reservations.sweep();
                self.expire_conns(now);
                self.expire_sessions(now);
                next_sweep = now.mono + Duration::from_secs(1);
            }
            if now.mono >= next_publish {
                self.publish(&snap);
                next_publish = now.mono + PUBLISH_EVERY;
            }
            // Re-armed receives, cancels of closed relays.
            self.relays.submit();
        }
    }

    /// Move relay sockets to io_uring when the kernel allows it (see `uring.rs`). Called on
    /// the worker's own thread, which must be the one that submits.
    fn start_ring(&mut self) {
        if !self.want_ring {
            info!(target: "stunner", "worker {}: io_uring off, relay sockets on epoll", self.index);
            return;
        }
        let ring = match RelayRing::new() {
            Ok(ring) => ring,
            Err(e) => {
                info!(target: "stunner", "worker {}: io_uring unavailable ({e}), relay sockets on epoll", self.index);
                return;
            }
        };
        let fd = ring.fd();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut mio::unix::SourceFd(&fd), RING, Interest::READABLE)
        {
            info!(target: "stunner", "worker {}: io_uring not pollable ({e}), relay sockets on epoll", self.index);
            return;
        }
        info!(target: "stunner", "worker {}: relay sockets on io_uring", self.index);
        self.relays.ring = Some(ring);
    }

    /// Returns true when the worker must stop.
    fn drain_control(&mut self) -> bool {
        match self.control.try_recv() {
            Ok(Control::Stop) | Err(TryRecvError::Disconnected) => true,
            Err(TryRecvError::Empty) => false,
        }
    }

    /// Follow a new snapshot: close the sockets of removed or changed listeners (and the
    /// allocations on them), bind sockets for new or changed ones. Listeners whose
    /// signature did not change keep their sockets and allocations (and hot-swap their
    /// certificate when only the content of its files changed).
    fn reconcile(&mut self, snap: &Snapshot) {
        for id in 0..self.listeners.len() {
            let Some(l) = &self.listeners[id] else {
                continue;
            };
            let keep = snap.listener(&l.name).is_some_and(|(_, n)| {
                n.signature == l.signature && n.protocol == ListenerProtocol::TurnUdp
            });
            if !keep {
                self.close_listener(id);
            }
        }
        for slot in 0..self.stream_listeners.len() {
            let Some(l) = &self.stream_listeners[slot] else {
                continue;
            };
            let keep = snap
                .listener(&l.name)
                .is_some_and(|(_, n)| n.signature == l.signature && n.protocol.uses_tcp());
            if !keep {
                self.close_stream_listener(slot);
            }
        }
        for slot in 0..self.dtls_listeners.len() {
            let Some(l) = &self.dtls_listeners[slot] else {
                continue;
            };
            let keep = snap.listener(&l.name).is_some_and(|(_, n)| {
                n.signature == l.signature && n.protocol == ListenerProtocol::TurnDtls
            });
            if !keep {
                self.close_dtls_listener(slot);
            }
        }
        self.refresh_stream_certs(snap);
        self.refresh_dtls_certs(snap);
        for (idx, l) in snap.listeners.iter().enumerate() {
            let result = match l.protocol {
                ListenerProtocol::TurnUdp => {
                    if self.listeners.iter().flatten().any(|s| s.name == l.name) {
                        continue;
                    }
                    self.bind_listener(snap, idx)
                }
                ListenerProtocol::TurnTcp | ListenerProtocol::TurnTls => {
                    if self
                        .stream_listeners
                        .iter()
                        .flatten()
                        .any(|s| s.name == l.name)
                    {
                        continue;
                    }
                    self.bind_stream_listener(snap, idx)
                }
                ListenerProtocol::TurnDtls => {
                    if self
                        .dtls_listeners
                        .iter()
                        .flatten()
                        .any(|s| s.name == l.name)
                    {
                        continue;
                    }
                    self.bind_dtls_listener(snap, idx)
                }
            };
            // The runtime checked the ports before publishing the snapshot; losing a race
            // for one, or a bad certificate, is logged and the other listeners go on.
            if let Err(e) = result {
                self.report_listener_error(&e);
            }
        }
        // RFC 6062 pipes whose peer the new config no longer admits are closed.
        self.recheck_pipes(snap);
        self.bound_generation = snap.generation;
    }

    fn bind_listener(&mut self, snap: &Snapshot, idx: ListenerIdx) -> io::Result<()> {
        let Some(l) = snap.listeners.get(idx) else {
            return Ok(());
        };
        let socks = sockopt::listener_sockets(l.bind_ip(), l.port).map_err(|e| {
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
            let id = super::free_slot(&mut self.listeners);
            self.poll
                .registry()
                .register(&mut socket, Token(id), Interest::READABLE)?;
            self.listeners[id] = Some(ListenerSock {
                name: l.name.clone(),
                signature: l.signature,
                socket,
                v6,
                tx: SendBatch::new(SEND_BATCH, SEND_SLOT),
                counters: ListenerCounters {
                    name: l.name.clone(),
                    protocol: l.protocol.as_str(),
                    connections: 1,
                    connections_total: 1,
                    ..ListenerCounters::default()
                },
                at: (snap.generation, Some(idx)),
            });
        }
        debug!(target: "listener", "worker {}: listener {} bound on UDP port {}", self.index, l.name, l.port);
        Ok(())
    }

    fn close_listener(&mut self, id: usize) {
        let Some(mut l) = self.listeners.get_mut(id).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut l.socket);
        self.server
            .close_transport(TransportId(id as u32), &mut self.relays);
        info!(target: "listener", "worker {}: listener {} closed", self.index, l.name);
    }

    /// Copy the counters into the shared slot.
    fn publish(&mut self, snap: &Snapshot) {
        let Worker {
            listeners,
            stream_listeners,
            dtls_listeners,
            server,
            stats,
            relays,
            ..
        } = self;
        stats.publish(|r| {
            r.allocations = server.allocation_count() as u64;
            r.core = *server.stats();
            r.generation = snap.generation;
            r.io_uring = relays.ring.is_some();
            r.listeners.clear();
            for l in listeners.iter().flatten() {
                match r.listeners.iter_mut().find(|c| c.name == l.name) {
                    Some(c) => {
                        c.rx_packets += l.counters.rx_packets;
                        c.rx_bytes += l.counters.rx_bytes;
                        c.tx_packets += l.counters.tx_packets;
                        c.tx_bytes += l.counters.tx_bytes;
                        c.kernel_rx_drops += l.counters.kernel_rx_drops;
                        c.tx_drops += l.counters.tx_drops;
                    }
                    // The IPv4 and IPv6 sockets of one listener count as one socket.
                    None => r.listeners.push(l.counters.clone()),
                }
            }
            let stream_counters = stream_listeners.iter().flatten().map(|l| &l.counters);
            let dtls_counters = dtls_listeners.iter().flatten().map(|l| &l.counters);
            for l in stream_counters.chain(dtls_counters) {
                match r.listeners.iter_mut().find(|c| c.name == l.name) {
                    Some(c) => {
                        c.rx_packets += l.rx_packets;
                        c.rx_bytes += l.rx_bytes;
                        c.tx_packets += l.tx_packets;
                        c.tx_bytes += l.tx_bytes;
                        c.connections += l.connections;
                        c.connections_total += l.connections_total;
                        c.tx_drops += l.tx_drops;
                        c.handshakes += l.handshakes;
                    }
                    None => r.listeners.push(l.clone()),
                }
            }
            r.clusters.clear();
            server.for_each_cluster(|name, t| {
                r.clusters.push(ClusterCounters {
                    name: name.clone(),
                    rx_packets: t.rx_packets,
                    rx_bytes: t.rx_bytes,
                    tx_packets: t.tx_packets,
                    tx_bytes: t.tx_bytes,
                })
            });
        });
    }

    /// Send every queued datagram of every listener.
    fn flush(&mut self) {
        for l in self.listeners.iter_mut().flatten() {
            if !l.tx.is_empty() {
                l.counters.tx_drops += l.tx.flush(l.socket.as_raw_fd()) as u64;
            }
        }
    }

    /// Handle up to [`LISTENER_ROUNDS`] batches from a listener socket; true if more may
    /// wait.
    fn drain_listener(&mut self, now: Now, snap: &Snapshot, index: usize) -> bool {
        let listener_idx = self.listener_index(index, snap);
        let Worker {
            listeners,
            rx,
            server,
            relays,
            ..
        } = self;
        let Some(Some(l)) = listeners.get_mut(index) else {
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
                l.counters.rx_packets += 1;
                l.counters.rx_bytes += len as u64;
                // Truncated, or the listener is gone from the config: drop.
                let Some(listener_idx) = listener_idx.filter(|_| len > 0) else {
                    continue;
                };
                let client = canonical_client(from);
                let ctx = ClientCtx {
                    transport: TransportId(index as u32),
                    listener: listener_idx,
                    client,
                    stream: false,
                };
                if l.tx.is_full() {
                    l.counters.tx_drops += l.tx.flush(fd) as u64;
                }
                let Some(out) = l.tx.next_slot() else {
                    continue;
                };
                let bytes = &slot[HEADROOM..HEADROOM + len];
                match server.handle_client(now, snap, ctx, bytes, out, relays) {
                    ClientOutput::Drop(_) | ClientOutput::Pending | ClientOutput::Bind { .. } => {}
                    ClientOutput::Reply(n) => {
                        l.counters.tx_packets += 1;
                        l.counters.tx_bytes += n as u64;
                        l.tx.push(n, for_socket(client, l.v6));
                    }
                    ClientOutput::Forward {
                        relay,
                        peer,
                        payload,
                    } => relays.send_from(relay, payload, peer),
                }
            }
            // The queued sends read their payloads from `rx`: submit before it refills.
            relays.submit();
            l.counters.kernel_rx_drops = u64::from(rx.kernel_drops());
            if n < rx.capacity() {
                return false;
            }
        }
        true
    }

    /// Handle one batch from a relay socket on epoll; true if more may wait.
    fn drain_relay(&mut self, now: Now, snap: &Snapshot, relay: RelayId) -> bool {
        let Worker {
            listeners,
            relay_rx,
            server,
            relays,
            scratch,
            stream_out,
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
            if let Ok(to) = server.handle_peer(now, snap, relay, peer, slot, len, scratch) {
                deliver(listeners, stream_out, to);
            }
        }
        self.flush_stream_out();
        n == self.relay_rx.capacity()
    }

    /// Handle up to [`RING_BUDGET`] completions of the relay ring; true if more may wait.
    fn drain_ring(&mut self, now: Now, snap: &Snapshot) -> bool {
        let Worker {
            listeners,
            server,
            relays,
            scratch,
            stream_out,
            ..
        } = self;
        let more = relays.drain_ring(RING_BUDGET, |relay, from, buf, len| {
            let peer = canonical_client(from);
            let Some(frame) = buf.get_mut(uring::PAYLOAD_AT - HEADROOM..) else {
                return;
            };
            if let Ok(to) = server.handle_peer(now, snap, relay, peer, frame, len, scratch) {
                deliver(listeners, stream_out, to);
            }
        });
        self.flush_stream_out();
        more
    }

    /// Send the relayed datagrams gathered for stream and DTLS clients.
    fn flush_stream_out(&mut self) {
        if self.stream_out.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.stream_out);
        for (transport, bytes) in out.iter() {
            if transport.0 as usize >= DTLS_SESSION_BASE {
                self.send_to_session(transport, bytes);
            } else {
                self.send_to_conn(transport, bytes);
            }
        }
        out.clear();
        self.stream_out = out;
    }

    /// The index of listener socket `index` in `snap`, re-resolved by name when the
    /// snapshot generation changed.
    fn listener_index(&mut self, index: usize, snap: &Snapshot) -> Option<ListenerIdx> {
        let l = self.listeners.get_mut(index)?.as_mut()?;
        if l.at.0 != snap.generation {
            l.at = (snap.generation, snap.listener(&l.name).map(|(i, _)| i));
        }
        l.at.1
    }
}

/// Queue a relayed datagram for its client: into the listener's send batch for UDP
/// clients, into `stream_out` for stream and DTLS clients.
fn deliver(listeners: &mut [Option<ListenerSock>], stream_out: &mut StreamOut, to: ToClient<'_>) {
    if to.transport.0 as usize >= CONN_BASE {
        // Stream clients are served after the batch, outside the caller's borrows.
        stream_out.push(to.transport, to.bytes);
        return;
    }
    if let Some(Some(l)) = listeners.get_mut(to.transport.0 as usize) {
        if l.tx.is_full() {
            l.counters.tx_drops += l.tx.flush(l.socket.as_raw_fd()) as u64;
        }
        if l.tx.push_copy(to.bytes, for_socket(to.client, l.v6)) {
            l.counters.tx_packets += 1;
            l.counters.tx_bytes += to.bytes.len() as u64;
        }
    }
}
