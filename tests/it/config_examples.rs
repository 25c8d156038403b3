//! Every example config in `config/` must parse and validate, so the examples cannot rot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use stunnerd::config::{AuthType, ClusterType, ListenerProtocol, Parsed, parse_config};

/// The environment the operator's Deployment provides (spec §1.5); the examples use
/// `$STUNNER_ADDR` like operator-rendered configs do.
fn pod_env(name: &str) -> Option<String> {
    let env: HashMap<&str, &str> = [("STUNNER_ADDR", "10.0.0.5")].into_iter().collect();
    env.get(name).map(|v| v.to_string())
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn load(name: &str) -> Parsed {
    let path = config_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_config(&text, &pod_env)
        .unwrap_or_else(|e| panic!("{} does not validate:\n{e}", path.display()))
}

#[test]
fn every_example_parses_without_warnings() {
    let mut seen = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("readable dir entry").path();
        let is_config = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "json" | "yaml" | "yml" | "conf"));
        if !is_config {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let parsed = load(name);
        assert!(parsed.warnings.is_empty(), "{name}: {:?}", parsed.warnings);
        assert!(!parsed.config.is_zero(), "{name} is a zero config");
        seen += 1;
    }
    assert!(
        seen >= 4,
        "expected at least 4 example configs, found {seen}"
    );
}

#[test]
fn udp_example() {
    let c = load("stunnerd-udp.yaml").config;
    assert_eq!(c.auth.auth_type, AuthType::Static);
    assert_eq!(c.auth.credentials["username"], "user-1");
    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::TurnUdp);
    assert_eq!(l.relay_ip().to_string(), "127.0.0.1");
    assert_eq!(l.port, 3478);
    assert_eq!(c.clusters[0].endpoints, ["127.0.0.1/32"]);
}

#[test]
fn ephemeral_example_keeps_dollar_in_secret() {
    let c = load("stunnerd-ephemeral.json").config;
    assert_eq!(c.auth.auth_type, AuthType::Ephemeral);
    assert_eq!(c.auth.credentials["secret"], "my-$hared-secret");
    assert_eq!(c.admin.metrics_endpoint, "http://:8080/metrics");
}

#[test]
fn full_example() {
    let c = load("stunnerd-full.json").config;
    assert_eq!(c.admin.user_quota, 10);
    assert_eq!(c.auth.realm, "turn.example.net");
    let protocols: Vec<&str> = c.listeners.iter().map(|l| l.protocol.as_str()).collect();
    assert_eq!(protocols, ["TURN-UDP", "TURN-TCP", "TURN-TLS", "TURN-DTLS"]);
    assert!(c.listeners.iter().all(|l| l.address == "10.0.0.5"));
    // Routes are sorted.
    assert_eq!(c.listeners[0].routes, ["media/recorder", "media/sfu"]);
    let recorder = c.cluster("media/recorder").expect("recorder cluster");
    assert_eq!(recorder.cluster_type, ClusterType::StrictDns);
}

#[test]
fn operator_example() {
    let c = load("operator-udp-gateway.json").config;
    assert_eq!(c.admin.name, "stunner/udp-gateway");
    assert_eq!(
        c.admin.healthcheck_endpoint.as_deref(),
        Some("http://:8086")
    );
    let l = &c.listeners[0];
    assert_eq!(l.relay_ip().to_string(), "10.0.0.5");
    assert_eq!(
        (l.public_address.as_str(), l.public_port),
        ("198.51.100.20", 3478)
    );
    assert_eq!(c.clusters[0].endpoints, ["10.76.1.3", "10.80.7.104"]);
}

#[test]
fn public_server_example() {
    let c = load("stunnerd-public.yaml").config;
    assert_eq!(c.auth.auth_type, AuthType::Ephemeral);
    assert!(!c.auth.credentials["secret"].is_empty());
    let listeners: Vec<(&str, u16)> = c
        .listeners
        .iter()
        .map(|l| (l.protocol.as_str(), l.port))
        .collect();
    assert_eq!(
        listeners,
        [("TURN-UDP", 3478), ("TURN-TCP", 3478), ("TURN-TLS", 5349)]
    );
    for l in &c.listeners {
        assert_eq!(
            (l.min_relay_port, l.max_relay_port),
            (Some(49152), Some(65535)),
            "{}",
            l.name
        );
        assert_eq!(l.routes, ["internet"], "{}", l.name);
    }
    let tls = &c.listeners[2];
    assert_eq!(
        tls.cert,
        "/etc/letsencrypt/live/turn.example.com/fullchain.pem"
    );
    assert_eq!(
        tls.key,
        "/etc/letsencrypt/live/turn.example.com/privkey.pem"
    );
    assert_eq!(c.cluster("internet").unwrap().endpoints, ["0.0.0.0/0"]);
    // Health and metrics stay on loopback.
    assert_eq!(
        c.admin.healthcheck_endpoint.as_deref(),
        Some("http://127.0.0.1:8086")
    );
    assert_eq!(c.admin.metrics_endpoint, "http://127.0.0.1:8080/metrics");
}

/// The systemd unit in docs/: the hardening it promises is there, and, when
/// `systemd-analyze` exists, `systemd-analyze verify` accepts it without a warning (its
/// ExecStart pointed at the binary just built, since verify checks that it is executable).
#[test]
fn systemd_unit_example() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/stunnerd.service");
    let unit = std::fs::read_to_string(&path).expect("docs/stunnerd.service");
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for want in [
        "ExecStart=/usr/local/bin/stunnerd -w -c file:///etc/stunnerd/stunnerd.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=1048576",
        "User=stunnerd",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            settings.contains(&want),
            "docs/stunnerd.service lacks {want:?}"
        );
    }

    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success(), "systemd-analyze --version failed");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("stunnerd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/stunnerd", env!("CARGO_BIN_EXE_stunnerd")),
    )
    .expect("write unit");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify docs/stunnerd.service (exit {:?}):\n{text}",
        out.status.code()
    );
}

/// The config shown in the README (its first `yaml` block) parses as shown.
#[test]
fn readme_config_block_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let block: String = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a yaml block")
        .to_string();
    let parsed = parse_config(&block, &pod_env)
        .unwrap_or_else(|e| panic!("README's config does not validate:\n{e}\n{block}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let l = &parsed.config.listeners[0];
    assert_eq!(
        (l.port, l.min_relay_port, l.max_relay_port),
        (3478, Some(49152), Some(65535))
    );
    assert_eq!(parsed.config.clusters[0].endpoints, ["127.0.0.1/32"]);
}

/// The container image's /stunnerd.conf: one TURN-UDP listener on $STUNNER_ADDR:3478 routed
/// to the public Internet.
#[test]
fn container_example() {
    let c = load("stunnerd-container.yaml").config;
    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::TurnUdp);
    assert_eq!((l.address.as_str(), l.port), ("10.0.0.5", 3478));
    assert_eq!(c.clusters[0].endpoints, ["0.0.0.0/0"]);
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("Dockerfile");
    assert!(dockerfile.contains("config/stunnerd-container.yaml out/stunnerd.conf"));
    assert!(dockerfile.contains(r#"CMD ["stunnerd", "-c", "/stunnerd.conf"]"#));
}
