//! Upstream operator unit-test scenarios (spec 6.13, 6.14): the whole managed-mode and
//! legacy-mode pipelines. Scenario numbers refer to the spec.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::config::{AuthType, ClusterType, ListenerProtocol};
use stunnerd::k8s::{Mode, Options, RenderOutput, render_config_for};

const ID: &str = "testnamespace/gateway-1";
const NS: &str = "testnamespace";
const UDP: &str = "testnamespace/gateway-1/gateway-1-listener-udp";
const TCP: &str = "testnamespace/gateway-1/gateway-1-listener-tcp";
const CL: &str = "testnamespace/udproute-ok";

fn run(swaps: &[(&str, &str)], extra: &[&str], opts: &Options) -> RenderOutput {
    let mut p: Vec<&str> = upstream()
        .into_iter()
        .map(|x| swaps.iter().find(|(o, _)| *o == x).map_or(x, |(_, n)| n))
        .collect();
    p.extend(extra);
    render_opts(&p, opts)
}

fn with_cluster_ip() -> String {
    SERVICE.replace(
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  clusterIP: 4.3.2.1\n",
    )
}

fn legacy(eds: bool, cluster_ip: bool) -> Options {
    Options {
        endpoint_discovery: eds,
        relay_to_cluster_ip: cluster_ip,
        ..Options::new(Mode::Legacy)
    }
}

// --- 6.13 Managed mode -------------------------------------------------------------------------------

#[test]
fn s6_13_1_eds_off() {
    let out = run(&[], &[], &no_eds());
    assert_eq!(out.configs.len(), 1);
    let c = config(&out, ID);
    assert_eq!(
        (c.admin.loglevel.as_str(), c.auth.realm.as_str()),
        ("testloglevel", "testrealm")
    );
    assert_eq!(c.auth.auth_type, AuthType::Static);
    assert_eq!(c.auth.credentials["username"], "testuser");
    let u = listener(c, UDP);
    assert_eq!(
        (u.protocol, u.port, u.public_address.as_str(), u.public_port),
        (ListenerProtocol::TurnUdp, 1, "1.2.3.4", 1)
    );
    assert_eq!(u.routes, [CL]);
    let t = listener(c, TCP);
    assert_eq!(
        (t.protocol, t.port, t.public_address.as_str(), t.public_port),
        (ListenerProtocol::TurnTcp, 2, "1.2.3.4", 2)
    );
    assert!(t.routes.is_empty());
    let cl = cluster(c, CL);
    assert_eq!(
        (cl.cluster_type, endpoints(cl)),
        (
            ClusterType::StrictDns,
            vec!["testservice-ok.testnamespace.svc.cluster.local"]
        )
    );
    assert_eq!(out.deployments.len(), 1);
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Accepted"),
        "Accepted/True/Accepted"
    );
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
        "Programmed/True/Programmed"
    );
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "udproute-ok")[0],
        ["Accepted/True/Accepted", "ResolvedRefs/True/ResolvedRefs"]
    );
    assert!(!out.has_errors(), "{:#?}", out.findings);
}

#[test]
fn s6_13_2_to_5_eds_with_cluster_ip_both_route_versions() {
    let svc = with_cluster_ip();
    let v1a2 = ROUTE.replace("stunner.l7mp.io/v1", "gateway.networking.k8s.io/v1alpha2");
    for route in [ROUTE, v1a2.as_str()] {
        let out = run(&[(SERVICE, &svc), (ROUTE, route)], &[], &Options::default());
        let cl = cluster(config(&out, ID), CL);
        assert_eq!(cl.cluster_type, ClusterType::Static);
        assert_eq!(
            endpoints(cl),
            ["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7", "4.3.2.1"]
        );
    }
}

