//! TURN over UDP: a listener socket of one worker. Datagrams are read with `recvmmsg` and
//! answered with one `sendmmsg` per wakeup; the core writes each answer straight into its
//! send slot.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::net::UdpSocket as MioUdp;
use mio::{Interest, Registry, Token};
use tracing::debug;

use super::core::{Core, Io, apply, canonical_client, for_socket};
use super::mmsg::{self, RecvBatch, SendBatch};
use super::sockopt;
use super::stats::ListenerCounters;
use crate::snapshot::{Listener, ListenerIdx, Snapshot};
use crate::turn::{ClientCtx, HEADROOM, Now, TransportId};

/// Datagrams per `recvmmsg` on a listener socket, and batches per wakeup before other
/// sockets get their turn.
pub const LISTENER_BATCH: usize = 32;
const LISTENER_ROUNDS: usize = 4;
/// Datagrams queued per listener before a `sendmmsg`.
const SEND_BATCH: usize = 64;
/// Largest datagram handled: any UDP payload (65,507 bytes over IPv4, 65,527 over IPv6).
/// The receive and send arenas are sized for it; the kernel backs only the pages a
/// datagram touches, so small datagrams cost no more memory than with small slots.
pub const MAX_DATAGRAM: usize = 65_535;
/// Room for a Data indication around the largest datagram.
pub const SEND_SLOT: usize = MAX_DATAGRAM + 64;

/// One TURN-UDP listener socket of a worker (a listener has one per address family).
pub struct UdpListener {
    pub name: Arc<str>,
    pub signature: u64,
    socket: MioUdp,
    v6: bool,
    /// Datagrams for clients, sent as one batch per wakeup.
    tx: SendBatch,
    pub counters: ListenerCounters,
    /// (snapshot generation, index of this listener in that snapshot)
    at: (u64, Option<ListenerIdx>),
}

impl UdpListener {
    /// The sockets of a TURN-UDP listener (IPv4 and, where the host has it, IPv6).
    pub fn bind(l: &Listener) -> io::Result<Vec<UdpListener>> {
        let socks = sockopt::listener_sockets(l.bind_ip(), l.port).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {}: bind UDP port {}: {e}", l.name, l.port),
            )
        })?;
        let mut out = Vec::with_capacity(socks.len());
        for (i, std_sock) in socks.into_iter().enumerate() {
            let v6 = std_sock.local_addr()?.is_ipv6();
            // Best effort: without it only the drop counter is missing.
            let _ = mmsg::enable_rxq_ovfl(std_sock.as_raw_fd());
            // The sockets of one listener count as one "connection", as upstream reports.
            let first = u64::from(i == 0);
            out.push(UdpListener {
                name: l.name.clone(),
                signature: l.signature,
                socket: MioUdp::from_std(std_sock),
                v6,
                tx: SendBatch::new(SEND_BATCH, SEND_SLOT),
                counters: ListenerCounters {
                    name: l.name.clone(),
                    protocol: l.protocol,
                    connections: first,
                    connections_total: first,
                    ..ListenerCounters::default()
                },
                at: (0, None),
            });
        }
        Ok(out)
    }

    pub fn register(&mut self, registry: &Registry, key: usize) -> io::Result<()> {
        registry.register(&mut self.socket, Token(key), Interest::READABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    /// Handle up to a few batches of client datagrams; true if more may wait. `key` is this
    /// socket's transport id.
    pub fn drain(
        &mut self,
        key: usize,
        now: Now,
        snap: &Snapshot,
        core: &mut Core,
        io: &mut impl Io,
        rx: &mut RecvBatch,
    ) -> bool {
        let listener_idx = self.listener_index(snap);
        let fd = self.socket.as_raw_fd();
        for _ in 0..LISTENER_ROUNDS {
            let n = match rx.recv(fd, rx.capacity()) {
                Ok(n) => n,
                Err(e) => {
                    debug!(target: "stunner", "listener {}: recv: {e}", self.name);
                    return false;
                }
            };
            for i in 0..n {
                let Some((slot, len, from)) = rx.get(i) else {
                    continue;
                };
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += len as u64;
                // Truncated, or the listener is gone from the config: drop.
                let Some(listener) = listener_idx.filter(|_| len > 0) else {
                    continue;
                };
                let client = canonical_client(from);
                let ctx = ClientCtx {
                    transport: TransportId(key as u32),
                    listener,
                    client,
                    stream: false,
                };
                if self.tx.is_full() {
                    self.counters.tx_drops += self.tx.flush(fd) as u64;
                }
                let Some(out) = self.tx.next_slot() else {
                    continue;
                };
                let bytes = &slot[HEADROOM..HEADROOM + len];
                let answer = core.server.handle_client(now, snap, ctx, bytes, out, io);
                let (tx, counters, v6) = (&mut self.tx, &mut self.counters, self.v6);
                let preauth = &mut core.preauth;
                apply(answer, io, |n, unverified| {
                    if unverified && !preauth.admit(client.ip(), len, n, now.mono) {
                        counters.unverified_drops += 1;
                        return;
                    }
                    counters.tx_packets += 1;
                    counters.tx_bytes += n as u64;
                    tx.push(n, for_socket(client, v6));
                });
            }
            io.submit();
            self.counters.kernel_rx_drops = u64::from(rx.kernel_drops());
            if n < rx.capacity() {
                return false;
            }
        }
        true
    }

    /// Queue a relayed datagram (ChannelData or Data indication) for a client.
    #[inline]
    pub fn queue(&mut self, bytes: &[u8], client: std::net::SocketAddr) {
        if self.tx.is_full() {
            self.counters.tx_drops += self.tx.flush(self.socket.as_raw_fd()) as u64;
        }
        if self.tx.push_copy(bytes, for_socket(client, self.v6)) {
            self.counters.tx_packets += 1;
            self.counters.tx_bytes += bytes.len() as u64;
        }
    }

    /// Send every queued datagram.
    pub fn flush(&mut self) {
        if !self.tx.is_empty() {
            self.counters.tx_drops += self.tx.flush(self.socket.as_raw_fd()) as u64;
        }
    }

    /// The index of this listener in `snap`, re-resolved by name when the snapshot
    /// generation changed.
    fn listener_index(&mut self, snap: &Snapshot) -> Option<ListenerIdx> {
        if self.at.0 != snap.generation || self.at.1.is_none() {
            self.at = (snap.generation, snap.listener(&self.name).map(|(i, _)| i));
        }
        self.at.1
    }
}
