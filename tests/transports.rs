//! TURN over TCP, TLS and DTLS with real clients: coturn's turnutils_uclient (static and REST
//! credentials, ChannelData and Send indications, odd payload sizes, ECDSA and RSA
//! certificates) and aioice; TLS and DTLS listeners with a malformed or missing certificate
//! that must not take the rest of the config down, and a DTLS listener without any
//! certificate, which validation rejects naming it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const SECRET: &str = "transport-secret";

struct Setup {
    server: Proc,
    udp: u16,
    tcp: u16,
    tls: u16,
    dtls: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
    _config: tempfile::TempPath,
}

/// stunnerd with a TURN-UDP, a TURN-TCP, a TURN-TLS and a TURN-DTLS listener (and, with
/// `broken_tls`, a second TLS listener whose certificate is garbage).
fn start(ephemeral: bool, broken_tls: bool) -> Setup {
    let extra = if broken_tls {
        vec![
            serde_json::json!({"name": "broken-tls", "protocol": "TURN-TLS",
            "address": "127.0.0.1", "port": free_udp_tcp_port(), "routes": ["local"],
            "cert": "bm90IGEgY2VydGlmaWNhdGU=", "key": "bm90IGEga2V5"}),
        ]
    } else {
        Vec::new()
    };
    start_with(ephemeral, false, extra)
}

/// A self-signed RSA-2048 certificate for 127.0.0.1 and its PKCS#8 key, as PEM.
fn rsa_cert_and_key() -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};

    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "127.0.0.1").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

/// As [`start`], with an RSA instead of an ECDSA certificate if `rsa`, and `extra`
/// listeners appended to the config.
fn start_with(ephemeral: bool, rsa: bool, extra: Vec<serde_json::Value>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = if rsa {
        rsa_cert_and_key()
    } else {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        (
            ck.cert.pem().into_bytes(),
            ck.signing_key.serialize_pem().into_bytes(),
        )
    };
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let (udp, tcp, tls, dtls) = (
        free_udp_tcp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
        free_udp_tcp_port(),
    );
    let auth = if ephemeral {
        serde_json::json!({"type": "ephemeral", "credentials": {"secret": SECRET}})
    } else {
        serde_json::json!({"type": "static", "credentials": {"username": "user", "password": "pass"}})
    };
    let listener = |name: &str, proto: &str, port: u16| {
        serde_json::json!({"name": name, "protocol": proto, "address": "127.0.0.1",
                           "port": port, "routes": ["local"],
                           "cert": cert.to_str().unwrap(), "key": key.to_str().unwrap()})
    };
    let mut listeners = vec![
        listener("udp", "TURN-UDP", udp),
        listener("tcp", "TURN-TCP", tcp),
        listener("tls", "TURN-TLS", tls),
        listener("dtls", "TURN-DTLS", dtls),
    ];
    listeners.extend(extra);
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "transports", "healthcheck_endpoint": ""},
            "auth": auth,
            "listeners": listeners,
            "clusters": [{"name": "local", "endpoints": ["127.0.0.1/32"]}],
        })
        .to_string(),
    );
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg("-c").arg(format!("file://{}", config.display()));
    let server = Proc::spawn("stunnerd", cmd);
    wait_udp_ready(local(udp)).expect("stunnerd answers on UDP");
    Setup {
        server,
        udp,
        tcp,
        tls,
        dtls,
        ca: cert,
        _dir: dir,
        _config: config,
    }
}

fn uclient(port: u16, ephemeral: bool, flags: &[&str], size: u32) -> UclientReport {
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    args.extend(["-u".into(), "user".into()]);
    if ephemeral {
        args.extend(["-W".into(), SECRET.into()]);
    } else {
        args.extend(["-w".into(), "pass".into()]);
    }
    for a in [
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port.to_string(),
        "-m",
        "4",
        "-n",
        "30",
        "-l",
        &size.to_string(),
        "-z",
        "5",
        "127.0.0.1",
    ] {
        args.push(a.to_string());
    }
    run_uclient(&args)
}

fn check(report: &UclientReport, s: &mut Setup) {
    s.server.assert_running("after uclient");
    report.assert_all_echoed(120, &s.server.log());
}

