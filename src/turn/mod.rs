//! The TURN server state machine of one worker (RFC 8656), sans-IO.
//!
//! A [`Server`] owns its allocations, permissions, channels and timers with `&mut self`;
//! nothing here is shared or locked. Inputs are `handle_*` calls with an explicit [`Now`];
//! outputs are return values that borrow the caller's buffers. Relay sockets are opened and
//! closed through the [`Relays`] trait, so the core never touches a socket itself.

pub mod auth;
pub mod bucket;
pub mod logs;
pub mod policy;
mod server;
pub mod session;
mod tally;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use server::Server;
pub use tally::ClusterTraffic;

/// Default allocation lifetime (RFC 8656 section 3.2).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Longest lifetime a client may ask for.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Permission lifetime (RFC 8656 section 9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 section 12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long a RESERVATION-TOKEN holds its port.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Bounds on per-allocation state.
pub const MAX_PERMISSIONS: usize = 256;
pub const MAX_CHANNELS: usize = 256;
/// RFC 6062: how long a Connect may take, and how long a peer connection waits for its
/// ConnectionBind.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const BIND_WINDOW: Duration = Duration::from_secs(30);
/// Bound on peer connections (pending, ready or bound) per TCP allocation.
pub const MAX_PEER_CONNECTIONS: usize = 64;
/// Bound on allocations one worker holds.
pub const MAX_ALLOCATIONS: usize = 500_000;
/// Headroom the shell leaves in front of a peer datagram, so a ChannelData header can be
/// written in place.
pub const HEADROOM: usize = 4;

/// The time inputs of the core: a monotonic instant for timers and wall-clock seconds for
/// nonces and REST credential expiry. The shell reads the clocks ([`crate::transport::now`]);
/// the core never does (clippy's `disallowed-methods`).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    pub fn advance(self, by: Duration) -> Now {
        Now {
            mono: self.mono + by,
            unix: self.unix + by.as_secs(),
        }
    }
}

/// A client-facing socket or connection of the worker (opaque to the core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransportId(pub u32);

/// A relay socket of the worker (opaque to the core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayId(pub u32);

/// The client side of an allocation's 5-tuple: the server transport it arrived on (which
/// fixes protocol and server address) and the client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: TransportId,
    pub client: SocketAddr,
}

/// Where a client message came from.
#[derive(Clone, Copy, Debug)]
pub struct ClientCtx {
    pub transport: TransportId,
    /// The listener in the current snapshot this transport belongs to.
    pub listener: crate::snapshot::ListenerIdx,
    pub client: SocketAddr,
    /// Whether the client's own transport is a stream (TCP/TLS): only those may ask for
    /// RFC 6062 TCP allocations, Connect and ConnectionBind.
    pub stream: bool,
}

/// A TCP connection to a peer of an RFC 6062 allocation; its number is the CONNECTION-ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

/// What to do with a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOutput<'a> {
    /// Nothing to send; counted under the reason.
    Drop(DropReason),
    /// A response of this many bytes is in the output buffer: send it back to the client.
    Reply(usize),
    /// The same, to a request whose source has not shown that it receives what we send
    /// (no valid nonce: a Binding, a 401 challenge, a 438, a 400 or 420). Its source address
    /// may be spoofed, so a UDP shell bounds how many bytes of these beyond the request's
    /// own size it sends to one source (RFC 8656 section 21, amplification).
    Unverified(usize),
    /// Send `payload` from `relay` to `peer`.
    Forward {
        relay: RelayId,
        peer: SocketAddr,
        payload: &'a [u8],
    },
    /// Nothing to send now: the shell was asked to connect to a peer (RFC 6062 Connect);
    /// the answer comes from [`Server::handle_connect_result`].
    Pending,
    /// ConnectionBind succeeded: send the response of `len` bytes, then this client
    /// connection becomes a raw byte pipe to peer connection `conn`.
    Bind { len: usize, conn: ConnectionId },
}

/// A message for a client, produced from a peer datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct ToClient<'a> {
    pub transport: TransportId,
    pub client: SocketAddr,
    pub bytes: &'a [u8],
}

