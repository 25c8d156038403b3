//! The render's view of the input: objects indexed by kind and `namespace/name`, sorted, with
//! schema-invalid objects set aside (spec 1 and 2.13).
//!
//! Upstream iterates Go maps, so its order is random; everything here is sorted by
//! `namespace/name` so that the same input always renders the same output.

use std::collections::{BTreeMap, BTreeSet};

use super::load::Severity;
use super::objects::{
    Dataplane, EndpointSlice, Endpoints, Gateway, GatewayClass, GatewayConfig, Namespace, Node,
    Object, RouteVersion, Secret, Service, StaticService, UdpRoute,
};
use super::{Finding, schema};

pub(crate) type Key = (String, String);

pub(crate) fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

#[derive(Default)]
pub(crate) struct Store<'a> {
    pub classes: BTreeMap<String, &'a GatewayClass>,
    pub gw_configs: BTreeMap<Key, &'a GatewayConfig>,
    pub gateways: BTreeMap<Key, &'a Gateway>,
    /// v1 routes first for the same `ns/name`, which is what masking needs.
    pub routes: Vec<&'a UdpRoute>,
    pub static_services: BTreeMap<Key, &'a StaticService>,
    pub dataplanes: BTreeMap<String, &'a Dataplane>,
    pub secrets: BTreeMap<Key, &'a Secret>,
    pub services: BTreeMap<Key, &'a Service>,
    pub slices: Vec<&'a EndpointSlice>,
    /// core/v1 Endpoints by the name of their Service.
    pub endpoints: BTreeMap<Key, &'a Endpoints>,
    pub namespaces: BTreeMap<String, &'a Namespace>,
    pub nodes: BTreeMap<String, &'a Node>,
    /// `Kind key` of objects that failed the schema checks, with the reason; consulted to
    /// explain why a referenced object "does not exist".
    pub rejected: BTreeMap<String, String>,
    /// `ns/name` of v1 routes, to find masked v1alpha2 routes.
    v1_routes: BTreeSet<Key>,
}

impl<'a> Store<'a> {
    pub(super) fn new(objects: &'a [Object], findings: &mut Vec<Finding>) -> Store<'a> {
        let mut s = Store::default();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        // Later definitions win, as with `kubectl apply` of several files; say so, because a
        // duplicate is usually a copy-paste slip.
        for obj in objects.iter().rev() {
            let id = obj.describe();
            if !seen.insert(id.clone()) {
                findings.push(Finding::new(
                    Severity::Note,
                    &id,
                    "",
                    "defined more than once; the last definition is used",
                ));
                continue;
            }
            let violations = schema::check(obj);
            if !violations.is_empty() {
                let reason = violations
                    .iter()
                    .map(|(p, m)| format!("{p}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                for (path, msg) in violations {
                    findings.push(Finding::new(
                        Severity::Error,
                        &id,
                        &path,
                        format!("{msg} (object rejected)"),
                    ));
                }
                s.rejected.insert(id, reason);
                continue;
            }
            s.insert(obj);
        }
        s.routes.sort_by(|a, b| {
            let k = |r: &UdpRoute| {
                (
                    r.metadata.namespace.clone(),
                    r.metadata.name.clone(),
                    r.version == RouteVersion::V1Alpha2,
                )
            };
            k(a).cmp(&k(b))
        });
        s.slices
            .sort_by_key(|e| (e.metadata.namespace.clone(), e.metadata.name.clone()));
        s
    }

    fn insert(&mut self, obj: &'a Object) {
        let m = obj.meta();
        let k = key(&m.namespace, &m.name);
        match obj {
            Object::GatewayClass(o) => {
                self.classes.insert(m.name.clone(), o);
            }
            Object::GatewayConfig(o) => {
                self.gw_configs.insert(k, o);
            }
            Object::Gateway(o) => {
                self.gateways.insert(k, o);
            }
            Object::UdpRoute(o) => {
                if o.version == RouteVersion::StunnerV1 {
                    self.v1_routes.insert(k);
                }
                self.routes.push(o);
            }
            Object::StaticService(o) => {
                self.static_services.insert(k, o);
            }
            Object::Dataplane(o) => {
                self.dataplanes.insert(m.name.clone(), o);
            }
            Object::Secret(o) => {
                self.secrets.insert(k, o);
            }
            Object::Service(o) => {
                self.services.insert(k, o);
            }
            Object::EndpointSlice(o) => self.slices.push(o),
            Object::Endpoints(o) => {
                self.endpoints.insert(k, o);
            }
            Object::Namespace(o) => {
                self.namespaces.insert(m.name.clone(), o);
            }
            Object::Node(o) => {
                self.nodes.insert(m.name.clone(), o);
            }
        }
    }

    /// A v1alpha2 route with the `ns/name` of a v1 route is masked (spec 2.8).
    pub(super) fn is_masked(&self, r: &UdpRoute) -> bool {
        r.version == RouteVersion::V1Alpha2
            && self
                .v1_routes
                .contains(&key(&r.metadata.namespace, &r.metadata.name))
    }

    /// Why `Kind ns/name` is missing: rejected by the schema checks, or simply absent.
    pub(super) fn why_missing(&self, kind: &str, id: &str) -> String {
        match self.rejected.get(&format!("{kind} {id}")) {
            Some(reason) => format!("{kind} {id} is invalid ({reason})"),
            None => format!("{kind} {id} not found"),
        }
    }
}