#[test]
fn uclient_over_tcp_static_and_rest_with_odd_sizes() {
    for ephemeral in [false, true] {
        let mut s = start(ephemeral, false);
        for (flags, size) in [
            (&["-t"][..], 121),
            (&["-t", "-c"][..], 333),
            (&["-t", "-s"][..], 77),
        ] {
            let r = uclient(s.tcp, ephemeral, flags, size);
            check(&r, &mut s);
        }
    }
}

#[test]
fn uclient_over_tls_static_and_rest_with_odd_sizes() {
    for ephemeral in [false, true] {
        let mut s = start(ephemeral, false);
        for (flags, size) in [
            (&["-t", "-S"][..], 121),
            (&["-t", "-S", "-s", "-c"][..], 65),
        ] {
            let r = uclient(s.tls, ephemeral, flags, size);
            check(&r, &mut s);
        }
    }
}

#[test]
fn uclient_over_dtls_static_and_rest() {
    for ephemeral in [false, true] {
        let mut s = start(ephemeral, false);
        for (flags, size) in [(&["-S"][..], 121), (&["-S", "-c", "-s"][..], 333)] {
            let r = uclient(s.dtls, ephemeral, flags, size);
            check(&r, &mut s);
        }
    }
}

/// An RSA certificate serves DTLS (openssl) and TLS (rustls) as well as the ECDSA one the
/// other tests use.
#[test]
fn uclient_over_dtls_and_tls_with_an_rsa_certificate() {
    let mut s = start_with(false, true, Vec::new());
    let r = uclient(s.dtls, false, &["-S"], 121);
    check(&r, &mut s);
    let r = uclient(s.tls, false, &["-t", "-S"], 121);
    check(&r, &mut s);
}

fn aioice(s: &mut Setup, port: u16, tls: bool, ephemeral: bool) {
    let mut cmd = Command::new("timeout");
    cmd.arg("40")
        .arg(python())
        .arg(repo_root().join("tests/python/aioice_stream.py"))
        .arg("--server")
        .arg(format!("127.0.0.1:{port}"));
    if tls {
        cmd.arg("--tls").arg("--ca").arg(&s.ca);
    }
    if ephemeral {
        cmd.args(["--secret", SECRET]);
    }
    let out = run_with_timeout(cmd, Duration::from_secs(45));
    let text = out.combined();
    s.server.assert_running("after aioice");
    assert!(
        out.code() == Some(0) && text.contains("STEP echo_333 OK") && !text.contains("FAIL"),
        "aioice over {} failed:\n{text}\n--- server log ---\n{}",
        if tls { "TLS" } else { "TCP" },
        tail(&s.server.log(), 40)
    );
}

#[test]
fn aioice_over_tcp_and_tls() {
    let mut s = start(false, false);
    let (tcp, tls) = (s.tcp, s.tls);
    aioice(&mut s, tcp, false, false);
    aioice(&mut s, tls, true, false);
    let mut s = start(true, false);
    let tls = s.tls;
    aioice(&mut s, tls, true, true);
}

#[test]
fn broken_certificate_stops_only_its_listener() {
    let mut s = start(false, true);
    // The broken listener is named in the log...
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !s.server.log().contains("broken-tls") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.server.log();
    assert!(
        log.contains("listener broken-tls") && log.contains("certificate"),
        "the log does not name the broken listener:\n{log}"
    );
    // ...and the other listeners serve.
    let r = uclient(s.udp, false, &["-c"], 100);
    check(&r, &mut s);
    let r = uclient(s.tls, false, &["-t", "-S"], 100);
    check(&r, &mut s);
}

/// Waits (bounded) until every one of `names` appears in the server log; the log.
fn wait_log(s: &Setup, names: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !names.iter().all(|n| s.server.log().contains(n)) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    s.server.log()
}

