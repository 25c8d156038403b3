//! The CDS client (spec 4.2): one HTTP GET without `-w`, a WebSocket watch with it.
//!
//! The watch follows upstream exactly, because the operator's server and its probes are
//! tuned to it: URL `ws://<origin host:port>/api/v1/configs/<ns>/<name>?node=<node>&watch=true`
//! (scheme forced to `ws`, query keys sorted, `node` only when known), an `Origin:
//! http://<host:port>` header, a Ping with payload `keepalive` every 5 s, a read deadline of
//! 8 s reset by every frame (so a server that stops answering pings is noticed), and on any
//! error a reconnect after 1 s, forever, without backoff.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, error, info, warn};

use super::{Env, Sink, SourceEvent, parse};
use crate::config::StunnerConfig;

/// Keepalive ping period.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Read deadline, reset by every frame received.
pub const READ_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause between a connection error and the next attempt.
pub const RECONNECT: Duration = Duration::from_secs(1);
/// Write deadline of a ping or close frame.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on dialing and on the WebSocket/HTTP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest config accepted (configs carry base64 certificates, but not megabytes of them).
const MAX_CONFIG: usize = 16 << 20;

/// Where the config of one instance lives on a CDS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to dial and to put in `Host` and `Origin`.
    pub authority: String,
    /// `/api/v1/configs/<ns>/<name>`.
    pub path: String,
    pub node: Option<String>,
}

impl Target {
    /// From an origin URL (`http://`, `https://`, `ws://` or `wss://`), an id `<ns>/<name>`
    /// and the node name. The id must have exactly one `/` (upstream exits on that).
    pub fn new(origin: &str, id: &str, node: Option<&str>) -> Result<Target, String> {
        let (ns, name) = id
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .ok_or_else(|| format!("invalid id {id:?}: must be <namespace>/<name>"))?;
        let (scheme, rest) = origin
            .split_once("://")
            .ok_or_else(|| format!("invalid CDS origin {origin:?}"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => 443,
            _ => 80,
        };
        // Go dials `:port` on the local host; be explicit.
        let (host, port) = split_host_port(authority);
        let host = if host.is_empty() { "localhost" } else { host };
        let port = port.unwrap_or(default_port);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            authority,
            path: format!("/api/v1/configs/{}/{}", encode(ns), encode(name)),
            node: node.filter(|n| !n.is_empty()).map(str::to_string),
        })
    }

    /// Path and query; keys in sorted order as Go's `url.Values.Encode` writes them.
    pub fn path_and_query(&self, watch: bool) -> String {
        let mut q = Vec::new();
        if let Some(n) = &self.node {
            q.push(format!("node={}", encode(n)));
        }
        if watch {
            q.push("watch=true".to_string());
        }
        if q.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, q.join("&"))
        }
    }

    /// The WebSocket URL (always `ws`: upstream never uses TLS for CDS).
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.authority, self.path_and_query(true))
    }

    /// The `Origin` header.
    pub fn origin_header(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// `host[:port]`, with `[v6]` brackets removed.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(v6) = authority.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (v6, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (authority, None),
    }
}

/// Percent-encode a query value or path segment (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One-shot load: `GET` the config; non-200 is an error carrying the server's answer.
pub async fn get(
    origin: &str,
    id: &str,
    node: Option<&str>,
    env: &Env,
) -> Result<StunnerConfig, String> {
    let target = Target::new(origin, id, node)?;
    let url = format!(
        "http://{}{}",
        target.authority,
        target.path_and_query(false)
    );
    let body = timeout(CONNECT_TIMEOUT * 2, http_get(&target))
        .await
        .map_err(|_| format!("GET {url}: timed out"))?
        .map_err(|e| format!("GET {url}: {e}"))?;
    parse(&body, env, &format!("CDS config from {url}"))
}

