//! The hostile suite: what an attacker on the open Internet would try, each probe asserting
//! what a legitimate user sees meanwhile. Probes that flood the daemon run in a network
//! namespace of their own.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use stunnerd::stun::{Class, MessageWriter, Method, attr};

use crate::common::*;
use crate::ops_util::*;

/// Pre-authentication amplification (RFC 8656 section 21): 10,000 Allocates in about a
/// second from one source, half without credentials (each answered by a 401 challenge
/// about 3.5 times its size) and half with a wrong password and a nonce we never issued
/// (438): what the source receives stays within the configured per-source budget, far below
/// what it sent, and the excess is counted. Meanwhile a client from another address
/// allocates and relays with turnutils_uclient without loss.
#[test]
fn a_spoofable_allocate_flood_is_not_amplified() {
    in_netns(
        module_path!(),
        "a_spoofable_allocate_flood_is_not_amplified",
        amplification,
    );
}

fn amplification() {
    const BUDGET: u64 = 8 * 1024;
    const FLOOD: usize = 10_000;
    let (port, health, metrics) = (3478, 8086, 8080);
    let cfg = Cfg::new("hostile", port, health, metrics);
    let path = write_config(&cfg.json());
    let args: Vec<String> = [
        "-u",
        "1",
        "--preauth-budget",
        &BUDGET.to_string(),
        "-c",
        &path.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = start_stunnerd("stunnerd", &args, &[]);
    wait_udp_ready(local(port)).expect("listener up");
    let server: SocketAddr = local(port);
    let peer_port = 9000;
    let _peer = start_peer(peer_port);

    // The requests: 28 bytes without credentials, 88 with a wrong password and a forged
    // nonce.
    let mut bare = vec![0u8; 64];
    let n = {
        let mut w =
            MessageWriter::new(&mut bare, Method::Allocate, Class::Request, &[1; 12]).unwrap();
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
        w.finish()
    };
    bare.truncate(n);
    let mut forged = vec![0u8; 256];
    let n = {
        let mut w =
            MessageWriter::new(&mut forged, Method::Allocate, Class::Request, &[2; 12]).unwrap();
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
        w.add(attr::USERNAME, USER.as_bytes()).unwrap();
        w.add(attr::REALM, REALM.as_bytes()).unwrap();
        w.add(attr::NONCE, &[b'0'; 32]).unwrap();
        w.add_integrity(&stunnerd::snapshot::long_term_key(USER, REALM, "wrong"))
            .unwrap();
        w.finish()
    };
    forged.truncate(n);

    // A legitimate client on another address, during the flood.
    let legit = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        run_uclient([
            "-L",
            "127.0.0.2",
            "-u",
            USER,
            "-w",
            PASS,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-p",
            &port.to_string(),
            "-n",
            "50",
            "-m",
            "2",
            "-l",
            "100",
            "-c",
            "-z",
            "10",
            "127.0.0.1",
        ])
    });

    // Two sockets of one source address: the bare requests' answers are larger than the
    // requests, the forged ones' are not.
    let bare_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forged_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    bare_sock.set_nonblocking(true).unwrap();
    forged_sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    // (sent bytes, received bytes, answers) per socket
    let mut tally = [(0u64, 0u64, 0u64); 2];
    let mut drain = |tally: &mut [(u64, u64, u64); 2]| {
        for (i, sock) in [&bare_sock, &forged_sock].into_iter().enumerate() {
            while let Ok(n) = sock.recv(&mut buf) {
                tally[i].1 += n as u64;
                tally[i].2 += 1;
            }
        }
    };
    let start = Instant::now();
    for i in 0..FLOOD {
        let (k, sock, req) = if i % 2 == 0 {
            (0, &bare_sock, &bare)
        } else {
            (1, &forged_sock, &forged)
        };
        if sock.send_to(req, server).is_ok() {
            tally[k].0 += req.len() as u64;
        }
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
            drain(&mut tally);
        }
    }
    let flood_time = start.elapsed();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        drain(&mut tally);
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let legit = legit.join().unwrap();

    let dropped = scrape(
        metrics,
        "stunnerd_listener_unverified_drops_total{name=\"udp\"}",
    )
    .unwrap_or(0.0);
    let [
        (bare_sent, bare_recv, bare_answers),
        (forged_sent, forged_recv, forged_answers),
    ] = tally;
    println!(
        "FIGURE flood_requests={FLOOD} flood_secs={:.2} budget_bytes_per_sec={BUDGET} \
         unauthenticated: sent={bare_sent} B answered={bare_recv} B ({bare_answers} answers); \
         forged nonce: sent={forged_sent} B answered={forged_recv} B ({forged_answers} answers); \
         unverified_drops={dropped}",
        flood_time.as_secs_f64()
    );
    // Answers larger than their requests: the budget, plus one second's burst.
    let allowed = (BUDGET as f64 * (elapsed + 1.0)) as u64;
    assert!(
        bare_recv <= allowed,
        "the flood source got {bare_recv} bytes in {elapsed:.2} s (budget {allowed})"
    );
    assert!(bare_answers > 0, "the budget lets some challenges through");
    assert!(dropped > 0.0, "suppressed answers are counted");
    // Answers no larger than their requests multiply nothing.
    assert!(
        forged_recv <= forged_sent,
        "{forged_recv} bytes answered for {forged_sent}"
    );
    assert!(
        bare_recv + forged_recv <= bare_sent + forged_sent,
        "the flood as a whole is not amplified"
    );
    legit.assert_all_echoed(100, &p.log());
    p.assert_running("after the flood");
}
