//! Sessions as an operator sees them: one per allocation, listed and ended through the
//! admin server (`GET /sessions`, `DELETE /sessions/ID`) and `stunnerd sessions`.
//!
//! A worker's core answers for its own allocations ([`super::Server::sessions`],
//! [`super::Server::kill`]); the admin side gathers the answers of every worker. Nothing
//! here holds a password, key or secret: a session shows its user id, addresses, peers,
//! channels, counters and times.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Session ids: unique in the process, never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Packets and bytes relayed for one allocation, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// From the client, relayed to peers (payload bytes).
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    /// From peers, relayed to the client (payload bytes).
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// Why an allocation ended; named in the "deleted" log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its lifetime ran out without a Refresh.
    Expired,
    /// The client sent a Refresh with LIFETIME 0.
    Refreshed0,
    /// An operator ended it (`DELETE /sessions/...`, `stunnerd sessions kill`).
    Killed,
    /// The daemon stopped.
    Shutdown,
    /// The client's TCP/TLS connection or DTLS session closed.
    ConnectionClosed,
    /// Its listener was removed or restarted by a new config.
    ListenerClosed,
}

impl DeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Expired => "expired",
            DeleteReason::Refreshed0 => "refreshed to 0",
            DeleteReason::Killed => "killed",
            DeleteReason::Shutdown => "shutdown",
            DeleteReason::ConnectionClosed => "client connection closed",
            DeleteReason::ListenerClosed => "listener closed",
        }
    }
}

/// Which sessions to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Id(u64),
    /// Every session of this user id (the REST user part for ephemeral credentials).
    User(String),
}

/// A permission of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub ip: IpAddr,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// A channel binding of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires_in: u64,
}

/// An RFC 6062 peer connection of a TCP allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The CONNECTION-ID.
    pub id: u32,
    pub peer: SocketAddr,
    /// `connecting`, `ready` (waiting for ConnectionBind) or `bound`.
    pub state: &'static str,
}

/// One live allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub listener: String,
    /// The client's transport: `udp`, `tcp`, `tls` or `dtls`.
    pub transport: &'static str,
    pub client: SocketAddr,
    /// The server side of the client's 5-tuple: the listener's address and port.
    pub server: SocketAddr,
    pub relayed: SocketAddr,
    /// `udp`, or `tcp` for an RFC 6062 allocation.
    pub relay_transport: &'static str,
    pub peers: Vec<PeerInfo>,
    pub channels: Vec<ChannelInfo>,
    pub connections: Vec<ConnectionInfo>,
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Unix time it was created.
    pub created: u64,
    /// Seconds since it was created.
    pub age: u64,
    /// Seconds until it expires without a Refresh.
    pub expires_in: u64,
}
