//! TURN over TCP, TLS and DTLS with real clients: coturn's turnutils_uclient (static and REST
//! credentials, ChannelData and Send indications, odd payload sizes, ECDSA and RSA
//! certificates) and aioice; TLS and DTLS listeners with a malformed or missing certificate
//! that must not take the rest of the config down, and a DTLS listener without any
//! certificate, which validation rejects naming it. Lost DTLS handshake flights: the server
//! resends its ServerHello flight on its own retransmission timer when the client stays
//! silent, and coturn's client gets through a proxy that loses server flights.

use crate::common;

use std::net::SocketAddr;
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

/// Large datagrams (issue 13): ChannelData and Send/Data of 16,000 bytes are relayed over
/// UDP and TCP, and 60,000 bytes over UDP (the loopback MTU allows it; a real path
/// fragments); DTLS carries up to a record's 16 KiB. turnutils_uclient sends and checks
/// every message.
#[test]
fn large_datagrams_are_relayed_on_every_transport() {
    let mut s = start(false, false);
    for (port, flags, size) in [
        (s.udp, &["-c"][..], 16_000),
        (s.udp, &[][..], 16_000),
        (s.udp, &["-c"][..], 60_000),
        (s.tcp, &["-t", "-c"][..], 16_000),
        (s.tcp, &["-t"][..], 16_000),
        (s.tls, &["-t", "-S", "-c"][..], 16_000),
        (s.dtls, &["-S", "-c"][..], 16_000),
    ] {
        let mut r = uclient(port, false, flags, size);
        if r.sent == 0 && r.output.contains("tls_connect: cannot connect") {
            // uclient 4.6.1 gives a (D)TLS handshake a fixed wait; with the whole suite
            // running on two cores that wait passed once (no session was ever created, so
            // nothing reached the relay). One more run; a second failure fails the test.
            eprintln!("uclient {flags:?}: handshake gave up, running it once more");
            r = uclient(port, false, flags, size);
        }
        check(&r, &mut s);
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
    // A loopback listener binds its address only: [::1], not 127.0.0.1.
    wait_udp_ready(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, udp)))
        .expect("stunnerd answers");
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

    // A loopback URI relays to loopback peers (turnutils_peer on 127.0.0.1), over channels
    // and Send indications, which the wildcard route alone would refuse.
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    for mode in ["-c", "-s"] {
        let r = run_uclient([
            mode,
            "-u",
            "user",
            "-w",
            "pass",
            "-e",
            "127.0.0.1",
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
            "127.0.0.1",
        ]);
        server.assert_running("after uclient to a loopback peer");
        r.assert_all_echoed(40, &server.log());
    }
    // ... and it binds 127.0.0.1 only: another address of this host (127.0.0.2, as any
    // non-loopback address would) gets no answer, where a wildcard bind answers.
    assert!(
        !binding_answered(SocketAddr::from(([127, 0, 0, 2], port))),
        "127.0.0.2:{port} answered a Binding"
    );
    assert!(binding_answered(local(port)), "control: 127.0.0.1 answers");
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
    // A loopback TCP listener binds 127.0.0.1 only too.
    let refused = std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 2], tls_port)),
        Duration::from_secs(2),
    );
    assert!(
        refused.is_err(),
        "127.0.0.2:{tls_port} accepted a connection"
    );
}

/// Whether a STUN Binding request to `addr` gets an answer (three tries, 300 ms each).
fn binding_answered(addr: SocketAddr) -> bool {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        let (req, tid) = binding_request();
        sock.send_to(&req, addr).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n >= 20 && buf[8..20] == tid {
                return true;
            }
        }
    }
    false
}

// ------------------------------------------------------------------------------------------
// Lost DTLS handshake flights
// ------------------------------------------------------------------------------------------

/// DTLS record content types.
const CCS: u8 = 20;
const HANDSHAKE: u8 = 22;
/// DTLS handshake message types.
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const HELLO_VERIFY_REQUEST: u8 = 3;
const SERVER_HELLO_DONE: u8 = 14;

/// The (content type, handshake message type) of each DTLS record in a datagram; the
/// message type is 0 for records that are not plaintext (epoch 0) handshake records.
fn records(d: &[u8]) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 13 <= d.len() {
        let len = usize::from(u16::from_be_bytes([d[off + 11], d[off + 12]]));
        let epoch0 = d[off + 3] == 0 && d[off + 4] == 0;
        let msg = if d[off] == HANDSHAKE && epoch0 && len > 0 && off + 13 < d.len() {
            d[off + 13]
        } else {
            0
        };
        out.push((d[off], msg));
        off += 13 + len;
    }
    out
}

