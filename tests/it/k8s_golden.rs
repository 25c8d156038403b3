//! Golden outputs for the seed's examples kept in `config/k8s/`, and the `stunnerd render`
//! CLI (output shape and exit status).
//!
//! The goldens in `tests/golden/k8s/` were produced by this renderer and then reviewed field
//! by field against the seed; the tests below also assert the key fields explicitly, so a
//! regenerated golden cannot silently bless a bug. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test k8s_golden` and review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use stunnerd::config::{AuthType, ClusterType, ListenerProtocol};
use stunnerd::k8s::{Mode, RenderOutput, load_objects, output, render};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

const BASE: [&str; 4] = [
    "00-namespaces.yaml",
    "01-gatewayclass.yaml",
    "02-gatewayconfig.yaml",
    "03-dataplane-default.yaml",
];

/// Render the base hierarchy plus `extra` files of `config/k8s/`.
fn render_files(extra: &[&str]) -> RenderOutput {
    let dir = root().join("config/k8s");
    let paths: Vec<PathBuf> = BASE.iter().chain(extra).map(|f| dir.join(f)).collect();
    let (objs, errs) = load_objects(&paths);
    assert!(errs.iter().all(|e| !e.is_error()), "{errs:#?}");
    render(&objs, Mode::Managed)
}

fn check_golden(name: &str, actual: &str) {
    let path = root().join("tests/golden/k8s").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{name} differs from the golden at line {}:\n  golden: {:?}\n  actual: {:?}",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

fn golden(name: &str, out: &RenderOutput) {
    assert!(!out.has_errors(), "{:#?}", out.findings);
    check_golden(name, &output::to_json(out));
}

#[test]
fn udp_gateway() {
    let out = render_files(&["10-udp-gateway.yaml"]);
    golden("udp-gateway.json", &out);

    let c = out.config("stunner/udp-gateway").expect("config");
    // GatewayConfig: logLevel, realm, authRef -> the Secret's static credentials.
    assert_eq!(c.admin.loglevel, "all:DEBUG,turn:INFO");
    assert_eq!(c.auth.realm, "stunner.l7mp.io");
    assert_eq!(c.auth.auth_type, AuthType::Static);
    assert_eq!(c.auth.credentials["username"], "user-1");
    assert_eq!(c.auth.credentials["password"], "pass-1");
    let l = &c.listeners[0];
    assert_eq!(l.name, "stunner/udp-gateway/udp-listener");
    assert_eq!(l.protocol, ListenerProtocol::TurnUdp);
    assert_eq!((l.address.as_str(), l.port), ("$STUNNER_ADDR", 3478));
    assert!(c.clusters.is_empty());

    // "a stunnerd Deployment ... and a LoadBalancer Service ... using the same name and
    // namespace as the Gateway".
    let svc = out.service("stunner", "udp-gateway").expect("service");
    assert_eq!(svc.spec.service_type, "LoadBalancer");
    let p = &svc.spec.ports[0];
    assert_eq!(
        (p.name.as_str(), p.protocol.as_str(), p.port),
        ("udp-listener", "UDP", 3478)
    );

    // The default Dataplane, field by field.
    let d = out
        .deployment("stunner", "udp-gateway")
        .expect("deployment");
    let ct = d.container().expect("container");
    assert_eq!(ct.image, "l7mp/stunnerd:latest");
    assert_eq!(ct.image_pull_policy, "Always", "latest tag -> Always");
    assert_eq!(ct.command, ["stunnerd"]);
    assert_eq!(ct.args, ["-w", "--udp-thread-num=16"]);
    assert_eq!(ct.resources["limits"]["cpu"], 2);
    assert_eq!(ct.resources["limits"]["memory"], "512Mi");
    assert_eq!(ct.resources["requests"]["cpu"], "500m");
    assert_eq!(ct.resources["requests"]["memory"], "128Mi");
    assert_eq!(d.spec.template.spec.termination_grace_period_seconds, 3600);
    assert_eq!(d.spec.replicas, 1);
    assert!(!d.spec.template.spec.host_network);
    assert_eq!(
        ct.liveness_probe.as_ref().expect("probe")["httpGet"]["port"],
        8086
    );
    let env: Vec<&str> = ct.env.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        env,
        [
            "STUNNER_ADDR",
            "STUNNER_NAME",
            "STUNNER_NAMESPACE",
            "STUNNER_NODENAME",
            "STUNNER_CONFIG_ORIGIN"
        ]
    );
}

