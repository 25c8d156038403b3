//! Where configs come from: a file (read once, or watched), a CDS server (one HTTP GET, or
//! a WebSocket watch), or Kubernetes manifests rendered by the k8s adapter (for the CDS
//! server of our own).
//!
//! A watching source runs as a tokio task and sends [`SourceEvent`]s to the reconciler. It
//! never dies on bad input: a config that does not parse or validate is reported as
//! [`SourceEvent::Invalid`] (the reconciler logs and counts it) and the source keeps
//! watching; connection errors are retried forever at a fixed pace.
// The shell: config sources run as tasks and poll files by the clock. (clippy.toml)
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod cds;
pub mod file;
pub mod manifests;
pub mod watch;

use std::sync::Arc;

use crate::cli::Origin;
use crate::config::{self, StunnerConfig};

/// A config update from a source.
#[derive(Debug)]
pub enum SourceEvent {
    /// A parsed, validated config (possibly a zero config: the reconciler decides).
    Config(Box<StunnerConfig>),
    /// A config that was refused, with the reason (no secrets: parse errors name fields);
    /// one line per problem.
    Invalid(String),
}

/// Environment lookup shared with source tasks (tests inject their own).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment.
pub fn process_env() -> Env {
    Arc::new(|k: &str| std::env::var(k).ok())
}

/// Where a watching source reports, and how it learns to stop.
#[derive(Clone)]
pub struct Sink {
    pub tx: tokio::sync::mpsc::Sender<SourceEvent>,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Sink {
    /// Deliver an event; false if the reconciler is gone (then the source ends).
    pub async fn send(&self, ev: SourceEvent) -> bool {
        self.tx.send(ev).await.is_ok()
    }

    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleep for `d`, or less if told to stop; returns true if stopped.
    pub async fn sleep(&mut self, d: std::time::Duration) -> bool {
        if self.stopped() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stopped(),
            _ = self.stop.changed() => true,
        }
    }
}

/// Parse and validate a config text the way every source does (env expansion included;
/// upstream skips it for one-shot CDS loads, which breaks `$STUNNER_ADDR`: spec 4.2).
pub fn parse(text: &str, env: &Env, what: &str) -> Result<StunnerConfig, String> {
    let lookup = |k: &str| env(k);
    match config::parse_config(text, &lookup) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                tracing::warn!(target: "stunnerd", "{what}: {w}");
            }
            Ok(parsed.config)
        }
        Err(e) => {
            let lines: Vec<String> = e.to_string().lines().map(|l| format!("  {l}")).collect();
            Err(format!("{what}: invalid config:\n{}", lines.join("\n")))
        }
    }
}

/// Multi-line error text as one log line.
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
        .replace(":; ", ": ")
}

/// Load a config once (no `-w`): read the file, or GET it from the CDS server.
pub async fn load_once(
    origin: &Origin,
    id: &str,
    node: Option<&str>,
    env: &Env,
) -> Result<StunnerConfig, String> {
    match origin {
        Origin::File(path) => file::load(path, env, id),
        Origin::Cds(url) => cds::get(url, id, node, env).await,
        Origin::K8s => Err(k8s_unsupported()),
    }
}

/// Start watching `origin`; the task ends when `sink.stop` turns true.
pub fn spawn_watch(
    origin: &Origin,
    id: &str,
    node: Option<&str>,
    env: Env,
    sink: Sink,
) -> Result<tokio::task::JoinHandle<()>, String> {
    match origin {
        Origin::File(path) => Ok(tokio::spawn(file::watch(
            path.clone(),
            env,
            id.to_string(),
            sink,
        ))),
        Origin::Cds(url) => {
            let target = cds::Target::new(url, id, node)?;
            Ok(tokio::spawn(cds::watch(target, env, sink)))
        }
        Origin::K8s => Err(k8s_unsupported()),
    }
}

fn k8s_unsupported() -> String {
    "config origin k8s: CDS discovery in Kubernetes is not supported by this build; \
     give the CDS server address as the origin (-c http://ADDR:13478 or STUNNER_CONFIG_ORIGIN)"
        .to_string()
}
