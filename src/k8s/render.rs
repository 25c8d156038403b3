//! The render pipeline (spec 2.4): classes, then Gateways (managed: one config each; legacy:
//! one config per class), then route statuses.

use std::collections::BTreeMap;

use super::gateway::Renderer;
use super::load::Severity;
use super::objects::{Dataplane, Gateway, GatewayClass, GatewayConfig, Object};
use super::routes::route_statuses;
use super::service::MetaOut;
use super::status::{self, Status, StatusMeta, StatusObject};
use super::store::{Store, key};
use super::{CONTROLLER_NAME, DEFAULT_DATAPLANE, Finding, Mode, Options, RenderOutput};

/// Render with the operator's default switches.
pub fn render(objects: &[Object], mode: Mode) -> RenderOutput {
    render_with(objects, &Options::new(mode))
}

/// What the GatewayConfig and Dataplane of a valid class resolve to.
#[derive(Clone, Copy)]
pub(crate) struct ClassCtx<'a> {
    pub gc: &'a GatewayConfig,
    /// Managed mode only.
    pub dp: Option<&'a Dataplane>,
}

pub(crate) struct ClassState<'a> {
    pub class: &'a GatewayClass,
    pub result: Result<ClassCtx<'a>, String>,
}

/// The full pipeline.
pub fn render_with(objects: &[Object], opts: &Options) -> RenderOutput {
    let mut out = RenderOutput::default();
    let store = Store::new(objects, &mut out.findings);
    let mut classes = resolve_classes(&store, opts.mode, &mut out.findings);

    // Gateways of our classes only; the rest belong to someone else (spec 1).
    let mut gateways: Vec<&Gateway> = Vec::new();
    for gw in store.gateways.values() {
        if classes.contains_key(&gw.spec.gateway_class_name) {
            gateways.push(gw);
        } else {
            out.findings.push(Finding::new(
                Severity::Note,
                &format!("Gateway {}", gw.metadata.key()),
                "spec.gatewayClassName",
                format!(
                    "ignored: no GatewayClass {:?} with controllerName {CONTROLLER_NAME}",
                    gw.spec.gateway_class_name
                ),
            ));
        }
    }

    let mut r = Renderer {
        store: &store,
        opts,
        out: &mut out,
        gateway_statuses: Vec::new(),
    };
    match opts.mode {
        Mode::Managed => {
            for gw in &gateways {
                match classes.get(&gw.spec.gateway_class_name).map(|c| &c.result) {
                    Some(Ok(ctx)) => r.managed_gateway(*ctx, gw),
                    Some(Err(e)) => r.invalidate(gw, e),
                    None => {}
                }
            }
        }
        Mode::Legacy => {
            for state in classes.values_mut() {
                let gws: Vec<&Gateway> = gateways
                    .iter()
                    .copied()
                    .filter(|g| g.spec.gateway_class_name == state.class.metadata.name)
                    .collect();
                match state.result {
                    Ok(ctx) => {
                        if let Err(e) = r.legacy_class(ctx, state.class, &gws) {
                            // Upstream then flips the class back to Accepted=True; a class
                            // whose config could not be rendered is not accepted.
                            state.result = Err(e);
                        }
                    }
                    Err(ref e) => gws.iter().for_each(|g| r.invalidate(g, e)),
                }
            }
        }
    }
    let gateway_statuses = std::mem::take(&mut r.gateway_statuses);

    let mut statuses = class_statuses(&classes);
    statuses.extend(gateway_statuses);
    statuses.extend(route_statuses(&store, &gateways, opts, &mut out.findings));
    out.statuses = statuses;
    // Legacy configs are all `stunner-daemon` and stay in class order, which
    // `legacy_config_of` indexes.
    if opts.mode == Mode::Managed {
        out.configs.sort_by(|a, b| a.admin.name.cmp(&b.admin.name));
    }
    let by_key = |m: &MetaOut| (m.namespace.clone(), m.name.clone());
    out.services.sort_by_key(|s| by_key(&s.metadata));
    out.deployments.sort_by_key(|d| by_key(&d.metadata));
    out.config_maps.sort_by_key(|c| by_key(&c.metadata));
    out
}