#[test]
fn complex_gateway() {
    let out = render_files(&["11-complex-gateway.yaml"]);
    golden("complex-gateway.json", &out);

    let c = out.config("stunner/complex-gateway").expect("config");
    let udp = c
        .listener("stunner/complex-gateway/udp-listener")
        .expect("udp");
    assert_eq!((udp.protocol, udp.port), (ListenerProtocol::TurnUdp, 3478));
    let tls = c
        .listener("stunner/complex-gateway/tls-listener")
        .expect("tls");
    assert_eq!((tls.protocol, tls.port), (ListenerProtocol::TurnTls, 443));
    // cert/key: base64 of the PEM in tls.crt/tls.key.
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(&tls.cert)
        .expect("b64");
    assert!(String::from_utf8_lossy(&pem).starts_with("-----BEGIN CERTIFICATE-----"));
    let key = base64::engine::general_purpose::STANDARD
        .decode(&tls.key)
        .expect("b64");
    assert!(String::from_utf8_lossy(&key).contains("PRIVATE KEY"));

    let svc = out.service("stunner", "complex-gateway").expect("service");
    // service-type annotation; mixed-protocol on: both the UDP and the TCP (TLS) port.
    assert_eq!(svc.spec.service_type, "NodePort");
    let ports: Vec<_> = svc
        .spec
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.protocol.as_str(), p.port))
        .collect();
    assert_eq!(
        ports,
        [("udp-listener", "UDP", 3478), ("tls-listener", "TCP", 443)]
    );
    // Gateway annotations are copied; no health-check port on a NodePort Service.
    let a = &svc.metadata.annotations;
    assert_eq!(
        a["service.beta.kubernetes.io/do-loadbalancer-healthcheck-port"],
        "8086"
    );
    assert_eq!(
        a["service.beta.kubernetes.io/do-loadbalancer-healthcheck-path"],
        "/live"
    );
    assert_eq!(a["stunner.l7mp.io/enable-mixed-protocol-lb"], "true");

    let st = out
        .status("Gateway", "stunner", "complex-gateway")
        .expect("status");
    let gs = st.gateway().expect("gateway status");
    for l in &gs.listeners {
        assert!(l.condition("Accepted").expect("cond").is_true(), "{l:?}");
    }
}

#[test]
fn mixed_protocol_gateway() {
    let out = render_files(&["12-mixed-protocol-gateway.yaml"]);
    golden("mixed-protocol-gateway.json", &out);
    // No namespace in the manifest: `default`, like kubectl.
    let c = out
        .config("default/mixed-protocol-gateway")
        .expect("config");
    assert_eq!(c.listeners.len(), 2);
    let svc = out
        .service("default", "mixed-protocol-gateway")
        .expect("service");
    assert_eq!(svc.spec.service_type, "LoadBalancer");
    let ports: Vec<_> = svc
        .spec
        .ports
        .iter()
        .map(|p| (p.protocol.as_str(), p.port))
        .collect();
    assert_eq!(ports, [("UDP", 3478), ("TCP", 3479)]);
}

#[test]
fn media_plane_route_v1() {
    let out = render_files(&[
        "10-udp-gateway.yaml",
        "20-media-plane-route.yaml",
        "22-media-server-pool.yaml",
    ]);
    golden("media-plane-route.json", &out);
    check_route(&out, "UDPRoute");
}

#[test]
fn media_plane_route_v1alpha2() {
    let out = render_files(&[
        "10-udp-gateway.yaml",
        "22-media-server-pool.yaml",
        "variants/media-plane-route-v1alpha2.yaml",
    ]);
    golden("media-plane-route-v1alpha2.json", &out);
    // Same config as the v1 route: the `port: 1` is dropped, so no port range.
    check_route(&out, "UDPRoute/v1alpha2");
}

