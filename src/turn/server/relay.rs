//! The data path: ChannelData and Send indications from clients, datagrams from peers,
//! and the peer admission both directions share.

use super::*;

impl Server {
    /// The fast path: ChannelData from a client goes to its bound peer.
    pub(super) fn channel_data_from_client<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        bytes: &'a [u8],
    ) -> ClientOutput<'a> {
        let Ok(cd) = ChannelData::parse(bytes) else {
            return ClientOutput::Drop(DropReason::Malformed);
        };
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let Some(&id) = self.by_client.get(&five) else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        let Some(Some(a)) = self.allocs.get_mut(id as usize) else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        if a.expires <= now.mono {
            return ClientOutput::Drop(DropReason::NoAllocation);
        }
        let relay = a.relay;
        let Some(i) = a
            .channels
            .iter()
            .position(|c| c.number == cd.number && c.expires > now.mono)
        else {
            return ClientOutput::Drop(DropReason::NoPermission);
        };
        if a.channels[i].admitted_gen != snap.generation {
            // The config changed since this channel was admitted: ask the policy again.
            let peer = a.channels[i].peer;
            let cluster = match admit_for(a, snap, peer) {
                Ok(c) => c,
                Err(why) => return ClientOutput::Drop(refused(a, peer, why, now.unix)),
            };
            a.channels[i].admitted_gen = snap.generation;
            a.channels[i].cluster = cluster;
        }
        let (peer, cluster) = (a.channels[i].peer, a.channels[i].cluster);
        if !a.budget.take(self.send_rate, cd.data.len(), now.mono) {
            return ClientOutput::Drop(DropReason::RateLimited);
        }
        a.traffic.to_peer_packets += 1;
        a.traffic.to_peer_bytes += cd.data.len() as u64;
        self.clusters.count(snap, cluster, true, cd.data.len());
        ClientOutput::Forward {
            relay,
            peer,
            payload: cd.data,
        }
    }

    pub(super) fn send_indication<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        ctx: ClientCtx,
        msg: Message<'a>,
    ) -> ClientOutput<'a> {
        let five = FiveTuple {
            transport: ctx.transport,
            client: ctx.client,
        };
        let Some(id) = self.by_client.get(&five).copied() else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        let (Some(peer), Some(data)) = (msg.get(XOR_PEER_ADDRESS), msg.get(DATA)) else {
            return ClientOutput::Drop(DropReason::Malformed);
        };
        let Ok(peer) = attr::decode_xor_addr(peer, msg.transaction_id()) else {
            return ClientOutput::Drop(DropReason::Malformed);
        };
        let peer = policy::canonical(peer);
        let Some(Some(a)) = self.allocs.get_mut(id as usize) else {
            return ClientOutput::Drop(DropReason::NoAllocation);
        };
        if a.expires <= now.mono {
            return ClientOutput::Drop(DropReason::NoAllocation);
        }
        // A TCP allocation relays over peer connections only (RFC 6062).
        if a.tcp || !a.permits(peer, now.mono) {
            return ClientOutput::Drop(DropReason::NoPermission);
        }
        let cluster = match admit_for(a, snap, peer) {
            Ok(c) => c,
            Err(why) => return ClientOutput::Drop(refused(a, peer, why, now.unix)),
        };
        let relay = a.relay;
        if !a.budget.take(self.send_rate, data.len(), now.mono) {
            return ClientOutput::Drop(DropReason::RateLimited);
        }
        a.traffic.to_peer_packets += 1;
        a.traffic.to_peer_bytes += data.len() as u64;
        self.clusters.count(snap, cluster, true, data.len());
        ClientOutput::Forward {
            relay,
            peer,
            payload: data,
        }
    }

    pub(super) fn peer_to_client<'a>(
        &mut self,
        now: Now,
        snap: &Snapshot,
        relay: RelayId,
        peer: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
        scratch: &'a mut [u8],
    ) -> Result<ToClient<'a>, DropReason> {
        let id = *self.by_relay.get(&relay).ok_or(DropReason::NoAllocation)?;
        let seq = self.indication_seq;
        let a = self
            .allocs
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(DropReason::NoAllocation)?;
        if a.expires <= now.mono {
            return Err(DropReason::NoAllocation);
        }
        let peer = policy::canonical(peer);
        let five = a.five;
        if let Some(ch) = a
            .channels
            .iter_mut()
            .find(|c| c.peer == peer && c.expires > now.mono)
        {
            if ch.admitted_gen != snap.generation {
                let admitted = snap
                    .listener(&a.listener)
                    .and_then(|(_, l)| policy::admit(snap, l, peer).ok());
                let Some(cluster) = admitted else {
                    return Err(DropReason::Forbidden);
                };
                ch.admitted_gen = snap.generation;
                ch.cluster = cluster;
            }
            let (number, cluster) = (ch.number, ch.cluster);
            a.traffic.to_client_packets += 1;
            a.traffic.to_client_bytes += len as u64;
            self.clusters.count(snap, cluster, false, len);
            let data_len = u16::try_from(len).map_err(|_| DropReason::TooBig)?;
            let frame = buf.get_mut(..HEADROOM + len).ok_or(DropReason::TooBig)?;
            let (head, _) = frame
                .split_first_chunk_mut::<CHANNEL_HEADER_LEN>()
                .ok_or(DropReason::TooBig)?;
            write_channel_header(head, number, data_len);
            return Ok(ToClient {
                transport: five.transport,
                client: five.client,
                bytes: frame,
            });
        }
        if a.tcp || !a.permits(peer, now.mono) {
            return Err(DropReason::NoPermission);
        }
        if let Err(why) = admit_for(a, snap, peer) {
            return Err(refused(a, peer, why, now.unix));
        }
        let payload = buf
            .get(HEADROOM..HEADROOM + len)
            .ok_or(DropReason::TooBig)?;
        a.traffic.to_client_packets += 1;
        a.traffic.to_client_bytes += len as u64;
        self.indication_seq = seq.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&seq.to_be_bytes());
        tid[8..].copy_from_slice(&id.to_be_bytes());
        let mut w = MessageWriter::new(scratch, Method::Data, Class::Indication, &tid)
            .map_err(|_| DropReason::TooBig)?;
        w.add_xor_addr(XOR_PEER_ADDRESS, peer)
            .map_err(|_| DropReason::TooBig)?;
        w.add(DATA, payload).map_err(|_| DropReason::TooBig)?;
        let n = w.finish();
        Ok(ToClient {
            transport: five.transport,
            client: five.client,
            bytes: &scratch[..n],
        })
    }
}