#[test]
fn s6_13_7_conflicts() {
    let gw = GATEWAY.replace(
        "  - {name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP}\n  - {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}\n",
        "  - {name: udp, port: 1, protocol: TURN-UDP}\n  - {name: udp-ok, port: 2, protocol: TURN-UDP}\n\
         \x20 - {name: udp-conflicted, port: 1, protocol: TURN-UDP}\n  - {name: dtls-conflicted, port: 1, protocol: TURN-DTLS}\n\
         \x20 - {name: tcp, port: 11, protocol: TURN-TCP}\n  - {name: tcp-ok, port: 12, protocol: TURN-TCP}\n\
         \x20 - {name: tcp-conflicted, port: 11, protocol: TURN-TCP}\n  - {name: tls-conflicted, port: 11, protocol: TURN-TLS}\n",
    );
    let route = ROUTE.replace(
        "[{name: gateway-1, sectionName: gateway-1-listener-udp}]",
        "[{name: gateway-1}]",
    );
    let out = run(&[(GATEWAY, &gw), (ROUTE, &route)], &[], &no_eds());
    let c = config(&out, ID);
    let names: Vec<&str> = c
        .listeners
        .iter()
        .map(|l| l.name.rsplit('/').next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["udp", "udp-ok", "tcp", "tcp-ok"]);
    assert!(c.listeners.iter().all(|l| l.routes == [CL]));
    assert_eq!(
        listener(c, "testnamespace/gateway-1/udp").public_address,
        "1.2.3.4"
    );
    assert!(c.listeners[1..].iter().all(|l| l.public_address.is_empty()));
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
        "Programmed/False/AddressNotAssigned"
    );
    let st = status(&out, "Gateway", NS, "gateway-1")
        .gateway()
        .expect("gw");
    assert_eq!(st.listeners.len(), 8);
    for l in [
        "udp-conflicted",
        "dtls-conflicted",
        "tcp-conflicted",
        "tls-conflicted",
    ] {
        assert_eq!(
            lcond(&out, NS, "gateway-1", l, "Accepted"),
            "Accepted/False/PortUnavailable"
        );
        assert_eq!(
            lcond(&out, NS, "gateway-1", l, "Conflicted"),
            "Conflicted/True/ProtocolConflict"
        );
        assert_eq!(
            lcond(&out, NS, "gateway-1", l, "ResolvedRefs"),
            "ResolvedRefs/True/ResolvedRefs"
        );
        assert_eq!(st.listener(l).expect("l").attached_routes, 1);
    }
    // Conflicted listeners stay out of the Service: duplicate ports would make it invalid.
    let svc = out.service(NS, "gateway-1").expect("svc");
    let ports: Vec<&str> = svc.spec.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(ports, ["udp", "udp-ok"]);
}

#[test]
fn s6_13_8_class_invalidation() {
    let class = CLASS.replace("name: gatewayconfig-ok,", "name: dummy,");
    let out = run(&[(CLASS, &class)], &[], &Options::default());
    assert!(out.deployments.is_empty() && out.services.is_empty() && out.configs.is_empty());
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Accepted"),
        "Accepted/False/Pending"
    );
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
        "Programmed/False/Invalid"
    );
    let objs = objects(&[&upstream()
        .into_iter()
        .map(|p| if p == CLASS { class.as_str() } else { p })
        .collect::<Vec<_>>()
        .join("\n---\n")]);
    let err = render_config_for(&objs, ID, Mode::Managed).expect_err("no config");
    assert!(err.to_string().contains("No GatewayConfig found"), "{err}");
}

#[test]
fn s6_13_9_two_classes_two_gateways() {
    let class2 = CLASS.replace("gatewayclass-ok", "dummy-gatewayclass");
    let gw2 = GATEWAY
        .replace("name: gateway-1,", "name: dummy-gateway,")
        .replace(
            "gatewayClassName: gatewayclass-ok",
            "gatewayClassName: dummy-gatewayclass",
        );
    let route = ROUTE
        .replace(
            "[{name: gateway-1, sectionName: gateway-1-listener-udp}]",
            "[{name: dummy-gateway}, {name: gateway-1, sectionName: gateway-1-listener-udp}]",
        )
        .replace(
            "[{name: testservice-ok}]",
            "[{name: testservice-ok, port: 10, endPort: 100}, {name: dummy-service}]",
        );
    let dummy_slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: d, namespace: testnamespace, labels: {kubernetes.io/service-name: dummy-service}}\n\
                       addressType: IPv4\nendpoints: [{addresses: [4.4.4.4]}]";
    let out = run(
        &[(ROUTE, &route)],
        &[&class2, &gw2, dummy_slice],
        &no_cluster_ip(),
    );
    let want = [
        "1.2.3.4:<10-100>",
        "1.2.3.5:<10-100>",
        "1.2.3.6:<10-100>",
        "1.2.3.7:<10-100>",
        "4.4.4.4",
    ];
    let c1 = config(&out, ID);
    assert_eq!(listener(c1, UDP).routes, [CL]);
    assert!(listener(c1, TCP).routes.is_empty());
    assert_eq!(endpoints(cluster(c1, CL)), want);
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
        "Programmed/True/Programmed"
    );
    let c2 = config(&out, "testnamespace/dummy-gateway");
    assert!(
        c2.listeners
            .iter()
            .all(|l| l.routes == [CL] && l.public_address.is_empty())
    );
    assert_eq!(endpoints(cluster(c2, CL)), want);
    assert_eq!(
        cond(&out, "Gateway", NS, "dummy-gateway", "Programmed"),
        "Programmed/False/AddressNotAssigned"
    );
    assert_eq!(rconds(&out, "UDPRoute", NS, "udproute-ok").len(), 2);
}