fn has_message(d: &[u8], msg: u8) -> bool {
    records(d).iter().any(|&(t, m)| t == HANDSHAKE && m == msg)
}

/// Datagrams in and out of an in-memory openssl DTLS client: the test carries them, so the
/// client sends nothing the test does not send (no retransmission of its own).
#[derive(Default)]
struct Pipe {
    incoming: std::collections::VecDeque<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl std::io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl std::io::Write for Pipe {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.outgoing.push(b.to_vec());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Datagrams from `sock` until one carries `last` (included), or until `wait` has passed;
/// with the time the last one arrived.
fn read_flight(
    sock: &std::net::UdpSocket,
    last: u8,
    wait: Duration,
) -> (Vec<Vec<u8>>, std::time::Instant) {
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut at = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            at = std::time::Instant::now();
            out.push(buf[..n].to_vec());
            if has_message(&buf[..n], last) {
                break;
            }
        }
    }
    (out, at)
}

/// The server's flight of ServerHello..ServerHelloDone is lost and the client stays silent
/// (it never retransmits): the server must resend the flight on its own DTLS retransmission
/// timer (OpenSSL's initial timeout is 1 s), after which the handshake completes and the
/// session answers STUN.
#[test]
fn dtls_server_resends_a_lost_flight_on_its_own_timer() {
    use openssl::ssl::{Ssl, SslContext, SslMethod, SslStream};

    let mut s = start(false, false);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(local(s.dtls)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let ctx = SslContext::builder(SslMethod::dtls()).unwrap().build();
    let mut ssl = Ssl::new(&ctx).unwrap();
    ssl.set_connect_state();
    let mut c = SslStream::new(ssl, Pipe::default()).unwrap();
    let send = |c: &mut SslStream<Pipe>| {
        for d in std::mem::take(&mut c.get_mut().outgoing) {
            sock.send(&d).unwrap();
        }
    };

    // ClientHello, HelloVerifyRequest, ClientHello with the cookie.
    let _ = c.do_handshake();
    send(&mut c);
    let (hvr, _) = read_flight(&sock, HELLO_VERIFY_REQUEST, Duration::from_secs(2));
    assert!(
        hvr.iter().any(|d| has_message(d, HELLO_VERIFY_REQUEST)),
        "no HelloVerifyRequest"
    );
    c.get_mut().incoming.extend(hvr);
    let _ = c.do_handshake();
    send(&mut c);

    // The server's flight up to ServerHelloDone: lost.
    let (lost, lost_at) = read_flight(&sock, SERVER_HELLO_DONE, Duration::from_secs(2));
    assert!(
        lost.iter().any(|d| has_message(d, SERVER_HELLO))
            && lost.iter().any(|d| has_message(d, SERVER_HELLO_DONE)),
        "no ServerHello..ServerHelloDone flight: {:?}",
        lost.iter().map(|d| records(d)).collect::<Vec<_>>()
    );

    // The client sends nothing; the server resends the whole flight by itself.
    let (again, again_at) = read_flight(&sock, SERVER_HELLO_DONE, Duration::from_secs(4));
    let waited = again_at.saturating_duration_since(lost_at);
    assert!(
        again.iter().any(|d| has_message(d, SERVER_HELLO))
            && again.iter().any(|d| has_message(d, SERVER_HELLO_DONE)),
        "the server did not resend its lost flight within 4 s without a client retransmission \
         (got {:?})\n--- server log ---\n{}",
        again.iter().map(|d| records(d)).collect::<Vec<_>>(),
        tail(&s.server.log(), 40)
    );
    eprintln!("FIGURE dtls_flight_resent_after_ms={}", waited.as_millis());
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(2500),
        "the flight came back after {waited:?}, not after the ~1 s DTLS timer"
    );

    // With the resent flight the handshake completes...
    c.get_mut().incoming.extend(again);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    loop {
        let done = c.do_handshake().is_ok();
        send(&mut c);
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the DTLS handshake did not complete after the resent flight"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            c.get_mut().incoming.push_back(buf[..n].to_vec());
        }
    }

    // ...and the session answers a STUN Binding request.
    let (req, tid) = binding_request();
    c.ssl_write(&req).unwrap();
    send(&mut c);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut record = [0u8; 4096];
    let answer = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no Binding response over the DTLS session"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            c.get_mut().incoming.push_back(buf[..n].to_vec());
        }
        if let Ok(n) = c.ssl_read(&mut record) {
            break record[..n].to_vec();
        }
    };
    assert!(
        answer.len() >= 20 && answer[0..2] == [0x01, 0x01] && answer[8..20] == tid,
        "not a Binding success response for our request: {answer:?}"
    );
    s.server.assert_running("after the lossy handshake");
}

