//! The cache's storage: the memory tier (the only user of moka), the disk tier under
//! it, the `fill_memory` budget, and the clock and settings that stamp what they hold.
//! A look at a key here says what the entry is worth now ([`Found`]); what to do about
//! it is the lookup's and the fills' business.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use crate::cache_status::CacheStatus;
use crate::clock::Clock;
use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::object::{Exchange, ObjectMeta};
use crate::origin::OriginObject;

use super::budget::kib;
use super::disk::{self, DiskTier};
use super::entry::{CacheKey, Cached, Entry, Freshness, Stamp};
use super::freshness::{self, Lifetimes, Lookup, Stored};

/// Per-entry bookkeeping bytes added to the body length by the weigher.
const ENTRY_OVERHEAD: u64 = 512;

/// How long a failed revalidation is not retried (the stale copy is served meanwhile).
pub(crate) const REVALIDATION_BACKOFF: Duration = Duration::from_secs(1);

/// What one look at an entry finds.
pub(crate) enum Found {
    /// A fresh copy (`HIT`), or one served stale while the origin is backed off from
    /// (`STALE`): the answer, now.
    Answer(Arc<Cached>, CacheStatus),
    /// A remembered 404.
    Absent,
    /// Past its lifetime, within its stale-while-revalidate window: the old copy now,
    /// and a revalidation in the background.
    Revalidate(Arc<Cached>),
    /// Not there, or expired (the old copy, for a conditional GET).
    Miss(Option<Arc<Cached>>),
}

/// An earlier copy of a key, as a fill finds it.
pub(crate) enum Earlier {
    Fresh(Arc<Cached>),
    /// Fresh on disk and larger than one block: its first block is read and checked.
    Streaming(Box<disk::Reading>, Stamp),
    Expired(Arc<Cached>),
    None,
}

pub(crate) struct Tiers {
    pub(crate) clock: Arc<Clock>,
    entries: moka::future::Cache<CacheKey, Entry>,
    /// Keys found to be over `max_object_size`, and when: they skip the fill for `ttl`.
    large: moka::future::Cache<CacheKey, Instant>,
    /// `[cache.disk]`, when configured.
    disk: Option<Arc<DiskTier>>,
    /// `fill_memory`, in KiB: a fill holds its object's size until it ends.
    pub(crate) fill_budget: Arc<Semaphore>,
    pub(crate) cfg: CacheConfig,
    pub(crate) metrics: Arc<Metrics>,
}

