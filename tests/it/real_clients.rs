//! Real-client integration tests: coturn's `turnutils_uclient` (+ `turnutils_peer` as the UDP
//! echo peer) and aioice (`tests/python/aioice_scenario.py`) against a TURN server on
//! 127.0.0.1.
//!
//! Every scenario is a function of the server kind, so it runs against coturn's reference
//! `turnserver` (`reference_coturn_*`: validates the harness itself) and against our
//! `stunnerd` (`stunnerd_*`). Tools come from `scripts/setup.sh`; if they are missing the
//! tests fail and say so.
//!
//! Each test starts its own server and peer on ports of its own, so the tests run in
//! parallel; each one finishes in well under 60 s.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

// ------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------

/// Messages per uclient client in the round-trip scenarios.
const MESSAGES: u64 = 50;

/// Runs uclient (`clients` clients x `MESSAGES` messages of 120 bytes, 5 ms apart) through
/// `server` to a fresh `turnutils_peer` and returns the report.
fn uclient_through(server: &Server, clients: u64, messages: u64, flags: &[&str]) -> UclientReport {
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);
    let mut args: Vec<String> = vec![
        "-e".into(),
        "127.0.0.1".into(),
        "-r".into(),
        peer_port.to_string(),
        "-p".into(),
        server.port.to_string(),
        "-m".into(),
        clients.to_string(),
        "-n".into(),
        messages.to_string(),
        "-l".into(),
        "120".into(),
        "-z".into(),
        "5".into(),
    ];
    args.extend(server.spec.auth.uclient_args());
    args.extend(flags.iter().map(|s| s.to_string()));
    args.push("127.0.0.1".into());
    run_uclient(&args)
}

/// uclient round trip: every message sent comes back (recv == sent == clients * MESSAGES).
fn uclient_roundtrip(spec: ServerSpec, clients: u64, flags: &[&str]) {
    let mut server = start_server(spec);
    let report = uclient_through(&server, clients, MESSAGES, flags);
    server.proc.assert_running("after uclient");
    report.assert_all_echoed(clients * MESSAGES, &server.log());
}

/// ChannelData, with uclient's RTCP allocations (EVEN-PORT + RESERVATION-TOKEN).
fn scenario_channeldata_rtcp(kind: ServerKind) {
    uclient_roundtrip(ServerSpec::new(kind), 4, &[]);
}

/// ChannelData, no RTCP allocations (`-c`).
fn scenario_channeldata_no_rtcp(kind: ServerKind) {
    uclient_roundtrip(ServerSpec::new(kind), 4, &["-c"]);
}

/// Send/Data indications instead of channels (`-s`).
fn scenario_send_indication(kind: ServerKind) {
    uclient_roundtrip(ServerSpec::new(kind), 4, &["-s"]);
}

/// TURN REST (ephemeral) credentials: `-u user -W SECRET`.
fn scenario_rest_auth(kind: ServerKind) {
    uclient_roundtrip(
        ServerSpec::new(kind).auth(Auth::ephemeral_default()),
        4,
        &[],
    );
}

/// Two UDP sockets/workers (`--udp-thread-num 2`; coturn: `--relay-threads 2`), 16 clients:
/// every client's relay must answer, so sent == 16 * n == recv. With `flags` = `["-c"]` each
/// client makes one allocation; with `[]` it also makes an RTCP allocation whose
/// RESERVATION-TOKEN was handed out on the RTP allocation's 5-tuple, which SO_REUSEPORT may
/// hash to the other worker.
fn scenario_two_workers(kind: ServerKind, flags: &[&str]) {
    let mut server = start_server(ServerSpec::new(kind).udp_threads(2));
    let n = 20;
    let report = uclient_through(&server, 16, n, flags);
    server.proc.assert_running("after uclient");
    report.assert_all_echoed(16 * n, &server.log());
}

/// The same through relay sockets on epoll (the path of kernels and seccomp profiles
/// without io_uring), with and without RTCP allocations.
#[test]
fn stunnerd_uclient_two_workers_epoll() {
    let mut server = start_server(
        ServerSpec::new(ServerKind::Stunnerd)
            .udp_threads(2)
            .env("STUNNERD_IO_URING", "off"),
    );
    let n = 20;
    for flags in [&["-c"][..], &[][..]] {
        let report = uclient_through(&server, 16, n, flags);
        server.proc.assert_running("after uclient");
        report.assert_all_echoed(16 * n, &server.log());
    }
    let log = server.log();
    assert!(
        log.contains("worker 0: io_uring off, relay sockets on epoll")
            && log.contains("worker 1: io_uring off, relay sockets on epoll"),
        "both workers on epoll\n{}",
        tail(&log, 20)
    );
}

