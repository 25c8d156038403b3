//! The seed's error cases: each gives the documented status and a clear message. Also how
//! malformed manifests are reported (file, document, field path) without stopping the rest.

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::k8s::{Severity, parse_str};

const GW: &str = "stunner";

#[test]
fn gatewayclass_with_another_controller_is_ignored() {
    let other = BASE.replace(
        "controllerName: stunner.l7mp.io/gateway-operator",
        "controllerName: example.com/other-controller",
    );
    let out = render(&[&other, UDP_GW]);
    assert!(out.configs.is_empty());
    assert!(out.services.is_empty() && out.deployments.is_empty());
    // No status at all: the class belongs to someone else.
    assert!(
        out.status("GatewayClass", "", "stunner-gatewayclass")
            .is_none()
    );
    assert!(out.status("Gateway", GW, "udp-gateway").is_none());
    assert!(
        !out.has_errors(),
        "ignoring is not an error: {:#?}",
        out.findings
    );
    assert!(out.findings.iter().any(|f| f.severity == Severity::Note
        && f.object == "GatewayClass stunner-gatewayclass"
        && f.message.contains("example.com/other-controller")));
}

#[test]
fn missing_gatewayconfig() {
    let base = BASE.replace(
        "name: stunner-gatewayconfig, namespace: stunner}\nspec:",
        "name: other, namespace: stunner}\nspec:",
    );
    let out = render(&[&base, UDP_GW]);
    assert_eq!(
        cond(&out, "GatewayClass", "", "stunner-gatewayclass", "Accepted"),
        "Accepted/False/InvalidParameters"
    );
    let msg = &status(&out, "GatewayClass", "", "stunner-gatewayclass")
        .condition("Accepted")
        .expect("c")
        .message;
    assert_eq!(
        msg,
        "controller \"stunner.l7mp.io/gateway-operator\" failed to process GatewayClass: \
         No GatewayConfig found for name: stunner/stunner-gatewayconfig"
    );
    assert_eq!(
        cond(&out, "Gateway", GW, "udp-gateway", "Accepted"),
        "Accepted/False/Pending"
    );
    assert_eq!(
        cond(&out, "Gateway", GW, "udp-gateway", "Programmed"),
        "Programmed/False/Invalid"
    );
    assert_eq!(
        lcond(&out, GW, "udp-gateway", "udp-listener", "Accepted"),
        "Accepted/Unknown/Pending"
    );
    assert!(out.configs.is_empty() && out.services.is_empty() && out.deployments.is_empty());
    assert!(has_error(
        &out,
        "GatewayClass stunner-gatewayclass",
        "No GatewayConfig found"
    ));
    assert!(has_error(
        &out,
        "Gateway stunner/udp-gateway",
        "No GatewayConfig found"
    ));
}

#[test]
fn missing_default_dataplane() {
    let base = BASE.replace("metadata: {name: default}", "metadata: {name: production}");
    let out = render(&[&base, UDP_GW]);
    assert_eq!(
        cond(&out, "GatewayClass", "", "stunner-gatewayclass", "Accepted"),
        "Accepted/False/InvalidParameters"
    );
    let msg = &status(&out, "GatewayClass", "", "stunner-gatewayclass")
        .condition("Accepted")
        .expect("c")
        .message;
    assert!(
        msg.contains("missing Dataplane resource for Gateway: Dataplane default not found"),
        "{msg}"
    );
    assert_eq!(
        cond(&out, "Gateway", GW, "udp-gateway", "Accepted"),
        "Accepted/False/Pending"
    );
    assert!(out.configs.is_empty());
    // Legacy mode provisions no pods, so it needs no Dataplane.
    let legacy = render_legacy(&[&base, UDP_GW]);
    assert_eq!(legacy.configs.len(), 1);
    assert!(!legacy.has_errors(), "{:#?}", legacy.findings);
}

#[test]
fn missing_credentials() {
    let cases = [
        (
            "spec: {}",
            "missing username and/or password for plaintext authentication",
        ),
        (
            "spec: {userName: user-1}",
            "missing username and/or password for plaintext authentication",
        ),
        (
            "spec: {authType: ephemeral}",
            "missing shared-secret for longterm authentication",
        ),
        (
            "spec: {authType: timewindowed, password: x}",
            "missing shared-secret for longterm authentication",
        ),
        (
            "spec: {authRef: {name: nope}}",
            "missing or invalid external authentication credentials: Secret stunner/nope not found",
        ),
    ];
    for (spec, want) in cases {
        let base = BASE.replace("spec: {userName: user-1, password: pass-1}", spec);
        let out = render(&[&base, UDP_GW]);
        let st = status(&out, "Gateway", GW, "udp-gateway");
        let acc = st.condition("Accepted").expect("Accepted");
        assert_eq!(acc.summary(), "Accepted/False/Pending", "{spec}");
        assert!(acc.message.starts_with(want), "{spec}: {}", acc.message);
        assert_eq!(
            st.condition("Programmed").expect("p").summary(),
            "Programmed/False/Invalid"
        );
        assert!(out.config("stunner/udp-gateway").is_none(), "{spec}");
        // The class itself is fine: credentials are a per-Gateway failure in managed mode.
        assert_eq!(
            cond(&out, "GatewayClass", "", "stunner-gatewayclass", "Accepted"),
            "Accepted/True/Accepted"
        );
        assert!(
            has_error(&out, "Gateway stunner/udp-gateway", want),
            "{spec}"
        );
    }
}

