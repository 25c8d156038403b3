//! The reconciler: the one writer of the snapshot store.
//!
//! Each config from the source is checked in full before anything changes: it must build
//! into a snapshot, every new port must be free and every new admin endpoint must bind.
//! Only then is the snapshot swapped in whole. A config that fails any step is logged with
//! the reason and counted, and the running one stays, with readiness untouched (upstream
//! reaches the same end state by rolling back, spec 3.1).
//!
//! Workers apply the new snapshot by themselves: listeners whose signature changed restart,
//! the rest keep their sockets and allocations, and route, cluster and credential changes
//! reach existing allocations on their next packet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::dns::Answers;
use crate::admin::{self, AdminState, ReloadResult, Server};
use crate::config::StunnerConfig;
use crate::log::LogHandle;
use crate::snapshot::diff::{Plan, diff, listener_changes};
use crate::snapshot::{Snapshot, Store};
use crate::source::SourceEvent;
use crate::transport::offload::Offload;
use crate::transport::pool::{Workers, check_bindable};

pub(super) struct Reconciler {
    pub store: Store,
    pub admin: Arc<AdminState>,
    pub workers: Option<Arc<Workers>>,
    /// The kernel offload, loaded or changed as each config says before it is published.
    pub offload: Arc<Offload>,
    pub health: Option<Server>,
    pub metrics: Option<Server>,
    pub logs: LogHandle,
    /// `-l`/`-v`: overrides every config's `admin.loglevel`.
    pub cli_spec: Option<String>,
    /// Deletes (zero configs) are ignored in watch mode.
    pub watch_mode: bool,
    pub dry_run: bool,
    pub answers: Answers,
    /// The STRICT_DNS names of the running config, for the resolver.
    pub dns_names: watch::Sender<Vec<String>>,
    /// The certificate and key files the running config names, for the watch.
    pub cert_files: watch::Sender<Vec<PathBuf>>,
}

/// `admin.loglevel` replaced by the CLI spec, as upstream does before reconciling.
pub(super) fn with_cli_loglevel(mut cfg: StunnerConfig, cli_spec: Option<&str>) -> StunnerConfig {
    if let Some(spec) = cli_spec {
        cfg.admin.loglevel = spec.to_string();
    }
    cfg
}

