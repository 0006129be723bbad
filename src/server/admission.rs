//! Admission to a listener: the count of open connections, and the connections that
//! have not sent a request head yet, oldest first (the ones closed to admit a new
//! connection at `max_connections`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

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

/// Connections that have not sent a request head yet, oldest first.
#[derive(Default)]
pub(super) struct Waiting {
    inner: Mutex<WaitingInner>,
}

#[derive(Default)]
struct WaitingInner {
    next: u64,
    by_age: BTreeMap<u64, CancellationToken>,
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitingInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> (u64, CancellationToken) {
        let mut w = self.lock();
        let id = w.next;
        w.next += 1;
        let token = CancellationToken::new();
        w.by_age.insert(id, token.clone());
        (id, token)
    }

    fn remove(&self, id: u64) {
        self.lock().by_age.remove(&id);
    }

    pub(super) fn evict_oldest(&self) -> bool {
        let oldest = self.lock().by_age.pop_first();
        match oldest {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`Waiting`], given up at its first request or its end;
/// `evicted` is cancelled when the listener needs the place for a new connection.
pub(super) struct WaitingSlot {
    waiting: Arc<Waiting>,
    id: u64,
    pub(super) evicted: CancellationToken,
}

impl WaitingSlot {
    pub(super) fn new(waiting: &Arc<Waiting>) -> WaitingSlot {
        let (id, evicted) = waiting.register();
        WaitingSlot {
            waiting: waiting.clone(),
            id,
            evicted,
        }
    }

    pub(super) fn leave(&self) {
        self.waiting.remove(self.id);
    }
}

impl Drop for WaitingSlot {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_takes_the_oldest_waiting_connection() {
        let w = Waiting::default();
        let (a, ta) = w.register();
        let (_b, tb) = w.register();
        let (_c, tc) = w.register();
        w.remove(a);
        assert!(w.evict_oldest());
        assert!(!ta.is_cancelled() && tb.is_cancelled() && !tc.is_cancelled());
        assert!(w.evict_oldest());
        assert!(!w.evict_oldest());
    }
}
