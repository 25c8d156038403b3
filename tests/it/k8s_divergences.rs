//! The divergences from the upstream operator listed in docs/k8s.md that no other test
//! covers, one test each.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::k8s::Severity;

const GW: &str = "stunner/udp-gateway";

#[test]
fn lower_case_tls_listener_gets_its_certificate() {
    let gw = UDP_GW.replace(
        "listeners: [{name: udp-listener, port: 3478, protocol: TURN-UDP}]",
        "listeners: [{name: t, port: 443, protocol: tls, tls: {certificateRefs: [{name: c}]}}]",
    );
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: stunner}\nstringData: {tls.crt: C, tls.key: K}";
    let out = render(&[BASE, &gw, secret]);
    let l = listener(config(&out, GW), "stunner/udp-gateway/t");
    assert_eq!((l.cert.as_str(), l.key.as_str()), ("Qw==", "Sw=="));
}

#[test]
fn endpoints_are_deduplicated_and_cluster_ips_included() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: stunner}\n\
               spec: {clusterIP: 10.96.0.1, clusterIPs: [10.96.0.1, \"fd00::1\"]}";
    let slices = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a, namespace: stunner, labels: {kubernetes.io/service-name: s}}\n\
                  endpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.1]}]\n---\n\
                  apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b, namespace: stunner, labels: {kubernetes.io/service-name: s}}\n\
                  addressType: IPv6\nendpoints: [{addresses: [\"fd00::10\"]}]";
    let route = "apiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nmetadata: {name: r, namespace: stunner}\n\
                 spec: {parentRefs: [{name: udp-gateway}], rules: [{backendRefs: [{name: s}]}]}";
    let out = render(&[BASE, UDP_GW, svc, slices, route]);
    assert_eq!(
        endpoints(cluster(config(&out, GW), "stunner/r")),
        ["10.0.0.1", "10.96.0.1", "fd00::1", "fd00::10"]
    );
}

#[test]
fn node_dns_address_is_a_hostname() {
    let gw = UDP_GW.replace("metadata: {name: udp-gateway, namespace: stunner}", "metadata: {name: udp-gateway, namespace: stunner, annotations: {stunner.l7mp.io/service-type: NodePort, stunner.l7mp.io/nodeport: '{\"udp-listener\": 31000}'}}");
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {addresses: [{type: ExternalDNS, address: node.example.com}]}";
    let out = render(&[BASE, &gw, node]);
    let l = listener(config(&out, GW), "stunner/udp-gateway/udp-listener");
    assert_eq!(
        (l.public_address.as_str(), l.public_port),
        ("node.example.com", 31000)
    );
    let st = status(&out, "Gateway", "stunner", "udp-gateway")
        .gateway()
        .expect("gw");
    assert_eq!(st.addresses[0].address_type, "Hostname");
}

#[test]
fn programmed_considers_rendered_listeners_only() {
    let gw = UDP_GW
        .replace(
            "listeners: [{name: udp-listener, port: 3478, protocol: TURN-UDP}]",
            "addresses: [{value: 203.0.113.1}]\n  listeners: [{name: udp-listener, port: 3478, protocol: TURN-UDP}, {name: q, port: 1, protocol: QUIC}]",
        );
    let out = render(&[BASE, &gw]);
    assert_eq!(
        cond(&out, "Gateway", "stunner", "udp-gateway", "Programmed"),
        "Programmed/True/Programmed"
    );
}

#[test]
fn last_applied_annotation_and_owner_references() {
    let gw = UDP_GW.replace(
        "metadata: {name: udp-gateway, namespace: stunner}",
        "metadata: {name: udp-gateway, namespace: stunner, annotations: {kubectl.kubernetes.io/last-applied-configuration: '{}', team: a}}",
    );
    let out = render(&[BASE, &gw]);
    let svc = out.service("stunner", "udp-gateway").expect("svc");
    let dep = out.deployment("stunner", "udp-gateway").expect("dep");
    for a in [&svc.metadata.annotations, &dep.metadata.annotations] {
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(a["team"], "a");
    }
    // No UID in the manifest: no ownerReference (the API server would refuse an empty one).
    assert!(svc.metadata.owner_references.is_empty() && dep.metadata.owner_references.is_empty());
    let with_uid = gw.replace(
        "namespace: stunner, annotations",
        "namespace: stunner, uid: u-1, annotations",
    );
    let out = render(&[BASE, &with_uid]);
    assert_eq!(
        out.service("stunner", "udp-gateway")
            .expect("svc")
            .metadata
            .owner_references[0]
            .uid,
        "u-1"
    );
}

#[test]
fn other_controllers_route_statuses_are_kept() {
    let route = "apiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nmetadata: {name: r, namespace: stunner}\n\
                 spec: {parentRefs: [{name: udp-gateway}], rules: [{backendRefs: []}]}\n\
                 status:\n  parents:\n\
                 \x20 - {controllerName: example.com/other, parentRef: {name: x}, conditions: []}\n\
                 \x20 - {controllerName: stunner.l7mp.io/gateway-operator, parentRef: {name: stale}, conditions: []}\n";
    let out = render(&[BASE, UDP_GW, route]);
    let st = status(&out, "UDPRoute", "stunner", "r");
    let v = serde_json::to_value(st).expect("json");
    let parents = v["status"]["parents"].as_array().expect("parents");
    assert_eq!(
        parents.len(),
        2,
        "ours (fresh) + the other controller's; our stale one is gone"
    );
    assert_eq!(parents[0]["parentRef"]["name"], "udp-gateway");
    assert_eq!(parents[1]["controllerName"], "example.com/other");
}

#[test]
fn duplicate_objects_last_wins_with_a_note() {
    let second = UDP_GW.replace("port: 3478", "port: 3479");
    let out = render(&[BASE, UDP_GW, &second]);
    assert_eq!(config(&out, GW).listeners[0].port, 3479);
    assert!(out.findings.iter().any(|f| f.severity == Severity::Note
        && f.object == "Gateway stunner/udp-gateway"
        && f.message.contains("more than once")));
}
