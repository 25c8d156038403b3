//! The kernel offload decisions of the core, against a fake offload (`FakeRelays`): what
//! is installed, when it is removed, and how the kernel's counters are folded back.

use super::*;

/// A harness with the offload on, a client with an allocation, and a channel to
/// 127.0.0.1:7000.
fn bound() -> (Harness, Client, SocketAddr) {
    let mut h = Harness::local();
    h.relays.offload = Some(1);
    let mut c = h.client("127.0.0.1:4000");
    let relayed = h.allocate(&mut c);
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4001), peer_attr("127.0.0.1:7000")],
    );
    assert_eq!(code_of(&r), None);
    (h, c, relayed)
}

fn only_route(h: &Harness) -> OffloadRoute {
    assert_eq!(h.relays.routes.len(), 1, "{:?}", h.relays.routes);
    *h.relays.routes.keys().next().unwrap()
}

/// The "kernel" relays `n` datagrams of 100 bytes each way on `route`.
fn kernel_relays(h: &mut Harness, route: &OffloadRoute, n: u64) {
    let c = h.relays.routes.get_mut(route).unwrap();
    c.to_peer_packets += n;
    c.to_peer_bytes += 100 * n;
    c.to_client_packets += n;
    c.to_client_bytes += 100 * n;
}

#[test]
fn a_bound_channel_is_installed_with_its_addresses() {
    let (h, c, relayed) = bound();
    let r = only_route(&h);
    assert_eq!(r.client, c.addr);
    assert_eq!(r.relay, relayed);
    assert_eq!(r.peer, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(r.channel, 0x4001);
    assert_eq!(r.listener.ip(), relayed.ip());
    assert_eq!(h.server.offloaded_routes(), 1);
}

#[test]
fn nothing_is_installed_without_an_offload_or_under_a_send_rate() {
    let mut h = Harness::local();
    let mut c = h.client("127.0.0.1:4000");
    h.allocate(&mut c);
    h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4001), peer_attr("127.0.0.1:7000")],
    );
    assert!(h.relays.routes.is_empty());

    let mut h = Harness::local();
    h.relays.offload = Some(1);
    h.server.set_send_rate(10_000);
    let mut c = h.client("127.0.0.1:4000");
    h.allocate(&mut c);
    h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4001), peer_attr("127.0.0.1:7000")],
    );
    assert!(
        h.relays.routes.is_empty(),
        "a metered channel stays in user space"
    );
    // A permission alone (Send indications) is never installed either.
    h.server.set_send_rate(0);
    let mut c2 = h.client("127.0.0.1:4001");
    h.allocate(&mut c2);
    h.request(
        &mut c2,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:7001")],
    );
    assert!(h.relays.routes.is_empty());
}

#[test]
fn counters_are_read_back_as_deltas_and_on_removal() {
    let (mut h, mut c, _) = bound();
    let route = only_route(&h);
    kernel_relays(&mut h, &route, 3);
    h.server.offload_poll(h.now, &h.snap, &mut h.relays);
    let stats = *h.server.stats();
    assert_eq!(stats.to_peer_packets, 3);
    assert_eq!(stats.to_client_packets, 3);
    assert_eq!(
        stats.to_client_bytes,
        300 + 4 * 3,
        "ChannelData header counted"
    );
    // Polling again without new traffic adds nothing.
    h.server.offload_poll(h.now, &h.snap, &mut h.relays);
    assert_eq!(h.server.stats().to_peer_packets, 3);
    kernel_relays(&mut h, &route, 2);
    // Refresh(0): the route goes, its last counters are counted.
    let r = h.request(&mut c, Method::Refresh, &[lifetime(0)]);
    assert_eq!(code_of(&r), None);
    assert!(h.relays.routes.is_empty());
    assert_eq!(h.server.stats().to_peer_packets, 5);
    assert_eq!(h.relays.counted.to_peer_packets, 5);
    assert_eq!(h.relays.counted.to_client_bytes, 500);
    let mut clusters = Vec::new();
    h.server
        .for_each_cluster(|n, t| clusters.push((n.to_string(), t)));
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].1.tx_packets, 5);
    assert_eq!(clusters[0].1.rx_bytes, 500);
    assert_eq!(h.server.offloaded_routes(), 0);
}

