//! Random message sequences from several clients and peers through one TURN core, with
//! time moving forward: no panic, and every relay the core opened is closed once all
//! allocations expire.
#![no_main]

use std::collections::BTreeSet;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use stunnerd::snapshot::Snapshot;
use stunnerd::turn::auth::NonceKey;
use stunnerd::turn::{
    ClientCtx, HEADROOM, Now, Opened, RelayError, RelayId, RelayRequest, Relays, Server,
    TransportId,
};

#[derive(Default)]
struct Fake {
    next: u32,
    open: BTreeSet<u32>,
}

impl Relays for Fake {
    fn open(&mut self, _req: RelayRequest) -> Result<Opened, RelayError> {
        self.next += 1;
        self.open.insert(self.next);
        Ok(Opened { relay: RelayId(self.next), port: 40000 + (self.next % 20000) as u16, token: None })
    }
    fn close(&mut self, relay: RelayId) {
        assert!(self.open.remove(&relay.0));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = stunnerd::config::from_turn_uri("turn://user:pass@127.0.0.1:3478") else {
        return;
    };
    let Ok(snap) = Snapshot::build(cfg, 1) else { return };
    let mut server = Server::new(NonceKey::from_bytes([1; 32]));
    let mut relays = Fake::default();
    let mut now = stunnerd::transport::now();
    let mut out = vec![0u8; 2048];
    let mut scratch = vec![0u8; 4200];
    // Each record: 1 byte selector, 1 byte length, then that many bytes.
    let mut rest = data;
    while let [sel, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (msg, next) = tail.split_at(n);
        rest = next;
        let client = format!("192.0.2.{}:{}", sel % 4, 1000 + u16::from(sel % 3)).parse().unwrap();
        match sel >> 6 {
            0 | 1 => {
                let ctx = ClientCtx { transport: TransportId(0), listener: 0, client, stream: false };
                let _ = server.handle_client(now, &snap, ctx, msg, &mut out, &mut relays);
            }
            2 => {
                let mut buf = vec![0u8; HEADROOM + msg.len()];
                buf[HEADROOM..].copy_from_slice(msg);
                let peer = format!("8.8.8.{}:{}", sel % 4, 3478).parse().unwrap();
                let _ = server.handle_peer(now, &snap, RelayId(u32::from(sel % 8)), peer, &mut buf, msg.len(), &mut scratch);
            }
            _ => {
                now = now.advance(Duration::from_secs(u64::from(*len) * 4));
                server.handle_timeout(now, &mut relays);
            }
        }
    }
    now = now.advance(Duration::from_secs(4000));
    server.handle_timeout(now, &mut relays);
    assert_eq!(server.allocation_count(), 0);
    assert!(relays.open.is_empty());
});
