//! What an endpoint sees of its worker while it handles an event: the TURN core with its
//! scratch buffer ([`Core`]), the worker's sockets as the core and the endpoint may use
//! them ([`Io`]), and the one function that applies the core's answer to a client message
//! ([`apply`]), whatever the client's transport.
//!
//! The endpoint files (`udp.rs`, `stream.rs`, `dtls.rs`, `relay.rs`, `tcp_relay.rs`) import
//! this file and nothing else of `transport/` but the helpers below it (`mmsg`, `sockopt`,
//! `uring`, `stats`); the worker (`worker.rs`) imports them all.

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::preauth::PreauthBudget;
use crate::turn::{ClientOutput, ConnectionId, Now, RelayId, Relays, Server};

/// The TURN core of one worker and the buffer it writes answers into.
pub struct Core {
    pub server: Server,
    /// Bytes of answers to unverified UDP sources, per source prefix (amplification).
    pub preauth: PreauthBudget,
    /// Output buffer for answers to stream and DTLS clients and for Data indications.
    pub scratch: Vec<u8>,
}

/// The worker's relay sockets, as an endpoint handling a client message uses them: the
/// core's [`Relays`] (open, close, connect) plus sending from a relay socket.
pub trait Io: Relays {
    /// Send `payload` from relay socket `relay` to `peer`: queued on the io_uring (which
    /// copies the payload) until [`Io::submit`], or sent at once on epoll.
    fn send_to_peer(&mut self, relay: RelayId, payload: &[u8], peer: SocketAddr);
    /// Hand queued relay sends to the kernel.
    fn submit(&mut self);
}

/// The plaintext byte stream of a client connection, as an RFC 6062 pipe moves it.
pub trait ByteStream {
    /// Read plaintext; `Ok(0)` is the end of the stream.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write plaintext after any queued output; returns the bytes taken (0 when the queue
    /// ahead is not yet out).
    fn write_plain(&mut self, buf: &[u8]) -> io::Result<usize>;
}

/// What became of a client message once [`apply`] sent what it had to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Applied {
    /// Answered, forwarded, or dropped (the core counted why).
    Done,
    /// RFC 6062 ConnectionBind succeeded: the reply of this many bytes goes out first, and
    /// from then on the connection is a byte pipe to peer connection `conn`.
    Bind { len: usize, conn: ConnectionId },
}

/// Apply the core's answer to a client message: a reply of `n` bytes, written into the
/// buffer the caller gave the core, goes to `reply(n, unverified)` (the client's own sink:
/// a UDP send slot, a stream connection, a DTLS session; `unverified`: its source has not
/// shown that it receives what we send, see [`ClientOutput::Unverified`]); a forward leaves
/// through its relay socket.
#[inline]
pub(super) fn apply(
    out: ClientOutput<'_>,
    io: &mut impl Io,
    reply: impl FnOnce(usize, bool),
) -> Applied {
    match out {
        ClientOutput::Drop(_) | ClientOutput::Pending => Applied::Done,
        ClientOutput::Reply(n) => {
            reply(n, false);
            Applied::Done
        }
        ClientOutput::Unverified(n) => {
            reply(n, true);
            Applied::Done
        }
        ClientOutput::Forward {
            relay,
            peer,
            payload,
        } => {
            io.send_to_peer(relay, payload, peer);
            Applied::Done
        }
        ClientOutput::Bind { len, conn } => Applied::Bind { len, conn },
    }
}

/// Read both clocks, for the core's `handle_*(now, ...)` calls.
pub fn now() -> Now {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Now {
        mono: std::time::Instant::now(),
        unix,
    }
}

/// The address the core sees: IPv4-mapped IPv6 (from dual-stack sockets) unwrapped.
/// (Only the mapped form: it is how a dual-stack socket shows an IPv4 sender. Admission
/// rules see more IPv6 spellings of IPv4 addresses: [`crate::turn::policy::canonical`].)
pub fn canonical_client(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The address to send to from a socket of the given family: IPv4 destinations become
/// IPv4-mapped on an IPv6 (dual-stack) socket.
pub fn for_socket(addr: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if socket_is_v6 => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}