async fn http_get(target: &Target) -> Result<String, String> {
    let stream = TcpStream::connect(&target.authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(target.path_and_query(false))
        .header(hyper::header::HOST, &target.authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_CONFIG)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    conn.abort();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != hyper::StatusCode::OK {
        return Err(format!(
            "HTTP error (status: {}): {}",
            status.as_u16(),
            text.trim()
        ));
    }
    Ok(text)
}

/// Watch the config over WebSocket until told to stop; reconnects forever.
pub async fn watch(target: Target, env: Env, mut sink: Sink) {
    let url = target.ws_url();
    loop {
        if sink.stopped() {
            return;
        }
        match session(&target, &url, &env, &mut sink).await {
            Ok(()) => return,
            Err(e) => error!(target: "cds-client", "config watch {url}: {e}; reconnecting in 1 s"),
        }
        if sink.sleep(RECONNECT).await {
            return;
        }
    }
}

/// One connection: returns `Ok` when told to stop, `Err` on any connection problem.
async fn session(target: &Target, url: &str, env: &Env, sink: &mut Sink) -> Result<(), String> {
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.authority))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("bad URL: {e}"))?;
    let origin = hyper::header::HeaderValue::from_str(&target.origin_header())
        .map_err(|e| format!("bad Origin header: {e}"))?;
    req.headers_mut().insert(hyper::header::ORIGIN, origin);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CONFIG))
        .max_frame_size(Some(MAX_CONFIG));
    let (ws, _) = timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async_with_config(req, stream, Some(config)),
    )
    .await
    .map_err(|_| "WebSocket handshake timed out".to_string())?
    .map_err(|e| format!("WebSocket handshake: {e}"))?;
    info!(target: "cds-client", "connection established to {url}");
    let (mut write, mut read) = ws.split();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut deadline = Instant::now() + READ_TIMEOUT;
    let what = format!("CDS config from {url}");
    loop {
        tokio::select! {
            _ = sink.stop.changed() => {
                // Best effort: the server treats a vanished client the same way.
                let _ = timeout(WRITE_TIMEOUT, write.send(Message::Close(None))).await;
                return Ok(());
            }
            _ = ping.tick() => {
                timeout(WRITE_TIMEOUT, write.send(Message::Ping(Bytes::from_static(b"keepalive"))))
                    .await
                    .map_err(|_| "ping write timed out".to_string())?
                    .map_err(|e| format!("ping: {e}"))?;
            }
            _ = sleep_until(deadline) => {
                return Err(format!("no message or pong for {} s", READ_TIMEOUT.as_secs()));
            }
            msg = read.next() => {
                deadline = Instant::now() + READ_TIMEOUT;
                match msg {
                    None => return Err("connection closed".into()),
                    Some(Err(e)) => return Err(format!("read: {e}")),
                    Some(Ok(Message::Text(t))) if t.trim().is_empty() => {
                        warn!(target: "cds-client", "{what}: empty message ignored");
                    }
                    Some(Ok(Message::Text(t))) => {
                        let ev = match parse(t.as_str(), env, &what) {
                            Ok(cfg) => SourceEvent::Config(Box::new(cfg)),
                            Err(reason) => SourceEvent::Invalid(reason),
                        };
                        if !sink.send(ev).await {
                            return Ok(());
                        }
                    }
                    Some(Ok(Message::Binary(_))) => return Err("unexpected binary message".into()),
                    Some(Ok(Message::Close(_))) => return Err("closed by the server".into()),
                    Some(Ok(_)) => debug!(target: "cds-client", "pong"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_upstream() {
        let t = Target::new(
            "http://10.0.0.5:13478",
            "stunner/udp-gateway",
            Some("worker-2"),
        )
        .expect("target");
        assert_eq!(
            t.ws_url(),
            "ws://10.0.0.5:13478/api/v1/configs/stunner/udp-gateway?node=worker-2&watch=true"
        );
        assert_eq!(t.origin_header(), "http://10.0.0.5:13478");
        assert_eq!(
            t.path_and_query(false),
            "/api/v1/configs/stunner/udp-gateway?node=worker-2"
        );
        let t = Target::new("https://:13478/x", "a/b", None).expect("target");
        assert_eq!(
            t.ws_url(),
            "ws://localhost:13478/api/v1/configs/a/b?watch=true"
        );
        let t = Target::new("http://[fd00::1]:1", "a/b", Some("n 1")).expect("target");
        assert_eq!(
            t.ws_url(),
            "ws://[fd00::1]:1/api/v1/configs/a/b?node=n%201&watch=true"
        );
        assert!(Target::new("http://x:1", "nons", None).is_err());
        assert!(Target::new("http://x:1", "a/b/c", None).is_err());
    }
}
