//! The config one manifest-driven stunnerd serves (`--id <namespace>/<gateway>`).

use crate::config::StunnerConfig;

use super::Mode;
use super::objects::Object;
use super::render::render;

/// Why [`render_config_for`] has no config for a Gateway that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigForError {
    pub id: String,
    pub reasons: Vec<String>,
}

impl std::fmt::Display for ConfigForError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no config for Gateway {}: {}",
            self.id,
            self.reasons.join("; ")
        )
    }
}

impl std::error::Error for ConfigForError {}

/// The config a stunnerd with `--id <ns>/<gateway>` serves from manifests: `Ok(None)` when
/// no such Gateway of ours exists (serve the zero config), `Err` when it exists but cannot be
/// rendered (keep the last good config). In legacy mode, the config of the Gateway's class.
pub fn render_config_for(
    objects: &[Object],
    id: &str,
    mode: Mode,
) -> Result<Option<StunnerConfig>, ConfigForError> {
    let out = render(objects, mode);
    let exists = out.statuses.iter().any(|s| {
        s.kind == "Gateway" && format!("{}/{}", s.metadata.namespace, s.metadata.name) == id
    });
    if !exists {
        return Ok(None);
    }
    let config = match mode {
        Mode::Managed => out.config(id).cloned(),
        Mode::Legacy => out
            .legacy_config_of
            .get(id)
            .and_then(|i| out.configs.get(*i))
            .cloned(),
    };
    match config {
        Some(c) => Ok(Some(c)),
        None => {
            let target = format!("Gateway {id}");
            let mut reasons: Vec<String> = out
                .errors()
                .filter(|f| f.object == target)
                .map(|f| f.message.clone())
                .collect();
            if reasons.is_empty() {
                reasons.push("the Gateway was not rendered".into());
            }
            Err(ConfigForError {
                id: id.to_string(),
                reasons,
            })
        }
    }
}
