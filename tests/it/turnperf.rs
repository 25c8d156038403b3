//! `turnperf` (the project's TURN load generator) against real servers: our `stunnerd` with
//! static and TURN REST credentials, ChannelData and Send indications, echo peer and
//! client-to-client paths, and coturn's `turnserver` (the load generator must drive it too,
//! so that comparisons use the same client).
//!
//! Short runs (4 allocations, 1.5 s measured) at a modest rate: every message must come
//! back. Servers are started by `common::start_server` on ports of their own and killed by
//! PID when the test ends.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The `key=value` fields of turnperf's `RESULT` line.
struct RunResult {
    fields: Vec<(String, String)>,
}

impl RunResult {
    fn parse(stdout: &str) -> Option<RunResult> {
        let line = stdout.lines().find(|l| l.starts_with("RESULT "))?;
        let fields = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(RunResult { fields })
    }

    fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    fn num(&self, key: &str) -> f64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("RESULT has no numeric {key}"))
    }
}

fn turnperf(server: &Server, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnperf"));
    cmd.arg("--server").arg(server.addr().to_string());
    match &server.spec.auth {
        Auth::Static { username, password } => {
            cmd.args(["-u", username, "-w", password]);
        }
        Auth::Ephemeral { secret } => {
            cmd.args(["-u", USER, "-W", secret]);
        }
    }
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// Runs a short load through `server` and checks that every message came back.
fn all_echoed(server: &Server, extra: &[&str]) -> RunResult {
    let mut args = vec!["-m", "4", "-r", "500", "-d", "1.5", "--warmup", "0.3"];
    args.extend_from_slice(extra);
    let out = turnperf(server, &args);
    let ctx = || {
        format!(
            "{}\nturnperf {args:?}: exit {:?}\n{}\n--- server log (tail) ---\n{}",
            describe(server),
            out.code(),
            out.combined(),
            tail(&server.log(), 30)
        )
    };
    assert_eq!(out.code(), Some(0), "{}", ctx());
    let r = RunResult::parse(&out.stdout).unwrap_or_else(|| panic!("no RESULT line: {}", ctx()));
    let (sent, recv) = (r.num("sent"), r.num("recv"));
    assert!(sent > 0.0, "nothing sent: {}", ctx());
    assert_eq!(recv, sent, "lost messages: {}", ctx());
    assert_eq!(r.num("loss_pct"), 0.0, "{}", ctx());
    assert!(r.num("rtt_p50_us") > 0.0, "{}", ctx());
    assert!(r.num("rtt_max_us") >= r.num("rtt_p99_us"), "{}", ctx());
    assert!(r.num("setup_allocs_per_s") > 0.0, "{}", ctx());
    assert_eq!(r.get("allocs"), "4", "{}", ctx());
    r
}

fn stunnerd(auth: Auth) -> Server {
    start_server(ServerSpec::new(ServerKind::Stunnerd).auth(auth))
}

#[test]
fn stunnerd_channel_data_static_auth() {
    let server = stunnerd(Auth::static_default());
    let r = all_echoed(&server, &[]);
    assert_eq!(r.get("mode"), "channel");
    assert_eq!(r.get("path"), "peer");
}

#[test]
fn stunnerd_send_indications_static_auth() {
    let server = stunnerd(Auth::static_default());
    let r = all_echoed(&server, &["-s"]);
    assert_eq!(r.get("mode"), "send");
}

#[test]
fn stunnerd_rest_auth_both_modes() {
    let server = stunnerd(Auth::ephemeral_default());
    all_echoed(&server, &[]);
    all_echoed(&server, &["-s"]);
}

#[test]
fn stunnerd_client_to_client() {
    let server = stunnerd(Auth::static_default());
    let r = all_echoed(&server, &["-y"]);
    assert_eq!(r.get("path"), "c2c");
}

#[test]
fn stunnerd_setup_only_reports_the_setup_rate() {
    let server = stunnerd(Auth::static_default());
    let out = turnperf(
        &server,
        &["-m", "64", "--setup-only", "--hold", "0.2", "--json"],
    );
    assert_eq!(out.code(), Some(0), "{}", out.combined());
    let r = RunResult::parse(&out.stdout).expect("RESULT line");
    assert_eq!(r.get("setup_only"), "1");
    assert!(r.num("setup_allocs_per_s") > 0.0, "{}", out.combined());
    let json = out
        .stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("JSON line");
    let v: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(v["allocs"], 64);
}

#[test]
fn setup_failure_names_the_count_and_the_error() {
    let server = stunnerd(Auth::static_default());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnperf"));
    cmd.arg("--server").arg(server.addr().to_string());
    cmd.args(["-u", USER, "-w", "wrong-password", "-m", "3", "-d", "1"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(out.code(), Some(1), "{}", out.combined());
    assert!(
        out.stderr.contains("3 of 3 allocations failed") && out.stderr.contains("401"),
        "{}",
        out.combined()
    );
    assert!(!out.stdout.contains("RESULT"), "{}", out.combined());
}

#[test]
fn no_server_fails_within_the_retransmission_budget() {
    // A port nobody listens on: ICMP errors, then 5 tries x 500 ms, then exit 1.
    let port = free_udp_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnperf"));
    cmd.args(["--server", &format!("127.0.0.1:{port}")]);
    cmd.args(["-u", USER, "-w", PASS, "-m", "2", "-d", "1"]);
    let start = std::time::Instant::now();
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(out.code(), Some(1), "{}", out.combined());
    assert!(
        out.stderr.contains("2 of 2 allocations failed"),
        "{}",
        out.combined()
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_arguments_exit_2() {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnperf"));
        cmd.args(args);
        run_with_timeout(cmd, Duration::from_secs(10)).code()
    };
    assert_eq!(run(&["-u", "u"]), Some(2), "no password or secret");
    assert_eq!(
        run(&["-u", "u", "-w", "p", "-l", "8"]),
        Some(2),
        "too small"
    );
    assert_eq!(
        run(&["-u", "u", "-w", "p", "-y", "-m", "3"]),
        Some(2),
        "odd c2c"
    );
}

#[test]
fn reference_coturn_both_modes_and_rest() {
    let server = start_server(ServerSpec::new(ServerKind::Coturn));
    all_echoed(&server, &[]);
    all_echoed(&server, &["-s"]);
    drop(server);
    let server = start_server(ServerSpec::new(ServerKind::Coturn).auth(Auth::ephemeral_default()));
    all_echoed(&server, &[]);
}
