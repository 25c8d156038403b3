//! One test per row of the seed's field tables: UDPRoute, backend references, StaticService
//! and Dataplane.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::config::ClusterType;

const GW: &str = "stunner/udp-gateway";
const ROUTE: &str = "stunner/media-plane-route";

/// A Service with two endpoint addresses and a ClusterIP, in `media-plane`.
const POOL: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: media-server-pool, namespace: media-plane}
spec: {clusterIP: 10.96.0.10}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pool-1, namespace: media-plane, labels: {kubernetes.io/service-name: media-server-pool}}
addressType: IPv4
endpoints: [{addresses: [10.244.0.5]}, {addresses: [10.244.1.7]}]
"#;

const STATIC: &str = r#"
apiVersion: stunner.l7mp.io/v1
kind: StaticService
metadata: {name: static-svc, namespace: stunner}
spec: {prefixes: ["192.0.2.0/24", "198.51.100.0/24"]}
"#;

fn route(parent_refs: &str, backend_refs: &str) -> String {
    format!(
        "apiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nmetadata: {{name: media-plane-route, namespace: stunner}}\n\
         spec:\n  parentRefs: {parent_refs}\n  rules: [{{backendRefs: {backend_refs}}}]\n"
    )
}

fn cluster_of(pieces: &[&str]) -> (Vec<String>, ClusterType) {
    let out = render(pieces);
    let c = cluster(config(&out, GW), ROUTE);
    (c.endpoints.clone(), c.cluster_type)
}

// --- UDPRoute ----------------------------------------------------------------------------------

#[test]
fn route_parent_refs() {
    // No namespace: the route's own.
    let r = route(
        "[{name: udp-gateway}]",
        "[{name: media-server-pool, namespace: media-plane}]",
    );
    let out = render(&[BASE, UDP_GW, POOL, &r]);
    assert_eq!(
        listener(config(&out, GW), "stunner/udp-gateway/udp-listener").routes,
        [ROUTE]
    );
    // A parentRef naming a Gateway that does not exist.
    let r = route("[{name: nope}]", "[]");
    let out = render(&[BASE, UDP_GW, &r]);
    assert_eq!(
        rconds(&out, "UDPRoute", "stunner", "media-plane-route")[0][0],
        "Accepted/False/NoMatchingParent"
    );
    assert!(has_error(
        &out,
        "UDPRoute stunner/media-plane-route",
        "Gateway stunner/nope not found"
    ));
    // A parentRef into another namespace.
    let other = route("[{name: udp-gateway, namespace: elsewhere}]", "[]");
    let out = render(&[BASE, UDP_GW, &other]);
    assert!(config(&out, GW).listeners[0].routes.is_empty());
}

#[test]
fn route_rules_backend_refs_multiple_and_cross_namespace() {
    let r = route(
        "[{name: udp-gateway}]",
        "[{name: media-server-pool, namespace: media-plane}, {group: stunner.l7mp.io, kind: StaticService, name: static-svc}]",
    );
    let (eps, t) = cluster_of(&[BASE, UDP_GW, POOL, STATIC, &r]);
    assert_eq!(t, ClusterType::Static);
    assert_eq!(
        eps,
        [
            "10.244.0.5",
            "10.244.1.7",
            "10.96.0.10",
            "192.0.2.0/24",
            "198.51.100.0/24"
        ]
    );
}

#[test]
fn route_every_rule_counts() {
    let r = "apiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nmetadata: {name: media-plane-route, namespace: stunner}\n\
             spec:\n  parentRefs: [{name: udp-gateway}]\n  rules:\n\
             \x20 - backendRefs: [{name: media-server-pool, namespace: media-plane}]\n\
             \x20 - backendRefs: [{group: stunner.l7mp.io, kind: StaticService, name: static-svc}]\n";
    let (eps, _) = cluster_of(&[BASE, UDP_GW, POOL, STATIC, r]);
    assert_eq!(eps.len(), 5, "{eps:?}");
}

#[test]
fn route_v1alpha2_port_is_dropped() {
    let r = route(
        "[{name: udp-gateway}]",
        "[{name: media-server-pool, namespace: media-plane, port: 1}]",
    )
    .replace("stunner.l7mp.io/v1", "gateway.networking.k8s.io/v1alpha2");
    let (eps, _) = cluster_of(&[BASE, UDP_GW, POOL, &r]);
    assert_eq!(
        eps,
        ["10.244.0.5", "10.244.1.7", "10.96.0.10"],
        "no :<1-1> suffix"
    );
}

// --- Backend references --------------------------------------------------------------------------

