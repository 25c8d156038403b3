//! The per-worker TURN server: request handling, the relay fast path, and timers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::auth::{self, AuthError, Authenticated, HeldCredential, NonceKey};
use super::logs::{self, Shown, Suppressed};
use super::policy;
use super::session::{self, DeleteReason, Traffic};
use super::tally::{ClusterTraffic, Tally};
mod sessions;
mod tcp;
mod timers;

use timers::Deadlines;

use super::{
    CHANNEL_LIFETIME, ClientCtx, ClientOutput, DEFAULT_LIFETIME, DropReason, Family, FiveTuple,
    HEADROOM, MAX_ALLOCATIONS, MAX_CHANNELS, MAX_LIFETIME, MAX_PERMISSIONS, Now,
    PERMISSION_LIFETIME, PortRequest, RelayId, RelayRequest, Relays, Stats, ToClient, TransportId,
    TurnError,
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
    per_user: FxHashMap<Arc<str>, u32>,
    /// When each allocation next needs the timer: its expiry, or the earliest expiry of
    /// its permissions and channels.
    deadlines: Deadlines,
    /// Serial number of the next allocation, telling a reused id's deadlines apart.
    next_serial: u32,
    /// Next check of the RFC 6062 peer connection timeouts (while any exist).
    next_peer_check: Option<Instant>,
    /// Counter behind the transaction ids of Data indications.
    indication_seq: u64,
    stats: Stats,
    clusters: Tally,
    /// RFC 6062 peer connections by CONNECTION-ID.
    peer_conns: FxHashMap<u32, tcp::PeerConn>,
    next_conn: u32,
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
}

/// Result of request handling before it is written out.
enum Answer {
    Error(TurnError),
    /// An error that needs REALM and NONCE (401, 438).
    Challenge(TurnError),
    /// 420 with the unknown attribute types.
    Unknown([u16; 8], usize),
}

/// A request handled without error.
enum Done {
    Reply(usize),
    /// A Connect under way.
    Pending,
    /// ConnectionBind: reply, then pipe.
    Bind(usize, super::ConnectionId),
}

impl Server {
    pub fn new(nonces: NonceKey) -> Server {
        Server {
            nonces,
            allocs: Vec::new(),
            free: Vec::new(),
            by_client: FxHashMap::default(),
            by_relay: FxHashMap::default(),
            per_user: FxHashMap::default(),
            deadlines: Deadlines::default(),
            next_serial: 0,
            next_peer_check: None,
            indication_seq: 0,
            stats: Stats::default(),
            clusters: Tally::default(),
            peer_conns: FxHashMap::default(),
            next_conn: 0,
        }
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
            ClientOutput::Reply(_) | ClientOutput::Pending | ClientOutput::Bind { .. } => {}
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

    /// Expire allocations, permissions and channels whose time has come (only those:
    /// the deadlines are kept earliest first), and time out RFC 6062 peer connections.
    pub fn handle_timeout(&mut self, now: Now, relays: &mut dyn Relays) {
        while let Some((at, id, serial)) = self.deadlines.pop_due(now.mono) {
            let Some(a) = self
                .alloc_mut(id)
                .filter(|a| a.serial == serial && a.scheduled == at)
            else {
                continue; // gone, or rescheduled to an earlier time since
            };
            if a.expires <= now.mono {
                self.stats.allocations_expired += 1;
                self.delete(id, DeleteReason::Expired, now.mono, relays);
                continue;
            }
            a.perms.retain(|p| p.expires > now.mono);
            a.channels.retain(|c| c.expires > now.mono);
            let next = a.next_deadline();
            a.scheduled = next;
            self.deadlines.push(next, id, serial);
        }
        if self.peer_conns.is_empty() {
            self.next_peer_check = None;
        } else if self.next_peer_check.is_none_or(|t| t <= now.mono) {
            self.expire_peer_conns(now, relays);
            self.next_peer_check = Some(now.mono + SWEEP_INTERVAL);
        }
    }

    /// After a request that set a lifetime (Refresh, CreatePermission, ChannelBind): if the
    /// allocation now needs the timer sooner than scheduled, schedule it sooner (a later
    /// time is found when the scheduled one comes).
    fn reschedule(&mut self, ctx: ClientCtx) {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let Some(&id) = self.by_client.get(&five) else {
            return;
        };
        let Some(a) = self.alloc_mut(id) else {
            return;
        };
        let next = a.next_deadline();
        if next < a.scheduled {
            a.scheduled = next;
            let serial = a.serial;
            self.deadlines.push(next, id, serial);
        }
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

    // ----- client to peer ---------------------------------------------------------------

    /// The fast path: ChannelData from a client goes to its bound peer.
    fn channel_data_from_client<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        bytes: &'a [u8],
    ) -> ClientOutput<'a> {
        let Ok(cd) = ChannelData::parse(bytes) else {
            return ClientOutput::Drop(DropReason::Malformed);
        };
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let Some(&id) = self.by_client.get(&five) else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        let Some(Some(a)) = self.allocs.get_mut(id as usize) else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        if a.expires <= now.mono {
            return ClientOutput::Drop(DropReason::NoAllocation);
        }
        let relay = a.relay;
        let Some(i) = a
            .channels
            .iter()
            .position(|c| c.number == cd.number && c.expires > now.mono)
        else {
            return ClientOutput::Drop(DropReason::NoPermission);
        };
        if a.channels[i].admitted_gen != snap.generation {
            // The config changed since this channel was admitted: ask the policy again.
            let peer = a.channels[i].peer;
            let cluster = match admit_for(a, snap, peer) {
                Ok(c) => c,
                Err(why) => return ClientOutput::Drop(refused(a, peer, why, now.unix)),
            };
            a.channels[i].admitted_gen = snap.generation;
            a.channels[i].cluster = cluster;
        }
        let (peer, cluster) = (a.channels[i].peer, a.channels[i].cluster);
        a.traffic.to_peer_packets += 1;
        a.traffic.to_peer_bytes += cd.data.len() as u64;
        self.clusters.count(snap, cluster, true, cd.data.len());
        ClientOutput::Forward {
            relay,
            peer,
            payload: cd.data,
        }
    }

