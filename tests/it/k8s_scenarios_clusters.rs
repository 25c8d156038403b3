//! Upstream operator unit-test scenarios (spec 6.8-6.10): clusters, EndpointSlices and node
//! addresses. Scenario numbers refer to the spec. Upstream's Endpoints-controller variants
//! map to EndpointSlices here (core/v1 Endpoints are read only for a Service that has no
//! EndpointSlice: `k8s_seed_routes.rs`).

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::config::ClusterType;
use stunnerd::k8s::{Options, RenderOutput};

const ID: &str = "testnamespace/gateway-1";
const NS: &str = "testnamespace";
const CL: &str = "testnamespace/udproute-ok";

fn with_backends(backends: &str, extra: &[&str], opts: &Options) -> RenderOutput {
    let r = ROUTE.replace("[{name: testservice-ok}]", backends);
    let mut p: Vec<&str> = upstream().into_iter().filter(|x| *x != ROUTE).collect();
    p.push(&r);
    p.extend(extra);
    render_opts(&p, opts)
}

fn with_cluster_ip(ip: &str) -> String {
    SERVICE.replace(
        "  type: LoadBalancer\n",
        &format!("  type: LoadBalancer\n  clusterIP: \"{ip}\"\n"),
    )
}

fn run_with_service(svc: &str, route: &str, opts: &Options) -> RenderOutput {
    let mut p: Vec<&str> = upstream()
        .into_iter()
        .filter(|x| *x != SERVICE && *x != ROUTE)
        .collect();
    p.push(svc);
    p.push(route);
    render_opts(&p, opts)
}

fn eps(out: &RenderOutput) -> Vec<String> {
    cluster(config(out, ID), CL).endpoints.clone()
}

fn resolved(out: &RenderOutput) -> String {
    rconds(out, "UDPRoute", NS, "udproute-ok")[0][1].clone()
}

const FIXTURE_IPS: [&str; 4] = ["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7"];

#[test]
fn s6_8_1_to_4_15_16_cluster_ip_and_slices() {
    let svc = with_cluster_ip("4.3.2.1");
    let v1a2 = ROUTE.replace("stunner.l7mp.io/v1", "gateway.networking.k8s.io/v1alpha2");
    for route in [ROUTE.to_string(), v1a2] {
        let out = run_with_service(&svc, &route, &Options::default());
        let kind = if route.contains("v1alpha2") {
            "UDPRoute/v1alpha2"
        } else {
            "UDPRoute"
        };
        assert_eq!(
            rconds(&out, kind, NS, "udproute-ok")[0],
            ["Accepted/True/Accepted", "ResolvedRefs/True/ResolvedRefs"]
        );
        let c = cluster(config(&out, ID), CL);
        assert_eq!(c.cluster_type, ClusterType::Static);
        assert_eq!(
            c.endpoints,
            ["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7", "4.3.2.1"]
        );
    }
}

#[test]
fn s6_8_5_port_range() {
    let route = ROUTE.replace(
        "{name: testservice-ok}",
        "{name: testservice-ok, port: 100, endPort: 200}",
    );
    let out = run_with_service(&with_cluster_ip("4.3.2.1"), &route, &Options::default());
    assert_eq!(
        eps(&out),
        [
            "1.2.3.4:<100-200>",
            "1.2.3.5:<100-200>",
            "1.2.3.6:<100-200>",
            "1.2.3.7:<100-200>",
            "4.3.2.1:<100-200>"
        ]
    );
}

#[test]
fn s6_8_6_gateway_of_another_class() {
    let gw = GATEWAY.replace(
        "gatewayClassName: gatewayclass-ok",
        "gatewayClassName: dummy",
    );
    let p: Vec<&str> = upstream()
        .into_iter()
        .map(|x| if x == GATEWAY { gw.as_str() } else { x })
        .collect();
    let out = render(&p);
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "udproute-ok")[0][0],
        "Accepted/False/NoMatchingParent"
    );
    assert!(out.configs.is_empty());
}

