//! One test per row of the seed's field tables: GatewayClass, GatewayConfig, Gateway,
//! listener, load balancer configuration and addresses. (Routes, backends, StaticService and
//! Dataplane: `k8s_seed_routes.rs`.)

use crate::k8s_fixtures;

use k8s_fixtures::*;
use stunnerd::config::{AuthType, ListenerProtocol};

const GW: &str = "stunner/udp-gateway";

fn with_config(spec: &str) -> String {
    BASE.replace("spec: {userName: user-1, password: pass-1}", spec)
}

fn gateway(listeners: &str, annotations: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: gw, namespace: stunner, annotations: {{{annotations}}}}}\n\
         spec:\n  gatewayClassName: stunner-gatewayclass\n{extra_spec}  listeners:\n{listeners}"
    )
}

// --- GatewayClass ----------------------------------------------------------------------------

#[test]
fn gatewayclass_controller_name() {
    let out = render(&[BASE, UDP_GW]);
    assert_eq!(
        cond(&out, "GatewayClass", "", "stunner-gatewayclass", "Accepted"),
        "Accepted/True/Accepted"
    );
    let other = BASE.replace(
        "stunner.l7mp.io/gateway-operator",
        "stunner.l7mp.io/gateway-operator-2",
    );
    assert!(render(&[&other, UDP_GW]).configs.is_empty());
}

#[test]
fn gatewayclass_parameters_ref_defaults_and_errors() {
    // BASE omits group and kind: the defaults apply.
    assert!(render(&[BASE, UDP_GW]).config(GW).is_some());
    let explicit = BASE.replace(
        "parametersRef: {name:",
        "parametersRef: {group: stunner.l7mp.io, kind: GatewayConfig, name:",
    );
    assert!(render(&[&explicit, UDP_GW]).config(GW).is_some());
    for (bad, path) in [
        (
            "parametersRef: {group: example.com, name:",
            "spec.parametersRef.group",
        ),
        (
            "parametersRef: {kind: ConfigMap, name:",
            "spec.parametersRef.kind",
        ),
    ] {
        let base = BASE.replace("parametersRef: {name:", bad);
        let out = render(&[&base, UDP_GW]);
        assert_eq!(
            cond(&out, "GatewayClass", "", "stunner-gatewayclass", "Accepted"),
            "Accepted/False/InvalidParameters",
            "{bad}"
        );
        assert!(
            out.errors().any(|f| f.path == path),
            "{bad}: {:#?}",
            out.findings
        );
        assert!(out.configs.is_empty());
    }
    let none = BASE.replace(
        "  parametersRef: {name: stunner-gatewayconfig, namespace: stunner}\n",
        "",
    );
    let out = render(&[&none, UDP_GW]);
    assert!(has_error(
        &out,
        "GatewayClass stunner-gatewayclass",
        "must name its GatewayConfig"
    ));
}

#[test]
fn gatewayclass_description_is_informational() {
    let base = BASE.replace(
        "spec:\n  controllerName",
        "spec:\n  description: \"STUNner is a WebRTC ingress gateway\"\n  controllerName",
    );
    assert!(render(&[&base, UDP_GW]).config(GW).is_some());
}

// --- GatewayConfig ---------------------------------------------------------------------------

#[test]
fn gatewayconfig_dataplane() {
    let dp = "apiVersion: stunner.l7mp.io/v1\nkind: Dataplane\nmetadata: {name: dev}\nspec: {image: example/stunnerd:dev}";
    let out = render(&[
        &with_config("spec: {dataplane: dev, userName: u, password: p}"),
        dp,
        UDP_GW,
    ]);
    let d = out
        .deployment("stunner", "udp-gateway")
        .expect("deployment");
    assert_eq!(d.container().expect("c").image, "example/stunnerd:dev");
    // Default: `default`.
    let out = render(&[BASE, UDP_GW]);
    assert_eq!(
        out.deployment("stunner", "udp-gateway")
            .expect("d")
            .container()
            .expect("c")
            .image,
        "l7mp/stunnerd:latest"
    );
}

