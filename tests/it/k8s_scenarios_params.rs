//! Upstream operator unit-test scenarios (spec 6.2-6.5): admin, auth, GatewayClass and
//! GatewayConfig selection, Gateway statuses. Scenario numbers refer to the spec.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::config::AuthType;

const ID: &str = "testnamespace/gateway-1";
const NS: &str = "testnamespace";

fn with_config_spec(spec: &str) -> String {
    CONFIG.replace(
        "spec: {realm: testrealm, authType: static, userName: testuser, password: testpass, logLevel: testloglevel}",
        spec,
    )
}

fn pieces_with(replace: &str, by: &str) -> Vec<String> {
    upstream()
        .into_iter()
        .map(|p| {
            if p == replace {
                by.to_string()
            } else {
                p.to_string()
            }
        })
        .collect()
}

fn run(pieces: &[String]) -> stunnerd::k8s::RenderOutput {
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    render(&refs)
}

// --- 6.2 Admin -----------------------------------------------------------------------------------

#[test]
fn s6_2_1_legacy_admin() {
    let out = render_legacy(&upstream());
    let c = &out.configs[0];
    assert_eq!(c.admin.name, "stunner-daemon");
    assert_eq!(c.admin.loglevel, "testloglevel");
    assert_eq!(c.admin.metrics_endpoint, "");
    assert_eq!(
        c.admin.healthcheck_endpoint.as_deref(),
        Some("http://:8086")
    );
}

#[test]
fn s6_2_2_managed_admin_default_dataplane() {
    let out = render(&upstream());
    let a = &config(&out, ID).admin;
    assert_eq!(a.name, ID);
    assert_eq!(a.loglevel, "testloglevel");
    assert_eq!(a.metrics_endpoint, "");
    assert_eq!(a.healthcheck_endpoint.as_deref(), Some("http://:8086"));
    assert_eq!(a.offload_engine, "None");
    assert!(a.offload_interfaces.is_empty());
}

#[test]
fn s6_2_3_metrics_on_health_off_default_loglevel() {
    let mut p = pieces_with(
        CONFIG,
        &with_config_spec("spec: {realm: testrealm, userName: testuser, password: testpass}"),
    );
    p.retain(|x| x != DATAPLANE);
    p.push(DATAPLANE.replace(
        "hostNetwork: true",
        "hostNetwork: true\n  enableMetricsEndpoint: true\n  disableHealthCheck: true",
    ));
    let out = run(&p);
    let a = &config(&out, ID).admin;
    assert_eq!(a.loglevel, "all:INFO");
    assert_eq!(a.metrics_endpoint, "http://:8080/metrics");
    assert_eq!(a.healthcheck_endpoint.as_deref(), Some(""));
}

#[test]
fn s6_2_4_offload() {
    let p = pieces_with(
        DATAPLANE,
        &DATAPLANE.replace(
            "hostNetwork: true",
            "hostNetwork: true\n  offloadEngine: xdp\n  offloadInterfaces: [lo, eth0]",
        ),
    );
    let out = run(&p);
    let a = &config(&out, ID).admin;
    assert_eq!(a.offload_engine, "XDP");
    assert_eq!(a.offload_interfaces, ["eth0", "lo"]);
    // An unknown engine is a schema violation of the Dataplane.
    let p = pieces_with(
        DATAPLANE,
        &DATAPLANE.replace(
            "hostNetwork: true",
            "hostNetwork: true\n  offloadEngine: ebpf",
        ),
    );
    let out = run(&p);
    assert!(out.errors().any(|f| f.path == "spec.offloadEngine"));
    assert!(out.configs.is_empty(), "no Dataplane, no managed config");
}

// --- 6.3 Auth ------------------------------------------------------------------------------------

fn auth_case(spec: &str) -> stunnerd::k8s::RenderOutput {
    run(&pieces_with(CONFIG, &with_config_spec(spec)))
}

