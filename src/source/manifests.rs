//! Kubernetes manifests as a config source: the k8s adapter renders every Gateway's config
//! from Gateway API objects on disk, so a CDS server of our own can serve a fleet from the
//! same manifests the operator would read, without a cluster.

use std::path::{Path, PathBuf};

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

/// Whether a file's text is Kubernetes manifests: its first document has both `apiVersion`
/// and `kind`.
pub fn is_manifest_text(text: &str) -> bool {
    let first = text.split("\n---").next().unwrap_or_default();
    let has = |key: &str| {
        first
            .lines()
            .any(|l| l.trim_start().starts_with(key) || l.contains(&format!("\"{key}")))
    };
    has("apiVersion") && has("kind")
}

/// The stunnerd config rendered for Gateway `id` (`<namespace>/<name>`) from the manifests
/// under `path`, as JSON text (so the caller parses it like any config: env expansion of
/// `$STUNNER_ADDR`, validation). No such Gateway: the zero config, which a watch ignores.
pub fn render_for(path: &Path, id: &str) -> Result<String, String> {
    let (objects, errors) = k8s::load_objects(&[path.to_path_buf()]);
    let bad: Vec<String> = errors
        .iter()
        .filter(|e| e.is_error())
        .map(|e| e.to_string())
        .collect();
    if !bad.is_empty() {
        return Err(format!("manifests {}: {}", path.display(), bad.join("; ")));
    }
    let config = k8s::render_config_for(&objects, id, Mode::Managed)
        .map_err(|e| format!("manifests {}: {e}", path.display()))?
        .unwrap_or_else(|| crate::config::zero_config(id));
    serde_json::to_string(&config).map_err(|e| format!("manifests {}: {e}", path.display()))
}
