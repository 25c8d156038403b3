//! The Prometheus text exposition (spec 3.9), written by hand at scrape time.
//!
//! Why not the `metrics` crate and its Prometheus exporter: every value here already exists
//! as a plain counter in a worker's published report and is summed when scraped. Feeding
//! those through a global recorder would mean copying absolute values into handles on
//! every scrape, keeping label sets of removed listeners alive in the recorder, and one
//! more global; writing the dozen series directly is shorter, has no global state and
//! keeps every label set bounded by the config (listener and cluster names) or by a fixed
//! enum (drop reasons, reload results).

use std::fmt::Write as _;

use hyper::{Response, StatusCode};

use super::http::{Body, respond};
use super::{AdminState, ReloadResult};
use crate::turn::DropReason;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn handle(state: &AdminState) -> Response<Body> {
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
        let v = if l.protocol == "TURN-UDP" {
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
        let v = if l.protocol == "TURN-UDP" {
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
        for (dir, v) in [("rx", c.rx_packets), ("tx", c.tx_packets)] {
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
        for (dir, v) in [("rx", c.rx_bytes), ("tx", c.tx_bytes)] {
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
        "stunnerd_listener_dtls_handshakes",
        "gauge",
        "DTLS sessions past the cookie exchange whose handshake has not finished",
    );
    for l in r.listeners.iter().filter(|l| l.protocol == "TURN-DTLS") {
        w.sample(
            "stunnerd_listener_dtls_handshakes",
            &[("name", &l.name)],
            l.handshakes,
        );
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
    process_series(&mut w);
    w.out
}

/// A few `process_*` series from /proc, the ones upstream's dashboards use.
fn process_series(w: &mut Writer) {
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        w.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors",
        );
        w.sample("process_open_fds", &[], fds.count() as u64);
    }
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return;
    };
    let mut fields = statm.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (Some(Some(virt)), Some(Some(rss))) = (fields.next(), fields.next()) else {
        return;
    };
    // Reading the page size needs `sysconf` (unsafe, and `unsafe` is denied outside
    // transport/); 4 KiB is the page size of the x86_64 and common aarch64 Linux kernels.
    const PAGE: u64 = 4096;
    w.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes",
    );
    w.sample("process_resident_memory_bytes", &[], rss * PAGE);
    w.family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes",
    );
    w.sample("process_virtual_memory_bytes", &[], virt * PAGE);
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
}
