//! The session list and the kill switch of one worker's core (see [`crate::turn::session`]).

use std::time::Instant;

use super::Server;
use crate::turn::session::{ChannelInfo, DeleteReason, PeerInfo, Selector, SessionInfo};
use crate::turn::{Now, Relays};

impl Server {
    /// Every live allocation of this worker, by session id.
    pub fn sessions(&self, now: Now) -> Vec<SessionInfo> {
        let secs = |t: Instant| t.saturating_duration_since(now.mono).as_secs();
        let mut out: Vec<SessionInfo> = self
            .allocs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i as u32, a)))
            .filter(|(_, a)| a.expires > now.mono)
            .map(|(i, a)| SessionInfo {
                id: a.id,
                user: a.user.to_string(),
                listener: a.listener.to_string(),
                transport: a.transport,
                client: a.five.client,
                server: a.server,
                relayed: a.relayed,
                relay_transport: if a.tcp { "tcp" } else { "udp" },
                peers: a
                    .perms
                    .iter()
                    .filter(|p| p.expires > now.mono)
                    .map(|p| PeerInfo {
                        ip: p.ip,
                        expires_in: secs(p.expires),
                    })
                    .collect(),
                channels: a
                    .channels
                    .iter()
                    .filter(|c| c.expires > now.mono)
                    .map(|c| ChannelInfo {
                        number: c.number,
                        peer: c.peer,
                        expires_in: secs(c.expires),
                    })
                    .collect(),
                connections: self.connections_of(i),
                traffic: a.traffic,
                created: a.created_unix,
                age: now.mono.saturating_duration_since(a.created).as_secs(),
                expires_in: secs(a.expires),
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// End the allocations `selector` names: each is deleted as if it expired (its relay
    /// is freed, its peer connections closed), so the client's next request on it gets
    /// 437 Allocation Mismatch. Returns the session ids ended.
    pub fn kill(&mut self, now: Now, selector: &Selector, relays: &mut dyn Relays) -> Vec<u64> {
        let victims: Vec<(u32, u64)> = self
            .allocs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i as u32, a)))
            .filter(|(_, a)| match selector {
                Selector::Id(id) => a.id == *id,
                Selector::User(user) => *a.user == **user,
            })
            .map(|(i, a)| (i, a.id))
            .collect();
        for &(i, _) in &victims {
            self.delete(i, DeleteReason::Killed, now.mono, relays);
        }
        victims.into_iter().map(|(_, id)| id).collect()
    }

    /// Delete every allocation (the worker is stopping); returns how many there were.
    pub fn close_all(&mut self, reason: DeleteReason, now: Now, relays: &mut dyn Relays) -> usize {
        let ids: Vec<u32> = self
            .allocs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|_| i as u32))
            .collect();
        for &i in &ids {
            self.delete(i, reason, now.mono, relays);
        }
        ids.len()
    }
}
