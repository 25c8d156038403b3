//! Peer admission: the one function every relay path asks (CreatePermission, ChannelBind,
//! Send, ChannelData, peer datagrams, and later TCP Connect and accepted peer connections).
//!
//! A peer is admitted when its canonical address falls inside a cluster routed from the
//! client's listener (STATIC: prefix plus port range; STRICT_DNS: one of the resolved IPs).
//! On top, special-purpose ranges (loopback, private, link-local, metadata, multicast, ...)
//! are denied unless the admitting endpoint names that range, or an address inside it, on
//! purpose: a wildcard such as `0.0.0.0/0` or `::/0` never opens them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::snapshot::{ClusterIdx, Listener, Snapshot};

/// Why a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No routed cluster contains the peer (IP and port).
    NoRoute,
    /// A wildcard route contains the peer, but it is in a special-purpose range that only
    /// an explicit endpoint can open.
    SpecialPurpose,
    /// A routed endpoint contains the peer's IP, but not its port.
    PortRange,
}

impl Denied {
    /// The rule that refused the peer, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::NoRoute => "no route admits it",
            Denied::SpecialPurpose => {
                "special-purpose address (only an endpoint naming it opens it)"
            }
            Denied::PortRange => "port outside the routed endpoint's port range",
        }
    }
}

/// Admit `peer` for a client of `listener`; returns the admitting cluster.
pub fn admit(snap: &Snapshot, listener: &Listener, peer: SocketAddr) -> Result<ClusterIdx, Denied> {
    admit_with(snap, listener, peer.ip(), Some(peer.port()))
}

/// Whether some port of `ip` is admitted: the check for CreatePermission, whose
/// permissions are per IP (the port is checked on every packet).
pub fn admit_ip(snap: &Snapshot, listener: &Listener, ip: IpAddr) -> Result<ClusterIdx, Denied> {
    admit_with(snap, listener, ip, None)
}

fn admit_with(
    snap: &Snapshot,
    listener: &Listener,
    ip: IpAddr,
    port: Option<u16>,
) -> Result<ClusterIdx, Denied> {
    let ip = canonical_ip(ip);
    let mut result = Err(Denied::NoRoute);
    for &idx in &listener.routes {
        let Some(cluster) = snap.clusters.get(idx) else {
            continue;
        };
        // Resolved DNS names are explicit by nature.
        if cluster.dns_ips.contains(&ip) {
            return Ok(idx);
        }
        for ep in &cluster.endpoints {
            if !ep.net.contains(&ip) {
                continue;
            }
            if port.is_some_and(|p| !ep.ports.contains(&p)) {
                // The most telling reason wins: special-purpose, then port range.
                if result == Err(Denied::NoRoute) {
                    result = Err(Denied::PortRange);
                }
                continue;
            }
            if is_opened_by(ep.net, ip) {
                return Ok(idx);
            }
            result = Err(Denied::SpecialPurpose);
        }
    }
    result
}

/// Unwrap IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, the NAT64
/// well-known prefix), so a v4 deny rule cannot be bypassed by writing the peer in v6.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-compatible (::a.b.c.d, deprecated) except :: and ::1 themselves.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return IpAddr::V4(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(tail);
    }
    ip
}

/// Canonical form of a peer socket address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// Whether endpoint prefix `ep` may admit `ip`: always, unless `ip` is in a
/// special-purpose range and `ep` is wider than every such range containing `ip`.
fn is_opened_by(ep: IpNet, ip: IpAddr) -> bool {
    let mut denied = false;
    for range in deny_ranges(ip) {
        if range.contains(&ip) {
            denied = true;
            if range.contains(&ep) {
                return true;
            }
        }
    }
    !denied
}

fn deny_ranges(ip: IpAddr) -> &'static [IpNet] {
    match ip {
        IpAddr::V4(_) => &DENY_V4,
        IpAddr::V6(_) => &DENY_V6,
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len) {
        Ok(n) => n,
        Err(_) => panic!("bad deny prefix"),
    })
}

const fn v6(segs: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segs;
    IpNet::V6(
        match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), len) {
            Ok(n) => n,
            Err(_) => panic!("bad deny prefix"),
        },
    )
}

/// IPv4 special-purpose ranges (RFC 6890 and successors) a public relay must not reach
/// through a wildcard route.
pub static DENY_V4: [IpNet; 15] = [
    v4(0, 0, 0, 0, 8),       // "this network", including 0.0.0.0
    v4(10, 0, 0, 0, 8),      // RFC 1918
    v4(100, 64, 0, 0, 10),   // CGNAT shared space
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local, including 169.254.169.254 cloud metadata
    v4(172, 16, 0, 0, 12),   // RFC 1918
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // TEST-NET-1
    v4(192, 88, 99, 0, 24),  // 6to4 relay anycast (deprecated)
    v4(192, 168, 0, 0, 16),  // RFC 1918
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // TEST-NET-2
    v4(203, 0, 113, 0, 24),  // TEST-NET-3
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, including broadcast
];

