//! The event loop's I/O: one mio poll over every client socket and the built-in echo peer,
//! with batched receives (`recvmmsg`) into one preallocated arena.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use stunnerd::transport::mmsg::{RecvBatch, SendBatch};

/// Datagrams per `recvmmsg` on a client socket. A client socket gets a few datagrams per
/// tick at most, so this rarely fills; the peer socket uses [`PEER_BATCH`].
const RX_BATCH: usize = 32;
/// Largest datagram we expect back (load messages are at most 1400 bytes plus framing).
const RX_SLOT: usize = 2048;
const PEER_BATCH: usize = 64;
/// `recvmmsg` rounds per peer wakeup before yielding to the clients (fairness); the rest
/// is picked up on the next turn without waiting for a new edge.
const PEER_ROUNDS: usize = 16;
/// Safety bound on draining one client socket per wakeup. A socket's queue is bounded by
/// its receive buffer, so this is only ever reached if the kernel misbehaves.
const CLIENT_ROUNDS: usize = 1024;
const PEER_TOKEN: Token = Token(usize::MAX - 1);

/// Receives datagrams for allocations.
pub(crate) trait Handler {
    /// The socket of allocation `idx` (None if there is no such allocation).
    fn fd(&self, idx: usize) -> Option<RawFd>;
    /// One datagram arrived on allocation `idx`'s socket at `now`.
    fn on_datagram(&mut self, idx: usize, data: &[u8], now: Instant);
    /// Receiving on allocation `idx`'s socket failed (an ICMP error on a connected socket,
    /// typically: nothing listens at the server address).
    fn on_socket_error(&mut self, idx: usize, err: io::Error);
}

/// A UDP echo peer served inside the event loop: every datagram goes back to its sender.
pub(crate) struct EchoPeer {
    sock: UdpSocket,
    rx: RecvBatch,
    tx: SendBatch,
    /// Stopped after PEER_ROUNDS with datagrams possibly left: serve again without an edge.
    pending: bool,
    pub echoed: u64,
    pub dropped: u64,
}

impl EchoPeer {
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<EchoPeer> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // The peer takes the whole relayed load on one socket: give it deep buffers (the
        // kernel caps them at net.core.{r,w}mem_max; failure only means smaller buffers).
        let _ = sock.set_recv_buffer_size(8 << 20);
        let _ = sock.set_send_buffer_size(8 << 20);
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        Ok(EchoPeer {
            sock: UdpSocket::from_std(sock.into()),
            rx: RecvBatch::new(PEER_BATCH, RX_SLOT, 0),
            tx: SendBatch::new(PEER_BATCH, RX_SLOT),
            pending: false,
            echoed: 0,
            dropped: 0,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    fn serve(&mut self) {
        let fd = self.sock.as_raw_fd();
        for _ in 0..PEER_ROUNDS {
            // An error here (say, a pending ICMP error) is not the peer's problem: the
            // datagrams behind it are served on the next wakeup.
            let n = self.rx.recv(fd, PEER_BATCH).unwrap_or(0);
            for k in 0..n {
                if let Some((slot, len, from)) = self.rx.get(k) {
                    if len > 0 && self.tx.push_copy(&slot[..len], from) {
                        self.echoed += 1;
                    }
                }
            }
            if !self.tx.is_empty() {
                let d = self.tx.flush(fd) as u64;
                self.dropped += d;
                self.echoed -= d;
            }
            if n < PEER_BATCH {
                // recvmmsg returned short, so the queue was empty a moment ago: any later
                // datagram raises a new edge.
                self.pending = false;
                return;
            }
        }
        self.pending = true;
    }
}

pub(crate) struct Net {
    poll: Poll,
    events: Events,
    rx: RecvBatch,
    pub peer: Option<EchoPeer>,
}

impl Net {
    pub(crate) fn new(peer: Option<EchoPeer>) -> io::Result<Net> {
        let poll = Poll::new()?;
        let mut net = Net {
            poll,
            events: Events::with_capacity(1024),
            rx: RecvBatch::new(RX_BATCH, RX_SLOT, 0),
            peer,
        };
        if let Some(p) = net.peer.as_mut() {
            net.poll
                .registry()
                .register(&mut p.sock, PEER_TOKEN, Interest::READABLE)?;
        }
        Ok(net)
    }

    pub(crate) fn register(&self, sock: &mut UdpSocket, idx: usize) -> io::Result<()> {
        self.poll
            .registry()
            .register(sock, Token(idx), Interest::READABLE)
    }

    /// Wait up to `timeout` for readiness, then receive everything that is ready and hand
    /// it to `h`; the echo peer is served here too.
    pub(crate) fn turn(&mut self, h: &mut impl Handler, timeout: Duration) -> io::Result<()> {
        let peer_pending = self.peer.as_ref().is_some_and(|p| p.pending);
        let timeout = if peer_pending {
            Duration::ZERO
        } else {
            timeout
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut serve_peer = peer_pending;
        for ev in self.events.iter() {
            let idx = ev.token().0;
            if ev.token() == PEER_TOKEN {
                serve_peer = true;
                continue;
            }
            let Some(fd) = h.fd(idx) else { continue };
            // mio registers edge-triggered. One short recvmmsg proves the queue was empty
            // at that moment, so stopping there cannot strand a datagram, and saves the
            // extra EAGAIN call per wakeup that a read-until-WouldBlock loop would cost.
            for _ in 0..CLIENT_ROUNDS {
                match self.rx.recv(fd, RX_BATCH) {
                    Ok(n) => {
                        // Read the clock per batch, not per wakeup: serving many sockets
                        // takes a while, and RTTs are reported to the microsecond.
                        let now = Instant::now();
                        for k in 0..n {
                            if let Some((slot, len, _)) = self.rx.get(k) {
                                if len > 0 {
                                    h.on_datagram(idx, &slot[..len], now);
                                }
                            }
                        }
                        if n < RX_BATCH {
                            break;
                        }
                    }
                    // Reading the error clears it; datagrams queued behind it are read next.
                    Err(e) => h.on_socket_error(idx, e),
                }
            }
        }
        if serve_peer {
            if let Some(p) = self.peer.as_mut() {
                p.serve();
            }
        }
        Ok(())
    }
}
