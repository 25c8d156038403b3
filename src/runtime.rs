//! Start-up, the control plane, signals and graceful drain.
//!
//! The runtime loads or bootstraps the first config, compiles it into a [`Snapshot`],
//! starts the UDP worker threads (each follows the [`Store`] by itself), binds the admin
//! servers, and then runs the control plane on a small tokio runtime: the config source
//! (file or CDS watch), the certificate file watch, the STRICT_DNS resolver and the
//! reconciler, which is the one writer of the store. SIGTERM/SIGINT start a graceful drain
//! (spec 3.10); a second one ends it at once. SIGHUP re-reads the config and the
//! certificate files.
//!
//! Submodules: `reconcile` (config -> snapshot -> swap, with rollback-free refusal of bad
//! configs), `dns` (background STRICT_DNS resolution).
// The shell: clocks for drain deadlines, and the tasks of the control plane. (clippy.toml)
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod dns;
mod listeners;
mod reconcile;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::cli::{Cli, Origin};
use crate::config::{self, StunnerConfig};
use crate::log::{self, LogHandle};
use crate::snapshot::{Snapshot, Store};
use crate::source::watch::Watch;
use crate::source::{self, Env, Sink, SourceEvent};
use crate::transport::budget::Budgets;
use crate::transport::offload::Offload;
use crate::transport::pool::Workers;
use crate::transport::worker::Limits;

/// Env var naming the longest graceful drain in seconds; unset: until the last allocation
/// ends (Kubernetes ends it with SIGKILL after `terminationGracePeriodSeconds` anyway).
pub const ENV_DRAIN_TIMEOUT: &str = "STUNNERD_DRAIN_TIMEOUT";
/// Env var with the node name sent to the CDS server (`node` query parameter).
pub const ENV_NODENAME: &str = "STUNNER_NODENAME";
/// How long readiness waits for the workers to bind a new config's listeners.
const BIND_WAIT: Duration = Duration::from_secs(2);

/// Run stunnerd with parsed flags; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let cli_spec = cli.log_spec();
    JSON_LOGS.store(cli.log_format == log::LogFormat::Json, Ordering::Relaxed);
    let logs = log::init(
        cli.log_format,
        cli_spec.as_deref().unwrap_or(log::DEFAULT_SPEC),
    );
    // Two threads: the control plane is small, and the data plane has its own threads.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("stunnerd-control")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stunnerd: cannot start the control runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run_async(cli, source::process_env(), logs, cli_spec));
    // Admin connections and a source stuck in a DNS lookup must not delay the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Whether logs are JSON (then a fatal error goes to the log only, as one JSON line).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// A fatal start-up error, reported once: on stderr, one problem per line (text logs), or
/// as one log line (JSON logs, which machines read).
fn fail(msg: &str) -> ExitCode {
    if JSON_LOGS.load(Ordering::Relaxed) {
        error!(target: "stunnerd", "{}", source::one_line(msg));
    } else {
        eprintln!("stunnerd: {msg}");
    }
    ExitCode::from(1)
}

/// The signals stunnerd handles. SIGHUP is caught from the start (an early one must not
/// kill the process); SIGTERM/SIGINT only once the daemon serves, so that until then they
/// still end a start-up stuck on its first config (a CDS server that does not answer).
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// A received signal, by what it asks for.
enum Sig {
    Stop(&'static str),
    Reload,
}

impl Signals {
    fn install(hup: Signal) -> Option<Signals> {
        Some(Signals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup,
        })
    }

    async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Stop("SIGTERM"),
            _ = self.int.recv() => Sig::Stop("SIGINT"),
            _ = self.hup.recv() => Sig::Reload,
        }
    }
}