    fn stun_from_client<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: Message<'a>,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> ClientOutput<'a> {
        match (msg.class(), msg.method()) {
            (Class::Indication, Method::Send) => self.send_indication(now, snap, ctx, msg),
            (Class::Indication, _) => ClientOutput::Drop(DropReason::Unexpected),
            (Class::Success | Class::Error, _) => ClientOutput::Drop(DropReason::Unexpected),
            (Class::Request, method) => {
                let res = self.request(now, snap, ctx, &msg, method, out, relays);
                self.finish_request(now, snap, ctx, &msg, res, out)
            }
        }
    }

    fn send_indication<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: Message<'a>,
    ) -> ClientOutput<'a> {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let Some(id) = self.by_client.get(&five).copied() else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        let (Some(peer), Some(data)) = (msg.get(XOR_PEER_ADDRESS), msg.get(DATA)) else {
            return ClientOutput::Drop(DropReason::Malformed);
        };
        let Ok(peer) = attr::decode_xor_addr(peer, msg.transaction_id()) else {
            return ClientOutput::Drop(DropReason::Malformed);
        };
        let peer = policy::canonical(peer);
        let Some(Some(a)) = self.allocs.get_mut(id as usize) else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        if a.expires <= now.mono {
            return ClientOutput::Drop(DropReason::NoAllocation);
        }
        // A TCP allocation relays over peer connections only (RFC 6062).
        if a.tcp || !a.permits(peer, now.mono) {
            return ClientOutput::Drop(DropReason::NoPermission);
        }
        let cluster = match admit_for(a, snap, peer) {
            Ok(c) => c,
            Err(why) => return ClientOutput::Drop(refused(a, peer, why, now.unix)),
        };
        let relay = a.relay;
        a.traffic.to_peer_packets += 1;
        a.traffic.to_peer_bytes += data.len() as u64;
        self.clusters.count(snap, cluster, true, data.len());
        ClientOutput::Forward {
            relay,
            peer,
            payload: data,
        }
    }

    // ----- requests ---------------------------------------------------------------------

    /// Handle a request; `Ok(Some(auth))` means a success response is already written
    /// (its attributes, before integrity), `Ok(None)` a response that needs no integrity.
    fn request(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        method: Method,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> Result<Done, (Answer, Option<Authenticated>)> {
        let mut unknown = [0u16; 8];
        let mut n = 0;
        for a in msg.attrs() {
            if !attr::is_understood(a.typ) && n < unknown.len() {
                unknown[n] = a.typ;
                n += 1;
            }
        }
        if n > 0 {
            return Err((Answer::Unknown(unknown, n), None));
        }
        if method == Method::Binding {
            return self
                .binding(ctx, msg, out)
                .map(Done::Reply)
                .map_err(|e| (e, None));
        }
        let tcp_method = matches!(method, Method::Connect | Method::ConnectionBind);
        if !(matches!(
            method,
            Method::Allocate | Method::Refresh | Method::CreatePermission | Method::ChannelBind
        ) || tcp_method && ctx.stream)
        {
            // Unknown methods, and RFC 6062 methods on a UDP transport.
            return Err((Answer::Error(TurnError::BadRequest), None));
        }
        // RFC 6062 clients (coturn's among them) send ConnectionBind on a new connection
        // with the nonce of their control connection: it is accepted for the allocation
        // the CONNECTION-ID names, from the same IP.
        let also = if method == Method::ConnectionBind {
            self.control_client_of(msg, ctx.client)
        } else {
            None
        };
        // The allocation the request is about: its own credential stays valid through a
        // secret rotation. A ConnectionBind is about the allocation its CONNECTION-ID names.
        let about = if method == Method::ConnectionBind {
            self.connection_alloc(msg)
        } else {
            self.by_client
                .get(&FiveTuple {
                    transport: ctx.transport,
                    client: ctx.client,
                })
                .copied()
        };
        let held = about
            .and_then(|id| self.alloc(id))
            .and_then(|a| a.held.as_ref());
        let auth = auth::authenticate(snap, &self.nonces, now.unix, ctx.client, also, held, msg)
            .map_err(|e| {
                match e {
                    AuthError::Challenge => self.stats.auth_challenges += 1,
                    AuthError::StaleNonce => self.stats.stale_nonces += 1,
                    _ => self.stats.auth_failures += 1,
                }
                if let AuthError::Rejected(why) = e {
                    auth_failed(now, snap, ctx, msg, why);
                }
                let ans = match e {
                    AuthError::Malformed => Answer::Error(TurnError::BadRequest),
                    other => Answer::Challenge(other.error()),
                };
                (ans, None)
            })?;
        let res = match method {
            Method::Allocate => self
                .allocate(now, snap, ctx, msg, &auth, out, relays)
                .map(Done::Reply),
            Method::Refresh => self
                .refresh(now, ctx, msg, &auth, out, relays)
                .map(Done::Reply),
            Method::CreatePermission => self
                .create_permission(now, snap, ctx, msg, &auth, out)
                .map(Done::Reply),
            Method::Connect => self
                .connect(now, snap, ctx, msg, &auth, relays)
                .map(|()| Done::Pending),
            Method::ConnectionBind => self
                .connection_bind(now, ctx, msg, &auth, out)
                .map(|(len, conn)| Done::Bind(len, conn)),
            _ => self
                .channel_bind(now, snap, ctx, msg, &auth, out)
                .map(Done::Reply),
        };
        if res.is_ok()
            && matches!(
                method,
                Method::Refresh | Method::CreatePermission | Method::ChannelBind
            )
        {
            self.reschedule(ctx);
        }
        match res {
            Ok(r) => Ok(r),
            Err(code) => Err((Answer::Error(code), Some(auth))),
        }
    }

    fn binding(
        &mut self,
        ctx: ClientCtx,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Result<usize, Answer> {
        let mut w = MessageWriter::new(out, Method::Binding, Class::Success, msg.transaction_id())
            .map_err(|_| Answer::Error(TurnError::ServerError))?;
        w.add_xor_addr(XOR_MAPPED_ADDRESS, ctx.client)
            .map_err(|_| Answer::Error(TurnError::ServerError))?;
        // Binding responses always carry FINGERPRINT, as upstream and ICE agents expect.
        w.add_fingerprint()
            .map_err(|_| Answer::Error(TurnError::ServerError))?;
        Ok(w.finish())
    }

    fn allocate(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> Result<usize, TurnError> {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        if let Some(&id) = self.by_client.get(&five) {
            let a = self.alloc(id).ok_or(TurnError::ServerError)?;
            // A retransmit of the request that created it gets the same answer.
            if &a.alloc_tid == msg.transaction_id() && a.alloc_response.len() <= out.len() {
                out[..a.alloc_response.len()].copy_from_slice(&a.alloc_response);
                return Ok(a.alloc_response.len());
            }
            return Err(TurnError::AllocationMismatch);
        }
        let transport = msg
            .get(REQUESTED_TRANSPORT)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| attr::decode_requested_transport(v).map_err(|_| TurnError::BadRequest))?;
        let tcp = match transport {
            attr::PROTO_UDP => false,
            // RFC 6062 section 5.1: TCP relaying only for clients on TCP/TLS.
            attr::PROTO_TCP if ctx.stream => true,
            attr::PROTO_TCP => return Err(TurnError::BadRequest),
            _ => return Err(TurnError::UnsupportedTransportProtocol),
        };
        let even_port = msg
            .get(EVEN_PORT)
            .map(attr::decode_even_port)
            .transpose()
            .map_err(|_| TurnError::BadRequest)?;
        let token = msg
            .get(RESERVATION_TOKEN)
            .map(attr::decode_token)
            .transpose()
            .map_err(|_| TurnError::BadRequest)?;
        let family = requested_family(msg)?;
        if token.is_some() && (even_port.is_some() || family.is_some()) {
            return Err(TurnError::BadRequest);
        }
        // RFC 6062 section 5.1: no port reservations for TCP relays.
        if tcp && (token.is_some() || even_port.is_some()) {
            return Err(TurnError::BadRequest);
        }
        let listener = snap
            .listeners
            .get(ctx.listener)
            .ok_or(TurnError::ServerError)?;
        // The relayed address advertises the listener address, so the family follows it.
        let listener_family = Family::of(listener.relay_ip);
        if family.is_some_and(|f| f != listener_family) {
            return Err(TurnError::AddressFamilyNotSupported);
        }
        let user_count = self.per_user.get(auth.user()).copied().unwrap_or(0);
        if snap.user_quota > 0 && user_count >= snap.user_quota {
            return Err(TurnError::AllocationQuotaReached);
        }
        if self.by_client.len() >= MAX_ALLOCATIONS {
            return Err(TurnError::InsufficientCapacity);
        }
        let lifetime = granted_lifetime(msg)?;

        let req = RelayRequest {
            family: listener_family,
            port: match (token, even_port) {
                (Some(token), _) => PortRequest::Reserved(token),
                (None, Some(reserve_next)) => PortRequest::Even { reserve_next },
                (None, None) => PortRequest::Any,
            },
            dont_fragment: msg.get(DONT_FRAGMENT).is_some(),
            range: listener.relay_ports,
            tcp,
        };
        let opened = relays
            .open(req)
            .map_err(|_| TurnError::InsufficientCapacity)?;
        let (relay, port, reservation_token) = (opened.relay, opened.port, opened.token);
        let relayed = SocketAddr::new(listener.relay_ip, port);

        let mut w = MessageWriter::new(out, Method::Allocate, Class::Success, msg.transaction_id())
            .map_err(|_| TurnError::ServerError)?;
        let written = (|| -> Result<(), StunError> {
            w.add_xor_addr(XOR_RELAYED_ADDRESS, relayed)?;
            w.add_u32(LIFETIME, lifetime.as_secs() as u32)?;
            w.add_xor_addr(XOR_MAPPED_ADDRESS, ctx.client)?;
            if let Some(t) = reservation_token {
                w.add(RESERVATION_TOKEN, &t.to_be_bytes())?;
            }
            Ok(())
        })();
        let sealed = written
            .map_err(|_| TurnError::ServerError)
            .and_then(|()| seal(w, auth, msg));
        let Ok(len) = sealed else {
            relays.close(relay);
            return Err(TurnError::ServerError);
        };
        let allocation = Allocation {
            id: session::next_id(),
            five,
            transport: logs::transport_name(listener.protocol),
            server: SocketAddr::new(listener.relay_ip, listener.port),
            created: now.mono,
            created_unix: now.unix,
            traffic: Traffic::default(),
            listener: listener.name.clone(),
            listener_at: (snap.generation, ctx.listener),
            user: auth.user().clone(),
            relay,
            relayed,
            expires: now.mono + lifetime,
            alloc_tid: *msg.transaction_id(),
            alloc_response: out[..len].to_vec(),
            serial: 0,
            scheduled: now.mono + lifetime,
            perms: Vec::new(),
            channels: Vec::new(),
            tcp,
            held: auth.held_credential(msg),
        };
        tracing::info!(
            target: "turn",
            "session {} created: user {}, client {} {} -> {} (listener {}), relayed {} ({}), lifetime {}s",
            allocation.id,
            Shown(&allocation.user),
            allocation.transport,
            allocation.five.client,
            allocation.server,
            allocation.listener,
            allocation.relayed,
            if tcp { "tcp" } else { "udp" },
            lifetime.as_secs()
        );
        self.insert(allocation);
        self.stats.allocations_created += 1;
        Ok(len)
    }

    fn refresh(
        &mut self,
        now: Now,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> Result<usize, TurnError> {
        let id = self.owned(ctx, auth)?;
        let lifetime = match msg.get(LIFETIME).map(attr::decode_u32) {
            Some(Ok(0)) => Duration::ZERO,
            Some(Err(_)) => return Err(TurnError::BadRequest),
            _ => granted_lifetime(msg)?,
        };
        if let Some(fam) = requested_family(msg)? {
            let a = self.alloc(id).ok_or(TurnError::ServerError)?;
            if Family::of(a.relayed.ip()) != fam {
                return Err(TurnError::PeerAddressFamilyMismatch);
            }
        }
        if lifetime.is_zero() {
            self.delete(id, DeleteReason::Refreshed0, now.mono, relays);
        } else if let Some(a) = self.alloc_mut(id) {
            a.expires = now.mono + lifetime;
        }
        let mut w = MessageWriter::new(out, Method::Refresh, Class::Success, msg.transaction_id())
            .map_err(|_| TurnError::ServerError)?;
        w.add_u32(LIFETIME, lifetime.as_secs() as u32)
            .map_err(|_| TurnError::ServerError)?;
        seal(w, auth, msg)
    }

    fn create_permission(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> Result<usize, TurnError> {
        let id = self.owned(ctx, auth)?;
        let a = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(TurnError::ServerError)?;
        // Check every peer first: the request installs all of them or none.
        let mut peers = [IpAddr::from([0u8; 4]); 16];
        let mut n = 0;
        for at in msg.attrs().filter(|at| at.typ == XOR_PEER_ADDRESS) {
            let peer = attr::decode_xor_addr(at.value, msg.transaction_id())
                .map_err(|_| TurnError::BadRequest)?;
            let peer = policy::canonical(peer);
            if Family::of(peer.ip()) != Family::of(a.relayed.ip()) {
                return Err(TurnError::PeerAddressFamilyMismatch);
            }
            // A permission is for an IP; admission of the port happens per packet.
            if let Err(why) = admits_ip(a, snap, peer.ip()) {
                refused(a, peer.ip(), why, now.unix);
                return Err(TurnError::Forbidden);
            }
            if n == peers.len() {
                return Err(TurnError::BadRequest);
            }
            peers[n] = peer.ip();
            n += 1;
        }
        if n == 0 {
            return Err(TurnError::BadRequest);
        }
        for ip in &peers[..n] {
            a.install_permission(*ip, now.mono)?;
        }
        let w = MessageWriter::new(
            out,
            Method::CreatePermission,
            Class::Success,
            msg.transaction_id(),
        )
        .map_err(|_| TurnError::ServerError)?;
        seal(w, auth, msg)
    }

    fn channel_bind(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> Result<usize, TurnError> {
        let id = self.owned(ctx, auth)?;
        let number = msg
            .get(CHANNEL_NUMBER)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| attr::decode_channel_number(v).map_err(|_| TurnError::BadRequest))?;
        // RFC 8656 narrowed channels to 0x4000-0x4FFF, but RFC 5766 clients, coturn's
        // turnutils_uclient among them, pick numbers up to 0x7FFF: accept the old range,
        // which ChannelData framing still distinguishes from STUN.
        if !CHANNEL_RANGE.contains(&number) {
            tracing::debug!(target: "turn", "channel number {number:#x} out of range");
            return Err(TurnError::BadRequest);
        }
        let peer = msg
            .get(XOR_PEER_ADDRESS)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| {
                attr::decode_xor_addr(v, msg.transaction_id()).map_err(|_| TurnError::BadRequest)
            })?;
        let peer = policy::canonical(peer);
        let a = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(TurnError::ServerError)?;
        if a.tcp {
            return Err(TurnError::BadRequest);
        }
        if Family::of(peer.ip()) != Family::of(a.relayed.ip()) {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        let cluster = admit_for(a, snap, peer).map_err(|why| {
            refused(a, peer, why, now.unix);
            TurnError::Forbidden
        })?;
        let expires = now.mono + CHANNEL_LIFETIME;
        let by_number = a.channels.iter().position(|c| c.number == number);
        let by_peer = a.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(i), Some(j)) if i == j => {
                a.channels[i].expires = expires;
                a.channels[i].admitted_gen = snap.generation;
                a.channels[i].cluster = cluster;
            }
            (None, None) => {
                if a.channels.len() >= MAX_CHANNELS {
                    return Err(TurnError::InsufficientCapacity);
                }
                a.channels.push(Channel {
                    number,
                    peer,
                    expires,
                    admitted_gen: snap.generation,
                    cluster,
                });
            }
            // The number is bound to another peer, or the peer to another number.
            _ => return Err(TurnError::BadRequest),
        }
        a.install_permission(peer.ip(), now.mono)?;
        let w = MessageWriter::new(
            out,
            Method::ChannelBind,
            Class::Success,
            msg.transaction_id(),
        )
        .map_err(|_| TurnError::ServerError)?;
        seal(w, auth, msg)
    }

    /// The allocation of this 5-tuple, checked to belong to the authenticated user.
    fn owned(&self, ctx: ClientCtx, auth: &Authenticated) -> Result<u32, TurnError> {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let id = *self
            .by_client
            .get(&five)
            .ok_or(TurnError::AllocationMismatch)?;
        let a = self.alloc(id).ok_or(TurnError::AllocationMismatch)?;
        if a.user != *auth.user() {
            return Err(TurnError::WrongCredentials);
        }
        Ok(id)
    }

    /// Turn a request's result into the reply: success responses are already complete in
    /// `out`; errors are written now.
    fn finish_request<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        res: Result<Done, (Answer, Option<Authenticated>)>,
        out: &mut [u8],
    ) -> ClientOutput<'a> {
        let (answer, auth) = match res {
            Ok(Done::Reply(len)) => return ClientOutput::Reply(len),
            Ok(Done::Pending) => return ClientOutput::Pending,
            Ok(Done::Bind(len, conn)) => return ClientOutput::Bind { len, conn },
            Err(e) => e,
        };
        self.stats.error_responses += 1;
        tracing::debug!(
            target: "turn",
            "{:?} request from {}: {}",
            msg.method(),
            ctx.client,
            match answer {
                Answer::Error(e) | Answer::Challenge(e) => e.code(),
                Answer::Unknown(..) => TurnError::UnknownAttribute.code(),
            }
        );
        match self.write_error(now, snap, ctx, msg, answer, auth.as_ref(), out) {
            Ok(len) => ClientOutput::Reply(len),
            Err(_) => ClientOutput::Drop(DropReason::TooBig),
        }
    }

    fn write_error(
        &self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        answer: Answer,
        auth: Option<&Authenticated>,
        out: &mut [u8],
    ) -> Result<usize, StunError> {
        let mut w = MessageWriter::new(out, msg.method(), Class::Error, msg.transaction_id())?;
        match answer {
            Answer::Error(e) => w.add_error_code(e.code())?,
            Answer::Challenge(e) => {
                w.add_error_code(e.code())?;
                w.add(REALM, snap.realm.as_bytes())?;
                w.add(NONCE, &self.nonces.make(now.unix, ctx.client))?;
            }
            Answer::Unknown(types, n) => {
                w.add_error_code(TurnError::UnknownAttribute.code())?;
                w.add_unknown_attributes(&types[..n])?;
            }
        }
        if let Some(auth) = auth {
            w.add_integrity(auth.key())?;
        }
        if msg.has_fingerprint() {
            w.add_fingerprint()?;
        }
        Ok(w.finish())
    }

    // ----- peer to client ---------------------------------------------------------------

    fn peer_to_client<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        relay: RelayId,
        peer: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
        scratch: &'a mut [u8],
    ) -> Result<ToClient<'a>, DropReason> {
        let id = *self.by_relay.get(&relay).ok_or(DropReason::NoAllocation)?;
        let seq = self.indication_seq;
        let a = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(DropReason::NoAllocation)?;
        if a.expires <= now.mono {
            return Err(DropReason::NoAllocation);
        }
        let peer = policy::canonical(peer);
        let five = a.five;
        if let Some(ch) = a
            .channels
            .iter_mut()
            .find(|c| c.peer == peer && c.expires > now.mono)
        {
            if ch.admitted_gen != snap.generation {
                let admitted = snap
                    .listener(&a.listener)
                    .and_then(|(_, l)| policy::admit(snap, l, peer).ok());
                let Some(cluster) = admitted else {
                    return Err(DropReason::Forbidden);
                };
                ch.admitted_gen = snap.generation;
                ch.cluster = cluster;
            }
            let (number, cluster) = (ch.number, ch.cluster);
            a.traffic.to_client_packets += 1;
            a.traffic.to_client_bytes += len as u64;
            self.clusters.count(snap, cluster, false, len);
            let data_len = u16::try_from(len).map_err(|_| DropReason::TooBig)?;
            let frame = buf.get_mut(..HEADROOM + len).ok_or(DropReason::TooBig)?;
            let (head, _) = frame
                .split_first_chunk_mut::<CHANNEL_HEADER_LEN>()
                .ok_or(DropReason::TooBig)?;
            write_channel_header(head, number, data_len);
            return Ok(ToClient {
                transport: five.transport,
                client: five.client,
                bytes: frame,
            });
        }
        if a.tcp || !a.permits(peer, now.mono) {
            return Err(DropReason::NoPermission);
        }
        if let Err(why) = admit_for(a, snap, peer) {
            return Err(refused(a, peer, why, now.unix));
        }
        let payload = buf
            .get(HEADROOM..HEADROOM + len)
            .ok_or(DropReason::TooBig)?;
        a.traffic.to_client_packets += 1;
        a.traffic.to_client_bytes += len as u64;
        self.indication_seq = seq.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&seq.to_be_bytes());
        tid[8..].copy_from_slice(&id.to_be_bytes());
        let mut w = MessageWriter::new(scratch, Method::Data, Class::Indication, &tid)
            .map_err(|_| DropReason::TooBig)?;
        w.add_xor_addr(XOR_PEER_ADDRESS, peer)
            .map_err(|_| DropReason::TooBig)?;
        w.add(DATA, payload).map_err(|_| DropReason::TooBig)?;
        let n = w.finish();
        Ok(ToClient {
            transport: five.transport,
            client: five.client,
            bytes: &scratch[..n],
        })
    }

    // ----- the allocation table ---------------------------------------------------------

    fn alloc(&self, id: u32) -> Option<&Allocation> {
        self.allocs.get(id as usize).and_then(Option::as_ref)
    }

    fn alloc_mut(&mut self, id: u32) -> Option<&mut Allocation> {
        self.allocs.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn insert(&mut self, mut a: Allocation) {
        let five = a.five;
        let relay = a.relay;
        a.serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        let (serial, scheduled) = (a.serial, a.next_deadline());
        a.scheduled = scheduled;
        *self.per_user.entry(a.user.clone()).or_insert(0) += 1;
        let id = match self.free.pop() {
            Some(id) => {
                self.allocs[id as usize] = Some(a);
                id
            }
            None => {
                self.allocs.push(Some(a));
                (self.allocs.len() - 1) as u32
            }
        };
        self.by_client.insert(five, id);
        self.by_relay.insert(relay, id);
        self.deadlines.push(scheduled, id, serial);
    }

    fn delete(&mut self, id: u32, reason: DeleteReason, now: Instant, relays: &mut dyn Relays) {
        let Some(a) = self.allocs.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        let t = &a.traffic;
        tracing::info!(
            target: "turn",
            "session {} deleted: user {}, client {} {} -> {}, relayed {}, duration {:.1}s, \
             to peers {} packets {} bytes, to client {} packets {} bytes, reason: {}",
            a.id,
            Shown(&a.user),
            a.transport,
            a.five.client,
            a.server,
            a.relayed,
            now.saturating_duration_since(a.created).as_secs_f64(),
            t.to_peer_packets,
            t.to_peer_bytes,
            t.to_client_packets,
            t.to_client_bytes,
            reason.as_str()
        );
        self.free.push(id);
        self.by_client.remove(&a.five);
        self.by_relay.remove(&a.relay);
        if let Some(n) = self.per_user.get_mut(&a.user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.user);
            }
        }
        self.close_peer_conns_of(id, relays);
        relays.close(a.relay);
        self.stats.allocations_deleted += 1;
    }
}