#[test]
fn s6_13_10_disable_managed_dataplane() {
    let gw = GATEWAY.replace("labels: {dummy-label: dummy-value}}", "labels: {dummy-label: dummy-value}, annotations: {stunner.l7mp.io/disable-managed-dataplane: \"true\"}}");
    let out = run(&[(GATEWAY, &gw)], &[], &Options::default());
    assert!(out.deployments.is_empty());
    assert!(out.config(ID).is_some() && out.service(NS, "gateway-1").is_some());
}

#[test]
fn s6_13_11_targetport_annotation() {
    let gw = GATEWAY.replace(
        "labels: {dummy-label: dummy-value}}",
        "labels: {dummy-label: dummy-value}, annotations: {stunner.l7mp.io/targetport: '{\"gateway-1-listener-udp\":11,\"dummy\":12,\"gateway-1-listener-tcp\":13}'}}",
    );
    let out = run(&[(GATEWAY, &gw)], &[], &Options::default());
    let c = config(&out, ID);
    assert_eq!(
        (listener(c, UDP).port, listener(c, UDP).public_port),
        (11, 1)
    );
    assert_eq!(
        (listener(c, TCP).port, listener(c, TCP).public_port),
        (13, 2)
    );
}

#[test]
fn render_config_for_a_gateway() {
    let objs = objects(&upstream());
    let c = render_config_for(&objs, ID, Mode::Managed)
        .expect("ok")
        .expect("config");
    assert_eq!(c.admin.name, ID);
    assert!(
        render_config_for(&objs, "testnamespace/nope", Mode::Managed)
            .expect("ok")
            .is_none()
    );
    let legacy = render_config_for(&objs, ID, Mode::Legacy)
        .expect("ok")
        .expect("config");
    assert_eq!(legacy.admin.name, "stunner-daemon");
    assert_eq!(legacy.listeners.len(), 2);
}

// --- 6.14 Legacy mode ---------------------------------------------------------------------------------

#[test]
fn s6_14_1_2_legacy_eds_off() {
    let out = run(&[], &[], &legacy(false, true));
    assert!(out.deployments.is_empty());
    let c = &out.configs[0];
    assert_eq!(
        (c.admin.name.as_str(), c.admin.loglevel.as_str()),
        ("stunner-daemon", "testloglevel")
    );
    assert_eq!(
        (c.auth.auth_type, c.auth.realm.as_str()),
        (AuthType::Static, "testrealm")
    );
    assert_eq!(listener(c, UDP).public_address, "1.2.3.4");
    assert_eq!(listener(c, UDP).routes, [CL]);
    assert_eq!(cluster(c, CL).cluster_type, ClusterType::StrictDns);
    let cm = &out.config_maps[0];
    assert_eq!(
        (cm.metadata.namespace.as_str(), cm.metadata.name.as_str()),
        (NS, "stunnerd-config")
    );
    assert_eq!(cm.metadata.annotations.len(), 1);
    let conf: serde_json::Value = serde_json::from_str(&cm.data["stunnerd.conf"]).expect("json");
    assert_eq!(conf["admin"]["name"], "stunner-daemon");
    // Legacy Services select all stunnerd pods.
    let svc = out.service(NS, "gateway-1").expect("svc");
    assert_eq!(svc.spec.selector.len(), 1);
}

#[test]
fn s6_14_3_to_5_legacy_endpoints() {
    let out = run(&[], &[], &legacy(true, false));
    assert_eq!(cluster(&out.configs[0], CL).endpoints.len(), 4);
    let svc = with_cluster_ip();
    let out = run(&[(SERVICE, &svc)], &[], &legacy(true, true));
    assert_eq!(cluster(&out.configs[0], CL).endpoints.len(), 5);
}

#[test]
fn s6_14_6_legacy_invalidation() {
    let cfg = CONFIG.replace("userName: testuser, ", "");
    let out = run(&[(CONFIG, &cfg)], &[], &legacy(true, true));
    assert!(out.configs.is_empty());
    assert_eq!(out.config_maps[0].data["stunnerd.conf"], "");
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Accepted"),
        "Accepted/False/Pending"
    );
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
        "Programmed/False/Invalid"
    );
    // Upstream ends with the class Accepted=True; a class whose config failed is not.
    assert_eq!(
        cond(&out, "GatewayClass", "", "gatewayclass-ok", "Accepted"),
        "Accepted/False/InvalidParameters"
    );
}

