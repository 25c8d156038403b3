//! The allocations and their control transactions: Allocate (probe, then authenticated),
//! ChannelBind or CreatePermission, and the Refresh that deallocates at exit.
//!
//! Transactions are pipelined: at most `window` are outstanding at once across all
//! allocations, each retransmitted every [`RTO`] up to [`MAX_TRIES`] sends. Since the RTO is
//! constant, retransmission deadlines are queued in send order and the timer queue is a
//! plain FIFO: checking it costs nothing per allocation.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use stunnerd::snapshot::long_term_key;
use stunnerd::stun::{Class, Message, TransactionId, attr};

use crate::net::{Handler, Net};
use crate::proto::{self, Auth, Mode, Step};

pub(crate) const RTO: Duration = Duration::from_millis(500);
pub(crate) const MAX_TRIES: u8 = 5;
/// 438 Stale Nonce (or a 401 carrying a fresh nonce) retries per step: a server that keeps
/// rejecting fresh nonces must not keep us looping.
const MAX_NONCE_RETRIES: u8 = 3;
/// 437 Allocation Mismatch on an Allocate means the server still has state for this
/// 5-tuple (coturn keeps it a while after a deallocation, and a new run can draw the same
/// ephemeral port): the client moves to a fresh socket and starts over, a bounded number
/// of times (RFC 8656 section 7.2 suggests a different 5-tuple).
const MAX_REOPENS: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a window slot to send `step`.
    Queued,
    /// `step` is outstanding.
    InFlight,
    /// The last step succeeded; nothing outstanding.
    Ready,
    /// Client-to-client mode: allocated, waiting for the partner's relayed address.
    Parked,
    /// Gave up (error response or no response).
    Failed,
}

pub(crate) struct Client {
    pub sock: UdpSocket,
    fd: RawFd,
    pub step: Step,
    pub phase: Phase,
    tid: TransactionId,
    tries: u8,
    nonce_retries: u8,
    reopens: u8,
    /// Counts sends; a timer entry is live only if it carries the current value.
    sends: u32,
    nonce: Vec<u8>,
    /// The relayed address, once allocated.
    pub relay: Option<SocketAddr>,
    /// Where this allocation's data goes: the echo peer, or the partner's relayed address.
    pub target: SocketAddr,
    /// Load phase: fractional messages owed (pacing), and the next sequence number.
    pub credit: f64,
    pub seq: u32,
    /// Highest sequence number received back (reordering/duplicate count).
    pub rx_seq: Option<u32>,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub allocated: usize,
    pub bound: usize,
    pub failed: usize,
    pub deallocated: usize,
    pub last_error: Option<(u16, String)>,
    /// Receive errors on client sockets (ICMP errors: nothing listening, say).
    pub socket_errors: u64,
    pub last_socket_error: Option<String>,
    pub first_request: Option<Instant>,
    pub last_alloc: Option<Instant>,
}

