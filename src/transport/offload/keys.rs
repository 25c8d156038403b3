//! The kernel tables' keys and values, byte for byte as `bpf/offload.c` declares them:
//! addresses are 16 bytes (IPv4 as `::ffff:a.b.c.d`), ports in network byte order, and
//! every struct is padded explicitly so no byte is left undefined.

use std::net::{IpAddr, SocketAddr};

use crate::turn::{OffloadCounters, OffloadRoute};

/// `struct addr_val.kind`: what an address in `addrs` is.
pub const KIND_LISTENER: u32 = 1;
pub const KIND_RELAY: u32 = 2;

/// Why the kernel passed a packet for one of our sockets up to user space: the index into
/// the `fallbacks` table (`enum fallback` in the C program).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Fallback {
    NotChannelData = 0,
    Gso = 1,
    Fragment = 2,
    IpOptions = 3,
    Length = 4,
    TooBig = 5,
    NoEntry = 6,
    Error = 7,
    /// Off `lo`: no route to the rewritten packet's destination (unreachable, blackhole,
    /// forwarding disabled on the interface).
    NoRoute = 8,
    /// Off `lo`: the rewritten packet's destination is local (user space relays it).
    Local = 9,
}

impl Fallback {
    pub const COUNT: usize = 10;
    pub const ALL: [Fallback; Self::COUNT] = [
        Fallback::NotChannelData,
        Fallback::Gso,
        Fallback::Fragment,
        Fallback::IpOptions,
        Fallback::Length,
        Fallback::TooBig,
        Fallback::NoEntry,
        Fallback::Error,
        Fallback::NoRoute,
        Fallback::Local,
    ];

    /// The `reason` label of `stunnerd_offload_fallbacks_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::NotChannelData => "not_channel_data",
            Fallback::Gso => "gso",
            Fallback::Fragment => "fragment",
            Fallback::IpOptions => "ip_options",
            Fallback::Length => "length_mismatch",
            Fallback::TooBig => "too_big",
            Fallback::NoEntry => "no_entry",
            Fallback::Error => "error",
            Fallback::NoRoute => "no_route",
            Fallback::Local => "local_destination",
        }
    }
}

