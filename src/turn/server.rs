//! The per-worker TURN server. This file holds its state (the allocation table and what an
//! allocation is) and its entry points; the work is split by concern:
//!
//! | file | what |
//! | --- | --- |
//! | `requests.rs` | STUN requests from clients: authentication, Allocate, Refresh, CreatePermission, ChannelBind, and the error answers |
//! | `relay.rs` | the data path: ChannelData and Send from clients, datagrams from peers, peer admission |
//! | `table.rs` | inserting and deleting allocations |
//! | `timers.rs` | lifetimes: the deadline heap and what expires |
//! | `tcp.rs` | RFC 6062 TCP allocations |
//! | `sessions.rs` | listing and ending allocations for operators |

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::auth::{self, AuthError, Authenticated, HeldCredential, NonceKey};
use super::bucket::ByteBucket;
use super::logs::{self, Shown, Suppressed};
use super::policy;
use super::session::{self, DeleteReason, Traffic};
use super::tally::{ClusterTraffic, Tally};
use super::{OffloadCounters, OffloadRoute};
mod offload;
mod relay;
mod requests;
mod sessions;
mod table;
mod tcp;
mod timers;

use relay::{admit_for, admits_ip, refused};
use requests::seal;
use timers::Deadlines;

use super::{
    CHANNEL_LIFETIME, ClientCtx, ClientOutput, DEFAULT_LIFETIME, DropReason, Family, FiveTuple,
    HEADROOM, MAX_ALLOCATIONS, MAX_CHANNELS, MAX_LIFETIME, MAX_PERMISSIONS, Now,
    PERMISSION_LIFETIME, PortRequest, Quota, RelayId, RelayRequest, Relays, Stats, ToClient,
    TransportId, TurnError,
};
use crate::snapshot::{ClusterIdx, ListenerIdx, Snapshot};
use crate::stun::attr::{self, *};
use crate::stun::{
    CHANNEL_HEADER_LEN, ChannelData, Class, Kind, Message, MessageWriter, Method, StunError,
    TransactionId, classify, write_channel_header,
};

/// Channel numbers a client may bind (RFC 5766 range; see `channel_bind`).
pub(super) const CHANNEL_RANGE: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

/// How often RFC 6062 peer connections are checked for their timeouts while any exist.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One worker's TURN server.
pub struct Server {
    nonces: NonceKey,
    allocs: Vec<Option<Allocation>>,
    free: Vec<u32>,
    by_client: FxHashMap<FiveTuple, u32>,
    by_relay: FxHashMap<RelayId, u32>,
    /// When each allocation next needs the timer: its expiry, or the earliest expiry of
    /// its permissions and channels.
    deadlines: Deadlines,
    /// Serial number of the next allocation, telling a reused id's deadlines apart.
    next_serial: u32,
    /// Next check of the RFC 6062 peer connection timeouts (while any exist).
    next_peer_check: Option<Instant>,
    /// Bytes per second each allocation may send to its peers (0: no limit).
    send_rate: u32,
    /// Counter behind the transaction ids of Data indications.
    indication_seq: u64,
    stats: Stats,
    clusters: Tally,
    /// RFC 6062 peer connections by CONNECTION-ID.
    peer_conns: FxHashMap<u32, tcp::PeerConn>,
    next_conn: u32,
    /// Channels the kernel relays (`admin.offload_engine`), and the offload epoch the
    /// routes were last checked against (see `offload.rs`).
    offloaded: usize,
    offload_epoch: Option<u64>,
}

struct Allocation {
    /// Session id, unique in the process ([`session::next_id`]).
    id: u64,
    five: FiveTuple,
    /// The client's transport (`udp`, `tcp`, `tls`, `dtls`) and the server side of its
    /// 5-tuple (listener address and port), for logs and the session list.
    transport: &'static str,
    server: SocketAddr,
    created: Instant,
    created_unix: u64,
    traffic: Traffic,
    listener: Arc<str>,
    /// (snapshot generation, listener index) the name last resolved to.
    listener_at: (u64, ListenerIdx),
    user: Arc<str>,
    relay: RelayId,
    relayed: SocketAddr,
    expires: Instant,
    /// The Allocate transaction and its success response, for retransmits.
    alloc_tid: TransactionId,
    alloc_response: Vec<u8>,
    perms: Vec<Permission>,
    channels: Vec<Channel>,
    /// RFC 6062 TCP allocation (a listening relay socket).
    tcp: bool,
    /// The ephemeral credential it was created with (see [`HeldCredential`]).
    held: Option<HeldCredential>,
    /// The quota it counts against (`Relays::reserve_quota`), released when it goes.
    quota: Option<Arc<str>>,
    /// What it may still send to its peers (`Server::set_send_rate`).
    budget: ByteBucket,
    /// Tells this allocation's deadlines from those of an earlier one with the same id.
    serial: u32,
    /// The earliest time this allocation is in [`Server::deadlines`] for.
    scheduled: Instant,
}