#[test]
fn backend_group_and_kind_defaults() {
    // group "" and kind Service are the defaults.
    let r = route(
        "[{name: udp-gateway}]",
        "[{group: \"\", kind: Service, name: media-server-pool, namespace: media-plane}]",
    );
    assert_eq!(cluster_of(&[BASE, UDP_GW, POOL, &r]).0.len(), 3);
    for (bad, reason) in [
        (
            "{group: example.com, name: x}",
            "ResolvedRefs/False/InvalidKind",
        ),
        ("{kind: Pod, name: x}", "ResolvedRefs/False/InvalidKind"),
        (
            "{kind: StaticService, name: static-svc}",
            "ResolvedRefs/False/InvalidKind",
        ),
        (
            "{group: stunner.l7mp.io, kind: Service, name: x}",
            "ResolvedRefs/False/InvalidKind",
        ),
    ] {
        let r = route("[{name: udp-gateway}]", &format!("[{bad}]"));
        let out = render(&[BASE, UDP_GW, STATIC, &r]);
        assert_eq!(
            rconds(&out, "UDPRoute", "stunner", "media-plane-route")[0][1],
            reason,
            "{bad}"
        );
        assert!(
            cluster(config(&out, GW), ROUTE).endpoints.is_empty(),
            "{bad}"
        );
    }
}

#[test]
fn backend_name_and_namespace() {
    // Namespace defaults to the route's: media-server-pool is not in `stunner`.
    let r = route("[{name: udp-gateway}]", "[{name: media-server-pool}]");
    let out = render(&[BASE, UDP_GW, POOL, &r]);
    assert_eq!(
        rconds(&out, "UDPRoute", "stunner", "media-plane-route")[0][1],
        "ResolvedRefs/False/BackendNotFound"
    );
    assert!(has_error(
        &out,
        "UDPRoute stunner/media-plane-route",
        "Service stunner/media-server-pool not found"
    ));
}

/// A Service without a selector, fronting external media servers listed in a hand-written
/// core/v1 `Endpoints` object.
const SELECTORLESS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: media-server-pool, namespace: media-plane}
spec: {clusterIP: 10.96.0.10, ports: [{port: 10000, protocol: UDP}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: media-server-pool, namespace: media-plane}
subsets:
- addresses: [{ip: 192.0.2.10}, {ip: 192.0.2.11}]
  notReadyAddresses: [{ip: 192.0.2.12}]
  ports: [{port: 10000, protocol: UDP}]
- addresses: [{ip: 198.51.100.7}]
"#;

#[test]
fn backend_service_without_selector_uses_endpoints() {
    // "any UDP port on the pods of the media server pool identified by the Kubernetes
    // service": the pods of a selector-less Service are those of its Endpoints object.
    let r = route(
        "[{name: udp-gateway}]",
        "[{name: media-server-pool, namespace: media-plane}]",
    );
    let out = render(&[BASE, UDP_GW, SELECTORLESS, &r]);
    let c = cluster(config(&out, GW), ROUTE);
    assert_eq!(c.cluster_type, ClusterType::Static);
    assert_eq!(
        endpoints(c),
        [
            "10.96.0.10",
            "192.0.2.10",
            "192.0.2.11",
            "192.0.2.12",
            "198.51.100.7"
        ]
    );
    assert_eq!(
        rconds(&out, "UDPRoute", "stunner", "media-plane-route")[0][1],
        "ResolvedRefs/True/ResolvedRefs"
    );
    assert!(
        !out.findings.iter().any(|f| f.message.contains("Endpoints")),
        "{:#?}",
        out.findings
    );
    // Relay-to-ClusterIP off: the Endpoints addresses alone, and the Service is not needed.
    let endpoints_only = SELECTORLESS.split("---").nth(1).expect("Endpoints");
    let out = render_opts(&[BASE, UDP_GW, endpoints_only, &r], &no_cluster_ip());
    let c = cluster(config(&out, GW), ROUTE);
    assert_eq!(
        endpoints(c),
        ["192.0.2.10", "192.0.2.11", "192.0.2.12", "198.51.100.7"]
    );
    // Where an EndpointSlice exists for the Service (Kubernetes mirrors Endpoints into one
    // in a live cluster), the slice is read and the Endpoints object is not: nothing twice.
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: pool-mirror, namespace: media-plane, labels: {kubernetes.io/service-name: media-server-pool}}\n\
                 addressType: IPv4\nendpoints: [{addresses: [192.0.2.10]}]";
    let out = render(&[BASE, UDP_GW, SELECTORLESS, slice, &r]);
    let c = cluster(config(&out, GW), ROUTE);
    assert_eq!(endpoints(c), ["10.96.0.10", "192.0.2.10"]);
    // An Endpoints object of another Service does not count.
    let other = SELECTORLESS.replace(
        "kind: Endpoints\nmetadata: {name: media-server-pool",
        "kind: Endpoints\nmetadata: {name: other-pool",
    );
    let out = render(&[BASE, UDP_GW, &other, &r]);
    assert_eq!(endpoints(cluster(config(&out, GW), ROUTE)), ["10.96.0.10"]);
    assert!(has_error(
        &out,
        "UDPRoute stunner/media-plane-route",
        "no EndpointSlice or Endpoints addresses found for Service media-plane/media-server-pool"
    ));
}

