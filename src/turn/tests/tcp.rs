//! RFC 6062 TCP allocations in the core, with fake time and fake relay sockets.

use super::*;

/// The control connection of the tests, and a second (data) connection.
const CONTROL: TransportId = TransportId(100);
const DATA: TransportId = TransportId(101);

#[derive(Debug)]
enum Out {
    Reply(Vec<u8>),
    Pending,
    Bind(Vec<u8>, ConnectionId),
    Other,
}

impl Out {
    fn reply(self) -> Vec<u8> {
        match self {
            Out::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

fn tcp() -> (u16, Vec<u8>) {
    (REQUESTED_TRANSPORT, vec![6, 0, 0, 0])
}

fn conn_attr(id: u32) -> (u16, Vec<u8>) {
    (CONNECTION_ID, id.to_be_bytes().to_vec())
}

impl Harness {
    fn send_on(&mut self, c: &Client, transport: TransportId, stream: bool, bytes: &[u8]) -> Out {
        let ctx = ClientCtx {
            transport,
            listener: 0,
            client: c.addr,
            stream,
        };
        match self.server.handle_client(
            self.now,
            &self.snap,
            ctx,
            bytes,
            &mut self.out,
            &mut self.relays,
        ) {
            ClientOutput::Reply(n) | ClientOutput::Unverified(n) => {
                Out::Reply(self.out[..n].to_vec())
            }
            ClientOutput::Pending => Out::Pending,
            ClientOutput::Bind { len, conn } => Out::Bind(self.out[..len].to_vec(), conn),
            _ => Out::Other,
        }
    }

    /// An authenticated request on a stream transport (fetching a nonce first).
    fn treq(
        &mut self,
        c: &mut Client,
        transport: TransportId,
        stream: bool,
        method: Method,
        attrs: &[(u16, Vec<u8>)],
    ) -> Out {
        if c.nonce.is_empty() {
            let r = self
                .send_on(c, transport, stream, &build(c, method, attrs, false))
                .reply();
            let m = Message::parse(&r).unwrap();
            assert_eq!(error_code(&m), Some(401));
            c.nonce = m.get(NONCE).unwrap().to_vec();
        }
        self.send_on(c, transport, stream, &build(c, method, attrs, true))
    }

    /// A TCP allocation on the control connection.
    fn tcp_allocate(&mut self, c: &mut Client) -> SocketAddr {
        let r = self
            .treq(c, CONTROL, true, Method::Allocate, &[tcp()])
            .reply();
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class(), Class::Success, "{:?}", error_code(&m));
        assert!(self.relays.last_request.unwrap().tcp);
        attr::decode_xor_addr(m.get(XOR_RELAYED_ADDRESS).unwrap(), m.transaction_id()).unwrap()
    }

    /// Connect to `peer`; the core must ask the shell to connect.
    fn connect_pending(&mut self, c: &mut Client, peer: &str) -> ConnectionId {
        let before = self.relays.connects.len();
        let r = self.treq(c, CONTROL, true, Method::Connect, &[peer_attr(peer)]);
        assert!(matches!(r, Out::Pending), "{r:?}");
        assert_eq!(self.relays.connects.len(), before + 1);
        let (_, to, conn) = *self.relays.connects.last().unwrap();
        assert_eq!(to, peer.parse().unwrap());
        conn
    }

    fn connect_result(&mut self, conn: ConnectionId, ok: bool) -> Option<(TransportId, Vec<u8>)> {
        self.server
            .handle_connect_result(self.now, conn, ok, &mut self.out)
            .map(|(t, n)| (t, self.out[..n].to_vec()))
    }
}

fn connection_id(r: &[u8]) -> u32 {
    let m = Message::parse(r).unwrap();
    attr::decode_u32(m.get(CONNECTION_ID).unwrap()).unwrap()
}

#[test]
fn tcp_allocations_need_a_stream_client() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    // Over UDP/DTLS: 400, and no relay is opened.
    let r = h.treq(&mut c, CONTROL, false, Method::Allocate, &[tcp()]);
    assert_eq!(code_of(&r.reply()), Some(400));
    assert!(h.relays.open.is_empty());
    // Other protocols stay 442 on any transport.
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::Allocate,
        &[(REQUESTED_TRANSPORT, vec![99, 0, 0, 0])],
    );
    assert_eq!(code_of(&r.reply()), Some(442));
    // No port reservations for TCP relays.
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::Allocate,
        &[tcp(), (EVEN_PORT, vec![0x80])],
    );
    assert_eq!(code_of(&r.reply()), Some(400));
    h.tcp_allocate(&mut c);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn connect_and_connection_bind_over_udp_are_400() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.allocate(&mut c);
    let r = h.request(&mut c, Method::Connect, &[peer_attr("127.0.0.1:9000")]);
    assert_eq!(code_of(&r), Some(400));
    let r = h.request(&mut c, Method::ConnectionBind, &[conn_attr(1)]);
    assert_eq!(code_of(&r), Some(400));
    assert!(h.relays.connects.is_empty());
}

