//! Rendering Gateways: the per-Gateway (managed) and per-class (legacy) configs, with the
//! listeners, Service, Deployment and status of each Gateway (spec 2.4 steps 3-6).

use std::collections::BTreeMap;

use crate::config::{ListenerConfig, StunnerConfig, validate};

use super::address::{SvcView, find_public_service, node_address, public_address};
use super::attach::{attaches, routes_for};
use super::auth::{render_admin, render_auth};
use super::cluster::{ClusterResult, render_cluster};
use super::deployment::{cds_uri, render_deployment};
use super::listener::{conflicts, parse_protocol, resolve_tls, service_protocol};
use super::load::Severity;
use super::objects::{Gateway, GatewayClass, GatewayConfig};
use super::render::ClassCtx;
use super::service::{MetaOut, PortSpec, render_service};
use super::status::{
    self, GatewayStatus, GatewayStatusAddress, ListenerOutcome, Status, StatusMeta, StatusObject,
};
use super::store::{Store, key};
use super::{
    CONFIGMAP_KEY, ConfigMapObject, DISABLE_DATAPLANE_ANN, Finding, GATEWAY_NAME_LABEL,
    GATEWAY_NAMESPACE_LABEL, LEGACY_CONFIGMAP, Mode, OWNED_BY_LABEL, OWNER_ANNOTATION, Options,
    RenderOutput,
};

pub(crate) struct Renderer<'s, 'a> {
    pub store: &'s Store<'a>,
    pub opts: &'s Options,
    pub out: &'s mut RenderOutput,
    pub gateway_statuses: Vec<StatusObject>,
}

/// A Gateway's share of a config.
struct GatewayPart {
    listeners: Vec<ListenerConfig>,
    service: Option<super::ServiceObject>,
    status: GatewayStatus,
}

impl Renderer<'_, '_> {
    pub(super) fn managed_gateway(&mut self, ctx: ClassCtx<'_>, gw: &Gateway) {
        let id = gw.metadata.key();
        let mut admin = render_admin(ctx.gc, ctx.dp, Mode::Managed);
        admin.name = id.clone();
        let auth = match render_auth(self.store, ctx.gc) {
            Ok(a) => a,
            Err(e) => return self.invalidate(gw, &e),
        };
        let part = self.render_gateway(ctx.gc, gw);
        let clusters = self.clusters_for(&[gw]);
        let config = match finish_config(admin, auth, part.listeners, clusters) {
            Ok(c) => c,
            Err(e) => return self.invalidate(gw, &e),
        };
        self.out.config_maps.push(config_map(
            MetaOut {
                name: gw.metadata.name.clone(),
                namespace: gw.metadata.namespace.clone(),
                labels: gateway_labels(gw),
                annotations: [(OWNER_ANNOTATION.to_string(), id.clone())].into(),
                owner_references: super::service::gateway_owner(gw),
            },
            &config,
        ));
        self.out.configs.push(config);
        self.out.services.extend(part.service);
        self.push_gateway_status(gw, part.status);
        let disabled = gw
            .metadata
            .annotations
            .get(DISABLE_DATAPLANE_ANN)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        match ctx.dp {
            _ if disabled => self.out.findings.push(Finding::new(
                Severity::Note,
                &format!("Gateway {id}"),
                "metadata.annotations",
                format!("{DISABLE_DATAPLANE_ANN}: no Deployment rendered"),
            )),
            Some(dp) => self.out.deployments.push(render_deployment(
                gw,
                dp,
                &cds_uri(&self.opts.cds_address),
            )),
            None => {}
        }
    }

