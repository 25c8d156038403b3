//! A worker: one thread, one mio poll, and one slab of endpoints (listener sockets, client
//! connections and DTLS sessions, relay sockets and RFC 6062 peer connections) whose key
//! is the mio token, the core's transport id and the core's relay id at once.
//!
//! Each event goes to its endpoint's own file (`udp.rs`, `stream.rs`, `dtls.rs`,
//! `relay.rs`, `tcp_relay.rs`) with the narrow context of `core.rs`; what crosses between
//! endpoints (a relayed datagram to its client, a pipe between a client connection and a
//! peer connection, closing what belongs to a closed endpoint) happens here. Listener
//! changes are decided by the reconciler and arrive as a [`Plan`]; the worker applies it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;
use tracing::{info, warn};

use super::budget::{Budgets, Refusal};
use super::core::{ByteStream, Core, Io, canonical_client};
use super::dtls::{DtlsListener, DtlsSession, DtlsTimers, MAX_HALF_OPEN, MAX_SESSIONS};
use super::endpoints::{Endpoint, Endpoints, deliver_to, on_ring};
use super::mmsg::RecvBatch;
use super::offload::Offload;
use super::preauth::PreauthBudget;
use super::relay::Reservations;
use super::slab::Slab;
use super::stats::{CloseReason, ClusterCounters, StatsSlot, merge};
use super::stream::{ACCEPT_BUDGET, Accepted, Conn, ConnEvent, MAX_CONNS, StreamListener};
use super::tcp_relay::{self, PeerConn, Pumped};
use super::udp::{LISTENER_BATCH, MAX_DATAGRAM, SEND_SLOT, UdpListener};
use super::uring::{self, Completion, RelayRing};
use crate::config::ListenerProtocol;
use crate::snapshot::diff::{ListenerChange, Plan};
use crate::snapshot::{Listener, Snapshot, SnapshotCache};
use crate::turn::logs::{Limiter, Suppressed};
use crate::turn::session::{DeleteReason, Selector, SessionInfo};
use crate::turn::{ConnectionId, FiveTuple, HEADROOM, Now, RelayId, Relays, Server, TransportId};

/// Datagrams per `recvmmsg` on a relay socket (one peer flow: usually one is waiting).
const RELAY_BATCH: usize = 8;
/// Longest sleep, so timers are noticed without a wakeup.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// How often the worker publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Relay ring completions handled per loop iteration before other sockets get a turn.
const RING_BUDGET: usize = 256;
/// DTLS datagrams read per listener socket per wakeup.
const DTLS_BUDGET: usize = 64;

const WAKER: Token = Token(usize::MAX);
/// The relay ring's file descriptor: readable when completions wait.
const RING: Token = Token(usize::MAX - 1);

/// Abnormal client connection closes (all workers), one log line a second.
static CONN_CLOSES: Limiter = Limiter::new();

/// Refused client connections (all workers), one log line a second.
static CONN_REFUSALS: Limiter = Limiter::new();

/// Messages from the runtime to a worker.
#[derive(Debug)]
pub enum Control {
    /// Apply the listener changes the reconciler decided for a new snapshot.
    Apply(Arc<Plan>),
    /// Stop the loop and close every socket (the allocations left are logged as deleted
    /// at shutdown).
    Stop,
    /// Answer with this worker's live allocations (the admin session list).
    Sessions(std::sync::mpsc::Sender<Vec<SessionInfo>>),
    /// End the allocations the selector names; answer with their session ids.
    Kill(Selector, std::sync::mpsc::Sender<Vec<u64>>),
}

/// A UDP worker, built on the runtime thread and moved into its own thread by
/// [`Worker::run`].
pub struct Worker {
    index: usize,
    poll: Poll,
    eps: Endpoints,
    core: Core,
    cache: SnapshotCache,
    control: Receiver<Control>,
    stats: Arc<StatsSlot>,
    rx: RecvBatch,
    relay_rx: RecvBatch,
    dtls_timers: DtlsTimers,
    /// Whether to try io_uring for relay sockets when the loop starts.
    want_ring: bool,
}

