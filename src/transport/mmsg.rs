//! Batched datagram I/O: `recvmmsg(2)` into a preallocated arena and `sendmmsg(2)` of a
//! queue whose datagrams may each go to a different destination.
//!
//! Why not quinn-udp: its send side takes one destination per call (a GSO train to one
//! peer), while a TURN listener answers many clients at once, and its receive side turns
//! on per-packet control messages (ECN, packet info) that a relay does not use. The two
//! system calls are small enough to wrap here, with every buffer allocated up front so the
//! data path never allocates.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr;

/// A slot size of at least `len` bytes that is an odd multiple of 64: the heads of
/// consecutive slots (where headers are read and written) then fall in different cache
/// sets, which a power-of-two stride would map onto one. The arenas are allocated zeroed,
/// so the kernel backs only the pages datagrams touch.
fn stagger(len: usize) -> usize {
    let lines = len.div_ceil(64);
    64 * (lines | 1)
}

/// Space for one `SO_RXQ_OVFL` control message (a `u32` drop counter).
const CMSG_LEN: usize = 32;

/// A receive arena of `count` slots of `slot` bytes; each datagram lands `headroom` bytes
/// into its slot, leaving room for a header written in place later.
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    headroom: usize,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u64; CMSG_LEN / 8]>,
    lens: Vec<usize>,
    /// Cumulative kernel drop counter last reported by `SO_RXQ_OVFL`.
    drops: u32,
}

