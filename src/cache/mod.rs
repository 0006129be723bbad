//! The object cache (docs/http.md, "X-Cache and the cache"): the lookup phase of the request path, and
//! the only module that touches moka.
//!
//! Complete objects live in a byte-weighted moka cache keyed by (provider, bucket, key).
//! A cold or expired key gets exactly one upstream GET: the first request starts a
//! [`fill::Fill`] in its own task (so a client hanging up does not cancel it) and every
//! request for that key until it ends joins it and streams from it. Only a body that
//! arrived whole goes into the cache. With `[cache.disk]`, objects are also written to a
//! [`disk::DiskTier`], which a fill reads (checked) before it asks the origin: a large
//! file streams into the fill block by block, as an origin body does.

pub mod disk;
pub mod fill;
mod freshness;
mod inflight;
pub mod pieces;
mod variants;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Tenant;
use crate::config::{self, ProviderKind};
use crate::error::{Error, Kind, Side};
use crate::metrics::Metrics;
use crate::object::{
    Directives, EncodedHeaders, Exchange, ObjectMeta, response_headers, same_etag,
};
use crate::origin::{Fetched, GetRequest, NotModified, OriginObject, Origins, next_chunk};
use crate::pattern::MediaRange;
use crate::source::ObjectRef;
use fill::{End, Fill, Head, Streamed};
use freshness::{Answer, Lifetimes, Lookup, Outcome, Policy, Stored};
use inflight::{Inflight, Leader};
use pieces::{PieceWriter, Pieces};

pub use crate::cache_status::CacheStatus;
pub use variants::VariantQuery;

/// What the cache is keyed by: never the signature, the query or the origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub provider: ProviderKind,
    pub bucket: String,
    pub key: String,
    /// A variant's [`Variant::cache_id`](crate::variant::Variant::cache_id); `None` for
    /// the object itself.
    pub variant: Option<String>,
}

impl CacheKey {
    /// Key `k` of S3 bucket `b` (unit tests).
    #[cfg(test)]
    pub(crate) fn test(k: &str) -> CacheKey {
        CacheKey {
            provider: ProviderKind::S3,
            bucket: "b".into(),
            key: k.into(),
            variant: None,
        }
    }

    pub fn of(obj: &ObjectRef) -> CacheKey {
        CacheKey {
            provider: obj.provider,
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            variant: None,
        }
    }
}

/// A complete object in memory.
#[derive(Debug)]
pub struct Cached {
    pub meta: Arc<ObjectMeta>,
    /// [`response_headers`] of `meta`, encoded when the object was stored.
    pub headers: Arc<EncodedHeaders>,
    pub body: Pieces,
    /// When its answer arrived (or was last revalidated), and the rules it came with.
    pub stamp: Stamp,
    /// After a failed revalidation: until then the stale copy is served at once instead
    /// of every request waiting on a failing origin again.
    pub retry_at: Option<Instant>,
}

impl Cached {
    fn new(meta: Arc<ObjectMeta>, body: Pieces, stamp: Stamp) -> Arc<Cached> {
        Arc::new(Cached {
            headers: Arc::new(response_headers(&meta)),
            meta,
            body,
            stamp,
            retry_at: None,
        })
    }

    /// The same bytes, metadata and stamp, served stale until `retry_at` (no copy of the
    /// body).
    fn backing_off(&self, retry_at: Instant) -> Arc<Cached> {
        Arc::new(Cached {
            meta: self.meta.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            stamp: self.stamp,
            retry_at: Some(retry_at),
        })
    }

    fn stored(&self) -> Stored {
        Stored {
            received: self.stamp.received,
            initial_age: self.stamp.initial_age,
            policy: self.stamp.policy,
            retry_at: self.retry_at,
        }
    }

    /// How fresh this copy is at `now`, for the answer's `Cache-Control` and `Age`.
    pub fn freshness(&self, now: Instant) -> Freshness {
        self.stamp.freshness(now)
    }
}

/// How fresh an answer is: what the respond phase needs for `Cache-Control` and `Age`.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub directives: Directives,
    /// The object's freshness lifetime at the proxy.
    pub lifetime: Duration,
    /// Its age (RFC 9111 §4.2.3): the age its answer arrived with plus the time since.
    pub age: Duration,
}

