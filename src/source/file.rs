//! The file origin (`-c file://PATH`), read once or watched (spec 4.6).
//!
//! Watching is built to survive how files really change:
//!
//! * Kubernetes ConfigMap volumes swap a symlink (`..data`) to a new directory; the file
//!   we were given is a symlink through it, so its inode never changes but its target does.
//! * Editors write a temporary file and rename it over the original.
//! * Writers truncate and then write, so a read can see an empty file.
//!
//! So the watch is on the parent directory (which sees renames, symlink swaps and creations
//! of the file) rather than on the file, every event just re-reads the path (following
//! symlinks), and the content decides: an unchanged text or an empty read is not an update.
//! A 1 s poll backs the notifications up, so a missed or unsupported event (a directory
//! replaced wholesale, a network file system) costs at most a second.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tracing::{info, warn};

use super::{Env, Sink, SourceEvent, parse};
use crate::config::StunnerConfig;

/// The backstop poll period (also upstream's retry cadence for a missing file).
const POLL: Duration = Duration::from_secs(1);
/// Events arriving within this window after the first are handled by one re-read: a
/// rename or symlink swap comes as a burst.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Read and parse the file once. A directory or a file of Kubernetes manifests is
/// rendered for Gateway `id` by the k8s adapter, as the operator would.
pub fn load(path: &Path, env: &Env, id: &str) -> Result<StunnerConfig, String> {
    let text = read(path, id)?;
    parse(&text, env, &format!("config file {}", path.display()))
}

/// The config text at `path`: the file itself, or the config rendered from manifests.
fn read(path: &Path, id: &str) -> Result<String, String> {
    if super::manifests::is_manifests(path) {
        return super::manifests::render_for(path, id);
    }
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))
}

/// Watch `path` until told to stop. The current content is emitted first.
pub async fn watch(path: PathBuf, env: Env, id: String, mut sink: Sink) {
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel::<()>(1);
    // The watcher lives as long as this task; dropping it stops its thread.
    let _watcher = watch_parent(&path, ev_tx);
    let shown = path.display().to_string();
    info!(target: "config-file-client", "watching config file {shown}");

    let mut last_text: Option<String> = None;
    let mut missing_logged = false;
    loop {
        match read(&path, &id) {
            // Truncate-then-write: wait for the write.
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) if last_text.as_deref() == Some(text.as_str()) => {}
            Ok(text) => {
                missing_logged = false;
                let ev = match parse(&text, &env, &format!("config file {shown}")) {
                    Ok(cfg) => SourceEvent::Config(Box::new(cfg)),
                    Err(reason) => SourceEvent::Invalid(reason),
                };
                // Remembered even when invalid, so a bad file is reported once, not
                // every second; the next change of its content is read again.
                last_text = Some(text);
                if !sink.send(ev).await {
                    return;
                }
            }
            Err(e) => {
                if !missing_logged {
                    warn!(target: "config-file-client", "cannot read config file {shown}: {e}; retrying every second");
                    missing_logged = true;
                }
                // When it comes back, emit it again even if unchanged (upstream does too;
                // the reconciler makes an identical config a no-op).
                last_text = None;
            }
        }
        tokio::select! {
            _ = sink.stop.changed() => return,
            _ = tokio::time::sleep(POLL) => {}
            got = ev_rx.recv() => {
                if got.is_some() {
                    tokio::time::sleep(DEBOUNCE).await;
                    // Coalesce the rest of the burst.
                    while ev_rx.try_recv().is_ok() {}
                }
            }
        }
        if sink.stopped() {
            return;
        }
    }
}

/// A watcher on the directory holding `path` (non-recursive), poking `tx` on any event
/// there. `None` (polling only) if the platform or the directory does not allow it.
fn watch_parent(
    path: &Path,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    // A directory of manifests is watched itself; a file through its parent.
    let dir = match path.parent() {
        _ if path.is_dir() => path.to_path_buf(),
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            // Full means a poke is already pending: that one re-read covers this event.
            let _ = tx.try_send(());
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            warn!(target: "config-file-client", "file notifications unavailable ({e}); polling every second");
            return None;
        }
    };
    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
        warn!(target: "config-file-client", "cannot watch {} ({e}); polling every second", dir.display());
        return None;
    }
    Some(w)
}