impl RecvBatch {
    pub fn new(count: usize, slot: usize, headroom: usize) -> RecvBatch {
        let slot = stagger(slot);
        // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs for which the
        // all-zero bit pattern is a valid (empty) value.
        let (hdr, iov, name) = unsafe {
            (
                zeroed::<libc::mmsghdr>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::sockaddr_storage>(),
            )
        };
        RecvBatch {
            buf: vec![0; count * slot],
            slot,
            headroom,
            hdrs: vec![hdr; count],
            iovs: vec![iov; count],
            names: vec![name; count],
            cmsgs: vec![[0; CMSG_LEN / 8]; count],
            lens: vec![0; count],
            drops: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Receive up to `max` datagrams without blocking. Returns how many arrived (0 when
    /// none was waiting). Truncated datagrams are reported with length 0.
    pub fn recv(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        let n = max.min(self.capacity());
        let base = self.buf.as_mut_ptr();
        for i in 0..n {
            let iov = &mut self.iovs[i];
            // SAFETY: `i * slot + headroom` is inside `buf` (count * slot bytes), so the
            // pointer stays within the allocation.
            iov.iov_base = unsafe { base.add(i * self.slot + self.headroom) }.cast();
            iov.iov_len = self.slot - self.headroom;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = CMSG_LEN as _;
            h.msg_flags = 0;
        }
        // SAFETY: `hdrs[..n]` are initialised above and every pointer in them (names,
        // iovecs into `buf`, control buffers) points into memory owned by `self` that
        // stays alive and unaliased for the duration of the call; `n` does not exceed the
        // length of `hdrs`.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = rc as usize;
        for i in 0..got {
            let h = &self.hdrs[i];
            self.lens[i] = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                0
            } else {
                h.msg_len as usize
            };
            if h.msg_hdr.msg_controllen > 0 {
                if let Some(d) = rxq_ovfl(&h.msg_hdr) {
                    self.drops = d;
                }
            }
        }
        Ok(got)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`]: its whole slot (headroom included),
    /// its payload length, and its source.
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], usize, SocketAddr)> {
        let len = *self.lens.get(i)?;
        let from = sockaddr_to_std(self.names.get(i)?)?;
        let slot = self.buf.get_mut(i * self.slot..(i + 1) * self.slot)?;
        Some((slot, len, from))
    }

    /// Datagrams the kernel dropped on this socket for want of buffer space, as last
    /// reported (needs `SO_RXQ_OVFL` on the socket).
    pub fn kernel_drops(&self) -> u32 {
        self.drops
    }
}

// SAFETY: the raw pointers inside the libc headers only ever point into buffers owned by
// the same struct, and are rewritten before every system call; moving the struct to
// another thread moves those buffers with it (their heap addresses do not change).
unsafe impl Send for RecvBatch {}
// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

/// A queue of datagrams to send from one socket with one `sendmmsg(2)`.
pub struct SendBatch {
    buf: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    namelens: Vec<libc::socklen_t>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    len: usize,
}

impl SendBatch {
    pub fn new(count: usize, slot: usize) -> SendBatch {
        let slot = stagger(slot);
        // SAFETY: plain C structs; all-zero is a valid empty value.
        let (hdr, iov, name) = unsafe {
            (
                zeroed::<libc::mmsghdr>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::sockaddr_storage>(),
            )
        };
        SendBatch {
            buf: vec![0; count * slot],
            slot,
            lens: vec![0; count],
            names: vec![name; count],
            namelens: vec![0; count],
            hdrs: vec![hdr; count],
            iovs: vec![iov; count],
            len: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.len == self.hdrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next free slot, to write a datagram into; commit it with [`SendBatch::push`].
    /// `None` when the queue is full (flush first).
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        self.buf
            .get_mut(self.len * self.slot..(self.len + 1) * self.slot)
    }

    /// Queue the first `len` bytes of the slot last returned by `next_slot` for `to`.
    pub fn push(&mut self, len: usize, to: SocketAddr) {
        if self.is_full() || len > self.slot {
            return;
        }
        let (storage, socklen) = std_to_sockaddr(to);
        self.names[self.len] = storage;
        self.namelens[self.len] = socklen;
        self.lens[self.len] = len;
        self.len += 1;
    }

    /// Copy `bytes` into the queue for `to`; false (and nothing queued) if it is full or
    /// the datagram too large.
    pub fn push_copy(&mut self, bytes: &[u8], to: SocketAddr) -> bool {
        let Some(slot) = self.next_slot() else {
            return false;
        };
        let Some(dst) = slot.get_mut(..bytes.len()) else {
            return false;
        };
        dst.copy_from_slice(bytes);
        self.push(bytes.len(), to);
        true
    }

    /// Send everything queued. Returns how many datagrams the kernel did not take (a full
    /// send buffer); those are dropped, as a router would.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let total = self.len;
        let base = self.buf.as_mut_ptr();
        for i in 0..total {
            let iov = &mut self.iovs[i];
            // SAFETY: `i < len <= count`, so the slot start is inside `buf`.
            iov.iov_base = unsafe { base.add(i * self.slot) }.cast();
            iov.iov_len = self.lens[i];
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.namelens[i];
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_control = ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut sent = 0;
        let mut dropped = 0;
        while sent < total {
            // SAFETY: `hdrs[sent..total]` were initialised above with pointers into
            // buffers owned by `self`, alive and unaliased during the call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(sent),
                    (total - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                sent += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if rc < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // EAGAIN (full buffer) or an error on the first datagram (say, an unreachable
            // destination): drop that one and go on with the rest.
            sent += 1;
            dropped += 1;
        }
        self.len = 0;
        dropped
    }
}

/// Turn on `SO_RXQ_OVFL`, so received datagrams report the socket's drop counter.
pub fn enable_rxq_ovfl(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller; we pass a pointer to a live
    // c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn rxq_ovfl(h: &libc::msghdr) -> Option<u32> {
    // SAFETY: `h` was filled by recvmmsg with `msg_control` pointing at a live buffer of
    // `msg_controllen` bytes; the CMSG_* macros only walk within that length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                let data = libc::CMSG_DATA(c).cast::<u32>();
                return Some(ptr::read_unaligned(data));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

pub(super) fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote an AF_INET address, so the storage holds a valid
            // sockaddr_in, which is smaller than and alignment-compatible with
            // sockaddr_storage.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

pub(super) fn std_to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: the storage is zeroed (valid for the C struct) and large enough and
            // suitably aligned for a sockaddr_in, which we fill completely.
            unsafe {
                let sin = storage.as_mut_ptr().cast::<libc::sockaddr_in>();
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_port = a.port().to_be();
                (*sin).sin_addr = libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                };
                (
                    storage.assume_init(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            unsafe {
                let sin6 = storage.as_mut_ptr().cast::<libc::sockaddr_in6>();
                (*sin6).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sin6).sin6_port = a.port().to_be();
                (*sin6).sin6_flowinfo = a.flowinfo();
                (*sin6).sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                (*sin6).sin6_scope_id = a.scope_id();
                (
                    storage.assume_init(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rxq_ovfl(b.as_raw_fd()).unwrap();
        let mut send = SendBatch::new(8, 64);
        for i in 0..5u8 {
            let to = if i % 2 == 0 {
                b.local_addr().unwrap()
            } else {
                c.local_addr().unwrap()
            };
            assert!(send.push_copy(&[i; 10], to));
        }
        assert_eq!(send.flush(a.as_raw_fd()), 0);
        assert!(send.is_empty());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut recv = RecvBatch::new(8, 64, 4);
        let n = recv.recv(b.as_raw_fd(), 8).unwrap();
        assert_eq!(n, 3);
        for i in 0..n {
            let (slot, len, from) = recv.get(i).unwrap();
            assert_eq!(len, 10);
            assert_eq!(from, a.local_addr().unwrap());
            assert_eq!(slot[4..14], [(2 * i) as u8; 10]);
        }
        assert_eq!(recv.recv(b.as_raw_fd(), 8).unwrap(), 0, "drained");
        let n = recv.recv(c.as_raw_fd(), 8).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn truncated_datagrams_report_zero_length() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&[7; 100], b.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut recv = RecvBatch::new(2, 32, 4);
        assert_eq!(recv.recv(b.as_raw_fd(), 2).unwrap(), 1);
        assert_eq!(recv.get(0).unwrap().1, 0);
    }

    #[test]
    fn ipv6_addresses_convert_both_ways() {
        let addr: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let (s, len) = std_to_sockaddr(addr);
        assert_eq!(len as usize, size_of::<libc::sockaddr_in6>());
        assert_eq!(sockaddr_to_std(&s), Some(addr));
        let addr: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let (s, _) = std_to_sockaddr(addr);
        assert_eq!(sockaddr_to_std(&s), Some(addr));
    }
}