impl Stats {
    /// Authenticated Allocate successes per second, from the first request to the last
    /// success.
    pub(crate) fn setup_rate(&self) -> f64 {
        match (self.first_request, self.last_alloc) {
            (Some(a), Some(b)) if b > a => self.allocated as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

pub(crate) struct Engine {
    pub clients: Vec<Client>,
    pub mode: Mode,
    pub server: SocketAddr,
    /// Client-to-client: allocations 2k and 2k+1 send to each other's relayed address.
    pub c2c: bool,
    username: String,
    password: String,
    realm: Vec<u8>,
    key: [u8; 16],
    window: usize,
    queue: VecDeque<u32>,
    timers: VecDeque<(Instant, u32, u32)>,
    outstanding: usize,
    scratch: Vec<u8>,
    /// Allocations waiting for a fresh socket (after a 437), and where sockets come from.
    reopen: Vec<u32>,
    local: Local,
    cursor: Cursor,
    pub stats: Stats,
}

impl Engine {
    pub(crate) fn new(
        net: &Net,
        count: usize,
        local: Local,
        server: SocketAddr,
        peer: Option<SocketAddr>,
        mode: Mode,
        username: String,
        password: String,
        window: usize,
    ) -> Result<Engine, String> {
        let mut clients = Vec::with_capacity(count);
        let mut cursor = Cursor {
            ip: 0,
            port: local.ports.map_or(0, |(lo, _)| u32::from(lo)),
            opened: 0,
        };
        for i in 0..count {
            let mut sock = open_client(&local, &mut cursor, server).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EMFILE) {
                    " (each allocation needs one file descriptor: raise `ulimit -n`)"
                } else if e.kind() == io::ErrorKind::AddrInUse
                    || e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                {
                    " (out of local ports: try --bind-ip 127.0.0.2,127.0.0.3 \
                     --client-ports 2000-31999)"
                } else {
                    ""
                };
                format!("client socket {} of {count}: {e}{hint}", i + 1)
            })?;
            net.register(&mut sock, i)
                .map_err(|e| format!("registering client socket {}: {e}", i + 1))?;
            let fd = sock.as_raw_fd();
            clients.push(Client {
                sock,
                fd,
                step: Step::AllocProbe,
                phase: Phase::Ready,
                tid: [0; 12],
                tries: 0,
                nonce_retries: 0,
                reopens: 0,
                sends: 0,
                nonce: Vec::new(),
                relay: None,
                // Client-to-client mode fills it in once the partner has allocated.
                target: peer.unwrap_or(server),
                // Stagger the pacing phase, so that low rates do not send in lockstep.
                credit: i as f64 / count.max(1) as f64,
                seq: 0,
                rx_seq: None,
            });
        }
        Ok(Engine {
            clients,
            mode,
            server,
            c2c: peer.is_none(),
            username,
            password,
            realm: Vec::new(),
            key: [0; 16],
            window: window.max(1),
            queue: VecDeque::with_capacity(count),
            timers: VecDeque::new(),
            outstanding: 0,
            scratch: vec![0; 1500],
            reopen: Vec::new(),
            local,
            cursor,
            stats: Stats::default(),
        })
    }

    /// Queue every allocation's first Allocate.
    pub(crate) fn start_setup(&mut self) {
        for (i, c) in self.clients.iter_mut().enumerate() {
            c.step = Step::AllocProbe;
            c.phase = Phase::Queued;
            self.queue.push_back(i as u32);
        }
    }

    /// Queue a deallocation (Refresh, LIFETIME 0) for every allocation that exists.
    pub(crate) fn start_dealloc(&mut self) {
        for (i, c) in self.clients.iter_mut().enumerate() {
            if c.relay.is_some() && c.phase != Phase::InFlight {
                c.step = Step::Dealloc;
                c.phase = Phase::Queued;
                c.nonce_retries = 0;
                self.queue.push_back(i as u32);
            }
        }
    }

    /// No transaction queued or outstanding.
    pub(crate) fn settled(&self) -> bool {
        self.queue.is_empty() && self.outstanding == 0 && self.reopen.is_empty()
    }

    /// Give the allocations that met a 437 fresh sockets and start them over. The new
    /// socket is opened before the old one closes, so it cannot get the same port back.
    fn reopen_sockets(&mut self, net: &Net) {
        let list = std::mem::take(&mut self.reopen);
        for i in list {
            let i = i as usize;
            let opened = open_client(&self.local, &mut self.cursor, self.server)
                .and_then(|mut s| net.register(&mut s, i).map(|()| s));
            match opened {
                Ok(sock) => {
                    let c = &mut self.clients[i];
                    c.fd = sock.as_raw_fd();
                    // Dropping the old socket closes it, which also removes it from epoll.
                    drop(std::mem::replace(&mut c.sock, sock));
                    c.reopens += 1;
                    c.nonce.clear();
                    c.step = Step::AllocProbe;
                    c.phase = Phase::Queued;
                    self.queue.push_front(i as u32);
                }
                Err(e) => self.fail(i, 0, format!("reopening client socket after 437: {e}")),
            }
        }
    }