#[test]
fn gatewayconfig_log_level() {
    assert_eq!(
        config(&render(&[BASE, UDP_GW]), GW).admin.loglevel,
        "all:INFO"
    );
    let out = render(&[
        &with_config("spec: {logLevel: \"all:DEBUG,turn:INFO\", userName: u, password: p}"),
        UDP_GW,
    ]);
    assert_eq!(config(&out, GW).admin.loglevel, "all:DEBUG,turn:INFO");
}

#[test]
fn gatewayconfig_realm() {
    assert_eq!(
        config(&render(&[BASE, UDP_GW]), GW).auth.realm,
        "stunner.l7mp.io"
    );
    let out = render(&[
        &with_config("spec: {realm: example.com, userName: u, password: p}"),
        UDP_GW,
    ]);
    assert_eq!(config(&out, GW).auth.realm, "example.com");
    for bad in ["Example.com", "-a.com", "a-.com", "a..com", "a_b", ""] {
        let out = render(&[
            &with_config(&format!(
                "spec: {{realm: \"{bad}\", userName: u, password: p}}"
            )),
            UDP_GW,
        ]);
        assert!(out.configs.is_empty(), "{bad:?} accepted");
        assert!(out.errors().any(|f| f.path == "spec.realm"), "{bad:?}");
    }
}

const AUTH_SECRET_STATIC: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: auth, namespace: stunner}\n\
                                  data: {username: ZXh0LXVzZXI=, password: ZXh0LXBhc3M=}";

#[test]
fn gatewayconfig_auth_ref() {
    // data (base64) static credentials; namespace defaults to the GatewayConfig's.
    let out = render(&[
        &with_config("spec: {authRef: {name: auth}}"),
        AUTH_SECRET_STATIC,
        UDP_GW,
    ]);
    let a = &config(&out, GW).auth;
    assert_eq!(a.auth_type, AuthType::Static);
    assert_eq!(
        (
            a.credentials["username"].as_str(),
            a.credentials["password"].as_str()
        ),
        ("ext-user", "ext-pass")
    );
    // stringData, ephemeral, explicit namespace.
    let eph = "apiVersion: v1\nkind: Secret\nmetadata: {name: eph, namespace: other}\n\
               stringData: {type: ephemeral, secret: s3cr3t}";
    let out = render(&[
        &with_config("spec: {authRef: {name: eph, namespace: other}}"),
        eph,
        UDP_GW,
    ]);
    let a = &config(&out, GW).auth;
    assert_eq!(a.auth_type, AuthType::Ephemeral);
    assert_eq!(a.credentials["secret"], "s3cr3t");
    // sharedSecret key as fallback, longterm alias.
    let eph2 = "apiVersion: v1\nkind: Secret\nmetadata: {name: eph, namespace: stunner}\n\
                stringData: {type: longterm, sharedSecret: s2}";
    let out = render(&[&with_config("spec: {authRef: {name: eph}}"), eph2, UDP_GW]);
    assert_eq!(config(&out, GW).auth.credentials["secret"], "s2");
}

#[test]
fn gatewayconfig_external_auth_overrides_inline() {
    let out = render(&[
        &with_config("spec: {authRef: {name: auth}, authType: ephemeral, sharedSecret: inline}"),
        AUTH_SECRET_STATIC,
        UDP_GW,
    ]);
    let a = &config(&out, GW).auth;
    assert_eq!(a.auth_type, AuthType::Static);
    assert_eq!(a.credentials["username"], "ext-user");
    assert!(!a.credentials.contains_key("secret"));
}

#[test]
fn gatewayconfig_auth_type_and_aliases() {
    for (t, want) in [
        ("static", AuthType::Static),
        ("plaintext", AuthType::Static),
        ("ephemeral", AuthType::Ephemeral),
        ("longterm", AuthType::Ephemeral),
        ("timewindowed", AuthType::Ephemeral),
    ] {
        let spec = format!("spec: {{authType: {t}, userName: u, password: p, sharedSecret: s}}");
        let out = render(&[&with_config(&spec), UDP_GW]);
        let a = &config(&out, GW).auth;
        assert_eq!(a.auth_type, want, "{t}");
        match want {
            AuthType::Static => assert_eq!(a.credentials.len(), 2, "{t}"),
            _ => assert_eq!(a.credentials.keys().collect::<Vec<_>>(), ["secret"], "{t}"),
        }
    }
    let out = render(&[
        &with_config("spec: {authType: oauth, userName: u, password: p}"),
        UDP_GW,
    ]);
    assert!(out.errors().any(|f| f.path == "spec.authType"));
}