#[test]
fn s6_8_7_to_12_no_endpoint_discovery() {
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "[{name: testservice-ok}]",
            vec!["testservice-ok.testnamespace.svc.cluster.local"],
            "ResolvedRefs/True/ResolvedRefs",
        ),
        ("[]", vec![], "ResolvedRefs/True/ResolvedRefs"),
        (
            "[{name: testservice-ok, group: dummy}]",
            vec![],
            "ResolvedRefs/False/InvalidKind",
        ),
        (
            "[{name: testservice-ok, kind: dummy}]",
            vec![],
            "ResolvedRefs/False/InvalidKind",
        ),
        (
            "[{name: testservice-ok, namespace: dummy}]",
            vec!["testservice-ok.dummy.svc.cluster.local"],
            "ResolvedRefs/True/ResolvedRefs",
        ),
    ];
    for (backends, want, st) in cases {
        let out = with_backends(backends, &[], &no_eds());
        let c = cluster(config(&out, ID), CL);
        let want_type = if want.is_empty() {
            ClusterType::Static
        } else {
            ClusterType::StrictDns
        };
        assert_eq!(
            (c.cluster_type, endpoints(c)),
            (want_type, want),
            "{backends}"
        );
        assert_eq!(resolved(&out), st, "{backends}");
    }
    let out = with_backends(
        "[{name: a}, {name: b, namespace: dummy-ns}, {name: c, namespace: dummy-ns}]",
        &[],
        &no_eds(),
    );
    assert_eq!(
        eps(&out),
        [
            "a.testnamespace.svc.cluster.local",
            "b.dummy-ns.svc.cluster.local",
            "c.dummy-ns.svc.cluster.local"
        ]
    );
}

#[test]
fn s6_8_13_no_relay_to_cluster_ip() {
    let out = run_with_service(&with_cluster_ip("4.3.2.1"), ROUTE, &no_cluster_ip());
    assert_eq!(eps(&out), FIXTURE_IPS);
    assert_eq!(resolved(&out), "ResolvedRefs/True/ResolvedRefs");
}

#[test]
fn s6_8_14_17_headless_services_are_fine() {
    for svc in [SERVICE.to_string(), with_cluster_ip("None")] {
        let out = run_with_service(&svc, ROUTE, &Options::default());
        assert_eq!(eps(&out), FIXTURE_IPS);
        // Upstream reports ClusterIPNotFound as BackendNotFound; a headless Service with
        // endpoints is a healthy backend.
        assert_eq!(resolved(&out), "ResolvedRefs/True/ResolvedRefs");
    }
}

#[test]
fn s6_8_18_to_20_endpoint_discovery_odd_backends() {
    for (backends, st) in [
        ("[]", "ResolvedRefs/True/ResolvedRefs"),
        (
            "[{name: testservice-ok, group: dummy}]",
            "ResolvedRefs/False/InvalidKind",
        ),
        (
            "[{name: testservice-ok, kind: dummy}]",
            "ResolvedRefs/False/InvalidKind",
        ),
    ] {
        let out = with_backends(backends, &[], &Options::default());
        let c = cluster(config(&out, ID), CL);
        assert_eq!(c.cluster_type, ClusterType::Static);
        assert!(c.endpoints.is_empty(), "{backends}");
        assert_eq!(resolved(&out), st, "{backends}");
    }
}

const SVC_DUMMY: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: testservice-ok, namespace: dummy}\nspec: {clusterIP: 1.1.1.1}";

fn slice(name: &str, ns: &str, svc: &str, ips: &[&str]) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{addresses: [{ip}]}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
         addressType: IPv4\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

#[test]
fn s6_8_21_cross_namespace_backend() {
    let sl = slice("s", "dummy", "testservice-ok", &FIXTURE_IPS);
    let out = with_backends(
        "[{name: testservice-ok, namespace: dummy}]",
        &[SVC_DUMMY, &sl],
        &Options::default(),
    );
    assert_eq!(
        eps(&out),
        ["1.1.1.1", "1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7"]
    );
}

