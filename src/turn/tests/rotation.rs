//! Several shared secrets and static users at once, and secret rotation: an allocation made
//! with a secret that a reload removes keeps working until its credential expires, while
//! new allocations with that secret are refused.

use super::*;
use crate::snapshot::StaticUser;

const A: &[u8] = b"secret-A";
const B: &[u8] = b"secret-B";

fn secrets(list: &[&[u8]]) -> Auth {
    Auth::Ephemeral {
        secrets: list.iter().map(|s| s.to_vec()).collect(),
    }
}

/// A client at `addr` holding a REST credential `expiry:name` signed by `secret`.
fn rest_client(h: &Harness, addr: &str, expiry: u64, name: &str, secret: &[u8]) -> Client {
    let mut c = h.client(addr);
    let username = format!("{expiry}:{name}");
    c.key = long_term_key(&username, REALM_, &rest_password(secret, &username));
    c.username = username;
    c
}

/// A reload: new credentials, next generation.
fn reload(h: &mut Harness, auth: Auth) {
    h.snap.auth = auth;
    h.snap.generation += 1;
}

fn success(r: &[u8], c: &Client, what: &str) {
    let m = Message::parse(r).unwrap();
    assert_eq!(m.class(), Class::Success, "{what}: {:?}", error_code(&m));
    assert!(
        m.verify_integrity(&c.key),
        "{what}: response not signed with the client's key"
    );
}

#[test]
fn credentials_from_every_configured_secret_allocate() {
    let mut h = Harness::local();
    reload(&mut h, secrets(&[A, B]));
    let exp = h.now.unix + 600;
    let mut a = rest_client(&h, "192.0.2.7:4000", exp, "alice", A);
    let mut b = rest_client(&h, "192.0.2.7:4001", exp, "bob", B);
    h.allocate(&mut a);
    h.allocate(&mut b);
    let mut other = rest_client(&h, "192.0.2.7:4002", exp, "eve", b"secret-C");
    let r = h.request(&mut other, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));
    assert_eq!(h.server.stats().allocations_created, 2);
}

#[test]
fn allocation_outlives_the_rotation_of_its_secret_until_expiry() {
    let mut h = Harness::local();
    reload(&mut h, secrets(&[B, A]));
    let exp = h.now.unix + 600;
    let mut old = rest_client(&h, "192.0.2.7:4000", exp, "alice", A);
    h.allocate(&mut old);
    let r = h.request(
        &mut old,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:7000")],
    );
    success(&r, &old, "permission before the rotation");

    // The reload removes A.
    reload(&mut h, secrets(&[B]));
    // A new allocation with a credential from A is refused, even for the same user...
    let mut fresh = rest_client(&h, "192.0.2.7:4001", exp, "alice", A);
    let r = h.request(&mut fresh, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));
    // ...while one from B allocates.
    let mut new = rest_client(&h, "192.0.2.7:4002", exp, "alice", B);
    h.allocate(&mut new);

    // The allocation made with A: Refresh, CreatePermission, ChannelBind all succeed,
    // signed with its key, and data flows both ways.
    let r = h.request(&mut old, Method::Refresh, &[lifetime(3600)]);
    success(&r, &old, "refresh");
    let r = h.request(
        &mut old,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:7001")],
    );
    success(&r, &old, "permission");
    let r = h.request(
        &mut old,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:7000")],
    );
    success(&r, &old, "channel bind");
    match h.send(&old, &channel_data(0x4000, b"abc")) {
        Outcome::Forward(RelayId(0), peer, data) => {
            assert_eq!(
                (peer, data.as_slice()),
                ("127.0.0.1:7000".parse().unwrap(), &b"abc"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    match h.send(&old, &send_indication("127.0.0.1:7001", b"hi")) {
        Outcome::Forward(RelayId(0), _, data) => assert_eq!(data, b"hi"),
        other => panic!("{other:?}"),
    }
    let (to, bytes) = h.peer(0, "127.0.0.1:7000", b"xyz").unwrap();
    assert_eq!((to, bytes), (old.addr, channel_data(0x4000, b"xyz")));

    // Another user on the allocation's 5-tuple gains nothing from the held credential.
    let mut mallory = rest_client(&h, "192.0.2.7:4000", exp, "mallory", A);
    let r = h.request(&mut mallory, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(401));
    // The held username with a key no secret ever made is refused too.
    let mut forged = rest_client(&h, "192.0.2.7:4000", exp, "alice", b"guess");
    forged.nonce = old.nonce.clone();
    let r = h.request(&mut forged, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(401));

    // At the credential's expiry the held credential stops working, like any other.
    h.advance(600);
    let r = h.request(&mut old, Method::Refresh, &[]);
    success(&r, &old, "refresh at the expiry second");
    h.advance(1);
    let r = h.request(&mut old, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(401));
}

#[test]
fn a_deleted_allocation_takes_its_held_credential_along() {
    let mut h = Harness::local();
    reload(&mut h, secrets(&[A]));
    let exp = h.now.unix + 600;
    let mut c = rest_client(&h, "192.0.2.7:4000", exp, "alice", A);
    h.allocate(&mut c);
    reload(&mut h, secrets(&[B]));
    let r = h.request(&mut c, Method::Refresh, &[lifetime(0)]);
    success(&r, &c, "delete by refresh 0");
    // The same 5-tuple and credential cannot allocate anew.
    let r = h.request(&mut c, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));
}

#[test]
fn switching_away_from_ephemeral_revokes_held_credentials() {
    let mut h = Harness::local();
    reload(&mut h, secrets(&[A]));
    let exp = h.now.unix + 600;
    let mut c = rest_client(&h, "192.0.2.7:4000", exp, "alice", A);
    h.allocate(&mut c);
    reload(
        &mut h,
        Auth::Static {
            users: vec![StaticUser {
                username: "user".into(),
                key: long_term_key("user", REALM_, "pass"),
            }],
        },
    );
    let r = h.request(&mut c, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(401));
}

#[test]
fn static_users_list_and_removal_revokes() {
    let mut h = Harness::local();
    let user = |name: &str, pass: &str| StaticUser {
        username: name.into(),
        key: long_term_key(name, REALM_, pass),
    };
    reload(
        &mut h,
        Auth::Static {
            users: vec![user("alice", "pa"), user("bob", "pb")],
        },
    );
    let client = |h: &Harness, addr: &str, name: &str, pass: &str| {
        let mut c = h.client(addr);
        c.username = name.into();
        c.key = long_term_key(name, REALM_, pass);
        c
    };
    let mut alice = client(&h, "192.0.2.7:4000", "alice", "pa");
    let mut bob = client(&h, "192.0.2.7:4001", "bob", "pb");
    h.allocate(&mut alice);
    h.allocate(&mut bob);
    // A known user with another user's password, and an unknown user.
    let mut wrong = client(&h, "192.0.2.7:4002", "alice", "pb");
    let r = h.request(&mut wrong, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));
    let mut carol = client(&h, "192.0.2.7:4003", "carol", "pa");
    let r = h.request(&mut carol, Method::Allocate, &[udp()]);
    assert_eq!(code_of(&r), Some(401));
    // Static users carry no expiry: removing one revokes it at its next request.
    reload(
        &mut h,
        Auth::Static {
            users: vec![user("alice", "pa")],
        },
    );
    let r = h.request(&mut bob, Method::Refresh, &[]);
    assert_eq!(code_of(&r), Some(401));
    let r = h.request(&mut alice, Method::Refresh, &[]);
    success(&r, &alice, "alice refresh");
}
