//! Sessions (the admin list and kill switch) and the reasons behind failed authentications
//! and refused peers, in the core.

use super::*;
use crate::turn::auth::{AuthError, Rejection, authenticate};
use crate::turn::policy::Denied;
use crate::turn::session::Selector;

#[test]
fn a_session_shows_its_peers_channels_and_traffic() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    let relayed = h.allocate(&mut c);
    let r = h.request(
        &mut c,
        Method::ChannelBind,
        &[channel(0x4001), peer_attr("127.0.0.1:7000")],
    );
    assert_eq!(code_of(&r), None);
    let r = h.request(&mut c, Method::CreatePermission, &[peer_attr("8.8.8.8:53")]);
    assert_eq!(code_of(&r), None);
    for _ in 0..3 {
        assert!(matches!(
            h.send(&c, &channel_data(0x4001, b"hello")),
            Outcome::Forward(..)
        ));
    }
    assert!(matches!(
        h.send(&c, &send_indication("8.8.8.8:53", b"0123456789")),
        Outcome::Forward(..)
    ));
    h.peer(0, "127.0.0.1:7000", b"pong")
        .expect("channel data to the client");
    h.peer(0, "8.8.8.8:53", b"answer!")
        .expect("data indication to the client");
    h.now = h.now.advance(Duration::from_secs(5));

    let list = h.server.sessions(h.now);
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s.user, "user");
    assert_eq!((s.transport, s.relay_transport), ("udp", "udp"));
    assert_eq!(s.client, c.addr);
    assert_eq!(s.relayed, relayed);
    assert_eq!(s.age, 5);
    assert_eq!(s.expires_in, 595);
    assert_eq!(s.channels.len(), 1);
    assert_eq!(s.channels[0].number, 0x4001);
    assert_eq!(s.channels[0].peer, "127.0.0.1:7000".parse().unwrap());
    let mut ips: Vec<String> = s.peers.iter().map(|p| p.ip.to_string()).collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.1", "8.8.8.8"]);
    assert_eq!(s.traffic.to_peer_packets, 4);
    assert_eq!(s.traffic.to_peer_bytes, 3 * 5 + 10);
    assert_eq!(s.traffic.to_client_packets, 2);
    assert_eq!(s.traffic.to_client_bytes, 4 + 7);
    assert_eq!(s.created, h.now.unix - 5);
    let json = serde_json::to_string(s).unwrap();
    assert!(json.contains("\"to_peer_bytes\":25"), "{json}");
    assert!(!json.contains("pass"), "{json}");
}

#[test]
fn kill_by_id_frees_the_relay_and_the_next_refresh_gets_437() {
    let mut h = Harness::local();
    let mut a = h.client("192.0.2.7:4000");
    let mut b = h.client("192.0.2.7:4001");
    h.allocate(&mut a);
    h.allocate(&mut b);
    let ids: Vec<u64> = h.server.sessions(h.now).iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    let victim = h
        .server
        .sessions(h.now)
        .into_iter()
        .find(|s| s.client == a.addr)
        .unwrap()
        .id;
    let killed = h.server.kill(h.now, &Selector::Id(victim), &mut h.relays);
    assert_eq!(killed, vec![victim]);
    assert_eq!(
        h.relays.open.len(),
        1,
        "the killed session's relay is closed"
    );
    assert_eq!(h.server.allocation_count(), 1);
    let r = h.request(&mut a, Method::Refresh, &[lifetime(600)]);
    assert_eq!(code_of(&r), Some(437));
    // Relayed data of the killed session goes nowhere.
    assert_eq!(
        h.send(&a, &channel_data(0x4001, b"x")).drop_reason(),
        Some(DropReason::NoAllocation)
    );
    // The other session is untouched; an unknown id kills nothing.
    let r = h.request(&mut b, Method::Refresh, &[lifetime(600)]);
    assert_eq!(code_of(&r), None);
    assert!(
        h.server
            .kill(h.now, &Selector::Id(victim), &mut h.relays)
            .is_empty()
    );
}

#[test]
fn kill_by_user_ends_only_that_users_sessions() {
    let mut h = Harness::local();
    h.snap.auth = Auth::Ephemeral {
        secrets: vec![b"s3cret".to_vec()],
    };
    let unix = h.now.unix;
    let rest_client = |h: &Harness, addr: &str, username: String| {
        let mut c = h.client(addr);
        c.key = long_term_key(&username, REALM_, &rest_password(b"s3cret", &username));
        c.username = username;
        c
    };
    let mut a1 = rest_client(&h, "192.0.2.7:1", format!("{}:alice", unix + 100));
    let mut a2 = rest_client(&h, "192.0.2.7:2", format!("{}:alice", unix + 100));
    let mut b = rest_client(&h, "192.0.2.7:3", format!("{}:bob", unix + 100));
    for c in [&mut a1, &mut a2, &mut b] {
        h.allocate(c);
    }
    let killed = h
        .server
        .kill(h.now, &Selector::User("alice".into()), &mut h.relays);
    assert_eq!(killed.len(), 2);
    let left = h.server.sessions(h.now);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].user, "bob");
    assert_eq!(
        code_of(&h.request(&mut a2, Method::Refresh, &[])),
        Some(437)
    );
    assert!(
        h.server
            .kill(h.now, &Selector::User("nobody".into()), &mut h.relays)
            .is_empty()
    );
}

