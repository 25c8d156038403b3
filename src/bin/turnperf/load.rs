//! The load phase: paced sends from every allocation, receipt of the echoes, RTT and loss.
//!
//! Pacing: every tick (about 1 ms; epoll's timeout resolution) each allocation earns
//! `rate * elapsed` messages of credit and sends the whole part of it. Credit is fractional,
//! so rates that are not multiples of the tick rate come out right on average, and the
//! initial credit is staggered so low rates do not send in lockstep. An allocation owing
//! more than one batch (the loop stalled) sends one batch and forgets the rest: counted as
//! `late`, so a client that cannot keep up shows it instead of bursting.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use stunnerd::stun::{ChannelData, Class, Kind, Message, Method, attr, classify};
use stunnerd::transport::mmsg::SendBatch;

use crate::engine::{Engine, Phase};
use crate::net::{Handler, Net};
use crate::proto::{self, CHANNEL};

const TICK: Duration = Duration::from_millis(1);
/// Most messages one allocation sends in one tick, in one `sendmmsg`.
const MAX_BURST: usize = 64;
/// Largest load message: payload limit plus Send-indication framing.
const TX_SLOT: usize = 1600;
/// How long to wait for stragglers after the last send.
const DRAIN: Duration = Duration::from_secs(1);

pub(crate) struct Config {
    pub rate: f64,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

pub(crate) struct Report {
    /// Messages sent in the measured window (after warmup).
    pub sent: u64,
    /// Of those, how many came back.
    pub recv: u64,
    /// Sends the client's own socket refused (its buffer was full).
    pub send_fail: u64,
    /// Credit forgotten because the loop fell behind (see module docs).
    pub late: u64,
    /// Echoes that arrived with a sequence number not above the highest seen.
    pub reordered: u64,
    /// Datagrams that were not a stamped echo for that allocation.
    pub foreign: u64,
    /// Receive errors on client sockets (ICMP errors).
    pub rx_errors: u64,
    pub hist: Histogram<u64>,
    pub duration_s: f64,
    /// CPU seconds this process used during the load phase (None if unknown), and the
    /// phase's wall-clock length (warmup and drain included).
    pub cpu_s: Option<f64>,
    pub wall_s: f64,
}

struct Load<'a> {
    eng: &'a mut Engine,
    rate: f64,
    size: usize,
    t0: Instant,
    meas_start_ns: u64,
    meas_end_ns: u64,
    scratch: Vec<u8>,
    batch: SendBatch,
    r: Report,
}

pub(crate) fn run(eng: &mut Engine, net: &mut Net, cfg: &Config) -> io::Result<Report> {
    let hist = Histogram::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let meas_start = cfg.warmup;
    let meas_end = cfg.warmup + cfg.duration;
    let mut load = Load {
        eng,
        rate: cfg.rate,
        size: cfg.size,
        t0,
        meas_start_ns: meas_start.as_nanos() as u64,
        meas_end_ns: meas_end.as_nanos() as u64,
        scratch: vec![0; TX_SLOT],
        batch: SendBatch::new(MAX_BURST, TX_SLOT),
        r: Report {
            sent: 0,
            recv: 0,
            send_fail: 0,
            late: 0,
            reordered: 0,
            foreign: 0,
            rx_errors: 0,
            hist,
            duration_s: cfg.duration.as_secs_f64(),
            cpu_s: None,
            wall_s: 0.0,
        },
    };
    let end = t0 + meas_end;
    let mut last_pass = t0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= last_pass + TICK {
            let dt = (now - last_pass).as_secs_f64();
            last_pass = now;
            load.send_pass(dt);
        }
        let wait = (last_pass + TICK).saturating_duration_since(now);
        net.turn(&mut load, wait)?;
    }
    // Stragglers: wait until everything counted came back, or DRAIN passes.
    let drain_end = Instant::now() + DRAIN;
    loop {
        let now = Instant::now();
        if now >= drain_end || load.r.recv >= load.r.sent {
            break;
        }
        net.turn(&mut load, (drain_end - now).min(Duration::from_millis(10)))?;
    }
    let mut r = load.r;
    r.wall_s = t0.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (cpu0, cpu_seconds()) {
        r.cpu_s = Some(b - a);
    }
    Ok(r)
}

