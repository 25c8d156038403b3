//! A minimal HTTP/1 server for the admin endpoints, on hyper.
//!
//! Handlers are plain functions of a [`Request`] (method, path, query, the peer's address
//! and the `Authorization` header; admin requests carry no body): every admin answer is
//! small and computed at once, so there is no need for a router or async handlers. They
//! run on tokio's blocking pool, as the session list waits for the workers' answers.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::{info, warn};

pub(super) type Body = Full<Bytes>;
/// A request handler: the request in, the whole response out.
type Handler = Arc<dyn Fn(&Request) -> Response<Body> + Send + Sync>;

/// What a handler sees of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: hyper::Method,
    pub path: String,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    pub peer: SocketAddr,
    pub authorization: Option<String>,
}

impl Request {
    /// A GET of `path` from loopback (tests, and handlers that only look at the path).
    pub fn get(path: &str) -> Request {
        Request {
            method: hyper::Method::GET,
            path: path.to_string(),
            query: None,
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            authorization: None,
        }
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k)? == name).then(|| percent_decode(v))?
        })
    }
}

/// Decode `%XX` escapes and `+` (as a space); `None` for a bad escape or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Longest life of one admin connection: bounds what a slow or idle client can hold.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed `http://host:port/path` admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Empty: all interfaces.
    pub host: String,
    pub port: u16,
    /// `/` when absent.
    pub path: String,
}

/// Parse an admin endpoint, leniently as upstream does (`url.Parse`): the scheme is
/// ignored, an empty host means all interfaces, an empty port means `default_port`, an
/// empty path means `/`. `None` for the empty string (the server is disabled). A port that
/// is not a number falls back to the default rather than disabling the server.
pub fn parse_endpoint(s: &str, default_port: u16) -> Option<Endpoint> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
            None => (v6, ""),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        }
    };
    Some(Endpoint {
        host: host.to_string(),
        port: port.parse().unwrap_or(default_port),
        path: path.to_string(),
    })
}

impl Endpoint {
    /// The addresses to bind: the dual-stack wildcard for an empty host (Go's `:port`).
    fn bind_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        if self.host.is_empty() {
            return Ok(vec![SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                self.port,
            )]);
        }
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

/// A bound admin server; serving starts with [`Server::start`] and stops when dropped.
pub struct Server {
    /// The endpoint string it was bound for (to tell whether a new config changes it).
    pub endpoint: String,
    pub parsed: Endpoint,
    kind: &'static str,
    local: Option<SocketAddr>,
    listener: Option<TcpListener>,
    handler: Handler,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Bind now (so the caller can refuse a config whose endpoint cannot be had); serve later.
    pub fn bind(
        endpoint: &str,
        parsed: Endpoint,
        kind: &'static str,
        handler: impl Fn(&Request) -> Response<Body> + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to bind");
        for addr in parsed.bind_addrs()? {
            match bind_one(addr) {
                Ok(l) => {
                    return Ok(Server {
                        endpoint: endpoint.to_string(),
                        local: l.local_addr().ok(),
                        parsed,
                        kind,
                        listener: Some(l),
                        handler: Arc::new(handler),
                        task: None,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Start serving on the current tokio runtime.
    pub fn start(&mut self) {
        let Some(std_listener) = self.listener.take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                warn!(target: "admin", "{} server: cannot serve: {e}", self.kind);
                return;
            }
        };
        info!(target: "admin", "{} server listening on {}", self.kind, crate::admin::describe_addr(self.local));
        let handler = Arc::clone(&self.handler);
        self.task = Some(tokio::spawn(accept_loop(listener, handler)));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Bind one address; the IPv6 wildcard also takes IPv4 (dual-stack), like Go's `:port`.
fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // Best effort: a host without IPv6 fails the bind below and reports that.
        let _ = socket.set_only_v6(false);
    }
    // Rebinding right after the previous server closed must not wait for TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    let l: TcpListener = socket.into();
    Ok(l)
}

async fn accept_loop(listener: tokio::net::TcpListener, handler: Handler) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let request = Request {
                    method: req.method().clone(),
                    path: req.uri().path().to_string(),
                    query: req.uri().query().map(str::to_string),
                    peer: crate::transport::canonical_client(peer),
                    authorization: req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                };
                let handler = Arc::clone(&handler);
                async move {
                    let resp = tokio::task::spawn_blocking(move || handler(&request))
                        .await
                        .unwrap_or_else(|_| {
                            respond(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "text/plain; charset=utf-8",
                                "internal error\n",
                            )
                        });
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONN_TIMEOUT, conn).await;
        });
    }
}

/// A response with a body and content type.
pub(super) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Go ServeMux's answer for an unknown path.
pub(super) fn not_found() -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_upstream() {
        let e = parse_endpoint("http://:8086", 8086).expect("enabled");
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("", 8086, "/"));
        let e = parse_endpoint("http://0.0.0.0:8080/metrics", 8080).expect("enabled");
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("0.0.0.0", 8080, "/metrics")
        );
        let e = parse_endpoint("http://[::1]:9/x", 1).expect("enabled");
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("::1", 9, "/x"));
        let e = parse_endpoint("http://127.0.0.1/metrics", 8080).expect("enabled");
        assert_eq!(e.port, 8080);
        assert_eq!(parse_endpoint("", 8086), None);
    }

    #[test]
    fn query_parameters_are_decoded() {
        let mut r = Request::get("/sessions");
        r.query = Some("a=1&user=al%20ice%2Bbob&user=second&x".into());
        assert_eq!(r.query_param("user").as_deref(), Some("al ice+bob"));
        assert_eq!(r.query_param("x").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        r.query = Some("user=%zz".into());
        assert_eq!(r.query_param("user"), None);
        assert_eq!(percent_decode("a+b%41").as_deref(), Some("a bA"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }
}
