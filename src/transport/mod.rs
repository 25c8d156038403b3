//! The I/O shell: worker event loops and their sockets.
//!
//! Each UDP worker is one OS thread that owns its SO_REUSEPORT listener sockets, the relay
//! sockets its core opens, and its [`crate::turn::Server`]. The kernel hashes each client's
//! 4-tuple onto one listener socket of the group, so a client stays on its worker.
//!
//! This is the only module allowed `unsafe` (socket options the safe crates lack, batched
//! datagram syscalls, io_uring buffer rings, the DTLS listen call), each block with a
//! SAFETY comment.

#![allow(unsafe_code)]

pub mod dtls;
pub mod mmsg;
pub mod pool;
pub mod relay;
pub mod sockopt;
pub mod stats;
pub mod stream;
pub mod tcp_relay;
pub mod udp;
pub mod uring;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The address the core sees: IPv4-mapped IPv6 (from dual-stack sockets) unwrapped.
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

/// Whether an address is the IPv6 wildcard.
pub fn is_v6_unspecified(ip: IpAddr) -> bool {
    ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// The index of a free slot in a slab of optional entries, growing it when full. Slots are
/// reused, so indices (tokens, transport ids) stay small and stable while an entry lives.
pub(crate) fn free_slot<T>(slab: &mut Vec<Option<T>>) -> usize {
    match slab.iter().position(Option::is_none) {
        Some(free) => free,
        None => {
            slab.push(None);
            slab.len() - 1
        }
    }
}