/// Log a failed authentication (rate-limited, see [`logs`]): the user and realm the
/// client sent, its address and transport, and why. Never the password or key.
fn auth_failed(now: Now, snap: &Snapshot, ctx: ClientCtx, msg: &Message<'_>, why: auth::Rejection) {
    let Some(n) = logs::AUTH_FAILURES.admit(now.unix) else {
        return;
    };
    let text = |typ| {
        msg.get(typ)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let transport = snap
        .listeners
        .get(ctx.listener)
        .map_or("?", |l| logs::transport_name(l.protocol));
    tracing::info!(
        target: "auth",
        "authentication failed: user {}, realm {}, client {transport} {}: {}{}",
        Shown(&text(USERNAME)),
        Shown(&text(REALM)),
        ctx.client,
        why.as_str(),
        Suppressed(n)
    );
}

/// Add MESSAGE-INTEGRITY, and FINGERPRINT when the request had one, and finish.
fn seal(
    mut w: MessageWriter<'_>,
    auth: &Authenticated,
    msg: &Message<'_>,
) -> Result<usize, TurnError> {
    w.add_integrity(auth.key())
        .map_err(|_| TurnError::ServerError)?;
    if msg.has_fingerprint() {
        w.add_fingerprint().map_err(|_| TurnError::ServerError)?;
    }
    Ok(w.finish())
}

impl Allocation {
    /// When this allocation next needs the timer: its expiry, or an earlier expiry of one
    /// of its permissions or channels.
    fn next_deadline(&self) -> Instant {
        let perms = self.perms.iter().map(|p| p.expires);
        let channels = self.channels.iter().map(|c| c.expires);
        perms
            .chain(channels)
            .fold(self.expires, |earliest, t| earliest.min(t))
    }

    /// Whether a live permission (or channel, which implies one) covers `peer`'s IP.
    fn permits(&self, peer: SocketAddr, now: Instant) -> bool {
        let ip = peer.ip();
        self.perms.iter().any(|p| p.ip == ip && p.expires > now)
            || self
                .channels
                .iter()
                .any(|c| c.peer.ip() == ip && c.expires > now)
    }

    fn install_permission(&mut self, ip: IpAddr, now: Instant) -> Result<(), TurnError> {
        let expires = now + PERMISSION_LIFETIME;
        if let Some(p) = self.perms.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            return Ok(());
        }
        self.perms.retain(|p| p.expires > now);
        if self.perms.len() >= MAX_PERMISSIONS {
            return Err(TurnError::InsufficientCapacity);
        }
        self.perms.push(Permission { ip, expires });
        Ok(())
    }
}

