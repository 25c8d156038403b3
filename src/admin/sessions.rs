//! `/sessions` on the health server: list live allocations and end them.
//!
//! - `GET /sessions`: every live allocation of every worker, as JSON.
//! - `GET /sessions/ID`: one.
//! - `DELETE /sessions/ID`: end one; `DELETE /sessions?user=NAME`: end all of a user's.
//!
//! The workers answer through their control channels ([`Control::Sessions`],
//! [`Control::Kill`]) at their next wakeup, so the packet path never looks at anything of
//! this. Access: loopback peers only, unless a token is configured
//! ([`ENV_TOKEN`], [`ENV_TOKEN_FILE`]); then every request needs
//! `Authorization: Bearer <token>`, compared in constant time. Nothing shown holds a
//! password, key or secret.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hyper::{Method, Response, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AdminState;
use super::http::{Body, Request, respond};
use crate::transport::worker::Control;
use crate::turn::session::{Selector, SessionInfo};

/// Env var holding the admin token.
pub const ENV_TOKEN: &str = "STUNNERD_ADMIN_TOKEN";
/// Env var naming a file that holds the admin token (read at every request, so it can be
/// rotated in place; surrounding whitespace is ignored).
pub const ENV_TOKEN_FILE: &str = "STUNNERD_ADMIN_TOKEN_FILE";
/// How long a request waits for every worker to answer.
const WORKER_WAIT: Duration = Duration::from_secs(2);

const JSON: &str = "application/json; charset=utf-8";

/// Where the admin token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// No token: loopback peers only.
    None,
    Value(String),
    File(PathBuf),
}

impl Token {
    /// The token the environment configures: [`ENV_TOKEN`], else [`ENV_TOKEN_FILE`]. An
    /// empty token, or a file that cannot be read or holds only whitespace, is an error
    /// (naming the variable), so a typo cannot leave the endpoint open.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Token, String> {
        if let Some(v) = env(ENV_TOKEN) {
            let v = v.trim();
            if v.is_empty() {
                return Err(format!("{ENV_TOKEN} is set but empty"));
            }
            return Ok(Token::Value(v.to_string()));
        }
        match env(ENV_TOKEN_FILE) {
            None => Ok(Token::None),
            Some(p) if p.trim().is_empty() => Err(format!("{ENV_TOKEN_FILE} is set but empty")),
            Some(p) => {
                let t = Token::File(PathBuf::from(p));
                t.current()?;
                Ok(t)
            }
        }
    }

    /// The token now (a file is read again each time); `None` when none is configured.
    pub fn current(&self) -> Result<Option<String>, String> {
        match self {
            Token::None => Ok(None),
            Token::Value(v) => Ok(Some(v.clone())),
            Token::File(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("{ENV_TOKEN_FILE}: cannot read {}: {e}", p.display()))?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(format!("{ENV_TOKEN_FILE}: {} is empty", p.display()));
                }
                Ok(Some(t.to_string()))
            }
        }
    }
}

/// The workers' control channels, as the admin side holds them.
pub struct SessionControl {
    workers: Vec<(mpsc::Sender<Control>, Arc<mio::Waker>)>,
}

impl SessionControl {
    pub fn new(workers: Vec<(mpsc::Sender<Control>, Arc<mio::Waker>)>) -> SessionControl {
        SessionControl { workers }
    }

    /// Every worker's live allocations, by session id.
    pub fn list(&self) -> Result<Vec<SessionInfo>, String> {
        let mut all: Vec<SessionInfo> = self.ask(Control::Sessions)?.concat();
        all.sort_by_key(|s| s.id);
        Ok(all)
    }

