//! The Service exposing a Gateway (spec 4.1, with the seed's `spec.addresses` rule).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::load::Severity;
use super::objects::{Gateway, Service};
use super::{
    Finding, GATEWAY_NAME_LABEL, GATEWAY_NAMESPACE_LABEL, Mode, OWNED_BY_LABEL, OWNER_ANNOTATION,
};

pub(super) const SERVICE_TYPE_ANN: &str = "stunner.l7mp.io/service-type";
pub(super) const MIXED_PROTOCOL_ANN: &str = "stunner.l7mp.io/enable-mixed-protocol-lb";
pub(super) const TRAFFIC_POLICY_ANN: &str = "stunner.l7mp.io/external-traffic-policy";
pub(super) const NODEPORT_ANN: &str = "stunner.l7mp.io/nodeport";
pub(super) const TARGETPORT_ANN: &str = "stunner.l7mp.io/targetport";
pub(super) const NO_HEALTH_EXPOSE_ANN: &str = "stunner.l7mp.io/disable-health-check-expose";
pub(super) const NO_AFFINITY_ANN: &str = "stunner.l7mp.io/disable-session-affinity";
/// `kubectl apply` bookkeeping: copying it from the Gateway would make the Service claim to
/// have been applied as the Gateway's JSON.
const LAST_APPLIED_ANN: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: MetaOut,
    pub spec: ServiceSpecOut,
}

