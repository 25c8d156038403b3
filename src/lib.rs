//! # stunnerd
//!
//! A STUN/TURN dataplane daemon, drop-in for STUNner's `stunnerd`.
//!
//! Module map (`docs/architecture.md` follows a packet and a config change through it):
//!
//! * [`stun`]: the wire format. Sans-IO, zero-copy views over borrowed bytes, a checked
//!   reader, a writer into caller buffers, integrity and fingerprint.
//! * [`turn`]: the TURN server state machine of one worker (allocations, permissions,
//!   channels, auth, peer admission, deadlines). Sans-IO: time comes in as `Now`, sockets
//!   are reached through the `Relays` trait, errors are `TurnError`.
//! * [`config`]: the STUNner v1 config as typed values, with validation and field paths.
//! * [`snapshot`]: the compiled immutable view of a config that workers read, and the
//!   listener changes between two of them.
//! * [`transport`]: the I/O shell: one event loop per worker over a slab of endpoints, one
//!   file per endpoint kind. The only module allowed `unsafe`.
//! * [`runtime`]: starts workers and the control plane (reconciler, DNS), signals, drain.
//! * [`source`]: where configs come from (file watch, CDS client, Kubernetes manifests).
//! * [`k8s`]: the Gateway API adapter: renders GatewayClass, GatewayConfig, Gateway,
//!   UDPRoute, StaticService, Dataplane, Secrets, Services and EndpointSlices into configs
//!   and statuses as the operator does.
//! * [`admin`]: `/live`, `/ready`, `/status`, `/sessions` and Prometheus `/metrics`.
//! * [`cds`]: `stunnerd cds-server`, a config discovery server of our own.
//! * [`cli`], [`log`]: the command line and upstream's scoped log levels.
//!
//! Run-loop rule: every input to the core (`handle_*`) returns its answer; what the core
//! must send on its own goes through `Relays`; the core never blocks, never reads a clock
//! and never touches a socket (clippy.toml enforces the first two).

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