/// When an answer arrived (or its copy was last revalidated) and the rules it came
/// with: what every later answer's age, freshness and `Cache-Control` are computed
/// from.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Its arrival, on the cache's clock.
    pub received: Instant,
    /// Its age then (RFC 9111 §4.2.3's corrected initial age).
    pub initial_age: Duration,
    pub directives: Directives,
    pub policy: Policy,
}

impl Stamp {
    /// Its age at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.received)
    }

    /// How fresh this copy is at `now`.
    pub fn freshness(&self, now: Instant) -> Freshness {
        Freshness {
            directives: self.directives,
            lifetime: self.policy.lifetime,
            age: self.age(now),
        }
    }
}

/// How long a failed revalidation is not retried (the stale copy is served meanwhile).
const REVALIDATION_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Entry {
    Object(Arc<Cached>),
    NotFound { stored_at: Instant },
}

/// Per-entry bookkeeping bytes added to the body length by the weigher.
const ENTRY_OVERHEAD: u64 = 512;

/// What the lookup phase hands to the respond phase.
pub enum Served {
    /// A complete object from memory.
    Complete(Arc<Cached>, CacheStatus),
    /// Headers are known; the body streams from an in-flight fill. `MISS`, `HIT` (a
    /// large object from disk), or `BYPASS` when the object's own rules forbid storing
    /// it (`no-store`, `private`). The request's place in the fill comes with it.
    Streaming(Streamed, fill::Place),
    /// Not cacheable (too large): stream from the origin directly.
    Bypass,
    /// A 404 remembered for `negative_ttl`.
    NotFound,
}

/// What one look at an entry finds.
enum Found {
    /// A fresh object, a copy served stale while the origin is backed off from, or a
    /// remembered 404: the answer, now.
    Served(Served),
    /// Past its lifetime, within `stale_while_revalidate`: the old copy now, and a
    /// revalidation in the background.
    Revalidate(Arc<Cached>),
    /// Not there, or expired (the old copy, for a conditional GET).
    Miss(Option<Arc<Cached>>),
}

/// The cache's clock: real time plus an offset that tests advance instead of sleeping
/// past a TTL. Every freshness decision and every `stored_at` reads it.
#[derive(Debug, Default)]
pub struct Clock {
    skew_ms: std::sync::atomic::AtomicU64,
}

impl Clock {
    pub fn now(&self) -> Instant {
        let skew = self.skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        Instant::now() + Duration::from_millis(skew)
    }

    /// Wall-clock time on this clock (what the disk tier stores, to survive a restart).
    pub fn wall(&self) -> SystemTime {
        let skew = self.skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        SystemTime::now() + Duration::from_millis(skew)
    }

