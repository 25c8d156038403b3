//! Counters a worker publishes for scraping.
//!
//! The data path only bumps plain integers that the worker owns. A few times a second the
//! worker copies them into its [`StatsSlot`]; the admin side sums the slots of all workers at
//! scrape time. No label formatting, no atomics and no locks per packet.

use std::sync::{Arc, Mutex, PoisonError};

use crate::turn::Stats;

/// Traffic counters of one listener socket (or all connections of a stream listener) of
/// one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerCounters {
    pub name: Arc<str>,
    pub protocol: &'static str,
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
}

/// Traffic to and from the peers of one cluster, as seen by one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    pub name: Arc<str>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
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

/// The sum over workers: listener and cluster counters merged by name.
pub fn sum(reports: &[WorkerReport]) -> WorkerReport {
    let mut total = WorkerReport::default();
    for r in reports {
        total.allocations += r.allocations;
        total.generation = total.generation.max(r.generation);
        let c = &mut total.core;
        let s = &r.core;
        c.allocations_created += s.allocations_created;
        c.allocations_deleted += s.allocations_deleted;
        c.allocations_expired += s.allocations_expired;
        c.auth_challenges += s.auth_challenges;
        c.auth_failures += s.auth_failures;
        c.stale_nonces += s.stale_nonces;
        c.error_responses += s.error_responses;
        c.to_peer_packets += s.to_peer_packets;
        c.to_peer_bytes += s.to_peer_bytes;
        c.to_client_packets += s.to_client_packets;
        c.to_client_bytes += s.to_client_bytes;
        for (a, b) in c.drops.iter_mut().zip(s.drops) {
            *a += b;
        }
        for l in &r.listeners {
            match total.listeners.iter_mut().find(|t| t.name == l.name) {
                Some(t) => {
                    t.rx_packets += l.rx_packets;
                    t.rx_bytes += l.rx_bytes;
                    t.tx_packets += l.tx_packets;
                    t.tx_bytes += l.tx_bytes;
                    t.connections += l.connections;
                    t.connections_total += l.connections_total;
                    t.kernel_rx_drops += l.kernel_rx_drops;
                    t.tx_drops += l.tx_drops;
                    t.handshakes += l.handshakes;
                }
                None => total.listeners.push(l.clone()),
            }
        }
        for cl in &r.clusters {
            match total.clusters.iter_mut().find(|t| t.name == cl.name) {
                Some(t) => {
                    t.rx_packets += cl.rx_packets;
                    t.rx_bytes += cl.rx_bytes;
                    t.tx_packets += cl.tx_packets;
                    t.tx_bytes += cl.tx_bytes;
                }
                None => total.clusters.push(cl.clone()),
            }
        }
    }
    total
}