async fn run_async(cli: Cli, env: Env, logs: LogHandle, cli_spec: Option<String>) -> ExitCode {
    let Ok(hup) = signal(SignalKind::hangup()) else {
        return fail("cannot install signal handlers");
    };
    let id = cli.instance_id(&*env);
    let node = env(ENV_NODENAME).filter(|n| !n.is_empty());
    let origin = resolve_origin(&cli, &env);

    // The first config. Watch mode boots on the zero config so /live answers before any
    // config arrives (spec 1.4); a watched file that is already valid is used directly, which
    // spares binding the default health port for the moment until the watch reads it.
    let turn_uri = cli.turn_uri();
    let watching = cli.watch && turn_uri.is_none();
    let initial: StunnerConfig = if let Some(uri) = turn_uri {
        match config::from_turn_uri(uri) {
            Ok(c) => c,
            Err(e) => return fail(&format!("invalid TURN URI {uri:?}: {e}")),
        }
    } else if !watching {
        match source::load_once(&origin, &id, node.as_deref(), &env).await {
            Ok(c) => c,
            Err(e) => return fail(&e),
        }
    } else {
        match &origin {
            Origin::File(path) => source::file::load(path, &env, &id).unwrap_or_else(|e| {
                warn!(target: "stunnerd", "{e}; starting with the zero config");
                config::zero_config(&id)
            }),
            _ => config::zero_config(&id),
        }
    };
    let bootstrap = initial.is_zero_ignoring_loglevel();
    let initial = reconcile::with_cli_loglevel(initial, cli_spec.as_deref());
    if cli_spec.is_none() {
        logs.set_spec(&initial.admin.loglevel);
    }
    let snapshot = match Snapshot::build(initial, 1) {
        Ok(s) => s,
        Err(msg) => return fail(&format!("invalid configuration: {msg}")),
    };
    // What actually runs: in TURN-URI mode the origin is not read at all.
    let shown_origin = match turn_uri {
        Some(uri) => format!(
            "TURN URI {} (default configuration)",
            crate::cli::uri_without_credentials(uri)
        ),
        None => origin.to_string(),
    };
    info!(
        target: "stunnerd",
        "starting stunnerd {}: id {id}, origin {shown_origin}, {} listener(s), {} cluster(s), realm {}",
        env!("CARGO_PKG_VERSION"),
        snapshot.listeners.len(),
        snapshot.clusters.len(),
        snapshot.realm
    );

    let store = Store::new(snapshot);
    let offload = Offload::new();
    if !cli.dry_run {
        if let Err(e) = offload.apply(&store.load()) {
            return fail(&format!("invalid configuration: {e}"));
        }
    }
    let workers = if cli.dry_run {
        None
    } else {
        let nofile = crate::transport::sockopt::raise_nofile();
        let budgets = Budgets::new(
            usize::try_from(nofile).unwrap_or(usize::MAX),
            cli.max_unauth_per_ip,
            cli.ephemeral_quota,
        );
        let (alloc, unauth, per_ip) = budgets.limits();
        info!(
            target: "stunnerd",
            "file descriptors: {nofile}; budgets: {alloc} for allocations, {unauth} unauthenticated connections ({per_ip} per address)"
        );
        let limits = Limits {
            preauth_bytes_per_sec: cli.preauth_budget,
            allocation_rate: cli.allocation_rate,
            workers: cli.udp_threads(),
            budgets,
            offload: offload.clone(),
        };
        match Workers::start(&store, cli.udp_threads(), limits) {
            Ok(w) => Some(Arc::new(w)),
            Err(msg) => return fail(&msg),
        }
    };
    let stats = workers.as_ref().map(|w| w.stats()).unwrap_or_default();
    let admin = AdminState::new(
        store.clone(),
        stats,
        cli.force_ready_status,
        cli.udp_threads() as u64,
    );
    admin.set_offload(offload.clone());
    let token = match admin::sessions::Token::from_env(&*env) {
        Ok(t) => t,
        Err(e) => return fail(&format!("admin token: {e}")),
    };
    if let Some(w) = &workers {
        admin.set_sessions(admin::sessions::SessionControl::new(w.controls()), token);
        listeners::log_started(&store.load());
    }
    let (health, metrics) = if cli.dry_run {
        (None, None)
    } else {
        let cfg = &store.load().config;
        let health_ep = cfg.admin.healthcheck_endpoint.clone().unwrap_or_default();
        let h = admin::bind_health(&admin, &health_ep);
        let m = admin::bind_metrics(&admin, &cfg.admin.metrics_endpoint);
        match (h, m) {
            (Ok(h), Ok(m)) => (h, m),
            (Err((ep, e)), _) | (_, Err((ep, e))) => {
                return fail(&format!("cannot bind admin endpoint {ep}: {e}"));
            }
        }
    };
    info!(target: "stunnerd", "{} UDP worker(s) running", cli.udp_threads());

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ev_tx, ev_rx) = mpsc::channel(16);
    let (dns_tx, dns_rx) = mpsc::channel(1);
    let (certs_tx, certs_rx) = mpsc::channel(1);
    let (names_tx, names_rx) = watch::channel(Vec::new());
    let (files_tx, files_rx) = watch::channel(Vec::new());
    let answers = dns::Answers::default();

    let Some(signals) = Signals::install(hup) else {
        return fail("cannot install signal handlers");
    };
    let mut rec = reconcile::Reconciler {
        store: store.clone(),
        admin: Arc::clone(&admin),
        workers: workers.clone(),
        offload: offload.clone(),
        health,
        metrics,
        logs,
        cli_spec,
        watch_mode: watching,
        dry_run: cli.dry_run,
        answers: answers.clone(),
        dns_names: names_tx,
        cert_files: files_tx,
    };
    rec.start_servers();
    rec.publish_dns_names();
    rec.publish_cert_files();
    if !bootstrap {
        rec.become_ready(1).await;
    }

    let mut tasks = Vec::new();
    if watching {
        let sink = Sink {
            tx: ev_tx.clone(),
            stop: stop_rx.clone(),
        };
        match source::spawn_watch(&origin, &id, node.as_deref(), Arc::clone(&env), sink) {
            Ok(t) => tasks.push(t),
            Err(e) => return fail(&e),
        }
    }
    if !cli.dry_run {
        tasks.push(tokio::spawn(dns::run(
            names_rx,
            answers,
            dns_tx,
            stop_rx.clone(),
        )));
    }
    if watching && !cli.dry_run {
        tasks.push(tokio::spawn(watch_cert_files(
            files_rx,
            certs_tx.clone(),
            stop_rx.clone(),
        )));
    }
    let reconciler = tokio::spawn(rec.run(ev_rx, dns_rx, certs_rx, stop_rx));

    // The reconciler hands its admin servers back when updates stop; the handle holds them
    // (still serving) until the drain is over.
    let reload = Reload {
        origin: turn_uri.is_none().then(|| origin.clone()),
        id: id.clone(),
        node: node.clone(),
        env: Arc::clone(&env),
        events: ev_tx,
        certs: certs_tx,
    };
    let code = serve(signals, reload, &admin, &stop_tx, &env).await;
    drop(reconciler.await);
    for t in tasks {
        t.abort();
    }
    if let Some(w) = workers.and_then(|w| Arc::try_unwrap(w).ok()) {
        w.stop();
    }
    offload.stop();
    code
}