#[test]
fn backend_port_and_end_port() {
    let cases = [
        ("", vec!["10.244.0.5", "10.244.1.7", "10.96.0.10"]),
        (
            ", port: 5000",
            vec![
                "10.244.0.5:<5000-5000>",
                "10.244.1.7:<5000-5000>",
                "10.96.0.10:<5000-5000>",
            ],
        ),
        (
            ", port: 10, endPort: 100",
            vec![
                "10.244.0.5:<10-100>",
                "10.244.1.7:<10-100>",
                "10.96.0.10:<10-100>",
            ],
        ),
        (
            ", endPort: 100",
            vec![
                "10.244.0.5:<1-100>",
                "10.244.1.7:<1-100>",
                "10.96.0.10:<1-100>",
            ],
        ),
        (
            ", port: 1, endPort: 65535",
            vec!["10.244.0.5", "10.244.1.7", "10.96.0.10"],
        ),
    ];
    for (ports, want) in cases {
        let r = route(
            "[{name: udp-gateway}]",
            &format!("[{{name: media-server-pool, namespace: media-plane{ports}}}]"),
        );
        assert_eq!(cluster_of(&[BASE, UDP_GW, POOL, &r]).0, want, "{ports}");
    }
    // endPort below port: refused, not silently widened or narrowed.
    let r = route(
        "[{name: udp-gateway}]",
        "[{name: media-server-pool, namespace: media-plane, port: 100, endPort: 10}]",
    );
    let out = render(&[BASE, UDP_GW, POOL, &r]);
    assert!(has_error(
        &out,
        "UDPRoute stunner/media-plane-route",
        "endPort 10 < port 100"
    ));
    assert!(cluster(config(&out, GW), ROUTE).endpoints.is_empty());
}

#[test]
fn static_service_prefixes() {
    let r = route(
        "[{name: udp-gateway}]",
        "[{group: stunner.l7mp.io, kind: StaticService, name: static-svc, port: 3478}]",
    );
    let six = STATIC.replace(
        "[\"192.0.2.0/24\", \"198.51.100.0/24\"]",
        "[\"2001:db8::/32\", \"0.0.0.0/0\", \"203.0.113.5\"]",
    );
    let (eps, t) = cluster_of(&[BASE, UDP_GW, &six, &r]);
    assert_eq!(t, ClusterType::Static);
    assert_eq!(
        eps,
        [
            "0.0.0.0/0:<3478-3478>",
            "2001:db8::/32:<3478-3478>",
            "203.0.113.5:<3478-3478>"
        ]
    );
    // A malformed prefix rejects the StaticService, naming the field.
    let bad = STATIC.replace("198.51.100.0/24", "198.51.100.0/33");
    let out = render(&[BASE, UDP_GW, &bad, &r]);
    assert!(out.errors().any(|f| f.path == "spec.prefixes[1]"));
    assert!(has_error(
        &out,
        "UDPRoute stunner/media-plane-route",
        "StaticService stunner/static-svc is invalid"
    ));
}

// --- Dataplane ---------------------------------------------------------------------------------

fn deployment_with(spec: &str) -> stunnerd::k8s::DeploymentObject {
    let base = BASE.replace("spec: {image: l7mp/stunnerd:latest}", spec);
    let out = render(&[&base, UDP_GW]);
    out.deployment("stunner", "udp-gateway")
        .cloned()
        .unwrap_or_else(|| panic!("{:#?}", out.findings))
}

