//! No single client, user or address takes the daemon down: file descriptors, connections
//! and allocations are drawn from budgets shared by all workers.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit, and a reserve is set
//! aside for what must keep working when clients have taken everything else: the admin
//! servers (`/live`, `/ready`, `/metrics`, `/sessions`), the config source (CDS, file
//! watch) and listeners a new config adds. What is left is split in two pools so that a
//! flood of one kind cannot starve the other:
//!
//! * **allocations**: relay sockets, RFC 6062 peer connections, and client connections
//!   that hold an allocation. When it is spent, Allocate gets 508.
//! * **unauthenticated connections**: TCP and TLS client connections that do not hold an
//!   allocation yet, a quarter of the budget, and at most [`Budgets::per_ip`] from one
//!   source address. At the total bound the accepting worker closes its oldest idle
//!   unauthenticated connection to make room; at the per-address bound the new connection
//!   is closed at once. The per-address default is generous, since many clients may share
//!   one address behind a NAT or a load balancer that rewrites source addresses.
//!
//! Allocations per user are counted here too, across workers, for `admin.user_quota` and
//! the default cap on a TURN REST credential.
//!
//! Nothing here is on the packet path: a worker touches the budgets when it opens or closes
//! a socket or an allocation.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;

use crate::turn::Quota;

/// Descriptors kept out of the budgets, at least: the admin servers' connections, the
/// config source, new listeners' sockets, the workers' own polls and rings.
pub const MIN_RESERVE: usize = 64;
/// Default bound on unauthenticated connections from one source address.
pub const DEFAULT_PER_IP: usize = 1024;
/// Default allocations per TURN REST credential when `admin.user_quota` is unset (static
/// users stay unlimited; eturnal's default is 10).
pub const DEFAULT_EPHEMERAL_QUOTA: u32 = 10;

/// The budgets of the whole daemon.
#[derive(Debug)]
pub struct Budgets {
    alloc_limit: usize,
    alloc_used: AtomicUsize,
    unauth_limit: usize,
    unauth_used: AtomicUsize,
    per_ip: usize,
    unauth_by_ip: Mutex<FxHashMap<IpAddr, usize>>,
    ephemeral_quota: u32,
    users: Mutex<FxHashMap<Arc<str>, u32>>,
}

/// Why an unauthenticated connection could not be admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The unauthenticated pool is spent: evict one and retry.
    Full,
    /// Its source address holds its share.
    PerAddress,
}

impl Budgets {
    /// Budgets for a process allowed `nofile` descriptors.
    pub fn new(nofile: usize, per_ip: usize, ephemeral_quota: u32) -> Arc<Budgets> {
        let reserve = MIN_RESERVE.max(nofile / 10);
        let usable = nofile.saturating_sub(reserve).max(8);
        let unauth_limit = usable / 4;
        Arc::new(Budgets {
            alloc_limit: usable - unauth_limit,
            alloc_used: AtomicUsize::new(0),
            unauth_limit,
            unauth_used: AtomicUsize::new(0),
            per_ip: per_ip.max(1),
            unauth_by_ip: Mutex::default(),
            ephemeral_quota,
            users: Mutex::default(),
        })
    }

    /// Budgets that never refuse (tests and benchmarks of the data path).
    pub fn unlimited() -> Arc<Budgets> {
        Budgets::new(usize::MAX / 2, usize::MAX, 0)
    }

    /// Take one descriptor from the allocation pool.
    pub fn take_alloc_fd(&self) -> bool {
        take(&self.alloc_used, self.alloc_limit)
    }

    pub fn give_alloc_fd(&self) {
        give(&self.alloc_used);
    }

    /// Admit an unauthenticated connection from `ip`.
    pub fn take_unauth(&self, ip: IpAddr) -> Result<(), Refusal> {
        let mut by_ip = self
            .unauth_by_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = by_ip.get(&ip).copied().unwrap_or(0);
        if n >= self.per_ip {
            return Err(Refusal::PerAddress);
        }
        if !take(&self.unauth_used, self.unauth_limit) {
            return Err(Refusal::Full);
        }
        by_ip.insert(ip, n + 1);
        Ok(())
    }

    /// An unauthenticated connection from `ip` closed or got an allocation.
    pub fn give_unauth(&self, ip: IpAddr) {
        let mut by_ip = self
            .unauth_by_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&ip);
            }
            give(&self.unauth_used);
        }
    }

    /// Count one more allocation against `key`, if its quota allows (`user_quota` per user,
    /// or the default cap per TURN REST credential; 0: none).
    pub fn take_quota(&self, key: &Arc<str>, quota: Quota) -> bool {
        let cap = match quota {
            Quota::Configured(q) => q,
            Quota::Ephemeral => self.ephemeral_quota,
        };
        let user = key;
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let n = users.entry(user.clone()).or_insert(0);
        if cap > 0 && *n >= cap {
            if *n == 0 {
                users.remove(user);
            }
            return false;
        }
        *n += 1;
        true
    }

    pub fn give_quota(&self, user: &Arc<str>) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = users.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(user);
            }
        }
    }

    /// (allocation pool limit, unauthenticated pool limit, per-address bound), for logs.
    pub fn limits(&self) -> (usize, usize, usize) {
        (self.alloc_limit, self.unauth_limit, self.per_ip)
    }
}

fn take(used: &AtomicUsize, limit: usize) -> bool {
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < limit).then_some(n + 1)
    })
    .is_ok()
}

fn give(used: &AtomicUsize) {
    let _ = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_per_address_bound_and_user_quotas() {
        let b = Budgets::new(1064, 3, 2);
        // 1064 - 106 reserved = 958: 239 unauthenticated, 719 for allocations.
        assert_eq!(b.limits(), (719, 239, 3));
        for _ in 0..719 {
            assert!(b.take_alloc_fd());
        }
        assert!(!b.take_alloc_fd());
        b.give_alloc_fd();
        assert!(b.take_alloc_fd());

        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(b.take_unauth(a), Ok(()));
        }
        assert_eq!(b.take_unauth(a), Err(Refusal::PerAddress));
        b.give_unauth(a);
        assert_eq!(b.take_unauth(a), Ok(()));
        for i in 0..236u32 {
            assert_eq!(b.take_unauth(IpAddr::V4((0x0a00_0000 + i).into())), Ok(()));
        }
        assert_eq!(
            b.take_unauth("198.51.100.1".parse().unwrap()),
            Err(Refusal::Full)
        );
        // Giving back for an address that holds nothing changes nothing.
        b.give_unauth("198.51.100.9".parse().unwrap());
        assert_eq!(
            b.take_unauth("198.51.100.1".parse().unwrap()),
            Err(Refusal::Full)
        );

        let rest: Arc<str> = "1800000000:alice".into();
        let stat: Arc<str> = "user".into();
        assert!(b.take_quota(&rest, Quota::Ephemeral) && b.take_quota(&rest, Quota::Ephemeral));
        assert!(
            !b.take_quota(&rest, Quota::Ephemeral),
            "the default REST cap"
        );
        for _ in 0..100 {
            assert!(b.take_quota(&stat, Quota::Configured(0)), "0: no cap");
        }
        assert!(
            !b.take_quota(&stat, Quota::Configured(100)),
            "user_quota caps"
        );
        b.give_quota(&rest);
        assert!(b.take_quota(&rest, Quota::Ephemeral));
        assert!(
            b.take_quota(&rest, Quota::Configured(5)),
            "user_quota overrides the default"
        );
    }
}
