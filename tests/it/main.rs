//! The integration tests, in one binary (one link of the crate instead of one per file).
//! Each module drives the built `stunnerd` binary or the library's public API; helpers live
//! in `common` (daemon processes, ports, namespaces), `ops_util` (HTTP, STUN clients,
//! waiting) and `k8s_fixtures` (Gateway API objects).
//!
//! `tests/zero_alloc.rs` stays a binary of its own: it installs a counting global allocator
//! and measures a region that other tests' threads would disturb.

// Test drivers read clocks, sleep and spawn as they like; the core's bans (clippy.toml) are
// not theirs.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    unreachable_pub
)]

mod common;
mod k8s_fixtures;
mod ops_util;

mod admission;
mod cli;
mod config_examples;
mod hostile;
mod hostile_compare;
mod k8s_auth_rotation;
mod k8s_divergences;
mod k8s_e2e;
mod k8s_errors;
mod k8s_golden;
mod k8s_restart;
mod k8s_scenarios_clusters;
mod k8s_scenarios_dataplane;
mod k8s_scenarios_listeners;
mod k8s_scenarios_params;
mod k8s_scenarios_pipeline;
mod k8s_scenarios_service;
mod k8s_seed_gateway;
mod k8s_seed_routes;
mod offload;
mod offload_veth;
mod ops_admin;
mod ops_cds;
mod ops_file;
mod ops_reload;
mod ops_sessions;
mod real_clients;
mod relay_port_range;
mod rfc6062;
mod secret_rotation;
mod transport_bounds;
mod transports;
// Drives the turnperf binary, which only builds with `--features turnperf`.
#[cfg(feature = "turnperf")]
mod turnperf;
