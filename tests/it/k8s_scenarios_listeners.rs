//! Upstream operator unit-test scenarios (spec 6.6, 6.7): listener rendering, TLS, route
//! attachment and route parent statuses. Scenario numbers refer to the spec.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::config::ListenerProtocol;

const ID: &str = "testnamespace/gateway-1";
const NS: &str = "testnamespace";
const UDP: &str = "testnamespace/gateway-1/gateway-1-listener-udp";
const TCP: &str = "testnamespace/gateway-1/gateway-1-listener-tcp";

fn swap(old: &str, new: &str) -> Vec<String> {
    upstream()
        .into_iter()
        .map(|p| {
            if p == old {
                new.to_string()
            } else {
                p.to_string()
            }
        })
        .collect()
}

fn run(p: &[String]) -> stunnerd::k8s::RenderOutput {
    render(&p.iter().map(String::as_str).collect::<Vec<_>>())
}

fn gw_listeners(listeners: &str) -> String {
    GATEWAY.replace(
        "  - {name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP}\n  - {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}\n",
        listeners,
    )
}

// --- 6.6 Listener rendering ------------------------------------------------------------------------

#[test]
fn s6_6_1_3_4_fixture_listeners() {
    let out = render(&upstream());
    let c = config(&out, ID);
    let u = listener(c, UDP);
    assert_eq!(
        (u.protocol, u.public_address.as_str(), u.public_port),
        (ListenerProtocol::TurnUdp, "1.2.3.4", 1)
    );
    assert_eq!(u.routes, ["testnamespace/udproute-ok"]);
    let t = listener(c, TCP);
    assert_eq!(
        (t.protocol, t.public_address.as_str(), t.public_port),
        (ListenerProtocol::TurnTcp, "1.2.3.4", 2)
    );
    assert!(t.routes.is_empty());
}

#[test]
fn s6_6_2_5_dummy_protocol() {
    let gw = gw_listeners(
        "  - {name: gateway-1-listener-udp, port: 1, protocol: dummy}\n  - {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}\n",
    );
    let out = run(&swap(GATEWAY, &gw));
    let c = config(&out, ID);
    assert!(c.listener(UDP).is_none());
    assert_eq!(c.listeners.len(), 1);
    // The route still attaches (through sectionName) even though the listener is not rendered.
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "udproute-ok")[0][0],
        "Accepted/True/Accepted"
    );
}

const TLS_LISTENERS: &str = "  - {name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP}
  - {name: tls, port: 3, protocol: TURN-TLS, tls: {certificateRefs: [REFS]}}
  - {name: dtls, port: 4, protocol: TURN-DTLS, tls: {mode: Terminate, certificateRefs: [REFS]}}
";

fn tls_case(refs: &str, extra: &[&str]) -> stunnerd::k8s::RenderOutput {
    let gw = gw_listeners(&TLS_LISTENERS.replace("REFS", refs));
    let mut p = swap(GATEWAY, &gw);
    p.extend(extra.iter().map(|s| s.to_string()));
    run(&p)
}

#[test]
fn s6_6_6_to_8_11_12_tls_certificates() {
    let cases: [(&str, String); 4] = [
        (
            "{name: testsecret-ok, namespace: testnamespace}",
            String::new(),
        ),
        ("{name: testsecret-ok}", String::new()),
        (
            "{group: \"\", kind: Secret, name: opaque}",
            TLS_SECRET
                .replace("testsecret-ok", "opaque")
                .replace("type: kubernetes.io/tls", "type: Opaque"),
        ),
        (
            "{name: typeless}",
            TLS_SECRET
                .replace("testsecret-ok", "typeless")
                .replace("type: kubernetes.io/tls\n", ""),
        ),
    ];
    for (refs, extra) in cases {
        let out = tls_case(refs, &[&extra]);
        let c = config(&out, ID);
        assert!(listener(c, UDP).cert.is_empty());
        for l in [
            "testnamespace/gateway-1/tls",
            "testnamespace/gateway-1/dtls",
        ] {
            let l = listener(c, l);
            assert_eq!(
                (l.cert.as_str(), l.key.as_str()),
                ("dGVzdGNlcnQ=", "dGVzdGtleQ=="),
                "{refs}"
            );
        }
    }
}