    /// The next retransmission deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.front().map(|t| t.0)
    }

    /// Start queued transactions while the window has room.
    pub(crate) fn pump(&mut self, now: Instant) {
        while self.outstanding < self.window {
            let Some(i) = self.queue.pop_front() else {
                break;
            };
            let i = i as usize;
            if self.clients[i].phase != Phase::Queued {
                continue;
            }
            let c = &mut self.clients[i];
            c.tid = rand::random();
            c.tries = 0;
            c.phase = Phase::InFlight;
            self.outstanding += 1;
            self.stats.first_request.get_or_insert(now);
            self.transmit(i, now);
        }
    }

    /// Retransmit (or give up on) transactions whose deadline has passed.
    pub(crate) fn on_timers(&mut self, now: Instant) {
        while let Some(&(deadline, i, gen_)) = self.timers.front() {
            if deadline > now {
                break;
            }
            self.timers.pop_front();
            let i = i as usize;
            let c = &self.clients[i];
            if c.phase != Phase::InFlight || c.sends != gen_ {
                continue;
            }
            if c.tries >= MAX_TRIES {
                let what = format!(
                    "no response to {} after {MAX_TRIES} tries",
                    c.step.describe(self.mode)
                );
                self.fail(i, 0, what);
            } else {
                self.transmit(i, now);
            }
        }
    }

    /// Give up on everything still queued or outstanding (the caller's deadline passed).
    pub(crate) fn abandon(&mut self, why: &str) {
        self.queue.clear();
        self.timers.clear();
        self.reopen.clear();
        for i in 0..self.clients.len() {
            if matches!(self.clients[i].phase, Phase::Queued | Phase::InFlight) {
                self.fail(i, 0, why.to_string());
            }
        }
        self.outstanding = 0;
    }

    /// Drive transactions until none is left or `limit` passes; `true` if all settled.
    pub(crate) fn run(&mut self, net: &mut Net, limit: Duration) -> io::Result<bool> {
        let start = Instant::now();
        let deadline = start + limit;
        let mut now = start;
        loop {
            self.pump(now);
            if self.settled() {
                return Ok(true);
            }
            if now >= deadline {
                return Ok(false);
            }
            // Wake for the next retransmission, but at least every 50 ms and never past
            // the overall deadline.
            let wait = self
                .next_deadline()
                .map_or(Duration::from_millis(50), |d| {
                    d.saturating_duration_since(now)
                })
                .min(Duration::from_millis(50))
                .min(deadline - now);
            net.turn(self, wait)?;
            self.reopen_sockets(net);
            now = Instant::now();
            self.on_timers(now);
        }
    }

    fn transmit(&mut self, i: usize, now: Instant) {
        let c = &mut self.clients[i];
        let auth = Auth {
            username: &self.username,
            realm: &self.realm,
            nonce: &c.nonce,
            key: &self.key,
        };
        let built = proto::build_request(
            &mut self.scratch,
            c.step,
            self.mode,
            &c.tid,
            c.target,
            Some(&auth),
        );
        c.tries += 1;
        c.sends = c.sends.wrapping_add(1);
        self.timers.push_back((now + RTO, i as u32, c.sends));
        match built {
            // A send that fails (full buffer, ICMP error) is a lost datagram: the timer
            // retransmits it.
            Ok(n) => drop(c.sock.send(&self.scratch[..n])),
            Err(e) => {
                let what = format!("cannot build {} request: {e}", c.step.describe(self.mode));
                self.fail(i, 0, what);
            }
        }
    }

    fn finish(&mut self, i: usize) {
        if self.clients[i].phase == Phase::InFlight {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
    }

    fn fail(&mut self, i: usize, code: u16, reason: String) {
        self.stats.last_error = Some((code, reason));
        self.fail_quietly(i);
        // A parked partner would wait forever: it fails too.
        let j = i ^ 1;
        if self.c2c
            && self
                .clients
                .get(j)
                .is_some_and(|c| c.phase == Phase::Parked)
        {
            self.fail_quietly(j);
        }
    }

    /// Fail without replacing the last error (which names the root cause).
    fn fail_quietly(&mut self, i: usize) {
        self.finish(i);
        self.clients[i].phase = Phase::Failed;
        self.stats.failed += 1;
    }

    /// Client-to-client: bind both allocations of a pair once both have relayed addresses.
    fn pair(&mut self, i: usize) {
        let j = i ^ 1;
        let partner = self.clients.get(j).map(|c| (c.phase, c.relay));
        match partner {
            Some((Phase::Parked, Some(rj))) => {
                let ri = self.clients[i].relay.unwrap_or(self.server);
                self.clients[i].target = rj;
                self.clients[j].target = ri;
                self.next(i, Step::Bind);
                self.clients[j].step = Step::Bind;
                self.clients[j].phase = Phase::Queued;
                self.queue.push_front(j as u32);
            }
            Some((Phase::Failed, _)) | None => self.fail_quietly(i),
            Some(_) => {
                self.finish(i);
                self.clients[i].phase = Phase::Parked;
            }
        }
    }

    /// Queue the next step of allocation `i` at the front, so started allocations
    /// complete before new ones start.
    fn next(&mut self, i: usize, step: Step) {
        self.finish(i);
        let c = &mut self.clients[i];
        c.step = step;
        c.phase = Phase::Queued;
        self.queue.push_front(i as u32);
    }

    fn learn_realm(&mut self, realm: &[u8]) {
        if realm != self.realm.as_slice() || self.realm.is_empty() {
            self.realm = realm.to_vec();
            let r = String::from_utf8_lossy(realm);
            self.key = long_term_key(&self.username, &r, &self.password);
        }
    }

    fn on_response(&mut self, i: usize, msg: &Message<'_>, now: Instant) {
        let c = &self.clients[i];
        if c.phase != Phase::InFlight
            || msg.transaction_id() != &c.tid
            || msg.method() != c.step.method(self.mode)
        {
            return; // a late answer to a retransmission, or not ours
        }
        let step = c.step;
        if msg.class() == Class::Success {
            // Verify the server's integrity when it sent one; an unauthenticated probe that
            // succeeds (a server without auth) has nothing to verify with.
            if step != Step::AllocProbe && msg.has_integrity() && !msg.verify_integrity(&self.key) {
                let what = format!(
                    "{} response fails MESSAGE-INTEGRITY",
                    step.describe(self.mode)
                );
                self.fail(i, 0, what);
                return;
            }
            match step {
                Step::AllocProbe | Step::Alloc => {
                    let tid = self.clients[i].tid;
                    let relay = msg
                        .get(attr::XOR_RELAYED_ADDRESS)
                        .and_then(|v| attr::decode_xor_addr(v, &tid).ok());
                    let Some(relay) = relay else {
                        self.fail(i, 0, "Allocate success without XOR-RELAYED-ADDRESS".into());
                        return;
                    };
                    self.clients[i].relay = Some(relay);
                    self.stats.allocated += 1;
                    self.stats.last_alloc = Some(now);
                    if self.c2c {
                        self.pair(i);
                    } else {
                        self.next(i, Step::Bind);
                    }
                }
                Step::Bind => {
                    self.stats.bound += 1;
                    self.finish(i);
                    self.clients[i].phase = Phase::Ready;
                }
                Step::Dealloc => {
                    self.stats.deallocated += 1;
                    self.finish(i);
                    let c = &mut self.clients[i];
                    c.phase = Phase::Ready;
                    c.relay = None;
                }
            }
            return;
        }
        let (code, reason) = proto::error_of(msg);
        let nonce = msg.get(attr::NONCE);
        let realm = msg.get(attr::REALM);
        match (code, step, nonce, realm) {
            // The expected challenge: learn realm and nonce, then authenticate.
            (401, Step::AllocProbe, Some(n), Some(r)) => {
                self.learn_realm(r);
                self.clients[i].nonce = n.to_vec();
                self.clients[i].nonce_retries = 0;
                self.next(i, Step::Alloc);
            }
            // Stale nonce (438), or a 401 that hands out a different nonce (some servers
            // signal expiry that way): retry the same step with it, a bounded number of times.
            (438 | 401, s, Some(n), _)
                if s != Step::AllocProbe
                    && (code == 438 || n != self.clients[i].nonce.as_slice())
                    && self.clients[i].nonce_retries < MAX_NONCE_RETRIES =>
            {
                if let Some(r) = realm {
                    self.learn_realm(r);
                }
                self.clients[i].nonce = n.to_vec();
                self.clients[i].nonce_retries += 1;
                self.next(i, s);
            }
            (437, Step::AllocProbe | Step::Alloc, _, _)
                if self.clients[i].reopens < MAX_REOPENS =>
            {
                self.finish(i);
                self.clients[i].phase = Phase::Queued;
                self.reopen.push(i as u32);
            }
            _ => self.fail(i, code, reason),
        }
    }
}