    /// Legacy mode: one config for all Gateways of the class. `Err` when the class must be
    /// invalidated (its Gateways are invalidated here already).
    pub(super) fn legacy_class(
        &mut self,
        ctx: ClassCtx<'_>,
        class: &GatewayClass,
        gws: &[&Gateway],
    ) -> Result<(), String> {
        let admin = render_admin(ctx.gc, None, Mode::Legacy);
        let cm_meta = MetaOut {
            name: LEGACY_CONFIGMAP.into(),
            namespace: ctx.gc.metadata.namespace.clone(),
            labels: [(OWNED_BY_LABEL.to_string(), "stunner".to_string())].into(),
            annotations: [(OWNER_ANNOTATION.to_string(), class.metadata.name.clone())].into(),
            owner_references: super::service::owner(
                "stunner.l7mp.io/v1",
                "GatewayConfig",
                &ctx.gc.metadata.name,
                &ctx.gc.metadata.uid,
            ),
        };
        // On failure the operator empties the ConfigMap, so a dataplane reading it stops
        // serving the stale config.
        let fail = |r: &mut Self, e: String| {
            gws.iter().for_each(|g| r.invalidate(g, &e));
            r.out.config_maps.push(ConfigMapObject {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                metadata: cm_meta.clone(),
                data: [(CONFIGMAP_KEY.to_string(), String::new())].into(),
            });
            Err(e)
        };
        let auth = match render_auth(self.store, ctx.gc) {
            Ok(a) => a,
            Err(e) => return fail(self, e),
        };
        let mut listeners: Vec<ListenerConfig> = Vec::new();
        let mut parts = Vec::new();
        for gw in gws {
            let mut part = self.render_gateway(ctx.gc, gw);
            // One stunnerd runs every Gateway of the class: a listener whose transport port
            // an earlier Gateway's listener holds would share its socket group, and the kernel
            // would hand each client to either at random (upstream's quirk). The first keeps
            // the port; the later one is left out and said so.
            part.listeners.retain(|l| {
                let slot = (service_protocol(l.protocol), l.port);
                let Some(first) = listeners
                    .iter()
                    .find(|o| (service_protocol(o.protocol), o.port) == slot)
                else {
                    return true;
                };
                self.out.findings.push(Finding::new(
                    Severity::Note,
                    &format!("Gateway {}", gw.metadata.key()),
                    "spec.listeners",
                    format!(
                        "listener {} not rendered: {} port {} is already used by listener {} \
                         (legacy mode runs every Gateway of the class in one stunnerd)",
                        l.name, slot.0, slot.1, first.name
                    ),
                ));
                false
            });
            listeners.extend(part.listeners.iter().cloned());
            parts.push((gw, part));
        }
        let config = match finish_config(admin, auth, listeners, self.clusters_for(gws)) {
            Ok(c) => c,
            Err(e) => return fail(self, e),
        };
        for (gw, part) in parts {
            self.out
                .legacy_config_of
                .insert(gw.metadata.key(), self.out.configs.len());
            self.out.services.extend(part.service);
            self.push_gateway_status(gw, part.status);
        }
        let ns = &ctx.gc.metadata.namespace;
        if self
            .out
            .config_maps
            .iter()
            .any(|c| c.metadata.namespace == *ns && c.metadata.name == LEGACY_CONFIGMAP)
        {
            self.out.findings.push(Finding::new(
                Severity::Error,
                &format!("GatewayClass {}", class.metadata.name),
                "spec.parametersRef",
                format!("another GatewayClass's config also goes to ConfigMap {ns}/{LEGACY_CONFIGMAP}; use one GatewayConfig namespace per class"),
            ));
        }
        self.out.config_maps.push(config_map(cm_meta, &config));
        self.out.configs.push(config);
        Ok(())
    }