#[test]
fn dataplane_image_and_pull_policy() {
    for (image, policy, want) in [
        ("l7mp/stunnerd:latest", None, "Always"),
        ("l7mp/stunnerd", None, "Always"),
        ("l7mp/stunnerd:1.1.0", None, "IfNotPresent"),
        ("registry:5000/stunnerd", None, "Always"),
        ("l7mp/stunnerd@sha256:abc", None, "IfNotPresent"),
        ("l7mp/stunnerd:1.1.0", Some("Always"), "Always"),
        ("l7mp/stunnerd:latest", Some("Never"), "Never"),
    ] {
        let p = policy
            .map(|p| format!(", imagePullPolicy: {p}"))
            .unwrap_or_default();
        let d = deployment_with(&format!("spec: {{image: \"{image}\"{p}}}"));
        let c = d.container().expect("c");
        assert_eq!(
            (c.image.as_str(), c.image_pull_policy.as_str()),
            (image, want)
        );
    }
}

#[test]
fn dataplane_command_args_env_env_from() {
    let d = deployment_with(
        "spec: {image: i, command: [/bin/stunnerd], args: [-w, -l, all:TRACE], \
         env: [{name: FOO, value: bar}], envFrom: [{configMapRef: {name: extra}}]}",
    );
    let c = d.container().expect("c");
    assert_eq!(c.command, ["/bin/stunnerd"]);
    assert_eq!(c.args, ["-w", "-l", "all:TRACE"]);
    // The five STUNNER_* variables first, the Dataplane's appended.
    assert_eq!(c.env.len(), 6);
    assert_eq!(c.env[5]["name"], "FOO");
    assert_eq!(c.env[4]["name"], "STUNNER_CONFIG_ORIGIN");
    assert_eq!(c.env_from[0]["configMapRef"]["name"], "extra");
}

#[test]
fn dataplane_replicas_host_network_resources() {
    let d = deployment_with(
        "spec: {image: i, replicas: 4, hostNetwork: true, resources: {limits: {cpu: \"1\"}}}",
    );
    assert_eq!(d.spec.replicas, 4);
    assert!(d.spec.template.spec.host_network);
    assert_eq!(
        d.container().expect("c").resources,
        serde_json::json!({"limits": {"cpu": "1"}})
    );
    let d = deployment_with("spec: {image: i}");
    assert_eq!(d.spec.replicas, 1, "seed default");
    assert!(!d.spec.template.spec.host_network);
}

#[test]
fn dataplane_affinity_and_tolerations() {
    let d = deployment_with(
        "spec: {image: i, affinity: {nodeAffinity: {x: 1}}, tolerations: [{key: media, operator: Exists}]}",
    );
    assert_eq!(
        d.spec.template.spec.affinity.as_ref().expect("a")["nodeAffinity"]["x"],
        1
    );
    assert_eq!(
        d.spec.template.spec.tolerations.as_ref().expect("t")[0]["key"],
        "media"
    );
    let d = deployment_with("spec: {image: i}");
    assert!(d.spec.template.spec.affinity.is_none() && d.spec.template.spec.tolerations.is_none());
}

#[test]
fn dataplane_health_check() {
    let on = deployment_with("spec: {image: i}");
    let c = on.container().expect("c");
    for (probe, path) in [(&c.liveness_probe, "/live"), (&c.readiness_probe, "/ready")] {
        let p = probe.as_ref().expect("probe");
        assert_eq!(p["httpGet"]["port"], 8086);
        assert_eq!(p["httpGet"]["path"], path);
    }
    let off = deployment_with("spec: {image: i, disableHealthCheck: true}");
    let c = off.container().expect("c");
    assert!(c.liveness_probe.is_none() && c.readiness_probe.is_none());
    // The dataplane's health server is switched off in the config too.
    let base = BASE.replace(
        "spec: {image: l7mp/stunnerd:latest}",
        "spec: {image: i, disableHealthCheck: true}",
    );
    let out = render(&[&base, UDP_GW]);
    assert_eq!(
        config(&out, GW).admin.healthcheck_endpoint.as_deref(),
        Some("")
    );
}

#[test]
fn dataplane_metrics_endpoint() {
    let base = BASE.replace(
        "spec: {image: l7mp/stunnerd:latest}",
        "spec: {image: i, enableMetricsEndpoint: true}",
    );
    let out = render(&[&base, UDP_GW]);
    assert_eq!(
        config(&out, GW).admin.metrics_endpoint,
        "http://:8080/metrics"
    );
    assert_eq!(
        config(&render(&[BASE, UDP_GW]), GW).admin.metrics_endpoint,
        ""
    );
}

#[test]
fn dataplane_termination_grace_period() {
    assert_eq!(
        deployment_with("spec: {image: i}")
            .spec
            .template
            .spec
            .termination_grace_period_seconds,
        30
    );
    let d = deployment_with("spec: {image: i, terminationGracePeriodSeconds: 3600}");
    assert_eq!(d.spec.template.spec.termination_grace_period_seconds, 3600);
}