#[test]
fn s6_6_9_13_14_unusable_certificates() {
    let only_crt = "apiVersion: v1\nkind: Secret\nmetadata: {name: crt, namespace: testnamespace}\ndata: {tls.crt: dGVzdGNlcnQ=}";
    let only_key = "apiVersion: v1\nkind: Secret\nmetadata: {name: key, namespace: testnamespace}\ndata: {tls.key: dGVzdGtleQ==}";
    for refs in ["{name: missing}", "{name: crt}", "{name: key}"] {
        let out = tls_case(refs, &[only_crt, only_key]);
        let c = config(&out, ID);
        assert_eq!(c.listeners.len(), 1, "{refs}: only the UDP listener");
        for l in ["tls", "dtls"] {
            assert_eq!(
                lcond(&out, NS, "gateway-1", l, "ResolvedRefs"),
                "ResolvedRefs/False/InvalidCertificateRef"
            );
            assert_eq!(
                lcond(&out, NS, "gateway-1", l, "Accepted"),
                "Accepted/True/Accepted"
            );
        }
    }
}

#[test]
fn s6_6_10_passthrough_is_refused() {
    let gw = gw_listeners(
        "  - {name: tls, port: 3, protocol: TURN-TLS, tls: {mode: Passthrough, certificateRefs: [{name: testsecret-ok}]}}\n",
    );
    let out = run(&swap(GATEWAY, &gw));
    assert!(config(&out, ID).listeners.is_empty());
    assert_eq!(
        lcond(&out, NS, "gateway-1", "tls", "Accepted"),
        "Accepted/False/UnsupportedValue"
    );
}

#[test]
fn s6_6_15_16_alternative_keys_and_first_usable_ref() {
    let alt = "apiVersion: v1\nkind: Secret\nmetadata: {name: alt, namespace: testnamespace}\nstringData: {cert: C, key: K}";
    let empty = "apiVersion: v1\nkind: Secret\nmetadata: {name: empty, namespace: testnamespace}\nstringData: {other: x}";
    let out = tls_case("{name: alt}", &[alt]);
    assert_eq!(
        listener(config(&out, ID), "testnamespace/gateway-1/tls").cert,
        "Qw=="
    );
    let out = tls_case(
        "{name: missing}, {name: empty}, {name: testsecret-ok}",
        &[empty],
    );
    assert_eq!(
        listener(config(&out, ID), "testnamespace/gateway-1/tls").cert,
        "dGVzdGNlcnQ="
    );
}

// --- 6.7 Route attachment and route status ----------------------------------------------------------

fn route(name: &str, ns: &str, parent_refs: &str) -> String {
    format!(
        "apiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  parentRefs: {parent_refs}\n  rules: [{{backendRefs: [{{name: testservice-ok, namespace: testnamespace}}]}}]\n"
    )
}

const DUMMY_NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: dummy-namespace, labels: {dummy-label: dummy-value}}";

#[test]
fn s6_7_1_2_parent_ref_matching() {
    let mut p: Vec<String> = upstream().iter().map(|s| s.to_string()).collect();
    p.push(route(
        "r-ns",
        NS,
        "[{name: gateway-1, namespace: dummy-ns}]",
    ));
    p.push(route("r-nons", NS, "[{name: gateway-1}]"));
    p.push(route("r-kind", NS, "[{name: gateway-1, kind: dummy-kind}]"));
    p.push(route(
        "r-group",
        NS,
        "[{name: gateway-1, group: dummy-kind}]",
    ));
    let out = run(&p);
    assert_eq!(
        listener(config(&out, ID), UDP).routes,
        ["testnamespace/r-nons", "testnamespace/udproute-ok"]
    );
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "r-kind")[0][0],
        "Accepted/False/NotAllowedByListeners"
    );
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "r-ns")[0][0],
        "Accepted/False/NoMatchingParent"
    );
}

#[test]
fn s6_7_3_4_v1alpha2_routes_and_masking() {
    let v1a2 = ROUTE.replace("stunner.l7mp.io/v1", "gateway.networking.k8s.io/v1alpha2");
    let other = v1a2.replace("name: udproute-ok,", "name: udproute-ok-v1a2,");
    let out = render(&[upstream(), vec![other.as_str()]].concat());
    assert_eq!(
        listener(config(&out, ID), UDP).routes,
        [
            "testnamespace/udproute-ok",
            "testnamespace/udproute-ok-v1a2"
        ]
    );
    let out = render(&[upstream(), vec![v1a2.as_str()]].concat());
    assert_eq!(
        listener(config(&out, ID), UDP).routes,
        ["testnamespace/udproute-ok"]
    );
    assert_eq!(
        rconds(&out, "UDPRoute/v1alpha2", NS, "udproute-ok")[0][0],
        "Accepted/False/Pending"
    );
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "udproute-ok")[0][0],
        "Accepted/True/Accepted"
    );
    let msg = &status(&out, "UDPRoute/v1alpha2", NS, "udproute-ok")
        .route()
        .expect("r")
        .parents[0]
        .condition("Accepted")
        .expect("c")
        .message;
    assert_eq!(msg, "GwAPI.v1 UDPRoute masked by a STUNnerV1 UDPRoute");
}

