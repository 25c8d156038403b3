//! Typed views of the Kubernetes objects the adapter reads.
//!
//! Only the fields the operator uses are modelled; everything else in a manifest is ignored,
//! as the API server would keep it but the operator never looks at it. Pod-level passthrough
//! fields of a Dataplane (resources, affinity, ...) stay untyped JSON: they are copied into
//! the Deployment verbatim and Kubernetes, not we, owns their schema.
//!
//! Decoding goes through `serde` with `serde_path_to_error` (see `load.rs`), so a type error is
//! reported with its field path. Nulls are stripped before decoding, because Kubernetes treats
//! `field: null` as "not set" and so must we.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// One decoded object. The variants are the kinds of issue 6, item 1.
// Objects are decoded once per render, a few hundred at most: boxing the larger variants
// would cost more in readability than the bytes it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Object {
    GatewayClass(GatewayClass),
    GatewayConfig(GatewayConfig),
    Gateway(Gateway),
    UdpRoute(UdpRoute),
    StaticService(StaticService),
    Dataplane(Dataplane),
    Secret(Secret),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Endpoints(Endpoints),
    Namespace(Namespace),
    Node(Node),
}

impl Object {
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::GatewayConfig(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::UdpRoute(o) => &o.metadata,
            Object::StaticService(o) => &o.metadata,
            Object::Dataplane(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
        }
    }

    /// The kind as written in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::GatewayClass(_) => "GatewayClass",
            Object::GatewayConfig(_) => "GatewayConfig",
            Object::Gateway(_) => "Gateway",
            Object::UdpRoute(_) => "UDPRoute",
            Object::StaticService(_) => "StaticService",
            Object::Dataplane(_) => "Dataplane",
            Object::Secret(_) => "Secret",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Endpoints(_) => "Endpoints",
            Object::Namespace(_) => "Namespace",
            Object::Node(_) => "Node",
        }
    }

    /// `Kind ns/name` (or `Kind name` for cluster-scoped kinds), for messages.
    pub fn describe(&self) -> String {
        let kind = match self {
            Object::UdpRoute(r) if r.version == RouteVersion::V1Alpha2 => "UDPRoute (v1alpha2)",
            _ => self.kind(),
        };
        format!("{kind} {}", self.meta().key())
    }
}