#[test]
fn media_plane_route_to_a_service_without_selector() {
    let out = render_files(&[
        "10-udp-gateway.yaml",
        "20-media-plane-route.yaml",
        "variants/media-server-pool-external.yaml",
    ]);
    golden("media-server-pool-external.json", &out);
    let c = out.config("stunner/udp-gateway").expect("config");
    let cl = c.cluster("stunner/media-plane-route").expect("cluster");
    assert_eq!(cl.cluster_type, ClusterType::Static);
    // The Endpoints addresses plus the ClusterIP.
    assert_eq!(cl.endpoints, ["10.96.12.34", "192.0.2.41", "192.0.2.42"]);
    let st = out
        .status("UDPRoute", "stunner", "media-plane-route")
        .expect("route status");
    let p = &st.route().expect("route").parents[0];
    assert!(p.condition("ResolvedRefs").expect("c").is_true());
}

fn check_route(out: &RenderOutput, kind: &str) {
    let c = out.config("stunner/udp-gateway").expect("config");
    assert_eq!(c.listeners[0].routes, ["stunner/media-plane-route"]);
    let cl = c.cluster("stunner/media-plane-route").expect("cluster");
    assert_eq!(cl.cluster_type, ClusterType::Static);
    // The EndpointSlice addresses plus the ClusterIP, cross-namespace backend.
    assert_eq!(cl.endpoints, ["10.244.1.17", "10.244.2.23", "10.96.12.34"]);
    let st = out
        .status(kind, "stunner", "media-plane-route")
        .expect("route status");
    let p = &st.route().expect("route").parents[0];
    assert!(p.condition("Accepted").expect("c").is_true());
    assert!(p.condition("ResolvedRefs").expect("c").is_true());
    assert_eq!(p.controller_name, "stunner.l7mp.io/gateway-operator");
}

#[test]
fn static_svc() {
    let out = render_files(&[
        "10-udp-gateway.yaml",
        "21-static-svc.yaml",
        "variants/static-svc-route.yaml",
    ]);
    golden("static-svc.json", &out);
    let c = out.config("stunner/udp-gateway").expect("config");
    let cl = c.cluster("stunner/media-plane-route").expect("cluster");
    assert_eq!(cl.cluster_type, ClusterType::Static);
    assert_eq!(cl.endpoints, ["192.0.2.0/24", "198.51.100.0/24"]);
}

#[test]
fn whole_directory() {
    let (objs, errs) = load_objects(&[root().join("config/k8s")]);
    assert!(errs.iter().all(|e| !e.is_error()), "{errs:#?}");
    let out = render(&objs, Mode::Managed);
    golden("all.json", &out);
    check_golden("all.yaml", &output::to_yaml(&out));
    assert_eq!(out.configs.len(), 3);
    assert_eq!(out.deployments.len(), 3);
    // Every rendered config passes the dataplane's own parser once $STUNNER_ADDR is set.
    for c in &out.configs {
        let text = serde_json::to_string(c).expect("json");
        let env = |k: &str| (k == "STUNNER_ADDR").then(|| "10.0.0.1".to_string());
        stunnerd::config::parse_config(&text, &env).expect("config parses");
    }
}

// ---------------------------------------------------------------------------------------------
// CLI

fn stunnerd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stunnerd"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run stunnerd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_json_shape_and_exit_0() {
    let (code, stdout, stderr) = stunnerd(&["render", "-f", "config/k8s/"]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4);
    for k in ["configs", "services", "deployments", "statuses"] {
        assert!(v[k].is_array(), "{k}");
    }
    for s in v["statuses"].as_array().expect("list") {
        assert!(s["apiVersion"].is_string() && s["kind"].is_string());
        assert!(s["metadata"]["name"].is_string() && s["status"].is_object());
        if s["kind"] != "GatewayClass" {
            assert!(s["metadata"]["namespace"].is_string(), "{s}");
        }
    }
    assert_eq!(v["configs"][2]["admin"]["name"], "stunner/udp-gateway");
}

