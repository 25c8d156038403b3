//! The Kubernetes adapter: STUNner's Gateway API objects in; stunnerd configs, statuses,
//! Services and Deployments out. What the STUNner gateway operator computes, as a pure
//! function, so that a user can see what manifests become before applying them and stunnerd
//! can run from manifests without an operator.
//!
//! * [`load_objects`] / [`parse_str`]: manifests (multi-document YAML or JSON, files or
//!   directories) to typed [`Object`]s, reporting each bad document with file, document
//!   number and field path.
//! * [`render`] / [`render_with`]: objects to a [`RenderOutput`]. Pure: no clock, no I/O,
//!   and sorted, so equal input gives equal output.
//! * [`render_config_for`]: the one config a manifest-driven stunnerd serves.
//! * [`cli::render_main`]: `stunnerd render -f PATH ...`.
//!
//! The user-facing reference is STUNner's Gateway API reference; the operator's behaviour is
//! followed except where it is a quirk a user would not expect (listed in docs/k8s.md).
//!
//! Module map: `objects` (typed inputs), `load` (files to objects), `schema` (CRD rules),
//! `store` (index), `render` (the pipeline), `auth`, `listener`, `attach`, `cluster`,
//! `address`, `service`, `deployment`, `status`, `output` (JSON/YAML), `cli`.

mod address;
mod attach;
mod auth;
pub mod cli;
mod cluster;
mod config_for;
mod deployment;
mod gateway;
mod listener;
mod load;
mod objects;
pub mod output;
mod render;
mod routes;
mod schema;
mod service;
mod status;
mod store;

#[cfg(test)]
mod tests;

use std::fmt;

pub use auth::{ERR_AUTH_TYPE, ERR_EPHEMERAL_SECRET, ERR_EXTERNAL_AUTH, ERR_STATIC_CREDS};
pub use config_for::{ConfigForError, render_config_for};
pub use deployment::{
    Container, DeploymentObject, DeploymentSpec, PodSpec, PodTemplate, cds_uri, default_pull_policy,
};
pub use load::{LoadError, Severity, load_objects, parse_str};
pub use objects::*;
pub use render::{render, render_with};
pub use service::{
    MetaOut, OwnerRefOut, ServiceObject, ServicePortOut, ServiceSpecOut, parse_port_map,
};
pub use status::{
    ClassStatus, Condition, GatewayStatus, GatewayStatusAddress, ListenerStatus, ParentRefOut,
    RouteParentStatus, RouteStatus, Status, StatusMeta, StatusObject,
};

use crate::config::StunnerConfig;

/// The controller name GatewayClasses must name.
pub const CONTROLLER_NAME: &str = "stunner.l7mp.io/gateway-operator";
/// `admin.name` before the managed-mode override, and the stunnerd container name.
pub const DEFAULT_ADMIN_NAME: &str = "stunner-daemon";
pub const DEFAULT_DATAPLANE: &str = "default";
pub const OWNED_BY_LABEL: &str = "stunner.l7mp.io/owned-by";
pub const GATEWAY_NAME_LABEL: &str = "stunner.l7mp.io/related-gateway-name";
pub const GATEWAY_NAMESPACE_LABEL: &str = "stunner.l7mp.io/related-gateway-namespace";
/// Annotation holding `ns/name` of the Gateway (same key as the label, other value).
pub const OWNER_ANNOTATION: &str = "stunner.l7mp.io/related-gateway-name";
pub const DISABLE_DATAPLANE_ANN: &str = "stunner.l7mp.io/disable-managed-dataplane";
/// Legacy mode's ConfigMap name and data key.
pub const LEGACY_CONFIGMAP: &str = "stunnerd-config";
pub const CONFIGMAP_KEY: &str = "stunnerd.conf";
/// The operator's default CDS address.
pub const DEFAULT_CDS_ADDRESS: &str = ":13478";