impl Tiers {
    /// Entries leave memory by size only (least recently used first), never by moka's
    /// own clock: an expired copy is still worth a conditional GET, and freshness is
    /// decided by `clock`.
    pub(crate) fn new(cfg: &CacheConfig, metrics: Arc<Metrics>, clock: Arc<Clock>) -> Tiers {
        let entries = moka::future::Cache::builder()
            .max_capacity(cfg.max_memory.0)
            .weigher(|k: &CacheKey, v: &Entry| {
                let body = match v {
                    Entry::Object(c) => c.body.len(),
                    Entry::NotFound { .. } => 0,
                };
                let w = body + ENTRY_OVERHEAD + k.bucket.len() as u64 + k.key.len() as u64;
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            // LRU: the object just fetched is always admitted; TinyLFU may refuse one-off
            // objects once full, which turns every request for them into a miss.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        Tiers {
            clock,
            entries,
            large: moka::future::Cache::builder().max_capacity(100_000).build(),
            disk: cfg
                .disk
                .as_ref()
                .map(|d| DiskTier::open(d, metrics.tiers.clone())),
            fill_budget: Arc::new(Semaphore::new(kib(cfg.fill_memory.0) as usize)),
            cfg: cfg.clone(),
            metrics,
        }
    }

    /// One look at `key`'s entry at `now`, decided by [`freshness::lookup`].
    pub(crate) async fn look(&self, key: &CacheKey, now: Instant) -> Found {
        match self.entries.get(key).await {
            Some(Entry::Object(c)) => match freshness::lookup(&c.stored(), now) {
                Lookup::Fresh => Found::Answer(c, CacheStatus::Hit),
                Lookup::BackingOff => Found::Answer(c, CacheStatus::Stale),
                Lookup::Revalidating => Found::Revalidate(c),
                Lookup::Expired => Found::Miss(Some(c)),
            },
            Some(Entry::NotFound { stored_at })
                if freshness::not_found_fresh(&self.lifetimes(), stored_at, now) =>
            {
                Found::Absent
            }
            Some(Entry::NotFound { .. }) | None => Found::Miss(None),
        }
    }

    pub(crate) fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            ttl: self.cfg.ttl.0,
            negative_ttl: self.cfg.negative_ttl.0,
            stale_if_error: self.cfg.stale_if_error.0,
            stale_while_revalidate: self.cfg.stale_while_revalidate.0,
        }
    }

    /// The stamp of an answer with `meta` that arrived through `exchange`, just now.
    pub(crate) fn stamp(&self, meta: &ObjectMeta, exchange: &Exchange) -> Stamp {
        let directives = meta.directives(exchange.response_time);
        Stamp {
            received: self.clock.now(),
            initial_age: exchange.initial_age(meta.fields.date),
            directives,
            policy: freshness::policy(&directives, &self.lifetimes()),
        }
    }

    /// The stamp of a copy whose age was zero at `born` (a disk file's).
    fn stamp_born(&self, meta: &ObjectMeta, born: SystemTime) -> Stamp {
        let directives = meta.directives(born);
        Stamp {
            received: self.clock.now(),
            initial_age: self.clock.wall().duration_since(born).unwrap_or_default(),
            directives,
            policy: freshness::policy(&directives, &self.lifetimes()),
        }
    }

    /// How fresh an object streamed past the cache is (for its answer's headers).
    pub(crate) fn arriving(&self, object: &OriginObject) -> Freshness {
        let stamp = self.stamp(&object.meta, &object.exchange);
        stamp.freshness(stamp.received)
    }

    /// Stores `cached`, evicting at once what no longer fits: moka evicts lazily, and a
    /// wave of fills storing their objects between two maintenance runs would hold
    /// `max_memory` and every one of them.
    pub(crate) async fn insert(&self, key: &CacheKey, cached: Arc<Cached>) {
        self.entries
            .insert(key.clone(), Entry::Object(cached))
            .await;
        self.entries.run_pending_tasks().await;
    }

    /// Remembers that `key` is not there (for `negative_ttl`).
    pub(crate) async fn remember_not_found(&self, key: &CacheKey, now: Instant) {
        let entry = Entry::NotFound { stored_at: now };
        self.entries.insert(key.clone(), entry).await;
    }

    /// `key` is over `max_object_size`: requests stream it from the origin for `ttl`.
    pub(crate) async fn mark_large(&self, key: &CacheKey) {
        self.large.insert(key.clone(), self.clock.now()).await;
    }

    pub(crate) async fn is_large(&self, key: &CacheKey) -> bool {
        self.large
            .get(key)
            .await
            .is_some_and(|at| self.clock.now().saturating_duration_since(at) < self.cfg.ttl.0)
    }

    /// The copy a fill starts from: the expired one from memory if the lookup found one,
    /// else the disk tier's. A fresh one there is the answer, counted as a disk hit: in
    /// memory at once, or, where the caller can `stream` it and it is larger than one
    /// block, still being read.
    pub(crate) async fn earlier(
        &self,
        key: &CacheKey,
        in_memory: Option<&Arc<Cached>>,
        stream: bool,
    ) -> Earlier {
        if let Some(stale) = in_memory {
            return Earlier::Expired(stale.clone());
        }
        let Some(disk) = &self.disk else {
            return Earlier::None;
        };
        match disk.read(key, &self.fill_budget).await {
            Some(reading) => self.take_disk(key, reading, stream).await,
            None => Earlier::None,
        }
    }

    /// A fresh copy of `key` that the disk tier gives at once (one block, in the page
    /// cache), stored in memory as every disk hit is: the answer, without a fill's task
    /// and the wake-ups it costs. `None` for anything else, which the fill then reads (an
    /// expired copy is revalidated there).
    pub(crate) async fn disk_now(&self, key: &CacheKey) -> Option<Arc<Cached>> {
        let reading = self.disk.as_ref()?.read_now(key, &self.fill_budget)?;
        match self.take_disk(key, reading, false).await {
            Earlier::Fresh(c) => Some(c),
            _ => None,
        }
    }

    /// What `key`'s copy read from disk is: fresh (stored in memory, or left `Streaming`
    /// where the caller can `stream` it and it is larger than one block), counted as a
    /// disk hit; or expired (read whole, to revalidate).
    async fn take_disk(&self, key: &CacheKey, reading: disk::Reading, stream: bool) -> Earlier {
        let (stamp, fresh) = self.disk_copy(&reading.meta, reading.stored);
        if fresh && stream && reading.rest.is_some() {
            self.metrics.tiers.disk_hits.inc();
            return Earlier::Streaming(Box::new(reading), stamp);
        }
        let Some(loaded) = reading.whole().await else {
            return Earlier::None;
        };
        let c = Cached::new(Arc::new(loaded.meta), loaded.body, stamp);
        if !fresh {
            return Earlier::Expired(c);
        }
        self.insert(key, c.clone()).await;
        self.metrics.tiers.disk_hits.inc();
        Earlier::Fresh(c)
    }

    /// A fresh copy of `key` on disk whose body's length is in `sizes`, checked, to be
    /// sent from its file (a plain HTTP/1 request): counted as a disk hit, and not stored
    /// in memory. `None` for anything else, which the usual way then reads. The body is
    /// not checked when `bodiless` says the answer sends none (a `304`): only the file's
    /// header, checked when it was opened, is read then.
    pub(crate) async fn sendable(
        &self,
        key: &CacheKey,
        sizes: &RangeInclusive<u64>,
        bodiless: impl FnOnce(&ObjectMeta) -> bool,
    ) -> Option<(disk::FromFile, Stamp)> {
        let disk = self.disk.as_ref()?;
        let from = disk.sendable(key, sizes)?;
        let (stamp, fresh) = self.disk_copy(&from.meta, from.stored);
        if !fresh || !(bodiless(&from.meta) || disk.check_sendable(key, &from).await) {
            return None;
        }
        self.metrics.tiers.disk_hits.inc();
        Some((from, stamp))
    }

    /// The stamp of a copy read from disk, and whether it is fresh now.
    fn disk_copy(&self, meta: &ObjectMeta, stored: SystemTime) -> (Stamp, bool) {
        let stamp = self.stamp_born(meta, stored);
        let stored = Stored {
            received: stamp.received,
            initial_age: stamp.initial_age,
            policy: stamp.policy,
            retry_at: None,
        };
        let fresh = freshness::lookup(&stored, stamp.received) == Lookup::Fresh;
        (stamp, fresh)
    }

    /// Queues `c` for the disk tier, when there is one. The file records when the
    /// copy's age was zero, so that its age survives a restart.
    pub(crate) fn write_disk(&self, key: &CacheKey, c: &Cached) {
        if let Some(disk) = &self.disk {
            let born = self.clock.wall() - c.stamp.age(self.clock.now());
            disk.offer(key, &c.meta, &c.body, born);
        }
    }

    /// Runs pending evictions now (moka does this lazily during calls).
    pub(crate) async fn maintain(&self) {
        if let Some(disk) = &self.disk {
            disk.maintain().await;
        }
        self.entries.run_pending_tasks().await;
        self.metrics
            .cache_bytes
            .set(self.entries.weighted_size() as i64);
        self.metrics
            .cache_entries
            .set(self.entries.entry_count() as i64);
    }

    /// Waits until the disk tier (if any) has indexed the files it found at start.
    pub(crate) async fn disk_ready(&self) {
        if let Some(disk) = &self.disk {
            disk.indexed().await;
        }
    }

    /// Waits (up to 10 s) for queued disk writes to end: called at shutdown.
    pub(crate) async fn flush(&self) {
        if let Some(disk) = &self.disk {
            let flushed = tokio::time::timeout(Duration::from_secs(10), disk.flush()).await;
            if flushed.is_err() {
                tracing::warn!("disk tier: writes still queued at exit are lost");
            }
        }
    }

    /// Drops every cached object (from memory and disk; and remembered 404, and "too
    /// large" mark) whose key `selected` picks; returns how many objects and 404s went.
    pub(crate) async fn purge(
        &self,
        selected: impl Fn(&CacheKey) -> bool + Send + Sync + 'static,
    ) -> usize {
        invalidate_selected(&self.large, &selected).await;
        let mut gone: std::collections::HashSet<CacheKey> =
            invalidate_selected(&self.entries, &selected)
                .await
                .into_iter()
                .collect();
        if let Some(disk) = &self.disk {
            gone.extend(disk.purge(Arc::new(selected)).await);
        }
        gone.len()
    }

    /// Objects and remembered 404s held (after [`Tiers::maintain`], exact).
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }
}

