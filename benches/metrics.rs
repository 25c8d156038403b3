//! One `/metrics` scrape, rendered two ways: the hand-written exposition the daemon serves
//! (`stunnerd::admin::render_metrics`) and the same series through the `metrics` facade and
//! `metrics-exporter-prometheus` (the crates the design card names), fed as the design card
//! says: absolute values set from the summed worker reports at scrape time, then rendered.
//! Before timing, it checks that both give the same samples and prints the heap
//! allocations of one scrape of each.
//!
//! Run: `cargo bench --bench metrics` (about 20 s on one core).
// A driver, not the core: clocks, threads and locks are its own (clippy.toml).
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    unreachable_pub
)]

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use stunnerd::admin::{AdminState, ProcessSample, ReloadResult, render_metrics};
use stunnerd::config::ListenerProtocol;
use stunnerd::snapshot::{Snapshot, Store};
use stunnerd::transport::stats::{ClusterCounters, ListenerCounters, StatsSlot};
use stunnerd::turn::{ClusterTraffic, DropReason};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Workers publishing, as `--udp-thread-num` would make them.
const WORKERS: usize = 4;

/// An admin state whose workers each report `n` listeners and `n` clusters with traffic.
fn state(n: usize) -> Arc<AdminState> {
    let text = r#"{"version":"v1","auth":{"credentials":{"username":"user","password":"pass"}},
      "listeners":[{"name":"udp","address":"127.0.0.1","port":3478,"routes":["local"]}],
      "clusters":[{"name":"local","endpoints":["127.0.0.1/32"]}]}"#;
    let cfg = stunnerd::config::parse_config(text, &|_| None)
        .expect("bench config")
        .config;
    let store = Store::new(Snapshot::build(cfg, 1).expect("bench snapshot"));
    let protocols = [
        ListenerProtocol::TurnUdp,
        ListenerProtocol::TurnTcp,
        ListenerProtocol::TurnTls,
        ListenerProtocol::TurnDtls,
    ];
    let slots: Vec<Arc<StatsSlot>> = (0..WORKERS)
        .map(|w| {
            let slot = StatsSlot::new();
            slot.publish(|r| {
                r.allocations = 100 + w as u64;
                r.generation = 1;
                r.core.allocations_created = 1000;
                r.core.auth_challenges = 900;
                r.core.drops[0] = 3;
                r.listeners = (0..n)
                    .map(|i| ListenerCounters {
                        name: format!("stunner/gateway-{i}/listener-{i}").into(),
                        protocol: protocols[i % protocols.len()],
                        rx_packets: 1_000_000 + i as u64,
                        rx_bytes: 150_000_000 + i as u64,
                        tx_packets: 990_000 + i as u64,
                        tx_bytes: 149_000_000 + i as u64,
                        connections: 40,
                        connections_total: 400,
                        kernel_rx_drops: 2,
                        tx_drops: 1,
                        handshakes: 1,
                        unverified_drops: 0,
                        closes: [0; 9],
                        refused: 0,
                    })
                    .collect();
                r.clusters = (0..n)
                    .map(|i| ClusterCounters {
                        name: format!("stunner/media-plane-{i}").into(),
                        traffic: ClusterTraffic {
                            rx_packets: 800_000 + i as u64,
                            rx_bytes: 120_000_000 + i as u64,
                            tx_packets: 810_000 + i as u64,
                            tx_bytes: 121_000_000 + i as u64,
                        },
                    })
                    .collect();
            });
            slot
        })
        .collect();
    let st = AdminState::new(store, slots, false, 1);
    st.set_ready();
    st
}

/// The recorder side: built once, with every family described once.
struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