/// Why a peer was not admitted for an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// The allocation's listener is gone from the config (it is about to close).
    NoListener,
    /// The policy refused the peer.
    Policy(policy::Denied),
}

impl Refused {
    fn drop_reason(self) -> DropReason {
        match self {
            Refused::NoListener => DropReason::NoListener,
            Refused::Policy(_) => DropReason::Forbidden,
        }
    }
}

/// Peer admission for an allocation: resolve its listener in this snapshot, then ask the
/// one policy function.
fn admit_for(a: &mut Allocation, snap: &Snapshot, peer: SocketAddr) -> Result<ClusterIdx, Refused> {
    let listener = listener_of(a, snap).ok_or(Refused::NoListener)?;
    policy::admit(snap, listener, peer).map_err(Refused::Policy)
}

/// Whether any port of `ip` could be admitted (permissions are per IP).
fn admits_ip(a: &mut Allocation, snap: &Snapshot, ip: IpAddr) -> Result<ClusterIdx, Refused> {
    let listener = listener_of(a, snap).ok_or(Refused::NoListener)?;
    policy::admit_ip(snap, listener, ip).map_err(Refused::Policy)
}

/// Log a refused peer (rate-limited, see [`logs`]); returns the drop reason to count.
fn refused(a: &Allocation, peer: impl std::fmt::Display, why: Refused, unix: u64) -> DropReason {
    if let Refused::Policy(rule) = why {
        if let Some(n) = logs::REFUSED_PEERS.admit(unix) {
            tracing::info!(
                target: "turn",
                "peer refused: user {}, client {} {}, peer {peer}: {}{}",
                Shown(&a.user),
                a.transport,
                a.five.client,
                rule.as_str(),
                Suppressed(n)
            );
        }
    }
    why.drop_reason()
}

