//! UDPRoute statuses: one parent entry per parentRef (spec 3.3).
//!
//! STUNner's own `stunner.l7mp.io/v1` routes can only be meant for STUNner, so they always
//! get a status, even when no parentRef resolves (upstream writes none, leaving a typo in a
//! parentRef without any feedback). Gateway API v1alpha2 routes may belong to another
//! controller and get one only when a parentRef names one of our Gateways.

use super::CONTROLLER_NAME;
use super::Finding;
use super::Options;
use super::attach::{GATEWAY_GROUP, attaches_via, names_gateway, parent_namespace};
use super::cluster::render_cluster;
use super::load::Severity;
use super::objects::{Gateway, ParentRef, RouteVersion, UdpRoute};
use super::status::{
    self, ParentOutcome, ParentRefOut, RouteParentStatus, RouteStatus, Status, StatusMeta,
    StatusObject,
};
use super::store::Store;

pub(crate) fn route_statuses(
    store: &Store<'_>,
    gateways: &[&Gateway],
    opts: &Options,
    findings: &mut Vec<Finding>,
) -> Vec<StatusObject> {
    let mut out = Vec::new();
    for route in &store.routes {
        let id = format!(
            "{} {}",
            match route.version {
                RouteVersion::StunnerV1 => "UDPRoute",
                RouteVersion::V1Alpha2 => "UDPRoute (v1alpha2)",
            },
            route.metadata.key()
        );
        let parent_of = |p: &ParentRef| -> Option<&Gateway> {
            let ns = parent_namespace(route, p);
            gateways
                .iter()
                .copied()
                .find(|g| g.metadata.namespace == ns && g.metadata.name == p.name)
        };
        let controlled = route.version == RouteVersion::StunnerV1
            || route
                .spec
                .parent_refs
                .iter()
                .any(|p| parent_of(p).is_some());
        if !controlled {
            findings.push(Finding::new(
                Severity::Note,
                &id,
                "spec.parentRefs",
                "ignored: no parentRef names a Gateway of a STUNner GatewayClass",
            ));
            continue;
        }
        let masked = store.is_masked(route);
        let g = route.metadata.generation;
        let cluster = render_cluster(store, route, opts);
        if masked {
            findings.push(Finding::new(
                Severity::Error,
                &id,
                "",
                "ignored: masked by the stunner.l7mp.io/v1 UDPRoute of the same namespace and name",
            ));
        } else {
            for e in &cluster.errors {
                findings.push(Finding::new(
                    Severity::Error,
                    &id,
                    "spec.rules",
                    e.message.clone(),
                ));
            }
        }
        let resolved = status::route_resolved_condition(cluster.outcome(), &cluster.detail(), g);
        let mut parents = Vec::new();
        for (i, p) in route.spec.parent_refs.iter().enumerate() {
            let pid = format!("{}/{}", parent_namespace(route, p), p.name);
            let outcome = if masked {
                ParentOutcome::Masked
            } else {
                match parent_of(p) {
                    None => {
                        findings.push(Finding::new(
                            Severity::Error,
                            &id,
                            &format!("spec.parentRefs[{i}]"),
                            format!("Gateway {pid} not found (or not of a STUNner GatewayClass)"),
                        ));
                        ParentOutcome::NoParent
                    }
                    Some(gw)
                        if gw
                            .spec
                            .listeners
                            .iter()
                            .any(|l| attaches_via(store, route, p, gw, l)) =>
                    {
                        ParentOutcome::Accepted
                    }
                    Some(gw) => {
                        findings.push(Finding::new(
                            Severity::Error,
                            &id,
                            &format!("spec.parentRefs[{i}]"),
                            format!(
                                "not accepted by Gateway {pid}: {}",
                                why_rejected(route, p, gw)
                            ),
                        ));
                        ParentOutcome::NotAllowed
                    }
                }
            };
            parents.push(RouteParentStatus {
                parent_ref: parent_ref_out(p),
                controller_name: CONTROLLER_NAME.into(),
                conditions: vec![
                    status::route_parent_condition(outcome, &pid, g),
                    resolved.clone(),
                ],
            });
        }
        let foreign = route
            .status
            .parents
            .iter()
            .filter(|p| p.get("controllerName").and_then(|c| c.as_str()) != Some(CONTROLLER_NAME))
            .cloned()
            .collect();
        out.push(StatusObject {
            api_version: match route.version {
                RouteVersion::StunnerV1 => "stunner.l7mp.io/v1",
                RouteVersion::V1Alpha2 => "gateway.networking.k8s.io/v1alpha2",
            }
            .into(),
            kind: "UDPRoute".into(),
            metadata: StatusMeta {
                namespace: route.metadata.namespace.clone(),
                name: route.metadata.name.clone(),
            },
            status: Status::Route(RouteStatus { parents, foreign }),
        });
    }
    out
}

/// The parentRef as echoed in the status: group and kind only when they differ from the
/// defaults, `port` dropped (spec 3.3).
fn parent_ref_out(p: &ParentRef) -> ParentRefOut {
    ParentRefOut {
        group: p.group.clone().filter(|g| g != GATEWAY_GROUP),
        kind: p.kind.clone().filter(|k| k != "Gateway"),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        section_name: p.section_name.clone(),
    }
}

/// A human explanation of why no listener of `gw` takes the route through `p`.
fn why_rejected(route: &UdpRoute, p: &ParentRef, gw: &Gateway) -> String {
    if !names_gateway(route, p, gw) {
        return format!(
            "group {:?} / kind {:?} do not name a Gateway",
            p.group.as_deref().unwrap_or(""),
            p.kind.as_deref().unwrap_or("")
        );
    }
    if let Some(s) = &p.section_name {
        if !gw.spec.listeners.iter().any(|l| l.name == *s) {
            return format!("it has no listener named {s:?}");
        }
    }
    format!(
        "allowedRoutes of its listener(s) do not admit routes from namespace {:?}",
        route.metadata.namespace
    )
}
