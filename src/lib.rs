//! # stunnerd
//!
//! A STUN/TURN dataplane daemon, drop-in for STUNner's `stunnerd`.
//!
//! Module map (see `docs/architecture.md` for the long form):
//!
//! * [`stun`]: the wire format. Sans-IO, zero-copy views over borrowed bytes, a checked
//!   reader, a writer into caller buffers, integrity and fingerprint.
//! * [`turn`]: the TURN server state machine of one worker (allocations, permissions,
//!   channels, auth, peer admission), driven by explicit `now` inputs.
//! * [`config`]: the STUNner v1 config as typed values, with validation and field paths.
//! * [`snapshot`]: the compiled immutable view of a config that workers read.
//! * [`transport`]: the I/O shell: worker event loops and sockets. The only module
//!   allowed `unsafe`.
//! * [`runtime`]: starts workers and the control plane (reconciler, DNS), signals, drain.
//! * [`source`]: where configs come from (file watch, CDS client, manifests).
//! * [`admin`]: `/live`, `/ready`, `/status` and Prometheus `/metrics`.
//! * [`cds`]: `stunnerd cds-server`, a config discovery server of our own.
//!
//! Run-loop rule: every input to the core (`handle_*`) is followed by draining its output;
//! the core never blocks, never reads a clock and never touches a socket.
//!
//! Packet path (ChannelData, client to peer): the worker receives a datagram, `stun::classify`
//! reads two bits, the core looks the 5-tuple up, checks the channel's permission against
//! `now` and the snapshot generation, and returns a `Forward` that borrows the payload; the
//! shell sends it from the relay socket.

pub mod admin;
pub mod cds;
pub mod cli;
pub mod config;
pub mod k8s;
pub mod log;
pub mod runtime;
pub mod snapshot;
pub mod source;
pub mod stun;
pub mod transport;
pub mod turn;
