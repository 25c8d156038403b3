//! The admin side: `/live`, `/ready` and `/status` on the `healthcheck_endpoint`, Prometheus
//! `/metrics` on the `metrics_endpoint` (spec 3.8, 3.9), and the session list and kill
//! switch (`/sessions`, see [`sessions`]) on the health server.
//!
//! Nothing here runs on a worker thread: the servers are tokio tasks of the control runtime,
//! and every number they show is read at request time from the workers' published
//! [`StatsSlot`]s and the [`Store`], so the packet path never formats a label or takes a lock
//! for the admin side.
// The shell: the admin HTTP server runs tasks and reads the process clock. (clippy.toml)
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod client;
mod health;
pub mod http;
mod metrics;
mod process;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use http::{Endpoint, Server, parse_endpoint};
pub use metrics::render as render_metrics;
pub use process::ProcessSample;

use crate::snapshot::Store;
use crate::transport::offload::{Offload, OffloadStats};
use crate::transport::stats::{StatsSlot, WorkerReport, sum};

/// Default port of the health server (spec 2.3).
pub const HEALTH_PORT: u16 = 8086;
/// Default port of the metrics server (spec 2.3).
pub const METRICS_PORT: u16 = 8080;

/// What became of one config update. The label set of `stunnerd_config_reloads_total`, so
/// it must stay small and fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// Swapped in as a new generation.
    Applied,
    /// Equal to the running config: nothing to do.
    Unchanged,
    /// A zero (delete) config in watch mode: ignored, the running config stays (spec 2.8).
    IgnoredDelete,
    /// Did not parse or validate (bad JSON/YAML, a bad field): the running config stays.
    Invalid,
    /// Could not be applied (a port in use, an admin endpoint that cannot be bound): the
    /// running config stays.
    ApplyFailed,
    /// A STRICT_DNS answer changed: a new generation with the new addresses.
    DnsUpdate,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 6] = [
        ReloadResult::Applied,
        ReloadResult::Unchanged,
        ReloadResult::IgnoredDelete,
        ReloadResult::Invalid,
        ReloadResult::ApplyFailed,
        ReloadResult::DnsUpdate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::IgnoredDelete => "ignored_delete",
            ReloadResult::Invalid => "invalid",
            ReloadResult::ApplyFailed => "apply_failed",
            ReloadResult::DnsUpdate => "dns_update",
        }
    }
}

/// State shared by the reconciler (writer) and the admin servers (readers).
pub struct AdminState {
    pub store: Store,
    stats: Vec<Arc<StatsSlot>>,
    force_ready: bool,
    ready: AtomicBool,
    terminating: AtomicBool,
    reloads: [AtomicU64; ReloadResult::ALL.len()],
    /// Sockets per TURN-UDP listener, the value upstream reports as its connection gauge.
    udp_sockets: u64,
    /// The workers' control channels for `/sessions` (unset in dry-run mode).
    sessions: OnceLock<sessions::SessionControl>,
    /// Who may use `/sessions` (unset: loopback peers only).
    token: OnceLock<sessions::Token>,
    /// The kernel offload (unset in dry-run mode and in tests).
    offload: OnceLock<Arc<Offload>>,
}

impl AdminState {
    /// `stats` are the workers' slots (empty in dry-run mode).
    pub fn new(
        store: Store,
        stats: Vec<Arc<StatsSlot>>,
        force_ready: bool,
        udp_sockets: u64,
    ) -> Arc<AdminState> {
        Arc::new(AdminState {
            store,
            stats,
            force_ready,
            ready: AtomicBool::new(false),
            terminating: AtomicBool::new(false),
            reloads: Default::default(),
            udp_sockets,
            sessions: OnceLock::new(),
            token: OnceLock::new(),
            offload: OnceLock::new(),
        })
    }

    /// The kernel offload whose engine `/status` and whose counters `/metrics` show. Set
    /// once, at start-up.
    pub fn set_offload(&self, offload: Arc<Offload>) {
        let _ = self.offload.set(offload);
    }

    /// The offload's state, if one is set.
    pub fn offload_stats(&self) -> Option<OffloadStats> {
        self.offload.get().map(|o| o.stats())
    }

