//! The file origin (`-c file://PATH`), read once or watched (spec 4.6).
//!
//! Watching is built to survive how files really change:
//!
//! * Kubernetes ConfigMap volumes swap a symlink (`..data`) to a new directory; the file
//!   we were given is a symlink through it, so its inode never changes but its target does.
//! * Editors write a temporary file and rename it over the original.
//! * Writers truncate and then write, so a read can see an empty file.
//!
//! So the watch ([`super::watch::Watch`]) is on the parent directory (which sees renames,
//! symlink swaps and creations of the file) rather than on the file, ignores access events
//! (its own reads), and every change re-reads the path (following symlinks); the content
//! decides: an unchanged text or an empty read is not an update. A safety poll that only
//! stats the path every few seconds backs the notifications up; without notifications the
//! file is polled every second.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::watch::Watch;
use super::{Env, Sink, SourceEvent, parse};
use crate::config::StunnerConfig;

/// Read and parse the file once. A directory or a file of Kubernetes manifests is
/// rendered for Gateway `id` by the k8s adapter, as the operator would.
pub fn load(path: &Path, env: &Env, id: &str) -> Result<StunnerConfig, String> {
    let text = read(path, id)?;
    parse(&text, env, &format!("config file {}", path.display()))
}

/// The config text at `path`: the file itself, or the config rendered from manifests (a
/// directory, or a file of them). One read of the file.
fn read(path: &Path, id: &str) -> Result<String, String> {
    if path.is_dir() {
        return super::manifests::render_for(path, id);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    if super::manifests::is_manifest_text(&text) {
        return super::manifests::render_for(path, id);
    }
    Ok(text)
}

/// Watch `path` until told to stop. The current content is emitted first.
pub async fn watch(path: PathBuf, env: Env, id: String, mut sink: Sink) {
    let mut watch = Watch::new("config-file-client");
    let shown = path.display().to_string();
    info!(target: "config-file-client", "watching config file {shown}");

    let mut last_text: Option<String> = None;
    let mut missing_logged = false;
    loop {
        // Stamps first: a change between them and the read is seen by the next poll.
        watch.follow([path.clone()]);
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
                // on every poll; the next change of its content is read again.
                last_text = Some(text);
                if !sink.send(ev).await {
                    return;
                }
            }
            Err(e) => {
                if !missing_logged {
                    warn!(target: "config-file-client", "{e}; waiting for it to appear");
                    missing_logged = true;
                }
                // When it comes back, emit it again even if unchanged (upstream does too;
                // the reconciler makes an identical config a no-op).
                last_text = None;
            }
        }
        tokio::select! {
            _ = sink.stop.changed() => return,
            _ = watch.changed() => {}
        }
        if sink.stopped() {
            return;
        }
    }
}