#[test]
fn close_all_empties_the_table() {
    let mut h = Harness::local();
    for port in 1..=3 {
        let mut c = h.client(&format!("192.0.2.7:{port}"));
        h.allocate(&mut c);
    }
    let n = h.server.close_all(
        crate::turn::session::DeleteReason::Shutdown,
        h.now,
        &mut h.relays,
    );
    assert_eq!(n, 3);
    assert!(h.relays.open.is_empty());
    assert!(h.server.sessions(h.now).is_empty());
}

/// The reason `authenticate` gives for a request signed by `c`.
fn auth_result(h: &Harness, c: &Client) -> Result<(), AuthError> {
    let nonces = NonceKey::from_bytes([9; 32]);
    let mut c2 = h.client(&c.addr.to_string());
    c2.username = c.username.clone();
    c2.key = c.key;
    c2.nonce = nonces.make(h.now.unix, c.addr).to_vec();
    let bytes = build(&c2, Method::Allocate, &[udp()], true);
    let msg = Message::parse(&bytes).unwrap();
    authenticate(&h.snap, &nonces, h.now.unix, c.addr, None, None, &msg).map(|_| ())
}

#[test]
fn rejections_say_why() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:1");
    assert_eq!(auth_result(&h, &c), Ok(()));
    c.key = long_term_key("user", REALM_, "wrong");
    assert_eq!(
        auth_result(&h, &c),
        Err(AuthError::Rejected(Rejection::BadIntegrity))
    );
    c.username = "mallory".into();
    assert_eq!(
        auth_result(&h, &c),
        Err(AuthError::Rejected(Rejection::UnknownUser))
    );

    h.snap.auth = Auth::Ephemeral {
        secrets: vec![b"s3cret".to_vec()],
    };
    let rest = |username: &str| {
        let mut c = h.client("192.0.2.7:2");
        c.key = long_term_key(username, REALM_, &rest_password(b"s3cret", username));
        c.username = username.into();
        c
    };
    let unix = h.now.unix;
    assert_eq!(auth_result(&h, &rest(&format!("{}:a", unix + 9))), Ok(()));
    assert_eq!(
        auth_result(&h, &rest(&format!("{}:a", unix - 1))),
        Err(AuthError::Rejected(Rejection::Expired))
    );
    assert_eq!(
        auth_result(&h, &rest("alice")),
        Err(AuthError::Rejected(Rejection::MalformedRestUsername))
    );
    let mut wrong = rest(&format!("{}:a", unix + 9));
    wrong.key = long_term_key(&wrong.username, REALM_, "guess");
    assert_eq!(
        auth_result(&h, &wrong),
        Err(AuthError::Rejected(Rejection::BadIntegrity))
    );
    // None of the reasons carries the secret or the password.
    for r in [
        Rejection::UnknownUser,
        Rejection::BadIntegrity,
        Rejection::Expired,
        Rejection::MalformedRestUsername,
    ] {
        assert!(!r.as_str().contains("s3cret"));
    }
}

#[test]
fn refusals_name_the_rule() {
    use crate::turn::policy::{admit, admit_ip};
    let snap = crate::snapshot::testing::snapshot_with_clusters(&[(
        "c",
        &["0.0.0.0/0", "192.0.2.9:<1000-2000>"],
    )]);
    let l = &snap.listeners[0];
    assert_eq!(
        admit(&snap, l, "127.0.0.1:5".parse().unwrap()),
        Err(Denied::SpecialPurpose)
    );
    assert_eq!(
        admit(&snap, l, "192.0.2.9:3000".parse().unwrap()),
        Err(Denied::SpecialPurpose),
        "192.0.2.0/24 is TEST-NET-1: the wildcard cannot open it, the explicit endpoint's range does not cover the port"
    );
    assert!(admit(&snap, l, "192.0.2.9:1500".parse().unwrap()).is_ok());
    assert!(admit_ip(&snap, l, "192.0.2.9".parse().unwrap()).is_ok());
    let snap = crate::snapshot::testing::snapshot_with_clusters(&[("c", &["8.8.8.8:<53-53>"])]);
    let l = &snap.listeners[0];
    assert_eq!(
        admit(&snap, l, "8.8.8.8:54".parse().unwrap()),
        Err(Denied::PortRange)
    );
    assert_eq!(
        admit(&snap, l, "8.8.4.4:53".parse().unwrap()),
        Err(Denied::NoRoute)
    );
    assert_eq!(
        admit_ip(&snap, l, "8.8.4.4".parse().unwrap()),
        Err(Denied::NoRoute)
    );
}