    /// Moves this clock forward by `by` (tests).
    pub fn advance(&self, by: Duration) {
        self.skew_ms
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

pub struct Cache {
    clock: Clock,
    entries: moka::future::Cache<CacheKey, Entry>,
    /// Keys known to be over `max_object_size`, so they skip the fill.
    large: moka::future::Cache<CacheKey, ()>,
    inflight: Arc<Inflight>,
    /// `[cache.disk]`, when configured.
    disk: Option<Arc<disk::DiskTier>>,
    /// `fill_memory`, in KiB: a fill holds its object's size until it ends.
    fill_budget: Arc<Semaphore>,
    cfg: config::CacheConfig,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(cfg: &config::CacheConfig, metrics: Arc<Metrics>) -> Arc<Cache> {
        let keep = cfg.ttl.0 + cfg.stale_if_error.0.max(cfg.negative_ttl.0);
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
            .time_to_live(keep)
            .build();
        let large = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(cfg.ttl.0)
            .build();
        Arc::new(Cache {
            clock: Clock::default(),
            entries,
            large,
            inflight: Arc::new(Inflight::default()),
            disk: cfg
                .disk
                .as_ref()
                .map(|d| disk::DiskTier::open(d, metrics.tiers.clone())),
            fill_budget: Arc::new(Semaphore::new(kib(cfg.fill_memory.0) as usize)),
            cfg: cfg.clone(),
            metrics,
        })
    }

    /// Looks `key` up and, when it is cold or expired, fetches it (once for all concurrent
    /// requests). `allowed` is the content-type list of the config the request runs
    /// under (objects outside it are not cached). Freshness is decided by the cache's
    /// [`Clock`].
    pub async fn serve(
        self: &Arc<Self>,
        origins: &Arc<Origins>,
        tenant: &Arc<Tenant>,
        obj: &ObjectRef,
        allowed: &[MediaRange],
    ) -> Result<Served, Error> {
        let now = self.clock.now();
        let key = CacheKey::of(obj);
        match self.look(&key, now).await {
            Found::Served(served) => return Ok(self.counted(served)),
            Found::Revalidate(stale) => {
                // The old copy at once; one revalidation in the background (a request
                // that finds one running leaves it be).
                let (_fill, leader) = self.inflight.join_or_lead(&key);
                if let Some(leader) = leader {
                    Box::pin(self.lead(leader, origins, tenant, obj, allowed, now)).await;
                }
                return Ok(Served::Complete(stale, CacheStatus::Stale));
            }
            Found::Miss(_) => {}
        }
        if self.large.contains_key(&key) {
            return Ok(Served::Bypass);
        }
        let (fill, leader) = self.inflight.join_or_lead(&key);
        // Taken before the fill can start, so that not a byte is forgotten before this
        // request reads it ([`fill::Place`]).
        let place = fill.place();
        match leader {
            None => {
                self.metrics.coalesced.inc();
            }
            Some(leader) => Box::pin(self.lead(leader, origins, tenant, obj, allowed, now)).await,
        }
        match fill.head().await {
            Head::Pending => Err(Error::new(
                Kind::BadGateway,
                Side::Internal,
                "fill ended without a head",
            )),
            Head::Body(streamed) => Ok(match place {
                Some(place) => Served::Streaming(streamed, place),
                // Joined a fill that no longer has its first bytes.
                None => Served::Bypass,
            }),
            Head::Ready(c, status) => Ok(Served::Complete(c, status)),
            Head::Failed(e) => Err(e),
            Head::Bypass => Ok(Served::Bypass),
        }
    }

    /// Starts the fill that `leader` owns: its task fetches the object and outlives any
    /// one client.
    async fn lead(
        self: &Arc<Self>,
        leader: Leader,
        origins: &Arc<Origins>,
        tenant: &Arc<Tenant>,
        obj: &ObjectRef,
        allowed: &[MediaRange],
        now: Instant,
    ) {
        // A fill that ended between our first look and taking the lead has stored its
        // object: answer from it instead of fetching again.
        let stale = match self.look(leader.key(), now).await {
            Found::Served(Served::Complete(c, status)) => {
                return leader.fill.set_head(Head::Ready(c, status));
            }
            Found::Served(_) => {
                let e = Error::not_found().with_detail("remembered 404");
                return leader.fill.set_head(Head::Failed(e));
            }
            Found::Revalidate(c) => Some(c),
            Found::Miss(stale) => stale,
        };
        let task = FillTask {
            cache: self.clone(),
            origins: origins.clone(),
            tenant: tenant.clone(),
            obj: obj.clone(),
            key: leader.key().clone(),
            fill: leader.fill.clone(),
            stale,
            allowed_types: allowed.to_vec(),
        };
        tokio::spawn(async move {
            // Held to the task's end: dropped on completion, panic or cancellation.
            let _leader = leader;
            task.fetch().await;
        });
    }

    /// An answer found in memory, counted as a memory-tier hit when it is one.
    fn counted(&self, served: Served) -> Served {
        if let Served::Complete(_, CacheStatus::Hit) = served {
            self.metrics.tiers.memory_hits.inc();
        }
        served
    }

    /// The clock freshness is decided by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// One look at `key`'s entry, decided by [`freshness::lookup`].
    async fn look(&self, key: &CacheKey, now: Instant) -> Found {
        match self.entries.get(key).await {
            Some(Entry::Object(c)) => match freshness::lookup(&c.stored(), now) {
                lookup @ (Lookup::Fresh | Lookup::BackingOff) => match freshness::status(lookup) {
                    Some(status) => Found::Served(Served::Complete(c, status)),
                    None => Found::Miss(Some(c)),
                },
                Lookup::Revalidating => Found::Revalidate(c),
                Lookup::Expired => Found::Miss(Some(c)),
            },
            Some(Entry::NotFound { stored_at })
                if freshness::not_found_fresh(&self.lifetimes(), stored_at, now) =>
            {
                Found::Served(Served::NotFound)
            }
            _ => Found::Miss(None),
        }
    }

    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            ttl: self.cfg.ttl.0,
            negative_ttl: self.cfg.negative_ttl.0,
            stale_if_error: self.cfg.stale_if_error.0,
            stale_while_revalidate: self.cfg.stale_while_revalidate.0,
        }
    }

