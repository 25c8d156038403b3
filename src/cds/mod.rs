//! `stunnerd cds-server`: a config discovery server of our own, speaking the operator's
//! HTTP/WebSocket API (spec 4.1, 4.3), so a fleet of bare-metal stunnerd can share one
//! source of truth: `stunnerd -w -c http://HOST:13478 -i <ns>/<name>`.
//!
//! Configs come from a directory of config files (JSON or YAML, one config each, keyed by
//! its `admin.name`) and/or from Kubernetes manifests rendered by the k8s adapter. Sources
//! are re-read when the watch ([`crate::source::watch`]) reports a change: a new or
//! changed config is pushed to its watchers, a removed one is pushed as the zero config (a
//! delete, which stunnerd ignores), and a file that stops parsing keeps its last good
//! config, so a half-written edit never reaches clients. A warning about the sources is
//! logged once per change of the sources, not on every re-read.
// The shell: the CDS server runs tasks and shares its store behind a lock. (clippy.toml)
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod server;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::config;
use crate::k8s::Mode;
use crate::log::{self, LogFormat};
use crate::source::watch::Watch;
use crate::source::{manifests, one_line};
use server::Shared;
use store::ConfigStore;

/// `stunnerd cds-server` flags.
#[derive(Parser, Debug)]
#[command(
    name = "stunnerd cds-server",
    about = "Serve stunnerd configs over the STUNner CDS API (HTTP and WebSocket watch)"
)]
pub struct CdsArgs {
    /// Directory of config files (`*.json`, `*.yaml`, `*.yml`, `*.conf`), one config per
    /// file, served under its `admin.name` (`<namespace>/<name>`).
    #[arg(short = 'd', long = "dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Kubernetes manifests (files or directories) to render configs from (repeatable).
    #[arg(short = 'f', long = "manifests", value_name = "PATH")]
    pub manifests: Vec<PathBuf>,
    /// Rendering mode for manifests: `managed` (a config per Gateway) or `legacy`.
    #[arg(long = "mode", default_value = "managed")]
    pub mode: String,
    /// Listen address, `[HOST]:PORT`.
    #[arg(short = 'a', long = "addr", default_value = ":13478")]
    pub addr: String,
    /// Address of a node, `NODE=IP`, for `__node_address_placeholder` listeners (repeatable).
    #[arg(long = "node-address", value_name = "NODE=IP")]
    pub node_address: Vec<String>,
    /// Log level spec.
    #[arg(short = 'l', long = "log", default_value = "all:INFO")]
    pub log: String,
    /// Log format: `text` or `json`.
    #[arg(long = "log-format", default_value = "text")]
    pub log_format: String,
}

/// Entry point; `args` starts with the program name, then `cds-server`.
pub fn main(args: Vec<String>) -> ExitCode {
    let argv = std::iter::once("stunnerd cds-server".to_string()).chain(args.into_iter().skip(2));
    let a = match CdsArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    log::init(LogFormat::from_flag(&a.log_format), &a.log);
    if a.dir.is_none() && a.manifests.is_empty() {
        eprintln!("stunnerd cds-server: give --dir DIR and/or --manifests PATH");
        return ExitCode::from(2);
    }
    let Some(mode) = Mode::parse(&a.mode) else {
        eprintln!(
            "stunnerd cds-server: unknown --mode {:?} (managed or legacy)",
            a.mode
        );
        return ExitCode::from(2);
    };
    let mut nodes = BTreeMap::new();
    for n in &a.node_address {
        match n.split_once('=') {
            Some((node, ip)) if !node.is_empty() && !ip.is_empty() => {
                nodes.insert(node.to_string(), ip.to_string());
            }
            _ => {
                eprintln!("stunnerd cds-server: --node-address {n:?}: want NODE=IP");
                return ExitCode::from(2);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stunnerd cds-server: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run(a, mode, nodes));
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn run(a: CdsArgs, mode: Mode, nodes: BTreeMap<String, String>) -> ExitCode {
    let addr = if a.addr.starts_with(':') {
        format!("[::]{}", a.addr)
    } else {
        a.addr.clone()
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(target: "cds-server", "cannot listen on {}: {e}", a.addr);
            eprintln!("stunnerd cds-server: cannot listen on {}: {e}", a.addr);
            return ExitCode::from(1);
        }
    };
    let shared = Arc::new(Shared {
        store: ConfigStore::default(),
        nodes,
    });
    let mut sources = Sources::new(a.dir.clone(), a.manifests.clone(), mode);
    // Load before serving, so the first client gets the configs, not an empty server.
    let (up, del) = shared.store.replace_all(sources.scan());
    info!(
        target: "cds-server",
        "serving {} config(s) on {} ({up} loaded, {del} removed)",
        shared.store.list(&store::Filter::All).len(),
        listener.local_addr().map_or_else(|_| a.addr.clone(), |l| l.to_string())
    );
    let srv = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
    let mut watched: Vec<PathBuf> = a.manifests.clone();
    watched.extend(a.dir.clone());
    // Notifications make an edit reach the watchers at once; the watch's safety poll is
    // the backstop for file systems that do not notify.
    let rescan = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut watch = Watch::new("cds-server");
            loop {
                watch.follow(watched.iter().cloned());
                watch.changed().await;
                let (up, del) = shared.store.replace_all(sources.scan());
                if up + del > 0 {
                    info!(target: "cds-server", "configs updated: {up} changed, {del} removed");
                }
            }
        })
    };
    let code = wait_signal().await;
    info!(target: "cds-server", "shutting down");
    rescan.abort();
    srv.abort();
    code
}