/// Address family of a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: std::net::IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Which port a new relay socket should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRequest {
    Any,
    /// An even port; with `reserve_next`, also hold port + 1 for a later allocation
    /// (RFC 8656 EVEN-PORT with the R bit) and return a token for it.
    Even {
        reserve_next: bool,
    },
    /// The port held for this RESERVATION-TOKEN. Reservations live in the shell, shared by
    /// all workers: the allocation that redeems a token comes from another 5-tuple, which
    /// the kernel may hash to another worker.
    Reserved(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayRequest {
    pub family: Family,
    pub port: PortRequest,
    pub dont_fragment: bool,
    /// Inclusive port range to pick from (None: the kernel's ephemeral range).
    pub range: Option<(u16, u16)>,
    /// RFC 6062: a listening TCP socket instead of a UDP socket.
    pub tcp: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub relay: RelayId,
    pub port: u16,
    /// With `Even { reserve_next: true }`: the RESERVATION-TOKEN holding port + 1.
    pub token: Option<u64>,
}

/// The shell, as the core sees it: its relay sockets, and (RFC 6062) the client transports
/// the core writes to on its own. With the return values of the `handle_*` calls this is
/// the core's only way out.
pub trait Relays {
    /// Open a relay socket; an error becomes 508 Insufficient Capacity.
    fn open(&mut self, req: RelayRequest) -> Result<Opened, RelayError>;
    /// Close a relay socket the core no longer uses.
    fn close(&mut self, relay: RelayId);
    /// RFC 6062: start a non-blocking TCP connect from the relayed address of `relay` to
    /// `peer`; the outcome goes to [`Server::handle_connect_result`]. An error is 447.
    fn connect(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        conn: ConnectionId,
    ) -> Result<(), RelayError> {
        let _ = (relay, peer, conn);
        Err(RelayError::Exhausted)
    }
    /// RFC 6062: close a peer connection (and the client data connection bound to it).
    fn close_peer(&mut self, conn: ConnectionId) {
        let _ = conn;
    }
    /// Count one more allocation against `key`'s quota; false: the quota is spent (486).
    /// The shell keeps the counts, across workers.
    fn reserve_quota(&mut self, key: &Arc<str>, quota: Quota) -> bool {
        let _ = (key, quota);
        true
    }
    /// An allocation counted with [`Relays::reserve_quota`] is gone.
    fn release_quota(&mut self, key: &Arc<str>) {
        let _ = key;
    }
    /// RFC 6062: send a message the core made on its own (a ConnectionAttempt indication,
    /// the error answer to a Connect that timed out or lost its route) to a client
    /// transport.
    fn send_to_client(&mut self, transport: TransportId, bytes: &[u8]) {
        let _ = (transport, bytes);
    }
    /// The kernel offload (`admin.offload_engine`): `Some(epoch)` while one runs. The epoch
    /// changes when the offload is loaded anew (its tables start empty), so a route
    /// installed under another epoch is no longer in the kernel.
    fn offload_epoch(&self) -> Option<u64> {
        None
    }
    /// Have the kernel relay `route`'s ChannelData both ways from now on; false: it stays
    /// in user space (no offload, or its table is full).
    fn offload_install(&mut self, route: &OffloadRoute) -> bool {
        let _ = route;
        false
    }
    /// What the kernel relayed for `route` so far (`None`: it is not installed).
    fn offload_read(&mut self, route: &OffloadRoute) -> Option<OffloadCounters> {
        let _ = route;
        None
    }
    /// Stop relaying `route` in the kernel; returns its last counters.
    fn offload_remove(&mut self, route: &OffloadRoute) -> Option<OffloadCounters> {
        let _ = route;
        None
    }
    /// Traffic the kernel relayed for a route on `transport` that the core has just
    /// counted as its own (`delta` since the last report): the shell adds it to the
    /// listener's counters.
    fn offload_counted(&mut self, transport: TransportId, delta: &OffloadCounters) {
        let _ = (transport, delta);
    }
}

/// A channel of a UDP allocation as the kernel relays it (`admin.offload_engine`):
/// `client` -> `listener` ChannelData on `channel` becomes `relay` -> `peer`, and the
/// reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OffloadRoute {
    /// The listener socket the client talks to (its counters get the traffic).
    pub transport: TransportId,
    pub listener: SocketAddr,
    pub client: SocketAddr,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub channel: u16,
}

/// Packets and payload bytes the kernel relayed for one route, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadCounters {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