impl Reconciler {
    /// Apply configs and DNS answers until told to stop. Returns itself: the admin servers
    /// it owns must keep answering (`/ready` 503, `/metrics`) through the drain, so the
    /// caller holds them until exit.
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        mut dns: mpsc::Receiver<()>,
        mut certs: mpsc::Receiver<()>,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let mut source_done = false;
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    info!(target: "reconciler", "config updates stopped (shutting down)");
                    return self;
                }
                ev = events.recv(), if !source_done => match ev {
                    Some(SourceEvent::Config(cfg)) => self.apply(*cfg).await,
                    Some(SourceEvent::Invalid(reason)) => {
                        self.refuse(ReloadResult::Invalid, &reason);
                    }
                    None => source_done = true,
                },
                Some(()) = dns.recv() => self.refresh_dns(),
                Some(()) = certs.recv() => self.refresh_certs(),
            }
            if *stop.borrow() {
                return self;
            }
        }
    }

    /// Start serving on the admin servers bound at boot.
    pub(super) fn start_servers(&mut self) {
        for s in [&mut self.health, &mut self.metrics].into_iter().flatten() {
            s.start();
        }
    }

    fn refuse(&self, result: ReloadResult, reason: &str) {
        self.admin.count_reload(result);
        warn!(
            target: "reconciler",
            "could not reconcile new configuration (running configuration unchanged): {}",
            crate::source::one_line(reason)
        );
    }

    /// Make `next` the running snapshot, and have the workers apply its listener changes
    /// (decided here, once, by [`listener_changes`]).
    fn publish(&self, next: Snapshot) {
        let next = Arc::new(next);
        let old = self.store.swap_arc(next.clone());
        if let Some(w) = &self.workers {
            let changes = listener_changes(Some(&old), &next);
            super::listeners::log_changes(&old, &next, &changes);
            w.apply(Plan {
                snap: next,
                changes,
            });
        }
    }

    /// Reconcile one config from the source.
    pub(super) async fn apply(&mut self, cfg: StunnerConfig) {
        if self.watch_mode && cfg.is_zero() {
            info!(target: "reconciler", "ignoring delete configuration update");
            self.admin.count_reload(ReloadResult::IgnoredDelete);
            return;
        }
        let cfg = with_cli_loglevel(cfg, self.cli_spec.as_deref());
        let cur = self.store.load();
        if cfg == cur.config {
            debug!(target: "reconciler", "configuration unchanged");
            self.admin.count_reload(ReloadResult::Unchanged);
            return;
        }
        let generation = cur.generation + 1;
        let mut next = match Snapshot::build(cfg, generation) {
            Ok(s) => s,
            Err(e) => return self.refuse(ReloadResult::Invalid, &e),
        };
        self.fill_dns(&mut next);
        if !self.dry_run {
            if let Err(e) = check_bindable(Some(&cur), &next) {
                return self.refuse(ReloadResult::ApplyFailed, &e);
            }
        }
        if !self.dry_run {
            if let Err(e) = self.offload.apply(&next) {
                return self.refuse(ReloadResult::ApplyFailed, &e);
            }
        }
        let (health, metrics) = match self.prepare_servers(&next.config) {
            Ok(s) => s,
            Err(e) => return self.refuse(ReloadResult::ApplyFailed, &e),
        };

        let changes = diff(&cur, &next);
        let ready_candidate = !next.config.is_zero_ignoring_loglevel();
        let loglevel = next.config.admin.loglevel.clone();
        self.publish(next);
        if let Some(mut h) = health {
            h.start();
            self.health = h.into_inner();
        }
        if let Some(mut m) = metrics {
            m.start();
            self.metrics = m.into_inner();
        }
        if self.cli_spec.is_none() {
            self.logs.set_spec(&loglevel);
        }
        self.admin.count_reload(ReloadResult::Applied);
        info!(
            target: "reconciler",
            "new configuration applied (generation {generation}): {changes}; health {}, metrics {}",
            admin::describe(&self.health),
            admin::describe(&self.metrics)
        );
        self.publish_dns_names();
        self.publish_cert_files();
        if ready_candidate {
            self.become_ready(generation).await;
        }
    }

    /// Mark ready once every worker runs `generation` (its listeners bound), waiting at
    /// most [`super::BIND_WAIT`]: a worker that is slow to report must not keep a working
    /// config unready forever.
    pub(super) async fn become_ready(&self, generation: u64) {
        if self.admin.is_ready() || self.admin.is_terminating() {
            return;
        }
        let deadline = tokio::time::Instant::now() + super::BIND_WAIT;
        while admin::min_worker_generation(&self.admin) < generation
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.admin.is_terminating() {
            self.admin.set_ready();
            info!(target: "reconciler", "ready");
        }
    }

    /// New admin servers for `cfg`, bound but not serving; `None` per server when its
    /// address did not change (the running server stays). Some(None) disables it.
    fn prepare_servers(&self, cfg: &StunnerConfig) -> Result<(Option<Slot>, Option<Slot>), String> {
        if self.dry_run {
            return Ok((None, None));
        }
        let health_ep = cfg.admin.healthcheck_endpoint.as_deref().unwrap_or("");
        let health = if same_address(&self.health, health_ep, admin::HEALTH_PORT) {
            None
        } else {
            Some(Slot(
                admin::bind_health(&self.admin, health_ep)
                    .map_err(|(ep, e)| format!("health endpoint {ep}: {e}"))?,
            ))
        };
        let metrics_ep = cfg.admin.metrics_endpoint.as_str();
        let metrics = if same_address(&self.metrics, metrics_ep, admin::METRICS_PORT) {
            None
        } else {
            Some(Slot(
                admin::bind_metrics(&self.admin, metrics_ep)
                    .map_err(|(ep, e)| format!("metrics endpoint {ep}: {e}"))?,
            ))
        };
        Ok((health, metrics))
    }

    /// Tell the certificate watch which files to follow.
    pub(super) fn publish_cert_files(&self) {
        let snap = self.store.load();
        let mut files: Vec<PathBuf> = snap
            .listeners
            .iter()
            .flat_map(|l| l.cert_files.iter().cloned())
            .collect();
        files.sort();
        files.dedup();
        self.cert_files.send_if_modified(|cur| {
            if *cur == files {
                false
            } else {
                *cur = files;
                true
            }
        });
    }

    /// Certificate or key files may have changed: re-read them (by rebuilding the running
    /// config's snapshot) and, if any TURN-TLS/DTLS listener's material changed, publish
    /// the new snapshot. Workers hot-swap the certificate of those listeners only; every
    /// listener keeps its sockets and allocations.
    pub(super) fn refresh_certs(&mut self) {
        let cur = self.store.load();
        let mut next = match Snapshot::build(cur.config.clone(), cur.generation + 1) {
            Ok(s) => s,
            Err(e) => return warn!(target: "reconciler", "cannot rebuild snapshot: {e}"),
        };
        let mut changed = Vec::new();
        for l in &next.listeners {
            let Some((_, old)) = cur.listener(&l.name) else {
                continue;
            };
            if old.pem_digest == l.pem_digest {
                continue;
            }
            let failed = match (&l.tls, &l.dtls) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => Some(e.clone()),
                _ => None,
            };
            match failed {
                Some(e) => warn!(
                    target: "reconciler",
                    "listener {}: certificate files changed but do not load ({e}); the running certificate stays",
                    l.name
                ),
                None => changed.push(l.name.to_string()),
            }
        }
        if next
            .listeners
            .iter()
            .zip(&cur.listeners)
            .all(|(n, o)| n.pem_digest == o.pem_digest)
        {
            debug!(target: "reconciler", "certificate files unchanged");
            return;
        }
        // Keep the resolver's answers: only the certificates differ.
        for (n, o) in next.clusters.iter_mut().zip(&cur.clusters) {
            n.dns_ips = o.dns_ips.clone();
        }
        let generation = next.generation;
        self.publish(next);
        if !changed.is_empty() {
            info!(
                target: "reconciler",
                "certificate reloaded from file (generation {generation}): listeners {changed:?}; new connections get the new certificate, existing ones and other listeners are untouched"
            );
        }
    }

    /// Tell the resolver which names to watch.
    pub(super) fn publish_dns_names(&self) {
        let snap = self.store.load();
        let mut names: Vec<String> = snap
            .clusters
            .iter()
            .flat_map(|c| c.dns_names.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        self.dns_names.send_if_modified(|cur| {
            if *cur == names {
                false
            } else {
                *cur = names;
                true
            }
        });
    }

    /// Fill every STRICT_DNS cluster with the resolver's last good answers.
    fn fill_dns(&self, snap: &mut Snapshot) {
        let answers = self.answers.get();
        for c in &mut snap.clusters {
            let mut ips: Vec<_> = c
                .dns_names
                .iter()
                .filter_map(|n| answers.get(n))
                .flatten()
                .copied()
                .collect();
            ips.sort();
            ips.dedup();
            c.dns_ips = ips;
        }
    }

    /// A DNS answer changed: publish a new generation of the running config with it.
    fn refresh_dns(&mut self) {
        let cur = self.store.load();
        let mut next = match Snapshot::build(cur.config.clone(), cur.generation + 1) {
            Ok(s) => s,
            // Cannot happen for a config that built before; keep what runs.
            Err(e) => return warn!(target: "dns-resolver", "cannot rebuild snapshot: {e}"),
        };
        self.fill_dns(&mut next);
        let unchanged = next
            .clusters
            .iter()
            .zip(&cur.clusters)
            .all(|(n, c)| n.dns_ips == c.dns_ips);
        if unchanged {
            return;
        }
        for c in next.clusters.iter().filter(|c| !c.dns_names.is_empty()) {
            info!(target: "dns-resolver", "cluster {}: STRICT_DNS endpoints now {:?}", c.name, c.dns_ips);
        }
        let generation = next.generation;
        self.publish(next);
        self.admin.count_reload(ReloadResult::DnsUpdate);
        debug!(target: "reconciler", "generation {generation}: DNS answers updated");
    }
}

/// A replacement admin server: `Slot(None)` disables it.
pub(super) struct Slot(Option<Server>);

impl Slot {
    fn start(&mut self) {
        if let Some(s) = &mut self.0 {
            s.start();
        }
    }

    fn into_inner(self) -> Option<Server> {
        self.0
    }
}

/// Whether `endpoint` asks for the address `current` already serves (the path does not
/// matter: health ignores it and metrics reads it per request).
fn same_address(current: &Option<Server>, endpoint: &str, default_port: u16) -> bool {
    let wanted = admin::parse_endpoint(endpoint, default_port);
    match (current, wanted) {
        (None, None) => true,
        (Some(s), Some(w)) => s.parsed.host == w.host && s.parsed.port == w.port,
        _ => false,
    }
}