const TLS_GW: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls-gateway, namespace: stunner}
spec:
  gatewayClassName: stunner-gatewayclass
  listeners:
  - {name: udp, port: 3478, protocol: TURN-UDP}
  - name: tls
    port: 443
    protocol: TURN-TLS
    tls: {mode: Terminate, certificateRefs: [{name: tls-secret}]}
"#;

#[test]
fn tls_listener_without_usable_secret() {
    let cases = [
        ("", "Secret stunner/tls-secret not found"),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tls-secret, namespace: stunner}\nstringData: {tls.crt: CERT}\n",
            "Secret stunner/tls-secret lacks tls.crt and/or tls.key",
        ),
    ];
    for (secret, want) in cases {
        let out = render(&[BASE, TLS_GW, secret]);
        let c = config(&out, "stunner/tls-gateway");
        // The TLS listener is dropped; the UDP one lives on.
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "stunner/tls-gateway/udp");
        assert_eq!(
            lcond(&out, GW, "tls-gateway", "tls", "Accepted"),
            "Accepted/True/Accepted"
        );
        assert_eq!(
            lcond(&out, GW, "tls-gateway", "tls", "ResolvedRefs"),
            "ResolvedRefs/False/InvalidCertificateRef"
        );
        let st = status(&out, "Gateway", GW, "tls-gateway")
            .gateway()
            .expect("gw");
        let l = st.listener("tls").expect("tls");
        assert_eq!(l.attached_routes, 0);
        assert!(
            l.condition("ResolvedRefs")
                .expect("c")
                .message
                .contains(want)
        );
        assert!(has_error(&out, "Gateway stunner/tls-gateway", want));
    }
}

#[test]
fn tls_listener_without_tls_section() {
    let gw = TLS_GW.replace(
        "    tls: {mode: Terminate, certificateRefs: [{name: tls-secret}]}\n",
        "",
    );
    let out = render(&[BASE, &gw]);
    assert_eq!(
        lcond(&out, GW, "tls-gateway", "tls", "ResolvedRefs"),
        "ResolvedRefs/False/InvalidCertificateRef"
    );
    assert_eq!(config(&out, "stunner/tls-gateway").listeners.len(), 1);
}

#[test]
fn passthrough_tls_mode() {
    let gw = TLS_GW.replace("mode: Terminate", "mode: Passthrough");
    let out = render(&[BASE, &gw, &secret_ok()]);
    assert_eq!(
        lcond(&out, GW, "tls-gateway", "tls", "Accepted"),
        "Accepted/False/UnsupportedValue"
    );
    let st = status(&out, "Gateway", GW, "tls-gateway")
        .gateway()
        .expect("gw");
    let msg = &st
        .listener("tls")
        .expect("l")
        .condition("Accepted")
        .expect("c")
        .message;
    assert!(
        msg.contains("tls.mode Passthrough is not supported"),
        "{msg}"
    );
    // Not rendered cert-less (stunnerd would refuse the whole config): dropped.
    let c = config(&out, "stunner/tls-gateway");
    assert_eq!(c.listeners.len(), 1);
    assert!(has_error(
        &out,
        "Gateway stunner/tls-gateway",
        "Passthrough"
    ));
}

fn secret_ok() -> String {
    "apiVersion: v1\nkind: Secret\nmetadata: {name: tls-secret, namespace: stunner}\n\
     stringData: {tls.crt: CERT, tls.key: KEY}\n"
        .to_string()
}