#[test]
fn connect_on_a_udp_allocation_is_400() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    let r = h.treq(&mut c, CONTROL, true, Method::Allocate, &[udp()]);
    assert_eq!(Message::parse(&r.reply()).unwrap().class(), Class::Success);
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::Connect,
        &[peer_attr("127.0.0.1:9000")],
    );
    assert_eq!(code_of(&r.reply()), Some(400));
    assert!(h.relays.connects.is_empty());
}

#[test]
fn connect_to_refused_peers_is_403_and_never_dials() {
    // A wildcard-only route: special-purpose addresses stay closed.
    let mut h = Harness::new(&[("wild", &["0.0.0.0/0"])]);
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    for peer in ["127.0.0.1:9000", "[::ffff:127.0.0.1]:9000", "0.0.0.0:9000"] {
        let r = h.treq(&mut c, CONTROL, true, Method::Connect, &[peer_attr(peer)]);
        let r = r.reply();
        assert_eq!(code_of(&r), Some(403), "{peer}");
        assert!(Message::parse(&r).unwrap().verify_integrity(&c.key));
    }
    assert!(
        h.relays.connects.is_empty(),
        "the shell was asked to connect"
    );
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn connect_success_carries_connection_id_and_duplicates_get_446() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let conn = h.connect_pending(&mut c, "127.0.0.1:9000");
    // Pending: a second Connect to the same peer is 446 and does not dial.
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::Connect,
        &[peer_attr("127.0.0.1:9000")],
    );
    assert_eq!(code_of(&r.reply()), Some(446));
    assert_eq!(h.relays.connects.len(), 1);
    let (to, r) = h.connect_result(conn, true).unwrap();
    assert_eq!(to, CONTROL);
    let m = Message::parse(&r).unwrap();
    assert_eq!((m.method(), m.class()), (Method::Connect, Class::Success));
    assert!(m.verify_integrity(&c.key));
    assert_eq!(connection_id(&r), conn.0);
    // Established: still 446.
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::Connect,
        &[peer_attr("127.0.0.1:9000")],
    );
    assert_eq!(code_of(&r.reply()), Some(446));
    // Another port of the same IP is another peer.
    h.connect_pending(&mut c, "127.0.0.1:9001");
}

#[test]
fn failed_connect_is_447_and_may_be_retried() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let conn = h.connect_pending(&mut c, "127.0.0.1:9000");
    let (to, r) = h.connect_result(conn, false).unwrap();
    assert_eq!(to, CONTROL);
    assert_eq!(code_of(&r), Some(447));
    assert!(Message::parse(&r).unwrap().verify_integrity(&c.key));
    assert_eq!(h.server.peer_connection_count(), 0);
    h.connect_pending(&mut c, "127.0.0.1:9000");
}

#[test]
fn connect_times_out_with_447_after_30s() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let conn = h.connect_pending(&mut c, "127.0.0.1:9000");
    h.advance(29);
    assert!(h.relays.sent.pop_front().is_none());
    h.advance(2);
    let (to, r) = h.relays.sent.pop_front().expect("447 after the timeout");
    assert_eq!(to, CONTROL);
    assert_eq!(code_of(&r), Some(447));
    assert!(Message::parse(&r).unwrap().verify_integrity(&c.key));
    assert_eq!(h.relays.closed_peers, vec![conn]);
    // A late success is not wanted any more: the shell closes it.
    assert!(h.connect_result(conn, true).is_none());
}