/// Why a peer was not admitted for an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The allocation's listener is gone from the config (it is about to close).
    NoListener,
    /// The policy refused the peer.
    Policy(policy::Denied),
}

impl Refused {
    pub(super) fn drop_reason(self) -> DropReason {
        match self {
            Refused::NoListener => DropReason::NoListener,
            Refused::Policy(_) => DropReason::Forbidden,
        }
    }
}

/// Peer admission for an allocation: resolve its listener in this snapshot, then ask the
/// one policy function.
pub(super) fn admit_for(
    a: &mut Allocation,
    snap: &Snapshot,
    peer: SocketAddr,
) -> Result<ClusterIdx, Refused> {
    let listener = listener_of(a, snap).ok_or(Refused::NoListener)?;
    policy::admit(snap, listener, peer).map_err(Refused::Policy)
}

/// Whether any port of `ip` could be admitted (permissions are per IP).
pub(super) fn admits_ip(
    a: &mut Allocation,
    snap: &Snapshot,
    ip: IpAddr,
) -> Result<ClusterIdx, Refused> {
    let listener = listener_of(a, snap).ok_or(Refused::NoListener)?;
    policy::admit_ip(snap, listener, ip).map_err(Refused::Policy)
}

/// Log a refused peer (rate-limited, see [`logs`]); returns the drop reason to count.
pub(super) fn refused(
    a: &Allocation,
    peer: impl std::fmt::Display,
    why: Refused,
    unix: u64,
) -> DropReason {
    if let Refused::Policy(rule) = why {
        if let Some(n) = logs::REFUSED_PEERS.admit(unix) {
            tracing::info!(
                target: "turn",
                "peer refused: user {}, client {} {}, peer {peer}: {}{}",
                Shown(&a.user),
                a.transport,
                a.five.client,
                rule.as_str(),
                Suppressed(n)
            );
        }
    }
    why.drop_reason()
}

pub(super) fn listener_of<'s>(
    a: &mut Allocation,
    snap: &'s Snapshot,
) -> Option<&'s crate::snapshot::Listener> {
    let (generation, idx) = a.listener_at;
    if generation == snap.generation {
        return snap.listeners.get(idx);
    }
    let (idx, l) = snap.listener(&a.listener)?;
    a.listener_at = (snap.generation, idx);
    Some(l)
}