const FAMILIES: [(&str, bool, &str); 26] = [
    (
        "stunner_allocations_active",
        false,
        "Number of active allocations",
    ),
    (
        "stunner_listener_connections",
        false,
        "Number of active downstream connections at a listener",
    ),
    (
        "stunner_listener_connections_total",
        true,
        "Number of all downstream connections observed at a listener",
    ),
    (
        "stunner_listener_packets_total",
        true,
        "Number of datagrams sent or received at a listener",
    ),
    (
        "stunner_listener_bytes_total",
        true,
        "Number of bytes sent or received at a listener",
    ),
    (
        "stunner_cluster_packets_total",
        true,
        "Number of datagrams sent to or received from backends",
    ),
    (
        "stunner_cluster_bytes_total",
        true,
        "Number of bytes sent to or received from backends",
    ),
    (
        "stunnerd_dropped_packets_total",
        true,
        "Datagrams dropped by the TURN core, by reason",
    ),
    (
        "stunnerd_allocations_created_total",
        true,
        "Allocations created",
    ),
    (
        "stunnerd_allocations_expired_total",
        true,
        "Allocations that expired without a refresh",
    ),
    (
        "stunnerd_auth_failures_total",
        true,
        "Requests refused for bad credentials (wrong user, password, integrity or expired REST credential)",
    ),
    (
        "stunnerd_auth_challenges_total",
        true,
        "401 challenges sent to requests without credentials",
    ),
    (
        "stunnerd_stale_nonces_total",
        true,
        "438 Stale Nonce answers",
    ),
    (
        "stunnerd_error_responses_total",
        true,
        "STUN error responses sent",
    ),
    (
        "stunnerd_listener_kernel_drops_total",
        true,
        "Datagrams the kernel dropped for want of receive buffer on a listener socket",
    ),
    (
        "stunnerd_listener_send_drops_total",
        true,
        "Datagrams the kernel did not take on send at a listener (full send buffer)",
    ),
    (
        "stunnerd_listener_dtls_handshakes",
        false,
        "DTLS sessions past the cookie exchange whose handshake has not finished",
    ),
    (
        "stunnerd_config_reloads_total",
        true,
        "Config updates by result",
    ),
    (
        "stunnerd_config_generation",
        false,
        "Generation of the running config snapshot",
    ),
    ("stunnerd_ready", false, "1 when /ready answers 200, else 0"),
    (
        "process_cpu_seconds_total",
        false,
        "Total user and system CPU time spent in seconds.",
    ),
    (
        "process_open_fds",
        false,
        "Number of open file descriptors.",
    ),
    (
        "process_max_fds",
        false,
        "Maximum number of open file descriptors.",
    ),
    (
        "process_virtual_memory_bytes",
        false,
        "Virtual memory size in bytes.",
    ),
    (
        "process_resident_memory_bytes",
        false,
        "Resident memory size in bytes.",
    ),
    (
        "process_start_time_seconds",
        false,
        "Start time of the process since unix epoch in seconds.",
    ),
];

impl Exporter {
    fn new() -> Exporter {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for (name, counter, help) in FAMILIES {
                if counter {
                    metrics::describe_counter!(name, help);
                } else {
                    metrics::describe_gauge!(name, help);
                }
            }
        });
        Exporter { recorder, handle }
    }

    /// One scrape: sum the workers' slots, set every series to its absolute value, render.
    fn scrape(&self, state: &AdminState) -> String {
        let r = state.report();
        let p = ProcessSample::read();
        metrics::with_local_recorder(&self.recorder, || {
            use metrics::{counter, gauge};
            gauge!("stunner_allocations_active").set(r.allocations as f64);
            for l in &r.listeners {
                let udp = l.protocol == ListenerProtocol::TurnUdp;
                let name = Arc::clone(&l.name);
                let conns = if udp {
                    state.udp_sockets()
                } else {
                    l.connections
                };
                gauge!("stunner_listener_connections", "name" => name.clone()).set(conns as f64);
                let total = if udp {
                    state.udp_sockets().max(l.connections_total)
                } else {
                    l.connections_total
                };
                counter!("stunner_listener_connections_total", "name" => name.clone())
                    .absolute(total);
                for (dir, pkts, bytes) in [
                    ("rx", l.rx_packets, l.rx_bytes),
                    ("tx", l.tx_packets, l.tx_bytes),
                ] {
                    counter!("stunner_listener_packets_total", "direction" => dir, "name" => name.clone())
                        .absolute(pkts);
                    counter!("stunner_listener_bytes_total", "direction" => dir, "name" => name.clone())
                        .absolute(bytes);
                }
                counter!("stunnerd_listener_kernel_drops_total", "name" => name.clone())
                    .absolute(l.kernel_rx_drops);
                counter!("stunnerd_listener_send_drops_total", "name" => name.clone())
                    .absolute(l.tx_drops);
                if l.protocol == ListenerProtocol::TurnDtls {
                    gauge!("stunnerd_listener_dtls_handshakes", "name" => name)
                        .set(l.handshakes as f64);
                }
            }
            for c in &r.clusters {
                let name = Arc::clone(&c.name);
                for (dir, pkts, bytes) in [
                    ("rx", c.traffic.rx_packets, c.traffic.rx_bytes),
                    ("tx", c.traffic.tx_packets, c.traffic.tx_bytes),
                ] {
                    counter!("stunner_cluster_packets_total", "direction" => dir, "name" => name.clone())
                        .absolute(pkts);
                    counter!("stunner_cluster_bytes_total", "direction" => dir, "name" => name.clone())
                        .absolute(bytes);
                }
            }
            for reason in DropReason::ALL {
                let v = r.core.drops.get(reason as usize).copied().unwrap_or(0);
                counter!("stunnerd_dropped_packets_total", "reason" => reason.as_str()).absolute(v);
            }
            counter!("stunnerd_allocations_created_total").absolute(r.core.allocations_created);
            counter!("stunnerd_allocations_expired_total").absolute(r.core.allocations_expired);
            counter!("stunnerd_auth_failures_total").absolute(r.core.auth_failures);
            counter!("stunnerd_auth_challenges_total").absolute(r.core.auth_challenges);
            counter!("stunnerd_stale_nonces_total").absolute(r.core.stale_nonces);
            counter!("stunnerd_error_responses_total").absolute(r.core.error_responses);
            for res in ReloadResult::ALL {
                counter!("stunnerd_config_reloads_total", "result" => res.as_str())
                    .absolute(state.reloads(res));
            }
            gauge!("stunnerd_config_generation").set(state.store.load().generation as f64);
            gauge!("stunnerd_ready").set(f64::from(u8::from(state.ready_for_probe())));
            // The facade's counters are integers: a float counter (CPU seconds) can only go
            // in as a gauge, so its TYPE line differs from the client libraries'.
            if let Some(v) = p.cpu_seconds {
                gauge!("process_cpu_seconds_total").set(v);
            }
            for (name, v) in [
                ("process_open_fds", p.open_fds),
                ("process_max_fds", p.max_fds),
                ("process_virtual_memory_bytes", p.virtual_memory_bytes),
                ("process_resident_memory_bytes", p.resident_memory_bytes),
            ] {
                if let Some(v) = v {
                    gauge!(name).set(v as f64);
                }
            }
            if let Some(v) = p.start_time_seconds {
                gauge!("process_start_time_seconds").set(v);
            }
        });
        self.handle.render()
    }
}

