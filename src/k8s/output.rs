//! The render output as `stunnerd render` prints it.
//!
//! JSON: one object with the keys `configs` (stunnerd configs), `services`, `deployments`
//! (Kubernetes objects) and `statuses` (objects with `apiVersion`, `kind`,
//! `metadata.namespace`, `metadata.name` and `status`).
//!
//! YAML: the same content as a multi-document stream meant to be read or applied: the
//! configs wrapped in ConfigMaps (legacy mode: the operator's `stunnerd-config`), then the
//! Services and Deployments, each a document. Statuses follow as a commented-out block:
//! applying a document with only `status` through `kubectl apply` would record an empty
//! spec as the last applied configuration of the Gateway or route, and the next apply of
//! the real manifest would then prune fields from it.

use serde::Serialize;

use crate::config::StunnerConfig;

use super::{DeploymentObject, RenderOutput, ServiceObject, StatusObject};

#[derive(Serialize)]
struct JsonOutput<'a> {
    configs: &'a [StunnerConfig],
    services: &'a [ServiceObject],
    deployments: &'a [DeploymentObject],
    statuses: &'a [StatusObject],
}

/// The JSON form (pretty-printed, trailing newline).
pub fn to_json(out: &RenderOutput) -> String {
    let j = JsonOutput {
        configs: &out.configs,
        services: &out.services,
        deployments: &out.deployments,
        statuses: &out.statuses,
    };
    // Serialising plain structs and JSON values cannot fail; an empty object keeps the
    // output parseable even if it somehow did.
    let mut s = serde_json::to_string_pretty(&j).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

/// The YAML form.
pub fn to_yaml(out: &RenderOutput) -> String {
    let mut s = String::new();
    for cm in &out.config_maps {
        let id = format!("{}/{}", cm.metadata.namespace, cm.metadata.name);
        push_doc(&mut s, &format!("stunnerd config in ConfigMap {id}"), cm);
    }
    for svc in &out.services {
        push_doc(&mut s, "", svc);
    }
    for d in &out.deployments {
        push_doc(&mut s, "", d);
    }
    if !out.statuses.is_empty() {
        s.push_str(
            "# Statuses, as computed by the renderer (commented out: not for kubectl apply).\n",
        );
        for st in &out.statuses {
            s.push_str("# ---\n");
            for line in yaml(st).lines() {
                s.push_str("# ");
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s
}

fn push_doc<T: Serialize>(s: &mut String, comment: &str, v: &T) {
    s.push_str("---\n");
    if !comment.is_empty() {
        s.push_str("# ");
        s.push_str(comment);
        s.push('\n');
    }
    s.push_str(&yaml(v));
}

fn yaml<T: Serialize>(v: &T) -> String {
    let mut text = serde_norway::to_string(v).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