/// Limits a worker enforces, from the command line.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes per second of answers larger than their request to one unverified UDP source
    /// prefix, for the whole daemon (0: no limit); see `transport::preauth`.
    pub preauth_bytes_per_sec: u32,
    /// Bytes per second each allocation may send to its peers (0: no limit).
    pub allocation_rate: u32,
    /// Workers sharing the limits.
    pub workers: usize,
    /// Descriptor, connection and quota budgets shared by the workers.
    pub budgets: Arc<Budgets>,
    /// The kernel offload the workers install their routes into.
    pub offload: Arc<Offload>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            preauth_bytes_per_sec: super::preauth::DEFAULT_BYTES_PER_SEC,
            allocation_rate: 0,
            workers: 1,
            budgets: Budgets::unlimited(),
            offload: Offload::new(),
        }
    }
}

/// The runtime's handle on a worker.
pub struct Handle {
    pub waker: Arc<Waker>,
    pub stats: Arc<StatsSlot>,
}

impl Worker {
    /// Bind this worker's sockets for every listener in `snap`.
    pub fn new(
        index: usize,
        snap: &Snapshot,
        cache: SnapshotCache,
        server: Server,
        control: Receiver<Control>,
        reservations: Arc<Reservations>,
        limits: Limits,
    ) -> io::Result<(Worker, Handle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stats = StatsSlot::new();
        let eps = Endpoints {
            registry: poll.registry().try_clone()?,
            slab: Slab::default(),
            ring: None,
            rearm: Vec::with_capacity(64),
            reservations,
            budgets: limits.budgets.clone(),
            peers: FxHashMap::default(),
            doomed: Vec::new(),
            conns: 0,
            sessions: 0,
            offload: limits.offload.clone(),
            offloaded: Vec::new(),
        };
        let mut server = server;
        server.set_send_rate(limits.allocation_rate);
        let mut worker = Worker {
            index,
            poll,
            eps,
            core: Core {
                server,
                preauth: PreauthBudget::new(
                    limits.preauth_bytes_per_sec,
                    limits.workers,
                    Instant::now(),
                ),
                scratch: vec![0; SEND_SLOT],
            },
            cache,
            control,
            stats: stats.clone(),
            rx: RecvBatch::new(LISTENER_BATCH, HEADROOM + MAX_DATAGRAM + 1, HEADROOM),
            relay_rx: RecvBatch::new(RELAY_BATCH, HEADROOM + MAX_DATAGRAM + 1, HEADROOM),
            dtls_timers: DtlsTimers::default(),
            want_ring: !RelayRing::disabled_by_env(),
        };
        for l in &snap.listeners {
            match worker.bind(l) {
                // A bad certificate stops this listener only; the rest runs.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => worker.report(&e),
                other => other?,
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
                && !self.eps.ring.as_mut().is_some_and(|r| r.has_completions());
            let timeout = if idle {
                let now = Instant::now();
                let next = self
                    .core
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
            let now = super::core::now();
            ready.clear();
            ready.append(&mut pending);
            for ev in events.iter() {
                if !ready.contains(&ev.token()) {
                    ready.push(ev.token());
                }
            }
            for &token in &ready {
                let more = match token {
                    WAKER => {
                        if self.drain_control() {
                            return;
                        }
                        false
                    }
                    RING => false,
                    Token(key) => self.service(now, &snap, key),
                };
                if more {
                    pending.push(token);
                }
            }
            ring_more = self.drain_ring(now, &snap);
            self.flush();
            self.core.server.handle_timeout(now, &mut self.eps);
            self.after_core();
            self.run_dtls_timers(now);
            if now.mono >= next_sweep {
                self.eps.reservations.sweep();
                self.expire(now);
                self.core.server.offload_poll(now, &snap, &mut self.eps);
                next_sweep = now.mono + Duration::from_secs(1);
            }
            if now.mono >= next_publish {
                self.publish(&snap);
                next_publish = now.mono + PUBLISH_EVERY;
            }
            // Re-armed receives, cancels of closed relays.
            self.eps.submit();
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
        self.eps.ring = Some(ring);
    }

    /// Returns true when the worker must stop.
    fn drain_control(&mut self) -> bool {
        loop {
            match self.control.try_recv() {
                Ok(Control::Apply(plan)) => self.apply(&plan),
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => {
                    let now = super::now();
                    self.core
                        .server
                        .close_all(DeleteReason::Shutdown, now, &mut self.eps);
                    return true;
                }
                Err(TryRecvError::Empty) => return false,
                Ok(Control::Sessions(reply)) => {
                    let _ = reply.send(self.core.server.sessions(super::now()));
                }
                Ok(Control::Kill(selector, reply)) => {
                    let killed = self
                        .core
                        .server
                        .kill(super::now(), &selector, &mut self.eps);
                    self.after_core();
                    let _ = reply.send(killed);
                }
            }
        }
    }

    /// An event on endpoint `key`; true if it has more to do right away.
    fn service(&mut self, now: Now, snap: &Snapshot, key: usize) -> bool {
        let more = match self.eps.slab.get(key) {
            None => false,
            Some(Endpoint::UdpListener(_)) => {
                let Some(Endpoint::UdpListener(mut l)) = self.eps.slab.take(key) else {
                    return false;
                };
                let more = l.drain(key, now, snap, &mut self.core, &mut self.eps, &mut self.rx);
                self.eps.slab.put_back(key, Endpoint::UdpListener(l));
                more
            }
            Some(Endpoint::StreamListener(_)) => self.accept(now, key),
            Some(Endpoint::Conn(_)) => self.service_conn(now, snap, key),
            Some(Endpoint::DtlsListener(_)) => self.drain_dtls(now, snap, key),
            Some(Endpoint::DtlsSession(_)) => false,
            Some(Endpoint::Relay(_)) => self.drain_relay(now, snap, key),
            Some(Endpoint::TcpRelay(_)) => self.accept_peers(now, snap, key),
            Some(Endpoint::PeerConn(_)) => self.service_peer(now, key),
        };
        self.after_core();
        more
    }

    /// Close the connections that must go, now that the core call that doomed them has
    /// returned.
    fn after_core(&mut self) {
        while let Some((key, reason)) = self.eps.doomed.pop() {
            self.close_conn(key, reason);
        }
    }

    // ----- listeners ---------------------------------------------------------------------

    /// Apply the reconciler's listener changes for a new snapshot.
    fn apply(&mut self, plan: &Plan) {
        let snap = &plan.snap;
        for change in &plan.changes {
            match change {
                ListenerChange::Stop(name) => self.close_listener(name),
                ListenerChange::Restart(name) => {
                    self.close_listener(name);
                    self.bind_named(snap, name);
                }
                ListenerChange::Start(name) => {
                    if !self.is_bound(name) {
                        self.bind_named(snap, name);
                    }
                }
                ListenerChange::Certificate(name) => {
                    let Some((_, l)) = snap.listener(name) else {
                        continue;
                    };
                    for (_, e) in self.eps.slab.iter_mut() {
                        match e {
                            Endpoint::StreamListener(s) if s.name == *name => {
                                s.refresh_cert(l, self.index)
                            }
                            Endpoint::DtlsListener(d) if d.name == *name => {
                                d.refresh_cert(l, self.index)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        // Kernel routes the new config no longer admits go; those it allows come.
        self.core
            .server
            .offload_recheck(super::now(), snap, &mut self.eps);
        // RFC 6062 pipes whose peer the new config no longer admits are closed.
        let closed = self
            .core
            .server
            .recheck_peer_connections(snap, &mut self.eps);
        if closed > 0 {
            info!(target: "turn", "worker {}: closed {closed} TCP peer connection(s) the new config no longer admits", self.index);
        }
        self.after_core();
    }

    fn is_bound(&self, name: &str) -> bool {
        self.eps
            .slab
            .iter()
            .any(|(_, e)| e.listener_name() == Some(name))
    }

    fn bind_named(&mut self, snap: &Snapshot, name: &str) {
        let Some((_, l)) = snap.listener(name) else {
            return;
        };
        // The runtime checked the ports before publishing the snapshot; losing a race for
        // one, or a bad certificate, is logged and the other listeners go on.
        if let Err(e) = self.bind(l) {
            self.report(&e);
        }
    }

    /// Bind this worker's sockets for a listener.
    fn bind(&mut self, l: &Listener) -> io::Result<()> {
        let eps = &mut self.eps;
        match l.protocol {
            ListenerProtocol::TurnUdp => {
                for s in UdpListener::bind(l)? {
                    eps.insert_registered(Endpoint::UdpListener(s), |e, r, k| match e {
                        Endpoint::UdpListener(s) => s.register(r, k),
                        _ => Ok(()),
                    })?;
                }
            }
            ListenerProtocol::TurnTcp | ListenerProtocol::TurnTls => {
                for s in StreamListener::bind(l)? {
                    eps.insert_registered(Endpoint::StreamListener(s), |e, r, k| match e {
                        Endpoint::StreamListener(s) => s.register(r, k),
                        _ => Ok(()),
                    })?;
                }
            }
            ListenerProtocol::TurnDtls => {
                for s in DtlsListener::bind(l)? {
                    eps.insert_registered(Endpoint::DtlsListener(s), |e, r, k| match e {
                        Endpoint::DtlsListener(s) => s.register(r, k),
                        _ => Ok(()),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Close every socket of listener `name`, with the connections, sessions and
    /// allocations on them.
    fn close_listener(&mut self, name: &str) {
        let keys: Vec<usize> = self
            .eps
            .slab
            .iter()
            .filter(|(_, e)| e.listener_name() == Some(name))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let Some(ep) = self.eps.slab.remove(key) else {
                continue;
            };
            match ep {
                Endpoint::UdpListener(mut l) => l.deregister(&self.eps.registry),
                Endpoint::StreamListener(mut l) => {
                    l.deregister(&self.eps.registry);
                    let conns: Vec<usize> = self
                        .eps
                        .slab
                        .iter()
                        .filter(|(_, e)| matches!(e, Endpoint::Conn(c) if c.listener == key))
                        .map(|(k, _)| k)
                        .collect();
                    for c in conns {
                        self.close_conn(c, CloseReason::ListenerStopped);
                    }
                }
                Endpoint::DtlsListener(mut l) => {
                    l.deregister(&self.eps.registry);
                    for (_, s) in l.sessions.drain() {
                        self.close_session(s);
                    }
                }
                _ => {}
            }
            self.core.server.close_transport(
                TransportId(key as u32),
                DeleteReason::ListenerClosed,
                super::now(),
                &mut self.eps,
            );
        }
        self.after_core();
        info!(target: "listener", "worker {}: listener {name} closed", self.index);
    }

    /// Log a listener that cannot start (once, by worker 0, to avoid duplicates).
    fn report(&self, e: &io::Error) {
        if self.index == 0 {
            warn!(target: "listener", "{e}");
        }
    }

    // ----- stream connections -------------------------------------------------------------

    /// Accept pending connections on stream listener `key`; true if more may wait.
    fn accept(&mut self, now: Now, key: usize) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Endpoint::StreamListener(l)) = self.eps.slab.get_mut(key) else {
                return false;
            };
            let conn = match l.accept(now, key) {
                Accepted::Conn(c) => c,
                Accepted::Refused => continue,
                Accepted::None => return false,
            };
            // Dropping a refused connection closes it.
            if self.eps.conns >= MAX_CONNS || !self.admit_unauth(conn.client.ip(), key) {
                continue;
            }
            let ip = conn.client.ip();
            let inserted = self
                .eps
                .insert_registered(Endpoint::Conn(conn), |e, r, k| match e {
                    Endpoint::Conn(c) => c.register(r, k),
                    _ => Ok(()),
                });
            match inserted {
                Ok(_) => self.eps.conns += 1,
                Err(_) => self.eps.budgets.give_unauth(ip),
            }
        }
        true
    }

    /// Room for one more unauthenticated connection from `ip` on stream listener
    /// `listener`: at the total bound, this worker's oldest idle unauthenticated connection
    /// makes way; at the per-address bound the new one is refused (counted).
    fn admit_unauth(&mut self, ip: std::net::IpAddr, listener: usize) -> bool {
        for _ in 0..2 {
            match self.eps.budgets.take_unauth(ip) {
                Ok(()) => return true,
                Err(Refusal::PerAddress) => break,
                Err(Refusal::Full) => {
                    let oldest = self
                        .eps
                        .slab
                        .iter()
                        .filter_map(|(k, e)| match e {
                            Endpoint::Conn(c) if !c.authenticated => Some((c.deadline, k)),
                            _ => None,
                        })
                        .min()
                        .map(|(_, k)| k);
                    match oldest {
                        Some(k) => self.close_conn(k, CloseReason::Evicted),
                        None => break,
                    }
                }
            }
        }
        if let Some(l) = self
            .eps
            .slab
            .get_mut(listener)
            .and_then(Endpoint::counters_mut)
        {
            l.refused += 1;
        }
        if let Some(n) = CONN_REFUSALS.admit(super::now().unix) {
            info!(
                target: "listener",
                "connection from {ip} refused: unauthenticated connections at their bound{}",
                Suppressed(n)
            );
        }
        false
    }

    /// A connection that got an allocation leaves the unauthenticated pool.
    fn promote(&mut self, key: usize, c: &mut Conn) {
        if c.authenticated {
            return;
        }
        let five = FiveTuple {
            transport: TransportId(key as u32),
            client: c.client,
        };
        if self.core.server.has_allocation(five) {
            c.authenticated = true;
            self.eps.budgets.give_unauth(c.client.ip());
            c.counted_fd = self.eps.budgets.take_alloc_fd();
        }
    }

    /// An event on client connection `key`; true when its pipe has more to move.
    fn service_conn(&mut self, now: Now, snap: &Snapshot, key: usize) -> bool {
        let Some(Endpoint::Conn(mut c)) = self.eps.slab.take(key) else {
            return false;
        };
        if let Some(conn) = c.pipe {
            self.eps.slab.put_back(key, Endpoint::Conn(c));
            return self.pump_conn(key, conn);
        }
        let registry = self.poll.registry();
        let event = c.service(key, now, snap, &mut self.core, &mut self.eps, registry);
        self.promote(key, &mut c);
        self.eps.slab.put_back(key, Endpoint::Conn(c));
        match event {
            ConnEvent::Keep => false,
            ConnEvent::More => true,
            ConnEvent::Close(reason) => {
                self.close_conn(key, reason);
                false
            }
            ConnEvent::Bound { conn, early } => {
                let Some(&peer) = self.eps.peers.get(&conn.0) else {
                    self.close_conn(key, CloseReason::PipeEnded);
                    return false;
                };
                if let Some(Endpoint::PeerConn(p)) = self.eps.slab.get_mut(peer) {
                    p.bind(key, &early);
                }
                // Move the early bytes and what the peer sent meanwhile.
                self.pump_conn(key, conn)
            }
        }
    }

    /// A piped client connection had an event; true if the pipe has more to move.
    fn pump_conn(&mut self, key: usize, conn: ConnectionId) -> bool {
        match self.eps.peers.get(&conn.0) {
            Some(&peer) => self.pump(peer),
            None => {
                self.close_conn(key, CloseReason::PipeEnded);
                false
            }
        }
    }

    /// Move bytes both ways between peer connection `peer` and its client connection;
    /// close both when one side ends.
    fn pump(&mut self, peer: usize) -> bool {
        let Some(Endpoint::PeerConn(mut p)) = self.eps.slab.take(peer) else {
            return false;
        };
        let Some(client) = p.client else {
            self.eps.slab.put_back(peer, Endpoint::PeerConn(p));
            return false;
        };
        let result = match self.eps.slab.get_mut(client) {
            Some(Endpoint::Conn(c)) => p.pump(c as &mut dyn ByteStream),
            _ => Pumped::Ended,
        };
        let (up, down) = p.take_moved();
        if up.0 + down.0 > 0 {
            self.core.server.count_pipe(p.conn, up, down);
        }
        if result != Pumped::Ended {
            self.eps.slab.put_back(peer, Endpoint::PeerConn(p));
            return result == Pumped::More;
        }
        let c = match self.eps.slab.get_mut(client) {
            Some(Endpoint::Conn(c)) => Some(c as &mut dyn ByteStream),
            _ => None,
        };
        p.finish(c);
        p.deregister(&self.eps.registry);
        self.eps.slab.release(peer);
        self.eps.budgets.give_alloc_fd();
        self.eps.peers.remove(&p.conn.0);
        self.core.server.close_peer_connection(p.conn);
        self.close_conn(client, CloseReason::PipeEnded);
        false
    }

    /// Close client connection `key`, the allocation on it and its pipe; counted under
    /// `reason`, and logged (rate-limited) when the reason is abnormal.
    fn close_conn(&mut self, key: usize, reason: CloseReason) {
        let Some(Endpoint::Conn(c)) = self.eps.slab.remove(key) else {
            return;
        };
        self.eps.conns -= 1;
        if reason.is_abnormal() {
            if let Some(n) = CONN_CLOSES.admit(super::now().unix) {
                info!(
                    target: "listener",
                    "listener {}: connection from {} closed: {}{}",
                    c.listener_name(),
                    c.client,
                    reason.as_str(),
                    Suppressed(n)
                );
            }
        }
        let (listener, pipe) = (c.listener, c.pipe);
        if !c.authenticated {
            self.eps.budgets.give_unauth(c.client.ip());
        } else if c.counted_fd {
            self.eps.budgets.give_alloc_fd();
        }
        let counters = c.close(self.poll.registry(), reason);
        if let Some(l) = self
            .eps
            .slab
            .get_mut(listener)
            .and_then(Endpoint::counters_mut)
        {
            *l += &counters;
        }
        if let Some(conn) = pipe {
            if let Some(peer) = self.eps.peers.remove(&conn.0) {
                if let Some(Endpoint::PeerConn(mut p)) = self.eps.slab.remove(peer) {
                    p.deregister(&self.eps.registry);
                    self.eps.budgets.give_alloc_fd();
                }
            }
            self.core.server.close_peer_connection(conn);
        }
        self.core.server.close_transport(
            TransportId(key as u32),
            DeleteReason::ConnectionClosed,
            super::now(),
            &mut self.eps,
        );
    }

    // ----- DTLS -------------------------------------------------------------------------

    /// Datagrams on DTLS listener socket `key`; true if more may wait.
    fn drain_dtls(&mut self, now: Now, snap: &Snapshot, key: usize) -> bool {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..DTLS_BUDGET {
            let Some(Endpoint::DtlsListener(l)) = self.eps.slab.get_mut(key) else {
                return false;
            };
            let Some((n, client)) = l.recv(&mut buf) else {
                return false;
            };
            let session = match l.sessions.get(&client) {
                Some(&s) => s,
                None => {
                    let Some(s) = l.listen(now, key, client, &buf[..n]) else {
                        continue;
                    };
                    let Some(s) = self.new_session(key, client, s) else {
                        continue;
                    };
                    s
                }
            };
            let Some(Endpoint::DtlsSession(mut s)) = self.eps.slab.take(session) else {
                continue;
            };
            s.input(&buf[..n]);
            let keep = s.pump(
                session,
                now,
                snap,
                &mut self.core,
                &mut self.eps,
                &mut self.dtls_timers,
            );
            self.eps.slab.put_back(session, Endpoint::DtlsSession(s));
            if !keep {
                self.close_session(session);
            }
            self.after_core();
        }
        true
    }

    /// A session past the cookie exchange joins the slab: at the bound on half-open
    /// sessions the oldest gives way (getting here takes a round trip from the client's
    /// address, so spoofed sources cannot fill the table; a real client, which finishes
    /// within a few round trips, gets through).
    fn new_session(
        &mut self,
        listener: usize,
        client: SocketAddr,
        s: DtlsSession,
    ) -> Option<usize> {
        if self.eps.sessions >= MAX_SESSIONS {
            tracing::debug!(target: "listener", "DTLS: no session for {client}");
            return None;
        }
        if self.dtls_timers.handshaking.len() >= MAX_HALF_OPEN {
            let oldest = self
                .dtls_timers
                .handshaking
                .iter()
                .filter_map(|&k| match self.eps.slab.get(k) {
                    Some(Endpoint::DtlsSession(s)) => Some((s.deadline, k)),
                    _ => None,
                })
                .min()
                .map(|(_, k)| k)?;
            self.close_session(oldest);
        }
        let key = self.eps.insert(Endpoint::DtlsSession(s));
        self.eps.sessions += 1;
        if let Some(Endpoint::DtlsListener(l)) = self.eps.slab.get_mut(listener) {
            l.sessions.insert(client, key);
        }
        self.dtls_timers.handshaking.push(key);
        Some(key)
    }

    fn close_session(&mut self, key: usize) {
        let Some(Endpoint::DtlsSession(s)) = self.eps.slab.remove(key) else {
            return;
        };
        self.eps.sessions -= 1;
        if !s.established {
            self.dtls_timers.forget(key);
        }
        let (listener, client) = (s.listener, s.client);
        let counters = s.close();
        if let Some(Endpoint::DtlsListener(l)) = self.eps.slab.get_mut(listener) {
            if l.sessions.get(&client) == Some(&key) {
                l.sessions.remove(&client);
            }
            l.counters += &counters;
        }
        self.core.server.close_transport(
            TransportId(key as u32),
            DeleteReason::ConnectionClosed,
            super::now(),
            &mut self.eps,
        );
    }

    /// Resend the lost flights of handshakes whose DTLS retransmission timer expired, once
    /// the earliest of the timers is due (one comparison until then).
    fn run_dtls_timers(&mut self, now: Now) {
        if self.dtls_timers.next.is_some_and(|t| t <= now.mono) {
            self.retransmit_flights(now);
        }
    }

    /// Run the retransmission timer of every session in the handshake whose timer expired,
    /// and find the next expiry.
    fn retransmit_flights(&mut self, now: Now) {
        let mut next: Option<Instant> = None;
        let mut failed = Vec::new();
        for &key in &self.dtls_timers.handshaking {
            let Some(Endpoint::DtlsSession(s)) = self.eps.slab.get_mut(key) else {
                continue;
            };
            if !s.retransmit(now) {
                failed.push(key);
                continue;
            }
            if let Some(t) = s.timer() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        self.dtls_timers.next = next;
        for key in failed {
            self.close_session(key);
        }
    }

    // ----- relays -----------------------------------------------------------------------

    /// One batch from a relay socket on epoll; true if more may wait.
    fn drain_relay(&mut self, now: Now, snap: &Snapshot, key: usize) -> bool {
        let Some(Endpoint::Relay(s)) = self.eps.slab.get(key) else {
            return false;
        };
        let fd = s.socket.as_raw_fd();
        let Ok(n) = self.relay_rx.recv(fd, self.relay_rx.capacity()) else {
            return false;
        };
        let relay = RelayId(key as u32);
        for i in 0..n {
            let Some((slot, len, from)) = self.relay_rx.get(i) else {
                continue;
            };
            if len == 0 {
                continue;
            }
            let peer = canonical_client(from);
            let scratch = &mut self.core.scratch;
            if let Ok(to) = self
                .core
                .server
                .handle_peer(now, snap, relay, peer, slot, len, scratch)
            {
                self.eps.deliver(to);
            }
        }
        n == self.relay_rx.capacity()
    }

    /// Up to [`RING_BUDGET`] completions of the relay ring; true if more may wait.
    fn drain_ring(&mut self, now: Now, snap: &Snapshot) -> bool {
        let Endpoints {
            ring,
            slab,
            rearm,
            registry,
            doomed,
            ..
        } = &mut self.eps;
        let Some(r) = ring.as_mut() else {
            return false;
        };
        let Core {
            server, scratch, ..
        } = &mut self.core;
        let mut more = true;
        for _ in 0..RING_BUDGET {
            let got = r.next(|c| match c {
                Completion::Datagram {
                    slot,
                    generation,
                    from,
                    buf,
                    len,
                } => {
                    if !on_ring(slab, slot, generation) {
                        return;
                    }
                    let peer = canonical_client(from);
                    let Some(frame) = buf.get_mut(uring::PAYLOAD_AT - HEADROOM..) else {
                        return;
                    };
                    let relay = RelayId(slot);
                    if let Ok(to) = server.handle_peer(now, snap, relay, peer, frame, len, scratch)
                    {
                        deliver_to(slab, registry, doomed, to);
                    }
                }
                Completion::Stopped {
                    slot,
                    generation,
                    error,
                } if on_ring(slab, slot, generation) => rearm.push((slot, generation, error)),
                _ => {}
            });
            if !got {
                more = false;
                break;
            }
        }
        let mut pending = std::mem::take(&mut self.eps.rearm);
        for (slot, generation, error) in pending.drain(..) {
            self.restart_receive(slot, generation, error);
        }
        self.eps.rearm = pending;
        more
    }

    /// A relay socket's multishot receive ended: start it again, or move the socket to
    /// epoll if the ring refuses it.
    fn restart_receive(&mut self, slot: u32, generation: u32, error: i32) {
        let Endpoints {
            ring,
            slab,
            registry,
            ..
        } = &mut self.eps;
        let Some(Endpoint::Relay(s)) = slab.get_mut(slot as usize) else {
            return;
        };
        let fd = s.socket.as_raw_fd();
        // ENOBUFS: every buffer was in use; they are back now. 0: the kernel ended it
        // (e.g. a full completion queue). Anything else: this socket leaves the ring.
        let transient = error == 0 || error == -libc::ENOBUFS;
        let armed = transient
            && ring
                .as_mut()
                .is_some_and(|r| r.arm(fd, slot, generation).is_ok());
        if !armed {
            s.on_ring = false;
            let _ = s.register(registry, slot as usize);
        }
    }

    /// Accept peer connections on TCP relay `key`; true if more may wait.
    fn accept_peers(&mut self, now: Now, snap: &Snapshot, key: usize) -> bool {
        for _ in 0..tcp_relay::ACCEPT_BUDGET {
            let Some(Endpoint::TcpRelay(t)) = self.eps.slab.get_mut(key) else {
                return false;
            };
            let Some((stream, peer)) = t.accept() else {
                return false;
            };
            // Refused peers are closed at once (dropping the stream).
            let relay = RelayId(key as u32);
            let Ok(conn) =
                self.core
                    .server
                    .handle_peer_connection(now, snap, relay, peer, &mut self.eps)
            else {
                tracing::debug!(target: "turn", "refused peer connection from {peer}");
                continue;
            };
            if !self.eps.budgets.take_alloc_fd() {
                self.core.server.close_peer_connection(conn);
                continue;
            }
            let inserted = self.eps.insert_registered(
                Endpoint::PeerConn(PeerConn::new(stream, conn, false)),
                |e, r, k| match e {
                    Endpoint::PeerConn(p) => p.register(r, k),
                    _ => Ok(()),
                },
            );
            match inserted {
                Ok(p) => {
                    self.eps.peers.insert(conn.0, p);
                }
                Err(_) => {
                    self.eps.budgets.give_alloc_fd();
                    self.core.server.close_peer_connection(conn);
                }
            }
            self.after_core();
        }
        true
    }

    /// An event on peer connection `key`; true if its pipe has more to move.
    fn service_peer(&mut self, now: Now, key: usize) -> bool {
        let Some(Endpoint::PeerConn(p)) = self.eps.slab.get_mut(key) else {
            return false;
        };
        if !p.connecting {
            // Unbound: the kernel buffers what the peer sends until ConnectionBind.
            return p.client.is_some() && self.pump(key);
        }
        let Some(connected) = p.connect_outcome() else {
            return false; // still connecting
        };
        let conn = p.conn;
        let answer =
            self.core
                .server
                .handle_connect_result(now, conn, connected, &mut self.core.scratch);
        if let Some((t, n)) = answer {
            self.eps.message_to_client(t, &self.core.scratch[..n]);
        }
        if !connected || answer.is_none() {
            self.eps.close_peer(conn);
            self.core.server.close_peer_connection(conn);
        }
        false
    }

    // ----- housekeeping -------------------------------------------------------------------

    /// Send every queued datagram of every UDP listener socket.
    fn flush(&mut self) {
        for (_, e) in self.eps.slab.iter_mut() {
            if let Endpoint::UdpListener(l) = e {
                l.flush();
            }
        }
    }

    /// Once a second: close idle connections and sessions that hold no allocation, time
    /// out handshakes, and run the DTLS timers as a backstop.
    fn expire(&mut self, now: Now) {
        self.retransmit_flights(now);
        self.core.preauth.sweep(now.mono);
        let server = &self.core.server;
        let expired: Vec<(usize, bool)> = self
            .eps
            .slab
            .iter()
            .filter_map(|(key, e)| {
                let (dead, client, session) = match e {
                    Endpoint::Conn(c) => (c.idle(now), c.client, false),
                    Endpoint::DtlsSession(s) => (s.deadline <= now.mono, s.client, true),
                    _ => return None,
                };
                let five = FiveTuple {
                    transport: TransportId(key as u32),
                    client,
                };
                let established = match e {
                    Endpoint::DtlsSession(s) => s.established,
                    _ => true,
                };
                (dead && !(established && server.has_allocation(five))).then_some((key, session))
            })
            .collect();
        for (key, session) in expired {
            if session {
                self.close_session(key);
            } else {
                self.close_conn(key, CloseReason::Idle);
            }
        }
        self.after_core();
    }

    /// Copy the counters into the shared slot: every endpoint's, summed by listener name.
    fn publish(&mut self, snap: &Snapshot) {
        let Worker {
            eps, core, stats, ..
        } = self;
        stats.publish(|r| {
            r.allocations = core.server.allocation_count() as u64;
            r.core = *core.server.stats();
            r.generation = snap.generation;
            r.io_uring = eps.ring.is_some();
            // What the kernel relayed counts for the listener socket it bypassed: the
            // ChannelData both ways, header included.
            for (key, d) in eps.offloaded.drain(..) {
                if let Some(Endpoint::UdpListener(l)) = eps.slab.get_mut(key as usize) {
                    let hdr = crate::stun::CHANNEL_HEADER_LEN as u64;
                    l.counters.rx_packets += d.to_peer_packets;
                    l.counters.rx_bytes += d.to_peer_bytes + hdr * d.to_peer_packets;
                    l.counters.tx_packets += d.to_client_packets;
                    l.counters.tx_bytes += d.to_client_bytes + hdr * d.to_client_packets;
                }
            }
            r.listeners.clear();
            for (_, e) in eps.slab.iter() {
                if let Some(c) = e.counters() {
                    merge(&mut r.listeners, c);
                }
            }
            r.clusters.clear();
            core.server.for_each_cluster(|name, t| {
                r.clusters.push(ClusterCounters {
                    name: name.clone(),
                    traffic: t,
                })
            });
        });
    }
}