/// Metadata of a derived object.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetaOut {
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerRefOut>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRefOut {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// The ownerReference making a derived object garbage-collected with its Gateway. Only
/// when the Gateway has a UID: one read from a manifest has none until it is created, and
/// the API server refuses an ownerReference without one.
pub(super) fn gateway_owner(gw: &Gateway) -> Vec<OwnerRefOut> {
    owner(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        &gw.metadata.name,
        &gw.metadata.uid,
    )
}

/// An ownerReference list: one entry, or none when `uid` is unknown.
pub(super) fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Vec<OwnerRefOut> {
    if uid.is_empty() {
        return Vec::new();
    }
    vec![OwnerRefOut {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
    }]
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpecOut {
    #[serde(rename = "type")]
    pub service_type: String,
    pub selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    pub session_affinity: String,
    pub ports: Vec<ServicePortOut>,
    #[serde(rename = "loadBalancerIP", skip_serializing_if = "Option::is_none")]
    pub load_balancer_ip: Option<String>,
    #[serde(rename = "externalIPs", skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<String>,
}

impl ServiceSpecOut {
    pub fn port(&self, name: &str) -> Option<&ServicePortOut> {
        self.ports.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortOut {
    pub name: String,
    pub protocol: String,
    pub port: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<Value>,
}

/// A listener as the Service sees it.
pub(super) struct PortSpec<'a> {
    pub name: &'a str,
    pub port: i64,
    /// `UDP` or `TCP`; `None` for an unsupported protocol (left out).
    pub protocol: Option<&'static str>,
    /// Conflicted listeners are left out: two ports with one number and protocol would make
    /// the API server refuse the whole Service.
    pub conflicted: bool,
}

/// The Service, and the listener-name -> target port map of the targetport annotation (the
/// listener's stunnerd port follows it).
pub(super) struct ServiceResult {
    pub service: Option<ServiceObject>,
    pub target_ports: BTreeMap<String, i64>,
}

/// The annotations requested for a Gateway's Service: GatewayConfig
/// `loadBalancerServiceAnnotations`, overridden by the Gateway's own, then the owner key.
pub(super) fn merged_annotations(
    gw: &Gateway,
    gc_annotations: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut a = gc_annotations.clone();
    a.extend(gw.metadata.annotations.clone());
    a.remove(LAST_APPLIED_ANN);
    a.insert(OWNER_ANNOTATION.into(), gw.metadata.key());
    a
}

pub(super) fn render_service(
    gw: &Gateway,
    gc_annotations: &BTreeMap<String, String>,
    existing: Option<&Service>,
    listeners: &[PortSpec<'_>],
    mode: Mode,
    findings: &mut Vec<Finding>,
) -> ServiceResult {
    let (ns, name) = (&gw.metadata.namespace, &gw.metadata.name);
    let requested = merged_annotations(gw, gc_annotations);
    let flag = |k: &str| {
        requested
            .get(k)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let describe = format!("Gateway {}", gw.metadata.key());
    let mut port_map = |k: &str| match requested.get(k).map(|v| parse_port_map(v)) {
        None => BTreeMap::new(),
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            findings.push(Finding::new(
                Severity::Error,
                &describe,
                &format!("metadata.annotations[{k}]"),
                format!("ignored: {e}"),
            ));
            BTreeMap::new()
        }
    };
    let node_ports = port_map(NODEPORT_ANN);
    let target_ports = port_map(TARGETPORT_ANN);

    let service_type = match requested.get(SERVICE_TYPE_ANN).map(String::as_str) {
        Some(t @ ("ClusterIP" | "NodePort" | "ExternalName" | "LoadBalancer")) => t.to_string(),
        _ => "LoadBalancer".to_string(),
    };

    // Ports: with mixed-protocol LBs off, the first valid listener's protocol wins.
    let mixed = flag(MIXED_PROTOCOL_ANN);
    let first_proto = listeners.iter().find_map(|l| l.protocol);
    let existing_ports = existing.map(|s| s.spec.ports.as_slice()).unwrap_or(&[]);
    let mut ports: Vec<ServicePortOut> = Vec::new();
    for l in listeners {
        let Some(proto) = l.protocol else { continue };
        if l.conflicted || (!mixed && Some(proto) != first_proto) {
            continue;
        }
        let old = existing_ports.iter().find(|p| p.name == l.name);
        let mut p = ServicePortOut {
            name: l.name.to_string(),
            protocol: proto.to_string(),
            port: l.port,
            node_port: old.and_then(|o| o.node_port).filter(|n| *n > 0),
            target_port: old.and_then(|o| o.target_port.clone()),
        };
        if let Some(np) = node_ports.get(l.name) {
            p.node_port = Some(*np);
        }
        if let Some(tp) = target_ports.get(l.name) {
            p.target_port = Some(Value::from(*tp));
        }
        ports.push(p);
    }
    if ports.is_empty() {
        return ServiceResult {
            service: None,
            target_ports,
        };
    }
    if service_type == "LoadBalancer" && !flag(NO_HEALTH_EXPOSE_ANN) {
        if let Some(hc) = health_check_port(&requested) {
            ports.push(ServicePortOut {
                name: "gateway-health-check".into(),
                protocol: "TCP".into(),
                port: hc,
                node_port: None,
                target_port: None,
            });
        }
    }

    let mut labels = existing
        .map(|s| s.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert(OWNED_BY_LABEL.into(), "stunner".into());
    labels.insert(GATEWAY_NAME_LABEL.into(), name.clone());
    labels.insert(GATEWAY_NAMESPACE_LABEL.into(), ns.clone());

    let annotations = match existing {
        None => requested.clone(),
        Some(s) => {
            let mut a = s.metadata.annotations.clone();
            // Our own keys the Gateway no longer asks for are dropped, others' kept.
            a.retain(|k, _| {
                !k.to_ascii_lowercase().starts_with("stunner.l7mp.io") || requested.contains_key(k)
            });
            a.extend(requested.clone());
            a
        }
    };

    let mut selector = BTreeMap::from([("app".to_string(), "stunner".to_string())]);
    if mode == Mode::Managed {
        selector.insert(GATEWAY_NAME_LABEL.into(), name.clone());
        selector.insert(GATEWAY_NAMESPACE_LABEL.into(), ns.clone());
    }

    let local = requested
        .get(TRAFFIC_POLICY_ANN)
        .is_some_and(|v| v.eq_ignore_ascii_case("local"))
        && matches!(service_type.as_str(), "NodePort" | "LoadBalancer");

    // Seed: the first address sets both loadBalancerIP and externalIPs (upstream: only the
    // former).
    let hint = gw
        .spec
        .addresses
        .first()
        .filter(|a| a.address_type.as_deref().is_none_or(|t| t == "IPAddress"))
        .filter(|a| !a.value.is_empty())
        .map(|a| a.value.clone());

    let is_lb = service_type == "LoadBalancer";
    let service = ServiceObject {
        api_version: "v1".into(),
        kind: "Service".into(),
        metadata: MetaOut {
            name: name.clone(),
            namespace: ns.clone(),
            labels,
            annotations,
            owner_references: gateway_owner(gw),
        },
        spec: ServiceSpecOut {
            service_type,
            selector,
            external_traffic_policy: local.then(|| "Local".to_string()),
            session_affinity: if flag(NO_AFFINITY_ANN) {
                "None"
            } else {
                "ClientIP"
            }
            .into(),
            ports,
            external_ips: hint.iter().cloned().collect(),
            // The API server refuses loadBalancerIP on other Service types.
            load_balancer_ip: hint.filter(|_| is_lb),
        },
    };
    ServiceResult {
        service: Some(service),
        target_ports,
    }
}

/// A `{"listener": port, ...}` annotation. Braces may be left out (`"a":1,"b":2`); the empty
/// string is an empty map.
pub fn parse_port_map(s: &str) -> Result<BTreeMap<String, i64>, String> {
    if s.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let parsed = serde_json::from_str::<serde_json::Map<String, Value>>(s)
        .or_else(|_| serde_json::from_str(&format!("{{{s}}}")))
        .map_err(|_| format!("{s:?} is not a JSON object of listener names to ports"))?;
    parsed
        .into_iter()
        .map(|(k, v)| match v.as_i64() {
            Some(p) => Ok((k, p)),
            None => Err(format!("value of {k:?} is not an integer port")),
        })
        .collect()
}

/// The load balancer health-check port to expose: a `service.beta.kubernetes.io/*health*port`
/// annotation with an integer value together with a `...health*protocol` annotation of
/// TCP or HTTP (spec 4.1 step 9). Keys are taken in sorted order.
fn health_check_port(ann: &BTreeMap<String, String>) -> Option<i64> {
    let matching = |suffix: &str| {
        ann.iter().find_map(|(k, v)| {
            let rest = k.strip_prefix("service.beta.kubernetes.io/")?;
            let head = rest.strip_suffix(suffix)?;
            head.contains("health").then_some(v.as_str())
        })
    };
    let port = matching("port")?.trim().parse::<i64>().ok()?;
    let proto = matching("protocol")?;
    (proto.eq_ignore_ascii_case("TCP") || proto.eq_ignore_ascii_case("HTTP")).then_some(port)
}
