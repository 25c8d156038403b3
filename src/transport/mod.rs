//! The I/O shell: worker event loops and their sockets.
//!
//! Each worker is one OS thread that owns its SO_REUSEPORT listener sockets, the
//! connections and relay sockets on them, and its [`crate::turn::Server`]; the kernel hashes
//! each client's 4-tuple onto one listener socket of the group, so a client stays on its
//! worker. `worker.rs` holds the event loop, `endpoints.rs` the slab of endpoints; each endpoint kind
//! has its own file, which sees the rest of the worker only through `core.rs`:
//!
//! | file | endpoints |
//! | --- | --- |
//! | `udp.rs` | TURN-UDP listener sockets (`recvmmsg`/`sendmmsg`) |
//! | `stream.rs` | TURN-TCP/TLS listener sockets and client connections |
//! | `dtls.rs` | TURN-DTLS listener sockets and sessions |
//! | `relay.rs` | UDP relay sockets, RFC 6062 relay listeners, port reservations |
//! | `tcp_relay.rs` | RFC 6062 peer connections and their pipes |
//!
//! Below them: `mmsg.rs` (batched datagram syscalls), `uring.rs` (the relay io_uring),
//! `sockopt.rs` (socket options), `stats.rs` (published counters), `slab.rs`; above them:
//! `pool.rs` (the set of worker threads, as the runtime sees it).
//!
//! This is the only module allowed `unsafe` (socket options the safe crates lack, batched
//! datagram syscalls, io_uring buffer rings, the DTLS listen call), each block with a
//! SAFETY comment.

#![allow(unsafe_code)]
// The shell: it reads the clocks, draws randomness, starts threads and shares a few
// counters and the port reservations across workers behind locks (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod budget;
mod core;
pub mod dtls;
mod endpoints;
pub mod mmsg;
pub mod offload;
pub mod pool;
pub mod preauth;
pub mod relay;
mod slab;
pub mod sockopt;
pub mod stats;
pub mod stream;
pub mod tcp_relay;
pub mod udp;
pub mod uring;
pub mod worker;

pub use core::{canonical_client, for_socket, now};
