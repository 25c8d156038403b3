//! `turnperf`: a TURN/UDP load generator.
//!
//! Opens N allocations on a TURN server (each from its own UDP socket, with long-term
//! credentials, static or TURN REST), binds a channel (or installs a permission) for an
//! echo peer on each, then sends paced, timestamped messages through every allocation and
//! reports delivered messages/s, loss and RTT percentiles with microsecond resolution:
//!
//! ```text
//! RESULT allocs=100 mode=channel size=100 rate_per_alloc=1000 duration_s=5 sent=.. recv=..
//!        loss_pct=.. pps=.. rtt_p50_us=.. rtt_p99_us=.. rtt_max_us=.. setup_allocs_per_s=..
//! ```
//!
//! One thread runs everything, the built-in echo peer included, on one mio poll with
//! batched receives (`recvmmsg`) and batched sends (`sendmmsg`) wherever a socket has more
//! than one datagram to send. With `--setup-only --hold S` it only measures how fast
//! allocations are set up and then holds them, so a caller can read the server's memory.
//!
//! Client cost: through the echo peer, turnperf makes as many socket operations per
//! message as the server does (two sends, two receives), so on a machine where both are
//! pinned to one core each it tops out near the speed of an efficient server. `-y`
//! (client-to-client: allocations pair up and send to each other's relayed address) keeps
//! the server's work per message the same and halves turnperf's; use it when a run says
//! the client is the limit (`cli_cpu_pct` near 100).
//!
//! Scripts: `bench/turnperf-max.sh` (highest msg/s at <= 0.1% loss, server pinned to one
//! core) and `bench/turnperf-scale.sh` (server memory per allocation, setup rate).
//!
//! Exit status: 0 if it ran, 1 if setup failed (the message names how many allocations
//! failed and the last error), 2 on bad arguments.
// A driver, not the core: clocks, threads and locks are its own (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

// A binary's root resolves modules next to itself (src/bin/), so point at its own folder.
#[path = "turnperf/engine.rs"]
mod engine;
#[path = "turnperf/load.rs"]
mod load;
#[path = "turnperf/net.rs"]
mod net;
#[path = "turnperf/proto.rs"]
mod proto;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use stunnerd::turn::auth::rest_password;

use engine::Engine;
use net::{EchoPeer, Net};
use proto::{Mode, STAMP_LEN};

/// Permissions last 300 s (RFC 8656) and turnperf does not refresh them: keep every load
/// run well inside that.
const MAX_LOAD_S: f64 = 280.0;
/// Allocations last 600 s by default and turnperf does not refresh them.
const MAX_HOLD_S: f64 = 590.0;
const MAX_SIZE: usize = 1400;

#[derive(Parser, Debug)]
#[command(
    name = "turnperf",
    version,
    about = "TURN/UDP load generator: N allocations, paced ChannelData or Send indications \
             through an echo peer, delivered msg/s, loss and RTT percentiles",
    after_help = "Examples:\n  turnperf -u user -w pass -m 100 -r 1000 -d 5\n  \
                  turnperf -u user -W SECRET -m 10 -s --peer 127.0.0.1:3480\n  \
                  turnperf -u user -w pass -m 10000 --setup-only --hold 20"
)]
struct Args {
    /// TURN server (UDP).
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// Username (with -W: the user part of the TURN REST username `<expiry>:USER`).
    #[arg(short = 'u', long = "user")]
    user: String,
    /// Static long-term password.
    #[arg(short = 'w', long = "password", conflicts_with = "secret")]
    password: Option<String>,
    /// TURN REST shared secret: username `<now+86400>:USER`, password
    /// base64(HMAC-SHA1(secret, username)).
    #[arg(short = 'W', long = "secret")]
    secret: Option<String>,
    /// Number of allocations (one client socket each).
    #[arg(short = 'm', long = "allocs", default_value_t = 1)]
    allocs: usize,
    /// Send indications (CreatePermission) instead of ChannelData (ChannelBind).
    #[arg(short = 's', long = "send-indications")]
    send_indications: bool,
    /// Messages per second per allocation.
    #[arg(short = 'r', long = "rate", default_value_t = 1000.0)]
    rate: f64,
    /// Payload bytes per message (20..=1400; the first 20 carry a timestamp and sequence).
    #[arg(short = 'l', long = "size", default_value_t = 100)]
    size: usize,
    /// Measured load duration, seconds.
    #[arg(short = 'd', long = "duration", default_value_t = 5.0)]
    duration: f64,
    /// Load before the measurement starts (not counted), seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Most setup transactions outstanding at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Port of the built-in echo peer on 127.0.0.1 (0: any free port).
    #[arg(long = "peer-port", default_value_t = 0)]
    peer_port: u16,
    /// Use an external UDP echo peer (e.g. turnutils_peer) instead of the built-in one.
    #[arg(long, conflicts_with = "peer_port")]
    peer: Option<SocketAddr>,
    /// Client-to-client: allocations pair up (even -m) and send to each other's relayed
    /// address, no peer. Half the client work per relayed message (one send, one
    /// receive), so the client can outrun the server; rtt_* then report one-way latency.
    #[arg(short = 'y', long = "c2c", conflicts_with_all = ["peer", "peer_port"])]
    c2c: bool,
    /// Local address(es) of the client sockets, comma-separated (more loopback addresses,
    /// e.g. 127.0.0.2,127.0.0.3, give tens of thousands of allocations their own ports).
    #[arg(long = "bind-ip", default_value = "127.0.0.1", value_delimiter = ',')]
    bind_ip: Vec<IpAddr>,
    /// Bind the client sockets to ports LO-HI (in order, skipping ports in use) instead of
    /// kernel-chosen ephemeral ports: keeps them out of the range a server's wildcard-bound
    /// relay sockets draw from, for tens of thousands of allocations.
    #[arg(long = "client-ports", value_parser = parse_range)]
    client_ports: Option<(u16, u16)>,
    /// Only set up the allocations (and channels/permissions), report, hold, exit.
    #[arg(long = "setup-only")]
    setup_only: bool,
    /// With --setup-only: keep the allocations this many seconds before exiting.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Give up on setup after this many seconds.
    #[arg(long = "setup-timeout", default_value_t = 60.0)]
    setup_timeout: f64,
    /// Skip deallocating (Refresh LIFETIME 0) at exit.
    #[arg(long = "no-dealloc")]
    no_dealloc: bool,
    /// Also print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = validate(&args) {
        eprintln!("turnperf: {e}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnperf: {e}");
            ExitCode::from(1)
        }
    }
}

