//! The Prometheus text exposition (spec 3.9), written by hand at scrape time.
//!
//! Why not the `metrics` crate and its Prometheus exporter: every value here already exists
//! as a plain counter in a worker's published report and is summed when scraped. Through a
//! recorder, a scrape took 4-10x the time and 30-290x the allocations (`benches/metrics.rs`,
//! figures in docs/operations.md), emitted series in a different order each time, could not
//! type a float counter (`process_cpu_seconds_total`) as a counter and kept label sets of
//! removed listeners. Writing the series directly has no global state and keeps every label
//! set bounded by the config (listener and cluster names) or by a fixed enum (drop reasons,
//! reload results).

use crate::transport::offload::OffloadStats;
use crate::transport::offload::keys::Fallback;
use std::fmt::Write as _;

use hyper::{Response, StatusCode};

use super::http::{Body, respond};
use super::process::ProcessSample;
use super::{AdminState, ReloadResult};
use crate::config::ListenerProtocol;
use crate::transport::stats::CloseReason;
use crate::turn::DropReason;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn handle(state: &AdminState) -> Response<Body> {
    respond(StatusCode::OK, CONTENT_TYPE, render(state))
}

/// The whole exposition.
pub fn render(state: &AdminState) -> String {
    let r = state.report();
    let snap = state.store.load();
    let mut w = Writer::default();

    // Upstream's series (names, types, help and labels as spec 3.9).
    w.family(
        "stunner_allocations_active",
        "gauge",
        "Number of active allocations",
    );
    w.sample("stunner_allocations_active", &[], r.allocations);

    w.family(
        "stunner_listener_connections",
        "gauge",
        "Number of active downstream connections at a listener",
    );
    for l in &r.listeners {
        // Upstream counts each TURN-UDP socket as a connection: the gauge is constant.
        let v = if l.protocol == ListenerProtocol::TurnUdp {
            state.udp_sockets
        } else {
            l.connections
        };
        w.sample("stunner_listener_connections", &[("name", &l.name)], v);
    }
    w.family(
        "stunner_listener_connections_total",
        "counter",
        "Number of all downstream connections observed at a listener",
    );
    for l in &r.listeners {
        let v = if l.protocol == ListenerProtocol::TurnUdp {
            state.udp_sockets.max(l.connections_total)
        } else {
            l.connections_total
        };
        w.sample(
            "stunner_listener_connections_total",
            &[("name", &l.name)],
            v,
        );
    }
    let listener_dirs = |l: &crate::transport::stats::ListenerCounters| {
        [
            ("rx", l.rx_packets, l.rx_bytes),
            ("tx", l.tx_packets, l.tx_bytes),
        ]
    };
    w.family(
        "stunner_listener_packets_total",
        "counter",
        "Number of datagrams sent or received at a listener",
    );
    for l in &r.listeners {
        for (dir, pkts, _) in listener_dirs(l) {
            w.sample(
                "stunner_listener_packets_total",
                &[("direction", dir), ("name", &l.name)],
                pkts,
            );
        }
    }
    w.family(
        "stunner_listener_bytes_total",
        "counter",
        "Number of bytes sent or received at a listener",
    );
    for l in &r.listeners {
        for (dir, _, bytes) in listener_dirs(l) {
            w.sample(
                "stunner_listener_bytes_total",
                &[("direction", dir), ("name", &l.name)],
                bytes,
            );
        }
    }
    w.family(
        "stunner_cluster_packets_total",
        "counter",
        "Number of datagrams sent to or received from backends",
    );
    for c in &r.clusters {
        for (dir, v) in [("rx", c.traffic.rx_packets), ("tx", c.traffic.tx_packets)] {
            w.sample(
                "stunner_cluster_packets_total",
                &[("direction", dir), ("name", &c.name)],
                v,
            );
        }
    }
    w.family(
        "stunner_cluster_bytes_total",
        "counter",
        "Number of bytes sent to or received from backends",
    );
    for c in &r.clusters {
        for (dir, v) in [("rx", c.traffic.rx_bytes), ("tx", c.traffic.tx_bytes)] {
            w.sample(
                "stunner_cluster_bytes_total",
                &[("direction", dir), ("name", &c.name)],
                v,
            );
        }
    }

    // Our own series: fixed label sets.
    w.family(
        "stunnerd_dropped_packets_total",
        "counter",
        "Datagrams dropped by the TURN core, by reason",
    );
    for reason in DropReason::ALL {
        let v = r.core.drops.get(reason as usize).copied().unwrap_or(0);
        w.sample(
            "stunnerd_dropped_packets_total",
            &[("reason", reason.as_str())],
            v,
        );
    }
    let core = [
        (
            "stunnerd_allocations_created_total",
            "Allocations created",
            r.core.allocations_created,
        ),
        (
            "stunnerd_allocations_expired_total",
            "Allocations that expired without a refresh",
            r.core.allocations_expired,
        ),
        (
            "stunnerd_auth_failures_total",
            "Requests refused for bad credentials (wrong user, password, integrity or expired REST credential)",
            r.core.auth_failures,
        ),
        (
            "stunnerd_auth_challenges_total",
            "401 challenges sent to requests without credentials",
            r.core.auth_challenges,
        ),
        (
            "stunnerd_stale_nonces_total",
            "438 Stale Nonce answers",
            r.core.stale_nonces,
        ),
        (
            "stunnerd_error_responses_total",
            "STUN error responses sent",
            r.core.error_responses,
        ),
    ];
    for (name, help, v) in core {
        w.family(name, "counter", help);
        w.sample(name, &[], v);
    }
    w.family(
        "stunnerd_listener_kernel_drops_total",
        "counter",
        "Datagrams the kernel dropped for want of receive buffer on a listener socket",
    );
    for l in &r.listeners {
        w.sample(
            "stunnerd_listener_kernel_drops_total",
            &[("name", &l.name)],
            l.kernel_rx_drops,
        );
    }
    w.family(
        "stunnerd_listener_send_drops_total",
        "counter",
        "Datagrams the kernel did not take on send at a listener (full send buffer)",
    );
    for l in &r.listeners {
        w.sample(
            "stunnerd_listener_send_drops_total",
            &[("name", &l.name)],
            l.tx_drops,
        );
    }
    w.family(
        "stunnerd_listener_unverified_drops_total",
        "counter",
        "UDP answers to sources without a valid nonce not sent: beyond the per-source amplification budget (--preauth-budget)",
    );
    for l in &r.listeners {
        w.sample(
            "stunnerd_listener_unverified_drops_total",
            &[("name", &l.name)],
            l.unverified_drops,
        );
    }
    w.family(
        "stunnerd_listener_closes_total",
        "counter",
        "TCP/TLS client connections closed at a listener, by reason",
    );
    for l in r.listeners.iter().filter(|l| l.protocol.uses_tcp()) {
        for reason in CloseReason::ALL {
            w.sample(
                "stunnerd_listener_closes_total",
                &[("name", &l.name), ("reason", reason.as_str())],
                l.closes[reason as usize],
            );
        }
    }
    w.family(
        "stunnerd_listener_refused_total",
        "counter",
        "TCP/TLS connections closed at accept: unauthenticated connections at their bound (total or per address)",
    );
    for l in r.listeners.iter().filter(|l| l.protocol.uses_tcp()) {
        w.sample(
            "stunnerd_listener_refused_total",
            &[("name", &l.name)],
            l.refused,
        );
    }
    w.family(
        "stunnerd_listener_dtls_handshakes",
        "gauge",
        "DTLS sessions past the cookie exchange whose handshake has not finished",
    );
    for l in r
        .listeners
        .iter()
        .filter(|l| l.protocol == ListenerProtocol::TurnDtls)
    {
        w.sample(
            "stunnerd_listener_dtls_handshakes",
            &[("name", &l.name)],
            l.handshakes,
        );
    }
    if let Some(o) = state.offload_stats() {
        offload_series(&mut w, &o);
    }
    w.family(
        "stunnerd_config_reloads_total",
        "counter",
        "Config updates by result",
    );
    for res in ReloadResult::ALL {
        w.sample(
            "stunnerd_config_reloads_total",
            &[("result", res.as_str())],
            state.reloads(res),
        );
    }
    w.family(
        "stunnerd_config_generation",
        "gauge",
        "Generation of the running config snapshot",
    );
    w.sample("stunnerd_config_generation", &[], snap.generation);
    w.family(
        "stunnerd_ready",
        "gauge",
        "1 when /ready answers 200, else 0",
    );
    w.sample("stunnerd_ready", &[], u64::from(state.ready_for_probe()));
    process_series(&mut w, &ProcessSample::read());
    w.out
}

