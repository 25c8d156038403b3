//! STUN requests from clients: authentication, the TURN methods, and error answers.

use super::*;

impl Server {
    pub(super) fn stun_from_client<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: Message<'a>,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> ClientOutput<'a> {
        match (msg.class(), msg.method()) {
            (Class::Indication, Method::Send) => self.send_indication(now, snap, ctx, msg),
            (Class::Indication, _) => ClientOutput::Drop(DropReason::Unexpected),
            (Class::Success | Class::Error, _) => ClientOutput::Drop(DropReason::Unexpected),
            (Class::Request, method) => {
                let res = self.request(now, snap, ctx, &msg, method, out, relays);
                self.finish_request(now, snap, ctx, &msg, res, out)
            }
        }
    }

    /// Handle a request; `Ok(Some(auth))` means a success response is already written
    /// (its attributes, before integrity), `Ok(None)` a response that needs no integrity.
    pub(super) fn request(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        method: Method,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> Result<Done, (Answer, Option<Authenticated>)> {
        let mut unknown = [0u16; 8];
        let mut n = 0;
        for a in msg.attrs() {
            if !attr::is_understood(a.typ) && n < unknown.len() {
                unknown[n] = a.typ;
                n += 1;
            }
        }
        if n > 0 {
            return Err((Answer::Unknown(unknown, n), None));
        }
        if method == Method::Binding {
            return self
                .binding(ctx, msg, out)
                .map(Done::Unverified)
                .map_err(|e| (e, None));
        }
        let tcp_method = matches!(method, Method::Connect | Method::ConnectionBind);
        if !(matches!(
            method,
            Method::Allocate | Method::Refresh | Method::CreatePermission | Method::ChannelBind
        ) || tcp_method && ctx.stream)
        {
            // Unknown methods, and RFC 6062 methods on a UDP transport.
            return Err((Answer::Error(TurnError::BadRequest), None));
        }
        // RFC 6062 clients (coturn's among them) send ConnectionBind on a new connection
        // with the nonce of their control connection: it is accepted for the allocation
        // the CONNECTION-ID names, from the same IP.
        let also = if method == Method::ConnectionBind {
            self.control_client_of(msg, ctx.client)
        } else {
            None
        };
        // The allocation the request is about: its own credential stays valid through a
        // secret rotation. A ConnectionBind is about the allocation its CONNECTION-ID names.
        let about = if method == Method::ConnectionBind {
            self.connection_alloc(msg)
        } else {
            self.by_client
                .get(&FiveTuple {
                    transport: ctx.transport,
                    client: ctx.client,
                })
                .copied()
        };
        let held = about
            .and_then(|id| self.alloc(id))
            .and_then(|a| a.held.as_ref());
        let auth = auth::authenticate(snap, &self.nonces, now.unix, ctx.client, also, held, msg)
            .map_err(|e| {
                match e {
                    AuthError::Challenge => self.stats.auth_challenges += 1,
                    AuthError::StaleNonce => self.stats.stale_nonces += 1,
                    _ => self.stats.auth_failures += 1,
                }
                if let AuthError::Rejected(why) = e {
                    auth_failed(now, snap, ctx, msg, why);
                }
                let ans = match e {
                    AuthError::Malformed => Answer::Error(TurnError::BadRequest),
                    other => Answer::Challenge {
                        error: other.error(),
                        proven: matches!(other, AuthError::Rejected(_)),
                    },
                };
                (ans, None)
            })?;
        let res = match method {
            Method::Allocate => self
                .allocate(now, snap, ctx, msg, &auth, out, relays)
                .map(Done::Reply),
            Method::Refresh => self
                .refresh(now, ctx, msg, &auth, out, relays)
                .map(Done::Reply),
            Method::CreatePermission => self
                .create_permission(now, snap, ctx, msg, &auth, out)
                .map(Done::Reply),
            Method::Connect => self
                .connect(now, snap, ctx, msg, &auth, relays)
                .map(|()| Done::Pending),
            Method::ConnectionBind => self
                .connection_bind(now, ctx, msg, &auth, out)
                .map(|(len, conn)| Done::Bind(len, conn)),
            _ => self
                .channel_bind(now, snap, ctx, msg, &auth, out)
                .map(Done::Reply),
        };
        if res.is_ok()
            && matches!(
                method,
                Method::Refresh | Method::CreatePermission | Method::ChannelBind
            )
        {
            self.reschedule(ctx);
            if method != Method::Refresh {
                self.offload_sync_client(ctx, now.mono, snap, relays);
            }
        }
        match res {
            Ok(r) => Ok(r),
            Err(code) => Err((Answer::Error(code), Some(auth))),
        }
    }

    pub(super) fn binding(
        &mut self,
        ctx: ClientCtx,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Result<usize, Answer> {
        let mut w = MessageWriter::new(out, Method::Binding, Class::Success, msg.transaction_id())
            .map_err(|_| Answer::Error(TurnError::ServerError))?;
        w.add_xor_addr(XOR_MAPPED_ADDRESS, ctx.client)
            .map_err(|_| Answer::Error(TurnError::ServerError))?;
        // Binding responses always carry FINGERPRINT, as upstream and ICE agents expect.
        w.add_fingerprint()
            .map_err(|_| Answer::Error(TurnError::ServerError))?;
        Ok(w.finish())
    }

    pub(super) fn allocate(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> Result<usize, TurnError> {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        if let Some(&id) = self.by_client.get(&five) {
            let a = self.alloc(id).ok_or(TurnError::ServerError)?;
            // A retransmit of the request that created it gets the same answer.
            if &a.alloc_tid == msg.transaction_id() && a.alloc_response.len() <= out.len() {
                out[..a.alloc_response.len()].copy_from_slice(&a.alloc_response);
                return Ok(a.alloc_response.len());
            }
            return Err(TurnError::AllocationMismatch);
        }
        let transport = msg
            .get(REQUESTED_TRANSPORT)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| attr::decode_requested_transport(v).map_err(|_| TurnError::BadRequest))?;
        let tcp = match transport {
            attr::PROTO_UDP => false,
            // RFC 6062 section 5.1: TCP relaying only for clients on TCP/TLS.
            attr::PROTO_TCP if ctx.stream => true,
            attr::PROTO_TCP => return Err(TurnError::BadRequest),
            _ => return Err(TurnError::UnsupportedTransportProtocol),
        };
        let even_port = msg
            .get(EVEN_PORT)
            .map(attr::decode_even_port)
            .transpose()
            .map_err(|_| TurnError::BadRequest)?;
        let token = msg
            .get(RESERVATION_TOKEN)
            .map(attr::decode_token)
            .transpose()
            .map_err(|_| TurnError::BadRequest)?;
        let family = requested_family(msg)?;
        if token.is_some() && (even_port.is_some() || family.is_some()) {
            return Err(TurnError::BadRequest);
        }
        // RFC 6062 section 5.1: no port reservations for TCP relays.
        if tcp && (token.is_some() || even_port.is_some()) {
            return Err(TurnError::BadRequest);
        }
        let listener = snap
            .listeners
            .get(ctx.listener)
            .ok_or(TurnError::ServerError)?;
        // The relayed address advertises the listener address, so the family follows it.
        let listener_family = Family::of(listener.relay_ip);
        if family.is_some_and(|f| f != listener_family) {
            return Err(TurnError::AddressFamilyNotSupported);
        }
        if self.by_client.len() >= MAX_ALLOCATIONS {
            return Err(TurnError::InsufficientCapacity);
        }
        let lifetime = granted_lifetime(msg)?;

        let req = RelayRequest {
            family: listener_family,
            port: match (token, even_port) {
                (Some(token), _) => PortRequest::Reserved(token),
                (None, Some(reserve_next)) => PortRequest::Even { reserve_next },
                (None, None) => PortRequest::Any,
            },
            dont_fragment: msg.get(DONT_FRAGMENT).is_some(),
            range: listener.relay_ports,
            tcp,
        };
        let opened = relays
            .open(req)
            .map_err(|_| TurnError::InsufficientCapacity)?;
        let (relay, port, reservation_token) = (opened.relay, opened.port, opened.token);
        let relayed = SocketAddr::new(listener.relay_ip, port);

        let mut w = MessageWriter::new(out, Method::Allocate, Class::Success, msg.transaction_id())
            .map_err(|_| TurnError::ServerError)?;
        let written = (|| -> Result<(), StunError> {
            w.add_xor_addr(XOR_RELAYED_ADDRESS, relayed)?;
            w.add_u32(LIFETIME, lifetime.as_secs() as u32)?;
            w.add_xor_addr(XOR_MAPPED_ADDRESS, ctx.client)?;
            if let Some(t) = reservation_token {
                w.add(RESERVATION_TOKEN, &t.to_be_bytes())?;
            }
            Ok(())
        })();
        let sealed = written
            .map_err(|_| TurnError::ServerError)
            .and_then(|()| seal(w, auth, msg));
        let Ok(len) = sealed else {
            relays.close(relay);
            return Err(TurnError::ServerError);
        };
        let mut allocation = Allocation {
            id: session::next_id(),
            five,
            transport: logs::transport_name(listener.protocol),
            server: SocketAddr::new(listener.relay_ip, listener.port),
            created: now.mono,
            created_unix: now.unix,
            traffic: Traffic::default(),
            listener: listener.name.clone(),
            listener_at: (snap.generation, ctx.listener),
            user: auth.user().clone(),
            relay,
            relayed,
            expires: now.mono + lifetime,
            alloc_tid: *msg.transaction_id(),
            alloc_response: out[..len].to_vec(),
            serial: 0,
            scheduled: now.mono + lifetime,
            perms: Vec::new(),
            channels: Vec::new(),
            tcp,
            held: auth.held_credential(msg),
            quota: None,
            budget: ByteBucket::full(self.send_rate, now.mono),
        };
        // The quota: `admin.user_quota` per user when set, else the shell's default cap per
        // TURN REST credential (static users unlimited).
        let quota = match (&allocation.held, snap.user_quota) {
            (_, q) if q > 0 => Some((allocation.user.clone(), Quota::Configured(q))),
            (Some(h), _) => Some((Arc::from(h.username()), Quota::Ephemeral)),
            (None, _) => None,
        };
        if let Some((key, q)) = &quota {
            if !relays.reserve_quota(key, *q) {
                relays.close(allocation.relay);
                return Err(TurnError::AllocationQuotaReached);
            }
        }
        allocation.quota = quota.map(|(k, _)| k);
        tracing::info!(
            target: "turn",
            "session {} created: user {}, client {} {} -> {} (listener {}), relayed {} ({}), lifetime {}s",
            allocation.id,
            Shown(&allocation.user),
            allocation.transport,
            allocation.five.client,
            allocation.server,
            allocation.listener,
            allocation.relayed,
            if tcp { "tcp" } else { "udp" },
            lifetime.as_secs()
        );
        self.insert(allocation);
        self.stats.allocations_created += 1;
        Ok(len)
    }

    pub(super) fn refresh(
        &mut self,
        now: Now,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
        relays: &mut dyn Relays,
    ) -> Result<usize, TurnError> {
        let id = self.owned(ctx, auth)?;
        let lifetime = match msg.get(LIFETIME).map(attr::decode_u32) {
            Some(Ok(0)) => Duration::ZERO,
            Some(Err(_)) => return Err(TurnError::BadRequest),
            _ => granted_lifetime(msg)?,
        };
        if let Some(fam) = requested_family(msg)? {
            let a = self.alloc(id).ok_or(TurnError::ServerError)?;
            if Family::of(a.relayed.ip()) != fam {
                return Err(TurnError::PeerAddressFamilyMismatch);
            }
        }
        if lifetime.is_zero() {
            self.delete(id, DeleteReason::Refreshed0, now.mono, relays);
        } else if let Some(a) = self.alloc_mut(id) {
            a.expires = now.mono + lifetime;
        }
        let mut w = MessageWriter::new(out, Method::Refresh, Class::Success, msg.transaction_id())
            .map_err(|_| TurnError::ServerError)?;
        w.add_u32(LIFETIME, lifetime.as_secs() as u32)
            .map_err(|_| TurnError::ServerError)?;
        seal(w, auth, msg)
    }

    pub(super) fn create_permission(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> Result<usize, TurnError> {
        let id = self.owned(ctx, auth)?;
        let a = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(TurnError::ServerError)?;
        // Check every peer first: the request installs all of them or none.
        let mut peers = [IpAddr::from([0u8; 4]); 16];
        let mut n = 0;
        for at in msg.attrs().filter(|at| at.typ == XOR_PEER_ADDRESS) {
            let peer = attr::decode_xor_addr(at.value, msg.transaction_id())
                .map_err(|_| TurnError::BadRequest)?;
            let peer = policy::canonical(peer);
            if Family::of(peer.ip()) != Family::of(a.relayed.ip()) {
                return Err(TurnError::PeerAddressFamilyMismatch);
            }
            // A permission is for an IP; admission of the port happens per packet.
            if let Err(why) = admits_ip(a, snap, peer.ip()) {
                refused(a, peer.ip(), why, now.unix);
                return Err(TurnError::Forbidden);
            }
            if n == peers.len() {
                return Err(TurnError::BadRequest);
            }
            peers[n] = peer.ip();
            n += 1;
        }
        if n == 0 {
            return Err(TurnError::BadRequest);
        }
        for ip in &peers[..n] {
            a.install_permission(*ip, now.mono)?;
        }
        let w = MessageWriter::new(
            out,
            Method::CreatePermission,
            Class::Success,
            msg.transaction_id(),
        )
        .map_err(|_| TurnError::ServerError)?;
        seal(w, auth, msg)
    }

    pub(super) fn channel_bind(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        auth: &Authenticated,
        out: &mut [u8],
    ) -> Result<usize, TurnError> {
        let id = self.owned(ctx, auth)?;
        let number = msg
            .get(CHANNEL_NUMBER)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| attr::decode_channel_number(v).map_err(|_| TurnError::BadRequest))?;
        // RFC 8656 narrowed channels to 0x4000-0x4FFF, but RFC 5766 clients, coturn's
        // turnutils_uclient among them, pick numbers up to 0x7FFF: accept the old range,
        // which ChannelData framing still distinguishes from STUN.
        if !CHANNEL_RANGE.contains(&number) {
            tracing::debug!(target: "turn", "channel number {number:#x} out of range");
            return Err(TurnError::BadRequest);
        }
        let peer = msg
            .get(XOR_PEER_ADDRESS)
            .ok_or(TurnError::BadRequest)
            .and_then(|v| {
                attr::decode_xor_addr(v, msg.transaction_id()).map_err(|_| TurnError::BadRequest)
            })?;
        let peer = policy::canonical(peer);
        let a = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(TurnError::ServerError)?;
        if a.tcp {
            return Err(TurnError::BadRequest);
        }
        if Family::of(peer.ip()) != Family::of(a.relayed.ip()) {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        let cluster = admit_for(a, snap, peer).map_err(|why| {
            refused(a, peer, why, now.unix);
            TurnError::Forbidden
        })?;
        let expires = now.mono + CHANNEL_LIFETIME;
        let by_number = a.channels.iter().position(|c| c.number == number);
        let by_peer = a.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(i), Some(j)) if i == j => {
                a.channels[i].expires = expires;
                a.channels[i].admitted_gen = snap.generation;
                a.channels[i].cluster = cluster;
            }
            (None, None) => {
                if a.channels.len() >= MAX_CHANNELS {
                    return Err(TurnError::InsufficientCapacity);
                }
                a.channels.push(Channel {
                    number,
                    peer,
                    expires,
                    admitted_gen: snap.generation,
                    cluster,
                    offload: None,
                });
            }
            // The number is bound to another peer, or the peer to another number.
            _ => return Err(TurnError::BadRequest),
        }
        a.install_permission(peer.ip(), now.mono)?;
        let w = MessageWriter::new(
            out,
            Method::ChannelBind,
            Class::Success,
            msg.transaction_id(),
        )
        .map_err(|_| TurnError::ServerError)?;
        seal(w, auth, msg)
    }

    /// The allocation of this 5-tuple, checked to belong to the authenticated user.
    pub(super) fn owned(&self, ctx: ClientCtx, auth: &Authenticated) -> Result<u32, TurnError> {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let id = *self
            .by_client
            .get(&five)
            .ok_or(TurnError::AllocationMismatch)?;
        let a = self.alloc(id).ok_or(TurnError::AllocationMismatch)?;
        if a.user != *auth.user() {
            return Err(TurnError::WrongCredentials);
        }
        Ok(id)
    }

    /// Turn a request's result into the reply: success responses are already complete in
    /// `out`; errors are written now.
    pub(super) fn finish_request<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        res: Result<Done, (Answer, Option<Authenticated>)>,
        out: &mut [u8],
    ) -> ClientOutput<'a> {
        let (answer, auth) = match res {
            Ok(Done::Reply(len)) => return ClientOutput::Reply(len),
            Ok(Done::Unverified(len)) => return ClientOutput::Unverified(len),
            Ok(Done::Pending) => return ClientOutput::Pending,
            Ok(Done::Bind(len, conn)) => return ClientOutput::Bind { len, conn },
            Err(e) => e,
        };
        self.stats.error_responses += 1;
        tracing::debug!(
            target: "turn",
            "{:?} request from {}: {}",
            msg.method(),
            ctx.client,
            match answer {
                Answer::Error(e) | Answer::Challenge { error: e, .. } => e.code(),
                Answer::Unknown(..) => TurnError::UnknownAttribute.code(),
            }
        );
        // Only an authenticated request, or one with a valid nonce, comes from a source that
        // has shown it receives what we send (the nonce is bound to its address).
        let proven = auth.is_some() || matches!(answer, Answer::Challenge { proven: true, .. });
        match self.write_error(now, snap, ctx, msg, answer, auth.as_ref(), out) {
            Ok(len) if proven => ClientOutput::Reply(len),
            Ok(len) => ClientOutput::Unverified(len),
            Err(_) => ClientOutput::Drop(DropReason::TooBig),
        }
    }

    pub(super) fn write_error(
        &self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: &Message<'_>,
        answer: Answer,
        auth: Option<&Authenticated>,
        out: &mut [u8],
    ) -> Result<usize, StunError> {
        let mut w = MessageWriter::new(out, msg.method(), Class::Error, msg.transaction_id())?;
        match answer {
            Answer::Error(e) => w.add_error_code(e.code())?,
            Answer::Challenge { error: e, .. } => {
                w.add_error_code(e.code())?;
                w.add(REALM, snap.realm.as_bytes())?;
                w.add(NONCE, &self.nonces.make(now.unix, ctx.client))?;
            }
            Answer::Unknown(types, n) => {
                w.add_error_code(TurnError::UnknownAttribute.code())?;
                w.add_unknown_attributes(&types[..n])?;
            }
        }
        if let Some(auth) = auth {
            w.add_integrity(auth.key())?;
        }
        if msg.has_fingerprint() {
            w.add_fingerprint()?;
        }
        Ok(w.finish())
    }
}

