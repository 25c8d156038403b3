//! UDPRoute attachment to Gateway listeners (spec 2.8).
//!
//! There is deliberately no protocol filter: UDPRoutes name the backends a TURN client may
//! reach, whatever transport the client used to get to the listener.

use std::collections::BTreeMap;

use super::objects::{Gateway, LabelSelector, Listener, ParentRef, UdpRoute};
use super::store::Store;

pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Whether parentRef `p` of `route` names Gateway `gw` (group, kind, namespace, name).
pub(super) fn names_gateway(route: &UdpRoute, p: &ParentRef, gw: &Gateway) -> bool {
    // An explicit empty group means the core group, which has no Gateways; only an omitted
    // group defaults to the Gateway API group.
    let group_ok = p.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP);
    let kind_ok = p.kind.as_deref().is_none_or(|k| k == "Gateway");
    group_ok
        && kind_ok
        && parent_namespace(route, p) == gw.metadata.namespace
        && p.name == gw.metadata.name
}

/// The namespace a parentRef points into (default: the route's).
pub(super) fn parent_namespace<'r>(route: &'r UdpRoute, p: &'r ParentRef) -> &'r str {
    p.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&route.metadata.namespace)
}

/// Whether `route` attaches to listener `l` of `gw` through parentRef `p`.
pub(super) fn attaches_via(
    store: &Store<'_>,
    route: &UdpRoute,
    p: &ParentRef,
    gw: &Gateway,
    l: &Listener,
) -> bool {
    names_gateway(route, p, gw)
        && p.section_name.as_deref().is_none_or(|s| s == l.name)
        && namespace_allowed(store, route, gw, l)
}

/// Whether `route` attaches to listener `l` of `gw` through any of its parentRefs.
pub(super) fn attaches(store: &Store<'_>, route: &UdpRoute, gw: &Gateway, l: &Listener) -> bool {
    !store.is_masked(route)
        && route
            .spec
            .parent_refs
            .iter()
            .any(|p| attaches_via(store, route, p, gw, l))
}

/// The routes attached to a listener, sorted by `ns/name`, each once (upstream lists a
/// route once per matching parentRef, duplicates included).
pub(super) fn routes_for<'a>(store: &Store<'a>, gw: &Gateway, l: &Listener) -> Vec<&'a UdpRoute> {
    store
        .routes
        .iter()
        .copied()
        .filter(|r| attaches(store, r, gw, l))
        .collect()
}

/// `allowedRoutes.namespaces.from` (spec 2.8; seed: default Same).
fn namespace_allowed(store: &Store<'_>, route: &UdpRoute, gw: &Gateway, l: &Listener) -> bool {
    let ns = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    let from = ns.and_then(|n| n.from.as_deref()).unwrap_or("Same");
    match from {
        "All" => true,
        "Selector" => {
            let Some(sel) = ns.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            // The route's Namespace object must be known: its labels are what is matched.
            let Some(route_ns) = store.namespaces.get(&route.metadata.namespace) else {
                return false;
            };
            matches_selector(sel, &route_ns.metadata.labels).unwrap_or(false)
        }
        // `Same`, and unknown values (the API server would have refused them).
        _ => route.metadata.namespace == gw.metadata.namespace,
    }
}

/// Label selector semantics of Kubernetes; `Err` for an invalid selector (unknown operator,
/// values where none are allowed), which matches nothing.
pub(super) fn matches_selector(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let mut ok = sel
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    for e in &sel.match_expressions {
        let have = labels.get(&e.key);
        let m = match e.operator.as_str() {
            "In" if !e.values.is_empty() => have.is_some_and(|v| e.values.contains(v)),
            "NotIn" if !e.values.is_empty() => have.is_none_or(|v| !e.values.contains(v)),
            "Exists" if e.values.is_empty() => have.is_some(),
            "DoesNotExist" if e.values.is_empty() => have.is_none(),
            op => {
                return Err(format!(
                    "invalid label selector operator {op:?} for key {:?}",
                    e.key
                ));
            }
        };
        ok &= m;
    }
    Ok(ok)
}
