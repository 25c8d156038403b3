//! Upstream operator unit-test scenarios (spec 6.12): the config discovery URL and the
//! Deployment per Gateway. Scenario numbers refer to the spec.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::k8s::{RenderOutput, cds_uri};

const ID: &str = "testnamespace/gateway-1";
const NS: &str = "testnamespace";

/// Render the upstream fixtures with some pieces replaced (`(old, new)`) and some added.
fn run(swaps: &[(&str, &str)], extra: &[&str]) -> RenderOutput {
    let mut p: Vec<&str> = upstream()
        .into_iter()
        .map(|x| swaps.iter().find(|(o, _)| *o == x).map_or(x, |(_, n)| n))
        .collect();
    p.extend(extra);
    render(&p)
}

// --- 6.12 Dataplane --------------------------------------------------------------------------------

#[test]
fn s6_12_cds_uri() {
    for (input, want) in [
        (":13478", "http://:13478"),
        ("1.2.3.4:8080", "http://1.2.3.4:8080"),
        ("1.2.3.4", "http://1.2.3.4:13478"),
        (
            "stunner-config-discovery.default.svc:8080",
            "http://stunner-config-discovery.default.svc:8080",
        ),
        (
            "stunner-config-discovery",
            "http://stunner-config-discovery:13478",
        ),
        (
            "2600:1f14:1e98:4505:14dc::9",
            "http://[2600:1f14:1e98:4505:14dc::9]:13478",
        ),
        (
            "[2600:1f14:1e98:4505:14dc::9]:8080",
            "http://[2600:1f14:1e98:4505:14dc::9]:8080",
        ),
        ("http://cds.example:1", "http://cds.example:1"),
    ] {
        assert_eq!(cds_uri(input), want, "{input}");
    }
}

#[test]
fn s6_12_1_default_render() {
    let out = run(&[], &[]);
    let d = out.deployment(NS, "gateway-1").expect("deployment");
    let l = &d.metadata.labels;
    assert_eq!(l.len(), 4);
    assert_eq!(l["dummy-label"], "dummy-value");
    assert_eq!(l["stunner.l7mp.io/owned-by"], "stunner");
    assert_eq!(d.metadata.annotations.len(), 1);
    assert_eq!(
        d.metadata.annotations["stunner.l7mp.io/related-gateway-name"],
        ID
    );
    let exprs = d.spec.selector["matchExpressions"]
        .as_array()
        .expect("exprs");
    assert_eq!(exprs.len(), 3);
    assert_eq!(d.spec.replicas, 3);
    let pl = &d.spec.template.metadata.labels;
    assert_eq!(pl.len(), 3);
    for e in exprs {
        let k = e["key"].as_str().expect("key");
        assert_eq!(
            e["values"][0].as_str(),
            pl.get(k).map(String::as_str),
            "selector matches pod label {k}"
        );
    }
    let c = d.container().expect("container");
    assert_eq!(c.name, "stunner-daemon");
    assert_eq!(
        (c.image.as_str(), c.image_pull_policy.as_str()),
        ("testimage-1", "Always")
    );
    assert_eq!(c.command, ["testcommand-1"]);
    assert_eq!(c.args, ["arg-1", "arg-2"]);
    assert_eq!(
        c.resources,
        serde_json::json!({"limits": {"memory": "10M"}, "requests": {"cpu": "250m"}})
    );
    let live = c.liveness_probe.as_ref().expect("liveness");
    assert_eq!(
        live["httpGet"],
        serde_json::json!({"path": "/live", "port": 8086, "scheme": "HTTP"})
    );
    assert_eq!(
        (
            live["periodSeconds"].as_i64(),
            live["failureThreshold"].as_i64()
        ),
        (Some(15), Some(3))
    );
    assert_eq!(
        c.readiness_probe.as_ref().expect("readiness")["httpGet"]["path"],
        "/ready"
    );
    assert_eq!(c.env.len(), 5);
    assert_eq!(
        c.env[0]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(
        c.env[3]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        (c.env[1]["value"].as_str(), c.env[2]["value"].as_str()),
        (Some("gateway-1"), Some(NS))
    );
    assert_eq!(c.env[4]["value"], "http://:13478");
    assert_eq!(c.ports[0]["containerPort"], 8080);
    let ps = &d.spec.template.spec;
    assert_eq!(ps.termination_grace_period_seconds, 60);
    assert!(ps.host_network);
    assert!(ps.affinity.is_none());
}

#[test]
fn s6_12_2_overrides() {
    let dp = DATAPLANE.replace(
        "  hostNetwork: true\n",
        "  hostNetwork: false\n  disableHealthCheck: true\n  enableMetricsEndpoint: true\n\
         \x20 imagePullSecrets: [{name: s1}, {name: s2}]\n\
         \x20 topologySpreadConstraints: [{maxSkew: 1}, {maxSkew: 2}]\n\
         \x20 securityContext: {runAsNonRoot: true}\n  containerSecurityContext: {runAsNonRoot: true}\n\
         \x20 labels: {dummy-label-key: v, app: not-stunner}\n\
         \x20 annotations: {dummy-annotation-key: v, stunner.l7mp.io/related-gateway-name: wrong}\n",
    );
    let out = run(&[(DATAPLANE, &dp)], &[]);
    let d = out.deployment(NS, "gateway-1").expect("deployment");
    let t = &d.spec.template;
    assert_eq!(t.metadata.labels.len(), 4);
    assert_eq!(t.metadata.labels["app"], "stunner");
    assert_eq!(t.metadata.annotations.len(), 2);
    assert_eq!(
        t.metadata.annotations["stunner.l7mp.io/related-gateway-name"],
        ID
    );
    let c = d.container().expect("c");
    assert!(c.liveness_probe.is_none() && c.readiness_probe.is_none());
    assert_eq!(
        c.security_context.as_ref().expect("sc")["runAsNonRoot"],
        true
    );
    assert_eq!(
        t.spec.security_context.as_ref().expect("sc")["runAsNonRoot"],
        true
    );
    assert_eq!(
        t.spec.image_pull_secrets.as_ref().expect("ps")[1]["name"],
        "s2"
    );
    assert_eq!(
        t.spec.topology_spread_constraints.as_ref().expect("tsc")[1]["maxSkew"],
        2
    );
    assert!(!t.spec.host_network);
}

#[test]
fn s6_12_3_gateway_labels_and_annotations() {
    let gw = GATEWAY.replace(
        "labels: {dummy-label: dummy-value}}",
        "labels: {stunner.l7mp.io/owned-by: dummy-owner, valid-gw-label: x, app.kubernetes.io/managed-by: helm}, \
         annotations: {stunner.l7mp.io/related-gateway-name: dummy-ns/dummy-name, valid-gw-ann: y}}",
    );
    let out = run(&[(GATEWAY, &gw)], &[]);
    let d = out.deployment(NS, "gateway-1").expect("deployment");
    assert_eq!(d.metadata.labels.len(), 4, "{:?}", d.metadata.labels);
    assert_eq!(d.metadata.labels["stunner.l7mp.io/owned-by"], "stunner");
    assert!(
        !d.metadata
            .labels
            .contains_key("app.kubernetes.io/managed-by"),
        "label filter"
    );
    assert_eq!(d.metadata.annotations.len(), 2);
    assert_eq!(
        d.metadata.annotations["stunner.l7mp.io/related-gateway-name"],
        ID
    );
    assert_eq!(d.spec.template.metadata.labels.len(), 3);
    assert_eq!(d.spec.template.metadata.annotations.len(), 1);
}
