//! Upstream operator unit-test scenarios (spec 6.11): public addresses and the Service per
//! Gateway. Scenario numbers refer to the spec. (6.12, the Deployment: k8s_scenarios_dataplane.rs.)

use crate::k8s_fixtures;

use std::collections::BTreeMap;

use k8s_fixtures::*;
use stunnerd::k8s::{RenderOutput, ServiceObject, parse_port_map};

const ID: &str = "testnamespace/gateway-1";
const NS: &str = "testnamespace";
const UDP: &str = "testnamespace/gateway-1/gateway-1-listener-udp";
const TCP: &str = "testnamespace/gateway-1/gateway-1-listener-tcp";

/// Render the upstream fixtures with some pieces replaced (`(old, new)`) and some added.
fn run(swaps: &[(&str, &str)], extra: &[&str]) -> RenderOutput {
    let mut p: Vec<&str> = upstream()
        .into_iter()
        .map(|x| swaps.iter().find(|(o, _)| *o == x).map_or(x, |(_, n)| n))
        .collect();
    p.extend(extra);
    render(&p)
}

fn addr(out: &RenderOutput, l: &str) -> (String, u16) {
    let l = listener(config(out, ID), l);
    (l.public_address.clone(), l.public_port)
}

fn a(s: &str, p: u16) -> (String, u16) {
    (s.to_string(), p)
}

// --- 6.11 Public addresses ---------------------------------------------------------------------------

#[test]
fn s6_11_1_to_3_load_balancer_ingress() {
    let out = run(&[], &[]);
    assert_eq!(
        (addr(&out, UDP), addr(&out, TCP)),
        (a("1.2.3.4", 1), a("1.2.3.4", 2))
    );
    let gs = status(&out, "Gateway", NS, "gateway-1")
        .gateway()
        .expect("gw")
        .clone();
    assert_eq!(
        (
            gs.addresses[0].address_type.as_str(),
            gs.addresses[0].value.as_str()
        ),
        ("IPAddress", "1.2.3.4")
    );
    assert_eq!(
        cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
        "Programmed/True/Programmed"
    );

    let host = SERVICE.replace("- ip: 1.2.3.4", "- hostname: dummy-hostname");
    let out = run(&[(SERVICE, &host)], &[]);
    assert_eq!(
        (addr(&out, UDP), addr(&out, TCP)),
        (a("dummy-hostname", 1), a("dummy-hostname", 2))
    );
    let gs = status(&out, "Gateway", NS, "gateway-1")
        .gateway()
        .expect("gw")
        .clone();
    assert_eq!(gs.addresses[0].address_type, "Hostname");

    let no_ports = SERVICE.replace(
        "      ports: [{port: 1, protocol: UDP}, {port: 2, protocol: TCP}]\n",
        "",
    );
    let out = run(&[(SERVICE, &no_ports)], &[]);
    assert_eq!(
        (addr(&out, UDP), addr(&out, TCP)),
        (a("1.2.3.4", 1), a("1.2.3.4", 2))
    );
}

#[test]
fn s6_11_4_to_6_service_not_owned() {
    let no_ann = SERVICE.replace(
        "  annotations: {stunner.l7mp.io/related-gateway-name: testnamespace/gateway-1}\n",
        "",
    );
    let dummy_ann = SERVICE.replace(
        "related-gateway-name: testnamespace/gateway-1}",
        "related-gateway-name: dummy}",
    );
    let no_owner = SERVICE.replace(
        "  ownerReferences: [{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, name: gateway-1, uid: gw-1-uid}]\n",
        "",
    );
    for svc in [no_ann, dummy_ann, no_owner] {
        let out = run(&[(SERVICE, &svc)], &[]);
        assert_eq!((addr(&out, UDP), addr(&out, TCP)), (a("", 0), a("", 0)));
        assert_eq!(
            cond(&out, "Gateway", NS, "gateway-1", "Programmed"),
            "Programmed/False/AddressNotAssigned"
        );
        assert!(
            !out.has_errors(),
            "a missing address is not an error: {:#?}",
            out.findings
        );
    }
}