#[test]
fn s6_7_5_all_vs_same() {
    let gw = gw_listeners(
        "  - {name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP, allowedRoutes: {namespaces: {from: All}}}\n  - {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}\n",
    );
    let mut p = swap(GATEWAY, &gw);
    p.retain(|x| x != ROUTE);
    p.push(route("local", NS, "[{name: gateway-1}]"));
    p.push(route(
        "remote",
        "dummy-namespace",
        "[{name: gateway-1, namespace: testnamespace}]",
    ));
    p.push(DUMMY_NS.into());
    let out = run(&p);
    let c = config(&out, ID);
    assert_eq!(
        listener(c, UDP).routes,
        ["dummy-namespace/remote", "testnamespace/local"]
    );
    assert_eq!(listener(c, TCP).routes, ["testnamespace/local"]);
}

#[test]
fn s6_7_6_12_selectors() {
    let gw = gw_listeners(
        "  - {name: l1, port: 1, protocol: TURN-UDP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {testlabel: testvalue}}}}}\n\
         \x20 - {name: l2, port: 2, protocol: dummy}\n\
         \x20 - {name: l3, port: 3, protocol: TURN-UDP, allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: dummy-label, operator: In, values: [dummy-value]}]}}}}\n",
    );
    let mut p = swap(GATEWAY, &gw);
    p.retain(|x| x != ROUTE);
    p.push(route("local", NS, "[{name: gateway-1}]"));
    p.push(route(
        "remote",
        "dummy-namespace",
        "[{name: gateway-1, namespace: testnamespace}]",
    ));
    p.push(DUMMY_NS.into());
    let out = run(&p);
    let c = config(&out, ID);
    assert_eq!(
        listener(c, "testnamespace/gateway-1/l1").routes,
        ["testnamespace/local"]
    );
    assert_eq!(
        listener(c, "testnamespace/gateway-1/l3").routes,
        ["dummy-namespace/remote"]
    );
    // A selector listener needs the route's Namespace object; without it nothing matches.
    let mut p2 = p.clone();
    p2.retain(|x| x != DUMMY_NS);
    let out = run(&p2);
    assert!(
        listener(config(&out, ID), "testnamespace/gateway-1/l3")
            .routes
            .is_empty()
    );
}

#[test]
fn s6_7_7_to_10_section_names() {
    let mut p: Vec<String> = upstream().iter().map(|s| s.to_string()).collect();
    p.push(route(
        "udp-section",
        NS,
        "[{name: gateway-1, sectionName: gateway-1-listener-udp}]",
    ));
    p.push(route(
        "tcp-section",
        NS,
        "[{name: gateway-1, sectionName: gateway-1-listener-tcp}]",
    ));
    p.push(route(
        "dummy-section",
        NS,
        "[{name: gateway-1, sectionName: dummy}]",
    ));
    p.push(route(
        "three",
        NS,
        "[{name: gateway-1, sectionName: gateway-1-listener-udp}, {name: gateway-1, sectionName: gateway-1-listener-tcp}, {name: gateway-1, sectionName: dummy}]",
    ));
    let out = run(&p);
    let c = config(&out, ID);
    assert_eq!(
        listener(c, UDP).routes,
        [
            "testnamespace/three",
            "testnamespace/udp-section",
            "testnamespace/udproute-ok"
        ],
        "each route once"
    );
    assert_eq!(
        listener(c, TCP).routes,
        ["testnamespace/tcp-section", "testnamespace/three"]
    );
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "dummy-section")[0][0],
        "Accepted/False/NotAllowedByListeners"
    );
}