/// The `k8s` origin with an explicit CDS address (`--cds-server-address`) is a plain CDS
/// origin; discovery through the Kubernetes API is not supported.
fn resolve_origin(cli: &Cli, env: &Env) -> Origin {
    match cli.origin(&**env) {
        Origin::K8s => match cli.cds_server_address.as_deref().filter(|a| !a.is_empty()) {
            Some(addr) => {
                let port = cli.cds_server_port(&**env);
                let host = addr.split("://").last().unwrap_or(addr);
                Origin::Cds(format!("http://{host}:{port}"))
            }
            None => Origin::K8s,
        },
        other => other,
    }
}

/// Follow the certificate and key files the running config names (the reconciler
/// publishes them); on a change, ask the reconciler to re-read them.
async fn watch_cert_files(
    mut files: watch::Receiver<Vec<PathBuf>>,
    certs: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch: Option<Watch> = None;
    loop {
        let current = files.borrow_and_update().clone();
        if !current.is_empty() {
            watch
                .get_or_insert_with(|| Watch::new("tls-watch"))
                .follow(current);
        } else if watch.take().is_some() {
            info!(target: "stunnerd", "no certificate files to watch");
        }
        tokio::select! {
            _ = stop.changed() => return,
            r = files.changed() => if r.is_err() { return },
            _ = changed(&mut watch) => {
                if certs.send(()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A change under `watch`, or never without one.
async fn changed(watch: &mut Option<Watch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// What SIGHUP re-reads: the config origin (`None` in TURN-URI mode) and the certificate
/// files.
struct Reload {
    origin: Option<Origin>,
    id: String,
    node: Option<String>,
    env: Env,
    events: mpsc::Sender<SourceEvent>,
    certs: mpsc::Sender<()>,
}

impl Reload {
    /// Re-read the config from its origin now (file: read it; CDS: one GET) and hand it to
    /// the reconciler like any update, then re-check the certificate files. Runs as its own
    /// task, so a slow CDS server does not hold up the signal loop.
    fn start(&self) {
        let Some(origin) = self.origin.clone() else {
            info!(target: "stunnerd", "SIGHUP: TURN-URI mode has no config origin to re-read; re-checking certificate files");
            let _ = self.certs.try_send(());
            return;
        };
        info!(target: "stunnerd", "SIGHUP: re-reading the configuration from {origin} and the certificate files");
        let (id, node, env) = (self.id.clone(), self.node.clone(), Arc::clone(&self.env));
        let (events, certs) = (self.events.clone(), self.certs.clone());
        tokio::spawn(async move {
            let ev = match source::load_once(&origin, &id, node.as_deref(), &env).await {
                Ok(cfg) => SourceEvent::Config(Box::new(cfg)),
                Err(e) => SourceEvent::Invalid(format!("SIGHUP: {e}")),
            };
            let _ = events.send(ev).await;
            let _ = certs.send(()).await;
        });
    }
}

/// Serve until SIGTERM/SIGINT (SIGHUP reloads), then drain: `/ready` 503 at once, no more
/// config updates, the data plane keeps relaying (and accepting), exit 0 when no allocation
/// is left or the drain timeout ends. A second SIGTERM/SIGINT ends the drain at once
/// (exit 0), dropping the allocations left.
async fn serve(
    mut signals: Signals,
    reload: Reload,
    admin: &Arc<AdminState>,
    stop: &watch::Sender<bool>,
    env: &Env,
) -> ExitCode {
    while let Sig::Reload = signals.next().await {
        reload.start();
    }
    let allocations = admin.report().allocations;
    info!(target: "stunnerd", "commencing graceful shutdown with {allocations} active allocation(s); send SIGTERM or SIGINT again to exit at once");
    admin.set_terminating();
    let _ = stop.send(true);

    let limit = env(ENV_DRAIN_TIMEOUT)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let deadline = limit.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let left = admin.report().allocations;
                if left == 0 {
                    info!(target: "stunnerd", "normal exit on graceful shutdown");
                    return ExitCode::SUCCESS;
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    info!(target: "stunnerd", "drain timeout reached with {left} active allocation(s): exiting");
                    return ExitCode::SUCCESS;
                }
            }
            sig = signals.next() => match sig {
                Sig::Stop(name) => {
                    let left = admin.report().allocations;
                    info!(target: "stunnerd", "{name} during graceful shutdown: exiting now, dropping {left} active allocation(s)");
                    return ExitCode::SUCCESS;
                }
                Sig::Reload => info!(target: "stunnerd", "SIGHUP ignored: shutting down"),
            },
        }
    }
}
