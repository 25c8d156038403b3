//! The stunnerd Deployment per Gateway, from the Dataplane template (spec 4.2, with the seed's
//! defaults where they differ).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::objects::{Dataplane, Gateway};
use super::service::{MetaOut, gateway_owner};
use super::{
    DEFAULT_ADMIN_NAME, GATEWAY_NAME_LABEL, GATEWAY_NAMESPACE_LABEL, OWNED_BY_LABEL,
    OWNER_ANNOTATION,
};

/// Gateway labels that belong to deployment tooling and must not be copied onto the
/// Deployment, or the tool would think it owns it (spec 1, the operator's default filter).
pub(super) const LABEL_FILTER: [&str; 6] = [
    "applyset.kubernetes.io/part-of",
    "applyset.k8s.io/part-of",
    "app.kubernetes.io/managed-by",
    "argocd.argoproj.io/instance",
    "kustomize.toolkit.fluxcd.io/name",
    "kustomize.toolkit.fluxcd.io/namespace",
];

pub(super) const DEFAULT_IMAGE: &str = "l7mp/stunnerd:latest";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: MetaOut,
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    pub replicas: i32,
    pub selector: Value,
    pub template: PodTemplate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodTemplate {
    pub metadata: PodMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodMeta {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub termination_grace_period_seconds: i64,
    pub host_network: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_pull_policy: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<Value>,
    pub ports: Vec<Value>,
    pub resources: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
}

impl DeploymentObject {
    /// The stunnerd container (there is exactly one).
    pub fn container(&self) -> Option<&Container> {
        self.spec.template.spec.containers.first()
    }
}

/// Build the Deployment for `gw` from Dataplane `dp`. `cds` is the config origin URL the
/// pods are pointed at (`STUNNER_CONFIG_ORIGIN`).
pub(super) fn render_deployment(gw: &Gateway, dp: &Dataplane, cds: &str) -> DeploymentObject {
    let (ns, name) = (&gw.metadata.namespace, &gw.metadata.name);
    let s = &dp.spec;
    let mandatory = [
        (GATEWAY_NAME_LABEL, name.as_str()),
        (GATEWAY_NAMESPACE_LABEL, ns.as_str()),
    ];

    let mut labels: BTreeMap<String, String> = gw
        .metadata
        .labels
        .iter()
        .filter(|(k, _)| !LABEL_FILTER.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(OWNED_BY_LABEL.into(), "stunner".into());
    labels.extend(
        mandatory
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );

    let mut annotations = gw.metadata.annotations.clone();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(OWNER_ANNOTATION.into(), gw.metadata.key());

    let mut pod_labels = s.labels.clone();
    pod_labels.insert("app".into(), "stunner".into());
    pod_labels.extend(
        mandatory
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut pod_annotations = s.annotations.clone();
    pod_annotations.insert(OWNER_ANNOTATION.into(), gw.metadata.key());

    let selector = json!({"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["stunner"]},
        {"key": GATEWAY_NAME_LABEL, "operator": "In", "values": [name]},
        {"key": GATEWAY_NAMESPACE_LABEL, "operator": "In", "values": [ns]},
    ]});

    let image = if s.image.is_empty() {
        DEFAULT_IMAGE.to_string()
    } else {
        s.image.clone()
    };
    let mut env = vec![
        json!({"name": "STUNNER_ADDR", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "STUNNER_NAME", "value": name}),
        json!({"name": "STUNNER_NAMESPACE", "value": ns}),
        json!({"name": "STUNNER_NODENAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}),
        json!({"name": "STUNNER_CONFIG_ORIGIN", "value": cds}),
    ];
    env.extend(s.env.iter().cloned());

    let probe = |path: &str| {
        json!({
            "httpGet": {"path": path, "port": 8086, "scheme": "HTTP"},
            "periodSeconds": 15, "successThreshold": 1, "failureThreshold": 3, "timeoutSeconds": 1,
        })
    };
    let (liveness_probe, readiness_probe) = if s.disable_health_check {
        (None, None)
    } else {
        (Some(probe("/live")), Some(probe("/ready")))
    };

    let container = Container {
        name: DEFAULT_ADMIN_NAME.into(),
        image_pull_policy: s
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&image).to_string()),
        image,
        command: if s.command.is_empty() {
            vec!["stunnerd".into()]
        } else {
            s.command.clone()
        },
        args: if s.args.is_empty() {
            vec!["-w".into(), "--udp-thread-num=16".into()]
        } else {
            s.args.clone()
        },
        env,
        // The seed lists envFrom among the fields that take effect; upstream drops it.
        env_from: s.env_from.clone(),
        ports: vec![json!({"name": "metrics-port", "containerPort": 8080, "protocol": "TCP"})],
        resources: s
            .resources
            .clone()
            .unwrap_or_else(|| json!({"limits": {"memory": "20M"}, "requests": {"cpu": "250m"}})),
        liveness_probe,
        readiness_probe,
        security_context: s.container_security_context.clone(),
    };

    DeploymentObject {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        metadata: MetaOut {
            name: name.clone(),
            namespace: ns.clone(),
            labels,
            annotations,
            owner_references: gateway_owner(gw),
        },
        spec: DeploymentSpec {
            // Seed: default 1.
            replicas: s.replicas.unwrap_or(1),
            selector,
            template: PodTemplate {
                metadata: PodMeta {
                    labels: pod_labels,
                    annotations: pod_annotations,
                },
                spec: PodSpec {
                    containers: vec![container],
                    // Seed: default 30 s (the Kubernetes default); upstream's is 3600.
                    termination_grace_period_seconds: s
                        .termination_grace_period_seconds
                        .unwrap_or(30),
                    host_network: s.host_network,
                    affinity: s.affinity.clone(),
                    tolerations: s.tolerations.clone(),
                    security_context: s.security_context.clone(),
                    image_pull_secrets: s.image_pull_secrets.clone(),
                    topology_spread_constraints: s.topology_spread_constraints.clone(),
                },
            },
        },
    }
}

/// Kubernetes' rule, which the seed documents: `Always` for a `:latest` or untagged image,
/// `IfNotPresent` otherwise (upstream always renders `Always`).
pub fn default_pull_policy(image: &str) -> &'static str {
    // A digest pins the image; the tag is what follows the last ':' after the last '/'
    // (a registry host may carry a port: `host:5000/img`).
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// The CDS URL for `STUNNER_CONFIG_ORIGIN` from an address such as `:13478`, `1.2.3.4`,
/// `host:8080`, a bare or bracketed IPv6 address, or a full `http://` URL (spec 6.12).
pub fn cds_uri(addr: &str) -> String {
    const PORT: &str = "13478";
    let addr = addr.trim();
    if addr.starts_with("http://") || addr.starts_with("https://") {
        return addr.to_string();
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("http://[{addr}]:{PORT}");
    }
    if addr.starts_with('[') {
        return if addr.contains("]:") {
            format!("http://{addr}")
        } else {
            format!("http://{addr}:{PORT}")
        };
    }
    match addr.rsplit_once(':') {
        Some((_, port)) if !port.is_empty() => format!("http://{addr}"),
        Some((host, _)) => format!("http://{host}:{PORT}"),
        None => format!("http://{addr}:{PORT}"),
    }
}
