//! Manifests on disk -> `stunnerd -w -c DIR --id stunner/udp-gateway` serving the rendered
//! config -> turnutils_uclient relays through the route; an unrelated manifest edit under
//! load loses nothing; an edit removing the route stops the relay within 2 s. A Service
//! without a selector, whose pods are listed in a core/v1 `Endpoints` object, is a backend
//! in `stunnerd render`, `stunnerd cds-server` and the manifests origin alike, and the
//! manifests origin follows edits of that `Endpoints` object without restarting a listener.

use crate::common;
use crate::ops_util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ops_util::{http_get, wait_for};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: stunner
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: stunner-gatewayclass
spec:
  controllerName: "stunner.l7mp.io/gateway-operator"
  parametersRef:
    group: "stunner.l7mp.io"
    kind: GatewayConfig
    name: stunner-gatewayconfig
    namespace: stunner
---
apiVersion: stunner.l7mp.io/v1
kind: GatewayConfig
metadata:
  name: stunner-gatewayconfig
  namespace: stunner
spec:
  realm: stunner.l7mp.io
  authType: static
  userName: user-1
  password: pass-1
---
apiVersion: stunner.l7mp.io/v1
kind: Dataplane
metadata:
  name: default
spec:
  image: l7mp/stunnerd:latest
  disableHealthCheck: true
"#;

fn gateway(port: u16) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: udp-gateway
  namespace: stunner
spec:
  gatewayClassName: stunner-gatewayclass
  listeners:
    - name: udp-listener
      port: {port}
      protocol: TURN-UDP
"#
    )
}

fn static_service(prefixes: &[&str]) -> String {
    let list: String = prefixes
        .iter()
        .map(|p| format!("    - \"{p}\"\n"))
        .collect();
    format!(
        "apiVersion: stunner.l7mp.io/v1\nkind: StaticService\nmetadata:\n  name: local-peers\n  namespace: stunner\nspec:\n  prefixes:\n{list}"
    )
}

const ROUTE: &str = r#"
apiVersion: stunner.l7mp.io/v1
kind: UDPRoute
metadata:
  name: media-plane-route
  namespace: stunner
spec:
  parentRefs:
    - name: udp-gateway
  rules:
    - backendRefs:
        - group: stunner.l7mp.io
          kind: StaticService
          name: local-peers
"#;

/// Replace a file the way editors do: write a temporary file, rename it over.
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn uclient_args(port: u16, peer: u16, n: u32, interval_ms: u32) -> Vec<String> {
    [
        "-c",
        "-u",
        "user-1",
        "-w",
        "pass-1",
        "-e",
        "127.0.0.1",
        "-r",
        &peer.to_string(),
        "-p",
        &port.to_string(),
        "-m",
        "2",
        "-n",
        &n.to_string(),
        "-l",
        "100",
        "-z",
        &interval_ms.to_string(),
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn manifests_origin_follows_edits() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_tcp_port();
    write(dir.path(), "00-base.yaml", BASE);
    write(dir.path(), "10-gateway.yaml", &gateway(port));
    write(
        dir.path(),
        "20-static-svc.yaml",
        &static_service(&["127.0.0.1/32"]),
    );
    write(dir.path(), "30-route.yaml", ROUTE);

    // What the daemon will serve, as `stunnerd render` shows it.
    let mut render = Command::new(stunnerd_bin());
    render
        .args(["render", "-f"])
        .arg(dir.path())
        .args(["-o", "json"]);
    let out = run_with_timeout(render, Duration::from_secs(20));
    assert_eq!(out.code(), Some(0), "render failed:\n{}", out.combined());
    assert!(
        out.combined().contains("127.0.0.1/32"),
        "{}",
        out.combined()
    );

    let mut cmd = Command::new(stunnerd_bin());
    cmd.args(["-w", "--id", "stunner/udp-gateway", "-c"])
        .arg(dir.path())
        .env("STUNNER_ADDR", "127.0.0.1");
    let mut server = Proc::spawn("stunnerd", cmd);
    wait_udp_ready(local(port)).expect("the rendered listener answers");
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);

    // Relays through the route.
    let r = run_uclient(uclient_args(port, peer_port, 20, 5));
    r.assert_all_echoed(40, &server.log());

    // An edit that does not concern the running allocations, under load: nothing is lost.
    let args = uclient_args(port, peer_port, 150, 20);
    let load = std::thread::spawn(move || run_uclient(args));
    std::thread::sleep(Duration::from_millis(1500));
    write(
        dir.path(),
        "20-static-svc.yaml",
        &static_service(&["127.0.0.1/32", "198.51.100.0/24"]),
    );
    let r = load.join().unwrap();
    server.assert_running("after the unrelated edit");
    r.assert_all_echoed(300, &server.log());

    // Removing the route stops relaying within 2 s.
    let applied = server.log().matches("new configuration applied").count();
    std::fs::remove_file(dir.path().join("30-route.yaml")).unwrap();
    let start = Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || server
            .log()
            .matches("new configuration applied")
            .count()
            > applied),
        "the removal was not applied within 2 s:\n{}",
        server.log()
    );
    let r = run_uclient(uclient_args(port, peer_port, 10, 5));
    server.assert_running("after removing the route");
    assert_eq!(
        r.recv,
        0,
        "relayed after the route was removed ({:?} later)",
        start.elapsed()
    );
    assert!(
        r.peer_refused() || r.sent == 0 || r.allocation_failed(),
        "expected a refusal, got:\n{}",
        tail(&r.output, 20)
    );
}

