//! The INFO lines that say what the daemon listens on: one per listener at start-up, and on
//! a reload one per listener started, restarted or stopped.

use tracing::info;

use crate::snapshot::diff::ListenerChange;
use crate::snapshot::{Listener, Snapshot};

/// `TURN-UDP on port 3478 (all interfaces), address 1.2.3.4, public 1.2.3.4:3478, relay
/// ports 10000-20000`: protocol, port, where it binds (a loopback address binds only itself:
/// `(127.0.0.1 only)`), advertised and public addresses, relay port range.
pub(super) fn describe(snap: &Snapshot, l: &Listener) -> String {
    let bound = match l.bind_ip() {
        Some(ip) => format!("{ip} only"),
        None => "all interfaces".to_string(),
    };
    let mut s = format!(
        "{} on port {} ({bound}), address {}",
        l.protocol.as_str(),
        l.port,
        l.relay_ip
    );
    if let Some(c) = snap.config.listener(&l.name) {
        if !c.public_address.is_empty() {
            let port = if c.public_port != 0 {
                c.public_port
            } else {
                l.port
            };
            s.push_str(&format!(", public {}:{port}", c.public_address));
        }
    }
    match l.relay_ports {
        Some((lo, hi)) => s.push_str(&format!(", relay ports {lo}-{hi}")),
        None => s.push_str(", relay ports any (the kernel's ephemeral range)"),
    }
    s
}

/// Whether the listener can run: a TLS/DTLS listener whose certificate does not load stays
/// down (its worker logs why).
fn runs(l: &Listener) -> bool {
    !matches!(l.tls, Some(Err(_))) && !matches!(l.dtls, Some(Err(_)))
}

/// One line per listener of the first config.
pub(super) fn log_started(snap: &Snapshot) {
    if snap.listeners.is_empty() {
        info!(target: "listener", "no listeners configured");
    }
    for l in snap.listeners.iter().filter(|l| runs(l)) {
        info!(target: "listener", "listener {} started: {}", l.name, describe(snap, l));
    }
}

/// After a reload: one line per listener the workers start, restart (new sockets; its
/// allocations are closed), stop, or give a new certificate.
pub(super) fn log_changes(old: &Snapshot, new: &Snapshot, changes: &[ListenerChange]) {
    for c in changes {
        match c {
            ListenerChange::Start(name) => {
                if let Some((_, l)) = new.listener(name).filter(|(_, l)| runs(l)) {
                    info!(target: "listener", "listener {name} started: {}", describe(new, l));
                }
            }
            ListenerChange::Restart(name) => {
                if let Some((_, l)) = new.listener(name).filter(|(_, l)| runs(l)) {
                    info!(
                        target: "listener",
                        "listener {name} restarted (its allocations were closed): {}",
                        describe(new, l)
                    );
                }
            }
            ListenerChange::Stop(name) => {
                if let Some((_, l)) = old.listener(name) {
                    info!(target: "listener", "listener {name} stopped: {}", describe(old, l));
                }
            }
            ListenerChange::Certificate(name) => match new.listener(name) {
                Some((_, l)) if runs(l) => {
                    info!(target: "listener", "listener {name}: new certificate for new connections")
                }
                Some(_) => {
                    tracing::warn!(target: "listener", "listener {name}: the new certificate does not load; keeping the old one")
                }
                None => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testing::snapshot_with_clusters;

    #[test]
    fn description_names_protocol_port_addresses_and_relay_range() {
        let snap = snapshot_with_clusters(&[("c", &["10.0.0.1"])]);
        let mut cfg = snap.config.clone();
        cfg.listeners[0].public_address = "203.0.113.5".into();
        cfg.listeners[0].min_relay_port = Some(10000);
        cfg.listeners[0].max_relay_port = Some(10100);
        let snap = Snapshot::build(cfg, 2).unwrap();
        let l = &snap.listeners[0];
        let d = describe(&snap, l);
        // A loopback listener binds its address only; any other binds every interface.
        assert!(
            d.starts_with(&format!(
                "TURN-UDP on port {} (127.0.0.1 only), address 127.0.0.1",
                l.port
            )),
            "{d}"
        );
        let mut cfg = snap.config.clone();
        cfg.listeners[0].address = "203.0.113.5".into();
        let wide = Snapshot::build(cfg, 3).unwrap();
        let d = describe(&wide, &wide.listeners[0]);
        assert!(
            d.starts_with(&format!(
                "TURN-UDP on port {} (all interfaces), address 203.0.113.5",
                l.port
            )),
            "{d}"
        );
        assert!(
            d.contains(&format!(", public 203.0.113.5:{}", l.port)),
            "{d}"
        );
        assert!(d.ends_with(", relay ports 10000-10100"), "{d}");
    }
}
