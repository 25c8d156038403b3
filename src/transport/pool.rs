//! The set of UDP worker threads, as the runtime sees it.

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use super::relay::Reservations;
use super::sockopt;
use super::stats::{StatsSlot, WorkerReport, sum};
use super::worker::{self, Control, Limits};
use crate::config::ListenerProtocol;
use crate::snapshot::diff::Plan;
use crate::snapshot::{Snapshot, Store};
use crate::turn::Server;
use crate::turn::auth::NonceKey;

/// Running workers. Each reads the store's current snapshot for every packet; listeners are
/// bound, restarted or closed in every worker as the reconciler's [`Plan`] says.
pub struct Workers {
    threads: Vec<WorkerThread>,
}

struct WorkerThread {
    control: mpsc::Sender<Control>,
    handle: worker::Handle,
    thread: JoinHandle<()>,
}

impl Workers {
    /// Start `n` workers (at least one) on the store's current snapshot.
    pub fn start(store: &Store, n: usize, limits: Limits) -> Result<Workers, String> {
        let limits = Limits {
            workers: n.max(1),
            ..limits
        };
        let snap = store.load();
        check_bindable(None, &snap)?;
        let nonces = NonceKey::from_bytes(rand::random());
        let reservations = Reservations::new();
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::channel();
            let server = Server::new(nonces.clone());
            let (worker, handle) = worker::Worker::new(
                i,
                &snap,
                store.cache(),
                server,
                rx,
                reservations.clone(),
                limits.clone(),
            )
            .map_err(|e| e.to_string())?;
            let thread = std::thread::Builder::new()
                .name(format!("udp-worker-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
            threads.push(WorkerThread {
                control: tx,
                handle,
                thread,
            });
        }
        Ok(Workers { threads })
    }

    /// Each worker's published counters.
    pub fn stats(&self) -> Vec<Arc<StatsSlot>> {
        self.threads
            .iter()
            .map(|t| t.handle.stats.clone())
            .collect()
    }

    /// The counters of all workers, summed.
    pub fn report(&self) -> WorkerReport {
        let reports: Vec<WorkerReport> =
            self.threads.iter().map(|t| t.handle.stats.read()).collect();
        sum(&reports)
    }

    /// Have every worker apply the listener changes of a new snapshot (which the store
    /// already holds), at once.
    pub fn apply(&self, plan: Plan) {
        let plan = Arc::new(plan);
        for t in &self.threads {
            let _ = t.control.send(Control::Apply(plan.clone()));
            let _ = t.handle.waker.wake();
        }
    }

    /// Each worker's control channel and waker, for the admin session list and kill
    /// switch (messages wait in the channel until the wakeup; the packet path never looks).
    pub fn controls(&self) -> Vec<(mpsc::Sender<Control>, Arc<mio::Waker>)> {
        self.threads
            .iter()
            .map(|t| (t.control.clone(), t.handle.waker.clone()))
            .collect()
    }

    /// Stop every worker and wait for it; closes all sockets.
    pub fn stop(self) {
        for t in &self.threads {
            let _ = t.control.send(Control::Stop);
            let _ = t.handle.waker.wake();
        }
        for t in self.threads {
            let _ = t.thread.join();
        }
    }
}

/// Before publishing `next`, check that every UDP port it needs and `current` does not
/// already hold is free, so a config that cannot be applied is refused whole and the
/// running one stays (upstream rolls back on a bind failure).
pub fn check_bindable(current: Option<&Snapshot>, next: &Snapshot) -> Result<(), String> {
    for l in &next.listeners {
        let tcp = matches!(
            l.protocol,
            ListenerProtocol::TurnTcp | ListenerProtocol::TurnTls
        );
        let held = current.is_some_and(|cur| {
            cur.listeners.iter().any(|c| {
                c.port == l.port
                    && matches!(
                        c.protocol,
                        ListenerProtocol::TurnTcp | ListenerProtocol::TurnTls
                    ) == tcp
            })
        });
        if held {
            continue;
        }
        let (check, proto) = if tcp {
            (sockopt::ensure_tcp_port_free(l.port), "TCP")
        } else {
            (sockopt::ensure_udp_port_free(l.port), "UDP")
        };
        check.map_err(|e| format!("listener {}: {proto} port {}: {e}", l.name, l.port))?;
    }
    Ok(())
}