#[test]
fn gatewayconfig_username_password() {
    let out = render(&[
        &with_config("spec: {userName: alice, password: \"p4ss!word\"}"),
        UDP_GW,
    ]);
    let a = &config(&out, GW).auth;
    assert_eq!(
        (
            a.credentials["username"].as_str(),
            a.credentials["password"].as_str()
        ),
        ("alice", "p4ss!word")
    );
    // The seed's spelling `username` works too.
    let out = render(&[&with_config("spec: {username: bob, password: x}"), UDP_GW]);
    assert_eq!(config(&out, GW).auth.credentials["username"], "bob");
    // Characters outside the CRD's token rule are refused.
    let out = render(&[
        &with_config("spec: {userName: \"a b\", password: x}"),
        UDP_GW,
    ]);
    assert!(out.errors().any(|f| f.path == "spec.userName"));
}

#[test]
fn gatewayconfig_shared_secret_and_auth_lifetime() {
    let out = render(&[
        &with_config("spec: {authType: ephemeral, sharedSecret: topsecret, authLifetime: 3600}"),
        UDP_GW,
    ]);
    let a = &config(&out, GW).auth;
    assert_eq!(a.credentials["secret"], "topsecret");
    assert_eq!(
        a.credentials.len(),
        1,
        "authLifetime is not used by STUNner"
    );
}

#[test]
fn gatewayconfig_load_balancer_service_annotations() {
    let cfg = with_config(
        "spec: {userName: u, password: p, loadBalancerServiceAnnotations: {a: from-config, b: from-config}}",
    );
    let gw = gateway(
        "  - {name: l, port: 3478, protocol: TURN-UDP}\n",
        "b: from-gateway, c: gw",
        "",
    );
    let out = render(&[&cfg, &gw]);
    let ann = &out
        .service("stunner", "gw")
        .expect("svc")
        .metadata
        .annotations;
    assert_eq!(ann["a"], "from-config");
    assert_eq!(ann["b"], "from-gateway", "the Gateway wins on conflict");
    assert_eq!(ann["c"], "gw");
    assert_eq!(ann["stunner.l7mp.io/related-gateway-name"], "stunner/gw");
}

// --- Gateway ---------------------------------------------------------------------------------

#[test]
fn gateway_class_name() {
    let gw = UDP_GW.replace(
        "gatewayClassName: stunner-gatewayclass",
        "gatewayClassName: someone-else",
    );
    let out = render(&[BASE, &gw]);
    assert!(out.configs.is_empty());
    assert!(out.status("Gateway", "stunner", "udp-gateway").is_none());
}

#[test]
fn gateway_listeners() {
    let gw = gateway(
        "  - {name: udp, port: 3478, protocol: TURN-UDP}\n  - {name: tcp, port: 3478, protocol: TURN-TCP}\n",
        "",
        "",
    );
    let out = render(&[BASE, &gw]);
    let c = config(&out, "stunner/gw");
    let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["stunner/gw/udp", "stunner/gw/tcp"],
        "spec order kept"
    );
}