/// Whether nothing listens on UDP `port` (stunnerd binds the wildcard address, so a bind
/// to 127.0.0.1 would fail if it did).
fn udp_port_unbound(port: u16) -> bool {
    std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn broken_dtls_certificate_stops_only_its_listener() {
    let (malformed_port, missing_port) = (free_udp_tcp_port(), free_udp_tcp_port());
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let missing = dir.path().join("no-such-cert.pem");
    let extra = vec![
        // A PEM block whose body is not a certificate, with a good key.
        serde_json::json!({"name": "malformed-dtls", "protocol": "TURN-DTLS",
            "address": "127.0.0.1", "port": malformed_port, "routes": ["local"],
            "cert": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
            "key": key.to_str().unwrap()}),
        // A certificate file that does not exist.
        serde_json::json!({"name": "missing-dtls", "protocol": "TURN-DTLS",
            "address": "127.0.0.1", "port": missing_port, "routes": ["local"],
            "cert": missing.to_str().unwrap(), "key": key.to_str().unwrap()}),
    ];
    let mut s = start_with(false, false, extra);
    // Each broken listener is named in the log, with what is wrong...
    let log = wait_log(&s, &["malformed-dtls", "missing-dtls"]);
    for name in ["malformed-dtls", "missing-dtls"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("listener {name}:"))
                && l.contains("DTLS certificate")
                && l.contains("not started")),
            "the log does not name the broken listener {name}:\n{log}"
        );
    }
    // ...is not started...
    assert!(udp_port_unbound(malformed_port) && udp_port_unbound(missing_port));
    // ...and the other listeners serve: TURN-UDP and the good TURN-DTLS listener relay
    // every packet.
    let r = uclient(s.udp, false, &["-c"], 100);
    check(&r, &mut s);
    assert_eq!(r.lost_pct, Some(0.0), "{}", r.output);
    let r = uclient(s.dtls, false, &["-S"], 100);
    check(&r, &mut s);
}

/// A TURN-DTLS listener without any certificate is a validation error that names the
/// listener and its field; stunnerd refuses the config and exits, as upstream does.
#[test]
fn dtls_listener_without_certificate_is_rejected_naming_it() {
    let udp = free_udp_tcp_port();
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "nocert", "healthcheck_endpoint": ""},
            "auth": {"credentials": {"username": "user", "password": "pass"}},
            "listeners": [
                {"name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1", "port": udp,
                 "routes": ["local"]},
                {"name": "dtls-without-cert", "protocol": "TURN-DTLS", "address": "127.0.0.1",
                 "port": free_udp_tcp_port(), "routes": ["local"]}
            ],
            "clusters": [{"name": "local", "endpoints": ["127.0.0.1/32"]}],
        })
        .to_string(),
    );
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg("-c").arg(format!("file://{}", config.display()));
    let mut server = Proc::spawn("stunnerd", cmd);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("stunnerd exits on an invalid config");
    assert!(!status.success());
    let log = server.log();
    assert!(
        log.contains(
            "listeners[1].cert: empty TLS cert for TURN-DTLS listener \"dtls-without-cert\""
        ) && log.contains(
            "listeners[1].key: empty TLS key for TURN-DTLS listener \"dtls-without-cert\""
        ),
        "the error does not name the listener:\n{log}"
    );
}

/// IPv6 end to end on ::1: an IPv6 listener address makes IPv6 relays (the family follows
/// the listener when the client does not ask), relaying to an IPv6 peer admitted by an IPv6
/// prefix, over UDP (ChannelData and Send indications) and TCP.
#[test]
fn ipv6_relaying_over_udp_and_tcp() {
    let (udp, tcp) = (free_udp_tcp_port(), free_udp_tcp_port());
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "ipv6", "healthcheck_endpoint": ""},
            "auth": {"credentials": {"username": "user", "password": "pass"}},
            "listeners": [
                {"name": "udp6", "protocol": "TURN-UDP", "address": "::1", "port": udp, "routes": ["local6"]},
                {"name": "tcp6", "protocol": "TURN-TCP", "address": "::1", "port": tcp, "routes": ["local6"]}
            ],
            "clusters": [{"name": "local6", "endpoints": ["::1/128"]}],
        })
        .to_string(),
    );
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg("-c").arg(format!("file://{}", config.display()));
    let mut server = Proc::spawn("stunnerd", cmd);
    wait_udp_ready(local(udp)).expect("stunnerd answers");
    let peer_port = free_udp_port_pair();
    let mut peer_cmd = Command::new(require_tool("turnutils_peer"));
    peer_cmd.args(["-L", "::1", "-p", &peer_port.to_string()]);
    let _peer = Proc::spawn("turnutils_peer", peer_cmd);
    std::thread::sleep(Duration::from_millis(300));
    for (flags, port) in [(&["-c"][..], udp), (&["-s"][..], udp), (&["-t"][..], tcp)] {
        let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        for a in [
            "-L",
            "::1",
            "-u",
            "user",
            "-w",
            "pass",
            "-e",
            "::1",
            "-r",
            &peer_port.to_string(),
            "-p",
            &port.to_string(),
            "-m",
            "2",
            "-n",
            "20",
            "-l",
            "121",
            "-z",
            "5",
            "::1",
        ] {
            args.push(a.to_string());
        }
        let r = run_uclient(&args);
        server.assert_running("after uclient over IPv6");
        r.assert_all_echoed(40, &server.log());
    }
}

