//! The compiled, immutable view of one config that workers read.
//!
//! A [`Snapshot`] is built and validated away from the workers, then swapped whole through
//! the one [`Store`]. Workers read it through a per-thread cache; every snapshot carries a
//! generation number so cached decisions (a channel's admission) can be revalidated lazily.

pub mod diff;
pub mod tls;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use md5::{Digest, Md5};

use crate::config::{
    AuthType, ClusterProtocol, ClusterType, Endpoint, ListenerProtocol, StunnerConfig,
    parse_endpoint,
};

/// Index of a cluster in [`Snapshot::clusters`].
pub type ClusterIdx = usize;
/// Index of a listener in [`Snapshot::listeners`].
pub type ListenerIdx = usize;

/// Everything hot-reloadable, compiled.
pub struct Snapshot {
    pub generation: u64,
    pub realm: String,
    pub auth: Auth,
    /// Maximum allocations per user id; 0 = unlimited.
    pub user_quota: u32,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// The validated config this was built from (for status, diff and logging).
    pub config: StunnerConfig,
}

/// Credentials in the form the auth code needs them.
pub enum Auth {
    /// The static users (`credentials.username`/`password` and the `credentials.users`
    /// extension), each with its long-term key MD5(username:realm:password) precomputed.
    /// User names are unique (validation).
    Static { users: Vec<StaticUser> },
    /// The TURN REST API shared secrets (`credentials.secret` and the `credentials.secrets`
    /// extension), each once; any of them signs a valid credential.
    Ephemeral { secrets: Vec<Vec<u8>> },
    /// STUN only: TURN requests cannot authenticate.
    None,
}

/// One static user with its long-term key.
pub struct StaticUser {
    pub username: String,
    pub key: [u8; 16],
}

impl Auth {
    /// The key of static user `username`, if there is one.
    pub fn static_key(&self, username: &str) -> Option<&[u8; 16]> {
        match self {
            Auth::Static { users } => users
                .iter()
                .find(|u| u.username == username)
                .map(|u| &u.key),
            _ => None,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Static { users } => {
                let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
                write!(f, "Static {{ users: {names:?}, keys: <SECRET> }}")
            }
            Auth::Ephemeral { secrets } => {
                write!(f, "Ephemeral {{ secrets: <{} SECRET(S)> }}", secrets.len())
            }
            Auth::None => write!(f, "None"),
        }
    }
}

#[derive(Debug)]
pub struct Listener {
    pub name: Arc<str>,
    pub protocol: ListenerProtocol,
    /// The IP advertised in XOR-RELAYED-ADDRESS (the listener `address`).
    pub relay_ip: IpAddr,
    pub port: u16,
    /// Routed clusters, in route-name order; dangling routes are dropped.
    pub routes: Vec<ClusterIdx>,
    /// Optional relay port range (our extension; upstream v1 ignores it).
    pub relay_ports: Option<(u16, u16)>,
    /// Identity of the listener's sockets: when it changes between snapshots, the listener
    /// restarts (dropping its allocations); otherwise it is reconciled in place. Upstream's
    /// rule: name, protocol, raw address, port, certificate, key, or the realm.
    pub signature: u64,
    /// TURN-TLS: the rustls config, or why the certificate could not be loaded (the
    /// listener then stays down; the rest of the config runs).
    pub tls: Option<Result<Arc<rustls::ServerConfig>, String>>,
    /// TURN-DTLS: the certificate and key, checked to load with openssl.
    pub dtls: Option<Result<tls::PemPair, String>>,
    /// TURN-TLS/DTLS: digest of the certificate material as loaded ([`tls::pem_digest`]);
    /// a kept listener whose digest changed hot-swaps its certificate.
    pub pem_digest: u64,
    /// TURN-TLS/DTLS: the certificate and key files named by path, for the watch.
    pub cert_files: Vec<std::path::PathBuf>,
}

