//! What changed between two snapshots: the listener changes the workers apply (decided
//! here, once, from [`super::Listener::signature`]) and the reconcile log line, so an operator
//! can read, for each config, which listeners restarted (dropping their allocations) and
//! which were updated in place.

use std::fmt;
use std::sync::Arc;

use super::Snapshot;

/// What the workers do with one listener's sockets on a new snapshot. Listeners not named
/// keep their sockets and allocations and follow the new snapshot's routes in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerChange {
    /// New: bind its sockets.
    Start(Arc<str>),
    /// Gone: close its sockets, connections and allocations.
    Stop(Arc<str>),
    /// Socket identity changed (protocol, address, port, certificate, realm): close, then
    /// bind anew.
    Restart(Arc<str>),
    /// Same identity, new certificate material (a file named by path was replaced): new
    /// connections get the new certificate, established ones keep theirs.
    Certificate(Arc<str>),
}

/// A new snapshot and the listener changes the workers apply to follow it.
pub struct Plan {
    pub snap: Arc<Snapshot>,
    pub changes: Vec<ListenerChange>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("generation", &self.snap.generation)
            .field("changes", &self.changes)
            .finish()
    }
}

/// The listener changes from `old` to `new` (`old` None: every listener starts).
pub fn listener_changes(old: Option<&Snapshot>, new: &Snapshot) -> Vec<ListenerChange> {
    let mut out = Vec::new();
    for l in &new.listeners {
        match old.and_then(|o| o.listener(&l.name)) {
            None => out.push(ListenerChange::Start(l.name.clone())),
            Some((_, o)) if o.signature != l.signature => {
                out.push(ListenerChange::Restart(l.name.clone()))
            }
            Some((_, o)) if o.pem_digest != l.pem_digest => {
                out.push(ListenerChange::Certificate(l.name.clone()))
            }
            Some(_) => {}
        }
    }
    for l in old.map(|o| o.listeners.as_slice()).unwrap_or_default() {
        if new.listener(&l.name).is_none() {
            out.push(ListenerChange::Stop(l.name.clone()));
        }
    }
    out
}

/// Listener and cluster changes by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    /// Socket identity changed (name, protocol, address, port, certificate, realm): the
    /// listener's sockets and allocations are dropped and it is bound anew.
    pub listeners_restarted: Vec<String>,
    /// Only routes or public address/port changed: allocations are kept.
    pub listeners_updated: Vec<String>,
    pub clusters_added: Vec<String>,
    pub clusters_removed: Vec<String>,
    pub clusters_updated: Vec<String>,
    pub auth_changed: bool,
    pub admin_changed: bool,
}

/// Compare two snapshots by listener and cluster name.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Diff {
    let mut d = Diff::default();
    for l in &new.listeners {
        match old.listener(&l.name) {
            None => d.listeners_added.push(l.name.to_string()),
            Some((_, o)) if o.signature != l.signature => {
                d.listeners_restarted.push(l.name.to_string())
            }
            Some(_) => {
                if old.config.listener(&l.name) != new.config.listener(&l.name) {
                    d.listeners_updated.push(l.name.to_string());
                }
            }
        }
    }
    for l in &old.listeners {
        if new.listener(&l.name).is_none() {
            d.listeners_removed.push(l.name.to_string());
        }
    }
    for c in &new.config.clusters {
        match old.config.cluster(&c.name) {
            None => d.clusters_added.push(c.name.clone()),
            Some(o) if o != c => d.clusters_updated.push(c.name.clone()),
            Some(_) => {}
        }
    }
    for c in &old.config.clusters {
        if new.config.cluster(&c.name).is_none() {
            d.clusters_removed.push(c.name.clone());
        }
    }
    // DNS answers live outside the config; name them as cluster updates too.
    for c in &new.clusters {
        let changed = old
            .clusters
            .iter()
            .find(|o| o.name == c.name)
            .is_some_and(|o| o.dns_ips != c.dns_ips);
        if changed && !d.clusters_updated.iter().any(|n| **n == *c.name) {
            d.clusters_updated.push(c.name.to_string());
        }
    }
    d.auth_changed = old.config.auth != new.config.auth;
    d.admin_changed = old.config.admin != new.config.admin;
    d
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut list = |what: &str, v: &[String]| {
            if !v.is_empty() {
                parts.push(format!("{what}: [{}]", v.join(", ")));
            }
        };
        list("listeners added", &self.listeners_added);
        list("listeners removed", &self.listeners_removed);
        list("listeners restarted", &self.listeners_restarted);
        list("listeners updated in place", &self.listeners_updated);
        list("clusters added", &self.clusters_added);
        list("clusters removed", &self.clusters_removed);
        list("clusters updated", &self.clusters_updated);
        if self.auth_changed {
            parts.push("auth updated".into());
        }
        if self.admin_changed {
            parts.push("admin updated".into());
        }
        if parts.is_empty() {
            return f.write_str("no changes");
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testing::snapshot_with_clusters;

    #[test]
    fn port_change_restarts_route_change_updates() {
        let old = snapshot_with_clusters(&[("a", &["10.0.0.1"])]);
        let mut cfg = old.config.clone();
        cfg.listeners[0].routes.clear();
        let new = Snapshot::build(cfg.clone(), 2).expect("build");
        let d = diff(&old, &new);
        assert_eq!(d.listeners_updated, vec!["udp".to_string()]);
        assert!(d.listeners_restarted.is_empty());

        cfg.listeners[0].port += 1;
        let new = Snapshot::build(cfg, 3).expect("build");
        let d = diff(&old, &new);
        assert_eq!(d.listeners_restarted, vec!["udp".to_string()]);
        assert!(d.to_string().contains("listeners restarted: [udp]"));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn listener_changes_name_what_workers_do() {
        let old = snapshot_with_clusters(&[("a", &["10.0.0.1"])]);
        assert!(listener_changes(Some(&old), &old).is_empty());
        assert_eq!(
            listener_changes(None, &old),
            vec![ListenerChange::Start("udp".into())]
        );
        let mut cfg = old.config.clone();
        cfg.listeners[0].routes.clear();
        let routes_only = Snapshot::build(cfg.clone(), 2).expect("build");
        assert!(listener_changes(Some(&old), &routes_only).is_empty());
        cfg.listeners[0].port += 1;
        let moved = Snapshot::build(cfg.clone(), 3).expect("build");
        assert_eq!(
            listener_changes(Some(&old), &moved),
            vec![ListenerChange::Restart("udp".into())]
        );
        cfg.listeners[0].name = "other".into();
        let renamed = Snapshot::build(cfg, 4).expect("build");
        assert_eq!(
            listener_changes(Some(&old), &renamed),
            vec![
                ListenerChange::Start("other".into()),
                ListenerChange::Stop("udp".into())
            ]
        );
    }
}