#[test]
fn connection_bind_pipes_a_new_connection_of_the_same_user() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let conn = h.connect_pending(&mut c, "127.0.0.1:9000");
    h.connect_result(conn, true).unwrap();
    // Unknown id: 400.
    let mut d = h.client("192.0.2.7:4001");
    let r = h.treq(
        &mut d,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0 + 7)],
    );
    assert_eq!(code_of(&r.reply()), Some(400));
    // On the control connection itself: 400.
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0)],
    );
    assert_eq!(code_of(&r.reply()), Some(400));
    // The right id on a new connection: success, then a pipe.
    let r = h.treq(
        &mut d,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0)],
    );
    let Out::Bind(r, bound) = r else {
        panic!("expected a bind, got {r:?}")
    };
    assert_eq!(bound, conn);
    let m = Message::parse(&r).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ConnectionBind, Class::Success)
    );
    assert!(m.verify_integrity(&d.key));
    // Bound once only.
    let mut e = h.client("192.0.2.7:4002");
    let r = h.treq(
        &mut e,
        TransportId(102),
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0)],
    );
    assert_eq!(code_of(&r.reply()), Some(400));
    // A bound connection does not time out; it closes with its allocation.
    h.advance(60);
    assert!(h.relays.closed_peers.is_empty());
    h.server.close_transport(
        CONTROL,
        crate::turn::session::DeleteReason::ConnectionClosed,
        h.now,
        &mut h.relays,
    );
    assert_eq!(h.relays.closed_peers, vec![conn]);
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn connection_bind_by_another_user_is_441() {
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
    let mut alice = rest_client(&h, "192.0.2.7:4000", format!("{}:alice", unix + 100));
    h.tcp_allocate(&mut alice);
    let conn = h.connect_pending(&mut alice, "127.0.0.1:9000");
    h.connect_result(conn, true).unwrap();
    let mut mallory = rest_client(&h, "192.0.2.7:4001", format!("{}:mallory", unix + 100));
    let r = h.treq(
        &mut mallory,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0)],
    );
    assert_eq!(code_of(&r.reply()), Some(441));
    let mut alice2 = rest_client(&h, "192.0.2.7:4002", format!("{}:alice", unix + 100));
    let r = h.treq(
        &mut alice2,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0)],
    );
    assert!(matches!(r, Out::Bind(_, c) if c == conn), "{r:?}");
}

#[test]
fn unbound_connections_close_after_the_30s_bind_window() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let conn = h.connect_pending(&mut c, "127.0.0.1:9000");
    h.advance(20);
    // The window starts when the connection is up, not at the Connect.
    h.connect_result(conn, true).unwrap();
    h.advance(25);
    assert!(h.relays.closed_peers.is_empty());
    h.advance(6);
    assert_eq!(h.relays.closed_peers, vec![conn]);
    assert!(
        h.relays.sent.pop_front().is_none(),
        "no 447 for a ready one"
    );
    let mut d = h.client("192.0.2.7:4001");
    let r = h.treq(
        &mut d,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0)],
    );
    assert_eq!(code_of(&r.reply()), Some(400));
}

#[test]
fn peer_connections_need_a_permission_and_admission() {
    let mut h = Harness::new(&[("local", &["127.0.0.1/32"]), ("wild", &["0.0.0.0/0"])]);
    let mut c = h.client("192.0.2.7:4000");
    let relayed = h.tcp_allocate(&mut c);
    let relay = RelayId(0);
    let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    // No permission yet: refused.
    let r = h
        .server
        .handle_peer_connection(h.now, &h.snap, relay, peer, &mut h.relays);
    assert_eq!(r, Err(DropReason::NoPermission));
    assert!(h.relays.sent.pop_front().is_none());
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::CreatePermission,
        &[peer_attr("127.0.0.1:0")],
    );
    assert_eq!(Message::parse(&r.reply()).unwrap().class(), Class::Success);
    let conn = h
        .server
        .handle_peer_connection(h.now, &h.snap, relay, peer, &mut h.relays)
        .unwrap();
    let (to, ind) = h.relays.sent.pop_front().expect("ConnectionAttempt");
    assert_eq!(to, CONTROL);
    let m = Message::parse(&ind).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ConnectionAttempt, Class::Indication)
    );
    assert_eq!(connection_id(&ind), conn.0);
    let from = attr::decode_xor_addr(m.get(XOR_PEER_ADDRESS).unwrap(), m.transaction_id());
    assert_eq!(from.unwrap(), peer);
    // The mapped form of the same address is the same peer.
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:9001".parse().unwrap();
    assert!(
        h.server
            .handle_peer_connection(h.now, &h.snap, relay, mapped, &mut h.relays)
            .is_ok()
    );
    h.relays.sent.pop_front().unwrap();
    // No permission for 10.0.0.1 (and CreatePermission would be 403: private under a wildcard).
    let private: SocketAddr = "10.0.0.1:9000".parse().unwrap();
    assert!(
        h.server
            .handle_peer_connection(h.now, &h.snap, relay, private, &mut h.relays)
            .is_err()
    );
    // The 30 s bind window applies to accepted connections too.
    h.advance(31);
    assert_eq!(h.relays.closed_peers.len(), 2);
    assert!(h.relays.closed_peers.contains(&conn));
    let _ = relayed;
}

