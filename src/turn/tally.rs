//! Per-cluster traffic counters, indexed by the snapshot's cluster index on the data path
//! and folded into name-keyed totals when the snapshot generation changes.

use std::sync::Arc;

use crate::snapshot::{ClusterIdx, Snapshot};

/// Packets and bytes to (tx) and from (rx) the peers of one cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterTraffic {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

impl std::ops::AddAssign<&ClusterTraffic> for ClusterTraffic {
    fn add_assign(&mut self, o: &ClusterTraffic) {
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
    }
}

#[derive(Default)]
pub(super) struct Tally {
    generation: u64,
    names: Vec<Arc<str>>,
    current: Vec<ClusterTraffic>,
    /// Counts of earlier generations, by cluster name.
    totals: Vec<(Arc<str>, ClusterTraffic)>,
}

impl Tally {
    /// Count one packet relayed to (`to_peer`) or from a peer admitted by `cluster`.
    #[inline]
    pub(super) fn count(
        &mut self,
        snap: &Snapshot,
        cluster: ClusterIdx,
        to_peer: bool,
        bytes: usize,
    ) {
        if self.generation != snap.generation {
            self.rollover(snap);
        }
        let Some(c) = self.current.get_mut(cluster) else {
            return;
        };
        if to_peer {
            c.tx_packets += 1;
            c.tx_bytes += bytes as u64;
        } else {
            c.rx_packets += 1;
            c.rx_bytes += bytes as u64;
        }
    }

    /// Add traffic counted elsewhere (the kernel offload) to the cluster of this name.
    pub(super) fn add_named(&mut self, name: &Arc<str>, t: &ClusterTraffic) {
        match self.totals.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += t,
            None => self.totals.push((name.clone(), *t)),
        }
    }

    fn rollover(&mut self, snap: &Snapshot) {
        self.fold();
        self.generation = snap.generation;
        self.names.clear();
        self.names
            .extend(snap.clusters.iter().map(|c| c.name.clone()));
        self.current.clear();
        self.current
            .resize(self.names.len(), ClusterTraffic::default());
    }

    fn fold(&mut self) {
        for (name, c) in self.names.iter().zip(&self.current) {
            if *c == ClusterTraffic::default() {
                continue;
            }
            match self.totals.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += c,
                None => self.totals.push((name.clone(), *c)),
            }
        }
        for c in &mut self.current {
            *c = ClusterTraffic::default();
        }
    }

    /// Every cluster's counts so far, by name.
    pub(super) fn for_each(&self, mut f: impl FnMut(&Arc<str>, ClusterTraffic)) {
        for (name, t) in &self.totals {
            let mut t = *t;
            if let Some(i) = self.names.iter().position(|n| n == name) {
                t += &self.current[i];
            }
            f(name, t);
        }
        for (name, c) in self.names.iter().zip(&self.current) {
            if !self.totals.iter().any(|(n, _)| n == name) && *c != ClusterTraffic::default() {
                f(name, *c);
            }
        }
    }
}