#[test]
fn gateway_addresses() {
    let gw = gateway(
        "  - {name: udp, port: 3478, protocol: TURN-UDP}\n",
        "",
        "  addresses: [{type: IPAddress, value: 203.0.113.7}, {value: 198.51.100.9}]\n",
    );
    let out = render(&[BASE, &gw]);
    let svc = out.service("stunner", "gw").expect("svc");
    // Seed: only the first address, into both loadBalancerIP and externalIPs.
    assert_eq!(svc.spec.load_balancer_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(svc.spec.external_ips, ["203.0.113.7"]);
    let l = listener(config(&out, "stunner/gw"), "stunner/gw/udp");
    assert_eq!(
        (l.public_address.as_str(), l.public_port),
        ("203.0.113.7", 3478)
    );
    assert_eq!(
        cond(&out, "Gateway", "stunner", "gw", "Programmed"),
        "Programmed/True/Programmed"
    );
    let st = status(&out, "Gateway", "stunner", "gw")
        .gateway()
        .expect("gw");
    assert_eq!(st.addresses[0].value, "203.0.113.7");
    assert_eq!(st.addresses[0].address_type, "IPAddress");
    // A value that is not an IP address is refused.
    let bad = gateway(
        "  - {name: udp, port: 3478, protocol: TURN-UDP}\n",
        "",
        "  addresses: [{value: not-an-ip}]\n",
    );
    assert!(
        render(&[BASE, &bad])
            .errors()
            .any(|f| f.path == "spec.addresses[0].value")
    );
}

// --- Listener configuration -------------------------------------------------------------------

#[test]
fn listener_name_must_be_unique() {
    let gw = gateway(
        "  - {name: a, port: 1, protocol: TURN-UDP}\n  - {name: a, port: 2, protocol: TURN-UDP}\n",
        "",
        "",
    );
    let out = render(&[BASE, &gw]);
    assert!(
        out.errors()
            .any(|f| f.path == "spec.listeners[1].name" && f.message.contains("unique"))
    );
    assert!(out.config("stunner/gw").is_none());
}

#[test]
fn listener_port() {
    let gw = gateway("  - {name: a, port: 31000, protocol: TURN-UDP}\n", "", "");
    let out = render(&[BASE, &gw]);
    assert_eq!(
        listener(config(&out, "stunner/gw"), "stunner/gw/a").port,
        31000
    );
    assert_eq!(
        out.service("stunner", "gw").expect("svc").spec.ports[0].port,
        31000
    );
}

#[test]
fn listener_protocols_and_service_protocols() {
    let gw = gateway(
        "  - {name: u, port: 1, protocol: TURN-UDP}\n  - {name: t, port: 2, protocol: TURN-TCP}\n\
         \x20 - {name: s, port: 3, protocol: TURN-TLS, tls: {certificateRefs: [{name: cert}]}}\n\
         \x20 - {name: d, port: 4, protocol: TURN-DTLS, tls: {certificateRefs: [{name: cert}]}}\n\
         \x20 - {name: u2, port: 5, protocol: UDP}\n  - {name: t2, port: 6, protocol: tcp}\n",
        "stunner.l7mp.io/enable-mixed-protocol-lb: \"true\"",
        "",
    );
    let cert = "apiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: stunner}\nstringData: {tls.crt: C, tls.key: K}";
    let out = render(&[BASE, &gw, cert]);
    let c = config(&out, "stunner/gw");
    let protos: Vec<ListenerProtocol> = c.listeners.iter().map(|l| l.protocol).collect();
    use ListenerProtocol::*;
    assert_eq!(
        protos,
        [TurnUdp, TurnTcp, TurnTls, TurnDtls, TurnUdp, TurnTcp]
    );
    let svc = out.service("stunner", "gw").expect("svc");
    let sp: Vec<&str> = svc.spec.ports.iter().map(|p| p.protocol.as_str()).collect();
    // Seed: UDP and DTLS are exposed as UDP, TCP and TLS as TCP.
    assert_eq!(sp, ["UDP", "TCP", "TCP", "UDP", "UDP", "TCP"]);
    let dtls = listener(c, "stunner/gw/d");
    assert_eq!((dtls.cert.as_str(), dtls.key.as_str()), ("Qw==", "Sw=="));
}

#[test]
fn listener_unknown_protocol() {
    let gw = gateway(
        "  - {name: q, port: 1, protocol: QUIC}\n  - {name: u, port: 2, protocol: TURN-UDP}\n",
        "",
        "",
    );
    let out = render(&[BASE, &gw]);
    assert_eq!(
        lcond(&out, "stunner", "gw", "q", "Accepted"),
        "Accepted/False/UnsupportedProtocol"
    );
    assert_eq!(config(&out, "stunner/gw").listeners.len(), 1);
    assert!(has_error(
        &out,
        "Gateway stunner/gw",
        "unsupported protocol \"QUIC\""
    ));
}

#[test]
fn listener_tls() {
    let gw = gateway(
        "  - {name: s, port: 443, protocol: TURN-TLS, tls: {mode: Terminate, certificateRefs: [{kind: Secret, namespace: certs, name: c}]}}\n",
        "",
        "",
    );
    // A Secret of type tls or opaque with tls.crt and tls.key.
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: certs}\ntype: kubernetes.io/tls\n\
                  data: {tls.crt: LS0tLS1CRUdJTg==, tls.key: a2V5}";
    let out = render(&[BASE, &gw, secret]);
    let l = listener(config(&out, "stunner/gw"), "stunner/gw/s");
    // The PEM bytes, base64-encoded for stunnerd.
    assert_eq!(
        (l.cert.as_str(), l.key.as_str()),
        ("LS0tLS1CRUdJTg==", "a2V5")
    );
}