/// A server whose clusters do not admit the 127.0.0.1 peer: nothing may come back.
fn assert_peer_refused(kind: ServerKind, clusters: &[&str]) {
    let mut server = start_server(ServerSpec::new(kind).clusters(clusters));
    for flags in [&["-c"][..], &["-s", "-c"][..], &[][..]] {
        let report = uclient_through(&server, 2, 10, flags);
        assert!(
            report.recv == 0,
            "clusters {clusters:?}, uclient {flags:?}: {} messages came back from a refused peer\n{}",
            report.recv,
            tail(&report.output, 30)
        );
        // Make sure the refusal came from peer filtering, not from a dead server or a failed
        // allocation: uclient either got an error for CreatePermission/ChannelBind or got to
        // send data that was dropped.
        assert!(
            !report.allocation_failed() && (report.peer_refused() || report.sent > 0),
            "clusters {clusters:?}, uclient {flags:?}: no sign of the peer being refused \
             (allocation failed?)\n--- uclient ---\n{}\n--- server ---\n{}",
            tail(&report.output, 30),
            tail(&server.log(), 40)
        );
        server.proc.assert_running("after a refused uclient run");
    }
    wait_udp_ready(server.addr()).expect("server still answers STUN after refusals");
}

/// Only cluster is TEST-NET-1: the 127.0.0.1 peer is refused.
fn scenario_refused_peer_other_cluster(kind: ServerKind) {
    assert_peer_refused(kind, &["192.0.2.0/24"]);
}

/// `0.0.0.0/0` does not admit loopback peers (built-in deny list unless named explicitly).
fn scenario_refused_peer_loopback_not_named(kind: ServerKind) {
    assert_peer_refused(kind, &["0.0.0.0/0"]);
}

/// The steps `tests/python/aioice_scenario.py` prints, all of which must be OK.
const AIOICE_STEPS: &[&str] = &[
    "turn_endpoint",
    "allocate",
    "create_permission",
    "send_indication",
    "channel_bind",
    "channel_data",
    "no_permission",
    "stranger_permitted",
    "forbidden_peer",
    "refresh",
    "deallocate",
    "refresh_after_delete",
];

/// aioice scenario (see the script's docstring). The clusters admit 127.0.0.0/8 so that the
/// "stranger" on 127.0.0.2 is kept out by the missing TURN permission alone; the forbidden
/// peer 192.0.2.1 is outside every cluster (it only appears in a CreatePermission request).
fn scenario_aioice(kind: ServerKind, auth: Auth) {
    let python = python();
    let script = repo_root().join("tests/python/aioice_scenario.py");
    let mut server = start_server(ServerSpec::new(kind).clusters(&["127.0.0.0/8"]).auth(auth));
    let peer_port = free_udp_port_pair();
    let _peer = start_peer(peer_port);

    let mut cmd = Command::new("timeout");
    cmd.arg("50")
        .arg(&python)
        .arg(&script)
        .arg("--server")
        .arg(server.addr().to_string())
        .arg("--transport")
        .arg("udp")
        .arg("--peer")
        .arg(format!("127.0.0.1:{peer_port}"))
        .arg("--forbidden-peer")
        .arg("192.0.2.1:9")
        .arg("--stranger-ip")
        .arg("127.0.0.2")
        .arg("--timeout")
        .arg("40");
    match &server.spec.auth {
        Auth::Static { username, password } => {
            cmd.args(["--username", username, "--password", password]);
        }
        Auth::Ephemeral { secret } => {
            cmd.args(["--username", USER, "--secret", secret]);
        }
    }
    if kind == ServerKind::Coturn {
        // coturn frees a deallocated allocation on its next ~1 s timer tick, and a Refresh
        // before that revives it. stunnerd deletes at once (RFC 8656), so no wait there.
        cmd.args(["--dealloc-wait", "1.5"]);
    }
    cmd.env("PYTHONUNBUFFERED", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(55));
    let text = out.combined();
    server.proc.assert_running("after the aioice scenario");

    let failed: Vec<&str> = AIOICE_STEPS
        .iter()
        .copied()
        .filter(|step| !text.contains(&format!("STEP {step} OK")))
        .collect();
    assert!(
        failed.is_empty() && out.code() == Some(0),
        "aioice scenario against {}: steps not OK: {failed:?}, exit {:?}\n--- script output ---\n{}\n--- server log (tail) ---\n{}",
        describe(&server),
        out.status,
        text,
        tail(&server.log(), 60)
    );
}

