//! Helpers for the live-operations tests (`tests/ops_*.rs`): configs, the admin HTTP
//! endpoints read with a hand-written HTTP/1.1 client, Prometheus text parsing, signals, and
//! a minimal TURN client (Allocate, CreatePermission, Send/Data, Refresh) for tests that
//! must end an allocation on purpose.
//!
//! Everything talks to 127.0.0.1, every wait is bounded, and processes are stopped by their
//! own PID only.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use stunnerd::stun::Message;
use stunnerd::stun::MessageWriter;
use stunnerd::stun::attr;
use stunnerd::stun::{Class, Method};

use crate::common::*;

/// Poll `f` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on 127.0.0.1:port with `Connection: close`; (status, body) or None if the
/// server is not there.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
}

/// Send a raw request; (status, body).
pub fn http_request(port: u16, request: &str) -> Option<(u16, String)> {
    let addr = local(port);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Status of `GET path`, 0 if nobody answers.
pub fn status_of(port: u16, path: &str) -> u16 {
    http_get(port, path).map_or(0, |(s, _)| s)
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok())?
    })
}

/// Scrape `/metrics` and read one series.
pub fn scrape(port: u16, series: &str) -> Option<f64> {
    let (status, body) = http_get(port, "/metrics")?;
    if status != 200 {
        return None;
    }
    metric(&body, series)
}