/// The kernel offload's series (`admin.offload_engine`): routes installed, what the kernel
/// relayed (also counted in the listener and cluster series), and the packets for our
/// sockets it passed up to user space, by reason.
fn offload_series(w: &mut Writer, o: &OffloadStats) {
    w.family(
        "stunnerd_offload_entries",
        "gauge",
        "Channels relayed in the kernel (admin.offload_engine)",
    );
    w.sample("stunnerd_offload_entries", &[], o.entries);
    w.family(
        "stunnerd_offload_packets_total",
        "counter",
        "Datagrams relayed in the kernel, by direction",
    );
    w.sample(
        "stunnerd_offload_packets_total",
        &[("direction", "to_peer")],
        o.relayed.to_peer_packets,
    );
    w.sample(
        "stunnerd_offload_packets_total",
        &[("direction", "to_client")],
        o.relayed.to_client_packets,
    );
    w.family(
        "stunnerd_offload_bytes_total",
        "counter",
        "Payload bytes relayed in the kernel, by direction",
    );
    w.sample(
        "stunnerd_offload_bytes_total",
        &[("direction", "to_peer")],
        o.relayed.to_peer_bytes,
    );
    w.sample(
        "stunnerd_offload_bytes_total",
        &[("direction", "to_client")],
        o.relayed.to_client_bytes,
    );
    w.family(
        "stunnerd_offload_fallbacks_total",
        "counter",
        "Datagrams for our sockets the kernel passed up to user space, by reason",
    );
    for f in Fallback::ALL {
        w.sample(
            "stunnerd_offload_fallbacks_total",
            &[("reason", f.as_str())],
            o.fallbacks[f as usize],
        );
    }
}