    /// The stamp of an answer with `meta` that arrived through `exchange`, just now.
    fn stamp(&self, meta: &ObjectMeta, exchange: &Exchange) -> Stamp {
        let directives = meta.directives(exchange.response_time);
        Stamp {
            received: self.clock.now(),
            initial_age: exchange.initial_age(meta.date),
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
    pub fn arriving(&self, object: &OriginObject) -> Freshness {
        let stamp = self.stamp(&object.meta, &object.exchange);
        stamp.freshness(stamp.received)
    }

    /// Runs pending evictions now (moka does this lazily during calls).
    pub async fn maintain(&self) {
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
    pub async fn disk_ready(&self) {
        if let Some(disk) = &self.disk {
            disk.indexed().await;
        }
    }

    /// Waits (up to 10 s) for queued disk writes to end: called at shutdown.
    pub async fn flush(&self) {
        if let Some(disk) = &self.disk {
            let flushed = tokio::time::timeout(Duration::from_secs(10), disk.flush()).await;
            if flushed.is_err() {
                tracing::warn!("disk tier: writes still queued at exit are lost");
            }
        }
    }

    /// Drops every cached object (from memory and disk; and remembered 404, and "too
    /// large" mark) whose key `selected` picks; returns how many objects and 404s went. A
    /// fill in progress is not stopped: what it stores afterwards is the origin's answer
    /// from after the purge began.
    pub async fn purge(
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

    /// Objects and remembered 404s held (after [`Cache::maintain`], exact).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    pub fn max_object_size(&self) -> u64 {
        self.cfg.max_object_size.0
    }
}

impl Cache {
    /// The copy a fill starts from: the expired one from memory if the lookup found one,
    /// else the disk tier's. A fresh one there is the answer, counted as a disk hit: in
    /// memory at once, or, where the caller can `stream` it and it is larger than one
    /// block, still being read.
    async fn earlier(
        &self,
        key: &CacheKey,
        in_memory: Option<&Arc<Cached>>,
        stream: bool,
    ) -> Earlier {
        if let Some(stale) = in_memory {
            return Earlier::Expired(stale.clone());
        }
        let found = self.read_disk(key, stream).await;
        if let Earlier::Fresh(_) | Earlier::Streaming(..) = found {
            self.metrics.tiers.disk_hits.inc();
        }
        found
    }

    /// `key` from the disk tier, if it has a good copy: fresh (in memory now, or
    /// streaming), or expired (read whole, to revalidate).
    async fn read_disk(&self, key: &CacheKey, stream: bool) -> Earlier {
        let Some(disk) = &self.disk else {
            return Earlier::None;
        };
        let Some(reading) = disk.read(key, &self.fill_budget).await else {
            return Earlier::None;
        };
        let stamp = self.stamp_born(&reading.meta, reading.stored);
        let stored = Stored {
            received: stamp.received,
            initial_age: stamp.initial_age,
            policy: stamp.policy,
            retry_at: None,
        };
        let fresh = freshness::lookup(&stored, stamp.received) == Lookup::Fresh;
        if fresh && stream && reading.rest.is_some() {
            return Earlier::Streaming(Box::new(reading), stamp);
        }
        let Some(loaded) = reading.whole().await else {
            return Earlier::None;
        };
        let c = Cached::new(Arc::new(loaded.meta), loaded.body, stamp);
        if !fresh {
            return Earlier::Expired(c);
        }
        self.entries
            .insert(key.clone(), Entry::Object(c.clone()))
            .await;
        Earlier::Fresh(c)
    }

    /// Queues `c` for the disk tier, when there is one. The file records when the
    /// copy's age was zero, so that its age survives a restart.
    fn write_disk(&self, key: &CacheKey, c: &Cached) {
        if let Some(disk) = &self.disk {
            let born = self.clock.wall() - c.stamp.age(self.clock.now());
            disk.offer(key, &c.meta, &c.body, born);
        }
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

/// The first `bytes` bytes of SHA-256 over `parts` (each length-prefixed, so that parts
/// cannot run into each other), in hex.
fn digest_hex<'a>(parts: impl IntoIterator<Item = &'a str>, bytes: usize) -> String {
    use aws_lc_rs::digest;
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.finish().as_ref()[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// `bytes` of `budget` (counted in KiB), if that much is free now.
fn kib_permit(budget: &Arc<Semaphore>, bytes: u64) -> Result<OwnedSemaphorePermit, ()> {
    let n = u32::try_from(kib(bytes).max(1)).map_err(|_| ())?;
    budget.clone().try_acquire_many_owned(n).map_err(|_| ())
}

/// The task behind one fill: owns the upstream GET, outlives any one client.
struct FillTask {
    cache: Arc<Cache>,
    origins: Arc<Origins>,
    tenant: Arc<Tenant>,
    obj: ObjectRef,
    key: CacheKey,
    fill: Arc<Fill>,
    stale: Option<Arc<Cached>>,
    allowed_types: Vec<MediaRange>,
}

/// What a fill that does not keep its body holds at most beyond what its slowest reader
/// has read (docs/design.md, "Bodies of unknown length").
const FORGET_WINDOW: u64 = 1 << 20;

impl FillTask {
    async fn fetch(&self) {
        let cache = &self.cache;
        let stale = match cache.earlier(&self.key, self.stale.as_ref(), true).await {
            Earlier::Fresh(c) => return self.fill.set_head(Head::Ready(c, CacheStatus::Hit)),
            Earlier::Streaming(reading, stamp) => return self.stream_disk(reading, stamp).await,
            Earlier::Expired(c) => Some(c),
            Earlier::None => None,
        };
        let result = self.ask(stale.as_deref()).await;
        let answer = match &result {
            Ok(Fetched::Object(_)) => Answer::Object,
            Ok(Fetched::NotModified(_)) => Answer::NotModified,
            Err(e) if e.is_not_found() => Answer::NotFound,
            Err(e) => Answer::Failed {
                transient: e.allows_stale(),
            },
        };
        let now = cache.clock.now();
        let stored = stale.as_ref().map(|c| c.stored());
        let outcome = freshness::outcome(answer, stored.as_ref(), now);
        let object = match (outcome, result, &stale) {
            (Outcome::Take, Ok(Fetched::Object(o)), _) => o,
            (Outcome::Refresh, Ok(Fetched::NotModified(answer)), Some(stale)) => {
                return self.refresh(stale, &answer).await;
            }
            (Outcome::RememberNotFound, Err(e), _) => {
                let entry = Entry::NotFound { stored_at: now };
                cache.entries.insert(self.key.clone(), entry).await;
                return self.fill.set_head(Head::Failed(e.into_error()));
            }
            (Outcome::ServeStale, Err(e), Some(stale)) => {
                tracing::warn!(bucket = %self.obj.bucket, error = %e, "origin failing; serving stale copy");
                let backing_off = stale.backing_off(now + REVALIDATION_BACKOFF);
                cache
                    .entries
                    .insert(self.key.clone(), Entry::Object(backing_off.clone()))
                    .await;
                return self
                    .fill
                    .set_head(Head::Ready(backing_off, CacheStatus::Stale));
            }
            (_, Err(e), _) => return self.fill.set_head(Head::Failed(e.into_error())),
            (_, Ok(_), _) => {
                let e = Error::bad_gateway().with_detail("unexpected 304");
                return self.fill.set_head(Head::Failed(e));
            }
        };
        if !object.meta.content_type_allowed(&self.allowed_types) {
            let e = Error::unsupported_media_type(object.meta.content_type.as_deref());
            return self.fill.set_head(Head::Failed(e));
        }
        if object
            .content_length
            .is_some_and(|len| len > cache.cfg.max_object_size.0)
        {
            cache.large.insert(self.key.clone(), ()).await;
            return self.fill.set_head(Head::Bypass);
        }
        // Within fill_memory, or not at all: the request streams uncached instead. A body
        // of unknown length takes its share as it grows.
        let budget = match object.content_length {
            Some(len) => match kib_permit(&cache.fill_budget, len) {
                Ok(permit) => Some(permit),
                Err(()) => {
                    cache.metrics.fill_budget_exhausted.inc();
                    tracing::debug!(bucket = %self.obj.bucket, size = len, "fill_memory exhausted; streaming uncached");
                    return self.fill.set_head(Head::Bypass);
                }
            },
            None => None,
        };
        let OriginObject {
            meta,
            content_length,
            body,
            exchange,
            ..
        } = *object;
        let stamp = cache.stamp(&meta, &exchange);
        // `no-store` and `private` objects stream through the fill (concurrent requests
        // still share the one GET) and are never stored.
        let keep = stamp.directives.storable();
        let head = Streamed {
            meta: Arc::new(meta),
            status: if keep {
                CacheStatus::Miss
            } else {
                CacheStatus::Bypass
            },
            stamp,
            length: content_length,
        };
        self.fill.set_head(Head::Body(head.clone()));
        match content_length {
            Some(len) => self.pump(&head, keep, len, body).await,
            None => self.pump_open_ended(&head, keep, body).await,
        }
        drop(budget);
    }

    /// The origin's answer to a GET of the object, conditional on `stale`'s ETag when
    /// there is a stale copy. A `304` that names another strong validator is not about
    /// that copy (RFC 9111 §4.3.4): the object is asked for again, whole.
    async fn ask(&self, stale: Option<&Cached>) -> Result<Fetched, crate::origin::OriginError> {
        let etag = stale.and_then(|s| s.meta.etag.clone());
        let req = GetRequest {
            if_none_match: etag.clone(),
            ..GetRequest::default()
        };
        let answer = self.origins.get(&self.tenant, &self.obj, &req).await;
        if let (Ok(Fetched::NotModified(nm)), Some(ours)) = (&answer, &etag)
            && let Some(theirs) = &nm.fields.etag
            && !theirs.starts_with("W/")
            && !same_etag(theirs, ours)
        {
            tracing::warn!(bucket = %self.obj.bucket, "origin answered 304 for another version; fetching it whole");
            return self
                .origins
                .get(&self.tenant, &self.obj, &GetRequest::default())
                .await;
        }
        answer
    }

    /// The stale copy is good again: its stored headers are updated from the `304`
    /// (RFC 9111 §4.3.4), its age and lifetime start anew from it, in memory and in its
    /// disk file. A `304` that now forbids storing (`no-store`, `private`) answers this
    /// request and drops the entry.
    async fn refresh(&self, stale: &Cached, answer: &NotModified) {
        let cache = &self.cache;
        let mut meta = ObjectMeta::clone(&stale.meta);
        meta.update(&answer.fields);
        let stamp = cache.stamp(&meta, &answer.exchange);
        let fresh = Cached::new(Arc::new(meta), stale.body.clone(), stamp);
        if stamp.directives.storable() {
            cache
                .entries
                .insert(self.key.clone(), Entry::Object(fresh.clone()))
                .await;
            cache.write_disk(&self.key, &fresh);
        } else {
            let key = self.key.clone();
            cache.purge(move |k| *k == key).await;
        }
        self.fill
            .set_head(Head::Ready(fresh, CacheStatus::Revalidated));
    }

    /// Streams a fresh object from its disk file into the fill, block by block, and puts
    /// it in memory once it is whole. A block found bad mid-body, or one a hung disk does
    /// not give within its deadline, is replaced by the origin's bytes: the rest of the
    /// same version is fetched and streamed on ([`FillTask::resume`]), so readers get the
    /// right bytes either way.
    async fn stream_disk(&self, reading: Box<disk::Reading>, stamp: Stamp) {
        let disk::Reading {
            meta,
            first,
            rest,
            budget,
            ..
        } = *reading;
        let head = Streamed {
            length: Some(meta.size),
            meta: Arc::new(meta),
            status: CacheStatus::Hit,
            stamp,
        };
        self.fill.set_head(Head::Body(head.clone()));
        let streamed = match rest {
            Some(rest) => {
                self.fill.push(first);
                let fill = self.fill.clone();
                rest.stream(move |block| fill.push(block)).await
            }
            None => Ok(first),
        };
        match streamed {
            Ok(last) => {
                // Stored before the last block is released, as a fill from the origin is.
                let mut pieces = self.fill.pieces();
                pieces.push(last.clone());
                let cached = Cached::new(head.meta, Pieces::new(pieces), stamp);
                self.cache
                    .entries
                    .insert(self.key.clone(), Entry::Object(cached))
                    .await;
                self.fill.push(last);
                self.fill.finish(End::Complete);
            }
            Err(disk::Cut::At { good }) => self.resume(&head, good).await,
            Err(disk::Cut::Lost) => self.fill.finish(End::Broken),
        }
        drop(budget);
    }

    /// The body from byte `good` on, from the origin, after the disk copy went bad (or
    /// the disk hung) there: only the same version (`If-Match` its ETag), and exactly that
    /// range, or the transfer breaks (never a byte of another version).
    async fn resume(&self, head: &Streamed, good: u64) {
        let meta = &head.meta;
        let Some(etag) = meta.etag.clone() else {
            return self.fill.finish(End::Broken);
        };
        let expected = meta.size.saturating_sub(good);
        let range = format!("bytes {good}-{}/{}", meta.size.saturating_sub(1), meta.size);
        let req = GetRequest {
            range: Some(format!("bytes={good}-")),
            if_match: Some(etag.clone()),
            ..GetRequest::default()
        };
        match self.origins.get(&self.tenant, &self.obj, &req).await {
            Ok(Fetched::Object(o))
                if o.meta.etag.as_deref() == Some(etag.as_str())
                    && o.content_length == Some(expected)
                    && o.content_range.as_deref() == Some(range.as_str()) =>
            {
                tracing::info!(bucket = %self.obj.bucket, from = good, "disk copy bad or hung mid-body; rest from the origin");
                self.pump(head, true, expected, o.body).await;
            }
            Ok(_) => {
                tracing::warn!(bucket = %self.obj.bucket, "disk copy bad or hung mid-body and the origin has another version; transfer cut");
                self.fill.finish(End::Broken);
            }
            Err(e) => {
                tracing::warn!(bucket = %self.obj.bucket, error = %e, "disk copy bad or hung mid-body and the origin failing; transfer cut");
                self.fill.finish(End::Broken);
            }
        }
    }

    /// Copies the body into the fill; caches it (when `keep`) only if exactly `expected`
    /// bytes came.
    async fn pump(
        &self,
        head: &Streamed,
        keep: bool,
        expected: u64,
        mut body: aws_sdk_s3::primitives::ByteStream,
    ) {
        let idle = self.origins.idle_timeout();
        let mut writer = PieceWriter::new(expected);
        let mut received = 0u64;
        while received < expected {
            match next_chunk(&mut body, idle).await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    if received > expected {
                        tracing::warn!(bucket = %self.obj.bucket, "origin sent more than Content-Length");
                        return self.fill.finish(End::Broken);
                    }
                    let mut done = writer.write(&chunk);
                    // The final piece is released only after the entry is stored, so a
                    // client that has every byte finds the object in the cache.
                    let last = if received == expected {
                        done.pop()
                    } else {
                        None
                    };
                    for piece in done {
                        self.fill.push(piece);
                    }
                    if let Some(last) = last {
                        if keep {
                            let mut pieces = self.fill.pieces();
                            pieces.push(last.clone());
                            self.store(head, pieces).await;
                        }
                        self.fill.push(last);
                    }
                }
                Ok(None) => {
                    tracing::warn!(bucket = %self.obj.bucket, got = received, expected, "origin body ended early");
                    return self.fill.finish(End::Broken);
                }
                Err(e) => {
                    tracing::warn!(bucket = %self.obj.bucket, error = %e, "origin body broken");
                    return self.fill.finish(End::Broken);
                }
            }
        }
        if expected == 0 && keep {
            self.store(head, Vec::new()).await;
        }
        self.fill.finish(End::Complete);
    }

    /// Copies a body of unknown length (chunked, or ended by closing the connection)
    /// into the fill, taking its share of `fill_memory` as it grows. It is cached (when
    /// `keep`) only once it ended cleanly within `max_object_size` and the budget. One
    /// that outgrows either streams on to its readers without being kept (the key is
    /// then marked too large, so later requests stream from the origin): the fill
    /// forgets what every reader has read and holds at most [`FORGET_WINDOW`] bytes
    /// beyond the slowest one.
    async fn pump_open_ended(
        &self,
        head: &Streamed,
        keep: bool,
        mut body: aws_sdk_s3::primitives::ByteStream,
    ) {
        let cache = &self.cache;
        let idle = self.origins.idle_timeout();
        let limit = cache.cfg.max_object_size.0;
        let mut budget: Option<OwnedSemaphorePermit> = None;
        let mut writer = PieceWriter::open_ended();
        let mut received = 0u64;
        loop {
            let chunk = match next_chunk(&mut body, idle).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(bucket = %self.obj.bucket, error = %e, got = received, "origin body broken");
                    cache
                        .metrics
                        .tenant_origin_bytes(&self.tenant.name, received);
                    return self.fill.finish(End::Broken);
                }
            };
            received += chunk.len() as u64;
            if !self.fill.forgets() {
                let too_large = received > limit;
                if too_large || !grow(&mut budget, &cache.fill_budget, received) {
                    if too_large {
                        cache.large.insert(self.key.clone(), ()).await;
                        tracing::info!(bucket = %self.obj.bucket, "a body of unknown length outgrew max_object_size; streamed uncached");
                    } else {
                        cache.metrics.fill_budget_exhausted.inc();
                    }
                    self.fill.forget();
                    shrink(&mut budget, FORGET_WINDOW);
                }
            }
            for piece in writer.write(&chunk) {
                self.fill.push(piece);
            }
            if self.fill.forgets() && !self.fill.make_room(FORGET_WINDOW).await {
                tracing::debug!(bucket = %self.obj.bucket, "no reader left for a body not kept; fetch stopped");
                cache
                    .metrics
                    .tenant_origin_bytes(&self.tenant.name, received);
                return self.fill.finish(End::Broken);
            }
        }
        cache
            .metrics
            .tenant_origin_bytes(&self.tenant.name, received);
        let last = writer.finish();
        if keep && !self.fill.forgets() {
            let mut pieces = self.fill.pieces();
            pieces.extend(last.clone());
            let whole = Streamed {
                meta: Arc::new(ObjectMeta {
                    size: received,
                    ..ObjectMeta::clone(&head.meta)
                }),
                ..head.clone()
            };
            self.store(&whole, pieces).await;
        }
        if let Some(last) = last {
            self.fill.push(last);
        }
        self.fill.finish(End::Complete);
        drop(budget);
    }

    /// Puts the whole object (these pieces, shared with the fill's readers) in the cache.
    async fn store(&self, head: &Streamed, pieces: Vec<bytes::Bytes>) {
        let cached = Cached::new(head.meta.clone(), Pieces::new(pieces), head.stamp);
        self.cache.write_disk(&self.key, &cached);
        self.cache
            .entries
            .insert(self.key.clone(), Entry::Object(cached))
            .await;
    }
}

/// Extends `held` (permits of `budget`, in KiB) to cover `bytes`; `false` if the budget
/// has no room for that much now.
fn grow(held: &mut Option<OwnedSemaphorePermit>, budget: &Arc<Semaphore>, bytes: u64) -> bool {
    let have = held.as_ref().map_or(0, |p| p.num_permits() as u64);
    let want = kib(bytes).max(1);
    if want <= have {
        return true;
    }
    match kib_permit(budget, (want - have) * 1024) {
        Ok(more) => {
            match held {
                Some(p) => p.merge(more),
                None => *held = Some(more),
            }
            true
        }
        Err(()) => false,
    }
}

/// Gives back what `held` has beyond `bytes`.
fn shrink(held: &mut Option<OwnedSemaphorePermit>, bytes: u64) {
    if let Some(p) = held {
        let keep = kib(bytes) as usize;
        if p.num_permits() > keep {
            drop(p.split(p.num_permits() - keep));
        }
    }
}

/// An earlier copy of a key, as a fill finds it.
enum Earlier {
    Fresh(Arc<Cached>),
    /// Fresh on disk and larger than one block: its first block is read and checked.
    Streaming(Box<disk::Reading>, Stamp),
    Expired(Arc<Cached>),
    None,
}