/// `/status` as JSON.
pub fn status_json(port: u16) -> Option<serde_json::Value> {
    let (s, body) = http_get(port, "/status")?;
    (s == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Send a signal to one PID we started.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// A stunnerd config, built field by field.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub name: String,
    pub loglevel: String,
    pub health: u16,
    pub metrics: u16,
    pub password: String,
    /// (name, port, routes)
    pub listeners: Vec<(String, u16, Vec<String>)>,
    /// (name, type, endpoints)
    pub clusters: Vec<(String, String, Vec<String>)>,
    /// Listener address (`$STUNNER_ADDR` to test expansion).
    pub address: String,
}

impl Cfg {
    /// One TURN-UDP listener `udp` on `port` routed to a STATIC cluster `local`
    /// (127.0.0.1/32), health and metrics on the given ports.
    pub fn new(name: &str, port: u16, health: u16, metrics: u16) -> Cfg {
        Cfg {
            name: name.into(),
            loglevel: "all:INFO".into(),
            health,
            metrics,
            password: PASS.into(),
            listeners: vec![("udp".into(), port, vec!["local".into()])],
            clusters: vec![("local".into(), "STATIC".into(), vec!["127.0.0.1/32".into()])],
            address: "127.0.0.1".into(),
        }
    }

    pub fn json(&self) -> String {
        let listeners: Vec<_> = self
            .listeners
            .iter()
            .map(|(n, p, r)| json!({"name": n, "protocol": "TURN-UDP", "address": self.address, "port": p, "routes": r}))
            .collect();
        let clusters: Vec<_> = self
            .clusters
            .iter()
            .map(|(n, t, e)| json!({"name": n, "type": t, "endpoints": e}))
            .collect();
        let endpoint = |p: u16, path: &str| {
            if p == 0 {
                String::new()
            } else {
                format!("http://127.0.0.1:{p}{path}")
            }
        };
        json!({
            "version": "v1",
            "admin": {"name": self.name, "loglevel": self.loglevel,
                      "healthcheck_endpoint": endpoint(self.health, ""),
                      "metrics_endpoint": endpoint(self.metrics, "/metrics")},
            "auth": {"type": "static", "realm": REALM, "credentials": {"username": USER, "password": self.password}},
            "listeners": listeners,
            "clusters": clusters,
        })
        .to_string()
    }
}

/// Replace `path` atomically (write a temp file, rename over), as editors and most
/// config tools do.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Start `stunnerd ARGS` with extra environment.
pub fn start_stunnerd(name: &str, args: &[String], envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(stunnerd_bin());
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // The id must not depend on the host's STUNNER_* variables.
    cmd.env_remove("STUNNER_CONFIG_ORIGIN");
    Proc::spawn(name, cmd)
}

/// Wait until the running config generation reaches `generation`.
pub fn wait_generation(metrics_port: u16, generation: u64, timeout: Duration) -> bool {
    wait_for(timeout, || {
        scrape(metrics_port, "stunnerd_config_generation").is_some_and(|g| g >= generation as f64)
    })
}

/// Apply change `i` of a cycle of five: a cluster added (and routed), the log level, the
/// credentials, the cluster removed again, and the port of the second listener. Returns
/// whether the second listener moved.
pub fn mutate(cfg: &mut Cfg, i: usize, ports: (u16, u16)) -> bool {
    match i % 5 {
        0 => {
            cfg.clusters.push((
                "extra".into(),
                "STATIC".into(),
                vec![format!("10.{i}.0.0/16")],
            ));
            cfg.listeners[0].2.push("extra".into());
        }
        1 => {
            cfg.loglevel = if cfg.loglevel == "all:INFO" {
                "all:WARN,reconciler:INFO".into()
            } else {
                "all:INFO".into()
            };
        }
        2 => cfg.password = format!("rotated-{i}"),
        3 => {
            cfg.clusters.retain(|c| c.0 != "extra");
            cfg.listeners[0].2.retain(|r| r != "extra");
        }
        _ => {
            let l = &mut cfg.listeners[1];
            l.1 = if l.1 == ports.0 { ports.1 } else { ports.0 };
            return true;
        }
    }
    false
}

// ------------------------------------------------------------------------------------------
// A minimal TURN client
// ------------------------------------------------------------------------------------------

/// Just enough TURN over UDP to hold an allocation, relay through it and end it.
pub struct TurnClient {
    sock: UdpSocket,
    server: SocketAddr,
    user: String,
    key: [u8; 16],
    realm: Vec<u8>,
    nonce: Vec<u8>,
    pub relayed: Option<SocketAddr>,
}

impl TurnClient {
    pub fn new(server: SocketAddr, user: &str, pass: &str) -> TurnClient {
        TurnClient::new_from("127.0.0.1", server, user, pass)
    }

    /// A client whose socket is bound to `local` (an address of this host).
    pub fn new_from(local: &str, server: SocketAddr, user: &str, pass: &str) -> TurnClient {
        let sock = UdpSocket::bind((local, 0)).expect("bind client");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        TurnClient {
            sock,
            server,
            user: user.into(),
            key: stunnerd::snapshot::long_term_key(user, REALM, pass),
            realm: Vec::new(),
            nonce: Vec::new(),
            relayed: None,
        }
    }

    /// One authenticated request, following 401/438 challenges; returns the success
    /// response bytes or the error code.
    fn request(
        &mut self,
        method: Method,
        add: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Result<Vec<u8>, u16> {
        for _ in 0..6 {
            let tid: [u8; 12] = rand::random();
            let mut buf = [0u8; 1024];
            let mut w =
                MessageWriter::new(&mut buf, method, Class::Request, &tid).map_err(|_| 0u16)?;
            add(&mut w);
            if !self.nonce.is_empty() {
                let _ = w.add(attr::USERNAME, self.user.as_bytes());
                let _ = w.add(attr::REALM, &self.realm);
                let _ = w.add(attr::NONCE, &self.nonce);
                let _ = w.add_integrity(&self.key);
            }
            let authenticated = !self.nonce.is_empty();
            let n = w.finish();
            let _ = self.sock.send_to(&buf[..n], self.server);
            let mut rbuf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_millis(600);
            while Instant::now() < deadline {
                let Ok((n, _)) = self.sock.recv_from(&mut rbuf) else {
                    continue;
                };
                let Ok(m) = Message::parse(&rbuf[..n]) else {
                    continue;
                };
                if *m.transaction_id() != tid {
                    continue;
                }
                if m.class() == Class::Success {
                    return Ok(rbuf[..n].to_vec());
                }
                let code = m
                    .get(attr::ERROR_CODE)
                    .and_then(|v| attr::decode_error_code(v).ok())
                    .map_or(0, |c| c.0);
                // A 401 to a request that carried credentials is a refusal, not a challenge.
                if (code == 401 && !authenticated) || code == 438 {
                    self.realm = m.get(attr::REALM).unwrap_or_default().to_vec();
                    self.nonce = m.get(attr::NONCE).unwrap_or_default().to_vec();
                    break;
                }
                return Err(code);
            }
        }
        Err(0)
    }

    pub fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let resp = self.request(Method::Allocate, &|w| {
            let _ = w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        })?;
        let m = Message::parse(&resp).map_err(|_| 0u16)?;
        let relayed = m
            .get(attr::XOR_RELAYED_ADDRESS)
            .and_then(|v| attr::decode_xor_addr(v, m.transaction_id()).ok())
            .ok_or(0u16)?;
        self.relayed = Some(relayed);
        Ok(relayed)
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), u16> {
        self.request(Method::CreatePermission, &|w| {
            let _ = w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
        .map(|_| ())
    }

    pub fn refresh(&mut self, lifetime: u32) -> Result<(), u16> {
        self.request(Method::Refresh, &|w| {
            let _ = w.add_u32(attr::LIFETIME, lifetime);
        })
        .map(|_| ())
    }

    pub fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Result<(), u16> {
        self.request(Method::ChannelBind, &|w| {
            let _ = w.add(
                attr::CHANNEL_NUMBER,
                &[(number >> 8) as u8, number as u8, 0, 0],
            );
            let _ = w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
        .map(|_| ())
    }

    /// A ChannelData message on channel `number`.
    pub fn send_channel(&self, number: u16, data: &[u8]) {
        let mut buf = Vec::with_capacity(4 + data.len());
        buf.extend_from_slice(&number.to_be_bytes());
        buf.extend_from_slice(&(data.len() as u16).to_be_bytes());
        buf.extend_from_slice(data);
        let _ = self.sock.send_to(&buf, self.server);
    }

    /// The payload of the next ChannelData on channel `number`, if one comes within
    /// `timeout`.
    pub fn recv_channel(&self, number: u16, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            if n >= 4 && buf[..2] == number.to_be_bytes() {
                let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                return buf.get(4..4 + len).map(<[u8]>::to_vec);
            }
        }
        None
    }

    /// A Send indication to `peer`.
    pub fn send(&self, peer: SocketAddr, data: &[u8]) {
        let tid: [u8; 12] = rand::random();
        let mut buf = [0u8; 2048];
        let Ok(mut w) = MessageWriter::new(&mut buf, Method::Send, Class::Indication, &tid) else {
            return;
        };
        let _ = w.add_xor_addr(attr::XOR_PEER_ADDRESS, peer);
        let _ = w.add(attr::DATA, data);
        let n = w.finish();
        let _ = self.sock.send_to(&buf[..n], self.server);
    }

    /// The payload of the next Data indication, if one comes within `timeout`.
    pub fn recv_data(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            if m.method() == Method::Data && m.class() == Class::Indication {
                return m.get(attr::DATA).map(<[u8]>::to_vec);
            }
        }
        None
    }
}

/// Like [`relay_roundtrip`], over channel `number` (bound to `peer` already).
pub fn channel_roundtrip(
    client: &TurnClient,
    number: u16,
    peer: &UdpSocket,
    payload: &[u8],
) -> bool {
    client.send_channel(number, payload);
    let mut buf = [0u8; 2048];
    let Ok((n, from)) = peer.recv_from(&mut buf) else {
        return false;
    };
    if &buf[..n] != payload {
        return false;
    }
    let _ = peer.send_to(payload, from);
    client
        .recv_channel(number, Duration::from_secs(2))
        .as_deref()
        == Some(payload)
}

/// Relay one datagram each way through `client` to a UDP echo `peer` socket owned by the
/// test: true if both directions arrived.
pub fn relay_roundtrip(client: &TurnClient, peer: &UdpSocket, payload: &[u8]) -> bool {
    let Ok(peer_addr) = peer.local_addr() else {
        return false;
    };
    client.send(peer_addr, payload);
    let mut buf = [0u8; 2048];
    let Ok((n, from)) = peer.recv_from(&mut buf) else {
        return false;
    };
    if &buf[..n] != payload {
        return false;
    }
    let _ = peer.send_to(payload, from);
    client.recv_data(Duration::from_secs(2)).as_deref() == Some(payload)
}
