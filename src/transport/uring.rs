//! io_uring for the relay side of the UDP data path (Linux 6.0 and later).
//!
//! On this path nearly all of a relayed packet's cost is the kernel's, and with one socket
//! per allocation the epoll path pays, per packet, a `sendto` towards the peer and an epoll
//! event plus a `recvmmsg` for the answer. Here instead:
//!
//! - every relay socket has one multishot `RecvMsg` armed on it, receiving into a ring of
//!   buffers shared by the worker's relay sockets (no epoll item, no receive syscall per
//!   packet: the kernel completes the receives while the worker is in any syscall);
//! - the sends towards peers that one listener batch produces go to the kernel as one
//!   submission (`io_uring_enter`) instead of one `sendto` each.
//!
//! Listener sockets keep `recvmmsg`/`sendmmsg` (already batched). When io_uring is refused
//! (old kernel, a seccomp profile such as the container runtimes' defaults, or
//! `STUNNERD_IO_URING=off`), the worker keeps every relay socket on epoll instead.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::mmsg::{sockaddr_to_std, std_to_sockaddr};

/// Buffer group id of the relay receive buffers.
const BGID: u16 = 0;
/// Receive buffers per worker (a power of two). A buffer goes back to the kernel as soon
/// as its datagram has been handled, so this bounds packets in flight inside one loop
/// iteration, not per allocation.
const BUFS: u16 = 256;
/// Size of one receive buffer: the kernel's `io_uring_recvmsg_out` header, the source
/// address, then the datagram, up to any UDP payload (65,535 bytes). Pages are backed as
/// datagrams touch them. An odd multiple of 64 bytes, so the heads of consecutive buffers
/// fall in different cache sets.
const BUF_SIZE: usize = 65_600;
/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags (u32 each).
const OUT_HDR: usize = 16;
/// Room for the source address: a `sockaddr_in6`.
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Where the datagram starts in a receive buffer.
pub const PAYLOAD_AT: usize = OUT_HDR + NAME_LEN;
/// Largest datagram a receive buffer holds; longer ones are dropped as truncated.
pub const MAX_PAYLOAD: usize = BUF_SIZE - PAYLOAD_AT;
/// Sends queued before a submission is forced.
const SEND_SLOTS: usize = 64;
/// Largest payload a send slot holds; [`RelayRing::send`] refuses longer ones, which the
/// caller then sends directly.
pub const MAX_SEND: usize = 4096;
const SQ_ENTRIES: u32 = 256;
const CQ_ENTRIES: u32 = 4096;

/// What a completion belongs to (the top byte of its user data).
const KIND_RECV: u64 = 1 << 56;
const KIND_SEND: u64 = 2 << 56;
const KIND_CANCEL: u64 = 3 << 56;
const KIND_MASK: u64 = 0xff << 56;

/// Receive generations fit in 24 bits of the user data, beside the kind and the slot.
pub const GENERATION_MASK: u32 = 0x00ff_ffff;

/// The user data of a relay socket's receive: kind, generation and relay slot.
fn recv_data(slot: u32, generation: u32) -> u64 {
    KIND_RECV | (u64::from(generation & GENERATION_MASK) << 32) | u64::from(slot)
}

/// A completed event of the ring.
pub enum Completion<'a> {
    /// A datagram for relay `slot` (of receive `generation`) from `from`; the payload is
    /// `buf[PAYLOAD_AT..PAYLOAD_AT + len]` and the bytes before it are free to overwrite.
    Datagram {
        slot: u32,
        generation: u32,
        from: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
    },
    /// The receive of relay `slot` stopped (`error` is the negated errno, 0 if the kernel
    /// just ended it); re-arm it if the relay still lives and the error is transient.
    Stopped {
        slot: u32,
        generation: u32,
        error: i32,
    },
    /// Anything else (a failed send, a cancel's result, a truncated datagram).
    Other,
}

/// The ring of one worker. Owned and used by the worker's thread only.
pub struct RelayRing {
    ring: IoUring,
    /// The buffer ring (BUFS entries) and the buffers, each in its own anonymous mapping.
    entries: Mapping,
    buffers: Mapping,
    /// Our copy of the buffer ring's tail.
    tail: u16,
    /// The `msghdr` the multishot receives take their name and control sizes from.
    template: Box<libc::msghdr>,
    sends: Box<[SendSlot]>,
    queued_sends: usize,
    /// Submission entries pushed since the last submit.
    unsubmitted: usize,
}

