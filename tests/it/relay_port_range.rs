//! Relay port range exhaustion with the real binary: a TURN-UDP listener whose
//! `min_relay_port`/`max_relay_port` leave two ports serves two allocations on those ports,
//! answers the third with 508 Insufficient Capacity, and serves a new one as soon as an
//! allocation ends (Refresh with LIFETIME 0).

use crate::common;
use crate::ops_util;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use ops_util::{TurnClient, relay_roundtrip};

#[test]
fn a_two_port_relay_range_serves_two_allocations_then_508_until_one_ends() {
    // Two consecutive free ports, the first odd (so an even-port request would have only
    // one candidate, and the pair is not an aligned RTP/RTCP pair).
    let base = free_port_range(3);
    let lo = if base % 2 == 1 { base } else { base + 1 };
    let range = lo..=lo + 1;
    let port = free_udp_tcp_port();
    let config = write_config(
        &serde_json::json!({
            "version": "v1",
            "admin": {"name": "relay-range", "healthcheck_endpoint": ""},
            "auth": {"type": "static", "realm": REALM,
                     "credentials": {"username": USER, "password": PASS}},
            "listeners": [{"name": "udp", "protocol": "TURN-UDP", "address": "127.0.0.1",
                           "port": port, "routes": ["local"],
                           "min_relay_port": lo, "max_relay_port": lo + 1}],
            "clusters": [{"name": "local", "endpoints": ["127.0.0.1/32"]}],
        })
        .to_string(),
    );
    let mut cmd = std::process::Command::new(stunnerd_bin());
    cmd.arg("-c").arg(format!("file://{}", config.display()));
    let mut server = Proc::spawn("stunnerd", cmd);
    wait_udp_ready(local(port)).expect("stunnerd answers");

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut first = TurnClient::new(local(port), USER, PASS);
    let mut second = TurnClient::new(local(port), USER, PASS);
    let a = first.allocate().expect("first allocation");
    let b = second.allocate().expect("second allocation");
    assert!(
        range.contains(&a.port()) && range.contains(&b.port()) && a.port() != b.port(),
        "relayed ports {a} and {b} are not the two ports of {range:?}"
    );
    // Both relay.
    for c in [&mut first, &mut second] {
        c.create_permission(peer.local_addr().unwrap()).unwrap();
        assert!(relay_roundtrip(c, &peer, b"through the range"));
    }

    // The range is used up: the third allocation gets 508, and so does a retry.
    let mut third = TurnClient::new(local(port), USER, PASS);
    assert_eq!(third.allocate(), Err(508), "{}", server.log());
    assert_eq!(third.allocate(), Err(508));
    server.assert_running("after 508");

    // One allocation ends: its port serves the next allocation.
    first.refresh(0).expect("Refresh with LIFETIME 0");
    let c = third
        .allocate()
        .expect("an allocation once a port is free again");
    assert_eq!(c.port(), a.port(), "the freed port is the only one left");
    third.create_permission(peer.local_addr().unwrap()).unwrap();
    assert!(relay_roundtrip(&third, &peer, b"on the freed port"));
    // The surviving allocation was not disturbed.
    assert!(relay_roundtrip(&second, &peer, b"still here"));
    // And the range is full again.
    let mut fourth = TurnClient::new(local(port), USER, PASS);
    assert_eq!(fourth.allocate(), Err(508));
    server.assert_running("at the end");
}