#[test]
fn s6_3_auth_table() {
    type Creds = &'static [(&'static str, &'static str)];
    let ok: [(&str, AuthType, &str, Creds); 9] = [
        (
            "spec: {realm: testrealm, authType: static, userName: testuser, password: testpass}",
            AuthType::Static,
            "testrealm",
            &[("password", "testpass"), ("username", "testuser")],
        ),
        (
            "spec: {realm: dummy, authType: ephemeral, sharedSecret: dummy}",
            AuthType::Ephemeral,
            "dummy",
            &[("secret", "dummy")],
        ),
        (
            "spec: {authType: static, userName: u2, password: p2}",
            AuthType::Static,
            "stunner.l7mp.io",
            &[("password", "p2"), ("username", "u2")],
        ),
        (
            "spec: {authType: timewindowed, sharedSecret: s}",
            AuthType::Ephemeral,
            "stunner.l7mp.io",
            &[("secret", "s")],
        ),
        (
            "spec: {authType: longterm, sharedSecret: s}",
            AuthType::Ephemeral,
            "stunner.l7mp.io",
            &[("secret", "s")],
        ),
        // 10: authRef, inline removed.
        (
            "spec: {realm: testrealm, authRef: {name: testauthsecret-ok, namespace: testnamespace}}",
            AuthType::Static,
            "testrealm",
            &[("password", "ext-testpass"), ("username", "ext-testuser")],
        ),
        // 15: no namespace: the GatewayConfig's.
        (
            "spec: {authRef: {name: testauthsecret-ok}}",
            AuthType::Static,
            "stunner.l7mp.io",
            &[("password", "ext-testpass"), ("username", "ext-testuser")],
        ),
        // 16: external wins over inline.
        (
            "spec: {authRef: {name: testauthsecret-ok}, authType: ephemeral, sharedSecret: inline}",
            AuthType::Static,
            "stunner.l7mp.io",
            &[("password", "ext-testpass"), ("username", "ext-testuser")],
        ),
        (
            "spec: {authRef: {group: v1, kind: Secret, name: testauthsecret-ok}}",
            AuthType::Static,
            "stunner.l7mp.io",
            &[("password", "ext-testpass"), ("username", "ext-testuser")],
        ),
    ];
    for (spec, t, realm, creds) in ok {
        let out = auth_case(spec);
        let a = &config(&out, ID).auth;
        assert_eq!((a.auth_type, a.realm.as_str()), (t, realm), "{spec}");
        let got: Vec<(&str, &str)> = a
            .credentials
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, creds, "{spec}");
    }
    let bad = [
        "spec: {authType: dummy, userName: u, password: p}", // 3
        "spec: {authType: static, password: p}",             // 4
        "spec: {authType: static, userName: u}",             // 5
        "spec: {authType: ephemeral}",                       // 7
        "spec: {authRef: {group: dummy-group, name: testauthsecret-ok}}", // 12
        "spec: {authRef: {kind: dummy-kind, name: testauthsecret-ok}}", // 13
        "spec: {authRef: {name: nonexistent}}",              // 14
        "spec: {authRef: {name: nonexistent}, password: testpass}", // 17
    ];
    for spec in bad {
        let out = auth_case(spec);
        assert!(out.config(ID).is_none(), "{spec}");
        assert!(out.has_errors(), "{spec}");
    }
}

#[test]
fn s6_3_11_auth_secret_ephemeral() {
    let secret = AUTH_SECRET.replace("stringData: {", "stringData: {type: ephemeral, ");
    let mut p = pieces_with(
        CONFIG,
        &with_config_spec("spec: {authRef: {name: testauthsecret-ok}}"),
    );
    p.retain(|x| x != AUTH_SECRET);
    p.push(secret);
    let out = run(&p);
    let a = &config(&out, ID).auth;
    assert_eq!(a.auth_type, AuthType::Ephemeral);
    assert_eq!(a.credentials["secret"], "ext-secret");
}

// --- 6.4 GatewayClass / GatewayConfig --------------------------------------------------------------

#[test]
fn s6_4_1_no_gatewayclass() {
    let mut p: Vec<String> = upstream().iter().map(|s| s.to_string()).collect();
    p.retain(|x| x != CLASS);
    let out = run(&p);
    assert!(out.configs.is_empty() && out.statuses.iter().all(|s| s.kind == "UDPRoute"));
}