#[test]
fn s6_8_22_23_24_mixed_backends() {
    let dummy = "apiVersion: v1\nkind: Service\nmetadata: {name: dummy, namespace: dummy-ns}\nspec: {clusterIP: 1.1.1.1}";
    let ok1 = "apiVersion: v1\nkind: Service\nmetadata: {name: testservice-ok-1, namespace: dummy-ns}\nspec: {clusterIP: 2.2.2.2}";
    let ok1_sl = slice("s1", "dummy-ns", "testservice-ok-1", &FIXTURE_IPS);
    let ok2 = "apiVersion: v1\nkind: Service\nmetadata: {name: testservice-ok-2, namespace: testnamespace}\nspec: {clusterIP: 3.3.3.3}";
    let ok2_sl = slice("s2", "testnamespace", "testservice-ok-2", &["1.2.3.8"]);
    let backends = "[{name: dummy, namespace: dummy-ns}, {name: testservice-ok-1, namespace: dummy-ns}, {name: testservice-ok-2}]";
    let out = with_backends(
        backends,
        &[dummy, ok1, &ok1_sl, ok2, &ok2_sl],
        &Options::default(),
    );
    assert_eq!(eps(&out).len(), 8);
    assert_eq!(resolved(&out), "ResolvedRefs/False/BackendNotFound");
    assert!(has_error(
        &out,
        "UDPRoute testnamespace/udproute-ok",
        "no EndpointSlice or Endpoints addresses found for Service dummy-ns/dummy"
    ));

    // 24: [missing, endpoints without clusterIP, clusterIP without endpoints].
    let ok1 = ok1.replace("spec: {clusterIP: 2.2.2.2}", "spec: {}");
    let ok2 = "apiVersion: v1\nkind: Service\nmetadata: {name: testservice-ok-2, namespace: dummy-ns}\nspec: {clusterIP: 1.1.1.1}";
    let backends = "[{name: dummy}, {name: testservice-ok-1, namespace: dummy-ns}, {name: testservice-ok-2, namespace: dummy-ns}]";
    let out = with_backends(backends, &[&ok1, &ok1_sl, ok2], &Options::default());
    assert_eq!(
        eps(&out),
        ["1.1.1.1", "1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7"]
    );
    assert_eq!(resolved(&out), "ResolvedRefs/False/BackendNotFound");
}

#[test]
fn s6_8_25_26_static_services() {
    let out = with_backends(
        "[{group: stunner.l7mp.io, kind: StaticService, name: teststaticservice-ok}]",
        &[],
        &Options::default(),
    );
    assert_eq!(eps(&out), ["10.11.12.13", "10.11.12.14", "10.11.12.15"]);
    assert_eq!(resolved(&out), "ResolvedRefs/True/ResolvedRefs");
    let out = with_backends(
        "[{group: stunner.l7mp.io, kind: StaticService, name: nope}]",
        &[],
        &Options::default(),
    );
    assert_eq!(resolved(&out), "ResolvedRefs/False/BackendNotFound");
    // Upstream's Q-unknown drops the whole cluster here; an empty cluster keeps the route's
    // listeners consistent and admits nothing.
    assert!(eps(&out).is_empty());
}

#[test]
fn s6_8_27_inconsistent_cluster_type() {
    let out = with_backends(
        "[{group: stunner.l7mp.io, kind: StaticService, name: teststaticservice-ok}, {name: testservice-ok}]",
        &[],
        &no_eds(),
    );
    assert_eq!(resolved(&out), "ResolvedRefs/False/BackendNotFound");
    let c = cluster(config(&out, ID), CL);
    // The first backend's type and endpoints (upstream's Q-mixed labels it STRICT_DNS).
    assert_eq!(c.cluster_type, ClusterType::Static);
    assert_eq!(c.endpoints.len(), 3);
    assert!(has_error(
        &out,
        "UDPRoute testnamespace/udproute-ok",
        "cannot share a cluster"
    ));
}