impl Listener {
    /// The one address the listener's sockets bind, or `None` for the wildcard. A loopback
    /// `address` (`127.0.0.0/8`, `::1`, `localhost`) binds that address only, so such a
    /// listener, whose routes may open loopback peers (a TURN URI on `127.0.0.1` does), is
    /// never reachable from other hosts. Any other address is only advertised, as upstream.
    pub fn bind_ip(&self) -> Option<IpAddr> {
        self.relay_ip.is_loopback().then_some(self.relay_ip)
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: ClusterProtocol,
    /// STATIC endpoints.
    pub endpoints: Vec<Endpoint>,
    /// STRICT_DNS names (resolved in the background, not part of admission directly).
    pub dns_names: Vec<String>,
    /// Current resolution of `dns_names`.
    pub dns_ips: Vec<IpAddr>,
}

impl Snapshot {
    /// Compile a validated config.
    pub fn build(config: StunnerConfig, generation: u64) -> Result<Snapshot, String> {
        let realm = config.auth.realm.clone();
        let auth = match config.auth.auth_type {
            AuthType::Static => Auth::Static {
                users: config
                    .auth
                    .static_users()
                    .into_iter()
                    .map(|(username, password)| StaticUser {
                        username: username.to_string(),
                        key: long_term_key(username, &realm, password),
                    })
                    .collect(),
            },
            AuthType::Ephemeral => Auth::Ephemeral {
                secrets: config
                    .auth
                    .ephemeral_secrets()
                    .into_iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
            },
            AuthType::None => Auth::None,
        };
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for (i, c) in config.clusters.iter().enumerate() {
            let (endpoints, dns_names) = match c.cluster_type {
                ClusterType::Static => {
                    let eps = c
                        .endpoints
                        .iter()
                        .map(|e| parse_endpoint(e))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("clusters[{i}].endpoints: {e}"))?;
                    (eps, Vec::new())
                }
                ClusterType::StrictDns => (Vec::new(), c.endpoints.clone()),
            };
            clusters.push(Cluster {
                name: c.name.as_str().into(),
                protocol: c.protocol,
                endpoints,
                dns_names,
                dns_ips: Vec::new(),
            });
        }
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let mut routes: Vec<ClusterIdx> = l
                    .routes
                    .iter()
                    .filter_map(|r| clusters.iter().position(|c| &*c.name == r.as_str()))
                    .collect();
                routes.dedup();
                let secure = matches!(
                    l.protocol,
                    ListenerProtocol::TurnTls | ListenerProtocol::TurnDtls
                );
                let pem = secure.then(|| tls::pem_pair(&l.cert, &l.key, l.relay_ip()));
                let pem_digest = pem
                    .as_ref()
                    .map_or(0, |p| tls::pem_digest(&l.cert, &l.key, p));
                let cert_files = if secure {
                    [&l.cert, &l.key]
                        .into_iter()
                        .filter_map(|s| tls::input_path(s))
                        .collect()
                } else {
                    Vec::new()
                };
                Listener {
                    name: l.name.as_str().into(),
                    protocol: l.protocol,
                    relay_ip: l.relay_ip(),
                    port: l.port,
                    routes,
                    relay_ports: l.min_relay_port.zip(l.max_relay_port),
                    signature: listener_signature(l, &config.auth.realm),
                    tls: pem
                        .clone()
                        .filter(|_| l.protocol == ListenerProtocol::TurnTls)
                        .map(|p| p.and_then(|pem| tls::rustls_config(&pem))),
                    dtls: pem
                        .filter(|_| l.protocol == ListenerProtocol::TurnDtls)
                        .map(|p| p.and_then(|pem| tls::openssl_pair(&pem).map(|_| pem))),
                    pem_digest,
                    cert_files,
                }
            })
            .collect();
        Ok(Snapshot {
            generation,
            realm,
            auth,
            user_quota: config.admin.user_quota,
            listeners,
            clusters,
            config,
        })
    }

    /// Find a listener by name.
    pub fn listener(&self, name: &str) -> Option<(ListenerIdx, &Listener)> {
        self.listeners
            .iter()
            .enumerate()
            .find(|(_, l)| &*l.name == name)
    }
}

fn listener_signature(l: &crate::config::ListenerConfig, realm: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &l.name,
        l.protocol.as_str(),
        &l.address,
        l.port,
        &l.cert,
        &l.key,
        realm,
    )
        .hash(&mut h);
    h.finish()
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The one place snapshots are published: one writer (the reconciler), many readers.
#[derive(Clone)]
pub struct Store {
    current: Arc<ArcSwap<Snapshot>>,
}

/// A reader's per-thread cache of the current snapshot: one atomic load when unchanged.
pub type SnapshotCache = arc_swap::Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>;

impl Store {
    pub fn new(initial: Snapshot) -> Store {
        Store {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publish `next`, returning the snapshot it replaced.
    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        self.current.swap(Arc::new(next))
    }

    /// Publish `next`, shared, returning the snapshot it replaced.
    pub fn swap_arc(&self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        self.current.swap(next)
    }

    pub fn cache(&self) -> SnapshotCache {
        arc_swap::Cache::new(Arc::clone(&self.current))
    }
}

/// Builders for tests across the crate.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::config::{AuthConfig, ClusterConfig, ListenerConfig, zero_config};

    /// A snapshot with one TURN-UDP listener on 127.0.0.1 routed to every given cluster.
    pub fn snapshot_with_clusters(clusters: &[(&str, &[&str])]) -> Snapshot {
        let mut cfg = zero_config("test/test");
        cfg.auth = AuthConfig::new(
            AuthType::Static,
            "stunner.l7mp.io",
            [("username", "user"), ("password", "pass")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        cfg.clusters = clusters
            .iter()
            .map(|(name, eps)| ClusterConfig {
                name: name.to_string(),
                cluster_type: ClusterType::Static,
                protocol: ClusterProtocol::Udp,
                endpoints: eps.iter().map(|e| e.to_string()).collect(),
            })
            .collect();
        cfg.listeners = vec![ListenerConfig {
            name: "udp".into(),
            protocol: ListenerProtocol::TurnUdp,
            public_address: String::new(),
            public_port: 0,
            address: "127.0.0.1".into(),
            port: 3478,
            cert: String::new(),
            key: String::new(),
            routes: clusters.iter().map(|(n, _)| n.to_string()).collect(),
            min_relay_port: None,
            max_relay_port: None,
        }];
        Snapshot::build(cfg, 1).expect("test snapshot")
    }
}