impl Load<'_> {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.t0).as_nanos() as u64
    }

    fn send_pass(&mut self, dt: f64) {
        let mode = self.eng.mode;
        let server = self.eng.server;
        for i in 0..self.eng.clients.len() {
            let c = &mut self.eng.clients[i];
            if c.phase != Phase::Ready || c.relay.is_none() {
                continue;
            }
            c.credit += self.rate * dt;
            if c.credit < 1.0 {
                continue;
            }
            let owed = c.credit as u64;
            c.credit -= owed as f64;
            let n = (owed as usize).min(MAX_BURST);
            self.r.late += owed - n as u64;
            // One clock read per allocation keeps stamps accurate to the microsecond even
            // when a pass over many allocations takes a while.
            let ts = self.t0.elapsed().as_nanos() as u64;
            let counted = ts >= self.meas_start_ns && ts < self.meas_end_ns;
            let idx = i as u32;
            let peer = c.target;
            let done = if n == 1 {
                let seq = c.seq;
                c.seq = c.seq.wrapping_add(1);
                match proto::build_data(&mut self.scratch, mode, peer, self.size, idx, seq, ts) {
                    Ok(len) => u64::from(c.sock.send(&self.scratch[..len]).is_ok()),
                    Err(_) => 0,
                }
            } else {
                // Several messages for one socket: one sendmmsg (the connected socket
                // accepts its own peer as the explicit destination).
                let mut queued: usize = 0;
                for _ in 0..n {
                    let seq = c.seq;
                    c.seq = c.seq.wrapping_add(1);
                    let Some(slot) = self.batch.next_slot() else {
                        break;
                    };
                    if let Ok(len) = proto::build_data(slot, mode, peer, self.size, idx, seq, ts) {
                        self.batch.push(len, server);
                        queued += 1;
                    }
                }
                let fd = c.sock.as_raw_fd();
                queued.saturating_sub(self.batch.flush(fd)) as u64
            };
            if counted {
                self.r.sent += done;
                self.r.send_fail += n as u64 - done;
            }
        }
    }

    fn on_payload(&mut self, idx: usize, payload: &[u8], now: Instant) {
        let Some((who, seq, ts)) = proto::read_stamp(payload) else {
            self.r.foreign += 1;
            return;
        };
        // Client-to-client: what arrives on an allocation was sent by its partner.
        let sender = if self.eng.c2c { idx ^ 1 } else { idx };
        if who as usize != sender {
            self.r.foreign += 1;
            return;
        }
        // Sent during warmup (or after the end): not part of the measurement.
        if ts < self.meas_start_ns || ts >= self.meas_end_ns {
            return;
        }
        self.r.recv += 1;
        let rtt_us = self.ns(now).saturating_sub(ts) / 1000;
        self.r.hist.saturating_record(rtt_us.max(1));
        let c = &mut self.eng.clients[idx];
        // rx_seq tracks what this socket receives (its partner's sequence in c2c mode).
        match c.rx_seq {
            Some(s) if seq <= s => self.r.reordered += 1,
            _ => c.rx_seq = Some(seq),
        }
    }
}

impl Handler for Load<'_> {
    fn fd(&self, idx: usize) -> Option<RawFd> {
        self.eng.fd(idx)
    }

    fn on_datagram(&mut self, idx: usize, data: &[u8], now: Instant) {
        match classify(data) {
            Kind::ChannelData => match ChannelData::parse(data) {
                Ok(cd) if cd.number == CHANNEL => self.on_payload(idx, cd.data, now),
                _ => self.r.foreign += 1,
            },
            Kind::Stun => match Message::parse(data) {
                Ok(m) if m.method() == Method::Data && m.class() == Class::Indication => {
                    match m.get(attr::DATA) {
                        Some(d) => self.on_payload(idx, d, now),
                        None => self.r.foreign += 1,
                    }
                }
                // Late answers to retransmitted requests: harmless.
                Ok(_) => {}
                Err(_) => self.r.foreign += 1,
            },
            Kind::Other => self.r.foreign += 1,
        }
    }

    fn on_socket_error(&mut self, _idx: usize, _err: io::Error) {
        self.r.rx_errors += 1;
    }
}

/// CPU time of this (single-threaded) process: /proc/self/schedstat's run time in
/// nanoseconds, else utime+stime from /proc/self/stat in USER_HZ (100 on Linux) ticks.
pub(crate) fn cpu_seconds() -> Option<f64> {
    if let Ok(s) = std::fs::read_to_string("/proc/self/schedstat") {
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Some(ns as f64 / 1e9);
        }
    }
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
