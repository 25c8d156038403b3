//! Helpers for integration tests that drive a real server binary (our `stunnerd` or coturn's
//! reference `turnserver`) with real clients (coturn's `turnutils_uclient`/`turnutils_peer`,
//! aioice from the repo's `.venv`).
//!
//! Everything here talks to 127.0.0.1 only, every loop is bounded in count and time, and
//! every spawned child is owned by a [`Proc`] guard that kills exactly that child (by its
//! PID, via `Child::kill`) on drop.
//!
//! Missing external tools make tests FAIL with a message pointing at `scripts/setup.sh`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::{NamedTempFile, TempDir, TempPath};

pub mod netns;
pub use netns::{Netns, in_netns};

pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub const REALM: &str = "stunner.l7mp.io";
pub const USER: &str = "user";
pub const PASS: &str = "pass";
pub const SECRET: &str = "test-shared-secret";

const SETUP_HINT: &str = "run `bash scripts/setup.sh` as root (installs coturn's turnutils_uclient/turnutils_peer/turnserver and the .venv with aioice)";

// ------------------------------------------------------------------------------------------
// Ports
// ------------------------------------------------------------------------------------------

/// Ports handed out by this process: never handed out twice.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
/// Per-process counter walking the candidate window.
static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Candidate window for test ports: just below the kernel's ephemeral range, so that relay
/// sockets bound to port 0 (by the server under test, by uclient, ...) cannot grab a port
/// between us probing it and the server binding it.
fn port_window() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u32 = text.split_whitespace().next()?.parse().ok()?;
    if low < 12_000 {
        return None;
    }
    // Never 3478/3479/3480 (coturn defaults): the window starts at low - 10000 >= 2000,
    // and those are skipped explicitly below anyway.
    Some(((low - 10_000) as u16, (low - 1) as u16))
}

fn is_reserved(port: u16) -> bool {
    (3478..=3481).contains(&port) || (5349..=5350).contains(&port) || port == 8086 || port < 1024
}

/// True if `n` consecutive ports starting at `port` can be bound on 127.0.0.1 (UDP, and TCP
/// too if `tcp`). The probe sockets are released before returning.
fn ports_bindable(port: u16, n: u16, tcp: bool) -> bool {
    let mut held_udp = Vec::new();
    let mut held_tcp = Vec::new();
    for i in 0..n {
        let Some(p) = port.checked_add(i) else {
            return false;
        };
        if is_reserved(p) {
            return false;
        }
        let addr = SocketAddrV4::new(LOCALHOST, p);
        match UdpSocket::bind(addr) {
            Ok(s) => held_udp.push(s),
            Err(_) => return false,
        }
        if tcp {
            match TcpListener::bind(addr) {
                Ok(s) => held_tcp.push(s),
                Err(_) => return false,
            }
        }
    }
    true
}

/// Reserve `n` consecutive ports (UDP, plus TCP if `tcp`) on 127.0.0.1 that this process has
/// not handed out before. Bounded: at most 4000 window candidates, then 200 kernel picks.
fn reserve_ports(n: u16, tcp: bool) -> u16 {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    let fresh = |p: u16, used: &HashSet<u16>| (0..n).all(|i| !used.contains(&(p.wrapping_add(i))));

    if let Some((lo, hi)) = port_window() {
        let span = u32::from(hi - lo) + 1;
        // Different processes (e.g. two test binaries) start at different offsets.
        let offset = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..4000 {
            let k = PORT_COUNTER.fetch_add(u32::from(n), Ordering::Relaxed);
            let p = lo as u32 + (offset + k) % span;
            let p = p as u16;
            if p.checked_add(n).is_none_or(|end| end > hi) {
                continue;
            }
            if fresh(p, used) && ports_bindable(p, n, tcp) {
                for i in 0..n {
                    used.insert(p + i);
                }
                return p;
            }
        }
    }
    // Fallback: bind port 0 and release.
    for _ in 0..200 {
        let Ok(s) = UdpSocket::bind(SocketAddrV4::new(LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = s.local_addr() else { continue };
        drop(s);
        let p = addr.port();
        if fresh(p, used) && ports_bindable(p, n, tcp) {
            for i in 0..n {
                used.insert(p + i);
            }
            return p;
        }
    }
    panic!("could not find {n} free consecutive port(s) on 127.0.0.1");
}

/// A UDP port on 127.0.0.1 that is free now and not handed out before by this process.
pub fn free_udp_port() -> u16 {
    reserve_ports(1, false)
}

/// A port free for both UDP and TCP on 127.0.0.1 (TURN servers listen on both).
pub fn free_udp_tcp_port() -> u16 {
    reserve_ports(1, true)
}

/// A port P such that UDP P and P+1 are free (turnutils_peer listens on both; uclient sends
/// RTCP to P+1 when run without `-c`).
pub fn free_udp_port_pair() -> u16 {
    reserve_ports(2, false)
}

/// `n` consecutive UDP ports (for coturn's relay range and similar).
pub fn free_port_range(n: u16) -> u16 {
    reserve_ports(n, false)
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(LOCALHOST, port))
}

// ------------------------------------------------------------------------------------------
// Tools and paths
// ------------------------------------------------------------------------------------------

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `stunnerd` binary built by cargo for this test run.
pub fn stunnerd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stunnerd"))
}

