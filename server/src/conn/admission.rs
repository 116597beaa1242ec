//! Connections that have not authenticated yet: how many one address and everyone together
//! may hold, and which one goes when there are too many.
//!
//! A connection is unauthenticated from `accept` until it presents a client certificate that
//! chains to the federation CA (known once the TLS handshake ends) or a request with a valid
//! bearer token; enrolling clients, health checks and the dashboard's static files stay
//! unauthenticated for as long as they are connected. None of them takes one of the
//! `max_connections` slots that enrolled clients and admins are served from: they are held
//! here instead, and here is bounded twice.
//!
//! - **Per address** (`max_unauthenticated_per_ip`): one more connection from an address that
//!   already holds its share is closed at once, before its handshake. One host (or one NAT)
//!   needs a few unauthenticated connections at a time (a browser opens 6; enrolled clients
//!   leave this pool within their handshake), so a host that wants more is attacking.
//! - **In total** (`max_unauthenticated_connections`): a newcomer is always let in, and when
//!   that overfills the pool the oldest connection of the address holding the most is closed.
//!   Refusing newcomers instead would let a few hundred silent connections lock every admin
//!   out; evicting the oldest overall would let an attacker that reconnects as fast as it is
//!   evicted push out an admin's connection in the milliseconds before it authenticates. Taking
//!   from the heaviest address means an address with one connection in the pool (the admin's,
//!   the enrolling client's) is only ever evicted by an attacker spread over more addresses
//!   than the pool has room for.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The pool of unauthenticated connections and its two bounds.
#[derive(Debug)]
pub(crate) struct Admission {
    per_ip: usize,
    total: usize,
    registry: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    next: u64,
    held: usize,
    /// Each address's connections, oldest first (by admission order).
    by_ip: HashMap<IpAddr, BTreeMap<u64, Arc<Eviction>>>,
}

/// Tells one connection that it has been evicted; it closes itself.
#[derive(Debug, Default)]
pub(crate) struct Eviction {
    evicted: AtomicBool,
    notify: Notify,
}

impl Eviction {
    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        // `notify_one` keeps a permit when nobody waits yet, so the signal is never lost.
        self.notify.notify_one();
    }

    /// Resolves once the connection has been evicted.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

impl Admission {
    /// A pool of at most `total` connections, `per_ip` from any one address (both at least 1).
    pub(crate) fn new(per_ip: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_ip: per_ip.max(1),
            total: total.max(1),
            registry: Mutex::new(Registry::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a new connection from `ip` in, evicting another if the pool overflows; refuses it
    /// if its address already holds its share.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Unauthenticated, Refused> {
        let mut reg = self.lock();
        let mine = reg.by_ip.get(&ip).map_or(0, BTreeMap::len);
        if mine >= self.per_ip {
            return Err(Refused);
        }
        let seq = reg.next;
        reg.next += 1;
        let eviction = Arc::new(Eviction::default());
        reg.by_ip
            .entry(ip)
            .or_default()
            .insert(seq, eviction.clone());
        reg.held += 1;
        while reg.held > self.total {
            let Some(victim) = reg.heaviest() else { break };
            let Some(conns) = reg.by_ip.get_mut(&victim) else {
                break;
            };
            let evicted = conns.pop_first();
            let now_empty = conns.is_empty();
            if now_empty {
                reg.by_ip.remove(&victim);
            }
            if let Some((_, e)) = evicted {
                e.evict();
                reg.held -= 1;
            }
        }
        Ok(Unauthenticated {
            admission: self.clone(),
            ip,
            seq,
            eviction,
        })
    }

    /// Connections held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.lock().held
    }

    fn remove(&self, ip: IpAddr, seq: u64) {
        let mut reg = self.lock();
        if let Some(conns) = reg.by_ip.get_mut(&ip)
            && conns.remove(&seq).is_some()
        {
            if conns.is_empty() {
                reg.by_ip.remove(&ip);
            }
            reg.held -= 1;
        }
    }
}

impl Registry {
    /// The address holding the most connections; among equals, the one whose oldest
    /// connection is oldest.
    fn heaviest(&self) -> Option<IpAddr> {
        self.by_ip
            .iter()
            .filter_map(|(ip, conns)| {
                let oldest = *conns.keys().next()?;
                Some((conns.len(), std::cmp::Reverse(oldest), *ip))
            })
            .max()
            .map(|(_, _, ip)| ip)
    }
}

/// A connection's place in the pool, given back when it authenticates or closes.
#[derive(Debug)]
pub(crate) struct Unauthenticated {
    admission: Arc<Admission>,
    ip: IpAddr,
    seq: u64,
    eviction: Arc<Eviction>,
}

impl Unauthenticated {
    /// What tells this connection that it has been evicted.
    pub(crate) fn eviction(&self) -> Arc<Eviction> {
        self.eviction.clone()
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        // A no-op after an eviction: the evicting admission removed the entry already.
        self.admission.remove(self.ip, self.seq);
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
