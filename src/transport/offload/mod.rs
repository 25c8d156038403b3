//! The kernel fast path (`admin.offload_engine`): the eBPF program of `bpf/offload.c`,
//! loaded and attached, and its tables as the workers' cores write them.
//!
//! The program is built by `build.rs` with clang and embedded in the binary; a build
//! without clang has none ([`available`] says why), and then `Auto` relays in user space
//! and `TC`/`XDP` refuse the config. `Auto` tries TC first and XDP second
//! ([`Engine::choices`]). TC attaches as a tcx link where the kernel has them (Linux 6.6 and
//! later), XDP as an XDP bpf_link in generic mode (Linux 5.9 and later; see `load.rs` for
//! why not native): a link belongs to this process, so nothing is relayed in the
//! kernel after it ends, however it ends. Older kernels get a clsact filter for TC, whose
//! stale copies from an earlier run are removed first.
//!
//! One [`Offload`] is shared by the runtime (which loads and attaches it as the config
//! says, before a snapshot is published) and the workers (which install and remove
//! routes through `Relays`, see `turn/server/offload.rs`). Route changes take a lock and
//! a few map syscalls; packets never touch this module.

pub mod keys;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustc_hash::FxHashMap;
use tracing::{info, warn};

use crate::config::ListenerProtocol;
use crate::snapshot::Snapshot;
use crate::turn::{OffloadCounters, OffloadRoute};
use keys::{AddrKey, Fallback};

#[cfg(stunnerd_bpf)]
mod load;

/// The compiled program, when this build has one.
#[cfg(stunnerd_bpf)]
static PROGRAM: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/offload.o"
)));
#[cfg(not(stunnerd_bpf))]
static PROGRAM: Option<&[u8]> = None;

/// Whether this build carries the eBPF program; `Err` says why not.
pub fn available() -> Result<&'static [u8], String> {
    PROGRAM.ok_or_else(|| {
        "this build has no eBPF program (clang or the libbpf headers were missing when it was \
         built; see scripts/setup.sh)"
            .to_string()
    })
}

/// Which kernel hook relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Tc,
    Xdp,
}

impl Engine {
    /// The engines to try, best first, for an `admin.offload_engine` value. `Auto` prefers
    /// TC, which is correct on every interface (`bpf_skb_adjust_room` keeps the kernel's
    /// checksum bookkeeping right, so a NIC finishing a partial checksum on transmit gets it
    /// right too), and takes XDP where TC does not attach. XDP is a little cheaper (issue
    /// 14's probes on `lo`: 4.50 against 4.90 us per datagram, all CPUs) but cannot fix that
    /// bookkeeping after moving the headers; ask for it by name.
    pub fn choices(setting: &str) -> &'static [Engine] {
        match setting {
            "TC" => &[Engine::Tc],
            "XDP" => &[Engine::Xdp],
            "Auto" => &[Engine::Tc, Engine::Xdp],
            _ => &[],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Tc => "TC",
            Engine::Xdp => "XDP",
        }
    }
}

/// The loaded program, its attachments and its tables (see `load.rs`).
#[cfg(stunnerd_bpf)]
type Loaded = load::Loaded;

/// Stands in for the loaded program in a build without one (never constructed).
#[cfg(not(stunnerd_bpf))]
enum Loaded {}

#[cfg(not(stunnerd_bpf))]
impl Loaded {
    fn engine(&self) -> Engine {
        match *self {}
    }
    fn set_addr(&mut self, _: &AddrKey, _: u32) -> Result<(), String> {
        match *self {}
    }
    fn del_addr(&mut self, _: &AddrKey) {
        match *self {}
    }
    fn install(&mut self, _: &OffloadRoute) -> Result<(), String> {
        match *self {}
    }
    fn read(&self, _: &OffloadRoute) -> Option<OffloadCounters> {
        match *self {}
    }
    fn remove(&mut self, _: &OffloadRoute) -> Option<OffloadCounters> {
        match *self {}
    }
    fn fallbacks(&self) -> [u64; Fallback::COUNT] {
        match *self {}
    }
}

/// The offload of the process: what runs, and the totals of what it relayed.
#[derive(Default)]
pub struct Offload {
    inner: Mutex<Inner>,
    /// Offload epoch (0: none runs). Bumped at every load: tables start empty.
    epoch: AtomicU64,
    /// What the cores have read back so far (`stunnerd_offload_*`).
    to_peer_packets: AtomicU64,
    to_peer_bytes: AtomicU64,
    to_client_packets: AtomicU64,
    to_client_bytes: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// The (engine, interfaces) last applied, as the config says them.
    setting: Option<(String, Vec<String>)>,
    loaded: Option<Loaded>,
    /// Listener addresses in `addrs`.
    listeners: Vec<AddrKey>,
    /// Relay addresses in `addrs`, with the number of routes using each.
    relays: FxHashMap<AddrKey, u32>,
    /// Routes installed.
    entries: u64,
    next_epoch: u64,
    /// Fallback counts of programs loaded earlier (the counters never go backwards).
    old_fallbacks: [u64; Fallback::COUNT],
}