impl Handler for Engine {
    fn fd(&self, idx: usize) -> Option<RawFd> {
        self.clients.get(idx).map(|c| c.fd)
    }

    fn on_datagram(&mut self, idx: usize, data: &[u8], now: Instant) {
        // Only responses matter here; anything else (late relayed data) is dropped.
        if let Ok(msg) = Message::parse(data) {
            if matches!(msg.class(), Class::Success | Class::Error) {
                self.on_response(idx, &msg, now);
            }
        }
    }

    fn on_socket_error(&mut self, _idx: usize, err: io::Error) {
        // Recorded, not fatal: the transaction's timer decides when to give up, and the
        // final report names this as the cause.
        self.stats.socket_errors += 1;
        self.stats.last_socket_error = Some(err.to_string());
    }
}

/// Where client sockets bind: one or more local addresses, and either kernel-chosen
/// (ephemeral) ports or ports from a range. The range exists because a server that binds
/// its relay sockets to the wildcard address shares the ephemeral range with our sockets
/// whatever address they use: past ~14k allocations the two sides would exhaust it
/// together. Several addresses multiply the ports a range offers.
#[derive(Clone, Debug)]
pub(crate) struct Local {
    pub ips: Vec<IpAddr>,
    pub ports: Option<(u16, u16)>,
}

