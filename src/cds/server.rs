//! The CDS HTTP/WebSocket API (spec 4.1, 4.3), as the operator serves it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info};

use super::store::{ConfigStore, Filter, patch_for_node};
use crate::config::zero_config_wire;

type Body = Full<Bytes>;

/// Bound on one push to a watcher: a client that does not read is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a plain (non-watch) HTTP connection.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);

/// What every request handler needs.
pub(super) struct Shared {
    pub store: ConfigStore,
    /// Node name -> address, for `__node_address_placeholder` patching.
    pub nodes: BTreeMap<String, String>,
}

/// Serve until the listener fails for good.
pub(super) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(shared, req, peer)) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            // Upgraded connections live on in their own task; this bound is for plain HTTP.
            let _ = tokio::time::timeout(CONN_TIMEOUT, conn).await;
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    respond(status, "application/json", v.to_string())
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"code": status.as_u16(), "message": message}),
    )
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Percent-decoding of a query value (`+` is a space, as in forms).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    debug!(target: "cds-server", "{peer}: {} {}", req.method(), req.uri());
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path
        .strip_prefix("/api/v1/")
        .map(|p| p.trim_end_matches('/').split('/').collect())
        .unwrap_or_default();
    let filter = match segs.as_slice() {
        ["license"] => {
            return json_response(
                StatusCode::OK,
                &json!({"enabledFeatures": [], "subscriptionType": "free", "lastUpdated": "N/A", "lastError": ""}),
            );
        }
        ["configs"] => Filter::All,
        ["configs", ns] if !ns.is_empty() => Filter::Namespace(decode(ns)),
        ["configs", ns, name] if !ns.is_empty() && !name.is_empty() => {
            Filter::One(format!("{}/{}", decode(ns), decode(name)))
        }
        _ => {
            return respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 page not found\n",
            );
        }
    };
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "405 method not allowed\n",
        );
    }
    let watch = match query_param(&req, "watch") {
        None => false,
        Some(w) => match parse_go_bool(&w) {
            Some(b) => b,
            None => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain; charset=utf-8",
                    format!("invalid watch parameter {w:?}\n"),
                );
            }
        },
    };
    let node = query_param(&req, "node").filter(|n| !n.is_empty());
    if watch {
        return upgrade(shared, req, filter, node);
    }
    let patch = |v: &Value| patch_for_node(v, node.as_deref(), &shared.nodes);
    match &filter {
        Filter::One(id) => match shared.store.list(&filter).first() {
            Some((_, v)) => json_response(StatusCode::OK, &patch(v)),
            None => error(
                StatusCode::NOT_FOUND,
                &format!("Config not found for ID {id}"),
            ),
        },
        _ => {
            let items: Vec<Value> = shared
                .store
                .list(&filter)
                .iter()
                .map(|(_, v)| patch(v))
                .collect();
            json_response(StatusCode::OK, &json!({"version": "v1", "items": items}))
        }
    }
}

/// The WebSocket upgrade, with gorilla's origin check: an `Origin` whose host differs from
/// the request's `Host` is refused with 403; no `Origin` is fine.
fn upgrade(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    filter: Filter,
    node: Option<String>,
) -> Response<Body> {
    let headers = req.headers();
    let is_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "websocket: missing key\n",
        );
    };
    if !is_ws {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "websocket: not a websocket handshake\n",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !origin_host.eq_ignore_ascii_case(host) {
            return respond(
                StatusCode::FORBIDDEN,
                "text/plain; charset=utf-8",
                "websocket: request origin not allowed\n",
            );
        }
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        subscriber(shared, ws, filter, node).await;
    });
    let mut r = respond(StatusCode::SWITCHING_PROTOCOLS, "text/plain", "");
    r.headers_mut().remove(header::CONTENT_TYPE);
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// One watcher: the current configs at once, then every change; deletes as zero configs.
async fn subscriber<S>(
    shared: Arc<Shared>,
    mut ws: WebSocketStream<S>,
    filter: Filter,
    node: Option<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (initial, mut rx) = shared.store.subscribe(&filter);
    info!(target: "cds-server", "watcher subscribed to {filter:?} (node {node:?}): {} config(s)", initial.len());
    let text = |v: &Value| patch_for_node(v, node.as_deref(), &shared.nodes).to_string();
    for (_, v) in &initial {
        if !send(&mut ws, text(v)).await {
            return;
        }
    }
    loop {
        tokio::select! {
            u = rx.recv() => match u {
                Ok(u) if filter.matches(&u.id) => {
                    let msg = match &u.config {
                        Some(v) => text(v),
                        None => zero_config_wire(&u.id),
                    };
                    if !send(&mut ws, msg).await {
                        return;
                    }
                }
                Ok(_) => {}
                // A client too slow for the backlog reconnects and gets the current state.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                    let _ = ws.close(None).await;
                    return;
                }
            },
            m = ws.next() => match m {
                // Reading queues the pong for a ping; flushing sends it.
                Some(Ok(Message::Ping(_))) => {
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send<S>(ws: &mut WebSocketStream<S>, text: String) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bools_and_decoding() {
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(decode("a%2Fb+c"), "a/b c");
        assert_eq!(decode("bad%zz%"), "bad%zz%");
    }
}