#[test]
fn s6_11_7_8_listener_without_service_port() {
    let gw = GATEWAY.replace(
        "  - {name: gateway-1-listener-tcp",
        "  - {name: dummy, port: 5, protocol: dummy}\n  - {name: gateway-1-listener-tcp",
    );
    let out = run(&[(GATEWAY, &gw)], &[]);
    assert_eq!(
        (addr(&out, UDP), addr(&out, TCP)),
        (a("1.2.3.4", 1), a("1.2.3.4", 2))
    );
    let moved = SERVICE.replace(
        "{name: udp-ok, protocol: UDP, port: 1}",
        "{name: udp-ok, protocol: UDP, port: 12}",
    );
    let out = run(&[(SERVICE, &moved)], &[]);
    assert_eq!(
        (addr(&out, UDP), addr(&out, TCP)),
        (a("", 0), a("1.2.3.4", 2))
    );
}

#[test]
fn s6_11_9_two_ingresses() {
    let svc = SERVICE.replace(
        "    - ip: 1.2.3.4\n      ports: [{port: 1, protocol: UDP}, {port: 2, protocol: TCP}]\n",
        "    - ip: 1.2.3.4\n      ports: [{port: 1, protocol: UDP}]\n    - ip: 5.6.7.8\n      ports: [{port: 1, protocol: UDP}, {port: 2, protocol: TCP}]\n",
    );
    let out = run(&[(SERVICE, &svc)], &[]);
    assert_eq!(
        (addr(&out, UDP), addr(&out, TCP)),
        (a("1.2.3.4", 1), a("5.6.7.8", 2))
    );
}

#[test]
fn s6_11_10_nodeport_service() {
    let svc = SERVICE
        .replace("type: LoadBalancer", "type: NodePort")
        .replace("port: 1}", "port: 1, nodePort: 30001}")
        .replace("port: 2}", "port: 2, nodePort: 30002}");
    let out = run(&[(SERVICE, &svc)], &[]);
    assert_eq!(
        (addr(&out, UDP), addr(&out, TCP)),
        (a("1.2.3.4", 30001), a("1.2.3.4", 30002))
    );
}

// --- 6.11 Service generation ---------------------------------------------------------------------------

fn gw_with(listeners: &str, annotations: &str, extra: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: gateway-1, namespace: testnamespace, uid: gw-1-uid, annotations: {{{annotations}}}}}\n\
         spec:\n  gatewayClassName: gatewayclass-ok\n{extra}  listeners: {listeners}\n"
    )
}

const TWO: &str = "[{name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP}, {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}]";

fn svc(gw_annotations: &str, gc_annotations: &str) -> Option<ServiceObject> {
    svc_listeners(TWO, gw_annotations, gc_annotations, "")
}

fn svc_listeners(
    listeners: &str,
    gw_ann: &str,
    gc_ann: &str,
    extra: &str,
) -> Option<ServiceObject> {
    let gw = gw_with(listeners, gw_ann, extra);
    let gc = CONFIG.replace(
        "logLevel: testloglevel}",
        &format!("logLevel: testloglevel, loadBalancerServiceAnnotations: {{{gc_ann}}}}}"),
    );
    let out = run(&[(GATEWAY, &gw), (CONFIG, &gc)], &[]);
    out.service(NS, "gateway-1").cloned()
}

fn ports(s: &ServiceObject) -> Vec<(String, i64)> {
    s.spec
        .ports
        .iter()
        .map(|p| (p.protocol.clone(), p.port))
        .collect()
}

fn p(proto: &str, port: i64) -> (String, i64) {
    (proto.to_string(), port)
}