    /// Serve `/sessions` through these workers, to peers `token` admits. Set once, at
    /// start-up.
    pub fn set_sessions(&self, control: sessions::SessionControl, token: sessions::Token) {
        let _ = self.sessions.set(control);
        let _ = self.token.set(token);
    }

    pub fn sessions(&self) -> Option<&sessions::SessionControl> {
        self.sessions.get()
    }

    pub fn token(&self) -> &sessions::Token {
        static NONE: sessions::Token = sessions::Token::None;
        self.token.get().unwrap_or(&NONE)
    }

    /// The workers' counters summed now.
    pub fn report(&self) -> WorkerReport {
        let reports: Vec<WorkerReport> = self.stats.iter().map(|s| s.read()).collect();
        sum(&reports)
    }

    /// Readiness sticks once set: later configs that fail or remove every listener do not
    /// take it away (upstream semantics, spec 3.8).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Graceful shutdown began: `/ready` turns 503 for good (unless forced).
    pub fn set_terminating(&self) {
        self.terminating.store(true, Ordering::SeqCst);
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating.load(Ordering::SeqCst)
    }

    /// What `/ready` answers.
    pub fn ready_for_probe(&self) -> bool {
        self.force_ready || (self.is_ready() && !self.is_terminating())
    }

    /// `status` of `/status`.
    pub fn status_word(&self) -> &'static str {
        if self.is_terminating() {
            "TERMINATING"
        } else if self.is_ready() {
            "READY"
        } else {
            "NOT-READY"
        }
    }

    pub fn count_reload(&self, r: ReloadResult) {
        if let Some(i) = ReloadResult::ALL.iter().position(|x| *x == r) {
            self.reloads[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the `stunner_listener_connections` gauge shows for a TURN-UDP listener.
    pub fn udp_sockets(&self) -> u64 {
        self.udp_sockets
    }

    pub fn reloads(&self, r: ReloadResult) -> u64 {
        ReloadResult::ALL
            .iter()
            .position(|x| *x == r)
            .map_or(0, |i| self.reloads[i].load(Ordering::Relaxed))
    }
}

/// The health server for an endpoint string (`None` if disabled), bound now so that a
/// failure can refuse the config that asked for it.
pub fn bind_health(
    state: &Arc<AdminState>,
    endpoint: &str,
) -> Result<Option<Server>, (String, std::io::Error)> {
    let Some(ep) = parse_endpoint(endpoint, HEALTH_PORT) else {
        return Ok(None);
    };
    let st = Arc::clone(state);
    Server::bind(endpoint, ep, "health", move |req| {
        if sessions::is_sessions_path(&req.path) {
            sessions::handle(&st, req)
        } else {
            health::handle(&st, &req.path)
        }
    })
    .map(Some)
    .map_err(|e| (endpoint.to_string(), e))
}

/// The metrics server for an endpoint string (`None` if disabled). The path served is read
/// from the running config at each request (`/` matches every path, as Go's ServeMux does),
/// so a config that only changes the path does not need a new socket.
pub fn bind_metrics(
    state: &Arc<AdminState>,
    endpoint: &str,
) -> Result<Option<Server>, (String, std::io::Error)> {
    let Some(ep) = parse_endpoint(endpoint, METRICS_PORT) else {
        return Ok(None);
    };
    let st = Arc::clone(state);
    Server::bind(endpoint, ep, "metrics", move |req| {
        let path = req.path.as_str();
        let snap = st.store.load();
        let served = parse_endpoint(&snap.config.admin.metrics_endpoint, METRICS_PORT)
            .map_or_else(|| "/".to_string(), |e| e.path);
        if served == "/" || path == served {
            metrics::handle(&st)
        } else {
            http::not_found()
        }
    })
    .map(Some)
    .map_err(|e| (endpoint.to_string(), e))
}

/// The lowest snapshot generation any worker runs (`u64::MAX` without workers): once it
/// reaches a generation, every worker has bound that generation's listeners.
pub fn min_worker_generation(state: &AdminState) -> u64 {
    state
        .stats
        .iter()
        .map(|s| s.read().generation)
        .min()
        .unwrap_or(u64::MAX)
}

/// The address a server is bound to, for logs.
pub fn describe(server: &Option<Server>) -> String {
    describe_addr(server.as_ref().and_then(Server::local_addr))
}

/// A bound address for logs; `disabled` for none.
pub fn describe_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "disabled".to_string(), |a| a.to_string())
}
