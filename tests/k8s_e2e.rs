//! Manifests on disk -> `stunnerd -w -c DIR --id stunner/udp-gateway` serving the rendered
//! config -> turnutils_uclient relays through the route; an unrelated manifest edit under
//! load loses nothing; an edit removing the route stops the relay within 2 s.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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
    std::fs::remove_file(dir.path().join("30-route.yaml")).unwrap();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
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