fn dummy_hierarchy(backend_ns: &str) -> String {
    let class = CLASS
        .replace("gatewayclass-ok", "dummy-class")
        .replace("namespace: testnamespace}", "namespace: dummy-namespace}");
    let config = CONFIG.replace("namespace: testnamespace}", "namespace: dummy-namespace}");
    let gateway = GATEWAY
        .replace(
            "name: gateway-1, namespace: testnamespace",
            "name: dummy-gateway, namespace: dummy-namespace",
        )
        .replace(
            "gatewayClassName: gatewayclass-ok",
            "gatewayClassName: dummy-class",
        );
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: dummy-namespace}}\n---\n{class}\n---\n{config}\n---\n{gateway}\n---\n\
         apiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nmetadata: {{name: dummy-route, namespace: dummy-namespace}}\n\
         spec:\n  parentRefs: [{{name: dummy-gateway}}]\n  rules: [{{backendRefs: [{{name: dummy-service, namespace: {backend_ns}}}]}}]"
    )
}

#[test]
fn s6_14_7_8_legacy_two_classes() {
    let h = dummy_hierarchy("dummy-namespace");
    let out = run(&[], &[&h], &legacy(false, true));
    assert_eq!(out.configs.len(), 2);
    let cms: Vec<&str> = out
        .config_maps
        .iter()
        .map(|c| c.metadata.namespace.as_str())
        .collect();
    assert_eq!(cms, ["dummy-namespace", NS]);
    let d = out
        .configs
        .iter()
        .find(|c| {
            c.listeners
                .iter()
                .any(|l| l.name.starts_with("dummy-namespace/dummy-gateway/"))
        })
        .expect("dummy config");
    assert!(d.listeners.iter().all(|l| l.public_address.is_empty()));
    let cl = cluster(d, "dummy-namespace/dummy-route");
    assert_eq!(
        endpoints(cl),
        ["dummy-service.dummy-namespace.svc.cluster.local"]
    );

    // 8: cross-namespace backend with one endpoint and no clusterIP.
    let h = dummy_hierarchy("testnamespace");
    let sl = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: d, namespace: testnamespace, labels: {kubernetes.io/service-name: dummy-service}}\n\
              addressType: IPv4\nendpoints: [{addresses: [4.4.4.4]}]";
    let dsvc = "apiVersion: v1\nkind: Service\nmetadata: {name: dummy-service, namespace: testnamespace}\nspec: {}";
    let svc = with_cluster_ip();
    let out = run(&[(SERVICE, &svc)], &[&h, sl, dsvc], &legacy(true, true));
    let d = out
        .configs
        .iter()
        .find(|c| c.cluster("dummy-namespace/dummy-route").is_some())
        .expect("dummy config");
    assert_eq!(
        endpoints(cluster(d, "dummy-namespace/dummy-route")),
        ["4.4.4.4"]
    );
    let main = out
        .configs
        .iter()
        .find(|c| c.cluster(CL).is_some())
        .expect("main");
    assert_eq!(cluster(main, CL).endpoints.len(), 5);
}

#[test]
fn s6_14_9_legacy_static_service() {
    let route = ROUTE.replace(
        "[{name: testservice-ok}]",
        "[{group: stunner.l7mp.io, kind: StaticService, name: teststaticservice-ok}]",
    );
    let out = run(&[(ROUTE, &route)], &[], &legacy(true, true));
    assert_eq!(
        endpoints(cluster(&out.configs[0], CL)),
        ["10.11.12.13", "10.11.12.14", "10.11.12.15"]
    );
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Accepted"),
        "Accepted/True/Accepted"
    );
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
        "Programmed/True/Programmed"
    );
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "udproute-ok")[0],
        ["Accepted/True/Accepted", "ResolvedRefs/True/ResolvedRefs"]
    );
}

#[test]
fn s6_14_10_legacy_addresses_hint() {
    let gw = GATEWAY.replace(
        "  listeners:",
        "  addresses: [{type: IPAddress, value: 1.1.1.1}]\n  listeners:",
    );
    let out = run(&[(GATEWAY, &gw)], &[], &legacy(true, true));
    let c = &out.configs[0];
    assert_eq!(listener(c, UDP).public_address, "1.1.1.1");
    assert_eq!(listener(c, TCP).public_address, "1.1.1.1");
}