#[test]
fn invalid_realm() {
    let base = BASE.replace(
        "spec: {userName: user-1",
        "spec: {realm: Bad_Realm, userName: user-1",
    );
    let out = render(&[&base, UDP_GW]);
    assert_eq!(
        cond(&out, "GatewayClass", "", "stunner-gatewayclass", "Accepted"),
        "Accepted/False/InvalidParameters"
    );
    let msg = &status(&out, "GatewayClass", "", "stunner-gatewayclass")
        .condition("Accepted")
        .expect("c")
        .message;
    assert!(
        msg.contains("No GatewayConfig found for name: stunner/stunner-gatewayconfig"),
        "{msg}"
    );
    assert!(
        msg.contains("spec.realm: invalid realm \"Bad_Realm\""),
        "{msg}"
    );
    assert!(out.configs.is_empty());
    let f = out
        .errors()
        .find(|f| f.object == "GatewayConfig stunner/stunner-gatewayconfig")
        .expect("realm finding");
    assert_eq!(f.path, "spec.realm");
    assert!(f.message.contains("lower case alphanumeric"), "{f}");
    // A valid realm is used as given.
    let ok = BASE.replace(
        "spec: {userName: user-1",
        "spec: {realm: turn.example-1.com, userName: user-1",
    );
    let out = render(&[&ok, UDP_GW]);
    assert_eq!(
        config(&out, "stunner/udp-gateway").auth.realm,
        "turn.example-1.com"
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed input

#[test]
fn malformed_documents_are_reported_and_skipped() {
    let text = format!(
        "{BASE}\n---\n{UDP_GW}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: bad, namespace: stunner}}\n\
         spec:\n  gatewayClassName: stunner-gatewayclass\n  listeners: [{{name: l, port: many, protocol: TURN-UDP}}]\n\
         ---\nkey: [unclosed\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: stunner}}\ndata: {{k: '!!notbase64'}}\n\
         ---\napiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nspec: {{}}\n"
    );
    let (objs, errs) = parse_str(&text, "manifests.yaml");
    // BASE has 4 documents, UDP_GW 1; the bad Gateway is document 6.
    let e = errs
        .iter()
        .find(|e| e.object == "Gateway bad")
        .expect("gateway error");
    assert_eq!(
        (e.file.as_str(), e.document, e.path.as_str()),
        ("manifests.yaml", 6, "spec.listeners[0].port")
    );
    assert!(e.is_error());
    assert!(
        e.to_string()
            .starts_with("manifests.yaml: document 6 (line "),
        "{e}"
    );
    let syntax = errs.iter().find(|e| e.document == 7).expect("syntax error");
    assert!(syntax.message.starts_with("invalid YAML"), "{syntax}");
    let skipped = errs.iter().find(|e| e.document == 8).expect("note");
    assert_eq!(skipped.severity, Severity::Note);
    assert!(skipped.message.contains("kind ConfigMap"), "{skipped}");
    let b64 = errs.iter().find(|e| e.document == 9).expect("base64");
    assert_eq!(b64.path, "data.k");
    let noname = errs.iter().find(|e| e.document == 10).expect("name");
    assert_eq!(noname.path, "metadata.name");
    // The good objects all loaded and still render.
    assert_eq!(objs.len(), 5);
    let out = stunnerd::k8s::render(&objs, stunnerd::k8s::Mode::Managed);
    assert!(out.config("stunner/udp-gateway").is_some());
}

#[test]
fn schema_violations_name_object_field_and_rule() {
    let bad_gw = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: dup, namespace: stunner}
spec:
  gatewayClassName: stunner-gatewayclass
  listeners:
  - {name: a, port: 3478, protocol: TURN-UDP}
  - {name: a, port: 70000, protocol: TURN-UDP}
"#;
    let bad_route = r#"
apiVersion: stunner.l7mp.io/v1
kind: UDPRoute
metadata: {name: r, namespace: stunner}
spec:
  parentRefs: [{name: udp-gateway}]
  rules: [{backendRefs: [{name: svc, port: 0}]}]
"#;
    let out = render(&[BASE, UDP_GW, bad_gw, bad_route]);
    let paths: Vec<(String, String)> = out
        .errors()
        .map(|f| (f.object.clone(), f.path.clone()))
        .collect();
    assert!(
        paths.contains(&(
            "Gateway stunner/dup".into(),
            "spec.listeners[1].name".into()
        )),
        "{paths:?}"
    );
    assert!(
        paths.contains(&(
            "Gateway stunner/dup".into(),
            "spec.listeners[1].port".into()
        )),
        "{paths:?}"
    );
    assert!(
        paths.contains(&(
            "UDPRoute stunner/r".into(),
            "spec.rules[0].backendRefs[0].port".into()
        )),
        "{paths:?}"
    );
    // Rejected objects do not exist for the render; the good Gateway is unaffected.
    assert!(out.status("Gateway", GW, "dup").is_none());
    assert!(out.config("stunner/udp-gateway").is_some());
    assert!(config(&out, "stunner/udp-gateway").clusters.is_empty());
}

#[test]
fn unknown_kinds_and_versions_are_notes() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n\
                apiVersion: stunner.l7mp.io/v1alpha1\nkind: GatewayConfig\nmetadata: {name: y}\n";
    let (objs, errs) = parse_str(text, "t.yaml");
    assert!(objs.is_empty());
    assert_eq!(errs.len(), 2);
    assert!(errs.iter().all(|e| e.severity == Severity::Note));
    assert!(
        errs[1]
            .message
            .contains("apiVersion \"stunner.l7mp.io/v1alpha1\" is not supported"),
        "{}",
        errs[1]
    );
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        "---",
        "- 1\n- 2",
        "[]",
        "{}",
        "null",
        "42",
        "{\"kind\": 5}",
        "kind: [a]",
        "\u{0}\u{1}",
        "apiVersion: v1\nkind: List\nitems: [1, {kind: Node}]",
        "{{{{",
        "a: &a [*a]",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999999999999999999}]}",
    ] {
        let (objs, _errs) = parse_str(text, "g");
        let _ = stunnerd::k8s::render(&objs, stunnerd::k8s::Mode::Managed);
    }
}
