//! Shared fixtures for the `k8s_*` tests: the upstream operator's unit-test objects (spec
//! section 6.1) and a seed-like base hierarchy, as YAML pieces that tests combine and edit.
#![allow(dead_code)]

use stunnerd::config::{ClusterConfig, ListenerConfig, StunnerConfig};
use stunnerd::k8s::{
    Condition, Mode, Object, Options, RenderOutput, StatusObject, parse_str, render_with,
};

// ---------------------------------------------------------------------------------------------
// Upstream fixtures (spec 6.1)

pub const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: testnamespace, labels: {testlabel: testvalue}}
"#;

pub const CLASS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatewayclass-ok}
spec:
  controllerName: stunner.l7mp.io/gateway-operator
  parametersRef: {group: stunner.l7mp.io, kind: GatewayConfig, name: gatewayconfig-ok, namespace: testnamespace}
"#;

pub const CONFIG: &str = r#"
apiVersion: stunner.l7mp.io/v1
kind: GatewayConfig
metadata: {name: gatewayconfig-ok, namespace: testnamespace}
spec: {realm: testrealm, authType: static, userName: testuser, password: testpass, logLevel: testloglevel}
"#;

pub const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-1, namespace: testnamespace, uid: gw-1-uid, labels: {dummy-label: dummy-value}}
spec:
  gatewayClassName: gatewayclass-ok
  listeners:
  - {name: gateway-1-listener-udp, port: 1, protocol: TURN-UDP}
  - {name: gateway-1-listener-tcp, port: 2, protocol: TURN-TCP}
"#;

pub const ROUTE: &str = r#"
apiVersion: stunner.l7mp.io/v1
kind: UDPRoute
metadata: {name: udproute-ok, namespace: testnamespace}
spec:
  parentRefs: [{name: gateway-1, sectionName: gateway-1-listener-udp}]
  rules: [{backendRefs: [{name: testservice-ok}]}]
"#;

/// Both the public Service of gateway-1 and the route's backend, as upstream has it.
pub const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: testservice-ok
  namespace: testnamespace
  annotations: {stunner.l7mp.io/related-gateway-name: testnamespace/gateway-1}
  ownerReferences: [{apiVersion: gateway.networking.k8s.io/v1, kind: Gateway, name: gateway-1, uid: gw-1-uid}]
spec:
  type: LoadBalancer
  ports:
  - {name: udp-ok, protocol: UDP, port: 1}
  - {name: tcp-ok, protocol: TCP, port: 2}
status:
  loadBalancer:
    ingress:
    - ip: 1.2.3.4
      ports: [{port: 1, protocol: UDP}, {port: 2, protocol: TCP}]
"#;

pub const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: testnode-ok}
status:
  addresses: [{type: InternalIP, address: 255.255.255.255}, {type: ExternalIP, address: 1.2.3.4}]
"#;

pub const SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: testservice-ok-abcde, namespace: testnamespace, labels: {kubernetes.io/service-name: testservice-ok}}
addressType: IPv4
endpoints:
- {addresses: [1.2.3.4], conditions: {ready: true}}
- {addresses: [1.2.3.5], conditions: {ready: true}}
- {addresses: [1.2.3.6], conditions: {ready: false, serving: false, terminating: true}}
- {addresses: [1.2.3.7], conditions: {ready: false, serving: true}}
"#;

pub const TLS_SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: testsecret-ok, namespace: testnamespace}
type: kubernetes.io/tls
data: {tls.crt: dGVzdGNlcnQ=, tls.key: dGVzdGtleQ==}
"#;

pub const AUTH_SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: testauthsecret-ok, namespace: testnamespace}
type: Opaque
stringData: {username: ext-testuser, password: ext-testpass, secret: ext-secret}
"#;

pub const STATIC_SVC: &str = r#"
apiVersion: stunner.l7mp.io/v1
kind: StaticService
metadata: {name: teststaticservice-ok, namespace: testnamespace}
spec: {prefixes: [10.11.12.13, 10.11.12.14, 10.11.12.15]}
"#;

pub const DATAPLANE: &str = r#"
apiVersion: stunner.l7mp.io/v1
kind: Dataplane
metadata: {name: default}
spec:
  replicas: 3
  image: testimage-1
  command: [testcommand-1]
  args: [arg-1, arg-2]
  imagePullPolicy: Always
  terminationGracePeriodSeconds: 60
  resources: {limits: {memory: 10M}, requests: {cpu: 250m}}
  hostNetwork: true
"#;

/// All upstream fixtures.
pub fn upstream() -> Vec<&'static str> {
    vec![
        NAMESPACE,
        CLASS,
        CONFIG,
        GATEWAY,
        ROUTE,
        SERVICE,
        NODE,
        SLICE,
        TLS_SECRET,
        AUTH_SECRET,
        STATIC_SVC,
        DATAPLANE,
    ]
}

