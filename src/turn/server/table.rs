//! The allocation table: lookups, insertion, deletion, and what an allocation answers
//! about its permissions and deadlines.

use super::*;

impl Server {
    pub(super) fn alloc(&self, id: u32) -> Option<&Allocation> {
        self.allocs.get(id as usize).and_then(Option::as_ref)
    }

    pub(super) fn alloc_mut(&mut self, id: u32) -> Option<&mut Allocation> {
        self.allocs.get_mut(id as usize).and_then(Option::as_mut)
    }

    pub(super) fn insert(&mut self, mut a: Allocation) {
        let five = a.five;
        let relay = a.relay;
        a.serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        let (serial, scheduled) = (a.serial, a.next_deadline());
        a.scheduled = scheduled;
        let id = match self.free.pop() {
            Some(id) => {
                self.allocs[id as usize] = Some(a);
                id
            }
            None => {
                self.allocs.push(Some(a));
                (self.allocs.len() - 1) as u32
            }
        };
        self.by_client.insert(five, id);
        self.by_relay.insert(relay, id);
        self.deadlines.push(scheduled, id, serial);
    }

    pub(super) fn delete(
        &mut self,
        id: u32,
        reason: DeleteReason,
        now: Instant,
        relays: &mut dyn Relays,
    ) {
        let Some(mut a) = self.allocs.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.offload_release(&mut a, relays);
        let t = &a.traffic;
        tracing::info!(
            target: "turn",
            "session {} deleted: user {}, client {} {} -> {}, relayed {}, duration {:.1}s, \
             to peers {} packets {} bytes, to client {} packets {} bytes, reason: {}",
            a.id,
            Shown(&a.user),
            a.transport,
            a.five.client,
            a.server,
            a.relayed,
            now.saturating_duration_since(a.created).as_secs_f64(),
            t.to_peer_packets,
            t.to_peer_bytes,
            t.to_client_packets,
            t.to_client_bytes,
            reason.as_str()
        );
        self.free.push(id);
        self.by_client.remove(&a.five);
        self.by_relay.remove(&a.relay);
        if let Some(key) = &a.quota {
            relays.release_quota(key);
        }
        self.close_peer_conns_of(id, relays);
        relays.close(a.relay);
        self.stats.allocations_deleted += 1;
    }
}

impl Allocation {
    /// When this allocation next needs the timer: its expiry, or an earlier expiry of one
    /// of its permissions or channels.
    pub(super) fn next_deadline(&self) -> Instant {
        let perms = self.perms.iter().map(|p| p.expires);
        let channels = self.channels.iter().map(|c| c.expires);
        perms
            .chain(channels)
            .fold(self.expires, |earliest, t| earliest.min(t))
    }

    /// Whether a live permission (or channel, which implies one) covers `peer`'s IP.
    pub(super) fn permits(&self, peer: SocketAddr, now: Instant) -> bool {
        let ip = peer.ip();
        self.perms.iter().any(|p| p.ip == ip && p.expires > now)
            || self
                .channels
                .iter()
                .any(|c| c.peer.ip() == ip && c.expires > now)
    }

    pub(super) fn install_permission(&mut self, ip: IpAddr, now: Instant) -> Result<(), TurnError> {
        let expires = now + PERMISSION_LIFETIME;
        if let Some(p) = self.perms.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            return Ok(());
        }
        self.perms.retain(|p| p.expires > now);
        if self.perms.len() >= MAX_PERMISSIONS {
            return Err(TurnError::InsufficientCapacity);
        }
        self.perms.push(Permission { ip, expires });
        Ok(())
    }
}