#[test]
fn s6_4_2_two_valid_classes() {
    let class2 = CLASS.replace("gatewayclass-ok", "gatewayclass-2");
    let gw2 = GATEWAY.replace("gateway-1", "gateway-2").replace(
        "gatewayClassName: gatewayclass-ok",
        "gatewayClassName: gatewayclass-2",
    );
    let mut p = upstream();
    p.extend([class2.as_str(), gw2.as_str()]);
    let out = render(&p);
    assert!(out.config(ID).is_some());
    assert!(out.config("testnamespace/gateway-2").is_some());
    assert_eq!(
        cond(&out, "GatewayClass", "", "gatewayclass-2", "Accepted"),
        "Accepted/True/Accepted"
    );
}

#[test]
fn s6_4_3_to_8_and_14_rejected_classes() {
    let pr = "parametersRef: {group: stunner.l7mp.io, kind: GatewayConfig, name: gatewayconfig-ok, namespace: testnamespace}";
    let cases = [
        (
            "parametersRef: {group: dummy, kind: GatewayConfig, name: gatewayconfig-ok, namespace: testnamespace}",
            "spec.parametersRef.group",
        ),
        (
            "parametersRef: {group: stunner.l7mp.io, kind: GatewayConfig, name: \"\", namespace: testnamespace}",
            "spec.parametersRef.name",
        ),
        (
            "parametersRef: {group: stunner.l7mp.io, kind: GatewayConfig, name: gatewayconfig-ok}",
            "spec.parametersRef.namespace",
        ),
        (
            "parametersRef: {group: stunner.l7mp.io, kind: GatewayConfig, name: gatewayconfig-ok, namespace: \"\"}",
            "spec.parametersRef.namespace",
        ),
        (
            "parametersRef: {group: stunner.l7mp.io, kind: test, name: gatewayconfig-ok, namespace: testnamespace}",
            "spec.parametersRef.kind",
        ),
        ("description: no parametersRef", "spec.parametersRef"),
    ];
    for (repl, path) in cases {
        let out = run(&pieces_with(CLASS, &CLASS.replace(pr, repl)));
        assert!(out.configs.is_empty(), "{repl}");
        assert_eq!(
            cond(&out, "GatewayClass", "", "gatewayclass-ok", "Accepted"),
            "Accepted/False/InvalidParameters",
            "{repl}"
        );
        assert!(
            out.errors().any(|f| f.path == path),
            "{repl}: {:#?}",
            out.findings
        );
    }
    // 3: another controller: ignored without status.
    let out = run(&pieces_with(
        CLASS,
        &CLASS.replace("gateway-operator", "other"),
    ));
    assert!(out.status("GatewayClass", "", "gatewayclass-ok").is_none());
}

#[test]
fn s6_4_9_to_11_class_status_and_generation() {
    let out = render(&upstream());
    let st = status(&out, "GatewayClass", "", "gatewayclass-ok");
    assert_eq!(st.conditions().len(), 1);
    let c = &st.conditions()[0];
    assert_eq!(
        (c.summary().as_str(), c.observed_generation),
        ("Accepted/True/Accepted", 0)
    );
    assert_eq!(
        c.message,
        "GatewayClass is now managed by controller \"stunner.l7mp.io/gateway-operator\""
    );
    let out = run(&pieces_with(
        CLASS,
        &CLASS.replace(
            "metadata: {name: gatewayclass-ok}",
            "metadata: {name: gatewayclass-ok, generation: 1}",
        ),
    ));
    assert_eq!(
        status(&out, "GatewayClass", "", "gatewayclass-ok").conditions()[0].observed_generation,
        1
    );
}

#[test]
fn s6_4_12_13_15_gatewayconfig_not_found() {
    for (from, to) in [
        ("namespace: testnamespace}", "namespace: elsewhere}"),
        ("name: gatewayconfig-ok, namespace", "name: test, namespace"),
    ] {
        let out = run(&pieces_with(CLASS, &CLASS.replace(from, to)));
        let st = status(&out, "GatewayClass", "", "gatewayclass-ok");
        let c = st.condition("Accepted").expect("c");
        assert_eq!(c.summary(), "Accepted/False/InvalidParameters");
        assert!(
            c.message.contains("No GatewayConfig found for name: "),
            "{}",
            c.message
        );
    }
}

