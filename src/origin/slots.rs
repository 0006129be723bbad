//! A tenant's origin slots (`max_concurrent_per_tenant`), shared fairly between its
//! clients. A slot is held for as long as an origin answer streams, and a slow reader
//! streams slowly: without shares, one client's slow downloads could hold every slot of
//! the tenant and leave its other clients' cold objects waiting. So one client (an
//! address, an IPv6 /64: [`ClientKey`]) holds at most a quarter of the slots, and
//! requests that wait are served in the order they came, skipping only those whose
//! client is at its share.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::peer::ClientKey;

/// One held slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    client: ClientKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.client);
    }
}

#[derive(Debug, Default)]
struct State {
    held: usize,
    by_client: HashMap<ClientKey, usize>,
    /// Requests waiting for a slot, oldest first.
    waiting: VecDeque<(ClientKey, oneshot::Sender<Slot>)>,
}

#[derive(Debug)]
pub(super) struct Slots {
    total: usize,
    /// The most one client holds at once.
    share: usize,
    state: Mutex<State>,
}

impl Slots {
    pub(super) fn new(total: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            share: (total / 4).max(1),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the counts whole: poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn grant(self: &Arc<Self>, s: &mut State, client: ClientKey) -> Slot {
        s.held += 1;
        *s.by_client.entry(client).or_default() += 1;
        Slot {
            slots: self.clone(),
            client,
        }
    }

    fn may_take(&self, s: &State, client: ClientKey) -> bool {
        s.held < self.total && s.by_client.get(&client).copied().unwrap_or(0) < self.share
    }

    /// A slot for `client`, waiting at most `wait` for one; `None` if none came.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        client: ClientKey,
        wait: Duration,
    ) -> Option<Slot> {
        let rx = {
            let mut s = self.lock();
            // First come, first served: a newcomer does not pass a waiting request that
            // could take the slot.
            let ahead = s.waiting.iter().any(|(c, _)| self.may_take(&s, *c));
            if !ahead && self.may_take(&s, client) {
                return Some(self.grant(&mut s, client));
            }
            let (tx, rx) = oneshot::channel();
            s.waiting.push_back((client, tx));
            rx
        };
        tokio::time::timeout(wait, rx).await.ok()?.ok()
    }

    fn release(self: &Arc<Self>, client: ClientKey) {
        let mut s = self.lock();
        put_back(&mut s, client);
        // The oldest waiting request whose client may take a slot gets it; requests that
        // gave up are dropped from the line.
        s.waiting.retain(|(_, tx)| !tx.is_closed());
        while let Some(i) = s.waiting.iter().position(|(c, _)| self.may_take(&s, *c)) {
            let Some((c, tx)) = s.waiting.remove(i) else {
                break;
            };
            let slot = self.grant(&mut s, c);
            match tx.send(slot) {
                Ok(()) => break,
                Err(slot) => {
                    // Gave up just now. Dropping the slot here would release it under
                    // this lock: take it back by hand and offer it on.
                    std::mem::forget(slot);
                    put_back(&mut s, c);
                }
            }
        }
    }

    /// Slots held now (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().held
    }
}

/// Takes one slot of `client` back into the free count.
fn put_back(s: &mut State, client: ClientKey) {
    s.held -= 1;
    if let Some(n) = s.by_client.get_mut(&client) {
        *n -= 1;
        if *n == 0 {
            s.by_client.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(last: u8) -> ClientKey {
        ClientKey::of(std::net::IpAddr::from([192, 0, 2, last]))
    }

    const NOW: Duration = Duration::ZERO;
    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_client_holds_at_most_a_quarter() {
        let slots = Slots::new(8);
        let a = client(1);
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(slots.acquire(a, NOW).await.unwrap());
        }
        assert!(
            slots.acquire(a, NOW).await.is_none(),
            "a third is over its share"
        );
        for n in 2..8 {
            held.push(
                slots
                    .acquire(client(n), NOW)
                    .await
                    .expect("another client's"),
            );
        }
        assert!(
            slots.acquire(client(9), NOW).await.is_none(),
            "all 8 in use"
        );
        assert_eq!(slots.held(), 8);
        drop(held);
        assert_eq!(slots.held(), 0);
    }

    #[tokio::test]
    async fn waiting_requests_are_served_in_order_skipping_clients_at_their_share() {
        let slots = Slots::new(4); // a share of 1
        let (a, b, c) = (client(1), client(2), client(3));
        let held_a = slots.acquire(a, NOW).await.unwrap();
        let held_b = slots.acquire(b, NOW).await.unwrap();
        let _held_c = slots.acquire(c, NOW).await.unwrap();
        let _held_d = slots.acquire(client(4), NOW).await.unwrap();
        // All four taken; a waits first, then b.
        let wait_a = tokio::spawn({
            let s = slots.clone();
            async move { s.acquire(a, LONG).await }
        });
        tokio::task::yield_now().await;
        let wait_b = tokio::spawn({
            let s = slots.clone();
            async move { s.acquire(b, LONG).await }
        });
        tokio::task::yield_now().await;
        // c releases: a and b each still hold their share (1): neither may take it.
        drop(_held_c);
        tokio::task::yield_now().await;
        assert!(!wait_a.is_finished() && !wait_b.is_finished());
        // b gives its own back: a came first but is still at its share; b is not now,
        // so b's waiting request is served.
        drop(held_b);
        let got_b = wait_b.await.unwrap().expect("b served");
        // a releases: a's waiting request takes it.
        drop(held_a);
        let got_a = wait_a.await.unwrap().expect("a served");
        drop((got_a, got_b));
    }

    #[tokio::test]
    async fn a_request_that_gave_up_passes_its_slot_on() {
        let slots = Slots::new(4);
        let all: Vec<_> =
            futures_util::future::join_all((1..=4).map(|n| slots.acquire(client(n), NOW)))
                .await
                .into_iter()
                .map(Option::unwrap)
                .collect();
        assert!(
            slots
                .acquire(client(5), Duration::from_millis(10))
                .await
                .is_none()
        );
        let waiting = tokio::spawn({
            let s = slots.clone();
            async move { s.acquire(client(6), LONG).await }
        });
        tokio::task::yield_now().await;
        drop(all);
        assert!(
            waiting.await.unwrap().is_some(),
            "served past the one that gave up"
        );
        assert_eq!(slots.held(), 0);
    }
}
