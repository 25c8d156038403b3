//! Public address discovery for listeners (spec 2.7.5).
//!
//! The address comes from the Gateway's Service: the one in the input that the operator
//! created earlier (it carries the LoadBalancer status), or, when there is none, the Service
//! this render derives, which is what the cluster will converge to. Upstream only looks at
//! the live Service and so needs a second render after creating it; rendering from
//! manifests has no second round.

use super::OWNER_ANNOTATION;
use super::objects::{Gateway, LoadBalancerIngress, Service};
use super::service::ServiceObject;
use super::store::Store;

/// A listener's public address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PublicAddr {
    pub address: String,
    pub port: u16,
    /// `IPAddress` or `Hostname` (or the type of the Gateway's address hint).
    pub address_type: String,
}

/// The parts of a Service that matter for discovery.
#[derive(Debug, Clone, Default)]
pub(super) struct SvcView {
    pub svc_type: String,
    /// `(protocol, port, nodePort)`.
    pub ports: Vec<(String, i64, i64)>,
    pub ingress: Vec<LoadBalancerIngress>,
}

impl SvcView {
    pub(super) fn from_input(s: &Service) -> SvcView {
        SvcView {
            svc_type: s
                .spec
                .service_type
                .clone()
                .unwrap_or_else(|| "ClusterIP".into()),
            ports: s
                .spec
                .ports
                .iter()
                .map(|p| {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    (proto, p.port, p.node_port.unwrap_or(0))
                })
                .collect(),
            ingress: s.status.load_balancer.ingress.clone(),
        }
    }

    pub(super) fn from_rendered(s: &ServiceObject) -> SvcView {
        SvcView {
            svc_type: s.spec.service_type.clone(),
            ports: s
                .spec
                .ports
                .iter()
                .map(|p| (p.protocol.clone(), p.port, p.node_port.unwrap_or(0)))
                .collect(),
            ingress: Vec::new(),
        }
    }
}

/// The Gateway's public Service among the input Services: annotated with the Gateway's
/// `ns/name` and owned by it (matching UID), preferring LoadBalancer, then ExternalName,
/// NodePort and ClusterIP.
pub(super) fn find_public_service(store: &Store<'_>, gw: &Gateway) -> Option<SvcView> {
    let id = gw.metadata.key();
    let rank = |t: &str| match t {
        "LoadBalancer" => 0,
        "ExternalName" => 1,
        "NodePort" => 2,
        _ => 3,
    };
    store
        .services
        .values()
        .filter(|s| s.metadata.annotations.get(OWNER_ANNOTATION) == Some(&id))
        .filter(|s| {
            s.metadata.owner_references.iter().any(|o| {
                o.kind == "Gateway" && o.name == gw.metadata.name && o.uid == gw.metadata.uid
            })
        })
        .map(|s| SvcView::from_input(s))
        .min_by_key(|v| rank(&v.svc_type))
}

/// The first node address usable for NodePort access: an ExternalIP on any node, else an
/// ExternalDNS name (typed `Hostname`; upstream calls it an `IPAddress`). Nodes are in name
/// order.
pub(super) fn node_address(store: &Store<'_>) -> Option<(String, String)> {
    for (wanted, typ) in [("ExternalIP", "IPAddress"), ("ExternalDNS", "Hostname")] {
        for n in store.nodes.values() {
            if let Some(a) = n
                .status
                .addresses
                .iter()
                .find(|a| a.address_type == wanted && !a.address.is_empty())
            {
                return Some((a.address.clone(), typ.to_string()));
            }
        }
    }
    None
}

/// The public address of a listener on `port`/`protocol`, if any.
pub(super) fn public_address(
    svc: &SvcView,
    gw: &Gateway,
    port: i64,
    protocol: &str,
    node: Option<&(String, String)>,
) -> Option<PublicAddr> {
    let (_, svc_port, node_port) = svc
        .ports
        .iter()
        .find(|(p, sp, _)| *sp == port && p.eq_ignore_ascii_case(protocol))?;
    let mk = |address: &str, port: i64, t: &str| {
        let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
        Some(PublicAddr {
            address: address.to_string(),
            port,
            address_type: t.to_string(),
        })
    };
    if let Some(hint) = gw.spec.addresses.first().filter(|a| !a.value.is_empty()) {
        let t = hint.address_type.as_deref().unwrap_or("IPAddress");
        return mk(&hint.value, *svc_port, t);
    }
    if svc.svc_type == "LoadBalancer" {
        let with_port = svc.ingress.iter().find(|i| {
            i.ports
                .iter()
                .any(|ps| ps.port == *svc_port && ps.protocol.eq_ignore_ascii_case(protocol))
        });
        for ing in with_port.into_iter().chain(svc.ingress.first()) {
            if !ing.ip.is_empty() {
                return mk(&ing.ip, *svc_port, "IPAddress");
            }
            if !ing.hostname.is_empty() {
                return mk(&ing.hostname, *svc_port, "Hostname");
            }
        }
    }
    match node {
        Some((addr, t)) if *node_port > 0 => mk(addr, *node_port, t),
        _ => None,
    }
}