/// What the metrics show of the offload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadStats {
    pub engine: Option<Engine>,
    pub entries: u64,
    pub relayed: OffloadCounters,
    pub fallbacks: [u64; Fallback::COUNT],
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Offload {
    pub fn new() -> Arc<Offload> {
        Arc::new(Offload::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Load, attach, re-attach or unload as `snap`'s `admin.offload_engine` and
    /// `admin.offload_interfaces` say, and point the program at its TURN-UDP listeners.
    /// Called before `snap` is published; an error (naming the field) refuses the config.
    pub fn apply(&self, snap: &Snapshot) -> Result<(), String> {
        let admin = &snap.config.admin;
        let engine = admin.offload_engine.clone();
        let ifaces = if admin.offload_interfaces.is_empty() {
            listener_interfaces(snap)
        } else {
            admin.offload_interfaces.clone()
        };
        let mut inner = self.lock();
        let setting = (engine.clone(), ifaces.clone());
        if inner.setting.as_ref() != Some(&setting) {
            let mut loaded = None;
            let mut why = String::new();
            let choices = Engine::choices(&engine);
            for (i, &e) in choices.iter().enumerate() {
                match load_engine(e, &ifaces) {
                    Ok(l) => {
                        loaded = Some(l);
                        break;
                    }
                    Err(w) if i + 1 < choices.len() => {
                        info!(target: "stunnerd", "offload: Auto: {} unavailable ({w}); trying {}", e.as_str(), choices[i + 1].as_str());
                    }
                    Err(w) => why = w,
                }
            }
            if loaded.is_none() && !choices.is_empty() {
                if engine == "Auto" {
                    info!(target: "stunnerd", "offload: Auto: kernel offload unavailable ({why}); relaying in user space");
                } else {
                    return Err(format!(
                        "admin.offload_engine: {engine} offload unavailable: {why}"
                    ));
                }
            }
            if let Some(old) = inner.loaded.take() {
                let f = old.fallbacks();
                for (a, b) in inner.old_fallbacks.iter_mut().zip(f) {
                    *a += b;
                }
            }
            inner.listeners.clear();
            inner.relays.clear();
            inner.entries = 0;
            let epoch = if loaded.is_some() {
                inner.next_epoch += 1;
                inner.next_epoch
            } else {
                0
            };
            if let Some(l) = &loaded {
                info!(target: "stunnerd", "offload: {} on {}", l.engine().as_str(), ifaces.join(","));
            } else if inner.setting.is_some() {
                info!(target: "stunnerd", "offload: off");
            }
            inner.loaded = loaded;
            inner.setting = Some(setting);
            self.epoch.store(epoch, Ordering::Release);
        }
        // The listener addresses: the one lookup that tells our packets from the rest.
        let want: Vec<AddrKey> = snap
            .listeners
            .iter()
            .filter(|l| l.protocol == ListenerProtocol::TurnUdp)
            .filter(|l| !l.relay_ip.is_unspecified())
            .map(|l| AddrKey::new(std::net::SocketAddr::new(l.relay_ip, l.port)))
            .collect();
        let Inner {
            loaded, listeners, ..
        } = &mut *inner;
        if let Some(l) = loaded {
            for k in listeners.iter().filter(|k| !want.contains(k)) {
                l.del_addr(k);
            }
            for k in &want {
                l.set_addr(k, keys::KIND_LISTENER)?;
            }
        }
        *listeners = want;
        Ok(())
    }

    /// The engine relaying now, if any.
    pub fn engine(&self) -> Option<Engine> {
        self.lock().loaded.as_ref().map(Loaded::engine)
    }

    /// The current epoch (`None`: no offload runs).
    pub fn epoch(&self) -> Option<u64> {
        Some(self.epoch.load(Ordering::Acquire)).filter(|&e| e != 0)
    }

    /// Install a route; false when no offload runs or the kernel refused it.
    pub fn install(&self, r: &OffloadRoute) -> bool {
        let mut inner = self.lock();
        let Inner {
            loaded,
            relays,
            entries,
            ..
        } = &mut *inner;
        let Some(l) = loaded.as_mut() else {
            return false;
        };
        if let Err(e) = l.install(r) {
            warn!(target: "stunnerd", "offload: cannot install a route: {e}");
            return false;
        }
        let relay = AddrKey::new(r.relay);
        let n = relays.entry(relay).or_insert(0);
        if *n == 0 {
            if let Err(e) = l.set_addr(&relay, keys::KIND_RELAY) {
                warn!(target: "stunnerd", "offload: cannot install a relay address: {e}");
                l.remove(r);
                return false;
            }
        }
        *n += 1;
        *entries += 1;
        true
    }

    /// A route's counters so far.
    pub fn read(&self, r: &OffloadRoute) -> Option<OffloadCounters> {
        self.lock().loaded.as_ref()?.read(r)
    }

    /// Remove a route; returns its last counters.
    pub fn remove(&self, r: &OffloadRoute) -> Option<OffloadCounters> {
        let mut inner = self.lock();
        let Inner {
            loaded,
            relays,
            entries,
            ..
        } = &mut *inner;
        let l = loaded.as_mut()?;
        let last = l.remove(r)?;
        *entries = entries.saturating_sub(1);
        let relay = AddrKey::new(r.relay);
        if let Some(n) = relays.get_mut(&relay) {
            *n -= 1;
            if *n == 0 {
                relays.remove(&relay);
                l.del_addr(&relay);
            }
        }
        Some(last)
    }

    /// A core counted `d` of offloaded traffic.
    pub fn counted(&self, d: &OffloadCounters) {
        self.to_peer_packets
            .fetch_add(d.to_peer_packets, Ordering::Relaxed);
        self.to_peer_bytes
            .fetch_add(d.to_peer_bytes, Ordering::Relaxed);
        self.to_client_packets
            .fetch_add(d.to_client_packets, Ordering::Relaxed);
        self.to_client_bytes
            .fetch_add(d.to_client_bytes, Ordering::Relaxed);
    }

    /// What the metrics show.
    pub fn stats(&self) -> OffloadStats {
        let inner = self.lock();
        let mut fallbacks = inner.old_fallbacks;
        if let Some(l) = &inner.loaded {
            for (a, b) in fallbacks.iter_mut().zip(l.fallbacks()) {
                *a += b;
            }
        }
        OffloadStats {
            engine: inner.loaded.as_ref().map(Loaded::engine),
            entries: inner.entries,
            relayed: OffloadCounters {
                to_peer_packets: self.to_peer_packets.load(Ordering::Relaxed),
                to_peer_bytes: self.to_peer_bytes.load(Ordering::Relaxed),
                to_client_packets: self.to_client_packets.load(Ordering::Relaxed),
                to_client_bytes: self.to_client_bytes.load(Ordering::Relaxed),
            },
            fallbacks,
        }
    }

    /// Detach and unload (the daemon stops; the workers have removed their routes).
    pub fn stop(&self) {
        let mut inner = self.lock();
        if inner.loaded.take().is_some() {
            info!(target: "stunnerd", "offload: detached");
        }
        inner.setting = None;
        self.epoch.store(0, Ordering::Release);
    }
}

#[cfg(stunnerd_bpf)]
fn load_engine(e: Engine, ifaces: &[String]) -> Result<Loaded, String> {
    let program = available()?;
    if ifaces.is_empty() {
        return Err(
            "no interface carries a TURN-UDP listener's address; name them in \
                    admin.offload_interfaces"
                .into(),
        );
    }
    load::Loaded::new(program, e, ifaces)
}

#[cfg(not(stunnerd_bpf))]
fn load_engine(_: Engine, _: &[String]) -> Result<Loaded, String> {
    available().map(|_| unreachable!("a build without the program has no bytes"))
}

/// The interfaces that carry the TURN-UDP listeners' addresses (loopback for
/// `127.0.0.0/8` and `::1`), sorted.
fn listener_interfaces(snap: &Snapshot) -> Vec<String> {
    let ips: Vec<std::net::IpAddr> = snap
        .listeners
        .iter()
        .filter(|l| l.protocol == ListenerProtocol::TurnUdp)
        .map(|l| l.relay_ip)
        .collect();
    let mut out: Vec<String> = interface_addrs()
        .into_iter()
        .filter(|(_, ip)| {
            ips.contains(ip) || (ip.is_loopback() && ips.iter().any(|i| i.is_loopback()))
        })
        .map(|(name, _)| name)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every (interface, address) pair of the host.
fn interface_addrs() -> Vec<(String, std::net::IpAddr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head it allocated into `head`; it is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: AF_INET: the sockaddr is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                std::net::IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6: the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                std::net::IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        out.push((name, ip));
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_tc_then_xdp_and_the_others_ask_for_one_engine() {
        assert_eq!(Engine::choices("Auto"), &[Engine::Tc, Engine::Xdp]);
        assert_eq!(Engine::choices("XDP"), &[Engine::Xdp]);
        assert_eq!(Engine::choices("TC"), &[Engine::Tc]);
        assert!(Engine::choices("None").is_empty());
        assert!(
            Engine::choices("xdp").is_empty(),
            "the config normalises the name first"
        );
    }
}