/// How configs are cut (spec 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// One config per Gateway, named `<namespace>/<gateway>`, plus a Deployment per Gateway.
    #[default]
    Managed,
    /// One config per GatewayClass (GatewayConfig) with all its Gateways' listeners, in the
    /// ConfigMap `stunnerd-config`; no Deployments.
    Legacy,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "managed" => Some(Mode::Managed),
            "legacy" => Some(Mode::Legacy),
            _ => None,
        }
    }
}

/// Render switches; the defaults are the operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// Service backends become their EndpointSlice addresses (STATIC); off: one STRICT_DNS
    /// name per Service.
    pub endpoint_discovery: bool,
    /// Add a Service's ClusterIP to its endpoints.
    pub relay_to_cluster_ip: bool,
    /// Where the rendered Deployments' stunnerd fetch their config (`STUNNER_CONFIG_ORIGIN`).
    pub cds_address: String,
}

impl Options {
    pub fn new(mode: Mode) -> Options {
        Options {
            mode,
            endpoint_discovery: true,
            relay_to_cluster_ip: true,
            cds_address: DEFAULT_CDS_ADDRESS.to_string(),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new(Mode::Managed)
    }
}

/// A problem (or note) found while rendering, about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// `Kind ns/name`.
    pub object: String,
    /// Field path inside the object, when one field is to blame.
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        object: &str,
        path: &str,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            object: object.to_string(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A ConfigMap carrying a rendered config: legacy mode's `stunnerd-config`, or (for the YAML
/// output of managed mode) one per Gateway, named after it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: MetaOut,
    pub data: std::collections::BTreeMap<String, String>,
}

/// Everything a render produces. Lists are sorted by `namespace/name`.
#[derive(Debug, Clone, Default)]
pub struct RenderOutput {
    /// Managed: one per rendered Gateway, `admin.name` = `<ns>/<gateway>`. Legacy: one per
    /// GatewayClass, `admin.name` = `stunner-daemon`.
    pub configs: Vec<StunnerConfig>,
    pub services: Vec<ServiceObject>,
    pub deployments: Vec<DeploymentObject>,
    /// The configs wrapped as ConfigMaps (legacy: the operator's `stunnerd-config`).
    pub config_maps: Vec<ConfigMapObject>,
    pub statuses: Vec<StatusObject>,
    /// Rejections (`Severity::Error`) and notes, each naming its object.
    pub findings: Vec<Finding>,
    /// Legacy mode: Gateway `ns/name` -> index of its class's config in `configs`.
    pub(crate) legacy_config_of: std::collections::BTreeMap<String, usize>,
}

impl RenderOutput {
    /// Whether some object was rejected (the CLI's exit status 1).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(Finding::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_error())
    }

    /// The config with `admin.name == id`.
    pub fn config(&self, id: &str) -> Option<&StunnerConfig> {
        self.configs.iter().find(|c| c.admin.name == id)
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<&ServiceObject> {
        self.services
            .iter()
            .find(|s| s.metadata.namespace == ns && s.metadata.name == name)
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<&DeploymentObject> {
        self.deployments
            .iter()
            .find(|s| s.metadata.namespace == ns && s.metadata.name == name)
    }

    /// The status of `kind` `ns/name` (`ns` empty for GatewayClasses). For UDPRoutes, `kind`
    /// is `UDPRoute` for stunner.l7mp.io/v1 and `UDPRoute/v1alpha2` for the Gateway API one.
    pub fn status(&self, kind: &str, ns: &str, name: &str) -> Option<&StatusObject> {
        let (kind, v1alpha2) = match kind.strip_suffix("/v1alpha2") {
            Some(k) => (k, true),
            None => (kind, false),
        };
        self.statuses.iter().find(|s| {
            s.kind == kind
                && s.metadata.namespace == ns
                && s.metadata.name == name
                && (kind != "UDPRoute" || s.api_version.ends_with("v1alpha2") == v1alpha2)
        })
    }
}