#[test]
fn cli_yaml_is_a_stream_of_objects() {
    let (code, stdout, stderr) = stunnerd(&[
        "render",
        "-f",
        "config/k8s/",
        "-o",
        "yaml",
        "--mode",
        "managed",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let mut kinds = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&stdout) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("yaml doc");
        if v.is_null() {
            continue;
        }
        kinds.push(v["kind"].as_str().expect("kind").to_string());
    }
    assert_eq!(kinds.iter().filter(|k| *k == "ConfigMap").count(), 3);
    assert_eq!(kinds.iter().filter(|k| *k == "Service").count(), 3);
    assert_eq!(kinds.iter().filter(|k| *k == "Deployment").count(), 3);
    assert!(
        stdout.contains("# kind: Gateway"),
        "statuses are in a comment block"
    );
}

#[test]
fn cli_legacy_mode() {
    let (code, stdout, stderr) = stunnerd(&["render", "-f", "config/k8s/", "--mode", "legacy"]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("json");
    let configs = v["configs"].as_array().expect("configs");
    assert_eq!(configs.len(), 1, "one config per GatewayConfig");
    assert_eq!(configs[0]["admin"]["name"], "stunner-daemon");
    // Three of the five Gateway listeners: two more want UDP port 3478, which the first
    // Gateway's listener holds in the one stunnerd of legacy mode (said on stderr).
    let names: Vec<&str> = configs[0]["listeners"]
        .as_array()
        .expect("l")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "default/mixed-protocol-gateway/udp-listener",
            "default/mixed-protocol-gateway/tcp-listener",
            "stunner/complex-gateway/tls-listener"
        ]
    );
    for gw in ["stunner/complex-gateway", "stunner/udp-gateway"] {
        assert!(
            stderr.contains(&format!(
                "listener {gw}/udp-listener not rendered: UDP port 3478 is already used by \
                 listener default/mixed-protocol-gateway/udp-listener"
            )),
            "{stderr}"
        );
    }
    assert_eq!(v["deployments"].as_array().expect("d").len(), 0);
}

#[test]
fn cli_exit_1_on_rejected_object_still_renders_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: broken, namespace: stunner}\nspec:\n  gatewayClassName: stunner-gatewayclass\n  listeners: [{name: l, port: \"x\", protocol: TURN-UDP}]\n",
    )
    .expect("write");
    let bad = bad.to_string_lossy().into_owned();
    let (code, stdout, stderr) = stunnerd(&["render", "-f", "config/k8s/", "-f", &bad]);
    assert_eq!(code, 1);
    assert!(stderr.contains("bad.yaml: document 1"), "{stderr}");
    assert!(stderr.contains("spec.listeners[0].port"), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["configs"].as_array().expect("configs").len(), 3);
}

#[test]
fn cli_usage_errors_exit_2() {
    assert_eq!(stunnerd(&["render"]).0, 2, "-f is required");
    assert_eq!(
        stunnerd(&["render", "-f", "config/k8s", "--mode", "bogus"]).0,
        2
    );
    assert_eq!(stunnerd(&["render", "-f", "config/k8s", "-o", "xml"]).0, 2);
    assert_eq!(stunnerd(&["render", "--help"]).0, 0);
}

#[test]
fn cli_missing_path_exits_1() {
    let (code, _, stderr) = stunnerd(&["render", "-f", "does/not/exist.yaml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does/not/exist.yaml"), "{stderr}");
}

#[test]
fn cli_reads_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stunnerd"))
        .args(["render", "-f", "-", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut text = String::new();
    for f in BASE.iter().chain(["10-udp-gateway.yaml"].iter()) {
        text.push_str(&std::fs::read_to_string(root().join("config/k8s").join(f)).expect("read"));
        text.push_str("\n---\n");
    }
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["configs"][0]["admin"]["name"], "stunner/udp-gateway");
}