/// The samples of an exposition (not HELP/TYPE, not the process series, whose values move
/// between two reads), sorted.
fn samples(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("process_"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Heap allocations and bytes of one call.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, usize) {
    let reg = Region::new(GLOBAL);
    black_box(f());
    let s = reg.change();
    (s.allocations + s.reallocations, s.bytes_allocated)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_scrape");
    for n in [4usize, 64] {
        let st = state(n);
        let exp = Exporter::new();
        let hand = render_metrics(&st);
        let theirs = exp.scrape(&st);
        assert_eq!(
            samples(&hand),
            samples(&theirs),
            "both expositions carry the same samples"
        );
        // Warm both (the recorder registers its keys on the first scrape).
        let (ha, hb) = allocations(|| render_metrics(&st));
        let (ea, eb) = allocations(|| exp.scrape(&st));
        // Two scrapes with the same values: is the text the same (series in a stable order)?
        let without_process = |t: &str| -> String {
            t.lines()
                .filter(|l| !l.contains("process_"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let stable = |f: &dyn Fn() -> String| without_process(&f()) == without_process(&f());
        println!(
            "{n} listeners + {n} clusters, {WORKERS} workers: {} samples, {} bytes; \
             allocations per scrape: hand-written {ha} ({hb} B), metrics-exporter-prometheus \
             {ea} ({eb} B); same text on a second scrape: hand-written {}, exporter {}",
            samples(&hand).len(),
            hand.len(),
            stable(&|| render_metrics(&st)),
            stable(&|| exp.scrape(&st)),
        );
        g.bench_with_input(BenchmarkId::new("hand_written", n), &st, |b, st| {
            b.iter(|| render_metrics(st))
        });
        g.bench_with_input(BenchmarkId::new("metrics_exporter", n), &st, |b, st| {
            b.iter(|| exp.scrape(st))
        });
    }
    g.finish();

    // A config change that removes listeners and clusters: which series does the next
    // scrape show?
    let exp = Exporter::new();
    exp.scrape(&state(64));
    let small = state(4);
    println!(
        "after shrinking from 64 to 4 listeners + clusters: hand-written {} samples, \
         exporter {} samples",
        samples(&render_metrics(&small)).len(),
        samples(&exp.scrape(&small)).len()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
