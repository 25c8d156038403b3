//! `/live`, `/ready` and `/status` (spec 3.8).

use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::AdminState;
use super::http::{Body, not_found, respond};
use crate::transport::stats::WorkerReport;

const JSON: &str = "application/json; charset=utf-8";
/// What every secret in `/status` reads as. Upstream shows credentials and decoded keys
/// there; `stunnerctl status` only displays them, so hiding them costs nothing.
const SECRET: &str = "<SECRET>";

pub(super) fn handle(state: &AdminState, path: &str) -> Response<Body> {
    match path {
        "/live" => respond(StatusCode::OK, JSON, "{}\n"),
        "/ready" if state.ready_for_probe() => respond(
            StatusCode::OK,
            JSON,
            "{\"status\":200,\"message\":\"READY\"}\n",
        ),
        "/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            JSON,
            "{\"status\":503,\"message\":\"stunnerd not ready\"}\n",
        ),
        "/status" => match serde_json::to_string(&status(state)) {
            Ok(mut body) => {
                body.push('\n');
                respond(StatusCode::OK, JSON, body)
            }
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                JSON,
                json!({"status": 500, "message": e.to_string()}).to_string(),
            ),
        },
        _ => not_found(),
    }
}

/// The `StunnerStatus` document `stunnerctl status` reads, in v1.2.1's form (allocation
/// count and status filled in), secrets redacted, and the listener and cluster `stats`
/// filled from the workers' counters (upstream reports offload stats there, always zero).
pub(super) fn status(state: &AdminState) -> Value {
    let snap = state.store.load();
    let cfg = &snap.config;
    let report = state.report();

    let mut admin = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            admin.insert(k.into(), Value::String(v.into()));
        }
    };
    put("name", &cfg.admin.name);
    put("loglevel", &cfg.admin.loglevel);
    put("metrics_endpoint", &cfg.admin.metrics_endpoint);
    put(
        "healthcheck_endpoint",
        cfg.admin.healthcheck_endpoint.as_deref().unwrap_or(""),
    );
    put("quota", &cfg.admin.user_quota.to_string());
    let ifaces = if cfg.admin.offload_interfaces.is_empty() {
        "all".to_string()
    } else {
        cfg.admin.offload_interfaces.join(",")
    };
    // The engine in use: what the config asks for once it runs (Auto resolved, None when
    // Auto found no kernel support).
    let engine = match state.offload_stats() {
        Some(o) => o.engine.map_or("None", |e| e.as_str()).to_string(),
        None => cfg.admin.offload_engine.clone(),
    };
    put("offload", &format!("{engine}[{ifaces}]"));
    put("licensing_info", "{tier:free}");

    let credentials: Map<String, Value> = cfg
        .auth
        .credentials
        .keys()
        .map(|k| (k.clone(), Value::String(SECRET.into())))
        .collect();
    let auth = json!({
        "type": cfg.auth.auth_type.as_str(),
        "realm": cfg.auth.realm,
        "credentials": credentials,
    });

    let listeners: Vec<Value> = cfg
        .listeners
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                for k in ["cert", "key"] {
                    if m.contains_key(k) {
                        m.insert(k.into(), Value::String(SECRET.into()));
                    }
                }
                m.insert("stats".into(), listener_stats(&report, &l.name));
            }
            v
        })
        .collect();
    let clusters: Vec<Value> = cfg
        .clusters
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("stats".into(), cluster_stats(&report, &c.name));
            }
            v
        })
        .collect();

    json!({
        "version": cfg.version,
        "admin": admin,
        "auth": auth,
        "listeners": listeners,
        "clusters": clusters,
        "allocationCount": report.allocations,
        "status": state.status_word(),
    })
}

fn stats(rx: (u64, u64), tx: (u64, u64)) -> Value {
    json!({
        "rx": {"pkts": rx.0, "bytes": rx.1, "timestamp": 0},
        "tx": {"pkts": tx.0, "bytes": tx.1, "timestamp": 0},
    })
}

fn listener_stats(report: &WorkerReport, name: &str) -> Value {
    let c = report.listeners.iter().find(|c| &*c.name == name);
    stats(
        c.map_or((0, 0), |c| (c.rx_packets, c.rx_bytes)),
        c.map_or((0, 0), |c| (c.tx_packets, c.tx_bytes)),
    )
}

fn cluster_stats(report: &WorkerReport, name: &str) -> Value {
    let t = report
        .clusters
        .iter()
        .find(|c| &*c.name == name)
        .map(|c| c.traffic)
        .unwrap_or_default();
    stats((t.rx_packets, t.rx_bytes), (t.tx_packets, t.tx_bytes))
}
