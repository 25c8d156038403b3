//! `stunnerd sessions`: list and end the sessions of a running stunnerd through its health
//! server's `/sessions` (see [`super::sessions`]).
//!
//! ```text
//! stunnerd sessions [--endpoint URL] [--json]
//! stunnerd sessions kill ID [--endpoint URL] [--json]
//! stunnerd sessions kill --user NAME [--endpoint URL] [--json]
//! ```
//!
//! The token, when the daemon has one, comes from the same environment variables
//! (`STUNNERD_ADMIN_TOKEN`, `STUNNERD_ADMIN_TOKEN_FILE`). A plain HTTP/1.1 client over
//! `std::net`: the admin server speaks plain HTTP on a local address.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use super::HEALTH_PORT;
use super::sessions::Token;

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8086";
/// Bound on connecting to, and on each read from, the admin server.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (a list of many thousand sessions fits).
const MAX_RESPONSE: u64 = 256 * 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "stunnerd sessions",
    about = "List the live TURN allocations of a running stunnerd, or end them",
    after_help = "The daemon serves /sessions on its health endpoint to loopback clients only, unless it has a token \
                  (STUNNERD_ADMIN_TOKEN or STUNNERD_ADMIN_TOKEN_FILE); this command sends the token from the same variables."
)]
struct Args {
    /// The daemon's health endpoint (its `healthcheck_endpoint`).
    #[arg(long, global = true, default_value = DEFAULT_ENDPOINT, value_name = "URL")]
    endpoint: String,
    /// Print the JSON the daemon answers instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// End one session by id, or every session of a user: the client gets no further
    /// service, its relay is freed, and its next request on it gets 437.
    Kill {
        /// The session id (the ID column).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<u64>,
        /// End every session of this user.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

/// Entry point: `stunnerd sessions ...` (the whole argument list, program name first).
pub fn main(args: Vec<String>) -> ExitCode {
    let start = args
        .iter()
        .take(2)
        .position(|a| a == "sessions")
        .map_or(1, |i| i + 1);
    let argv = std::iter::once("stunnerd sessions".to_string()).chain(args.into_iter().skip(start));
    let parsed = match Args::try_parse_from(argv) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(&parsed) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stunnerd sessions: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let env = |k: &str| std::env::var(k).ok();
    let token = Token::from_env(&env)?.current()?;
    let (method, path) = match &args.command {
        None => ("GET", "/sessions".to_string()),
        Some(Command::Kill { id: Some(id), .. }) => ("DELETE", format!("/sessions/{id}")),
        Some(Command::Kill { user: Some(u), .. }) => {
            ("DELETE", format!("/sessions?user={}", percent_encode(u)))
        }
        Some(Command::Kill { .. }) => return Err("kill needs an ID or --user NAME".into()),
    };
    let (status, body) = request(&args.endpoint, method, &path, token.as_deref())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| {
        format!(
            "{} answered {status} with a body that is not JSON ({e})",
            args.endpoint
        )
    })?;
    if status != 200 {
        let msg = v["message"].as_str().unwrap_or(body.trim());
        if status == 404 {
            eprintln!("stunnerd sessions: {msg}");
            return Ok(ExitCode::from(1));
        }
        return Err(format!("{} answered {status}: {msg}", args.endpoint));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body));
        return Ok(ExitCode::SUCCESS);
    }
    match &args.command {
        None => {
            print!(
                "{}",
                table(v["sessions"].as_array().map_or(&[][..], Vec::as_slice))
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Kill { user, .. }) => {
            let ids: Vec<String> = v["killed"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|i| i.to_string())
                .collect();
            match user {
                Some(u) if ids.is_empty() => {
                    eprintln!("stunnerd sessions: no session of user {u:?}");
                    Ok(ExitCode::from(1))
                }
                Some(u) => {
                    println!(
                        "killed {} session(s) of user {u:?}: {}",
                        ids.len(),
                        ids.join(", ")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    println!("killed session {}", ids.join(", "));
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// The sessions as a table, one line each.
fn table(sessions: &[Value]) -> String {
    let header = [
        "ID",
        "USER",
        "CLIENT",
        "RELAYED",
        "PEERS",
        "CHANNELS",
        "TO PEER",
        "TO CLIENT",
        "AGE",
        "EXPIRES",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    for x in sessions {
        let peers: Vec<String> = list(&x["peers"]).iter().map(|p| s(&p["ip"])).collect();
        let channels: Vec<String> = list(&x["channels"])
            .iter()
            .map(|c| format!("{:#x}:{}", n(&c["number"]), s(&c["peer"])))
            .chain(list(&x["connections"]).iter().map(|c| {
                format!(
                    "conn {} {} ({})",
                    n(&c["id"]),
                    s(&c["peer"]),
                    s(&c["state"])
                )
            }))
            .collect();
        rows.push(vec![
            s(&x["id"]),
            s(&x["user"]),
            format!("{} {}", s(&x["transport"]), s(&x["client"])),
            format!("{} {}", s(&x["relay_transport"]), s(&x["relayed"])),
            short_list(&peers),
            short_list(&channels),
            format!(
                "{} pkts {}",
                n(&x["to_peer_packets"]),
                bytes(n(&x["to_peer_bytes"]))
            ),
            format!(
                "{} pkts {}",
                n(&x["to_client_packets"]),
                bytes(n(&x["to_client_bytes"]))
            ),
            format!("{}s", n(&x["age"])),
            format!("{}s", n(&x["expires_in"])),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!("{} session(s)\n", sessions.len()));
    out
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[][..], Vec::as_slice)
}

/// Up to three entries, then a count of the rest; `-` for none.
fn short_list(v: &[String]) -> String {
    match v.len() {
        0 => "-".into(),
        1..=3 => v.join(","),
        n => format!("{} +{}", v[..3].join(","), n - 3),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 request; returns the status and body.
fn request(
    endpoint: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let ep = super::parse_endpoint(endpoint, HEALTH_PORT)
        .ok_or_else(|| format!("invalid endpoint {endpoint:?}"))?;
    if endpoint.starts_with("https://") {
        return Err("the admin server speaks plain http".into());
    }
    let host = if ep.host.is_empty() {
        "127.0.0.1"
    } else {
        ep.host.as_str()
    };
    let addrs: Vec<_> = (host, ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("{endpoint}: {e}"))?
        .collect();
    let mut last = format!("{endpoint}: no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {endpoint} ({a}): {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let host_header = if host.contains(':') {
        format!("[{host}]:{}", ep.port)
    } else {
        format!("{host}:{}", ep.port)
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{endpoint}: {e}"))?;
    parse_response(&raw).ok_or_else(|| format!("{endpoint}: not an HTTP response"))
}

/// Status and body of a whole HTTP/1.1 response (Content-Length, chunked, or to EOF).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        match length {
            Some(n) => body.get(..n)?.to_vec(),
            None => body.to_vec(),
        }
    };
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(r), Some((200, "{}".into())));
        let r = b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Some((401, "abcde".into())));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}"),
            None
        );
    }

    #[test]
    fn the_table_shows_every_column() {
        let v: Value = serde_json::from_str(
            r#"[{"id":7,"user":"alice","transport":"udp","client":"127.0.0.1:5000","relayed":"127.0.0.1:50000",
                "relay_transport":"udp","peers":[{"ip":"10.0.0.1","expires_in":3}],
                "channels":[{"number":16384,"peer":"10.0.0.1:9","expires_in":3}],"connections":[],
                "to_peer_packets":2,"to_peer_bytes":2048,"to_client_packets":1,"to_client_bytes":10,
                "age":4,"expires_in":596}]"#,
        )
        .unwrap();
        let t = table(v.as_array().unwrap());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  USER"), "{t}");
        for want in [
            "7",
            "alice",
            "udp 127.0.0.1:5000",
            "udp 127.0.0.1:50000",
            "10.0.0.1",
            "0x4000:10.0.0.1:9",
            "2 pkts 2.0 KiB",
            "1 pkts 10 B",
            "4s",
            "596s",
        ] {
            assert!(lines[1].contains(want), "{want} missing in {t}");
        }
        assert_eq!(lines[2], "1 session(s)");
        assert_eq!(
            short_list(&["a".into(), "b".into(), "c".into(), "d".into()]),
            "a,b,c +1"
        );
        assert_eq!(percent_encode("al ice/é"), "al%20ice%2F%C3%A9");
    }
}
