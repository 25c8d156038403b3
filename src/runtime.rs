//! Start-up, workers, signals.
//!
//! The runtime loads the first config, compiles it into a [`Snapshot`], starts one UDP
//! worker thread per `--udp-thread-num` (each with its own SO_REUSEPORT socket per TURN-UDP
//! listener, its own relay sockets and its own TURN core), and waits for SIGTERM/SIGINT.

use std::process::ExitCode;

use tracing::{error, info, warn};

use crate::cli::{Cli, Origin};
use crate::config::{self, ListenerProtocol, StunnerConfig};
use crate::log;
use crate::snapshot::{Snapshot, Store};
use crate::transport::pool::Workers;

/// Run stunnerd with parsed flags; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let cli_spec = cli.log_spec();
    let logs = log::init(
        cli.log_format,
        cli_spec.as_deref().unwrap_or(log::DEFAULT_SPEC),
    );

    let config = match initial_config(&cli, &env) {
        Ok(c) => c,
        Err(msg) => {
            error!(target: "stunnerd", "{msg}");
            eprintln!("stunnerd: {msg}");
            return ExitCode::from(1);
        }
    };
    if cli_spec.is_none() {
        logs.set_spec(&config.admin.loglevel);
    }
    let snapshot = match Snapshot::build(config, 1) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("stunnerd: invalid configuration: {msg}");
            return ExitCode::from(1);
        }
    };
    for l in &snapshot.listeners {
        if l.protocol != ListenerProtocol::TurnUdp {
            warn!(
                target: "stunnerd",
                "listener {}: protocol {} is not supported yet by this build (TURN-UDP only); listener skipped",
                l.name,
                l.protocol.as_str()
            );
        }
    }
    if cli.watch {
        warn!(target: "stunnerd", "--watch: config updates are not supported yet by this build; the config was loaded once");
    }
    info!(
        target: "stunnerd",
        "starting stunnerd: {} listener(s), {} cluster(s), realm {}",
        snapshot.listeners.len(),
        snapshot.clusters.len(),
        snapshot.realm
    );

    let store = Store::new(snapshot);
    let workers = if cli.dry_run {
        None
    } else {
        match Workers::start(&store, cli.udp_threads()) {
            Ok(w) => Some(w),
            Err(msg) => {
                error!(target: "stunnerd", "{msg}");
                eprintln!("stunnerd: {msg}");
                return ExitCode::from(1);
            }
        }
    };
    info!(target: "stunnerd", "{} UDP worker(s) running", cli.udp_threads());

    wait_for_signal();
    info!(target: "stunnerd", "shutting down");
    if let Some(w) = workers {
        w.stop();
    }
    ExitCode::SUCCESS
}

/// The first config: from the TURN URI, or loaded once from the origin.
fn initial_config(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StunnerConfig, String> {
    if let Some(uri) = cli.turn_uri() {
        let cfg =
            config::from_turn_uri(uri).map_err(|e| format!("invalid TURN URI {uri:?}: {e}"))?;
        return Ok(cfg);
    }
    match cli.origin(env) {
        Origin::File(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            let parsed = config::parse_config(&text, env)
                .map_err(|e| format!("invalid config file {}:\n{e}", path.display()))?;
            for w in &parsed.warnings {
                warn!(target: "config-file-client", "{}: {w}", path.display());
            }
            Ok(parsed.config)
        }
        other => Err(format!(
            "config origin {other}: loading configs from a CDS server is not supported yet by this build; use -c file://PATH or a TURN URI"
        )),
    }
}

/// Block until SIGTERM or SIGINT.
fn wait_for_signal() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        // Without a runtime we cannot wait for signals; park forever like a daemon.
        loop {
            std::thread::park();
        }
    };
    rt.block_on(async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
}
