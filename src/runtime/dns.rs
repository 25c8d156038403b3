//! Background resolution of STRICT_DNS cluster names (spec 3.4).
//!
//! Every name of the running config is resolved at once when it appears and then every
//! 5 s. A failed or empty lookup keeps the last good answer (initially none), so a DNS
//! hiccup never revokes peers. When some answer changes, the reconciler is poked and
//! publishes a new snapshot generation with the new addresses; admission compares peer IPs
//! against them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// Resolution period.
pub(super) const PERIOD: Duration = Duration::from_secs(5);
/// Bound on one lookup, so one dead name cannot stall the others past a period.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The last good answer per name, shared with the reconciler.
#[derive(Clone, Default)]
pub(super) struct Answers(Arc<Mutex<HashMap<String, Vec<IpAddr>>>>);

impl Answers {
    pub(super) fn get(&self) -> HashMap<String, Vec<IpAddr>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Record an answer; true if it differs from the previous one.
    fn set(&self, name: &str, ips: Vec<IpAddr>) -> bool {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if m.get(name) == Some(&ips) {
            return false;
        }
        m.insert(name.to_string(), ips);
        true
    }

    /// Forget names that are no longer configured.
    fn retain(&self, names: &[String]) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.retain(|k, _| names.contains(k));
    }
}

/// Resolve `names` until told to stop; poke `changed` when an answer changes.
pub(super) async fn run(
    mut names: watch::Receiver<Vec<String>>,
    answers: Answers,
    changed: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let current = names.borrow_and_update().clone();
        answers.retain(&current);
        let mut any = false;
        for name in &current {
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0)))
                .await
            {
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    if ips.is_empty() {
                        continue;
                    }
                    if answers.set(name, ips) {
                        any = true;
                    }
                }
                Ok(Err(e)) => {
                    warn!(target: "dns-resolver", "cannot resolve {name}: {e}; keeping the last answer")
                }
                Err(_) => {
                    warn!(target: "dns-resolver", "resolving {name} timed out; keeping the last answer")
                }
            }
        }
        if any {
            debug!(target: "dns-resolver", "answers changed");
            // Full: a poke is pending and the reconciler will read the newest answers.
            let _ = changed.try_send(());
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            r = names.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}