struct Permission {
    ip: IpAddr,
    expires: Instant,
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
    /// Snapshot generation at which `peer` was last admitted by policy, and the cluster
    /// that admitted it.
    admitted_gen: u64,
    cluster: ClusterIdx,
    /// Set while the kernel relays this channel.
    offload: Option<offload::Offloaded>,
}

/// Result of request handling before it is written out.
enum Answer {
    Error(TurnError),
    /// An error that needs REALM and NONCE (401, 438); `proven`: the request carried a
    /// valid nonce, so its source has shown it receives what we send.
    Challenge {
        error: TurnError,
        proven: bool,
    },
    /// 420 with the unknown attribute types.
    Unknown([u16; 8], usize),
}

/// A request handled without error.
enum Done {
    Reply(usize),
    /// A Binding response: nothing about its source is known.
    Unverified(usize),
    /// A Connect under way.
    Pending,
    /// ConnectionBind: reply, then pipe.
    Bind(usize, super::ConnectionId),
}

impl Server {
    pub fn new(nonces: NonceKey) -> Server {
        Server {
            nonces,
            send_rate: 0,
            allocs: Vec::new(),
            free: Vec::new(),
            by_client: FxHashMap::default(),
            by_relay: FxHashMap::default(),
            deadlines: Deadlines::default(),
            next_serial: 0,
            next_peer_check: None,
            indication_seq: 0,
            stats: Stats::default(),
            clusters: Tally::default(),
            peer_conns: FxHashMap::default(),
            next_conn: 0,
            offloaded: 0,
            offload_epoch: None,
        }
    }

    /// Limit what each allocation sends to its peers to `bytes_per_sec` (a second's worth of
    /// burst; 0: no limit). Datagrams over it are dropped and counted
    /// (`DropReason::RateLimited`).
    pub fn set_send_rate(&mut self, bytes_per_sec: u32) {
        self.send_rate = bytes_per_sec;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Traffic per cluster so far, by name.
    pub fn for_each_cluster(&self, f: impl FnMut(&Arc<str>, ClusterTraffic)) {
        self.clusters.for_each(f)
    }

    /// Whether a 5-tuple has an allocation.
    pub fn has_allocation(&self, five: FiveTuple) -> bool {
        self.by_client.contains_key(&five)
    }

    /// Live allocations.
    pub fn allocation_count(&self) -> usize {
        self.by_client.len()
    }

    /// When [`Server::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.next_peer_check.filter(|_| !self.peer_conns.is_empty());
        match (self.deadlines.next(), peers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A message from a client on a listener transport.
    pub fn handle_client<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        bytes: &'a [u8],
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> ClientOutput<'a> {
        let out = match classify(bytes) {
            Kind::ChannelData => self.channel_data_from_client(now, snap, ctx, bytes),
            Kind::Stun => match Message::parse(bytes) {
                Ok(msg) => self.stun_from_client(now, snap, ctx, msg, out, relays),
                Err(_) => ClientOutput::Drop(DropReason::Malformed),
            },
            Kind::Other => ClientOutput::Drop(DropReason::Malformed),
        };
        match &out {
            ClientOutput::Drop(r) => self.stats.drops[*r as usize] += 1,
            ClientOutput::Forward { payload, .. } => {
                self.stats.to_peer_packets += 1;
                self.stats.to_peer_bytes += payload.len() as u64;
            }
            ClientOutput::Reply(_)
            | ClientOutput::Unverified(_)
            | ClientOutput::Pending
            | ClientOutput::Bind { .. } => {}
        }
        out
    }

    /// A datagram from `peer` on relay socket `relay`. The payload is
    /// `buf[HEADROOM..HEADROOM + len]`; the first [`HEADROOM`] bytes are free for a
    /// ChannelData header. A Data indication is built in `scratch`.
    pub fn handle_peer<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        relay: RelayId,
        peer: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
        scratch: &'a mut [u8],
    ) -> Result<ToClient<'a>, DropReason> {
        let res = self.peer_to_client(now, snap, relay, peer, buf, len, scratch);
        match &res {
            Ok(t) => {
                self.stats.to_client_packets += 1;
                self.stats.to_client_bytes += t.bytes.len() as u64;
            }
            Err(r) => self.stats.drops[*r as usize] += 1,
        }
        res
    }

    /// Delete every allocation on a transport (a closed stream connection, a removed
    /// listener); `reason` is what the log line names.
    pub fn close_transport(
        &mut self,
        transport: TransportId,
        reason: DeleteReason,
        now: Now,
        relays: &mut dyn Relays,
    ) {
        let ids: Vec<u32> = self
            .by_client
            .iter()
            .filter(|(k, _)| k.transport == transport)
            .map(|(_, &v)| v)
            .collect();
        for id in ids {
            self.delete(id, reason, now.mono, relays);
        }
    }
}