impl OffloadCounters {
    /// What `self` has beyond `earlier` (a counter read anew never goes backwards; one that
    /// did, restarted, so all of it is new).
    pub fn since(&self, earlier: &OffloadCounters) -> OffloadCounters {
        let d = |now: u64, then: u64| now.checked_sub(then).unwrap_or(now);
        OffloadCounters {
            to_peer_packets: d(self.to_peer_packets, earlier.to_peer_packets),
            to_peer_bytes: d(self.to_peer_bytes, earlier.to_peer_bytes),
            to_client_packets: d(self.to_client_packets, earlier.to_client_packets),
            to_client_bytes: d(self.to_client_bytes, earlier.to_client_bytes),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == OffloadCounters::default()
    }
}

impl std::ops::AddAssign<&OffloadCounters> for OffloadCounters {
    fn add_assign(&mut self, o: &OffloadCounters) {
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.to_client_packets += o.to_client_packets;
        self.to_client_bytes += o.to_client_bytes;
    }
}

/// Which cap an allocation counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    /// `admin.user_quota`, per user.
    Configured(u32),
    /// The shell's default cap per TURN REST credential (when `user_quota` is unset).
    Ephemeral,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("no relay port available")]
    Exhausted,
    #[error("address family not available")]
    Family,
    #[error("unknown or expired reservation token")]
    UnknownToken,
}

/// Why a request failed: the STUN error code the client gets (RFC 8489 section 14.8,
/// RFC 8656 section 19, RFC 6062 section 6.3). The core's request handlers return it; the
/// one place that writes it is the error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnError {
    BadRequest,
    Unauthorized,
    Forbidden,
    UnknownAttribute,
    AllocationMismatch,
    StaleNonce,
    AddressFamilyNotSupported,
    WrongCredentials,
    UnsupportedTransportProtocol,
    PeerAddressFamilyMismatch,
    ConnectionAlreadyExists,
    ConnectionTimeoutOrFailure,
    AllocationQuotaReached,
    ServerError,
    InsufficientCapacity,
}

impl TurnError {
    pub fn code(self) -> u16 {
        match self {
            TurnError::BadRequest => 400,
            TurnError::Unauthorized => 401,
            TurnError::Forbidden => 403,
            TurnError::UnknownAttribute => 420,
            TurnError::AllocationMismatch => 437,
            TurnError::StaleNonce => 438,
            TurnError::AddressFamilyNotSupported => 440,
            TurnError::WrongCredentials => 441,
            TurnError::UnsupportedTransportProtocol => 442,
            TurnError::PeerAddressFamilyMismatch => 443,
            TurnError::ConnectionAlreadyExists => 446,
            TurnError::ConnectionTimeoutOrFailure => 447,
            TurnError::AllocationQuotaReached => 486,
            TurnError::ServerError => 500,
            TurnError::InsufficientCapacity => 508,
        }
    }
}

/// Why a message was dropped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Not parseable as STUN or ChannelData.
    Malformed,
    /// A STUN response or error sent to the server, or an unknown indication.
    Unexpected,
    /// Data for a 5-tuple or relay without an allocation.
    NoAllocation,
    /// A peer without a live permission, or a ChannelData number not bound.
    NoPermission,
    /// The peer is not admitted by the listener's routes.
    Forbidden,
    /// The listener of the allocation is gone from the config.
    NoListener,
    /// An output buffer was too small (a datagram too big for a Data indication).
    TooBig,
    /// Over the allocation's send rate (`--allocation-rate`).
    RateLimited,
}

impl DropReason {
    pub const COUNT: usize = 8;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Unexpected,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::Forbidden,
        DropReason::NoListener,
        DropReason::TooBig,
        DropReason::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Unexpected => "unexpected",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::Forbidden => "forbidden",
            DropReason::NoListener => "no_listener",
            DropReason::TooBig => "too_big",
            DropReason::RateLimited => "rate_limited",
        }
    }
}

/// Plain counters of one worker's core; the shell publishes them for scraping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations_created: u64,
    pub allocations_deleted: u64,
    pub allocations_expired: u64,
    pub auth_challenges: u64,
    pub auth_failures: u64,
    pub stale_nonces: u64,
    pub error_responses: u64,
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl std::ops::AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, s: &Stats) {
        self.allocations_created += s.allocations_created;
        self.allocations_deleted += s.allocations_deleted;
        self.allocations_expired += s.allocations_expired;
        self.auth_challenges += s.auth_challenges;
        self.auth_failures += s.auth_failures;
        self.stale_nonces += s.stale_nonces;
        self.error_responses += s.error_responses;
        self.to_peer_packets += s.to_peer_packets;
        self.to_peer_bytes += s.to_peer_bytes;
        self.to_client_packets += s.to_client_packets;
        self.to_client_bytes += s.to_client_bytes;
        for (a, b) in self.drops.iter_mut().zip(s.drops) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests;