/// What the lossy proxy of [`lossy_dtls_proxy`] saw and did.
#[derive(Debug, Default, Clone, Copy)]
struct Losses {
    /// ServerHello datagrams from the server (first transmission and resends).
    server_hellos: u32,
    /// ClientHello resends dropped while the client had no ServerHello.
    client_hellos_dropped: u32,
    /// ChangeCipherSpec datagrams from the server.
    server_ccs: u32,
}

/// A UDP proxy on 127.0.0.1 between DTLS clients and `server`, one upstream socket per
/// client, that loses: the server's first ServerHello and its first ChangeCipherSpec for
/// each client, and every ClientHello a client sends after its second (the one with the
/// cookie) until a ServerHello got through to it, so that the server gets no client
/// retransmission to answer. Runs until `stop` is set (at most 90 s); returns its port.
fn lossy_dtls_proxy(
    server: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u16, std::thread::JoinHandle<Losses>) {
    use std::net::UdpSocket;
    struct Flow {
        up: UdpSocket,
        hellos: u32,
        server_hellos: u32,
        ccs: u32,
    }
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    front.set_nonblocking(true).unwrap();
    let port = front.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut flows: Vec<(std::net::SocketAddr, Flow)> = Vec::new();
        let mut losses = Losses::default();
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !stop.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            let mut idle = true;
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                idle = false;
                if !flows.iter().any(|(a, _)| *a == from) && flows.len() < 64 {
                    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
                    up.connect(server).unwrap();
                    up.set_nonblocking(true).unwrap();
                    flows.push((
                        from,
                        Flow {
                            up,
                            hellos: 0,
                            server_hellos: 0,
                            ccs: 0,
                        },
                    ));
                }
                if let Some((_, f)) = flows.iter_mut().find(|(a, _)| *a == from) {
                    let d = &buf[..n];
                    let mut forward = true;
                    if has_message(d, CLIENT_HELLO) {
                        f.hellos += 1;
                        // A ServerHello got through once the server sent a second one.
                        if f.hellos > 2 && f.server_hellos < 2 {
                            forward = false;
                            losses.client_hellos_dropped += 1;
                        }
                    }
                    if forward {
                        let _ = f.up.send(d);
                    }
                }
            }
            for (client, f) in &mut flows {
                let Ok(n) = f.up.recv(&mut buf) else {
                    continue;
                };
                idle = false;
                let d = &buf[..n];
                let mut forward = true;
                if has_message(d, SERVER_HELLO) {
                    f.server_hellos += 1;
                    losses.server_hellos += 1;
                    forward = f.server_hellos > 1;
                }
                if records(d).iter().any(|&(t, _)| t == CCS) {
                    f.ccs += 1;
                    losses.server_ccs += 1;
                    forward = forward && f.ccs > 1;
                }
                if forward {
                    let _ = front.send_to(d, *client);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        losses
    });
    (port, handle)
}

/// coturn's client through a proxy that loses the server's first ServerHello flight (and
/// the client's ClientHello resends, so only the server's own timer can recover it) and
/// the server's first ChangeCipherSpec+Finished (recovered by the client resending its
/// last flight): every handshake completes and every packet is relayed.
#[test]
fn uclient_over_dtls_through_a_lossy_handshake() {
    let mut s = start(false, false);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (port, proxy) = lossy_dtls_proxy(local(s.dtls), stop.clone());
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let r = run_uclient([
        "-S",
        "-u",
        "user",
        "-w",
        "pass",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port.to_string(),
        "-m",
        "2",
        "-n",
        "20",
        "-z",
        "5",
        "127.0.0.1",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let losses = proxy.join().unwrap();
    eprintln!("FIGURE dtls_lossy_handshake {losses:?}");
    s.server.assert_running("after the lossy handshakes");
    r.assert_all_echoed(40, &s.server.log());
    assert!(
        losses.server_hellos >= 4 && losses.server_ccs >= 4,
        "the proxy did not see every handshake lose and recover a flight: {losses:?}"
    );
}