/// Log a failed authentication (rate-limited, see [`logs`]): the user and realm the
/// client sent, its address and transport, and why. Never the password or key.
pub(super) fn auth_failed(
    now: Now,
    snap: &Snapshot,
    ctx: ClientCtx,
    msg: &Message<'_>,
    why: auth::Rejection,
) {
    let Some(n) = logs::AUTH_FAILURES.admit(now.unix) else {
        return;
    };
    let text = |typ| {
        msg.get(typ)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let transport = snap
        .listeners
        .get(ctx.listener)
        .map_or("?", |l| logs::transport_name(l.protocol));
    tracing::info!(
        target: "auth",
        "authentication failed: user {}, realm {}, client {transport} {}: {}{}",
        Shown(&text(USERNAME)),
        Shown(&text(REALM)),
        ctx.client,
        why.as_str(),
        Suppressed(n)
    );
}

/// Add MESSAGE-INTEGRITY, and FINGERPRINT when the request had one, and finish.
pub(super) fn seal(
    mut w: MessageWriter<'_>,
    auth: &Authenticated,
    msg: &Message<'_>,
) -> Result<usize, TurnError> {
    w.add_integrity(auth.key())
        .map_err(|_| TurnError::ServerError)?;
    if msg.has_fingerprint() {
        w.add_fingerprint().map_err(|_| TurnError::ServerError)?;
    }
    Ok(w.finish())
}

/// REQUESTED-ADDRESS-FAMILY, if present: 440 for an unknown family, 400 if malformed.
pub(super) fn requested_family(msg: &Message<'_>) -> Result<Option<Family>, TurnError> {
    msg.get(REQUESTED_ADDRESS_FAMILY)
        .map(|v| match attr::decode_family(v) {
            Ok(attr::FAMILY_IPV4) => Ok(Family::V4),
            Ok(attr::FAMILY_IPV6) => Ok(Family::V6),
            Ok(_) => Err(TurnError::AddressFamilyNotSupported),
            Err(_) => Err(TurnError::BadRequest),
        })
        .transpose()
}

/// Lifetime for Allocate and Refresh: the request's LIFETIME clamped to
/// [DEFAULT_LIFETIME, MAX_LIFETIME] (RFC 8656 section 7.2).
pub(super) fn granted_lifetime(msg: &Message<'_>) -> Result<Duration, TurnError> {
    match msg.get(LIFETIME).map(attr::decode_u32) {
        None => Ok(DEFAULT_LIFETIME),
        Some(Err(_)) => Err(TurnError::BadRequest),
        Some(Ok(secs)) => {
            Ok(Duration::from_secs(u64::from(secs)).clamp(DEFAULT_LIFETIME, MAX_LIFETIME))
        }
    }
}