// ---------------------------------------------------------------------------------------------
// A seed-like base: class, GatewayConfig with inline credentials, default Dataplane.

pub const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: stunner}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: stunner-gatewayclass}
spec:
  controllerName: stunner.l7mp.io/gateway-operator
  parametersRef: {name: stunner-gatewayconfig, namespace: stunner}
---
apiVersion: stunner.l7mp.io/v1
kind: GatewayConfig
metadata: {name: stunner-gatewayconfig, namespace: stunner}
spec: {userName: user-1, password: pass-1}
---
apiVersion: stunner.l7mp.io/v1
kind: Dataplane
metadata: {name: default}
spec: {image: l7mp/stunnerd:latest}
"#;

/// A one-listener UDP Gateway in `stunner` of the base class.
pub const UDP_GW: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: udp-gateway, namespace: stunner}
spec:
  gatewayClassName: stunner-gatewayclass
  listeners: [{name: udp-listener, port: 3478, protocol: TURN-UDP}]
"#;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Parse YAML pieces joined as one stream; load errors fail the test.
pub fn objects(pieces: &[&str]) -> Vec<Object> {
    let text = pieces.join("\n---\n");
    let (objs, errs) = parse_str(&text, "test");
    let errs: Vec<_> = errs.iter().filter(|e| e.is_error()).collect();
    assert!(errs.is_empty(), "load errors: {errs:#?}");
    objs
}

pub fn render(pieces: &[&str]) -> RenderOutput {
    render_opts(pieces, &Options::new(Mode::Managed))
}

pub fn render_legacy(pieces: &[&str]) -> RenderOutput {
    render_opts(pieces, &Options::new(Mode::Legacy))
}

pub fn render_opts(pieces: &[&str], opts: &Options) -> RenderOutput {
    render_with(&objects(pieces), opts)
}

/// Options with endpoint discovery off (STRICT_DNS clusters).
pub fn no_eds() -> Options {
    Options {
        endpoint_discovery: false,
        ..Options::new(Mode::Managed)
    }
}

/// Options with endpoint discovery on and relay-to-ClusterIP off.
pub fn no_cluster_ip() -> Options {
    Options {
        relay_to_cluster_ip: false,
        ..Options::new(Mode::Managed)
    }
}

pub fn config<'a>(out: &'a RenderOutput, id: &str) -> &'a StunnerConfig {
    out.config(id)
        .unwrap_or_else(|| panic!("no config {id}; findings: {:#?}", out.findings))
}

pub fn listener<'a>(c: &'a StunnerConfig, name: &str) -> &'a ListenerConfig {
    c.listener(name)
        .unwrap_or_else(|| panic!("no listener {name} in {:#?}", c.listeners))
}

pub fn cluster<'a>(c: &'a StunnerConfig, name: &str) -> &'a ClusterConfig {
    c.cluster(name)
        .unwrap_or_else(|| panic!("no cluster {name} in {:#?}", c.clusters))
}

pub fn status<'a>(out: &'a RenderOutput, kind: &str, ns: &str, name: &str) -> &'a StatusObject {
    out.status(kind, ns, name)
        .unwrap_or_else(|| panic!("no status for {kind} {ns}/{name}: {:#?}", out.statuses))
}

/// `type/status/reason` of a GatewayClass or Gateway condition.
pub fn cond(out: &RenderOutput, kind: &str, ns: &str, name: &str, ctype: &str) -> String {
    summary(status(out, kind, ns, name).condition(ctype))
}

/// `type/status/reason` of a listener condition of Gateway `ns/name`.
pub fn lcond(out: &RenderOutput, ns: &str, gw: &str, listener: &str, ctype: &str) -> String {
    let st = status(out, "Gateway", ns, gw)
        .gateway()
        .expect("gateway status");
    let l = st
        .listener(listener)
        .unwrap_or_else(|| panic!("no listener status {listener}"));
    summary(l.condition(ctype))
}

/// The route parent statuses as `[Accepted summary, ResolvedRefs summary]` per parentRef.
pub fn rconds(out: &RenderOutput, kind: &str, ns: &str, name: &str) -> Vec<[String; 2]> {
    let st = status(out, kind, ns, name).route().expect("route status");
    st.parents
        .iter()
        .map(|p| {
            [
                summary(p.condition("Accepted")),
                summary(p.condition("ResolvedRefs")),
            ]
        })
        .collect()
}

fn summary(c: Option<&Condition>) -> String {
    c.map(Condition::summary).unwrap_or_else(|| "<none>".into())
}

/// Whether some error finding about `object` contains `text`.
pub fn has_error(out: &RenderOutput, object: &str, text: &str) -> bool {
    out.errors()
        .any(|f| f.object == object && f.to_string().contains(text))
}

/// Sorted endpoints of a cluster.
pub fn endpoints(c: &ClusterConfig) -> Vec<&str> {
    c.endpoints.iter().map(String::as_str).collect()
}