    /// Listeners, Service and status of one Gateway (spec 2.4 step 3).
    fn render_gateway(&mut self, gc: &GatewayConfig, gw: &Gateway) -> GatewayPart {
        let store = self.store;
        let gw_id = format!("Gateway {}", gw.metadata.key());
        let ls = &gw.spec.listeners;
        let protos: Vec<_> = ls.iter().map(|l| parse_protocol(&l.protocol)).collect();
        let conflicted = conflicts(ls);
        let port_specs: Vec<PortSpec<'_>> = ls
            .iter()
            .zip(&protos)
            .zip(&conflicted)
            .map(|((l, p), c)| PortSpec {
                name: &l.name,
                port: l.port,
                protocol: p.map(service_protocol),
                conflicted: *c,
            })
            .collect();
        let existing = store
            .services
            .get(&key(&gw.metadata.namespace, &gw.metadata.name));
        let svc = render_service(
            gw,
            &gc.spec.load_balancer_service_annotations,
            existing.copied(),
            &port_specs,
            self.opts.mode,
            &mut self.out.findings,
        );
        let view = find_public_service(store, gw)
            .or_else(|| svc.service.as_ref().map(SvcView::from_rendered));
        let node = node_address(store);

        let mut listeners = Vec::new();
        let mut statuses = Vec::new();
        let mut address: Option<GatewayStatusAddress> = None;
        let mut missing_address = Vec::new();
        let g = gw.metadata.generation;
        let per_listener = ls
            .iter()
            .zip(protos.iter().copied().zip(conflicted.iter().copied()));
        for (i, (l, (proto, is_conflicted))) in per_listener.enumerate() {
            let routes = routes_for(store, gw, l);
            let outcome = match proto {
                None => ListenerOutcome::UnsupportedProtocol {
                    message: format!(
                        "{:?} (expecting TURN-UDP, TURN-TCP, TURN-TLS or TURN-DTLS)",
                        l.protocol
                    ),
                },
                Some(_) if is_conflicted => ListenerOutcome::Conflicted {
                    routes: routes.len(),
                },
                Some(p) => match resolve_tls(store, gw, l, p) {
                    Err(o) => o,
                    Ok(certs) => {
                        let public = view.as_ref().and_then(|v| {
                            public_address(v, gw, l.port, service_protocol(p), node.as_ref())
                        });
                        match &public {
                            Some(a) => {
                                address = Some(GatewayStatusAddress {
                                    address_type: a.address_type.clone(),
                                    value: a.address.clone(),
                                })
                            }
                            None => missing_address.push(l.name.clone()),
                        }
                        let port = match svc.target_ports.get(&l.name) {
                            Some(t) if svc.service.is_some() => {
                                u16::try_from(*t).ok().filter(|t| *t > 0)
                            }
                            _ => None,
                        };
                        let (cert, key) = certs.unwrap_or_default();
                        listeners.push(ListenerConfig {
                            name: format!("{}/{}", gw.metadata.key(), l.name),
                            protocol: p,
                            public_address: public
                                .as_ref()
                                .map(|a| a.address.clone())
                                .unwrap_or_default(),
                            public_port: public.as_ref().map(|a| a.port).unwrap_or(0),
                            address: "$STUNNER_ADDR".into(),
                            // Schema-checked to 1-65535.
                            port: port.unwrap_or_else(|| u16::try_from(l.port).unwrap_or(0)),
                            cert,
                            key,
                            routes: routes.iter().map(|r| r.metadata.key()).collect(),
                            min_relay_port: None,
                            max_relay_port: None,
                        });
                        ListenerOutcome::Rendered {
                            routes: routes.len(),
                        }
                    }
                },
            };
            if let Some(msg) = listener_problem(&outcome) {
                self.out.findings.push(Finding::new(
                    Severity::Error,
                    &gw_id,
                    &format!("spec.listeners[{i}]"),
                    format!("listener {:?} not rendered: {msg}", l.name),
                ));
            }
            statuses.push(status::listener_status(&l.name, &outcome, g));
        }
        if !missing_address.is_empty() {
            self.out.findings.push(Finding::new(
                Severity::Note,
                &gw_id,
                "",
                format!(
                    "no public address yet for listener(s) {}: Programmed=False until the \
                     Service gets an external address (or set spec.addresses)",
                    missing_address.join(", ")
                ),
            ));
        }
        GatewayPart {
            listeners,
            service: svc.service,
            status: GatewayStatus {
                addresses: address.into_iter().collect(),
                conditions: status::gateway_conditions(missing_address.is_empty(), g),
                listeners: statuses,
            },
        }
    }