// SAFETY: the raw pointers in a RelayRing point into memory it owns (its mappings, its
// boxed send slots and template); it is used by one thread at a time (a worker, which is
// built on the runtime thread and then moved to its own).
unsafe impl Send for RelayRing {}

/// One send in flight: its header, payload vector, destination and a copy of its payload.
/// The slot owns every byte the kernel reads for the send, so no borrow of the caller's
/// buffer outlives [`RelayRing::send`].
struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    payload: Box<[u8; MAX_SEND]>,
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address the kernel picks aliases
        // nothing; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len == 0 {
            // The empty stand-in for a mapping left to the kernel (see `RelayRing::drop`).
            return;
        }
        // SAFETY: `ptr`/`len` are exactly one mapping made by `Mapping::new`, and nothing
        // refers to it any more (see `RelayRing::drop` for the kernel's side).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl RelayRing {
    /// Whether io_uring was turned off by the operator (`STUNNERD_IO_URING=off|0|false`).
    pub fn disabled_by_env() -> bool {
        std::env::var("STUNNERD_IO_URING")
            .map(|v| {
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "off" | "0" | "false" | "no"
                )
            })
            .unwrap_or(false)
    }

    /// Whether the kernel lets this process create an io_uring at all (old kernels and
    /// seccomp profiles refuse it).
    ///
    /// The probe ring lives and dies on a thread of its own: the kernel tears a ring down
    /// asynchronously and then notifies every thread that used it with task work that
    /// interrupts that thread's next blocking syscall (EINTR from a `recv` with a timeout,
    /// for example). A thread that exits first gets no such notification.
    pub fn kernel_has_io_uring() -> bool {
        std::thread::spawn(|| IoUring::new(8).is_ok())
            .join()
            .unwrap_or(false)
    }

    /// Set up the ring and its buffers, and check with a loopback UDP datagram that
    /// the kernel does multishot receives into provided buffers and skips successful send
    /// completions. Any failure means "use epoll".
    pub fn new() -> io::Result<RelayRing> {
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .build(SQ_ENTRIES)?;
        if !ring.params().is_feature_nodrop() || !ring.params().is_feature_skip_cqe_on_success() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel io_uring lacks NODROP or CQE_SKIP_SUCCESS",
            ));
        }
        let entries = Mapping::new(usize::from(BUFS) * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(usize::from(BUFS) * BUF_SIZE)?;
        // SAFETY: `entries` is a page-aligned mapping of BUFS ring entries that lives as
        // long as the ring (dropped after it, and only once the kernel gave it back).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.ptr as u64, BUFS, BGID, 0)?;
        }
        // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
        let mut template: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        template.msg_namelen = NAME_LEN as u32;
        let sends = (0..SEND_SLOTS)
            .map(|_| SendSlot {
                // SAFETY: plain C structs; all-zero is a valid value for each.
                hdr: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                // SAFETY: as above.
                addr: unsafe { std::mem::zeroed() },
                payload: Box::new([0; MAX_SEND]),
            })
            .collect();
        let mut me = RelayRing {
            ring,
            entries,
            buffers,
            tail: 0,
            template,
            sends,
            queued_sends: 0,
            unsubmitted: 0,
        };
        for bid in 0..BUFS {
            me.recycle(bid);
        }
        me.self_test()?;
        Ok(me)
    }

    /// A datagram sent through the ring to a loopback UDP socket (as the relay path sends)
    /// must arrive as a multishot completion in a provided buffer.
    fn self_test(&mut self) -> io::Result<()> {
        let a = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        let b = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        const PROBE: u64 = KIND_RECV | 0x00ff_ffff_ffff_ffff;
        self.arm_raw(b.as_raw_fd(), PROBE)?;
        self.submit()?;
        self.send(a.as_raw_fd(), b"stunnerd", b.local_addr()?)?;
        self.submit()?;
        let timeout = types::Timespec::new().nsec(200_000_000);
        let args = types::SubmitArgs::new().timespec(&timeout);
        let _ = self.ring.submitter().submit_with_args(1, &args);
        let cqe = self.ring.completion().next();
        let ok = match cqe {
            Some(c) => {
                let bid = cqueue::buffer_select(c.flags());
                if let Some(bid) = bid {
                    self.recycle(bid);
                }
                c.user_data() == PROBE && c.result() > 0 && bid.is_some()
            }
            None => false,
        };
        // Stop the probe's receive before the sockets go away, and collect its final
        // completion.
        self.push(
            &opcode::AsyncCancel::new(PROBE)
                .build()
                .user_data(KIND_CANCEL),
        )?;
        let _ = self.ring.submitter().submit_with_args(2, &args);
        let done: Vec<u32> = self.ring.completion().map(|c| c.flags()).collect();
        for flags in done {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.recycle(bid);
            }
        }
        self.unsubmitted = 0;
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel io_uring lacks multishot receives into provided buffers",
            ))
        }
    }

    /// The ring's file descriptor, readable when completions wait.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        if self.ring.submission().is_full() {
            self.submit()?;
        }
        // SAFETY: every pointer in our entries points into memory the ring owns (the
        // receive template, the boxed send slots and their payload copies), which lives as
        // long as the ring and is not rewritten before the submitting io_uring_enter has
        // consumed the entry (see `send` and `submit`).
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.unsubmitted += 1;
        Ok(())
    }

    fn arm_raw(&mut self, fd: RawFd, data: u64) -> io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.template, BGID)
            .build()
            .user_data(data);
        self.push(&entry)
    }

    /// Start the receive of relay `slot` on socket `fd`.
    pub fn arm(&mut self, fd: RawFd, slot: u32, generation: u32) -> io::Result<()> {
        self.arm_raw(fd, recv_data(slot, generation))
    }

    /// Stop the receive of relay `slot` (its socket is being closed).
    pub fn cancel(&mut self, slot: u32, generation: u32) {
        let entry = opcode::AsyncCancel::new(recv_data(slot, generation))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(KIND_CANCEL);
        let _ = self.push(&entry);
    }

    /// Queue a datagram to `to` from relay socket `fd`. The payload is copied into a
    /// ring-owned slot, so the caller's buffer is free again when this returns. A payload
    /// longer than [`MAX_SEND`] is refused with `InvalidInput` (send it directly instead).
    pub fn send(&mut self, fd: RawFd, payload: &[u8], to: SocketAddr) -> io::Result<()> {
        if payload.len() > MAX_SEND {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // Make room first: a slot must not be refilled while an entry pointing at it
        // still waits in the submission queue.
        if self.queued_sends == SEND_SLOTS || self.ring.submission().is_full() {
            self.submit()?;
        }
        let slot = &mut self.sends[self.queued_sends];
        slot.payload[..payload.len()].copy_from_slice(payload);
        let (addr, namelen) = std_to_sockaddr(to);
        slot.addr = addr;
        slot.iov.iov_base = slot.payload.as_mut_ptr().cast();
        slot.iov.iov_len = payload.len();
        slot.hdr.msg_name = (&raw mut slot.addr).cast();
        slot.hdr.msg_namelen = namelen;
        slot.hdr.msg_iov = &raw mut slot.iov;
        slot.hdr.msg_iovlen = 1;
        // MSG_DONTWAIT: a send that cannot complete at once fails (EAGAIN, like a full
        // socket buffer on the epoll path) instead of being retried later by the kernel,
        // so this slot is read only during the submitting io_uring_enter, and is not
        // refilled before the submission queue has been emptied (`submit`).
        let entry = opcode::SendMsg::new(types::Fd(fd), &raw const slot.hdr)
            .flags(libc::MSG_DONTWAIT as u32)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(KIND_SEND);
        self.queued_sends += 1;
        self.push(&entry)
    }

    /// Hand every queued entry to the kernel. Returns once the submission queue is empty
    /// (the kernel may take it in parts), so send slots can be reused.
    pub fn submit(&mut self) -> io::Result<()> {
        if self.unsubmitted == 0 {
            return Ok(());
        }
        let mut res = Ok(());
        for _ in 0..16 {
            res = self.ring.submit().map(drop);
            match &res {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
                Ok(()) if self.ring.submission().is_empty() => break,
                Ok(()) => {}
            }
        }
        if self.ring.submission().is_empty() {
            self.unsubmitted = 0;
            self.queued_sends = 0;
        }
        res
    }

    /// Whether completions wait.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Take the next completion and pass it to `f` (twice for a datagram that ends its
    /// receive: the datagram, then the stop); a buffer goes back to the kernel when `f`
    /// returns. Returns false when none was waiting.
    pub fn next(&mut self, mut f: impl FnMut(Completion<'_>)) -> bool {
        let Some(cqe) = self.ring.completion().next() else {
            return false;
        };
        let data = cqe.user_data();
        let result = cqe.result();
        let flags = cqe.flags();
        let bid = cqueue::buffer_select(flags);
        if data & KIND_MASK != KIND_RECV {
            f(Completion::Other);
            return true;
        }
        let slot = (data & 0xffff_ffff) as u32;
        let generation = (data >> 32) as u32 & GENERATION_MASK;
        if let Some(bid) = bid.filter(|_| result > 0) {
            let len = (result as usize).min(BUF_SIZE);
            // SAFETY: the kernel handed buffer `bid` (< BUFS) to us with this completion
            // and does not touch it again until `recycle` puts it back in the ring; no
            // other reference to it exists meanwhile.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(
                    self.buffers.ptr.add(usize::from(bid % BUFS) * BUF_SIZE),
                    BUF_SIZE,
                )
            };
            match parse(&buf[..len]) {
                Some((from, payload_len)) => f(Completion::Datagram {
                    slot,
                    generation,
                    from,
                    buf,
                    len: payload_len,
                }),
                None => f(Completion::Other),
            }
            self.recycle(bid);
        } else if let Some(bid) = bid {
            self.recycle(bid);
        }
        if !cqueue::more(flags) {
            f(Completion::Stopped {
                slot,
                generation,
                error: result.min(0),
            });
        }
        true
    }

    /// Give buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        let bid = bid % BUFS;
        let index = usize::from(self.tail & (BUFS - 1));
        // SAFETY: `index` < BUFS, so the entry is inside the `entries` mapping; the kernel
        // reads entries only between its head and the tail we publish below, and this one
        // is past that tail.
        let entry = unsafe { &mut *self.entries.ptr.cast::<BufRingEntry>().add(index) };
        // SAFETY: `bid` < BUFS, so this is the start of one buffer inside `buffers`.
        entry.set_addr(unsafe { self.buffers.ptr.add(usize::from(bid) * BUF_SIZE) } as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the 16-bit field of the first ring entry the kernel reads
        // with acquire semantics; it is 2-byte aligned inside a page-aligned mapping, so
        // it can be accessed as an atomic.
        let tail = unsafe {
            &*(BufRingEntry::tail(self.entries.ptr.cast::<BufRingEntry>()) as *const AtomicU16)
        };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for RelayRing {
    fn drop(&mut self) {
        // Once the buffer ring is unregistered the kernel cannot pick a buffer from it, so
        // the mappings may go. If that fails, keep them mapped for the process's life.
        if self.ring.submitter().unregister_buf_ring(BGID).is_err() {
            std::mem::forget(std::mem::replace(
                &mut self.buffers,
                Mapping {
                    ptr: std::ptr::null_mut(),
                    len: 0,
                },
            ));
        }
    }
}

/// The source address and payload length of a received buffer, or None when the datagram
/// was truncated or the address is not IP.
fn parse(buf: &[u8]) -> Option<(SocketAddr, usize)> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let namelen = word(0)? as usize;
    let payload_len = word(8)? as usize;
    let flags = word(12)?;
    if flags & (libc::MSG_TRUNC as u32) != 0 || payload_len > MAX_PAYLOAD {
        return None;
    }
    let name = buf.get(OUT_HDR..OUT_HDR + namelen.min(NAME_LEN))?;
    // SAFETY: all-zero is a valid sockaddr_storage, and `name` (at most NAME_LEN = 28
    // bytes) fits in its 128 bytes; the copy is bytewise, so the buffer's alignment does
    // not matter.
    let from = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        std::ptr::copy_nonoverlapping(name.as_ptr(), (&raw mut storage).cast::<u8>(), name.len());
        sockaddr_to_std(&storage)?
    };
    Some((from, payload_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    fn ring() -> Option<RelayRing> {
        // Kernels or sandboxes that refuse io_uring itself run the epoll path: nothing to
        // test here. Where the kernel has it, our set-up and self-test must succeed.
        if !RelayRing::kernel_has_io_uring() {
            return None;
        }
        Some(RelayRing::new().expect("io_uring is available, so the relay ring must start"))
    }

    /// Collect datagrams until `want` arrived or 2 s passed, re-arming the receive on
    /// `fd` when it stops for want of buffers (as the worker does).
    fn collect(r: &mut RelayRing, fd: RawFd, want: usize) -> Vec<(u32, u32, SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let mut rearms = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < want && Instant::now() < deadline {
            r.submit().unwrap();
            let _ = r.ring.submitter().submit_and_wait(0);
            let mut stopped = None;
            while r.next(|c| match c {
                Completion::Datagram {
                    slot,
                    generation,
                    from,
                    buf,
                    len,
                } => got.push((
                    slot,
                    generation,
                    from,
                    buf[PAYLOAD_AT..PAYLOAD_AT + len].to_vec(),
                )),
                Completion::Stopped {
                    slot,
                    generation,
                    error,
                } => stopped = Some((slot, generation, error)),
                Completion::Other => {}
            }) {}
            if let Some((slot, generation, error)) = stopped {
                assert!(error == -libc::ENOBUFS || error == 0, "stopped: {error}");
                r.arm(fd, slot, generation).unwrap();
                rearms += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(rearms < 50, "re-armed {rearms} times");
        got
    }

    #[test]
    fn sends_more_than_one_batch_of_slots_and_receives_them_in_order() {
        let Some(mut r) = ring() else { return };
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = peer.local_addr().unwrap();
        // More sends than slots before one submit: each must carry its own payload.
        let payloads: Vec<Vec<u8>> = (0..(SEND_SLOTS * 2 + 5) as u32)
            .map(|i| i.to_be_bytes().repeat(3))
            .collect();
        for p in &payloads {
            r.send(relay.as_raw_fd(), p, to).unwrap();
        }
        r.submit().unwrap();
        let mut buf = [0u8; 64];
        for p in &payloads {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&p[..], relay.local_addr().unwrap()));
        }

        // The way back: a multishot receive reports every datagram with its source.
        r.arm(relay.as_raw_fd(), 7, 3).unwrap();
        r.submit().unwrap();
        for i in 0..300u32 {
            peer.send_to(&i.to_be_bytes(), relay.local_addr().unwrap())
                .unwrap();
        }
        let got = collect(&mut r, relay.as_raw_fd(), 300);
        assert_eq!(
            got.len(),
            300,
            "more datagrams than buffers: all delivered, in order"
        );
        for (i, (slot, generation, from, data)) in got.iter().enumerate() {
            assert_eq!((*slot, *generation, *from), (7, 3, to));
            assert_eq!(data[..], (i as u32).to_be_bytes());
        }
    }

    #[test]
    fn a_send_owns_its_payload_and_refuses_what_does_not_fit() {
        let Some(mut r) = ring() else { return };
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = peer.local_addr().unwrap();
        // The caller's buffer is reused before the submit: the datagram still carries the
        // bytes it had at `send`.
        let mut buf = *b"first";
        r.send(relay.as_raw_fd(), &buf, to).unwrap();
        buf.copy_from_slice(b"XXXXX");
        r.submit().unwrap();
        let mut got = [0u8; 16];
        let (n, _) = peer.recv_from(&mut got).unwrap();
        assert_eq!(&got[..n], b"first");
        let big = vec![0u8; MAX_SEND + 1];
        let err = r.send(relay.as_raw_fd(), &big, to).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_cancelled_receive_stops_and_frees_the_port() {
        let Some(mut r) = ring() else { return };
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = relay.local_addr().unwrap();
        r.arm(relay.as_raw_fd(), 1, 0).unwrap();
        r.submit().unwrap();
        drop(relay);
        r.cancel(1, 0);
        r.submit().unwrap();
        // The kernel's reference to the socket goes with the receive: the port is free.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut stopped = false;
        while !stopped && Instant::now() < deadline {
            let _ = r.ring.submitter().submit_and_wait(0);
            while r.next(|c| {
                if let Completion::Stopped { slot: 1, error, .. } = c {
                    assert_eq!(error, -libc::ECANCELED);
                    stopped = true;
                }
            }) {}
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(stopped, "the receive reported its end");
        UdpSocket::bind(addr).expect("port released after the cancel");
    }

    #[test]
    fn parse_rejects_truncated_and_non_ip_sources() {
        let mut buf = vec![0u8; PAYLOAD_AT + 4];
        buf[0..4].copy_from_slice(&16u32.to_ne_bytes());
        buf[8..12].copy_from_slice(&4u32.to_ne_bytes());
        buf[OUT_HDR..OUT_HDR + 2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        buf[OUT_HDR + 2..OUT_HDR + 4].copy_from_slice(&3478u16.to_be_bytes());
        buf[OUT_HDR + 4..OUT_HDR + 8].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(parse(&buf), Some(("10.0.0.1:3478".parse().unwrap(), 4)));
        buf[12..16].copy_from_slice(&(libc::MSG_TRUNC as u32).to_ne_bytes());
        assert_eq!(parse(&buf), None);
        buf[12..16].copy_from_slice(&0u32.to_ne_bytes());
        buf[OUT_HDR..OUT_HDR + 2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse(&buf), None);
        assert_eq!(parse(&buf[..10]), None);
    }
}