/// IPv6 special-purpose ranges.
pub static DENY_V6: [IpNet; 14] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),         // unspecified
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),         // loopback
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),     // IPv4-mapped (canonicalised before)
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // local-use NAT64
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard-only
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),     // IETF protocol assignments, Teredo
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),     // 6to4 (embeds IPv4)
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation (RFC 9637)
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),     // SRv6 SIDs
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link-local
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),     // site-local (deprecated)
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testing::snapshot_with_clusters;

    fn admits(endpoints: &[&str], peer: &str) -> Result<ClusterIdx, Denied> {
        let snap = snapshot_with_clusters(&[("c", endpoints)]);
        admit(&snap, &snap.listeners[0], peer.parse().unwrap())
    }

    #[test]
    fn wildcard_admits_public_but_not_special_ranges() {
        assert!(admits(&["0.0.0.0/0"], "8.8.8.8:53").is_ok());
        for peer in [
            "127.0.0.1:5000",
            "0.0.0.0:5000",
            "10.1.2.3:5000",
            "169.254.169.254:80",
            "192.168.1.1:1",
            "100.64.0.1:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
        ] {
            assert_eq!(
                admits(&["0.0.0.0/0"], peer),
                Err(Denied::SpecialPurpose),
                "{peer}"
            );
        }
        assert!(admits(&["::/0"], "[2606:4700::1]:443").is_ok());
        for peer in [
            "[::1]:1",
            "[fe80::1]:1",
            "[fd00::1]:1",
            "[ff02::1]:1",
            "[::]:1",
        ] {
            assert_eq!(
                admits(&["::/0"], peer),
                Err(Denied::SpecialPurpose),
                "{peer}"
            );
        }
    }

    #[test]
    fn v4_in_v6_forms_are_unwrapped() {
        for peer in [
            "[::ffff:127.0.0.1]:5000",
            "[::127.0.0.1]:5000",
            "[64:ff9b::7f00:1]:5000",
        ] {
            assert_eq!(
                admits(&["0.0.0.0/0", "::/0"], peer),
                Err(Denied::SpecialPurpose),
                "{peer}"
            );
            assert!(admits(&["127.0.0.1/32"], peer).is_ok(), "{peer}");
        }
        assert_eq!(
            canonical_ip("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn explicit_endpoints_open_special_ranges() {
        assert!(admits(&["127.0.0.1/32"], "127.0.0.1:5000").is_ok());
        assert!(admits(&["127.0.0.1"], "127.0.0.1:5000").is_ok());
        assert!(admits(&["10.0.0.0/8"], "10.9.8.7:1").is_ok());
        assert!(admits(&["10.42.0.7"], "10.42.0.7:1").is_ok());
        assert!(admits(&["fd00:42::/64"], "[fd00:42::5]:1").is_ok());
        // Wider than the special range: not on purpose.
        assert_eq!(
            admits(&["10.0.0.0/7"], "10.1.1.1:1"),
            Err(Denied::SpecialPurpose)
        );
        assert_eq!(
            admits(&["127.0.0.1/32"], "127.0.0.2:1"),
            Err(Denied::NoRoute)
        );
    }

    #[test]
    fn port_ranges_apply_and_any_cluster_may_admit() {
        assert!(admits(&["10.0.0.1:<8000-9000>"], "10.0.0.1:8000").is_ok());
        assert!(admits(&["10.0.0.1:<8000-9000>"], "10.0.0.1:9000").is_ok());
        assert_eq!(
            admits(&["10.0.0.1:<8000-9000>"], "10.0.0.1:9001"),
            Err(Denied::PortRange)
        );
        assert_eq!(
            admits(&["10.0.0.1:<8000-9000>"], "10.0.0.2:8000"),
            Err(Denied::NoRoute)
        );
        let snap =
            snapshot_with_clusters(&[("a", &["10.0.0.1:<1-10>"]), ("b", &["10.0.0.1:<100-200>"])]);
        let l = &snap.listeners[0];
        assert_eq!(admit(&snap, l, "10.0.0.1:150".parse().unwrap()), Ok(1));
        assert_eq!(admit(&snap, l, "10.0.0.1:5".parse().unwrap()), Ok(0));
        assert!(admit(&snap, l, "10.0.0.1:50".parse().unwrap()).is_err());
    }

    #[test]
    fn unrouted_clusters_do_not_admit() {
        let mut snap = snapshot_with_clusters(&[("c", &["8.8.8.8"])]);
        snap.listeners[0].routes.clear();
        assert_eq!(
            admit(&snap, &snap.listeners[0], "8.8.8.8:1".parse().unwrap()),
            Err(Denied::NoRoute)
        );
    }
}