// --- 6.5 Gateway statuses ------------------------------------------------------------------------

#[test]
fn s6_5_1_2_gateway_selection_by_class() {
    let gw2 = GATEWAY.replace("gateway-1", "gateway-2");
    let gw3 = GATEWAY.replace("gateway-1", "gateway-3").replace(
        "gatewayClassName: gatewayclass-ok",
        "gatewayClassName: dummy",
    );
    let mut p = upstream();
    p.extend([gw2.as_str(), gw3.as_str()]);
    let out = render(&p);
    assert!(out.config(ID).is_some() && out.config("testnamespace/gateway-2").is_some());
    assert!(out.config("testnamespace/gateway-3").is_none());
    assert!(out.status("Gateway", NS, "gateway-3").is_none());
}

#[test]
fn s6_5_4_5_listener_statuses_and_generation() {
    let p = pieces_with(
        GATEWAY,
        &GATEWAY.replace("uid: gw-1-uid,", "uid: gw-1-uid, generation: 1,"),
    );
    let out = run(&p);
    let st = status(&out, "Gateway", NS, "gateway-1");
    assert!(st.conditions().iter().all(|c| c.observed_generation == 1));
    for l in ["gateway-1-listener-udp", "gateway-1-listener-tcp"] {
        assert_eq!(
            lcond(&out, NS, "gateway-1", l, "Accepted"),
            "Accepted/True/Accepted"
        );
        assert_eq!(
            lcond(&out, NS, "gateway-1", l, "ResolvedRefs"),
            "ResolvedRefs/True/ResolvedRefs"
        );
        assert_eq!(
            lcond(&out, NS, "gateway-1", l, "Conflicted"),
            "Conflicted/False/NoConflicts"
        );
    }
    let gs = st.gateway().expect("gw");
    assert!(
        gs.listeners
            .iter()
            .flat_map(|l| &l.conditions)
            .all(|c| c.observed_generation == 1)
    );
    let kinds: Vec<(&str, &str)> = gs.listeners[0]
        .supported_kinds
        .iter()
        .map(|k| (k.group.as_str(), k.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("gateway.networking.k8s.io", "UDPRoute"),
            ("stunner.l7mp.io", "UDPRoute")
        ]
    );
}

#[test]
fn s6_5_6_dtls_listener_missing_secret() {
    let gw = GATEWAY.replace(
        "- {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}",
        "- {name: gateway-1-listener-dtls, port: 2, protocol: TURN-DTLS, tls: {certificateRefs: [{name: missing}]}}",
    );
    let out = run(&pieces_with(GATEWAY, &gw));
    assert_eq!(
        lcond(&out, NS, "gateway-1", "gateway-1-listener-dtls", "Accepted"),
        "Accepted/True/Accepted"
    );
    assert_eq!(
        lcond(
            &out,
            NS,
            "gateway-1",
            "gateway-1-listener-dtls",
            "ResolvedRefs"
        ),
        "ResolvedRefs/False/InvalidCertificateRef"
    );
}

#[test]
fn s6_5_7_unsupported_protocol_listener() {
    let gw = GATEWAY.replace(
        "  - {name: gateway-1-listener-tcp",
        "  - {name: dummy, port: 3, protocol: dummy}\n  - {name: gateway-1-listener-tcp",
    );
    let out = run(&pieces_with(GATEWAY, &gw));
    assert_eq!(
        lcond(&out, NS, "gateway-1", "gateway-1-listener-udp", "Accepted"),
        "Accepted/True/Accepted"
    );
    assert_eq!(
        lcond(&out, NS, "gateway-1", "dummy", "Accepted"),
        "Accepted/False/UnsupportedProtocol"
    );
    assert_eq!(
        lcond(&out, NS, "gateway-1", "dummy", "ResolvedRefs"),
        "ResolvedRefs/True/ResolvedRefs"
    );
    assert_eq!(
        lcond(&out, NS, "gateway-1", "dummy", "Conflicted"),
        "Conflicted/False/NoConflicts"
    );
    assert_eq!(
        lcond(&out, NS, "gateway-1", "gateway-1-listener-tcp", "Accepted"),
        "Accepted/True/Accepted"
    );
}