async fn wait_signal() -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return ExitCode::from(1);
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    ExitCode::SUCCESS
}

/// The config sources and their last good state.
struct Sources {
    dir: Option<PathBuf>,
    manifests: Vec<PathBuf>,
    mode: Mode,
    /// Per file: its last text and the config it gave (kept while the file is broken).
    files: BTreeMap<PathBuf, (String, Option<(String, Value)>)>,
    /// The last good rendering of the manifests.
    rendered: BTreeMap<String, Value>,
    /// The last manifest error reported, so a broken manifest is logged once.
    manifest_error: Option<String>,
    /// Warnings given about the current state of the sources (duplicate ids, an unreadable
    /// directory): each is logged when it first appears, again only after it went away.
    warned: BTreeSet<String>,
}

impl Sources {
    fn new(dir: Option<PathBuf>, manifests: Vec<PathBuf>, mode: Mode) -> Sources {
        Sources {
            dir,
            manifests,
            mode,
            files: BTreeMap::new(),
            rendered: BTreeMap::new(),
            manifest_error: None,
            warned: BTreeSet::new(),
        }
    }

    /// Everything to serve now: manifests first, then config files (a file overrides a
    /// rendered config of the same id).
    fn scan(&mut self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut warnings = BTreeSet::new();
        if !self.manifests.is_empty() {
            self.scan_manifests();
            out.extend(self.rendered.clone());
        }
        if let Some(dir) = self.dir.clone() {
            if let Err(w) = self.scan_dir(&dir) {
                warnings.insert(w);
            }
            for (path, (_, cfg)) in &self.files {
                if let Some((id, v)) = cfg {
                    if out.insert(id.clone(), v.clone()).is_some() {
                        warnings.insert(format!(
                            "{}: config {id} also defined elsewhere; this file wins",
                            path.display()
                        ));
                    }
                }
            }
        }
        for w in warnings.difference(&self.warned) {
            warn!(target: "cds-server", "{w}");
        }
        self.warned = warnings;
        out
    }

    fn scan_manifests(&mut self) {
        match manifests::render_configs(&self.manifests, self.mode) {
            Ok(configs) => {
                self.manifest_error = None;
                self.rendered = configs
                    .into_iter()
                    .filter_map(|c| {
                        let id = c.admin.name.clone();
                        serde_json::to_value(&c).ok().map(|v| (id, v))
                    })
                    .collect();
            }
            Err(e) => {
                if self.manifest_error.as_deref() != Some(e.as_str()) {
                    warn!(target: "cds-server", "{e}; keeping the last good rendering");
                    self.manifest_error = Some(e);
                }
            }
        }
    }

    /// Re-read the config files of `dir`; an error (the directory is unreadable) is a
    /// warning for the caller to give once.
    fn scan_dir(&mut self, dir: &Path) -> Result<(), String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Err(format!(
                "cannot read {}; keeping the configs it had",
                dir.display()
            ));
        };
        let mut seen = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let is_config = path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "json" | "yaml" | "yml" | "conf"));
            // Hidden files: editor swap files and ConfigMap `..data` internals.
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if !is_config || hidden || !path.is_file() {
                continue;
            }
            seen.push(path.clone());
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if text.trim().is_empty() || self.files.get(&path).is_some_and(|(t, _)| *t == text) {
                continue;
            }
            let prev = self.files.remove(&path).and_then(|(_, c)| c);
            let cfg = match load_file(&text) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(target: "cds-server", "{}: {e}; keeping its last good config", path.display());
                    prev
                }
            };
            self.files.insert(path, (text, cfg));
        }
        self.files.retain(|p, _| seen.contains(p));
        Ok(())
    }
}

/// One config file: validated (placeholders such as `$STUNNER_ADDR` expand to nothing for
/// the check only), served as written.
fn load_file(text: &str) -> Result<(String, Value), String> {
    // The node placeholder is only an address after patching; validate with one.
    let checkable = text.replace(store::NODE_ADDRESS_PLACEHOLDER, "127.0.0.1");
    let parsed = config::parse_config(&checkable, &|_: &str| None)
        .map_err(|e| format!("invalid config: {}", one_line(&e.to_string())))?;
    let value: Value = serde_norway::from_str(text).map_err(|e| format!("invalid config: {e}"))?;
    let id = parsed.config.admin.name;
    if id.split('/').count() != 2 {
        warn!(target: "cds-server", "config admin.name {id:?} is not <namespace>/<name>: clients cannot ask for it");
    }
    Ok((id, value))
}