/// Drops the entries of `cache` whose key `selected` picks; returns their keys.
pub(crate) async fn invalidate_selected<K, V>(
    cache: &moka::future::Cache<K, V>,
    selected: impl Fn(&K) -> bool,
) -> Vec<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let keys: Vec<K> = cache
        .iter()
        .filter(|(k, _)| selected(k))
        .map(|(k, _)| (*k).clone())
        .collect();
    for k in &keys {
        cache.invalidate(k).await;
    }
    keys
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cache::pieces::Pieces;
    use crate::config::{DiskConfig, Size};

    /// A fresh copy of one block in the page cache is answered by `disk_now`, stored in
    /// memory and counted as a disk hit; an expired one is left to the fill (`None`).
    #[tokio::test]
    async fn disk_now_answers_a_fresh_warm_copy_and_leaves_an_expired_one_to_the_fill() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CacheConfig {
            disk: Some(DiskConfig {
                path: dir.path().into(),
                max_size: Size(1 << 30),
            }),
            ..CacheConfig::default()
        };
        let tiers = Tiers::new(&cfg, Arc::new(Metrics::new()), Arc::new(Clock::default()));
        tiers.disk_ready().await;
        let disk = tiers.disk.clone().expect("configured");
        let body = Bytes::from(vec![7u8; 1000]);
        let pieces = Pieces::new(vec![body.clone()]);
        let meta = ObjectMeta::default();
        let (fresh, old) = (CacheKey::test("fresh"), CacheKey::test("old"));
        let now = tiers.clock.wall();
        disk.offer(&fresh, &meta, &pieces, now);
        // Stored two hours ago, past the default `ttl` of one.
        disk.offer(&old, &meta, &pieces, now - Duration::from_secs(7200));
        disk.flush().await;
        // Warm: each read once the usual way.
        let budget = Arc::new(Semaphore::new(1 << 20));
        assert!(disk.load(&fresh, &budget).await.is_some());
        assert!(disk.load(&old, &budget).await.is_some());
        if !disk.reads_without_waiting() {
            return;
        }
        let c = tiers
            .disk_now(&fresh)
            .await
            .expect("fresh, warm, one block");
        assert_eq!(c.body.to_vec(), body);
        assert_eq!(tiers.metrics.tiers.disk_hits.get(), 1);
        assert!(matches!(
            tiers.look(&fresh, tiers.clock.now()).await,
            Found::Answer(_, CacheStatus::Hit)
        ));
        assert!(tiers.disk_now(&old).await.is_none());
        assert_eq!(tiers.metrics.tiers.disk_hits.get(), 1);
        assert!(matches!(
            tiers.look(&old, tiers.clock.now()).await,
            Found::Miss(None)
        ));
    }
}