fn listener_of<'s>(
    a: &mut Allocation,
    snap: &'s Snapshot,
) -> Option<&'s crate::snapshot::Listener> {
    let (generation, idx) = a.listener_at;
    if generation == snap.generation {
        return snap.listeners.get(idx);
    }
    let (idx, l) = snap.listener(&a.listener)?;
    a.listener_at = (snap.generation, idx);
    Some(l)
}

/// REQUESTED-ADDRESS-FAMILY, if present: 440 for an unknown family, 400 if malformed.
fn requested_family(msg: &Message<'_>) -> Result<Option<Family>, TurnError> {
    msg.get(REQUESTED_ADDRESS_FAMILY)
        .map(|v| match attr::decode_family(v) {
            Ok(attr::FAMILY_IPV4) => Ok(Family::V4),
            Ok(attr::FAMILY_IPV6) => Ok(Family::V6),
            Ok(_) => Err(TurnError::AddressFamilyNotSupported),
            Err(_) => Err(TurnError::BadRequest),
        })
        .transpose()
}

/// Lifetime for Allocate and Refresh: the request's LIFETIME clamped to
/// [DEFAULT_LIFETIME, MAX_LIFETIME] (RFC 8656 section 7.2).
fn granted_lifetime(msg: &Message<'_>) -> Result<Duration, TurnError> {
    match msg.get(LIFETIME).map(attr::decode_u32) {
        None => Ok(DEFAULT_LIFETIME),
        Some(Err(_)) => Err(TurnError::BadRequest),
        Some(Ok(secs)) => {
            Ok(Duration::from_secs(u64::from(secs)).clamp(DEFAULT_LIFETIME, MAX_LIFETIME))
        }
    }
}
