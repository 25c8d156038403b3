//! Socket creation and the few options the safe crates do not cover.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Default receive and send buffer size asked for on listener and relay sockets.
pub const SOCKET_BUFFER: usize = 4 << 20;

static BUFFER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(SOCKET_BUFFER);

/// Set the buffer size for sockets created from now on (`--socket-buffer-size`).
pub fn set_socket_buffer(bytes: usize) {
    BUFFER.store(bytes.max(4096), std::sync::atomic::Ordering::Relaxed);
}

fn socket_buffer() -> usize {
    BUFFER.load(std::sync::atomic::Ordering::Relaxed)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force
/// afterwards (what the descriptor budgets are drawn from).
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` through the pointer, which points to a
    // valid, exclusively borrowed value for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one valid `struct rlimit`; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// Non-blocking UDP listener sockets with SO_REUSEPORT, so each worker binds its own
/// sockets of one group.
///
/// `bind` is `None` for the wildcard: `0.0.0.0:port`, plus `[::]:port` (IPv6 only) when the
/// host has IPv6. Upstream binds one dual-stack socket; two sockets serve the same clients,
/// and IPv4 clients skip the kernel's IPv4-mapped path on every send. A listener `address`
/// is then only advertised, never bound (upstream semantics). `Some(ip)` binds that address
/// only: [`crate::snapshot::Listener::bind_ip`] asks for it for a loopback listener, which
/// must never be reachable from other hosts.
pub fn listener_sockets(bind: Option<IpAddr>, port: u16) -> io::Result<Vec<UdpSocket>> {
    if let Some(ip) = bind {
        return Ok(vec![bind_udp(SocketAddr::new(ip, port), true, true)?]);
    }
    let mut out = vec![bind_udp(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        true,
        true,
    )?];
    match bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), true, true) {
        Ok(s) => out.push(s),
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Non-blocking TCP listener sockets with SO_REUSEPORT, one group per worker as for UDP:
/// on `0.0.0.0:port` and, when the host has IPv6, `[::]:port` (IPv6 only), or on `bind`
/// only when given (see [`listener_sockets`]).
pub fn tcp_listener_sockets(
    bind: Option<IpAddr>,
    port: u16,
) -> io::Result<Vec<std::net::TcpListener>> {
    if let Some(ip) = bind {
        return Ok(vec![bind_tcp(SocketAddr::new(ip, port), true)?]);
    }
    let mut out = vec![bind_tcp(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        true,
    )?];
    match bind_tcp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), true) {
        Ok(s) => out.push(s),
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The listening socket of an RFC 6062 TCP relay. SO_REUSEADDR and SO_REUSEPORT, so the
/// outbound connections of Connect can bind the same relayed address.
pub fn tcp_relay_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_tcp(addr, true)
}

/// A non-blocking connect from the relayed address `local` (shared with the relay's
/// listening socket) to `peer`.
pub fn tcp_relay_connect(local: SocketAddr, peer: SocketAddr) -> io::Result<std::net::TcpStream> {
    let socket = Socket::new(
        Domain::for_address(local),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if local.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    match socket.connect(&peer.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Like [`ensure_udp_port_free`], for TCP.
pub fn ensure_tcp_port_free(port: u16) -> io::Result<()> {
    for ip in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ] {
        match bind_tcp(SocketAddr::new(ip, port), false) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fail with `AddrInUse` when any socket, ours or another process's, holds UDP `port`.
///
/// Listener groups use SO_REUSEPORT so that each worker has its own socket, but Linux
/// lets any process of the same user join such a group and silently take a share of the
/// traffic. A plain bind without SO_REUSEPORT fails if anyone holds the port, so probing
/// with one before binding the group keeps two daemons from sharing a port.
pub fn ensure_udp_port_free(port: u16) -> io::Result<()> {
    let probe = match bind_udp(
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        false,
        false,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => bind_udp(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            false,
            false,
        ),
        other => other,
    };
    probe.map(drop)
}

/// A non-blocking relay socket bound to `addr` (wildcard of one family, port 0 or a
/// chosen port). No SO_REUSEPORT: a relay port belongs to one allocation.
pub fn relay_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind_udp(addr, false, true)
}

fn bind_udp(addr: SocketAddr, reuse_port: bool, v6_only: bool) -> io::Result<UdpSocket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Listeners are dual-stack like upstream; IPv6 relays are IPv6 only.
        socket.set_only_v6(v6_only)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(socket_buffer());
    let _ = socket.set_send_buffer_size(socket_buffer());
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Set the IP don't-fragment behaviour (RFC 8656 DONT-FRAGMENT): path MTU discovery "do",
/// so the kernel sets DF and never fragments locally.
pub fn set_dont_fragment(socket: &UdpSocket, v6: bool) -> io::Result<()> {
    let (level, name, value) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: `socket` owns a valid open file descriptor for the duration of the call, and
    // we pass a pointer to a live `c_int` together with its exact size, as setsockopt(2)
    // requires for these integer options.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