/// Whether a kind lives in a namespace. Cluster-scoped objects ignore `metadata.namespace`.
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(kind, "GatewayClass" | "Dataplane" | "Namespace" | "Node")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: String,
    /// Empty for cluster-scoped objects; the loader defaults it to `default` otherwise.
    pub namespace: String,
    pub uid: String,
    pub generation: i64,
    #[serde(deserialize_with = "string_map")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "string_map")]
    pub annotations: BTreeMap<String, String>,
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// `ns/name`, or `name` for cluster-scoped objects.
    pub fn key(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

// ---------------------------------------------------------------------------------------------
// Gateway API and STUNner kinds

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GatewayClass {
    pub metadata: ObjectMeta,
    pub spec: GatewayClassSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayClassSpec {
    pub controller_name: String,
    pub parameters_ref: Option<ParametersRef>,
    pub description: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParametersRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    pub metadata: ObjectMeta,
    pub spec: GatewayConfigSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayConfigSpec {
    pub dataplane: Option<String>,
    pub log_level: Option<String>,
    pub realm: Option<String>,
    pub auth_ref: Option<ObjectRef>,
    pub auth_type: Option<String>,
    /// The CRD spells it `userName`; the seed's table says `username`. Accept both.
    #[serde(alias = "username")]
    pub user_name: Option<String>,
    pub password: Option<String>,
    pub shared_secret: Option<String>,
    /// Documented as "not used by STUNner"; decoded only so a wrong type is reported.
    pub auth_lifetime: Option<i64>,
    #[serde(deserialize_with = "string_map")]
    pub load_balancer_service_annotations: BTreeMap<String, String>,
}

/// A namespaced reference with optional group and kind (authRef, certificateRefs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Gateway {
    pub metadata: ObjectMeta,
    pub spec: GatewaySpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
    pub addresses: Vec<GatewayAddress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Listener {
    pub name: String,
    pub port: i64,
    pub protocol: String,
    pub tls: Option<GatewayTls>,
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayTls {
    pub mode: Option<String>,
    pub certificate_refs: Vec<ObjectRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteNamespaces {
    pub from: Option<String>,
    pub selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    #[serde(deserialize_with = "string_map")]
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayAddress {
    #[serde(rename = "type")]
    pub address_type: Option<String>,
    pub value: String,
}

/// Which API a UDPRoute came from. v1alpha2 routes are converted to the STUNner shape on
/// load, dropping backend `port`s (spec 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteVersion {
    #[default]
    StunnerV1,
    V1Alpha2,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UdpRoute {
    pub metadata: ObjectMeta,
    pub spec: UdpRouteSpec,
    pub status: RouteStatusIn,
    #[serde(skip)]
    pub version: RouteVersion,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UdpRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    pub rules: Vec<RouteRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    /// Ignored by the operator; decoded so that a wrong type is reported.
    pub port: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteRule {
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i64>,
    pub end_port: Option<i64>,
}

/// The route status found in the input: only kept so that parent entries written by other
/// controllers survive our status update.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RouteStatusIn {
    pub parents: Vec<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StaticService {
    pub metadata: ObjectMeta,
    pub spec: StaticServiceSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StaticServiceSpec {
    pub prefixes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Dataplane {
    pub metadata: ObjectMeta,
    pub spec: DataplaneSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataplaneSpec {
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<Value>,
    pub env_from: Vec<Value>,
    pub replicas: Option<i32>,
    pub host_network: bool,
    pub resources: Option<Value>,
    pub affinity: Option<Value>,
    pub tolerations: Option<Value>,
    pub security_context: Option<Value>,
    pub container_security_context: Option<Value>,
    pub image_pull_secrets: Option<Value>,
    pub topology_spread_constraints: Option<Value>,
    pub termination_grace_period_seconds: Option<i64>,
    pub disable_health_check: bool,
    pub enable_metrics_endpoint: bool,
    #[serde(deserialize_with = "string_map")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "string_map")]
    pub annotations: BTreeMap<String, String>,
    pub dataplane_resource: Option<String>,
    pub offload_engine: Option<String>,
    pub offload_interfaces: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Core and discovery kinds

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Secret {
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub secret_type: String,
    pub data: BTreeMap<String, Base64Bytes>,
    #[serde(deserialize_with = "string_map")]
    pub string_data: BTreeMap<String, String>,
}

impl Secret {
    /// The value of `key` with Kubernetes' write semantics: `stringData` wins over `data`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(s) = self.string_data.get(key) {
            return Some(s.as_bytes().to_vec());
        }
        self.data.get(key).map(|b| b.0.clone())
    }

    /// Every key of `data` and `stringData`, sorted, each once.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .data
            .keys()
            .chain(self.string_data.keys())
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Like [`get`](Self::get), as (lossy) UTF-8: credentials are text.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// A `data` value: base64 in the manifest, raw bytes once decoded.
#[derive(Debug, Clone, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        // Kubernetes accepts standard base64 only; whitespace from folded YAML is tolerated
        // because `kubectl` users paste wrapped output of `base64`.
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map(Base64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
    pub status: ServiceStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    pub ports: Vec<ServicePortIn>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePortIn {
    pub name: String,
    pub protocol: Option<String>,
    pub port: i64,
    pub node_port: Option<i64>,
    /// An int or a named port; kept as written.
    pub target_port: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceStatus {
    pub load_balancer: LoadBalancerStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LoadBalancerStatus {
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LoadBalancerIngress {
    pub ip: String,
    pub hostname: String,
    pub ports: Vec<PortStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PortStatus {
    pub port: i64,
    pub protocol: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    pub address_type: String,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
}

/// A core/v1 `Endpoints` object: what fronts a Service without a selector (external media
/// servers). Read only where no EndpointSlice exists for the Service; in a live cluster
/// Kubernetes mirrors it into an EndpointSlice, a manifests directory has only what was written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Endpoints {
    pub metadata: ObjectMeta,
    pub subsets: Vec<EndpointSubset>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSubset {
    pub addresses: Vec<EndpointAddress>,
    pub not_ready_addresses: Vec<EndpointAddress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointAddress {
    pub ip: String,
}

impl Endpoints {
    /// Every address, ready or not (as the operator reads them: a not-ready pod may still
    /// carry media), in order of appearance.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.subsets.iter().flat_map(|s| {
            s.addresses
                .iter()
                .chain(s.not_ready_addresses.iter())
                .map(|a| a.ip.as_str())
                .filter(|ip| !ip.is_empty())
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Node {
    pub metadata: ObjectMeta,
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub address_type: String,
    pub address: String,
}

// ---------------------------------------------------------------------------------------------

/// A string map whose values may be written as YAML scalars of any type. The seed itself
/// writes `stunner.l7mp.io/enable-mixed-protocol-lb: true` (a boolean) as an annotation; the
/// API server would refuse that, but a user reading the seed expects it to work.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, Scalar> = BTreeMap::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Scalar(s)),
            Value::Bool(b) => Ok(Scalar(b.to_string())),
            Value::Number(n) => Ok(Scalar(n.to_string())),
            Value::Null => Ok(Scalar(String::new())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, found {}",
                json_type(&other)
            ))),
        }
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
