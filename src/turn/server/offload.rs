//! The kernel offload as the core decides it (`admin.offload_engine`): which channels the
//! kernel may relay, and folding what it relayed back into the core's counters.
//!
//! User space stays the authority. A channel of a UDP allocation on a TURN-UDP listener is
//! installed only while the channel and its peer's permission are live, the policy admits
//! the peer under the current snapshot and no per-allocation send rate applies (the kernel
//! does not meter). Its entry goes when any of that stops being true: expiry (the timer
//! path), Refresh(0) and kills (deletion), a snapshot that no longer admits the peer
//! ([`Server::offload_recheck`] on apply). Refreshes and permission renewals still arrive
//! as STUN in user space, so lifetimes stay exact.

use super::*;

/// A channel the kernel relays: the offload epoch it was installed under, its counters as
/// last read, and the cluster they count against.
pub(super) struct Offloaded {
    epoch: u64,
    seen: OffloadCounters,
    cluster: Arc<str>,
}

/// The route of channel `ch` of allocation `a`.
fn route_of(a: &Allocation, ch: &Channel) -> OffloadRoute {
    OffloadRoute {
        transport: a.five.transport,
        listener: a.server,
        client: a.five.client,
        relay: a.relayed,
        peer: ch.peer,
        channel: ch.number,
    }
}

/// Whether allocation `a` can have kernel routes at all: UDP on a TURN-UDP listener, one
/// address family end to end, a concrete listener address, no send rate to meter.
fn eligible(a: &Allocation, now: Instant, send_rate: u32) -> bool {
    a.transport == "udp"
        && !a.tcp
        && send_rate == 0
        && a.expires > now
        && !a.server.ip().is_unspecified()
        && Family::of(a.five.client.ip()) == Family::of(a.relayed.ip())
}

/// Whether channel `i` of `a` is live with a live permission for its peer.
fn live(a: &Allocation, i: usize, now: Instant) -> bool {
    let ch = &a.channels[i];
    ch.expires > now
        && a.perms
            .iter()
            .any(|p| p.ip == ch.peer.ip() && p.expires > now)
}

/// The counters of the core that offloaded traffic is folded into.
struct Sinks<'a> {
    stats: &'a mut Stats,
    clusters: &'a mut Tally,
}

impl Sinks<'_> {
    /// Count what the kernel relayed for `ch` since the last read (`now` is its counters).
    fn account(
        &mut self,
        a: &mut Allocation,
        off: &mut Offloaded,
        now: OffloadCounters,
        relays: &mut dyn Relays,
    ) {
        let d = now.since(&off.seen);
        off.seen = now;
        if d.is_zero() {
            return;
        }
        a.traffic.to_peer_packets += d.to_peer_packets;
        a.traffic.to_peer_bytes += d.to_peer_bytes;
        a.traffic.to_client_packets += d.to_client_packets;
        a.traffic.to_client_bytes += d.to_client_bytes;
        self.stats.to_peer_packets += d.to_peer_packets;
        self.stats.to_peer_bytes += d.to_peer_bytes;
        self.stats.to_client_packets += d.to_client_packets;
        // The core counts what it sends the client: ChannelData, header included.
        self.stats.to_client_bytes +=
            d.to_client_bytes + CHANNEL_HEADER_LEN as u64 * d.to_client_packets;
        self.clusters.add_named(
            &off.cluster,
            &ClusterTraffic {
                tx_packets: d.to_peer_packets,
                tx_bytes: d.to_peer_bytes,
                rx_packets: d.to_client_packets,
                rx_bytes: d.to_client_bytes,
            },
        );
        relays.offload_counted(a.five.transport, &d);
    }
}