/// Our GatewayClasses with their resolved parameters (spec 2.2, 2.3), by name.
fn resolve_classes<'a>(
    store: &Store<'a>,
    mode: Mode,
    findings: &mut Vec<Finding>,
) -> BTreeMap<String, ClassState<'a>> {
    let mut classes = BTreeMap::new();
    for class in store.classes.values() {
        let id = format!("GatewayClass {}", class.metadata.name);
        if class.spec.controller_name != CONTROLLER_NAME {
            findings.push(Finding::new(
                Severity::Note,
                &id,
                "spec.controllerName",
                format!(
                    "ignored: controller {:?} is not {CONTROLLER_NAME:?}",
                    class.spec.controller_name
                ),
            ));
            continue;
        }
        let result = class_params(store, class, mode);
        if let Err((path, e)) = &result {
            findings.push(Finding::new(Severity::Error, &id, path, e.clone()));
        }
        classes.insert(
            class.metadata.name.clone(),
            ClassState {
                class,
                result: result.map_err(|(_, e)| e),
            },
        );
    }
    classes
}

fn class_params<'a>(
    store: &Store<'a>,
    class: &GatewayClass,
    mode: Mode,
) -> Result<ClassCtx<'a>, (String, String)> {
    let err = |path: &str, msg: String| Err((path.to_string(), msg));
    let Some(pr) = &class.spec.parameters_ref else {
        return err(
            "spec.parametersRef",
            "required: a STUNner GatewayClass must name its GatewayConfig".into(),
        );
    };
    // Seed: group and kind may be omitted; any other value is an error.
    if let Some(g) = pr
        .group
        .as_deref()
        .filter(|g| !g.is_empty() && *g != "stunner.l7mp.io")
    {
        return err(
            "spec.parametersRef.group",
            format!("invalid group {g:?}: must be stunner.l7mp.io"),
        );
    }
    if let Some(k) = pr
        .kind
        .as_deref()
        .filter(|k| !k.is_empty() && *k != "GatewayConfig")
    {
        return err(
            "spec.parametersRef.kind",
            format!("invalid kind {k:?}: must be GatewayConfig"),
        );
    }
    if pr.name.is_empty() {
        return err("spec.parametersRef.name", "required".into());
    }
    let Some(ns) = pr.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return err(
            "spec.parametersRef.namespace",
            "required: GatewayConfigs are namespaced".into(),
        );
    };
    let id = format!("{ns}/{}", pr.name);
    let Some(gc) = store.gw_configs.get(&key(ns, &pr.name)) else {
        let mut msg = format!("No GatewayConfig found for name: {id}");
        if store.rejected.contains_key(&format!("GatewayConfig {id}")) {
            msg = format!("{msg}: {}", store.why_missing("GatewayConfig", &id));
        }
        return err("spec.parametersRef", msg);
    };
    let dp = match mode {
        Mode::Legacy => None,
        Mode::Managed => {
            let name = gc.spec.dataplane.as_deref().unwrap_or(DEFAULT_DATAPLANE);
            match store.dataplanes.get(name) {
                Some(dp) => Some(*dp),
                None => {
                    return err(
                        "spec.parametersRef",
                        format!(
                            "missing Dataplane resource for Gateway: {} (named by GatewayConfig {id})",
                            store.why_missing("Dataplane", name)
                        ),
                    );
                }
            }
        }
    };
    Ok(ClassCtx { gc, dp })
}

fn class_statuses(classes: &BTreeMap<String, ClassState<'_>>) -> Vec<StatusObject> {
    classes
        .values()
        .map(|c| {
            let g = c.class.metadata.generation;
            let st = match &c.result {
                Ok(_) => status::class_accepted(g),
                Err(e) => status::class_invalid(e, g),
            };
            StatusObject {
                api_version: "gateway.networking.k8s.io/v1".into(),
                kind: "GatewayClass".into(),
                metadata: StatusMeta {
                    namespace: String::new(),
                    name: c.class.metadata.name.clone(),
                },
                status: Status::GatewayClass(st),
            }
        })
        .collect()
}