/// Full path of an executable on PATH, or None.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Panics (fails the test) if `name` is not on PATH.
pub fn require_tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("`{name}` not found on PATH: {SETUP_HINT}"))
}

/// `.venv/bin/python` of the repo (created by scripts/setup.sh, with aioice installed).
pub fn python() -> PathBuf {
    let p = repo_root().join(".venv").join("bin").join("python");
    if !p.exists() {
        panic!("{} does not exist: {SETUP_HINT}", p.display());
    }
    p
}

/// Writes `text` (a stunnerd config, JSON or YAML) to a temp file, deleted when the returned
/// path is dropped.
pub fn write_config(text: &str) -> TempPath {
    let mut f = tempfile::Builder::new()
        .prefix("stunnerd-test-")
        .suffix(".json")
        .tempfile()
        .expect("create temp config file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write temp config");
    f.into_temp_path()
}

// ------------------------------------------------------------------------------------------
// Child process guard
// ------------------------------------------------------------------------------------------

/// A spawned child with stdout+stderr going to a temp log file. Dropping it kills exactly
/// that child (SIGKILL to its PID via `Child::kill`) and reaps it. If the current thread is
/// panicking, the child's log is printed to stderr (cargo shows it for failed tests).
pub struct Proc {
    name: String,
    child: Child,
    pid: u32,
    log: NamedTempFile,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` (stdin null, stdout/stderr to a fresh log file).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let log = NamedTempFile::new().expect("create log file");
        let out = log.reopen().expect("reopen log file");
        let err = log.reopen().expect("reopen log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {name} ({cmd:?}): {e}"));
        let pid = child.id();
        Proc {
            name: name.to_string(),
            child,
            pid,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// Everything the child wrote so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log.path()).unwrap_or_default()).into_owned()
    }

    /// Exit status if the child has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Panics with the child's log if it has exited.
    pub fn assert_running(&mut self, context: &str) {
        if let Some(st) = self.try_status() {
            panic!(
                "{context}: {} (pid {}) exited unexpectedly with {st}\n--- log ---\n{}",
                self.name,
                self.pid,
                self.log()
            );
        }
    }

    /// Waits (polling, bounded by `timeout`) for the child to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- log of {} (pid {}, {:?}) ---\n{}\n--- end of log of {} ---",
                self.name,
                self.pid,
                self.status,
                self.log(),
                self.name
            );
        }
    }
}

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    /// None if it had to be killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion with stdout/stderr captured in temp files; kills it (by PID)
/// if it is still running after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> CmdOutput {
    let out = NamedTempFile::new().expect("temp file");
    let err = NamedTempFile::new().expect("temp file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.reopen().expect("reopen")))
        .stderr(Stdio::from(err.reopen().expect("reopen")));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let read = |f: &NamedTempFile| {
        String::from_utf8_lossy(&std::fs::read(f.path()).unwrap_or_default()).into_owned()
    };
    CmdOutput {
        status,
        stdout: read(&out),
        stderr: read(&err),
    }
}

// ------------------------------------------------------------------------------------------
// STUN readiness probe
// ------------------------------------------------------------------------------------------

/// A STUN Binding request: type 0x0001, length 0, magic cookie, random transaction id.
pub fn binding_request() -> ([u8; 20], [u8; 12]) {
    let tid: [u8; 12] = rand::random();
    let mut msg = [0u8; 20];
    msg[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    msg[2..4].copy_from_slice(&0u16.to_be_bytes());
    msg[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    msg[8..20].copy_from_slice(&tid);
    (msg, tid)
}

/// Sends STUN Binding requests to `addr` until any response with our transaction id comes
/// back (success or error). Bounded: 50 tries x 100 ms.
pub fn wait_udp_ready(addr: SocketAddr) -> Result<(), String> {
    let from: SocketAddr = if addr.is_ipv6() {
        "[::1]:0".parse().map_err(|e| format!("{e}"))?
    } else {
        SocketAddrV4::new(LOCALHOST, 0).into()
    };
    let sock = UdpSocket::bind(from).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let mut last_err = String::from("no response");
    for _ in 0..50 {
        let (req, tid) = binding_request();
        if let Err(e) = sock.send_to(&req, addr) {
            last_err = e.to_string();
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == addr && n >= 20 && buf[8..20] == tid => return Ok(()),
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break;
                }
                Err(e) => {
                    last_err = e.to_string();
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
    Err(format!(
        "no STUN response from {addr} after 50 tries: {last_err}"
    ))
}

// ------------------------------------------------------------------------------------------
// coturn client tools
// ------------------------------------------------------------------------------------------

/// Starts `turnutils_peer -L 127.0.0.1 -p PORT` (a UDP echo peer listening on PORT and
/// PORT+1; get PORT from [`free_udp_port_pair`]) and waits until it echoes.
pub fn start_peer(port: u16) -> Proc {
    let bin = require_tool("turnutils_peer");
    let mut cmd = Command::new(bin);
    cmd.args(["-L", "127.0.0.1", "-p", &port.to_string()]);
    let mut p = Proc::spawn(&format!("turnutils_peer:{port}"), cmd);
    if let Err(e) = wait_udp_echo(local(port)) {
        p.assert_running("turnutils_peer");
        panic!(
            "turnutils_peer on port {port} does not echo: {e}\n{}",
            p.log()
        );
    }
    p
}

/// Waits until a UDP echo server at `addr` echoes a probe. Bounded: 50 tries x 100 ms.
pub fn wait_udp_echo(addr: SocketAddr) -> Result<(), String> {
    let sock = UdpSocket::bind(SocketAddrV4::new(LOCALHOST, 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let probe = b"echo-probe";
    let mut buf = [0u8; 256];
    for _ in 0..50 {
        let _ = sock.send_to(probe, addr);
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == addr && &buf[..n] == probe => return Ok(()),
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Err(format!("no echo from {addr}"))
}

/// Result of one `turnutils_uclient` run.
#[derive(Debug, Clone)]
pub struct UclientReport {
    /// `tot_send_msgs` of the final summary (0 if there was none).
    pub sent: u64,
    /// `tot_recv_msgs` of the final summary (0 if there was none).
    pub recv: u64,
    /// `Total lost packets N (X%)`.
    pub lost_pct: Option<f64>,
    /// Whether a `tot_send_msgs=N, tot_recv_msgs=M` summary was printed at all (uclient
    /// exits 255 without one when e.g. CreatePermission/ChannelBind is refused).
    pub summary: bool,
    /// Exit code (uclient exits 0 even at 100% loss; 124 = killed by `timeout`).
    pub exit_code: Option<i32>,
    pub args: Vec<String>,
    pub output: String,
}

impl UclientReport {
    /// uclient reported an error response to CreatePermission or ChannelBind.
    pub fn peer_refused(&self) -> bool {
        self.output.contains("create permission error")
            || self.output.contains("channel bind: error")
    }

    /// uclient could not allocate (auth failure, server down, ...).
    pub fn allocation_failed(&self) -> bool {
        self.output.contains("Cannot complete Allocation")
            || self.output.contains("Connection refused")
    }

    /// Asserts a summary with sent == expected_sent and recv == sent.
    pub fn assert_all_echoed(&self, expected_sent: u64, server_log: &str) {
        assert!(
            self.summary && self.sent == expected_sent && self.recv == self.sent && self.sent > 0,
            "uclient {:?}: expected sent == recv == {expected_sent}, got sent={} recv={} \
             (summary: {}, exit {:?})\n--- uclient output (tail) ---\n{}\n--- server log (tail) ---\n{}",
            self.args,
            self.sent,
            self.recv,
            self.summary,
            self.exit_code,
            tail(&self.output, 40),
            tail(server_log, 60),
        );
    }
}

/// Last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Parses uclient output: the last `tot_send_msgs=N, tot_recv_msgs=M` pair and the
/// `Total lost packets N (X%)` percentage.
pub fn parse_uclient_output(output: &str) -> (Option<(u64, u64)>, Option<f64>) {
    fn num_after(s: &str, key: &str) -> Option<u64> {
        let rest = &s[s.find(key)? + key.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    }
    let mut totals = None;
    let mut lost = None;
    for line in output.lines() {
        if line.contains("tot_send_msgs=") && line.contains("tot_recv_msgs=") {
            if let (Some(s), Some(r)) = (
                num_after(line, "tot_send_msgs="),
                num_after(line, "tot_recv_msgs="),
            ) {
                totals = Some((s, r));
            }
        }
        if let Some(i) = line.find("Total lost packets") {
            let rest = &line[i..];
            if let (Some(a), Some(b)) = (rest.find('('), rest.find("%)")) {
                if a < b {
                    lost = rest[a + 1..b].trim().parse().ok();
                }
            }
        }
    }
    (totals, lost)
}

/// Runs `timeout 60 turnutils_uclient ARGS...` and parses its summary.
pub fn run_uclient<I, S>(args: I) -> UclientReport
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_uclient_within(args, 60)
}

/// Runs `timeout SECS turnutils_uclient ARGS...` and parses its summary (none if it had to
/// be stopped: a client whose relay went away waits long for lost packets).
pub fn run_uclient_within<I, S>(args: I, secs: u64) -> UclientReport
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = require_tool("turnutils_uclient");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let mut cmd = Command::new("timeout");
    cmd.arg(secs.to_string()).arg(&bin).args(&args);
    let out = run_with_timeout(cmd, Duration::from_secs(secs + 15));
    let output = out.combined();
    let (totals, lost_pct) = parse_uclient_output(&output);
    UclientReport {
        sent: totals.map_or(0, |t| t.0),
        recv: totals.map_or(0, |t| t.1),
        lost_pct,
        summary: totals.is_some(),
        exit_code: out.code(),
        args,
        output,
    }
}

// ------------------------------------------------------------------------------------------
// Servers under test
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// coturn's reference `turnserver` (validates the harness itself).
    Coturn,
    /// Our `stunnerd` binary.
    Stunnerd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Long-term credentials `USER`/`PASS` (uclient `-u user -w pass`).
    Static { username: String, password: String },
    /// TURN REST API shared secret (uclient `-u user -W SECRET`).
    Ephemeral { secret: String },
}

impl Auth {
    pub fn static_default() -> Auth {
        Auth::Static {
            username: USER.into(),
            password: PASS.into(),
        }
    }
    pub fn ephemeral_default() -> Auth {
        Auth::Ephemeral {
            secret: SECRET.into(),
        }
    }
    /// uclient credential flags.
    pub fn uclient_args(&self) -> Vec<String> {
        match self {
            Auth::Static { username, password } => {
                vec!["-u".into(), username.clone(), "-w".into(), password.clone()]
            }
            Auth::Ephemeral { secret } => {
                vec!["-u".into(), USER.into(), "-W".into(), secret.clone()]
            }
        }
    }
}

/// What to start. `clusters` are stunnerd STATIC cluster endpoints routed from the single
/// TURN-UDP listener; for coturn they are mapped to `--allowed-peer-ip`/`--denied-peer-ip`
/// with stunnerd's semantics (loopback peers only if a cluster names a loopback range).
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub kind: ServerKind,
    pub auth: Auth,
    pub clusters: Vec<String>,
    /// `--udp-thread-num` for stunnerd, `--relay-threads` for coturn; 0 = default.
    pub udp_threads: u32,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl ServerSpec {
    pub fn new(kind: ServerKind) -> ServerSpec {
        ServerSpec {
            kind,
            auth: Auth::static_default(),
            clusters: vec!["127.0.0.1/32".into()],
            udp_threads: 0,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    pub fn clusters(mut self, clusters: &[&str]) -> Self {
        self.clusters = clusters.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn udp_threads(mut self, n: u32) -> Self {
        self.udp_threads = n;
        self
    }
}

/// A running server; killed on drop.
pub struct Server {
    pub proc: Proc,
    pub kind: ServerKind,
    pub port: u16,
    pub spec: ServerSpec,
    _config: Option<TempPath>,
    _dir: Option<TempDir>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// The stunnerd config (JSON) for a single TURN-UDP listener on 127.0.0.1:`port`.
pub fn stunnerd_config(port: u16, auth: &Auth, clusters: &[String]) -> String {
    let auth = match auth {
        Auth::Static { username, password } => serde_json::json!({
            "type": "static", "realm": REALM,
            "credentials": {"username": username, "password": password}
        }),
        Auth::Ephemeral { secret } => serde_json::json!({
            "type": "ephemeral", "realm": REALM,
            "credentials": {"secret": secret}
        }),
    };
    serde_json::json!({
        "version": "v1",
        "admin": {"name": "test", "loglevel": "all:INFO", "healthcheck_endpoint": ""},
        "auth": auth,
        "listeners": [{
            "name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1",
            "port": port, "routes": ["local"]
        }],
        "clusters": [{"name": "local", "type": "STATIC", "endpoints": clusters}],
    })
    .to_string()
}

/// Parses `a.b.c.d[/len]` into an inclusive IPv4 range.
fn ipv4_range(cidr: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (ip, len) = match cidr.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u32>().ok()?),
        None => (cidr, 32),
    };
    let ip: Ipv4Addr = ip.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let lo = u32::from(ip) & mask;
    let hi = lo | !mask;
    Some((Ipv4Addr::from(lo), Ipv4Addr::from(hi)))
}

/// coturn flags reproducing stunnerd's peer filtering for `clusters` (IPv4 only).
fn coturn_peer_args(clusters: &[String]) -> Vec<String> {
    let mut args = vec![
        "--denied-peer-ip=0.0.0.0-255.255.255.255".to_string(),
        "--denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".to_string(),
    ];
    let mut loopback = false;
    for c in clusters {
        let Some((lo, hi)) = ipv4_range(c) else {
            continue;
        };
        // stunnerd admits loopback peers only if a cluster names a loopback range explicitly
        // (0.0.0.0/0 does not count).
        if lo.is_loopback() && hi.is_loopback() {
            loopback = true;
        }
        args.push(format!("--allowed-peer-ip={lo}-{hi}"));
    }
    if loopback {
        args.push("--allow-loopback-peers".into());
    }
    args
}

/// Starts the server described by `spec` on a fresh port and waits until it answers a STUN
/// Binding request on 127.0.0.1.
pub fn start_server(spec: ServerSpec) -> Server {
    let port = free_udp_tcp_port();
    let (proc, config, dir) = match spec.kind {
        ServerKind::Stunnerd => {
            let config = write_config(&stunnerd_config(port, &spec.auth, &spec.clusters));
            let mut cmd = Command::new(stunnerd_bin());
            cmd.arg("-c").arg(format!("file://{}", config.display()));
            if spec.udp_threads > 0 {
                cmd.arg(format!("--udp-thread-num={}", spec.udp_threads));
            }
            cmd.args(&spec.extra_args);
            cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
            (
                Proc::spawn(&format!("stunnerd:{port}"), cmd),
                Some(config),
                None,
            )
        }
        ServerKind::Coturn => {
            let bin = require_tool("turnserver");
            let dir = tempfile::tempdir().expect("temp dir");
            let relay_lo = free_port_range(64);
            let mut cmd = Command::new(bin);
            cmd.args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--no-rfc5780",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                "--log-file=stdout",
                "--simple-log",
                &format!("--listening-port={port}"),
                &format!("--min-port={relay_lo}"),
                &format!("--max-port={}", relay_lo + 63),
                &format!("--realm={REALM}"),
                &format!("--pidfile={}", dir.path().join("turnserver.pid").display()),
                // Keep coturn away from the shared default sqlite DB.
                &format!("--userdb={}", dir.path().join("turndb").display()),
            ]);
            match &spec.auth {
                Auth::Static { username, password } => {
                    cmd.arg("--lt-cred-mech")
                        .arg(format!("--user={username}:{password}"));
                }
                Auth::Ephemeral { secret } => {
                    cmd.arg("--use-auth-secret")
                        .arg(format!("--static-auth-secret={secret}"));
                }
            }
            if spec.udp_threads > 0 {
                cmd.arg(format!("--relay-threads={}", spec.udp_threads));
            }
            cmd.args(coturn_peer_args(&spec.clusters));
            cmd.args(&spec.extra_args);
            (
                Proc::spawn(&format!("turnserver:{port}"), cmd),
                None,
                Some(dir),
            )
        }
    };
    let mut server = Server {
        proc,
        kind: spec.kind,
        port,
        spec,
        _config: config,
        _dir: dir,
    };
    if let Err(e) = wait_udp_ready(server.addr()) {
        server.proc.assert_running("server start");
        panic!(
            "{} is running but not ready: {e}\n--- log ---\n{}",
            server.proc.name(),
            server.log()
        );
    }
    server
}

/// Human-readable summary, handy in assertion messages.
pub fn describe(server: &Server) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{:?} on {} (pid {}) auth={:?} clusters={:?} udp_threads={}",
        server.kind,
        server.addr(),
        server.proc.pid(),
        server.spec.auth,
        server.spec.clusters,
        server.spec.udp_threads
    );
    s
}

/// Resident set size of a process we started, in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