#[test]
fn user_space_traffic_and_kernel_traffic_add_up() {
    let (mut h, c, _) = bound();
    let route = only_route(&h);
    // A datagram that reached user space anyway (e.g. a fallback) is counted there.
    assert!(matches!(
        h.send(&c, &channel_data(0x4001, &[0; 100])),
        Outcome::Forward(..)
    ));
    kernel_relays(&mut h, &route, 4);
    h.server.offload_poll(h.now, &h.snap, &mut h.relays);
    assert_eq!(h.server.stats().to_peer_packets, 5);
    assert_eq!(h.server.stats().to_peer_bytes, 500);
}

#[test]
fn permission_expiry_removes_the_route_and_a_renewal_brings_it_back() {
    let (mut h, mut c, _) = bound();
    // The channel lives 600 s, its permission 300 s.
    h.advance(301);
    assert!(
        h.relays.routes.is_empty(),
        "no kernel route without a live permission"
    );
    h.request(
        &mut c,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:7000")],
    );
    assert_eq!(h.relays.routes.len(), 1);
}

#[test]
fn channel_expiry_and_allocation_expiry_remove_the_route() {
    let (mut h, mut c, _) = bound();
    h.advance(290);
    h.request(
        &mut c,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:7000")],
    );
    h.request(&mut c, Method::Refresh, &[lifetime(3600)]);
    assert_eq!(h.relays.routes.len(), 1);
    h.advance(311); // the channel (600 s) is gone, the permission (renewed at 290) not
    assert!(h.relays.routes.is_empty());

    let (mut h, _, _) = bound();
    h.advance(DEFAULT_LIFETIME.as_secs() + 1);
    assert!(h.relays.routes.is_empty());
    assert_eq!(h.server.offloaded_routes(), 0);
}

#[test]
fn a_snapshot_that_revokes_the_peer_removes_the_route_on_recheck() {
    let (mut h, _, _) = bound();
    let mut next = crate::snapshot::testing::snapshot_with_clusters(&[("other", &["8.8.8.8"])]);
    next.generation = 2;
    h.snap = next;
    h.server.offload_recheck(h.now, &h.snap, &mut h.relays);
    assert!(h.relays.routes.is_empty());
    // And a snapshot that admits it again brings it back.
    let mut back =
        crate::snapshot::testing::snapshot_with_clusters(&[("local", &["127.0.0.1/32"])]);
    back.generation = 3;
    h.snap = back;
    h.server.offload_recheck(h.now, &h.snap, &mut h.relays);
    assert_eq!(h.relays.routes.len(), 1);
}

#[test]
fn kills_and_shutdown_remove_routes() {
    let (mut h, _, _) = bound();
    let killed = h.server.kill(
        h.now,
        &crate::turn::session::Selector::User("user".into()),
        &mut h.relays,
    );
    assert_eq!(killed.len(), 1);
    assert!(h.relays.routes.is_empty());

    let (mut h, _, _) = bound();
    h.server.close_all(
        crate::turn::session::DeleteReason::Shutdown,
        h.now,
        &mut h.relays,
    );
    assert!(h.relays.routes.is_empty());
}

#[test]
fn a_new_offload_epoch_reinstalls_on_the_next_poll() {
    let (mut h, _, _) = bound();
    // The offload was loaded anew: its tables are empty.
    h.relays.routes.clear();
    h.relays.offload = Some(2);
    h.server.offload_poll(h.now, &h.snap, &mut h.relays);
    assert_eq!(h.relays.routes.len(), 1);
    assert_eq!(h.server.offloaded_routes(), 1);
    // The offload went away: nothing is installed, nothing is left counted as installed.
    h.relays.routes.clear();
    h.relays.offload = None;
    h.server.offload_poll(h.now, &h.snap, &mut h.relays);
    assert_eq!(h.server.offloaded_routes(), 0);
}