    /// Clusters of the routes attached to any listener of `gws`, one per route.
    fn clusters_for(&self, gws: &[&Gateway]) -> Vec<crate::config::ClusterConfig> {
        self.store
            .routes
            .iter()
            .filter(|r| {
                gws.iter().any(|gw| {
                    gw.spec
                        .listeners
                        .iter()
                        .any(|l| attaches(self.store, r, gw, l))
                })
            })
            .filter_map(|r| {
                let ClusterResult { cluster, .. } = render_cluster(self.store, r, self.opts);
                cluster
            })
            .collect()
    }

    /// The Gateway cannot be rendered: Accepted=False, every listener pending, no config,
    /// Service or Deployment (spec 2.4, invalidation).
    pub(super) fn invalidate(&mut self, gw: &Gateway, err: &str) {
        let g = gw.metadata.generation;
        self.out.findings.push(Finding::new(
            Severity::Error,
            &format!("Gateway {}", gw.metadata.key()),
            "",
            format!("not rendered: {err}"),
        ));
        let st = GatewayStatus {
            addresses: Vec::new(),
            conditions: status::gateway_invalid_conditions(err, g),
            listeners: gw
                .spec
                .listeners
                .iter()
                .map(|l| status::listener_status(&l.name, &ListenerOutcome::Pending, g))
                .collect(),
        };
        self.push_gateway_status(gw, st);
    }

    fn push_gateway_status(&mut self, gw: &Gateway, st: GatewayStatus) {
        self.gateway_statuses.push(StatusObject {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "Gateway".into(),
            metadata: StatusMeta {
                namespace: gw.metadata.namespace.clone(),
                name: gw.metadata.name.clone(),
            },
            status: Status::Gateway(st),
        });
    }
}

fn listener_problem(o: &ListenerOutcome) -> Option<String> {
    match o {
        ListenerOutcome::Rendered { .. } | ListenerOutcome::Pending => None,
        ListenerOutcome::Conflicted { .. } => {
            Some("its port is already used by an earlier listener of the same transport".into())
        }
        ListenerOutcome::UnsupportedProtocol { message } => {
            Some(format!("unsupported protocol {message}"))
        }
        ListenerOutcome::UnsupportedTlsMode { message } => Some(message.clone()),
        ListenerOutcome::InvalidCertificateRef { message } => {
            Some(format!("no usable TLS certificate: {message}"))
        }
    }
}

fn gateway_labels(gw: &Gateway) -> BTreeMap<String, String> {
    [
        (OWNED_BY_LABEL, "stunner"),
        (GATEWAY_NAME_LABEL, gw.metadata.name.as_str()),
        (GATEWAY_NAMESPACE_LABEL, gw.metadata.namespace.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Assemble, normalise and validate a config. Validation runs on a copy with
/// `$STUNNER_ADDR` expanded, as stunnerd expands it before validating.
fn finish_config(
    admin: crate::config::AdminConfig,
    auth: crate::config::AuthConfig,
    listeners: Vec<ListenerConfig>,
    clusters: Vec<crate::config::ClusterConfig>,
) -> Result<StunnerConfig, String> {
    let mut config = StunnerConfig {
        version: crate::config::API_VERSION.to_string(),
        admin,
        auth,
        listeners,
        clusters,
    };
    config.normalize();
    let mut probe = config.clone();
    for l in &mut probe.listeners {
        if l.address == "$STUNNER_ADDR" {
            l.address = "0.0.0.0".into();
        }
    }
    validate(&probe).map_err(|e| {
        format!(
            "could not render dataplane config: {}",
            e.to_string().replace('\n', "; ")
        )
    })?;
    Ok(config)
}

fn config_map(metadata: MetaOut, config: &StunnerConfig) -> ConfigMapObject {
    // Pretty JSON reads well in a YAML block scalar; stunnerd parses either form.
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    ConfigMapObject {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        metadata,
        data: [(CONFIGMAP_KEY.to_string(), text)].into(),
    }
}
