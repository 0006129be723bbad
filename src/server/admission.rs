//! Admission to a listener: who holds which connections, and which connection makes room
//! when a new one cannot otherwise be admitted.
//!
//! Every admitted connection is registered with its client (the peer address, IPv6
//! grouped by /64, since one host holds a /64) and its [`Activity`]. A client holds at
//! most `max_connections_per_client`: its next connection closes one of its own (the
//! oldest that has sent nothing, else its longest idle), or is refused. At
//! `max_connections`, room is made first from a connection that has not sent a request
//! head (oldest first), then from the longest-idle connection of the client holding the
//! most; only when every connection is busy is a newcomer refused (`503`). So one address
//! behaving like many polite keep-alive clients takes at most its share, never the
//! service. A peer in `trusted_proxies` (a balancer) is many clients: it has no
//! per-client limit.
//!
//! The registry is touched when a connection opens or closes and when room must be made,
//! never per request: idleness is read from the connections' own [`Activity`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ipnet::IpNet;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::peer::ClientKey;

/// One open connection in a gauge (the listener's, a worker's), taken back when dropped.
pub(super) struct Open(Gauge);

impl Open {
    pub(super) fn inc(gauge: &Gauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where a new connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    /// Within the limits.
    Free,
    /// A connection was told to close to make room (its permit comes back when it has).
    Made,
    /// Nothing can be closed for it: refuse (or answer `503` from the overflow pool).
    None,
}

struct Conn {
    client: ClientKey,
    activity: Arc<Activity>,
    evict: CancellationToken,
}

#[derive(Default)]
struct Registry {
    next: u64,
    conns: HashMap<u64, Conn>,
    /// Connections that have not sent a request head yet, by id (oldest first).
    waiting: BTreeMap<u64, ()>,
    /// Each client's connection ids.
    clients: HashMap<ClientKey, BTreeSet<u64>>,
    /// Clients by how many connections they hold, most last.
    by_count: BTreeSet<(usize, ClientKey)>,
}

impl Registry {
    fn count(&self, client: ClientKey) -> usize {
        self.clients.get(&client).map_or(0, BTreeSet::len)
    }

    fn set_count(&mut self, client: ClientKey, from: usize, to: usize) {
        self.by_count.remove(&(from, client));
        if to > 0 {
            self.by_count.insert((to, client));
        }
    }

    /// Tells connection `id` to close; it leaves the registry when it has.
    fn evict(&mut self, id: u64) -> bool {
        self.waiting.remove(&id);
        match self.conns.get(&id) {
            Some(c) if !c.evict.is_cancelled() => {
                c.evict.cancel();
                true
            }
            _ => false,
        }
    }