// ------------------------------------------------------------------------------------------
// coturn reference server: checks of the harness itself
// ------------------------------------------------------------------------------------------

/// The permanent harness check: coturn + turnutils_peer + turnutils_uclient, ChannelData.
#[test]
fn reference_coturn_smoke() {
    let mut server = start_server(ServerSpec::new(ServerKind::Coturn));
    let report = uclient_through(&server, 2, 20, &["-c"]);
    server.proc.assert_running("after uclient");
    report.assert_all_echoed(40, &server.log());
    assert_eq!(report.lost_pct, Some(0.0), "{}", report.output);
}

#[test]
fn reference_coturn_uclient_channeldata_rtcp() {
    scenario_channeldata_rtcp(ServerKind::Coturn);
}

#[test]
fn reference_coturn_uclient_channeldata_no_rtcp() {
    scenario_channeldata_no_rtcp(ServerKind::Coturn);
}

#[test]
fn reference_coturn_uclient_send_indication() {
    scenario_send_indication(ServerKind::Coturn);
}

#[test]
fn reference_coturn_uclient_rest_auth() {
    scenario_rest_auth(ServerKind::Coturn);
}

#[test]
fn reference_coturn_uclient_two_workers() {
    scenario_two_workers(ServerKind::Coturn, &["-c"]);
}

#[test]
fn reference_coturn_uclient_two_workers_rtcp() {
    scenario_two_workers(ServerKind::Coturn, &[]);
}

#[test]
fn reference_coturn_refused_peer_other_cluster() {
    scenario_refused_peer_other_cluster(ServerKind::Coturn);
}

#[test]
fn reference_coturn_refused_peer_loopback_not_named() {
    scenario_refused_peer_loopback_not_named(ServerKind::Coturn);
}

#[test]
fn reference_coturn_aioice_static() {
    scenario_aioice(ServerKind::Coturn, Auth::static_default());
}

#[test]
fn reference_coturn_aioice_rest() {
    scenario_aioice(ServerKind::Coturn, Auth::ephemeral_default());
}

// ------------------------------------------------------------------------------------------
// stunnerd
// ------------------------------------------------------------------------------------------

#[test]
fn stunnerd_uclient_channeldata_rtcp() {
    scenario_channeldata_rtcp(ServerKind::Stunnerd);
}

#[test]
fn stunnerd_uclient_channeldata_no_rtcp() {
    scenario_channeldata_no_rtcp(ServerKind::Stunnerd);
}

#[test]
fn stunnerd_uclient_send_indication() {
    scenario_send_indication(ServerKind::Stunnerd);
}

#[test]
fn stunnerd_uclient_rest_auth() {
    scenario_rest_auth(ServerKind::Stunnerd);
}

#[test]
fn stunnerd_uclient_two_workers() {
    scenario_two_workers(ServerKind::Stunnerd, &["-c"]);
}

#[test]
fn stunnerd_uclient_two_workers_rtcp() {
    scenario_two_workers(ServerKind::Stunnerd, &[]);
}

#[test]
fn stunnerd_refused_peer_other_cluster() {
    scenario_refused_peer_other_cluster(ServerKind::Stunnerd);
}

#[test]
fn stunnerd_refused_peer_loopback_not_named() {
    scenario_refused_peer_loopback_not_named(ServerKind::Stunnerd);
}

#[test]
fn stunnerd_aioice_static() {
    scenario_aioice(ServerKind::Stunnerd, Auth::static_default());
}

#[test]
fn stunnerd_aioice_rest() {
    scenario_aioice(ServerKind::Stunnerd, Auth::ephemeral_default());
}

// ------------------------------------------------------------------------------------------
// stunnerd command line and config errors
// ------------------------------------------------------------------------------------------

/// Runs stunnerd with `args` and expects it to exit by itself within 10 s with `code`.
fn expect_exit(args: &[String], code: i32, mention: Option<&str>) {
    let mut cmd = Command::new(stunnerd_bin());
    cmd.args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    let text = out.combined();
    assert_eq!(
        out.code(),
        Some(code),
        "stunnerd {args:?}: expected exit {code}, got {:?} (None = still running after 10 s)\n{text}",
        out.status
    );
    if let Some(m) = mention {
        assert!(
            text.contains(m),
            "stunnerd {args:?}: output does not mention {m:?}:\n{text}"
        );
    }
}