#[test]
fn s6_11_11_single_udp_listener() {
    let s = svc_listeners(
        "[{name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP}]",
        "",
        "",
        "",
    )
    .expect("svc");
    let labels: Vec<&str> = s.metadata.labels.keys().map(String::as_str).collect();
    assert_eq!(
        labels,
        [
            "stunner.l7mp.io/owned-by",
            "stunner.l7mp.io/related-gateway-name",
            "stunner.l7mp.io/related-gateway-namespace"
        ]
    );
    assert_eq!(
        s.metadata.annotations,
        BTreeMap::from([(
            "stunner.l7mp.io/related-gateway-name".to_string(),
            ID.to_string()
        )])
    );
    assert_eq!(s.spec.service_type, "LoadBalancer");
    assert!(s.spec.external_traffic_policy.is_none());
    assert_eq!(s.spec.session_affinity, "ClientIP");
    assert_eq!(s.spec.ports[0].name, "gateway-1-listener-udp");
    assert_eq!(ports(&s), [p("UDP", 1)]);
    let o = &s.metadata.owner_references[0];
    assert_eq!(
        (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
        ("Gateway", "gateway-1", "gw-1-uid")
    );
    assert_eq!(s.spec.selector["app"], "stunner");
}

#[test]
fn s6_11_13_to_15_listener_protocols() {
    assert!(svc_listeners("[{name: x, port: 1, protocol: dummy}]", "", "", "").is_none());
    let s = svc_listeners(
        "[{name: a, port: 1, protocol: TURN-UDP}, {name: b, port: 2, protocol: TURN-UDP}]",
        "",
        "",
        "",
    )
    .expect("svc");
    assert_eq!(ports(&s), [p("UDP", 1), p("UDP", 2)]);
    let s = svc_listeners(
        "[{name: a, port: 1, protocol: dummy-2}, {name: b, port: 2, protocol: TURN-TCP}]",
        "",
        "",
        "",
    )
    .expect("svc");
    assert_eq!(ports(&s), [p("TCP", 2)]);
}

const MIXED: &str = "stunner.l7mp.io/enable-mixed-protocol-lb";

#[test]
fn s6_11_16_to_20_mixed_protocol_and_annotations() {
    let s = svc(&format!("{MIXED}: \"true\""), "").expect("svc");
    assert_eq!(s.metadata.annotations.len(), 2);
    assert_eq!(ports(&s), [p("UDP", 1), p("TCP", 2)]);
    let s = svc(&format!("{MIXED}: dummy"), "").expect("svc");
    assert_eq!(s.metadata.annotations[MIXED], "dummy");
    assert_eq!(ports(&s), [p("UDP", 1)]);
    let s = svc("", &format!("{MIXED}: \"true\"")).expect("svc");
    assert_eq!(ports(&s), [p("UDP", 1), p("TCP", 2)]);
    let s = svc(
        &format!("{MIXED}: \"false\""),
        &format!("{MIXED}: \"true\""),
    )
    .expect("svc");
    assert_eq!(s.metadata.annotations[MIXED], "false");
    assert_eq!(ports(&s), [p("UDP", 1)]);
    let s = svc("", "test: testval, dummy: dummyval").expect("svc");
    assert_eq!(s.metadata.annotations.len(), 3);
    assert_eq!(ports(&s), [p("UDP", 1)]);
}

const AWS_PORT: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port";
const AWS_PROTO: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol";

#[test]
fn s6_11_21_to_27_health_check_port() {
    let aws = format!("{AWS_PORT}: \"8080\", {AWS_PROTO}: HTTP");
    assert_eq!(
        ports(&svc("", &aws).expect("s")),
        [p("UDP", 1), p("TCP", 8080)]
    );
    let s = svc(
        "",
        &format!("{aws}, stunner.l7mp.io/disable-health-check-expose: \"true\""),
    )
    .expect("s");
    assert_eq!(ports(&s), [p("UDP", 1)]);
    let doc = "service.beta.kubernetes.io/do-loadbalancer-healthcheck-port: \"8080\", service.beta.kubernetes.io/do-loadbalancer-healthcheck-protocol: HTTP";
    let s = svc("", doc).expect("s");
    assert_eq!(ports(&s), [p("UDP", 1), p("TCP", 8080)]);
    assert_eq!(s.spec.port("gateway-health-check").expect("hc").port, 8080);
    assert_eq!(
        ports(&svc("", &format!("{AWS_PORT}: eighty, {AWS_PROTO}: HTTP")).expect("s")),
        [p("UDP", 1)]
    );
    assert_eq!(
        ports(&svc("", &format!("{AWS_PORT}: \"8080\", {AWS_PROTO}: UDP")).expect("s")),
        [p("UDP", 1)]
    );
    let s = svc(
        &format!("{AWS_PROTO}: HTTP"),
        &format!("{AWS_PORT}: \"8080\", {AWS_PROTO}: UDP"),
    )
    .expect("s");
    assert_eq!(ports(&s), [p("UDP", 1), p("TCP", 8080)]);
}

#[test]
fn s6_11_26_gateway_annotations_win() {
    let s = svc(
        "test: testval, dummy: something-else, extra: extraval",
        "test: testval, dummy: dummyval",
    )
    .expect("s");
    let a = &s.metadata.annotations;
    assert_eq!(a.len(), 4);
    assert_eq!(
        (a["test"].as_str(), a["dummy"].as_str(), a["extra"].as_str()),
        ("testval", "something-else", "extraval")
    );
}

const TYPE: &str = "stunner.l7mp.io/service-type";

#[test]
fn s6_11_28_to_33_service_types() {
    let aws = format!("{AWS_PORT}: \"8080\", {AWS_PROTO}: HTTP");
    let cases = [
        (String::new(), String::new(), "LoadBalancer", 1),
        (
            String::new(),
            format!("{TYPE}: ClusterIP, {aws}"),
            "ClusterIP",
            1,
        ),
        (
            String::new(),
            format!("{TYPE}: NodePort, {aws}"),
            "NodePort",
            1,
        ),
        (format!("{TYPE}: ClusterIP"), String::new(), "ClusterIP", 1),
        (
            format!("{TYPE}: NodePort"),
            format!("{TYPE}: ClusterIP"),
            "NodePort",
            1,
        ),
        (format!("{TYPE}: NodePort"), aws.clone(), "NodePort", 1),
    ];
    for (gw, gc, want, nports) in cases {
        let s = svc(&gw, &gc).expect("svc");
        assert_eq!(s.spec.service_type, want, "{gw} / {gc}");
        assert_eq!(
            s.spec.ports.len(),
            nports,
            "{gw} / {gc}: no health-check port off LoadBalancers"
        );
    }
}

#[test]
fn s6_11_34_35_affinity_and_addresses() {
    let s = svc("stunner.l7mp.io/disable-session-affinity: \"true\"", "").expect("s");
    assert_eq!(s.spec.session_affinity, "None");
    assert_eq!(
        (s.metadata.name.as_str(), s.metadata.namespace.as_str()),
        ("gateway-1", NS)
    );
    let s = svc_listeners(
        TWO,
        "",
        "",
        "  addresses: [{type: IPAddress, value: 1.1.1.1}, {type: IPAddress, value: 1.2.3.4}]\n",
    )
    .expect("s");
    assert_eq!(s.spec.load_balancer_ip.as_deref(), Some("1.1.1.1"));
    assert_eq!(s.spec.external_ips, ["1.1.1.1"]);
}

#[test]
fn s6_11_36_to_39_external_traffic_policy() {
    const ETP: &str = "stunner.l7mp.io/external-traffic-policy";
    let cases = [
        (String::new(), format!("{ETP}: local"), Some("Local")),
        (
            format!("{ETP}: local"),
            format!("{ETP}: dummy"),
            Some("Local"),
        ),
        (
            format!("{ETP}: local, {TYPE}: ClusterIP"),
            String::new(),
            None,
        ),
        (format!("{ETP}: dummy"), format!("{ETP}: local"), None),
    ];
    for (gw, gc, want) in cases {
        assert_eq!(
            svc(&gw, &gc)
                .expect("s")
                .spec
                .external_traffic_policy
                .as_deref(),
            want,
            "{gw} / {gc}"
        );
    }
}

#[test]
fn s6_11_40_port_annotation_parser() {
    let m = parse_port_map(r#"{"force-np1":1,"force-np2":2,"force-np3":1000}"#).expect("ok");
    assert_eq!(m.len(), 3);
    assert_eq!(
        parse_port_map(r#""force-np1":1,"force-np2":2"#).expect("ok")["force-np2"],
        2
    );
    assert!(parse_port_map("{}").expect("ok").is_empty());
    assert!(parse_port_map("").expect("ok").is_empty());
    for bad in [r#"["force-np1":1"#, r#""dummy""#, r#"{"a":{"b":1}}"#] {
        assert!(parse_port_map(bad).is_err(), "{bad}");
    }
}

const NP_LISTENERS: &str = "[{name: random-np, port: 1, protocol: TURN-UDP}, {name: force-np1, port: 2, protocol: TURN-UDP}, {name: force-np2, port: 3, protocol: TURN-UDP}]";

#[test]
fn s6_11_41_to_44_nodeport_and_targetport_annotations() {
    for key in ["nodeport", "targetport"] {
        let good = format!(
            "stunner.l7mp.io/{key}: '{{\"force-np1\":101,\"force-np2\":102,\"force-np3\":103}}'"
        );
        let bad = format!("stunner.l7mp.io/{key}: '{{\"force-np1\": [}}'");
        for (gw, gc) in [(String::new(), good.clone()), (good.clone(), bad)] {
            let s = svc_listeners(NP_LISTENERS, &gw, &gc, "").expect("svc");
            let got: Vec<Option<i64>> = s
                .spec
                .ports
                .iter()
                .map(|p| {
                    if key == "nodeport" {
                        p.node_port
                    } else {
                        p.target_port.as_ref().and_then(|v| v.as_i64())
                    }
                })
                .collect();
            assert_eq!(got, [None, Some(101), Some(102)], "{key}: {gw} / {gc}");
        }
    }
}

#[test]
fn s6_11_45_existing_service_ports_are_kept_by_name() {
    let existing = "apiVersion: v1\nkind: Service\nmetadata: {name: gateway-1, namespace: testnamespace, labels: {keep: me}}\n\
                    spec:\n  type: LoadBalancer\n  ports:\n\
                    \x20 - {name: gateway-1-listener-udp, protocol: UDP, port: 1, nodePort: 30001, targetPort: 1}\n\
                    \x20 - {name: dummy, protocol: TCP, port: 123}\n";
    let gw = gw_with(TWO, &format!("{MIXED}: \"true\""), "");
    let out = run(&[(GATEWAY, &gw)], &[existing]);
    let s = out.service(NS, "gateway-1").expect("svc");
    assert_eq!(s.spec.ports.len(), 2);
    let u = &s.spec.ports[0];
    assert_eq!(
        (u.node_port, u.target_port.as_ref().and_then(|v| v.as_i64())),
        (Some(30001), Some(1))
    );
    let t = &s.spec.ports[1];
    assert_eq!(
        (t.name.as_str(), t.node_port, t.target_port.is_none()),
        ("gateway-1-listener-tcp", None, true)
    );
    assert_eq!(s.metadata.labels["keep"], "me", "existing labels kept");
}

#[test]
fn s6_11_46_existing_service_annotations() {
    const ETP: &str = "stunner.l7mp.io/external-traffic-policy";
    const DIS: &str = "stunner.l7mp.io/disable-managed-dataplane";
    let existing = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: gateway-1\n  namespace: testnamespace\n  annotations:\n\
         \x20   {ETP}: old\n    {DIS}: old\n    stunner.l7mp.io/nodeport: '{{}}'\n    other.io/keep: yes\nspec: {{type: LoadBalancer}}\n"
    );
    let gw = gw_with(
        TWO,
        &format!("{ETP}: local, {DIS}: \"false\", {MIXED}: \"true\""),
        "",
    );
    let out = run(&[(GATEWAY, &gw)], &[&existing]);
    let a = &out
        .service(NS, "gateway-1")
        .expect("svc")
        .metadata
        .annotations;
    assert_eq!(
        (a[ETP].as_str(), a[DIS].as_str(), a[MIXED].as_str()),
        ("local", "false", "true")
    );
    assert!(
        !a.contains_key("stunner.l7mp.io/nodeport"),
        "our stale key removed"
    );
    assert_eq!(a["other.io/keep"], "yes", "foreign keys kept");
}