    /// End the sessions `selector` names in every worker; their ids.
    pub fn kill(&self, selector: &Selector) -> Result<Vec<u64>, String> {
        let mut ids: Vec<u64> = self.ask(|tx| Control::Kill(selector.clone(), tx))?.concat();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Send a message to every worker, wake it, and gather one answer from each.
    fn ask<T>(&self, make: impl Fn(mpsc::Sender<T>) -> Control) -> Result<Vec<T>, String> {
        let (tx, rx) = mpsc::channel();
        let mut asked = 0;
        for (control, waker) in &self.workers {
            if control.send(make(tx.clone())).is_ok() {
                let _ = waker.wake();
                asked += 1;
            }
        }
        drop(tx);
        let deadline = Instant::now() + WORKER_WAIT;
        let mut out = Vec::with_capacity(asked);
        for _ in 0..asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => {
                    return Err(format!(
                        "{} of {asked} worker(s) did not answer within {}s",
                        asked - out.len(),
                        WORKER_WAIT.as_secs()
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Whether a path is served here.
pub fn is_sessions_path(path: &str) -> bool {
    path == "/sessions" || path.starts_with("/sessions/")
}

/// Serve a `/sessions` request.
pub fn handle(state: &AdminState, req: &Request) -> Response<Body> {
    if let Some(refused) = refusal(state.token(), req) {
        return refused;
    }
    let Some(control) = state.sessions() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no data plane (dry run)");
    };
    let id = match req.path.strip_prefix("/sessions/") {
        None => None,
        Some(s) => match s.trim_end_matches('/').parse::<u64>() {
            Ok(id) => Some(id),
            Err(_) => return error(StatusCode::NOT_FOUND, "no such session (ids are numbers)"),
        },
    };
    let unavailable = |e: String| error(StatusCode::SERVICE_UNAVAILABLE, &e);
    match (&req.method, id) {
        (&Method::GET, None) => match control.list() {
            Ok(list) => ok(&List { sessions: &list }),
            Err(e) => unavailable(e),
        },
        (&Method::GET, Some(id)) => match control.list() {
            Ok(list) => match list.iter().find(|s| s.id == id) {
                Some(s) => ok(s),
                None => error(StatusCode::NOT_FOUND, &format!("no session {id}")),
            },
            Err(e) => unavailable(e),
        },
        (&Method::DELETE, Some(id)) => match control.kill(&Selector::Id(id)) {
            Ok(killed) if killed.is_empty() => {
                error(StatusCode::NOT_FOUND, &format!("no session {id}"))
            }
            Ok(killed) => ok(&Killed { killed }),
            Err(e) => unavailable(e),
        },
        (&Method::DELETE, None) => match req.query_param("user").filter(|u| !u.is_empty()) {
            Some(user) => match control.kill(&Selector::User(user)) {
                Ok(killed) => ok(&Killed { killed }),
                Err(e) => unavailable(e),
            },
            None => error(
                StatusCode::BAD_REQUEST,
                "DELETE /sessions needs ?user=NAME (or use DELETE /sessions/ID)",
            ),
        },
        _ => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            r.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("GET, DELETE"),
            );
            r
        }
    }
}

/// Loopback peers only without a token; with one, `Authorization: Bearer <token>`.
/// `Some`: the answer for a request that is not allowed.
fn refusal(token: &Token, req: &Request) -> Option<Response<Body>> {
    let want = match token.current() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(target: "admin", "sessions request refused: {e}");
            return Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the admin token cannot be read",
            ));
        }
    };
    let Some(want) = want else {
        if is_loopback(req.peer.ip()) {
            return None;
        }
        return Some(error(
            StatusCode::FORBIDDEN,
            &format!(
                "sessions are served to loopback clients only; set {ENV_TOKEN} or {ENV_TOKEN_FILE} to allow others with a bearer token"
            ),
        ));
    };
    let given = req.authorization.as_deref().and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    match given {
        Some(t) if same_secret(t.as_bytes(), want.as_bytes()) => None,
        _ => {
            let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"stunnerd\""),
            );
            Some(r)
        }
    }
}

/// Constant-time comparison: the digests of both (so neither the length nor the first
/// differing byte shows in the time taken).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    let mut diff = 0u8;
    for (x, y) in da.iter().zip(db.iter()) {
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[derive(serde::Serialize)]
struct List<'a> {
    sessions: &'a [SessionInfo],
}

#[derive(serde::Serialize)]
struct Killed {
    killed: Vec<u64>,
}

/// 200 with `v` as JSON, fields in declaration order.
fn ok(v: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string(v) {
        Ok(mut body) => {
            body.push('\n');
            respond(StatusCode::OK, JSON, body)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(code: StatusCode, message: &str) -> Response<Body> {
    respond(
        code,
        JSON,
        format!(
            "{}\n",
            json!({ "status": code.as_u16(), "message": message })
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, auth: Option<&str>) -> Request {
        let mut r = Request::get("/sessions");
        r.peer = peer.parse().unwrap();
        r.authorization = auth.map(str::to_string);
        r
    }

    #[test]
    fn without_a_token_only_loopback_is_served() {
        let t = Token::None;
        assert!(refusal(&t, &req("127.0.0.1:1", None)).is_none());
        assert!(refusal(&t, &req("127.8.9.10:1", None)).is_none());
        assert!(refusal(&t, &req("[::1]:1", None)).is_none());
        assert!(refusal(&t, &req("[::ffff:127.0.0.1]:1", None)).is_none());
        let r = refusal(&t, &req("192.0.2.1:1", Some("Bearer x"))).unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn with_a_token_everyone_needs_the_bearer() {
        let t = Token::Value("s3cret-token".into());
        for peer in ["127.0.0.1:1", "192.0.2.1:1"] {
            assert_eq!(
                refusal(&t, &req(peer, None)).unwrap().status(),
                StatusCode::UNAUTHORIZED
            );
            for bad in [
                "Bearer wrong",
                "Bearer s3cret-token2",
                "Basic s3cret-token",
                "Bearer",
            ] {
                assert_eq!(
                    refusal(&t, &req(peer, Some(bad))).unwrap().status(),
                    StatusCode::UNAUTHORIZED,
                    "{bad}"
                );
            }
            assert!(refusal(&t, &req(peer, Some("Bearer s3cret-token"))).is_none());
            assert!(refusal(&t, &req(peer, Some("bearer  s3cret-token "))).is_none());
        }
    }

    #[test]
    fn token_from_env_and_file() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Token::from_env(&env(&[])), Ok(Token::None));
        assert_eq!(
            Token::from_env(&env(&[(ENV_TOKEN, " t ")])),
            Ok(Token::Value("t".into()))
        );
        assert!(Token::from_env(&env(&[(ENV_TOKEN, " ")])).is_err());
        let err = Token::from_env(&env(&[(ENV_TOKEN_FILE, "/nonexistent/token")])).unwrap_err();
        assert!(err.contains(ENV_TOKEN_FILE), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let file = Token::File(path.clone());
        assert_eq!(file.current(), Ok(Some("from-file".into())));
        std::fs::write(&path, "rotated\n").unwrap();
        assert_eq!(file.current(), Ok(Some("rotated".into())));
        std::fs::write(&path, "\n").unwrap();
        assert!(file.current().is_err());
        // A token file that cannot be read refuses every request.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            refusal(&file, &req("127.0.0.1:1", None)).unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