/// Invalid config files: exit 1, and the output names the bad field.
#[test]
fn stunnerd_invalid_config_exits_1() {
    // Listener ports are fresh, and health checks off, in case a config is wrongly accepted.
    let port = free_udp_tcp_port();
    let listener = |extra: &str| {
        format!(
            r#"{{"name":"udp","protocol":"TURN-UDP","address":"127.0.0.1","routes":["local"]{extra}}}"#
        )
    };
    let config = |version: &str, auth: &str, listener: &str, endpoints: &str| {
        format!(
            r#"{{"version":"{version}","admin":{{"name":"test","healthcheck_endpoint":""}},
                "auth":{auth},"listeners":[{listener}],
                "clusters":[{{"name":"local","type":"STATIC","endpoints":[{endpoints}]}}]}}"#
        )
    };
    let good_auth = r#"{"type":"static","credentials":{"username":"user","password":"pass"}}"#;
    let good_listener = listener(&format!(r#","port":{port}"#));
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "port out of range",
            config(
                "v1",
                good_auth,
                &listener(r#","port":70000"#),
                r#""127.0.0.1""#,
            ),
            Some("listeners[0].port"),
        ),
        (
            "unsupported version",
            config("v2", good_auth, &good_listener, r#""127.0.0.1""#),
            Some("unsupported API version"),
        ),
        (
            "unknown auth type",
            config(
                "v1",
                r#"{"type":"Static","credentials":{"username":"user","password":"pass"}}"#,
                &good_listener,
                r#""127.0.0.1""#,
            ),
            Some("auth.type"),
        ),
        (
            "bad endpoint",
            config("v1", good_auth, &good_listener, r#""bogus:<1-2>""#),
            Some("clusters[0].endpoints"),
        ),
        ("not a config", "{ this is not json".to_string(), None),
    ];
    for (what, text, mention) in cases {
        let path = write_config(&text);
        eprintln!("case: {what}");
        expect_exit(
            &["-c".into(), format!("file://{}", path.display())],
            1,
            mention,
        );
    }
    // A config file that does not exist.
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.json");
    expect_exit(
        &["-c".into(), format!("file://{}", missing.display())],
        1,
        None,
    );
}

/// An unknown flag exits 2 (pflag/clap usage error).
#[test]
fn stunnerd_unknown_flag_exits_2() {
    expect_exit(&["--no-such-flag".into()], 2, None);
}

// ------------------------------------------------------------------------------------------
// Harness self-tests (no external tools needed)
// ------------------------------------------------------------------------------------------

#[test]
fn harness_parses_uclient_output() {
    let sample = "\
3: : start_mclient: msz=4, tot_send_msgs=50, tot_recv_msgs=50, tot_send_bytes ~ 6000, tot_recv_bytes ~ 6000
4: : start_mclient: msz=4, tot_send_msgs=104, tot_recv_msgs=102, tot_send_bytes ~ 12480, tot_recv_bytes ~ 12240
6: : start_mclient: tot_send_msgs=200, tot_recv_msgs=199
6: : start_mclient: tot_send_bytes ~ 24000, tot_recv_bytes ~ 23880
6: : Total transmit time is 6
6: : Total lost packets 1 (0.500000%), total send dropped 0 (0.000000%)
";
    let (totals, lost) = parse_uclient_output(sample);
    assert_eq!(totals, Some((200, 199)));
    assert_eq!(lost, Some(0.5));
    let (totals, lost) = parse_uclient_output("0: : channel bind: error 403 (Forbidden IP)\n");
    assert_eq!((totals, lost), (None, None));
}

#[test]
fn harness_ports_are_distinct() {
    // (Not asserting the ports are still free: another process may take one any time.)
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let p = free_udp_port_pair();
        assert!(
            seen.insert(p) && seen.insert(p + 1),
            "port {p} handed out twice"
        );
        assert!(!(3478..=3481).contains(&p) && !(3478..=3481).contains(&(p + 1)));
    }
}

#[test]
fn harness_binding_request_is_well_formed() {
    let (msg, tid) = binding_request();
    assert_eq!(&msg[0..4], &[0x00, 0x01, 0x00, 0x00]);
    assert_eq!(&msg[4..8], &[0x21, 0x12, 0xA4, 0x42]);
    assert_eq!(&msg[8..20], &tid);
}
