//! One cluster per UDPRoute, from its backends (spec 2.9).
//!
//! Each backend is resolved on its own: one bad backend never hides the good ones (upstream's
//! "Q-skip" and "Q-unknown" quirks drop later backends or the whole cluster after a missing
//! one, and "Q-mixed" mislabels the cluster type; see docs/k8s.md).

use crate::config::{ClusterConfig, ClusterProtocol, ClusterType};

use super::Options;
use super::objects::{BackendRef, UdpRoute};
use super::status::BackendOutcome;
use super::store::{Store, key};

pub(super) const STUNNER_GROUP: &str = "stunner.l7mp.io";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a backend could not be (fully) used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BackendErrorKind {
    InvalidGroup,
    InvalidKind,
    /// Neither endpoints nor a ClusterIP (or a missing StaticService).
    NotFound,
    /// Endpoint addresses exist but the Service object does not.
    ServiceNotFound,
    /// The Service has a ClusterIP but no endpoint addresses.
    EndpointNotFound,
    InconsistentType,
    InvalidPortRange,
    /// The route has no rules at all (critical: no cluster).
    NoRules,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BackendError {
    pub kind: BackendErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterResult {
    pub cluster: Option<ClusterConfig>,
    pub errors: Vec<BackendError>,
}

impl ClusterResult {
    /// The route's ResolvedRefs outcome: the last error decides, as upstream.
    pub(super) fn outcome(&self) -> BackendOutcome {
        match self.errors.last().map(|e| e.kind) {
            None => BackendOutcome::Resolved,
            Some(BackendErrorKind::InvalidGroup | BackendErrorKind::InvalidKind) => {
                BackendOutcome::InvalidKind
            }
            Some(_) => BackendOutcome::NotFound,
        }
    }

    /// All error messages, joined, for status messages.
    pub(super) fn detail(&self) -> String {
        self.errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Render the cluster of `route`.
pub(super) fn render_cluster(store: &Store<'_>, route: &UdpRoute, opts: &Options) -> ClusterResult {
    let route_ns = &route.metadata.namespace;
    let name = format!("{route_ns}/{}", route.metadata.name);
    let mut errors = Vec::new();
    if route.spec.rules.is_empty() {
        errors.push(BackendError {
            kind: BackendErrorKind::NoRules,
            message: "no rules found in route".into(),
        });
        return ClusterResult {
            cluster: None,
            errors,
        };
    }
    let mut cluster_type: Option<ClusterType> = None;
    let mut endpoints = Vec::new();
    // Upstream reads only rules[0]; the seed says access to all backends of a route is
    // allowed, so every rule's backends count.
    for b in route.spec.rules.iter().flat_map(|r| &r.backend_refs) {
        let ns = b
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(route_ns);
        let resolved = match backend_kind(b) {
            Err(e) => {
                errors.push(e);
                continue;
            }
            Ok(Kind::Service) => service_backend(store, ns, &b.name, opts, &mut errors),
            Ok(Kind::StaticService) => static_backend(store, ns, &b.name, &mut errors),
        };
        let Some((t, mut eps)) = resolved else {
            continue;
        };
        match cluster_type {
            Some(prev) if prev != t => {
                errors.push(BackendError {
                    kind: BackendErrorKind::InconsistentType,
                    message: format!(
                        "backend {ns}/{}: a {} backend cannot share a cluster with {} backends",
                        b.name,
                        t.as_str(),
                        prev.as_str()
                    ),
                });
                continue;
            }
            _ => cluster_type = Some(t),
        }
        if t == ClusterType::Static {
            match port_range(b) {
                Ok(None) => {}
                Ok(Some((lo, hi))) => {
                    for e in &mut eps {
                        *e = format!("{e}:<{lo}-{hi}>");
                    }
                }
                Err(msg) => {
                    errors.push(BackendError {
                        kind: BackendErrorKind::InvalidPortRange,
                        message: format!("backend {ns}/{}: {msg}", b.name),
                    });
                    continue;
                }
            }
        }
        endpoints.extend(eps);
    }
    // Upstream's validator sorts; duplicates (a pod in two slices) say nothing new.
    endpoints.sort();
    endpoints.dedup();
    ClusterResult {
        cluster: Some(ClusterConfig {
            name,
            cluster_type: cluster_type.unwrap_or(ClusterType::Static),
            protocol: ClusterProtocol::Udp,
            endpoints,
        }),
        errors,
    }
}

enum Kind {
    Service,
    StaticService,
}

fn backend_kind(b: &BackendRef) -> Result<Kind, BackendError> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let err = |kind, message| Err(BackendError { kind, message });
    if !group.is_empty() && group != STUNNER_GROUP {
        return err(
            BackendErrorKind::InvalidGroup,
            format!(
                "backend {}: invalid group {group:?} (expecting \"\" for a Service or \
                 \"{STUNNER_GROUP}\" for a StaticService)",
                b.name
            ),
        );
    }
    match (group, kind) {
        ("", "Service") => Ok(Kind::Service),
        (STUNNER_GROUP, "StaticService") => Ok(Kind::StaticService),
        ("", "StaticService") => err(
            BackendErrorKind::InvalidKind,
            format!(
                "backend {}: kind StaticService needs group \"{STUNNER_GROUP}\"",
                b.name
            ),
        ),
        (STUNNER_GROUP, "Service") => err(
            BackendErrorKind::InvalidKind,
            format!(
                "backend {}: kind Service needs the core group \"\", not \"{STUNNER_GROUP}\"",
                b.name
            ),
        ),
        (_, k) => err(
            BackendErrorKind::InvalidKind,
            format!(
                "backend {}: invalid kind {k:?} (expecting Service or StaticService)",
                b.name
            ),
        ),
    }
}

/// A Service backend: with endpoint discovery, every endpoint address (see
/// [`endpoint_addresses`]) plus the ClusterIP (STATIC); without, one STRICT_DNS name.
fn service_backend(
    store: &Store<'_>,
    ns: &str,
    name: &str,
    opts: &Options,
    errors: &mut Vec<BackendError>,
) -> Option<(ClusterType, Vec<String>)> {
    if !opts.endpoint_discovery {
        return Some((
            ClusterType::StrictDns,
            vec![format!("{name}.{ns}.svc.cluster.local")],
        ));
    }
    let id = format!("{ns}/{name}");
    let addresses = endpoint_addresses(store, ns, name);
    let svc = store.services.get(&key(ns, name));
    let mut cluster_ips: Vec<String> = Vec::new();
    if let Some(svc) = svc {
        // `clusterIP` plus the dual-stack `clusterIPs`; `None` marks a headless Service.
        let all = svc
            .spec
            .cluster_ip
            .iter()
            .chain(svc.spec.cluster_ips.iter());
        for ip in all {
            if !ip.is_empty() && ip != "None" && !cluster_ips.contains(ip) {
                cluster_ips.push(ip.clone());
            }
        }
    }
    let mut push = |kind, message| errors.push(BackendError { kind, message });
    if !opts.relay_to_cluster_ip {
        // Only the endpoints matter, so the Service object is not needed (spec 2.9).
        if addresses.is_empty() {
            let why = match svc {
                Some(_) => format!("Service {id} has no EndpointSlice or Endpoints addresses"),
                None => format!("no EndpointSlice or Endpoints addresses found for Service {id}"),
            };
            push(BackendErrorKind::NotFound, why);
            return None;
        }
        return Some((ClusterType::Static, addresses));
    }
    match (svc.is_some(), addresses.is_empty(), cluster_ips.is_empty()) {
        (false, true, _) => {
            push(
                BackendErrorKind::NotFound,
                store.why_missing("Service", &id),
            );
            return None;
        }
        (false, false, _) => push(
            BackendErrorKind::ServiceNotFound,
            format!(
                "{} (its endpoint addresses are used)",
                store.why_missing("Service", &id)
            ),
        ),
        (true, true, true) => {
            push(
                BackendErrorKind::NotFound,
                format!(
                    "Service {id} has no EndpointSlice or Endpoints addresses and no clusterIP"
                ),
            );
            return None;
        }
        (true, true, false) => push(
            BackendErrorKind::EndpointNotFound,
            format!(
                "no EndpointSlice or Endpoints addresses found for Service {id} (only its clusterIP is used)"
            ),
        ),
        // Endpoints found; a missing clusterIP is a headless Service, which is fine.
        (true, false, _) => {}
    }
    let mut eps = addresses;
    eps.extend(cluster_ips);
    Some((ClusterType::Static, eps))
}

/// The addresses of Service `ns/name`, ready or not (a terminating pod may still carry media,
/// spec 2.9): those of its EndpointSlices (labelled `kubernetes.io/service-name`) when any
/// exists, else those of the core/v1 `Endpoints` object of the same name. A Service without
/// a selector is fronted by a hand-written `Endpoints` object; in a live cluster Kubernetes
/// mirrors it into an EndpointSlice (so the slice wins and nothing is counted twice), but a
/// manifests directory holds only what the user wrote.
fn endpoint_addresses(store: &Store<'_>, ns: &str, name: &str) -> Vec<String> {
    let mut slices = store
        .slices
        .iter()
        .filter(|s| {
            s.metadata.namespace == ns
                && s.metadata
                    .labels
                    .get(SERVICE_NAME_LABEL)
                    .map(String::as_str)
                    == Some(name)
        })
        .peekable();
    if slices.peek().is_some() {
        return slices
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.iter().cloned()))
            .collect();
    }
    store
        .endpoints
        .get(&key(ns, name))
        .map(|e| e.addresses().map(str::to_string).collect())
        .unwrap_or_default()
}

fn static_backend(
    store: &Store<'_>,
    ns: &str,
    name: &str,
    errors: &mut Vec<BackendError>,
) -> Option<(ClusterType, Vec<String>)> {
    match store.static_services.get(&key(ns, name)) {
        Some(s) => Some((ClusterType::Static, s.spec.prefixes.clone())),
        None => {
            errors.push(BackendError {
                kind: BackendErrorKind::NotFound,
                message: store.why_missing("StaticService", &format!("{ns}/{name}")),
            });
            None
        }
    }
}

/// The backend's port range (seed: `port` alone is a singleton, `port`+`endPort` an
/// inclusive range, neither means every port; upstream reads a lone `endPort` as
/// `[1, endPort]`). `None` for "every port". Bounds are schema-checked to 1-65535, so only
/// `endPort < port` remains to refuse (upstream silently ignores such an `endPort`, granting
/// `port` alone, which hides the mistake).
fn port_range(b: &BackendRef) -> Result<Option<(i64, i64)>, String> {
    let range = match (b.port, b.end_port) {
        (None, None) => return Ok(None),
        (Some(p), None) => (p, p),
        (Some(p), Some(e)) if e < p => {
            return Err(format!("invalid port range: endPort {e} < port {p}"));
        }
        (Some(p), Some(e)) => (p, e),
        (None, Some(e)) => (1, e),
    };
    Ok((range != (1, 65535)).then_some(range))
}
