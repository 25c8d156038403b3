//! The CDS server's config store: configs keyed by `admin.name` (`<namespace>/<name>`),
//! with a broadcast of every change to the watching clients (spec 4.3).
//!
//! Configs are kept as JSON values exactly as their source wrote them, not as re-serialised
//! validated configs: placeholders such as `$STUNNER_ADDR` must reach the clients intact,
//! since each stunnerd expands them with its own environment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::broadcast;

/// Per-subscriber backlog before a slow client is dropped (it reconnects and gets the
/// current state), upstream's buffer size.
pub const SUBSCRIBER_BUFFER: usize = 256;

/// One change: a new or changed config, or a delete (`config: None`).
#[derive(Clone, Debug)]
pub struct Update {
    pub id: String,
    pub config: Option<Arc<Value>>,
}

/// Which configs a request or subscription covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    All,
    Namespace(String),
    One(String),
}

impl Filter {
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Namespace(ns) => id.split_once('/').is_some_and(|(n, _)| n == ns),
            Filter::One(want) => id == want,
        }
    }
}

pub struct ConfigStore {
    configs: Mutex<BTreeMap<String, Arc<Value>>>,
    tx: broadcast::Sender<Update>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        ConfigStore {
            configs: Mutex::new(BTreeMap::new()),
            tx: broadcast::channel(SUBSCRIBER_BUFFER).0,
        }
    }
}

impl ConfigStore {
    /// Make the store hold exactly `next`: upserts of changed configs and deletes of
    /// missing ones are broadcast; a config deep-equal to the stored one is not.
    /// Returns (upserted, deleted) counts.
    pub fn replace_all(&self, next: BTreeMap<String, Value>) -> (usize, usize) {
        let mut cur = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut upserts = 0;
        let removed: Vec<String> = cur
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        for id in &removed {
            cur.remove(id);
            // No receivers is fine: nobody watches.
            let _ = self.tx.send(Update {
                id: id.clone(),
                config: None,
            });
        }
        for (id, value) in next {
            if cur.get(&id).is_some_and(|v| **v == value) {
                continue;
            }
            let value = Arc::new(value);
            cur.insert(id.clone(), Arc::clone(&value));
            upserts += 1;
            let _ = self.tx.send(Update {
                id,
                config: Some(value),
            });
        }
        (upserts, removed.len())
    }

    /// The configs a filter covers, in id order.
    pub fn list(&self, filter: &Filter) -> Vec<(String, Arc<Value>)> {
        let cur = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        cur.iter()
            .filter(|(id, _)| filter.matches(id))
            .map(|(id, v)| (id.clone(), Arc::clone(v)))
            .collect()
    }

    /// The current matching configs and a receiver of every later change, taken under the
    /// same lock so that no update falls between the two.
    pub fn subscribe(
        &self,
        filter: &Filter,
    ) -> (Vec<(String, Arc<Value>)>, broadcast::Receiver<Update>) {
        let cur = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = self.tx.subscribe();
        let initial = cur
            .iter()
            .filter(|(id, _)| filter.matches(id))
            .map(|(id, v)| (id.clone(), Arc::clone(v)))
            .collect();
        (initial, rx)
    }
}

/// The placeholder the operator renders for listeners whose address is the node's.
pub const NODE_ADDRESS_PLACEHOLDER: &str = "__node_address_placeholder";

/// Node patching (spec 4.3): with a `node` in the request, every listener address equal to
/// the placeholder becomes that node's address, or `$STUNNER_ADDR` when it is not known.
pub fn patch_for_node(
    config: &Value,
    node: Option<&str>,
    nodes: &BTreeMap<String, String>,
) -> Value {
    let mut v = config.clone();
    let Some(node) = node else {
        return v;
    };
    let addr = nodes
        .get(node)
        .cloned()
        .unwrap_or_else(|| "$STUNNER_ADDR".to_string());
    if let Some(Value::Array(listeners)) = v.get_mut("listeners") {
        for l in listeners {
            if let Some(a) = l.get_mut("address") {
                if a.as_str() == Some(NODE_ADDRESS_PLACEHOLDER) {
                    *a = Value::String(addr.clone());
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_upserts_are_suppressed_and_deletes_broadcast() {
        let store = ConfigStore::default();
        let (init, mut rx) = store.subscribe(&Filter::One("a/b".into()));
        assert!(init.is_empty());
        let cfg = json!({"version": "v1", "admin": {"name": "a/b"}});
        let one = BTreeMap::from([("a/b".to_string(), cfg.clone())]);
        assert_eq!(store.replace_all(one.clone()), (1, 0));
        assert_eq!(store.replace_all(one), (0, 0));
        assert_eq!(store.replace_all(BTreeMap::new()), (0, 1));
        let first = rx.try_recv().expect("upsert");
        assert_eq!(first.config.as_deref(), Some(&cfg));
        let second = rx.try_recv().expect("delete");
        assert!(second.config.is_none());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn node_placeholder_is_patched() {
        let cfg =
            json!({"listeners": [{"address": NODE_ADDRESS_PLACEHOLDER}, {"address": "1.2.3.4"}]});
        let nodes = BTreeMap::from([("n1".to_string(), "9.9.9.9".to_string())]);
        let p = patch_for_node(&cfg, Some("n1"), &nodes);
        assert_eq!(p["listeners"][0]["address"], "9.9.9.9");
        assert_eq!(p["listeners"][1]["address"], "1.2.3.4");
        let p = patch_for_node(&cfg, Some("n2"), &nodes);
        assert_eq!(p["listeners"][0]["address"], "$STUNNER_ADDR");
        assert_eq!(patch_for_node(&cfg, None, &nodes), cfg);
    }

    #[test]
    fn filters() {
        assert!(Filter::Namespace("a".into()).matches("a/b"));
        assert!(!Filter::Namespace("a".into()).matches("ab/c"));
        assert!(Filter::All.matches("x"));
    }
}