#[test]
fn tcp_allocations_refuse_udp_relaying() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::ChannelBind,
        &[channel(0x4000), peer_attr("127.0.0.1:9000")],
    );
    assert_eq!(code_of(&r.reply()), Some(400));
    let r = h.send_on(&c, CONTROL, true, &send_indication("127.0.0.1:9000", b"x"));
    assert!(matches!(r, Out::Other), "{r:?}");
}

#[test]
fn control_connection_close_closes_every_peer_connection() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let a = h.connect_pending(&mut c, "127.0.0.1:9000");
    let b = h.connect_pending(&mut c, "127.0.0.1:9001");
    h.connect_result(b, true).unwrap();
    h.server.close_transport(
        CONTROL,
        crate::turn::session::DeleteReason::ConnectionClosed,
        h.now,
        &mut h.relays,
    );
    let mut closed = h.relays.closed_peers.clone();
    closed.sort();
    assert_eq!(closed, vec![a, b]);
    assert!(h.relays.open.is_empty());
    assert_eq!(h.server.peer_connection_count(), 0);
    // The pending Connect gets no answer any more.
    assert!(h.connect_result(a, true).is_none());
}

#[test]
fn a_new_config_closes_peer_connections_it_no_longer_admits() {
    let mut h = Harness::new(&[("local", &["127.0.0.1/32"]), ("other", &["8.8.8.8"])]);
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    // One piped, one waiting for its bind, one still connecting, one to a peer that stays.
    let piped = h.connect_pending(&mut c, "127.0.0.1:9000");
    let r = h.connect_result(piped, true).unwrap().1;
    let mut d = h.client("192.0.2.7:4001");
    let r = h.treq(
        &mut d,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(connection_id(&r))],
    );
    assert!(matches!(r, Out::Bind(..)), "{r:?}");
    let ready = h.connect_pending(&mut c, "127.0.0.1:9001");
    h.connect_result(ready, true).unwrap();
    let connecting = h.connect_pending(&mut c, "127.0.0.1:9002");
    let stays = h.connect_pending(&mut c, "8.8.8.8:443");
    h.connect_result(stays, true).unwrap();

    // The same config again (a new generation) closes nothing.
    let mut same = snapshot_with_clusters(&[("local", &["127.0.0.1/32"]), ("other", &["8.8.8.8"])]);
    same.generation = h.snap.generation + 1;
    assert_eq!(h.server.recheck_peer_connections(&same, &mut h.relays), 0);
    assert!(h.relays.closed_peers.is_empty());

    // The route to 127.0.0.1 goes away.
    let mut next = snapshot_with_clusters(&[("other", &["8.8.8.8"])]);
    next.generation = same.generation + 1;
    h.snap = next;
    assert_eq!(h.server.recheck_peer_connections(&h.snap, &mut h.relays), 3);
    let mut closed = h.relays.closed_peers.clone();
    closed.sort();
    assert_eq!(closed, vec![piped, ready, connecting]);
    assert_eq!(h.server.peer_connection_count(), 1);
    // The Connect under way is answered 403 on the control connection.
    let (to, r) = h
        .relays
        .sent
        .pop_front()
        .expect("an answer to the pending Connect");
    assert_eq!(to, CONTROL);
    assert_eq!(code_of(&r), Some(403));
    assert!(Message::parse(&r).unwrap().verify_integrity(&c.key));
    assert!(h.relays.sent.pop_front().is_none());
    // A late connect result for it is not wanted; a new Connect to the peer is 403.
    assert!(h.connect_result(connecting, true).is_none());
    let r = h.treq(
        &mut c,
        CONTROL,
        true,
        Method::Connect,
        &[peer_attr("127.0.0.1:9000")],
    );
    assert_eq!(code_of(&r.reply()), Some(403));
}