/// `stunnerd turn://user:pass@127.0.0.1:PORT` serves Binding and Allocate with the default
/// configuration of a TURN URI; `turns://...?transport=tcp` serves TLS with a self-signed
/// certificate.
#[test]
fn turn_uri_default_configuration() {
    use stunnerd::snapshot::long_term_key;
    use stunnerd::stun::{Class, Message, MessageWriter, Method, attr};

    let port = free_udp_tcp_port();
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg(format!("turn://user:pass@127.0.0.1:{port}"));
    let mut server = Proc::spawn("stunnerd", cmd);
    wait_udp_ready(local(port)).expect("Binding is answered");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let request = |tid: u8, nonce: Option<&[u8]>| {
        let mut buf = vec![0u8; 256];
        let mut w =
            MessageWriter::new(&mut buf, Method::Allocate, Class::Request, &[tid; 12]).unwrap();
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
        if let Some(nonce) = nonce {
            w.add(attr::USERNAME, b"user").unwrap();
            w.add(attr::REALM, b"stunner.l7mp.io").unwrap();
            w.add(attr::NONCE, nonce).unwrap();
            w.add_integrity(&long_term_key("user", "stunner.l7mp.io", "pass"))
                .unwrap();
        }
        let n = w.finish();
        sock.send_to(&buf[..n], local(port)).unwrap();
        let mut resp = vec![0u8; 1024];
        let n = sock.recv(&mut resp).unwrap();
        resp.truncate(n);
        resp
    };
    let challenge = request(1, None);
    let m = Message::parse(&challenge).unwrap();
    assert_eq!(m.class(), Class::Error);
    let nonce = m.get(attr::NONCE).unwrap().to_vec();
    let ok = request(2, Some(&nonce));
    let m = Message::parse(&ok).unwrap();
    assert_eq!(m.class(), Class::Success, "{:?}", server.log());
    let relayed = attr::decode_xor_addr(
        m.get(attr::XOR_RELAYED_ADDRESS).unwrap(),
        m.transaction_id(),
    )
    .unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    server.assert_running("after Allocate");
    // Both default configurations serve health on :8086: one at a time.
    drop(server);

    let tls_port = free_udp_tcp_port();
    let mut cmd = Command::new(stunnerd_bin());
    cmd.arg(format!(
        "turns://user:pass@127.0.0.1:{tls_port}?transport=tcp"
    ));
    let mut tls_server = Proc::spawn("stunnerd", cmd);
    let mut connected = String::new();
    for _ in 0..50 {
        let mut s_client = Command::new("timeout");
        s_client.args([
            "5",
            "openssl",
            "s_client",
            "-connect",
            &format!("127.0.0.1:{tls_port}"),
        ]);
        let out = run_with_timeout(s_client, Duration::from_secs(8));
        connected = out.combined();
        if connected.contains("BEGIN CERTIFICATE") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tls_server.assert_running("after a TLS handshake");
    assert!(
        connected.contains("BEGIN CERTIFICATE"),
        "no TLS handshake:\n{connected}"
    );
}