    /// The connection of `client` that is cheapest to close: one that has sent nothing
    /// (oldest first), else the longest idle; never one with a response in progress.
    fn cheapest_of(&self, client: ClientKey, now: Instant) -> Option<u64> {
        let ids = self.clients.get(&client)?;
        let mut idle: Option<(std::time::Duration, u64)> = None;
        for &id in ids {
            let c = &self.conns[&id];
            if c.evict.is_cancelled() {
                continue;
            }
            let s = c.activity.snapshot(now);
            if s.requests == 0 {
                return Some(id);
            }
            if s.active == 0 && s.closing_for.is_none() && idle.is_none_or(|(d, _)| s.idle_for > d)
            {
                idle = Some((s.idle_for, id));
            }
        }
        idle.map(|(_, id)| id)
    }
}

pub(super) struct Admission {
    inner: Mutex<Registry>,
    per_client: usize,
    trusted: Vec<IpNet>,
}

/// A connection's registration, given up when dropped (the connection has ended).
pub(super) struct Admitted {
    admission: Arc<Admission>,
    id: u64,
    /// Cancelled when the listener needs this connection's place.
    pub(super) evicted: CancellationToken,
}

impl Admitted {
    /// The connection has sent its first request head: it is no longer the first to go.
    pub(super) fn started(&self) {
        self.admission.lock().waiting.remove(&self.id);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut r = self.admission.lock();
        r.waiting.remove(&self.id);
        let Some(conn) = r.conns.remove(&self.id) else {
            return;
        };
        let before = r.count(conn.client);
        if let Some(ids) = r.clients.get_mut(&conn.client) {
            ids.remove(&self.id);
            if ids.is_empty() {
                r.clients.remove(&conn.client);
            }
        }
        r.set_count(conn.client, before, before - 1);
    }
}

/// How many of the heaviest clients are searched for an idle connection before a
/// newcomer is refused.
const HEAVIEST: usize = 8;

impl Admission {
    pub(super) fn new(per_client: usize, trusted: Vec<IpNet>) -> Arc<Admission> {
        Arc::new(Admission {
            inner: Mutex::default(),
            per_client,
            trusted,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every critical section leaves the registry whole: poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client a connection from `ip` counts against; `None` for a trusted proxy.
    pub(super) fn client_of(&self, ip: IpAddr) -> Option<ClientKey> {
        let trusted = self.trusted.iter().any(|net| net.contains(&ip));
        (!trusted).then(|| ClientKey::of(ip))
    }

    /// Whether `client` may open one more connection: below its limit, or after one of
    /// its own connections was told to close.
    pub(super) fn client_room(&self, client: Option<ClientKey>, now: Instant) -> Room {
        let Some(client) = client else {
            return Room::Free;
        };
        let mut r = self.lock();
        let live = r.clients.get(&client).map_or(0, |ids| {
            ids.iter()
                .filter(|id| !r.conns[*id].evict.is_cancelled())
                .count()
        });
        if live < self.per_client {
            return Room::Free;
        }
        match r.cheapest_of(client, now) {
            Some(id) if r.evict(id) => Room::Made,
            _ => Room::None,
        }
    }

    /// Makes room at `max_connections`: the oldest connection that has not sent a
    /// request head, else the longest-idle connection of the client holding the most.
    pub(super) fn make_room(&self, now: Instant) -> Room {
        let mut r = self.lock();
        while let Some((id, ())) = r.waiting.pop_first() {
            if r.evict(id) {
                return Room::Made;
            }
        }
        let heaviest: Vec<ClientKey> = r
            .by_count
            .iter()
            .rev()
            .take(HEAVIEST)
            .map(|&(_, c)| c)
            .collect();
        for client in heaviest {
            if let Some(id) = r.cheapest_of(client, now)
                && r.evict(id)
            {
                return Room::Made;
            }
        }
        Room::None
    }

    /// Registers an admitted connection of `client` (a trusted proxy's connections are
    /// counted under its own address, with no limit).
    pub(super) fn admit(
        self: &Arc<Self>,
        client: Option<ClientKey>,
        peer: IpAddr,
        activity: Arc<Activity>,
    ) -> Admitted {
        let client = client.unwrap_or_else(|| ClientKey::of(peer));
        let evicted = CancellationToken::new();
        let mut r = self.lock();
        let id = r.next;
        r.next += 1;
        r.conns.insert(
            id,
            Conn {
                client,
                activity,
                evict: evicted.clone(),
            },
        );
        r.waiting.insert(id, ());
        let before = r.count(client);
        r.clients.entry(client).or_default().insert(id);
        r.set_count(client, before, before + 1);
        Admitted {
            admission: self.clone(),
            id,
            evicted,
        }
    }

    /// Connections registered (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A connection of `ip` that has answered one request and has been idle since.
    fn idle(a: &Arc<Admission>, ip_: &str, at: Instant) -> Admitted {
        let activity = Arc::new(Activity::new(at));
        activity.request_started();
        activity.request_ended();
        let client = a.client_of(ip(ip_));
        let admitted = a.admit(client, ip(ip_), activity);
        admitted.started();
        admitted
    }

    fn busy(a: &Arc<Admission>, ip_: &str, at: Instant) -> Admitted {
        let activity = Arc::new(Activity::new(at));
        activity.request_started();
        let client = a.client_of(ip(ip_));
        let admitted = a.admit(client, ip(ip_), activity);
        admitted.started();
        admitted
    }

    #[test]
    fn a_client_at_its_limit_makes_room_from_its_own_connections() {
        let a = Admission::new(2, vec![]);
        let t0 = Instant::now();
        let first = idle(&a, "192.0.2.1", t0);
        let _second = busy(&a, "192.0.2.1", t0);
        let now = t0 + std::time::Duration::from_secs(5);
        assert_eq!(
            a.client_room(a.client_of(ip("192.0.2.9")), now),
            Room::Free,
            "another client"
        );
        assert_eq!(a.client_room(a.client_of(ip("192.0.2.1")), now), Room::Made);
        assert!(first.evicted.is_cancelled(), "its idle connection goes");
        // The newcomer takes its place; one more finds only the busy one and the
        // newcomer's (not yet registered here): the busy one is never closed.
        assert_eq!(a.client_room(a.client_of(ip("192.0.2.1")), now), Room::Free);
        let _third = busy(&a, "192.0.2.1", t0);
        assert_eq!(a.client_room(a.client_of(ip("192.0.2.1")), now), Room::None);
        // A balancer is many clients: no limit.
        let proxied = Admission::new(1, vec!["10.0.0.0/8".parse().unwrap()]);
        let _one = busy(&proxied, "10.0.0.1", t0);
        assert_eq!(
            proxied.client_room(proxied.client_of(ip("10.0.0.1")), now),
            Room::Free
        );
    }

    #[test]
    fn at_the_limit_room_comes_from_the_silent_then_the_heaviest_clients_idlest() {
        let a = Admission::new(100, vec![]);
        let t0 = Instant::now();
        let now = t0 + std::time::Duration::from_secs(10);
        let light_idle = idle(&a, "192.0.2.1", t0);
        let heavy: Vec<_> = (0..3).map(|_| idle(&a, "192.0.2.2", t0)).collect();
        let heavy_busy = busy(&a, "192.0.2.2", t0);
        let silent = a.admit(
            a.client_of(ip("192.0.2.3")),
            ip("192.0.2.3"),
            Arc::new(Activity::new(t0)),
        );
        assert_eq!(a.make_room(now), Room::Made);
        assert!(
            silent.evicted.is_cancelled(),
            "a connection that sent nothing goes first"
        );
        assert_eq!(a.make_room(now), Room::Made);
        assert!(heavy.iter().filter(|c| c.evicted.is_cancelled()).count() == 1);
        assert!(!light_idle.evicted.is_cancelled() && !heavy_busy.evicted.is_cancelled());
        drop(heavy);
        drop(silent);
        assert_eq!(a.len(), 2);
        // Only busy connections and the light client's idle one left: it goes, then none.
        assert_eq!(a.make_room(now), Room::Made);
        assert!(light_idle.evicted.is_cancelled());
        assert_eq!(a.make_room(now), Room::None, "every connection busy");
    }
}