/// Bring the kernel routes of `a` in line with what is allowed now. Without a snapshot
/// (the timer path) routes are only removed, never installed. Returns the change in the
/// number of installed routes.
fn sync(
    a: &mut Allocation,
    now: Instant,
    snap: Option<&Snapshot>,
    send_rate: u32,
    sinks: &mut Sinks<'_>,
    relays: &mut dyn Relays,
) -> isize {
    let epoch = relays.offload_epoch();
    let ok = epoch.is_some() && eligible(a, now, send_rate);
    let mut change = 0;
    for i in 0..a.channels.len() {
        // An entry of another epoch is gone with the tables it was in.
        let stale = a.channels[i]
            .offload
            .as_ref()
            .is_some_and(|o| Some(o.epoch) != epoch);
        if stale {
            a.channels[i].offload = None;
            change -= 1;
        }
        let want = if !ok || !live(a, i, now) {
            None
        } else if let Some(snap) = snap {
            let peer = a.channels[i].peer;
            match admit_for(a, snap, peer) {
                Ok(cluster) => {
                    let ch = &mut a.channels[i];
                    ch.admitted_gen = snap.generation;
                    ch.cluster = cluster;
                    snap.clusters.get(cluster).map(|c| c.name.clone())
                }
                Err(_) => None,
            }
        } else {
            a.channels[i].offload.as_ref().map(|o| o.cluster.clone())
        };
        let route = route_of(a, &a.channels[i]);
        match (a.channels[i].offload.take(), want) {
            (Some(mut off), Some(cluster)) => {
                off.cluster = cluster;
                a.channels[i].offload = Some(off);
            }
            (Some(mut off), None) => {
                if let Some(last) = relays.offload_remove(&route) {
                    sinks.account(a, &mut off, last, relays);
                }
                change -= 1;
            }
            (None, Some(cluster)) => {
                if let Some(epoch) = epoch.filter(|_| relays.offload_install(&route)) {
                    a.channels[i].offload = Some(Offloaded {
                        epoch,
                        seen: OffloadCounters::default(),
                        cluster,
                    });
                    change += 1;
                }
            }
            (None, None) => {}
        }
    }
    change
}

impl Server {
    /// Install or remove the kernel routes of allocation `id` as its state and the
    /// snapshot allow (after ChannelBind and CreatePermission; `snap` None: remove only).
    pub(super) fn offload_sync(
        &mut self,
        id: u32,
        now: Instant,
        snap: Option<&Snapshot>,
        relays: &mut dyn Relays,
    ) {
        if self.offloaded == 0 && relays.offload_epoch().is_none() {
            return;
        }
        let Server {
            allocs,
            stats,
            clusters,
            send_rate,
            offloaded,
            ..
        } = self;
        let Some(Some(a)) = allocs.get_mut(id as usize) else {
            return;
        };
        let mut sinks = Sinks { stats, clusters };
        let change = sync(a, now, snap, *send_rate, &mut sinks, relays);
        *offloaded = offloaded.saturating_add_signed(change);
    }

    /// [`Server::offload_sync`] for the allocation of a client's 5-tuple.
    pub(super) fn offload_sync_client(
        &mut self,
        ctx: ClientCtx,
        now: Instant,
        snap: &Snapshot,
        relays: &mut dyn Relays,
    ) {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        if let Some(&id) = self.by_client.get(&five) {
            self.offload_sync(id, now, Some(snap), relays);
        }
    }

    /// Remove every kernel route of an allocation that is going away, counting what they
    /// relayed last.
    pub(super) fn offload_release(&mut self, a: &mut Allocation, relays: &mut dyn Relays) {
        let mut sinks = Sinks {
            stats: &mut self.stats,
            clusters: &mut self.clusters,
        };
        for i in 0..a.channels.len() {
            let Some(mut off) = a.channels[i].offload.take() else {
                continue;
            };
            self.offloaded = self.offloaded.saturating_sub(1);
            let route = route_of(a, &a.channels[i]);
            if let Some(last) = relays.offload_remove(&route) {
                sinks.account(a, &mut off, last, relays);
            }
        }
    }

    /// A new snapshot (or a new offload): check every allocation's kernel routes against
    /// it, removing those it no longer admits and installing those it now allows.
    pub fn offload_recheck(&mut self, now: Now, snap: &Snapshot, relays: &mut dyn Relays) {
        self.offload_epoch = relays.offload_epoch();
        if self.offloaded == 0 && self.offload_epoch.is_none() {
            return;
        }
        for id in 0..self.allocs.len() as u32 {
            self.offload_sync(id, now.mono, Some(snap), relays);
        }
    }

    /// Read what the kernel relayed for every installed route into the core's counters
    /// (the worker calls this about once a second). When the offload was loaded anew or
    /// went away since the last call, every allocation is checked again.
    pub fn offload_poll(&mut self, now: Now, snap: &Snapshot, relays: &mut dyn Relays) {
        if relays.offload_epoch() != self.offload_epoch {
            self.offload_recheck(now, snap, relays);
        }
        if self.offloaded == 0 {
            return;
        }
        let Server {
            allocs,
            stats,
            clusters,
            ..
        } = self;
        let mut sinks = Sinks { stats, clusters };
        for a in allocs.iter_mut().flatten() {
            for i in 0..a.channels.len() {
                let Some(mut off) = a.channels[i].offload.take() else {
                    continue;
                };
                let route = route_of(a, &a.channels[i]);
                if let Some(c) = relays.offload_read(&route) {
                    sinks.account(a, &mut off, c, relays);
                }
                a.channels[i].offload = Some(off);
            }
        }
    }

    /// Channels the kernel relays now (this worker).
    pub fn offloaded_routes(&self) -> usize {
        self.offloaded
    }
}