/// An address as the kernel keys it.
pub fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A port as the kernel keys it (network byte order in memory).
pub fn port(p: u16) -> [u8; 2] {
    p.to_be_bytes()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct AddrKey {
    pub ip: [u8; 16],
    pub port: [u8; 2],
    pub pad: u16,
}

impl AddrKey {
    pub fn new(a: SocketAddr) -> AddrKey {
        AddrKey {
            ip: ip16(a.ip()),
            port: port(a.port()),
            pad: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AddrVal {
    pub kind: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct DownKey {
    pub client_ip: [u8; 16],
    pub listener_ip: [u8; 16],
    pub client_port: [u8; 2],
    pub listener_port: [u8; 2],
    pub channel: [u8; 2],
    pub pad: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DownVal {
    pub relay_ip: [u8; 16],
    pub peer_ip: [u8; 16],
    pub relay_port: [u8; 2],
    pub peer_port: [u8; 2],
    pub pad: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct UpKey {
    pub peer_ip: [u8; 16],
    pub relay_ip: [u8; 16],
    pub peer_port: [u8; 2],
    pub relay_port: [u8; 2],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UpVal {
    pub listener_ip: [u8; 16],
    pub client_ip: [u8; 16],
    pub listener_port: [u8; 2],
    pub client_port: [u8; 2],
    pub channel: [u8; 2],
    pub pad: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// The two table entries of a route: client -> peer (`down`) and peer -> client (`up`).
pub fn encode(r: &OffloadRoute) -> (DownKey, DownVal, UpKey, UpVal) {
    let down_key = DownKey {
        client_ip: ip16(r.client.ip()),
        listener_ip: ip16(r.listener.ip()),
        client_port: port(r.client.port()),
        listener_port: port(r.listener.port()),
        channel: r.channel.to_be_bytes(),
        pad: 0,
    };
    let down_val = DownVal {
        relay_ip: ip16(r.relay.ip()),
        peer_ip: ip16(r.peer.ip()),
        relay_port: port(r.relay.port()),
        peer_port: port(r.peer.port()),
        ..DownVal::default()
    };
    let up_key = UpKey {
        peer_ip: ip16(r.peer.ip()),
        relay_ip: ip16(r.relay.ip()),
        peer_port: port(r.peer.port()),
        relay_port: port(r.relay.port()),
    };
    let up_val = UpVal {
        listener_ip: ip16(r.listener.ip()),
        client_ip: ip16(r.client.ip()),
        listener_port: port(r.listener.port()),
        client_port: port(r.client.port()),
        channel: r.channel.to_be_bytes(),
        ..UpVal::default()
    };
    (down_key, down_val, up_key, up_val)
}

/// A route's counters from its two entries.
pub fn counters(down: &DownVal, up: &UpVal) -> OffloadCounters {
    OffloadCounters {
        to_peer_packets: down.packets,
        to_peer_bytes: down.bytes,
        to_client_packets: up.packets,
        to_client_bytes: up.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::TransportId;

    /// The bytes of a key, as the kernel compares them.
    fn bytes<T: Copy>(v: &T) -> Vec<u8> {
        let n = std::mem::size_of::<T>();
        // SAFETY: `T` is one of this module's `repr(C)` structs of plain integers and byte
        // arrays with explicit padding, so all `n` bytes are initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), n).to_vec() }
    }

    #[test]
    fn layouts_match_the_c_program() {
        assert_eq!(std::mem::size_of::<AddrKey>(), 20);
        assert_eq!(std::mem::size_of::<AddrVal>(), 4);
        assert_eq!(std::mem::size_of::<DownKey>(), 40);
        assert_eq!(std::mem::size_of::<DownVal>(), 56);
        assert_eq!(std::mem::size_of::<UpKey>(), 36);
        assert_eq!(std::mem::size_of::<UpVal>(), 56);
        assert_eq!(std::mem::offset_of!(DownVal, packets), 40);
        assert_eq!(std::mem::offset_of!(UpVal, packets), 40);
    }

    #[test]
    fn ipv4_is_v4_mapped_and_ports_are_big_endian() {
        let k = AddrKey::new("127.0.0.1:3478".parse().unwrap());
        let b = bytes(&k);
        assert_eq!(
            &b[..16],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]
        );
        assert_eq!(&b[16..18], &[0x0d, 0x96]);
        assert_eq!(&b[18..], &[0, 0]);
        let k6 = AddrKey::new("[2001:db8::1]:443".parse().unwrap());
        assert_eq!(&bytes(&k6)[..2], &[0x20, 0x01]);
        assert_eq!(&bytes(&k6)[16..18], &[0x01, 0xbb]);
    }

    #[test]
    fn a_route_encodes_both_directions() {
        let r = OffloadRoute {
            transport: TransportId(3),
            listener: "10.0.0.1:3478".parse().unwrap(),
            client: "10.0.0.2:40000".parse().unwrap(),
            relay: "10.0.0.1:50000".parse().unwrap(),
            peer: "10.0.0.3:6000".parse().unwrap(),
            channel: 0x4001,
        };
        let (dk, dv, uk, uv) = encode(&r);
        let d = bytes(&dk);
        assert_eq!(&d[12..16], &[10, 0, 0, 2]);
        assert_eq!(&d[28..32], &[10, 0, 0, 1]);
        assert_eq!(&d[32..34], &40000u16.to_be_bytes());
        assert_eq!(&d[34..36], &3478u16.to_be_bytes());
        assert_eq!(&d[36..38], &[0x40, 0x01]);
        assert_eq!(dv.relay_port, 50000u16.to_be_bytes());
        assert_eq!(dv.peer_ip, ip16(r.peer.ip()));
        // The up key is what the peer's datagram carries: peer -> relay.
        assert_eq!(uk.peer_ip, dv.peer_ip);
        assert_eq!(uk.relay_port, dv.relay_port);
        assert_eq!(uv.client_port, dk.client_port);
        assert_eq!(uv.listener_ip, dk.listener_ip);
        assert_eq!(uv.channel, dk.channel);
        assert_eq!(bytes(&uv)[40..], [0u8; 16]);
    }

    #[test]
    fn counters_come_from_both_entries() {
        let dv = DownVal {
            packets: 3,
            bytes: 300,
            ..DownVal::default()
        };
        let uv = UpVal {
            packets: 5,
            bytes: 500,
            ..UpVal::default()
        };
        let c = counters(&dv, &uv);
        assert_eq!((c.to_peer_packets, c.to_peer_bytes), (3, 300));
        assert_eq!((c.to_client_packets, c.to_client_bytes), (5, 500));
    }
}