#[test]
fn listener_tls_secret_type() {
    // "a Kubernetes Secret of type tls or opaque": both as Kubernetes spells them (a Secret
    // written without `type` is Opaque), with extra keys such as cert-manager's ca.crt.
    let gw = gateway(
        "  - {name: u, port: 3478, protocol: TURN-UDP}\n\
         \x20 - {name: s, port: 443, protocol: TURN-TLS, tls: {certificateRefs: [{name: c}]}}\n",
        "",
        "",
    );
    let secret = |type_line: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: c, namespace: stunner}}\n{type_line}\
             data: {{tls.crt: Y2VydA==, tls.key: a2V5, ca.crt: Y2E=}}"
        )
    };
    for t in ["type: kubernetes.io/tls\n", "type: Opaque\n", ""] {
        let out = render(&[BASE, &gw, &secret(t)]);
        let l = listener(config(&out, "stunner/gw"), "stunner/gw/s");
        assert_eq!(
            (l.cert.as_str(), l.key.as_str()),
            ("Y2VydA==", "a2V5"),
            "{t}"
        );
        assert_eq!(
            lcond(&out, "stunner", "gw", "s", "ResolvedRefs"),
            "ResolvedRefs/True/ResolvedRefs",
            "{t}"
        );
    }
    // Any other type: the listener is not rendered and its status names the Secret; the
    // Gateway's other listeners are unaffected.
    for t in [
        "example.com/custom",
        "kubernetes.io/basic-auth",
        "kubernetes.io/service-account-token",
        "opaque",
    ] {
        let out = render(&[BASE, &gw, &secret(&format!("type: {t}\n"))]);
        let c = config(&out, "stunner/gw");
        assert!(c.listener("stunner/gw/s").is_none(), "{t}");
        assert!(c.listener("stunner/gw/u").is_some(), "{t}");
        assert_eq!(
            lcond(&out, "stunner", "gw", "s", "ResolvedRefs"),
            "ResolvedRefs/False/InvalidCertificateRef",
            "{t}"
        );
        let st = status(&out, "Gateway", "stunner", "gw")
            .gateway()
            .expect("gateway status");
        let msg = &st
            .listener("s")
            .and_then(|l| l.condition("ResolvedRefs"))
            .expect("ResolvedRefs")
            .message;
        assert!(
            msg.contains("Secret stunner/c") && msg.contains(&format!("{t:?}")),
            "{t}: {msg}"
        );
        assert!(
            has_error(&out, "Gateway stunner/gw", "Secret stunner/c has type"),
            "{t}: {:#?}",
            out.findings
        );
    }
}

const ROUTE_ANY_NS: &str = "apiVersion: stunner.l7mp.io/v1\nkind: UDPRoute\nmetadata: {name: r, namespace: NS}\n\
                            spec:\n  parentRefs: [{name: gw, namespace: stunner}]\n  rules: [{backendRefs: []}]";

#[test]
fn listener_allowed_routes_from() {
    let gw = gateway(
        "  - {name: same, port: 1, protocol: TURN-UDP}\n\
         \x20 - {name: all, port: 2, protocol: TURN-UDP, allowedRoutes: {namespaces: {from: All}}}\n\
         \x20 - {name: sel, port: 3, protocol: TURN-UDP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {app: dev}}}}}\n",
        "",
        "",
    );
    let dev = "apiVersion: v1\nkind: Namespace\nmetadata: {name: dev, labels: {app: dev}}";
    let prod = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}";
    let r_local = ROUTE_ANY_NS.replace("NS", "stunner");
    let r_dev = ROUTE_ANY_NS.replace("NS", "dev");
    let r_prod = ROUTE_ANY_NS.replace("NS", "prod");
    let out = render(&[BASE, &gw, dev, prod, &r_local, &r_dev, &r_prod]);
    let c = config(&out, "stunner/gw");
    assert_eq!(
        listener(c, "stunner/gw/same").routes,
        ["stunner/r"],
        "default: Same"
    );
    assert_eq!(
        listener(c, "stunner/gw/all").routes,
        ["dev/r", "prod/r", "stunner/r"]
    );
    assert_eq!(listener(c, "stunner/gw/sel").routes, ["dev/r"]);
    let st = status(&out, "Gateway", "stunner", "gw")
        .gateway()
        .expect("gw");
    let counts: Vec<usize> = st.listeners.iter().map(|l| l.attached_routes).collect();
    assert_eq!(counts, [1, 3, 1]);
}