/// Walks `Local`: which address and port the next client socket tries.
struct Cursor {
    ip: usize,
    port: u32,
    /// Sockets opened so far (round-robin over addresses without a port range).
    opened: usize,
}

/// Open one client socket, connected to the server. With a port range, walk it from where
/// the previous socket got its port, skipping ports in use, then go on with the next
/// address; bounded by addresses x range.
fn open_client(local: &Local, cur: &mut Cursor, server: SocketAddr) -> io::Result<UdpSocket> {
    let exhausted = || io::Error::from_raw_os_error(libc::EADDRINUSE);
    let sock = match local.ports {
        None => {
            let ip = *local
                .ips
                .get(cur.opened % local.ips.len().max(1))
                .ok_or_else(exhausted)?;
            std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?
        }
        Some((lo, hi)) => loop {
            let ip = *local.ips.get(cur.ip).ok_or_else(exhausted)?;
            if cur.port > u32::from(hi) {
                cur.ip += 1;
                cur.port = u32::from(lo);
                continue;
            }
            let port = u16::try_from(cur.port).unwrap_or(0);
            cur.port += 1;
            match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => continue,
                Err(e) => return Err(e),
            }
        },
    };
    cur.opened += 1;
    sock.connect(server)?;
    sock.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(sock))
}