fn validate(a: &Args) -> Result<(), String> {
    let secs = |v: f64, lo: f64, hi: f64, what: &str| {
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("{what} must be within {lo}..={hi} seconds"))
        }
    };
    if a.password.is_none() && a.secret.is_none() {
        return Err("give a password (-w PASS) or a TURN REST secret (-W SECRET)".into());
    }
    if !(1..=200_000).contains(&a.allocs) {
        return Err("-m must be 1..=200000".into());
    }
    if a.c2c && a.allocs % 2 != 0 {
        return Err("-y pairs allocations: -m must be even".into());
    }
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 1_000_000.0) {
        return Err("-r must be > 0 and <= 1000000 messages/s".into());
    }
    if !(STAMP_LEN..=MAX_SIZE).contains(&a.size) {
        return Err(format!("-l must be {STAMP_LEN}..={MAX_SIZE} bytes"));
    }
    secs(a.duration, 0.001, MAX_LOAD_S, "-d")?;
    secs(a.warmup, 0.0, MAX_LOAD_S, "--warmup")?;
    secs(a.duration + a.warmup, 0.0, MAX_LOAD_S, "-d plus --warmup")?;
    secs(a.hold, 0.0, MAX_HOLD_S, "--hold")?;
    secs(a.setup_timeout, 1.0, 600.0, "--setup-timeout")?;
    if !(1..=65_536).contains(&a.window) {
        return Err("--window must be 1..=65536".into());
    }
    Ok(())
}

/// `LO-HI`, 1 <= LO <= HI.
fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("expected LO-HI with 1 <= LO <= HI <= 65535, got {s:?}");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn credentials(a: &Args) -> (String, String) {
    match (&a.secret, &a.password) {
        (Some(secret), _) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let username = format!("{}:{}", now + 86_400, a.user);
            let password = rest_password(secret.as_bytes(), &username);
            (username, password)
        }
        (None, p) => (a.user.clone(), p.clone().unwrap_or_default()),
    }
}