// --- Load balancer configuration ---------------------------------------------------------------

#[test]
fn service_type_annotation() {
    for (value, want) in [
        (None, "LoadBalancer"),
        (Some("ClusterIP"), "ClusterIP"),
        (Some("NodePort"), "NodePort"),
        (Some("LoadBalancer"), "LoadBalancer"),
        (Some("bogus"), "LoadBalancer"),
    ] {
        let ann = value
            .map(|v| format!("stunner.l7mp.io/service-type: {v}"))
            .unwrap_or_default();
        let gw = gateway("  - {name: u, port: 1, protocol: TURN-UDP}\n", &ann, "");
        let out = render(&[BASE, &gw]);
        assert_eq!(
            out.service("stunner", "gw").expect("svc").spec.service_type,
            want,
            "{value:?}"
        );
    }
}

#[test]
fn mixed_protocol_lb() {
    let listeners =
        "  - {name: u, port: 1, protocol: TURN-UDP}\n  - {name: t, port: 2, protocol: TURN-TCP}\n";
    // Default: disabled, the first listener's protocol wins.
    let out = render(&[BASE, &gateway(listeners, "", "")]);
    let ports: Vec<&str> = out
        .service("stunner", "gw")
        .expect("s")
        .spec
        .ports
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(ports, ["u"]);
    // The TCP listener is still in the config, just not exposed.
    assert_eq!(config(&out, "stunner/gw").listeners.len(), 2);
    for v in ["true", "\"true\"", "\"True\""] {
        let out = render(&[
            BASE,
            &gateway(
                listeners,
                &format!("stunner.l7mp.io/enable-mixed-protocol-lb: {v}"),
                "",
            ),
        ]);
        assert_eq!(
            out.service("stunner", "gw").expect("s").spec.ports.len(),
            2,
            "{v}"
        );
    }
}

#[test]
fn gateway_annotations_copied_to_service() {
    let gw = gateway(
        "  - {name: u, port: 1, protocol: TURN-UDP}\n",
        "service.beta.kubernetes.io/aws-load-balancer-type: nlb",
        "",
    );
    let out = render(&[BASE, &gw]);
    let svc = out.service("stunner", "gw").expect("svc");
    assert_eq!(
        svc.metadata.annotations["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
}

#[test]
fn health_check_annotations_expose_a_port_on_load_balancers() {
    let ann = "service.beta.kubernetes.io/do-loadbalancer-healthcheck-port: \"8086\", \
               service.beta.kubernetes.io/do-loadbalancer-healthcheck-protocol: http";
    let out = render(&[
        BASE,
        &gateway("  - {name: u, port: 3478, protocol: TURN-UDP}\n", ann, ""),
    ]);
    let svc = out.service("stunner", "gw").expect("svc");
    let hc = svc.spec.port("gateway-health-check").expect("health port");
    assert_eq!((hc.protocol.as_str(), hc.port), ("TCP", 8086));
}

#[test]
fn gateway_addresses_on_non_load_balancer_services() {
    // loadBalancerIP is refused by the API server off LoadBalancers; externalIPs still apply.
    let gw = gateway(
        "  - {name: udp, port: 3478, protocol: TURN-UDP}\n",
        "stunner.l7mp.io/service-type: NodePort",
        "  addresses: [{value: 203.0.113.7}]\n",
    );
    let out = render(&[BASE, &gw]);
    let svc = out.service("stunner", "gw").expect("svc");
    assert_eq!(svc.spec.load_balancer_ip, None);
    assert_eq!(svc.spec.external_ips, ["203.0.113.7"]);
}