#[test]
fn s6_7_11_short_protocol_with_all() {
    let gw = gw_listeners(
        "  - {name: gateway-1-listener-udp, port: 1, protocol: UDP, allowedRoutes: {namespaces: {from: All}}}\n  - {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}\n",
    );
    let mut p = swap(GATEWAY, &gw);
    p.retain(|x| x != ROUTE);
    p.push(route(
        "ru",
        "dummy-namespace",
        "[{name: gateway-1, namespace: testnamespace, sectionName: gateway-1-listener-udp}]",
    ));
    p.push(route(
        "rt",
        "dummy-namespace",
        "[{name: gateway-1, namespace: testnamespace, sectionName: gateway-1-listener-tcp}]",
    ));
    let out = run(&p);
    let c = config(&out, ID);
    assert_eq!(listener(c, UDP).routes, ["dummy-namespace/ru"]);
    assert_eq!(listener(c, UDP).protocol, ListenerProtocol::TurnUdp);
    assert!(listener(c, TCP).routes.is_empty());
}

#[test]
fn s6_7_13_14_15_parent_statuses() {
    let mut p: Vec<String> = upstream().iter().map(|s| s.to_string()).collect();
    p.retain(|x| x != ROUTE);
    p.push(route(
        "udproute-ok",
        NS,
        "[{name: gateway-1, sectionName: gateway-1-listener-udp}, {name: gateway-1, sectionName: dummy}, {name: dummy}]",
    ));
    let out = run(&p);
    let conds = rconds(&out, "UDPRoute", NS, "udproute-ok");
    assert_eq!(
        conds[0],
        ["Accepted/True/Accepted", "ResolvedRefs/True/ResolvedRefs"]
    );
    assert_eq!(conds[1][0], "Accepted/False/NotAllowedByListeners");
    assert_eq!(conds[2][0], "Accepted/False/NoMatchingParent");
    let st = status(&out, "UDPRoute", NS, "udproute-ok")
        .route()
        .expect("r");
    let p0 = &st.parents[0];
    assert_eq!(p0.controller_name, "stunner.l7mp.io/gateway-operator");
    assert_eq!(
        (
            p0.parent_ref.name.as_str(),
            p0.parent_ref.section_name.as_deref()
        ),
        ("gateway-1", Some("gateway-1-listener-udp"))
    );
    assert!(
        p0.parent_ref.group.is_none()
            && p0.parent_ref.kind.is_none()
            && p0.parent_ref.namespace.is_none()
    );
    assert_eq!(
        p0.condition("Accepted").expect("c").message,
        "parent testnamespace/gateway-1 accepted the route"
    );
    assert_eq!(
        st.parents[2].condition("Accepted").expect("c").message,
        "parent testnamespace/dummy does not exist"
    );
}

#[test]
fn s6_7_16_17_cross_namespace_acceptance() {
    let all = gw_listeners(
        "  - {name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP, allowedRoutes: {namespaces: {from: All}}}\n",
    );
    let r = route(
        "x",
        "dummy-namespace",
        "[{name: gateway-1, namespace: testnamespace}]",
    );
    let mut p = swap(GATEWAY, &all);
    p.push(r.clone());
    assert_eq!(
        rconds(&run(&p), "UDPRoute", "dummy-namespace", "x")[0][0],
        "Accepted/True/Accepted"
    );
    let mut p: Vec<String> = upstream().iter().map(|s| s.to_string()).collect();
    p.push(r);
    let out = run(&p);
    assert_eq!(
        rconds(&out, "UDPRoute", "dummy-namespace", "x")[0][0],
        "Accepted/False/NotAllowedByListeners"
    );
    assert!(has_error(
        &out,
        "UDPRoute dummy-namespace/x",
        "do not admit routes from namespace \"dummy-namespace\""
    ));
}

#[test]
fn s6_7_18_19_backend_not_found() {
    let r = ROUTE.replace("{name: testservice-ok}", "{name: dummy-svc}");
    let out = run(&swap(ROUTE, &r));
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "udproute-ok")[0],
        [
            "Accepted/True/Accepted",
            "ResolvedRefs/False/BackendNotFound"
        ]
    );
    let r = ROUTE.replace(
        "{name: testservice-ok}",
        "{group: stunner.l7mp.io, kind: StaticService, name: missing}, {group: stunner.l7mp.io, kind: StaticService, name: teststaticservice-ok}",
    );
    let out = run(&swap(ROUTE, &r));
    assert_eq!(
        rconds(&out, "UDPRoute", NS, "udproute-ok")[0][1],
        "ResolvedRefs/False/BackendNotFound"
    );
    // The existing StaticService still counts (upstream's Q-skip would drop it).
    assert_eq!(
        cluster(config(&out, ID), "testnamespace/udproute-ok")
            .endpoints
            .len(),
        3
    );
}