#[test]
fn connection_bind_accepts_the_control_connections_nonce_from_the_same_ip() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let conn = h.connect_pending(&mut c, "127.0.0.1:9000");
    h.connect_result(conn, true).unwrap();
    let bind = |h: &mut Harness, d: &Client, id: u32| {
        let req = build(d, Method::ConnectionBind, &[conn_attr(id)], true);
        h.send_on(d, DATA, true, &req)
    };
    // From another IP, the control connection's nonce is stale.
    let mut far = h.client("198.51.100.9:4001");
    far.nonce = c.nonce.clone();
    assert_eq!(code_of(&bind(&mut h, &far, conn.0).reply()), Some(438));
    // For an unknown CONNECTION-ID too.
    let mut d = h.client("192.0.2.7:4001");
    d.nonce = c.nonce.clone();
    assert_eq!(code_of(&bind(&mut h, &d, conn.0 + 7).reply()), Some(438));
    // From the control connection's IP, for a connection of its allocation: bound.
    let r = bind(&mut h, &d, conn.0);
    assert!(matches!(r, Out::Bind(_, b) if b == conn), "{r:?}");
}

#[test]
fn a_tcp_session_lists_its_peer_connections_and_pipe_traffic_and_kill_closes_them() {
    let mut h = Harness::local();
    let mut c = h.client("192.0.2.7:4000");
    h.tcp_allocate(&mut c);
    let a = h.connect_pending(&mut c, "127.0.0.1:9000");
    h.connect_result(a, true).unwrap();
    let b = h.connect_pending(&mut c, "127.0.0.1:9001");
    let mut d = h.client("192.0.2.7:4001");
    let r = h.treq(
        &mut d,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(a.0)],
    );
    assert!(matches!(r, Out::Bind(..)));
    h.server.count_pipe(a, (2, 300), (1, 40));
    h.server.count_pipe(a, (1, 5), (0, 0));

    let list = h.server.sessions(h.now);
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s.relay_transport, "tcp");
    assert_eq!(s.client, c.addr);
    let conns: Vec<(u32, String, &str)> = s
        .connections
        .iter()
        .map(|c| (c.id, c.peer.to_string(), c.state))
        .collect();
    assert_eq!(
        conns,
        vec![
            (a.0, "127.0.0.1:9000".to_string(), "bound"),
            (b.0, "127.0.0.1:9001".to_string(), "connecting"),
        ]
    );
    assert_eq!(
        (s.traffic.to_peer_packets, s.traffic.to_peer_bytes),
        (3, 305)
    );
    assert_eq!(
        (s.traffic.to_client_packets, s.traffic.to_client_bytes),
        (1, 40)
    );

    let killed = h.server.kill(
        h.now,
        &crate::turn::session::Selector::Id(s.id),
        &mut h.relays,
    );
    assert_eq!(killed, vec![s.id]);
    let mut closed = h.relays.closed_peers.clone();
    closed.sort();
    assert_eq!(closed, vec![a, b], "both peer connections close with it");
    assert_eq!(h.server.peer_connection_count(), 0);
    let r = h.treq(&mut c, CONTROL, true, Method::Refresh, &[]);
    assert_eq!(code_of(&r.reply()), Some(437));
}

#[test]
fn connect_and_connection_bind_outlive_the_rotation_of_their_secret() {
    let mut h = Harness::local();
    h.snap.auth = Auth::Ephemeral {
        secrets: vec![b"old".to_vec()],
    };
    let username = format!("{}:alice", h.now.unix + 100);
    let rest_client = |h: &Harness, addr: &str, secret: &[u8]| {
        let mut c = h.client(addr);
        c.key = long_term_key(&username, REALM_, &rest_password(secret, &username));
        c.username = username.clone();
        c
    };
    let mut alice = rest_client(&h, "192.0.2.7:4000", b"old");
    h.tcp_allocate(&mut alice);
    // The reload removes the old secret.
    h.snap.auth = Auth::Ephemeral {
        secrets: vec![b"new".to_vec()],
    };
    h.snap.generation += 1;
    let conn = h.connect_pending(&mut alice, "127.0.0.1:9000");
    h.connect_result(conn, true).unwrap();
    // The data connection binds with the allocation's credential...
    let mut data = rest_client(&h, "192.0.2.7:4002", b"old");
    let r = h.treq(
        &mut data,
        DATA,
        true,
        Method::ConnectionBind,
        &[conn_attr(conn.0)],
    );
    assert!(matches!(r, Out::Bind(_, c) if c == conn), "{r:?}");
    // ...but a new TCP allocation with it is refused.
    let mut again = rest_client(&h, "192.0.2.7:4003", b"old");
    let r = h.treq(
        &mut again,
        TransportId(102),
        true,
        Method::Allocate,
        &[tcp()],
    );
    assert_eq!(code_of(&r.reply()), Some(401));
}
