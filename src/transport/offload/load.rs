//! Loading and attaching the program with aya, and its tables.

use std::io;

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::tc::{self, SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, Xdp, XdpFlags};
use aya::{Ebpf, EbpfLoader, Pod};
use tracing::info;

use super::Engine;
use super::keys::{self, AddrKey, AddrVal, DownKey, DownVal, Fallback, UpKey, UpVal};
use crate::turn::{OffloadCounters, OffloadRoute};

// SAFETY: plain `repr(C)` structs of integers and byte arrays with explicit padding: every
// bit pattern is valid and no byte is uninitialised (keys.rs checks the layouts).
unsafe impl Pod for AddrKey {}
// SAFETY: as above.
unsafe impl Pod for AddrVal {}
// SAFETY: as above.
unsafe impl Pod for DownKey {}
// SAFETY: as above.
unsafe impl Pod for DownVal {}
// SAFETY: as above.
unsafe impl Pod for UpKey {}
// SAFETY: as above.
unsafe impl Pod for UpVal {}

/// The name of the TC program, which stale clsact filters of an earlier run carry.
const TC_PROGRAM: &str = "stunnerd_tc";
const XDP_PROGRAM: &str = "stunnerd_xdp";

pub(super) struct Loaded {
    engine: Engine,
    /// The program and its links: dropping it detaches.
    _ebpf: Ebpf,
    addrs: HashMap<MapData, AddrKey, AddrVal>,
    down: HashMap<MapData, DownKey, DownVal>,
    up: HashMap<MapData, UpKey, UpVal>,
    fallbacks: PerCpuArray<MapData, u64>,
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl Loaded {
    pub(super) fn new(program: &[u8], engine: Engine, ifaces: &[String]) -> Result<Loaded, String> {
        let mut ebpf = EbpfLoader::new()
            .load(program)
            .map_err(|e| format!("loading the eBPF program: {}", chain(&e)))?;
        match engine {
            Engine::Tc => attach_tc(&mut ebpf, ifaces)?,
            Engine::Xdp => attach_xdp(&mut ebpf, ifaces)?,
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| format!("the eBPF program has no map {name}"))
        };
        let (addrs, down, up, fallbacks) = (
            take("addrs")?,
            take("down")?,
            take("up")?,
            take("fallbacks")?,
        );
        let bad = |e: aya::maps::MapError| format!("eBPF map: {}", chain(&e));
        Ok(Loaded {
            engine,
            addrs: HashMap::try_from(addrs).map_err(bad)?,
            down: HashMap::try_from(down).map_err(bad)?,
            up: HashMap::try_from(up).map_err(bad)?,
            fallbacks: PerCpuArray::try_from(fallbacks).map_err(bad)?,
            _ebpf: ebpf,
        })
    }

    pub(super) fn engine(&self) -> Engine {
        self.engine
    }

    pub(super) fn set_addr(&mut self, k: &AddrKey, kind: u32) -> Result<(), String> {
        self.addrs
            .insert(k, AddrVal { kind }, 0)
            .map_err(|e| chain(&e))
    }

    pub(super) fn del_addr(&mut self, k: &AddrKey) {
        let _ = self.addrs.remove(k);
    }

    pub(super) fn install(&mut self, r: &OffloadRoute) -> Result<(), String> {
        let (dk, dv, uk, uv) = keys::encode(r);
        self.down.insert(dk, dv, 0).map_err(|e| chain(&e))?;
        if let Err(e) = self.up.insert(uk, uv, 0) {
            let _ = self.down.remove(&dk);
            return Err(chain(&e));
        }
        Ok(())
    }

    pub(super) fn read(&self, r: &OffloadRoute) -> Option<OffloadCounters> {
        let (dk, _, uk, _) = keys::encode(r);
        let d = self.down.get(&dk, 0).ok()?;
        let u = self.up.get(&uk, 0).ok()?;
        Some(keys::counters(&d, &u))
    }

    pub(super) fn remove(&mut self, r: &OffloadRoute) -> Option<OffloadCounters> {
        let (dk, _, uk, _) = keys::encode(r);
        let d = self.down.get(&dk, 0).ok();
        let u = self.up.get(&uk, 0).ok();
        let _ = self.down.remove(&dk);
        let _ = self.up.remove(&uk);
        Some(keys::counters(&d?, &u?))
    }

    pub(super) fn fallbacks(&self) -> [u64; Fallback::COUNT] {
        let mut out = [0; Fallback::COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = self.fallbacks.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }
}

/// Attach the TC program to every interface's ingress: a tcx link, or (older kernels) a
/// clsact filter after removing our own stale ones.
fn attach_tc(ebpf: &mut Ebpf, ifaces: &[String]) -> Result<(), String> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(TC_PROGRAM)
        .ok_or("the eBPF program has no TC entry point")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| chain(&e))?;
    prog.load()
        .map_err(|e| format!("loading the TC program: {}", chain(&e)))?;
    for iface in ifaces {
        let tcx = prog.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        );
        let Err(tcx_err) = tcx else {
            continue;
        };
        // No tcx (Linux before 6.6): a clsact filter, which outlives the process, so
        // first remove what an earlier run left.
        if let Err(e) = tc::qdisc_add_clsact(iface) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(format!(
                    "interface {iface}: tcx: {}; clsact: {e}",
                    chain(&tcx_err)
                ));
            }
        }
        match tc::qdisc_detach_program(iface, TcAttachType::Ingress, TC_PROGRAM) {
            Ok(()) => info!(target: "stunnerd", "offload: removed a stale filter from {iface}"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("interface {iface}: removing stale filters: {e}")),
        }
        prog.attach(iface, TcAttachType::Ingress)
            .map_err(|e| format!("interface {iface}: {}", chain(&e)))?;
    }
    Ok(())
}

/// Attach the XDP program to every interface in generic mode (`XdpFlags::SKB_MODE`). Not
/// native mode, although drivers such as veth have one: a native-mode XDP_REDIRECT hands
/// the frame to the target driver's XDP transmit, which a veth refuses unless its peer runs
/// XDP too, and then the datagram is lost with no way back to the stack (measured: 600 of
/// 600 lost across veth). Generic mode redirects through the ordinary transmit path to any
/// interface. aya attaches through a bpf_link on Linux 5.9 and later: the link belongs to
/// this process and the kernel detaches it when the process ends, however it ends
/// (SIGKILL included), as with tcx.
fn attach_xdp(ebpf: &mut Ebpf, ifaces: &[String]) -> Result<(), String> {
    let prog: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .ok_or("the eBPF program has no XDP entry point")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| chain(&e))?;
    prog.load()
        .map_err(|e| format!("loading the XDP program: {}", chain(&e)))?;
    for iface in ifaces {
        prog.attach(iface, XdpFlags::SKB_MODE)
            .map_err(|e| format!("interface {iface}: {}", chain(&e)))?;
    }
    Ok(())
}