fn run(a: &Args) -> Result<(), String> {
    let mode = if a.send_indications {
        Mode::Send
    } else {
        Mode::Channel
    };
    let echo = if a.c2c || a.peer.is_some() {
        None
    } else {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.peer_port);
        Some(EchoPeer::bind(addr).map_err(|e| format!("echo peer on {addr}: {e}"))?)
    };
    // None: client-to-client, each allocation's target is its partner's relayed address.
    let peer = match (&echo, a.peer) {
        (Some(p), _) => Some(p.local_addr().map_err(|e| format!("echo peer: {e}"))?),
        (None, p) => p,
    };
    let mut net = Net::new(echo).map_err(|e| format!("poll: {e}"))?;
    let (username, password) = credentials(a);
    let mut eng = Engine::new(
        &net,
        a.allocs,
        engine::Local {
            ips: a.bind_ip.clone(),
            ports: a.client_ports,
        },
        a.server,
        peer,
        mode,
        username,
        password,
        a.window,
    )?;

    eng.start_setup();
    let limit = Duration::from_secs_f64(a.setup_timeout);
    let settled = eng.run(&mut net, limit).map_err(|e| format!("poll: {e}"))?;
    if !settled {
        eng.abandon(&format!("setup timed out after {} s", a.setup_timeout));
    }
    let s = &eng.stats;
    if s.failed > 0 {
        let last = match &s.last_error {
            Some((0, reason)) => reason.clone(),
            Some((code, reason)) => format!("{code} {reason}"),
            None => "unknown".into(),
        };
        let mut msg = format!(
            "setup failed: {} of {} allocations failed (allocated {}, bound {}); last error: {last}",
            s.failed, a.allocs, s.allocated, s.bound
        );
        if let Some(e) = &s.last_socket_error {
            msg += &format!("; {} socket errors, last: {e}", s.socket_errors);
        }
        dealloc(&mut eng, &mut net, a);
        return Err(msg);
    }
    let setup_rate = s.setup_rate();
    let setup_s = match (s.first_request, s.last_alloc) {
        (Some(x), Some(y)) => (y - x).as_secs_f64(),
        _ => 0.0,
    };

    if a.setup_only {
        println!(
            "RESULT allocs={} mode={} setup_only=1 setup_s={setup_s:.3} setup_allocs_per_s={setup_rate:.0} hold_s={}",
            a.allocs,
            mode.name(),
            a.hold
        );
        if a.json {
            let j = serde_json::json!({
                "allocs": a.allocs, "mode": mode.name(), "setup_only": true,
                "setup_s": setup_s, "setup_allocs_per_s": setup_rate, "hold_s": a.hold,
            });
            println!("{j}");
        }
        let end = Instant::now() + Duration::from_secs_f64(a.hold);
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            net.turn(&mut eng, (end - now).min(Duration::from_millis(200)))
                .map_err(|e| format!("poll: {e}"))?;
        }
        dealloc(&mut eng, &mut net, a);
        return Ok(());
    }

    let cfg = load::Config {
        rate: a.rate,
        size: a.size,
        duration: Duration::from_secs_f64(a.duration),
        warmup: Duration::from_secs_f64(a.warmup),
    };
    let r = load::run(&mut eng, &mut net, &cfg).map_err(|e| format!("load: {e}"))?;
    let loss = if r.sent > 0 {
        r.sent.saturating_sub(r.recv) as f64 * 100.0 / r.sent as f64
    } else {
        0.0
    };
    let pps = r.recv as f64 / r.duration_s;
    let (p50, p99, max, mean) = if r.hist.is_empty() {
        (0, 0, 0, 0.0)
    } else {
        (
            r.hist.value_at_quantile(0.5),
            r.hist.value_at_quantile(0.99),
            r.hist.max(),
            r.hist.mean(),
        )
    };
    let cpu_pct = r.cpu_s.map_or(-1.0, |c| c * 100.0 / r.wall_s.max(1e-6));
    let path = if a.c2c { "c2c" } else { "peer" };
    let (echoed, peer_drops) = net.peer.as_ref().map_or((0, 0), |p| (p.echoed, p.dropped));
    println!(
        "RESULT allocs={} mode={} size={} rate_per_alloc={} duration_s={} sent={} recv={} \
         loss_pct={loss:.3} pps={pps:.0} rtt_p50_us={p50} rtt_p99_us={p99} rtt_max_us={max} \
         setup_allocs_per_s={setup_rate:.0} rtt_mean_us={mean:.0} offered_pps={:.0} \
         send_fail={} late={} reordered={} foreign={} rx_errors={} peer_drops={peer_drops} \
         cli_cpu_pct={cpu_pct:.0} path={path}",
        a.allocs,
        mode.name(),
        a.size,
        a.rate,
        a.duration,
        r.sent,
        r.recv,
        a.rate * a.allocs as f64,
        r.send_fail,
        r.late,
        r.reordered,
        r.foreign,
        r.rx_errors,
    );
    if a.json {
        let j = serde_json::json!({
            "allocs": a.allocs, "mode": mode.name(), "size": a.size,
            "rate_per_alloc": a.rate, "duration_s": a.duration, "sent": r.sent,
            "recv": r.recv, "loss_pct": loss, "pps": pps, "rtt_p50_us": p50,
            "rtt_p99_us": p99, "rtt_max_us": max, "rtt_mean_us": mean,
            "setup_allocs_per_s": setup_rate, "offered_pps": a.rate * a.allocs as f64,
            "send_fail": r.send_fail, "late": r.late, "reordered": r.reordered,
            "foreign": r.foreign, "rx_errors": r.rx_errors, "peer_echoed": echoed,
            "peer_drops": peer_drops, "cli_cpu_pct": cpu_pct, "path": path,
        });
        println!("{j}");
    }
    dealloc(&mut eng, &mut net, a);
    Ok(())
}

/// Best effort: release the allocations (Refresh, LIFETIME 0) so a server shared by
/// several runs does not accumulate them. Bounded in time; what is left expires.
fn dealloc(eng: &mut Engine, net: &mut Net, a: &Args) {
    if a.no_dealloc {
        return;
    }
    eng.start_dealloc();
    let limit = Duration::from_secs(2) + Duration::from_micros(100) * a.allocs as u32;
    let _ = eng.run(net, limit.min(Duration::from_secs(10)));
}
