//! The fills in progress, one per key, in a sharded map whose locks are never held
//! across an `.await` (cold misses on different keys do not wait on each other).
//!
//! The request that creates a fill gets a [`Leader`] guard; the fill's task holds it to
//! its end. Dropping it, however the task ends (done, cancelled or panicking), removes
//! the entry and releases the fill's readers, so no later request can join a fill that
//! will never finish.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use super::shared::Fill;
use crate::cache::entry::CacheKey;

const SHARDS: usize = 64;

type Shard = HashMap<CacheKey, Arc<Fill>>;

pub(crate) struct Inflight {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Inflight {
    fn shard(&self, key: &CacheKey) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // A poisoned shard still holds a consistent map (every critical section is a
        // single insert, lookup or remove).
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the fill for `key`, or starts one: then the caller is its leader and must
    /// run it (or drop the guard, which fails the fill). A fill whose body broke is not
    /// joined, even in the moment before its task removes it: it has nothing whole to
    /// give a newcomer.
    pub(crate) fn join_or_lead(self: &Arc<Self>, key: &CacheKey) -> (Arc<Fill>, Option<Leader>) {
        let mut shard = self.shard(key);
        if let Some(fill) = shard.get(key).filter(|f| !f.is_broken()) {
            return (fill.clone(), None);
        }
        let fill = Fill::new();
        shard.insert(key.clone(), fill.clone());
        let leader = Leader {
            inflight: self.clone(),
            key: key.clone(),
            fill: fill.clone(),
        };
        (fill, Some(leader))
    }

    /// Fills in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ownership of one fill: its entry lives exactly as long as this guard.
pub(crate) struct Leader {
    inflight: Arc<Inflight>,
    key: CacheKey,
    pub fill: Arc<Fill>,
}

impl Leader {
    pub(crate) fn key(&self) -> &CacheKey {
        &self.key
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        {
            let mut shard = self.inflight.shard(&self.key);
            if shard
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
            {
                shard.remove(&self.key);
            }
        }
        // A fill that ended normally has its head and end set already; this only acts
        // on one whose task died or was cancelled.
        self.fill.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fill::shared::Head;

    fn key(k: &str) -> CacheKey {
        CacheKey::test(k)
    }

    #[tokio::test]
    async fn one_leader_per_key_and_followers_join() {
        let inflight = Arc::new(Inflight::default());
        let (a, lead) = inflight.join_or_lead(&key("a"));
        assert!(lead.is_some());
        let (b, follow) = inflight.join_or_lead(&key("a"));
        assert!(follow.is_none() && Arc::ptr_eq(&a, &b));
        let (_, other) = inflight.join_or_lead(&key("b"));
        assert!(other.is_some());
        assert_eq!(inflight.len(), 2);
        drop((lead, other));
        assert!(inflight.is_empty());
    }

    /// A fill task that panics (a fault injected here, in a test build) releases its
    /// waiters with an error and leaves no entry behind: the next request starts anew.
    #[tokio::test]
    async fn a_panicking_fill_task_releases_waiters_and_its_entry() {
        let inflight = Arc::new(Inflight::default());
        let (fill, leader) = inflight.join_or_lead(&key("k"));
        let (joined, _) = inflight.join_or_lead(&key("k"));
        let waiter = tokio::spawn(async move { joined.head().await });
        let task = tokio::spawn(async move {
            let _leader = leader;
            tokio::task::yield_now().await;
            panic!("injected fault in a fill task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(matches!(waiter.await.unwrap(), Head::Failed(_)));
        assert!(matches!(fill.head().await, Head::Failed(_)));
        assert!(inflight.is_empty());
        let (_, again) = inflight.join_or_lead(&key("k"));
        assert!(again.is_some(), "a new fill starts for the key");
    }

    #[tokio::test]
    async fn a_broken_fill_is_not_joined() {
        let inflight = Arc::new(Inflight::default());
        let (broken, first) = inflight.join_or_lead(&key("k"));
        broken.finish(crate::cache::fill::shared::End::Broken);
        let (fresh, second) = inflight.join_or_lead(&key("k"));
        assert!(second.is_some() && !Arc::ptr_eq(&broken, &fresh));
        // The old leader's guard leaves the new fill's entry alone.
        drop(first);
        let (joined, third) = inflight.join_or_lead(&key("k"));
        assert!(third.is_none() && Arc::ptr_eq(&fresh, &joined));
    }

    #[tokio::test]
    async fn a_cancelled_fill_breaks_its_body_readers() {
        let inflight = Arc::new(Inflight::default());
        let (fill, leader) = inflight.join_or_lead(&key("k"));
        fill.set_head(Head::Bypass);
        fill.push(bytes::Bytes::from_static(b"abc"));
        let reader = fill.place().unwrap().reader(0, Some(10));
        let task = tokio::spawn(async move {
            let _leader = leader;
            std::future::pending::<()>().await;
        });
        task.abort();
        let _ = task.await;
        use futures_util::StreamExt;
        let items: Vec<_> = reader.collect().await;
        assert!(items.last().is_some_and(|r| r.is_err()));
        assert!(inflight.is_empty());
    }
}