/// A Service without a selector fronting a media server outside the cluster (the
/// turnutils_peer on 127.0.0.1), listed in a hand-written core/v1 `Endpoints` object, and a
/// route to it. The ClusterIP alone (what an adapter ignoring `Endpoints` renders) does not
/// admit the peer.
const SELECTORLESS: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: external-media
  namespace: stunner
spec:
  clusterIP: 10.96.0.10
  ports:
    - port: 9
      protocol: UDP
---
apiVersion: v1
kind: Endpoints
metadata:
  name: external-media
  namespace: stunner
subsets:
  - addresses:
      - ip: 127.0.0.1
    ports:
      - port: 9
        protocol: UDP
---
apiVersion: stunner.l7mp.io/v1
kind: UDPRoute
metadata:
  name: media-plane-route
  namespace: stunner
spec:
  parentRefs:
    - name: udp-gateway
  rules:
    - backendRefs:
        - name: external-media
"#;

#[test]
fn selectorless_service_endpoints_in_render_cds_server_and_manifests_origin() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_tcp_port();
    write(dir.path(), "00-base.yaml", BASE);
    write(dir.path(), "10-gateway.yaml", &gateway(port));
    write(dir.path(), "20-external-media.yaml", SELECTORLESS);
    let want = ["127.0.0.1", "10.96.0.10"];

    // `stunnerd render`: the Endpoints address is in the cluster, and no note says the
    // object was skipped.
    let mut render = Command::new(stunnerd_bin());
    render
        .args(["render", "-f"])
        .arg(dir.path())
        .args(["-o", "json"]);
    let out = run_with_timeout(render, Duration::from_secs(20));
    assert_eq!(out.code(), Some(0), "render failed:\n{}", out.combined());
    assert!(!out.stderr.contains("Endpoints"), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("render JSON");
    let eps = &v["configs"][0]["clusters"][0]["endpoints"];
    for ip in want {
        assert!(
            eps.as_array().unwrap().iter().any(|e| e == ip),
            "{ip} missing: {eps}"
        );
    }

    // `stunnerd cds-server -f DIR` serves the same cluster.
    let cds_port = free_udp_tcp_port();
    let mut cmd = Command::new(stunnerd_bin());
    cmd.args(["cds-server", "-f"])
        .arg(dir.path())
        .args(["--addr", &format!("127.0.0.1:{cds_port}")]);
    let cds = Proc::spawn("cds-server", cmd);
    let mut body = String::new();
    let served = wait_for(Duration::from_secs(5), || {
        match http_get(cds_port, "/api/v1/configs/stunner/udp-gateway") {
            Some((200, b)) => {
                body = b;
                true
            }
            _ => false,
        }
    });
    assert!(served, "cds-server did not serve the config\n{}", cds.log());
    let v: serde_json::Value = serde_json::from_str(&body).expect("cds JSON");
    let eps = &v["clusters"][0]["endpoints"];
    for ip in want {
        assert!(
            eps.as_array().unwrap().iter().any(|e| e == ip),
            "{ip} missing: {eps}"
        );
    }
    drop(cds);

    // The manifests origin: a real client relays to the media server behind the Endpoints.
    let mut cmd = Command::new(stunnerd_bin());
    cmd.args(["-w", "--id", "stunner/udp-gateway", "-c"])
        .arg(dir.path())
        .env("STUNNER_ADDR", "127.0.0.1");
    let server = Proc::spawn("stunnerd", cmd);
    wait_udp_ready(local(port)).expect("the rendered listener answers");
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let r = run_uclient(uclient_args(port, peer_port, 20, 5));
    r.assert_all_echoed(40, &server.log());

    // The daemon follows edits of the Endpoints object: the media server moves elsewhere
    // (the local peer is no longer a backend), then comes back. The cluster is updated in
    // place; the listener is not restarted.
    let applied = |server: &Proc, n: usize| {
        let mut line = String::new();
        let ok = wait_for(Duration::from_secs(5), || {
            let log = server.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("new configuration applied"))
                .collect();
            line = lines.get(n).map(|l| l.to_string()).unwrap_or_default();
            !line.is_empty()
        });
        assert!(ok, "edit {n} not applied\n{}", server.log());
        line
    };
    let before = server.log().matches("new configuration applied").count();
    write(
        dir.path(),
        "20-external-media.yaml",
        &SELECTORLESS.replace("- ip: 127.0.0.1", "- ip: 192.0.2.10"),
    );
    let line = applied(&server, before);
    println!("measured: Endpoints moved: {line}");
    assert!(line.contains("clusters updated"), "{line}");
    assert!(!line.contains("listeners restarted"), "{line}");
    let r = run_uclient(uclient_args(port, peer_port, 10, 5));
    assert_eq!(r.recv, 0, "relayed to a peer no longer in the Endpoints");
    assert!(
        r.peer_refused() || r.sent == 0 || r.allocation_failed(),
        "expected a refusal, got:\n{}",
        tail(&r.output, 20)
    );
    write(dir.path(), "20-external-media.yaml", SELECTORLESS);
    let line = applied(&server, before + 1);
    println!("measured: Endpoints restored: {line}");
    assert!(line.contains("clusters updated"), "{line}");
    let r = run_uclient(uclient_args(port, peer_port, 20, 5));
    r.assert_all_echoed(40, &server.log());
}