/// The standard process series, with the names, types and help texts of the Prometheus
/// client libraries' process collectors (what upstream's Go registry serves).
fn process_series(w: &mut Writer, p: &ProcessSample) {
    let series: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes.map(|v| v as f64),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_memory_bytes.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, typ, help, value) in series {
        if let Some(v) = value {
            w.family(name, typ, help);
            w.sample_f64(name, v);
        }
    }
}

#[derive(Default)]
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, typ: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {typ}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A sample without labels whose value is not an integer (seconds).
    fn sample_f64(&mut self, name: &str, value: f64) {
        // Rust's shortest round-trip form ("0.25", "1764800000.5"); the text format spells
        // the non-finite values +Inf, -Inf and NaN.
        let _ = if value.is_nan() {
            writeln!(self.out, "{name} NaN")
        } else if value.is_infinite() {
            let sign = if value > 0.0 { '+' } else { '-' };
            writeln!(self.out, "{name} {sign}Inf")
        } else {
            writeln!(self.out, "{name} {value}")
        };
    }
}

/// Label values are config names: escape what the text format requires.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut w = Writer::default();
        w.sample("m", &[("name", "a\"b\\c\nd")], 3);
        assert_eq!(w.out, "m{name=\"a\\\"b\\\\c\\nd\"} 3\n");
    }

    #[test]
    fn float_samples_in_text_format_spelling() {
        let mut w = Writer::default();
        for v in [
            0.25,
            1764800000.5,
            3.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            w.sample_f64("s", v);
        }
        assert_eq!(
            w.out,
            "s 0.25\ns 1764800000.5\ns 3\ns +Inf\ns -Inf\ns NaN\n"
        );
    }

    #[test]
    fn process_series_names_types_and_help() {
        let mut w = Writer::default();
        let p = ProcessSample {
            cpu_seconds: Some(1.5),
            resident_memory_bytes: Some(8 << 20),
            virtual_memory_bytes: Some(64 << 20),
            open_fds: Some(12),
            max_fds: Some(1024),
            start_time_seconds: Some(1764800000.25),
        };
        process_series(&mut w, &p);
        let want = "\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 12
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds 1024
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 67108864
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 8388608
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1764800000.25
";
        assert_eq!(w.out, want);
        // A figure that could not be read is left out, HELP and TYPE included.
        let mut w = Writer::default();
        process_series(
            &mut w,
            &ProcessSample {
                open_fds: Some(3),
                ..ProcessSample::default()
            },
        );
        assert_eq!(
            w.out,
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds 3\n"
        );
    }
}
