//! Kubernetes manifests as a config source: the k8s adapter renders every Gateway's config
//! from Gateway API objects on disk, so a CDS server of our own can serve a fleet from the
//! same manifests the operator would read, without a cluster.

use std::path::PathBuf;

use crate::config::StunnerConfig;
use crate::k8s::{self, Mode};

/// Render the configs of every Gateway in the manifests under `paths` (files or
/// directories). A manifest that fails to load is an error, so that a half-written file
/// does not make its Gateways look deleted: the caller keeps what it had.
pub fn render_configs(paths: &[PathBuf], mode: Mode) -> Result<Vec<StunnerConfig>, String> {
    let (objects, errors) = k8s::load_objects(paths);
    let bad: Vec<String> = errors
        .iter()
        .filter(|e| e.is_error())
        .map(|e| e.to_string())
        .collect();
    if !bad.is_empty() {
        return Err(format!("manifests: {}", bad.join("; ")));
    }
    let out = k8s::render(&objects, mode);
    for f in out.errors() {
        tracing::warn!(target: "cds-server", "manifests: {}: {}", f.object, f.message);
    }
    Ok(out.configs)
}