#[test]
fn s6_8_28_29_static_and_service_mix() {
    let halves = "apiVersion: stunner.l7mp.io/v1\nkind: StaticService\nmetadata: {name: halves, namespace: testnamespace}\n\
                  spec: {prefixes: [0.0.0.0/1, 128.0.0.0/1]}";
    let out = with_backends(
        "[{group: stunner.l7mp.io, kind: StaticService, name: teststaticservice-ok}, \
          {group: stunner.l7mp.io, kind: StaticService, name: halves}, {name: testservice-ok}]",
        &[halves],
        &no_cluster_ip(),
    );
    assert_eq!(eps(&out).len(), 9);
    assert_eq!(resolved(&out), "ResolvedRefs/True/ResolvedRefs");
}

// --- 6.9 EndpointSlices ----------------------------------------------------------------------------

#[test]
fn s6_9_6_all_addresses_including_not_ready() {
    let out = render(&upstream());
    assert_eq!(eps(&out), FIXTURE_IPS);
}

#[test]
fn s6_9_8_9_slices_of_other_services_or_namespaces() {
    for (name, ns, svc) in [
        ("a", NS, "other-service"),
        ("b", "other-ns", "testservice-ok"),
    ] {
        let sl = slice(name, ns, svc, &["9.9.9.9"]);
        let p: Vec<&str> = upstream()
            .into_iter()
            .map(|x| if x == SLICE { sl.as_str() } else { x })
            .collect();
        let out = render(&p);
        assert!(eps(&out).is_empty(), "{ns}/{svc}");
        assert_eq!(resolved(&out), "ResolvedRefs/False/BackendNotFound");
    }
}

#[test]
fn s6_9_10_two_slices() {
    let second = slice("second", NS, "testservice-ok", &["1.2.3.8"]);
    let mut p = upstream();
    p.push(&second);
    let out = render(&p);
    assert_eq!(
        eps(&out),
        ["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7", "1.2.3.8"]
    );
}

// --- 6.10 Nodes (through NodePort public addresses) ---------------------------------------------------

fn nodeport_service() -> String {
    SERVICE
        .replace("type: LoadBalancer", "type: NodePort")
        .replace(
            "{name: udp-ok, protocol: UDP, port: 1}",
            "{name: udp-ok, protocol: UDP, port: 1, nodePort: 30001}",
        )
        .replace(
            "{name: tcp-ok, protocol: TCP, port: 2}",
            "{name: tcp-ok, protocol: TCP, port: 2, nodePort: 30002}",
        )
}

fn node(name: &str, addrs: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{addresses: {addrs}}}"
    )
}

fn public(nodes: &[&str]) -> (String, u16) {
    let svc = nodeport_service();
    let mut p: Vec<&str> = upstream()
        .into_iter()
        .filter(|x| *x != SERVICE && *x != NODE)
        .collect();
    p.push(&svc);
    p.extend(nodes);
    let out = render(&p);
    let l = listener(
        config(&out, ID),
        "testnamespace/gateway-1/gateway-1-listener-udp",
    );
    (l.public_address.clone(), l.public_port)
}

#[test]
fn s6_10_node_addresses() {
    assert_eq!(public(&[NODE]), ("1.2.3.4".to_string(), 30001));
    let internal = node("a-first", "[{type: InternalIP, address: 10.0.0.1}]");
    let external = node("b-second", "[{type: ExternalIP, address: 1.2.3.4}]");
    assert_eq!(
        public(&[&internal, &external]),
        ("1.2.3.4".to_string(), 30001)
    );
    let empty = node("c", "[]");
    assert_eq!(public(&[&empty]), (String::new(), 0));
    // ExternalDNS only: the name, typed Hostname in the Gateway status.
    let dns = node("d", "[{type: ExternalDNS, address: node.example.com}]");
    assert_eq!(public(&[&dns]), ("node.example.com".to_string(), 30001));
    // An IPv6 node address is used bare.
    let v6 = node("e", "[{type: ExternalIP, address: \"2001:db8::1\"}]");
    assert_eq!(public(&[&v6]), ("2001:db8::1".to_string(), 30001));
}
