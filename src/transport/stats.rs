//! Counters a worker publishes for scraping.
//!
//! The data path only bumps plain integers that the worker owns. A few times a second the
//! worker copies them into its [`StatsSlot`]; the admin side sums the slots of all workers at
//! scrape time. No label formatting, no atomics and no locks per packet.

use std::ops::AddAssign;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::ListenerProtocol;
use crate::turn::{ClusterTraffic, Stats};

/// Traffic counters of one listener socket (or all connections of a stream listener) of
/// one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerCounters {
    pub name: Arc<str>,
    pub protocol: ListenerProtocol,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Open client connections (UDP: the number of sockets, as upstream reports).
    pub connections: u64,
    /// Client connections ever accepted (UDP: sockets ever bound).
    pub connections_total: u64,
    /// Datagrams the kernel dropped for want of receive buffer (`SO_RXQ_OVFL`).
    pub kernel_rx_drops: u64,
    /// Datagrams the kernel did not take on send (full send buffer).
    pub tx_drops: u64,
    /// DTLS: sessions past the cookie exchange whose handshake has not finished.
    pub handshakes: u64,
    /// UDP: answers to unverified sources not sent, beyond the per-source amplification
    /// budget (`transport::preauth`).
    pub unverified_drops: u64,
    /// TCP/TLS: client connections closed, by [`CloseReason`].
    pub closes: [u64; CloseReason::COUNT],
    /// TCP/TLS: connections closed at accept: unauthenticated connections at their bound.
    pub refused: u64,
}

/// Why a client connection (TCP or TLS) closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum CloseReason {
    /// The client closed it.
    ClientClosed,
    /// A socket error (reset by the client, or another I/O error).
    Reset,
    /// Bytes that are neither a STUN message nor ChannelData: the stream cannot be framed.
    Malformed,
    /// A TLS handshake or record error.
    Tls,
    /// No allocation and no traffic for the idle timeout (or no first request after the
    /// handshake timeout).
    Idle,
    /// Writing to the client failed.
    WriteFailed,
    /// Its listener was stopped or restarted by a new config, or the daemon stopped.
    ListenerStopped,
    /// RFC 6062: its pipe to a peer connection ended (either side closed).
    PipeEnded,
    /// Unauthenticated, the oldest idle one, when the unauthenticated pool was full.
    Evicted,
}

impl CloseReason {
    pub const COUNT: usize = 9;
    pub const ALL: [CloseReason; Self::COUNT] = [
        CloseReason::ClientClosed,
        CloseReason::Reset,
        CloseReason::Malformed,
        CloseReason::Tls,
        CloseReason::Idle,
        CloseReason::WriteFailed,
        CloseReason::ListenerStopped,
        CloseReason::PipeEnded,
        CloseReason::Evicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::Reset => "reset",
            CloseReason::Malformed => "malformed",
            CloseReason::Tls => "tls_error",
            CloseReason::Idle => "idle",
            CloseReason::WriteFailed => "write_failed",
            CloseReason::ListenerStopped => "listener_stopped",
            CloseReason::PipeEnded => "pipe_ended",
            CloseReason::Evicted => "evicted",
        }
    }

    /// Whether an operator should hear of it (rate-limited): the client broke the protocol
    /// or the connection broke, rather than ending normally.
    pub fn is_abnormal(self) -> bool {
        matches!(
            self,
            CloseReason::Reset
                | CloseReason::Malformed
                | CloseReason::Tls
                | CloseReason::WriteFailed
        )
    }
}

/// Traffic to and from the peers of one cluster, as seen by one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    pub name: Arc<str>,
    pub traffic: ClusterTraffic,
}

/// What one worker last published.
#[derive(Clone, Debug, Default)]
pub struct WorkerReport {
    /// Live allocations.
    pub allocations: u64,
    /// The core's counters (allocations created, drops by reason, auth failures, ...).
    pub core: Stats,
    pub listeners: Vec<ListenerCounters>,
    pub clusters: Vec<ClusterCounters>,
    /// Generation of the snapshot the worker runs.
    pub generation: u64,
    /// Whether the worker's relay sockets are on io_uring (else epoll).
    pub io_uring: bool,
}

/// One worker's published report. Written by the worker a few times a second, read by
/// scrapes and the drain logic.
#[derive(Debug, Default)]
pub struct StatsSlot {
    report: Mutex<WorkerReport>,
}

impl StatsSlot {
    pub fn new() -> Arc<StatsSlot> {
        Arc::new(StatsSlot::default())
    }

    /// Replace the report (the worker reuses the slot's vectors, so steady state does not
    /// allocate).
    pub fn publish(&self, f: impl FnOnce(&mut WorkerReport)) {
        let mut r = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut r);
    }

    pub fn read(&self) -> WorkerReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Counters that add up by name: a listener's sockets and connections within a worker,
/// and the workers' reports at scrape time, are summed by this one rule.
pub trait Named: Clone + for<'a> AddAssign<&'a Self> {
    fn name(&self) -> &str;
}

impl Named for ListenerCounters {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ClusterCounters {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Add `item` to the entry of the same name in `into`, or append it.
pub fn merge<T: Named>(into: &mut Vec<T>, item: &T) {
    match into.iter_mut().find(|t| t.name() == item.name()) {
        Some(t) => *t += item,
        None => into.push(item.clone()),
    }
}

impl AddAssign<&ListenerCounters> for ListenerCounters {
    fn add_assign(&mut self, o: &ListenerCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.connections += o.connections;
        self.connections_total += o.connections_total;
        self.kernel_rx_drops += o.kernel_rx_drops;
        self.tx_drops += o.tx_drops;
        self.handshakes += o.handshakes;
        self.unverified_drops += o.unverified_drops;
        self.refused += o.refused;
        for (a, b) in self.closes.iter_mut().zip(o.closes) {
            *a += b;
        }
    }
}

impl AddAssign<&ClusterCounters> for ClusterCounters {
    fn add_assign(&mut self, o: &ClusterCounters) {
        self.traffic += &o.traffic;
    }
}

/// The sum over workers: listener and cluster counters merged by name.
pub fn sum(reports: &[WorkerReport]) -> WorkerReport {
    let mut total = WorkerReport::default();
    for r in reports {
        total.allocations += r.allocations;
        total.generation = total.generation.max(r.generation);
        total.core += &r.core;
        for l in &r.listeners {
            merge(&mut total.listeners, l);
        }
        for c in &r.clusters {
            merge(&mut total.clusters, c);
        }
    }
    total
}
