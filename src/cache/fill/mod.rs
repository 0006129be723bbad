//! The miss path: one fill's task, which fetches a cold or expired object once for
//! every request that wants it. It starts from an earlier copy (the expired one, or the
//! disk tier's), asks the origin (conditionally, when there is a copy to revalidate),
//! decides with [`freshness::outcome`] what the answer means, and streams the body into
//! the [`shared::Fill`] its readers follow, storing it once it arrived whole.

pub(crate) mod inflight;
pub(crate) mod shared;

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::error::Error;
use crate::object::{ObjectMeta, same_etag};
use crate::origin::{Fetched, GetRequest, NotModified, OriginError, OriginObject, next_chunk};
use crate::request::ObjectRequest;

use super::budget::{grow, kib_permit, shrink};
use super::disk;
use super::entry::{CacheKey, Cached, Stamp};
use super::freshness::{self, Answer, Outcome};
use super::pieces::{PieceWriter, Pieces};
use super::tiers::{Earlier, REVALIDATION_BACKOFF, Tiers};
use crate::cache_status::CacheStatus;
use inflight::Leader;
use shared::{End, Fill, Head, Streamed};

/// The task behind one fill: owns the upstream GET, outlives any one client.
struct FillTask {
    tiers: Arc<Tiers>,
    req: ObjectRequest,
    key: CacheKey,
    fill: Arc<Fill>,
    stale: Option<Arc<Cached>>,
}

/// Starts the fill `leader` owns, from `stale` (an expired copy to revalidate, if any):
/// its task fetches the object and outlives any one client; the leader guard is held to
/// the task's end, however it ends.
pub(crate) fn start(
    tiers: Arc<Tiers>,
    req: ObjectRequest,
    leader: Leader,
    stale: Option<Arc<Cached>>,
) {
    let task = FillTask {
        tiers,
        req,
        key: leader.key().clone(),
        fill: leader.fill.clone(),
        stale,
    };
    tokio::spawn(async move {
        let _leader = leader;
        task.fetch().await;
    });
}

/// What a fill that does not keep its body holds at most beyond what its slowest reader
/// has read (docs/design.md, "Bodies of unknown length").
const FORGET_WINDOW: u64 = 1 << 20;

impl FillTask {
    #[warn(clippy::wildcard_enum_match_arm)]
    async fn fetch(&self) {
        let tiers = &self.tiers;
        let stale = match tiers.earlier(&self.key, self.stale.as_ref(), true).await {
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
        let now = tiers.clock.now();
        let stored = stale.as_ref().map(|c| c.stored());
        let outcome = freshness::outcome(answer, stored.as_ref(), now);
        let object = match (outcome, result, &stale) {
            (Outcome::Take, Ok(Fetched::Object(o)), _) => o,
            (Outcome::Refresh, Ok(Fetched::NotModified(answer)), Some(stale)) => {
                return self.refresh(stale, &answer).await;
            }
            (Outcome::RememberNotFound, Err(e), _) => {
                tiers.remember_not_found(&self.key, now).await;
                return self.fill.set_head(Head::Failed(e.into_error()));
            }
            (Outcome::ServeStale, Err(e), Some(stale)) => {
                tracing::warn!(bucket = %self.req.obj.bucket, error = %e, "origin failing; serving stale copy");
                let backing_off = stale.backing_off(now + REVALIDATION_BACKOFF);
                tiers.insert(&self.key, backing_off.clone()).await;
                return self
                    .fill
                    .set_head(Head::Ready(backing_off, CacheStatus::Stale));
            }
            (Outcome::Fail, Err(e), _) => return self.fill.set_head(Head::Failed(e.into_error())),
            (Outcome::Unexpected, Ok(_), _) => {
                let e = Error::bad_gateway().with_detail("unexpected 304");
                return self.fill.set_head(Head::Failed(e));
            }
            // The outcome was decided from this very answer and entry, so no other pairing
            // arises; every outcome is named so that a new one does not compile unhandled.
            (
                Outcome::Take
                | Outcome::Refresh
                | Outcome::RememberNotFound
                | Outcome::ServeStale
                | Outcome::Fail
                | Outcome::Unexpected,
                result,
                _,
            ) => {
                let e = match result {
                    Err(e) => e.into_error(),
                    Ok(_) => {
                        Error::bad_gateway().with_detail("an answer the decision did not expect")
                    }
                };
                return self.fill.set_head(Head::Failed(e));
            }
        };
        if let Err(e) = self.req.allows(&object.meta) {
            return self.fill.set_head(Head::Failed(e));
        }
        if object
            .content_length
            .is_some_and(|len| len > tiers.cfg.max_object_size.0)
        {
            tiers.mark_large(&self.key).await;
            return self.fill.set_head(Head::Bypass);
        }
        // Within fill_memory, or not at all: the request streams uncached instead. A body
        // of unknown length takes its share as it grows.
        let budget = match object.content_length {
            Some(len) => match kib_permit(&tiers.fill_budget, len) {
                Ok(permit) => Some(permit),
                Err(()) => {
                    tiers.metrics.fill_budget_exhausted.inc();
                    tracing::debug!(bucket = %self.req.obj.bucket, size = len, "fill_memory exhausted; streaming uncached");
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
        let stamp = tiers.stamp(&meta, &exchange);
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
            Some(len) => self.pump(&head, keep, len, body, Vec::new()).await,
            None => self.pump_open_ended(&head, keep, body).await,
        }
        drop(budget);
    }

    /// The origin's answer to a GET of the object, conditional on `stale`'s ETag when
    /// there is a stale copy. A `304` that names another strong validator is not about
    /// that copy (RFC 9111 §4.3.4): the object is asked for again, whole.
    async fn ask(&self, stale: Option<&Cached>) -> Result<Fetched, OriginError> {
        let etag = stale.and_then(|s| s.meta.fields.etag.clone());
        let req = GetRequest {
            if_none_match: etag.clone(),
            ..self.req.get()
        };
        let (origins, tenant, obj) = (&self.req.origins, &self.req.tenant, &self.req.obj);
        let answer = origins.get(tenant, obj, &req).await;
        if let (Ok(Fetched::NotModified(nm)), Some(ours)) = (&answer, &etag)
            && let Some(theirs) = &nm.fields.etag
            && !theirs.starts_with("W/")
            && !same_etag(theirs, ours)
        {
            tracing::warn!(bucket = %obj.bucket, "origin answered 304 for another version; fetching it whole");
            return origins.get(tenant, obj, &self.req.get()).await;
        }
        answer
    }

    /// The stale copy is good again: its stored headers are updated from the `304`
    /// (RFC 9111 §4.3.4), its age and lifetime start anew from it, in memory and in its
    /// disk file. A `304` that now forbids storing (`no-store`, `private`) answers this
    /// request and drops the entry.
    async fn refresh(&self, stale: &Cached, answer: &NotModified) {
        let tiers = &self.tiers;
        let mut meta = ObjectMeta::clone(&stale.meta);
        meta.update(&answer.fields);
        let stamp = tiers.stamp(&meta, &answer.exchange);
        let fresh = Cached::new(Arc::new(meta), stale.body.clone(), stamp);
        if stamp.directives.storable() {
            tiers.insert(&self.key, fresh.clone()).await;
            tiers.write_disk(&self.key, &fresh);
        } else {
            let key = self.key.clone();
            tiers.purge(move |k| *k == key).await;
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
                self.tiers.insert(&self.key, cached).await;
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
        let Some(etag) = meta.fields.etag.clone() else {
            return self.fill.finish(End::Broken);
        };
        let expected = meta.size.saturating_sub(good);
        let range = format!("bytes {good}-{}/{}", meta.size.saturating_sub(1), meta.size);
        let req = GetRequest {
            range: Some(format!("bytes={good}-")),
            if_match: Some(etag.clone()),
            ..self.req.get()
        };
        let obj = &self.req.obj;
        match self.req.origins.get(&self.req.tenant, obj, &req).await {
            Ok(Fetched::Object(o))
                if o.meta.fields.etag.as_deref() == Some(etag.as_str())
                    && o.content_length == Some(expected)
                    && o.content_range.as_deref() == Some(range.as_str()) =>
            {
                tracing::info!(bucket = %obj.bucket, from = good, "disk copy bad or hung mid-body; rest from the origin");
                // The entry is what the disk gave so far, then what the origin sends.
                let before = self.fill.pieces();
                self.pump(head, true, expected, o.body, before).await;
            }
            Ok(_) => {
                tracing::warn!(bucket = %obj.bucket, "disk copy bad or hung mid-body and the origin has another version; transfer cut");
                self.fill.finish(End::Broken);
            }
            Err(e) => {
                tracing::warn!(bucket = %obj.bucket, error = %e, "disk copy bad or hung mid-body and the origin failing; transfer cut");
                self.fill.finish(End::Broken);
            }
        }
    }

    /// Copies the body into the fill; caches it (when `keep`), after `before` (the
    /// object's bytes already in the fill), only if exactly `expected` bytes came.
    async fn pump(
        &self,
        head: &Streamed,
        keep: bool,
        expected: u64,
        mut body: aws_sdk_s3::primitives::ByteStream,
        mut before: Vec<bytes::Bytes>,
    ) {
        let obj = &self.req.obj;
        let idle = self.req.origins.idle_timeout();
        let mut writer = PieceWriter::new(expected, keep);
        let mut received = 0u64;
        while received < expected {
            match next_chunk(&mut body, idle).await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    if received > expected {
                        tracing::warn!(bucket = %obj.bucket, "origin sent more than Content-Length");
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
                            let mut whole = std::mem::take(&mut before);
                            whole.extend(writer.whole());
                            self.store(head, whole).await;
                        }
                        self.fill.push(last);
                    }
                }
                Ok(None) => {
                    tracing::warn!(bucket = %obj.bucket, got = received, expected, "origin body ended early");
                    return self.fill.finish(End::Broken);
                }
                Err(e) => {
                    tracing::warn!(bucket = %obj.bucket, error = %e, "origin body broken");
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
        let tiers = &self.tiers;
        let idle = self.req.origins.idle_timeout();
        let limit = tiers.cfg.max_object_size.0;
        let obj = &self.req.obj;
        let mut budget: Option<OwnedSemaphorePermit> = None;
        let mut writer = PieceWriter::open_ended(keep);
        // No length was announced to count at the head: the bytes are counted as they
        // come, for the tenant, however the body ends.
        let mut received = Unannounced {
            tiers,
            tenant: &self.req.tenant.name,
            bytes: 0,
        };
        loop {
            let chunk = match next_chunk(&mut body, idle).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(bucket = %obj.bucket, error = %e, got = received.bytes, "origin body broken");
                    return self.fill.finish(End::Broken);
                }
            };
            received.bytes += chunk.len() as u64;
            if !self.fill.forgets() {
                let too_large = received.bytes > limit;
                if too_large || !grow(&mut budget, &tiers.fill_budget, received.bytes) {
                    if too_large {
                        tiers.mark_large(&self.key).await;
                        tracing::info!(bucket = %obj.bucket, "a body of unknown length outgrew max_object_size; streamed uncached");
                    } else {
                        tiers.metrics.fill_budget_exhausted.inc();
                    }
                    self.fill.forget();
                    writer.stop_keeping();
                    shrink(&mut budget, FORGET_WINDOW);
                }
            }
            for piece in writer.write(&chunk) {
                self.fill.push(piece);
            }
            if self.fill.forgets() && !self.fill.make_room(FORGET_WINDOW).await {
                tracing::debug!(bucket = %obj.bucket, "no reader left for a body not kept; fetch stopped");
                return self.fill.finish(End::Broken);
            }
        }
        let last = writer.finish();
        if keep && !self.fill.forgets() {
            let whole = Streamed {
                meta: Arc::new(ObjectMeta {
                    size: received.bytes,
                    ..ObjectMeta::clone(&head.meta)
                }),
                ..head.clone()
            };
            self.store(&whole, writer.whole()).await;
        }
        if let Some(last) = last {
            self.fill.push(last);
        }
        self.fill.finish(End::Complete);
        drop(budget);
    }

    /// Puts the whole object (these blocks, shared with the fill's readers) in the cache.
    async fn store(&self, head: &Streamed, pieces: Vec<bytes::Bytes>) {
        let cached = Cached::new(head.meta.clone(), Pieces::new(pieces), head.stamp);
        self.tiers.write_disk(&self.key, &cached);
        self.tiers.insert(&self.key, cached).await;
    }
}

/// Origin bytes that no `Content-Length` announced, counted for their tenant when
/// dropped.
struct Unannounced<'a> {
    tiers: &'a Tiers,
    tenant: &'a str,
    bytes: u64,
}

impl Drop for Unannounced<'_> {
    fn drop(&mut self) {
        self.tiers
            .metrics
            .tenant_origin_bytes(self.tenant, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::auth::Tenants;
    use crate::cache::fill::inflight::Inflight;
    use crate::cache::tiers::Found;
    use crate::clock::Clock;
    use crate::config::{self, Config, Size};
    use crate::metrics::Metrics;
    use crate::object::StoredFields;
    use crate::origin::Origins;
    use crate::pattern::{BucketPattern, MediaRange};
    use crate::source::ObjectRef;
    use crate::store::Store;

    /// The miss path against a real S3 server (the embedded store on loopback).
    struct Harness {
        store: Store,
        stop: CancellationToken,
        tiers: Arc<Tiers>,
        inflight: Arc<Inflight>,
        req: ObjectRequest,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn harness(edit: impl FnOnce(&mut config::CacheConfig)) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let store = Store::start(listener, "AKIDTEST", "test-secret", stop.clone()).unwrap();
        store
            .client()
            .create_bucket()
            .bucket("bkt")
            .send()
            .await
            .unwrap();
        let mut config = Config::default();
        config.origin.max_attempts = 1;
        config.origin.first_byte_timeout = config::Dur::secs(2);
        config.tenants = vec![config::TenantConfig {
            name: "t".into(),
            buckets: vec![BucketPattern::parse("bkt").unwrap()],
            require_signature: false,
            ..Default::default()
        }];
        *config.buckets = vec![config::Bucket {
            name: "bkt".into(),
            endpoint: Some(store.endpoint.clone()),
            path_style: true,
            ..Default::default()
        }];
        edit(&mut config.cache);
        let metrics = Arc::new(Metrics::new());
        let origins = Origins::new(&config, Some(store.access()), metrics.clone()).await;
        let tenant = Tenants::from_config(&config)
            .for_bucket("bkt")
            .unwrap()
            .clone();
        let tiers = Arc::new(Tiers::new(
            &config.cache,
            metrics,
            Arc::new(Clock::default()),
        ));
        let req = ObjectRequest {
            origins: Arc::new(origins),
            tenant,
            client: crate::peer::ClientKey::of(std::net::Ipv4Addr::LOCALHOST.into()),
            obj: ObjectRef::new(Default::default(), "bkt", "k.png").unwrap(),
            allowed: [MediaRange::parse("image/*").unwrap()].into(),
            head: false,
            passthrough: GetRequest::default(),
            spans: None,
        };
        Harness {
            store,
            stop,
            tiers,
            inflight: Arc::new(Inflight::default()),
            req,
        }
    }

    impl Harness {
        fn key(&self) -> CacheKey {
            CacheKey::of(&self.req.obj)
        }

        async fn put(&self, body: Vec<u8>) {
            let body = aws_sdk_s3::primitives::ByteStream::from(body);
            self.store
                .put("bkt", "k.png", body, "image/png")
                .await
                .unwrap();
        }

        /// Starts a fill for the key from `stale`; the fill and one request's place.
        fn fill(&self, stale: Option<Arc<Cached>>) -> (Arc<Fill>, shared::Place) {
            let (fill, leader) = self.inflight.join_or_lead(&self.key());
            let place = fill.place().unwrap();
            start(self.tiers.clone(), self.req.clone(), leader.unwrap(), stale);
            (fill, place)
        }

        /// Waits for every fill to end (its task dropped its leader guard).
        async fn settled(&self) {
            while !self.inflight.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        fn budget_free(&self) -> bool {
            let all = crate::cache::budget::kib(self.tiers.cfg.fill_memory.0) as usize;
            self.tiers.fill_budget.available_permits() == all
        }
    }

    async fn collect(
        s: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>,
    ) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_cold_object_streams_to_its_readers_and_is_stored_once_whole() {
        let h = harness(|_| {}).await;
        let body = bytes(300_000);
        h.put(body.clone()).await;
        let (fill, place) = h.fill(None);
        let Head::Body(head) = fill.head().await else {
            panic!("a body to stream");
        };
        assert_eq!(
            (head.status, head.length),
            (CacheStatus::Miss, Some(300_000))
        );
        assert_eq!(collect(place.reader(0, head.length)).await.unwrap(), body);
        h.settled().await;
        let now = h.tiers.clock.now();
        let Found::Answer(cached, CacheStatus::Hit) = h.tiers.look(&h.key(), now).await else {
            panic!("stored, fresh");
        };
        assert_eq!(cached.body.to_vec(), body);
        assert!(h.budget_free(), "fill_memory given back");
    }

    #[tokio::test]
    async fn what_is_not_kept_goes_past_the_cache() {
        // Over max_object_size: passed, and marked so that the next request skips the fill.
        let h = harness(|c| c.max_object_size = Size(1000)).await;
        h.put(bytes(5000)).await;
        let (fill, _place) = h.fill(None);
        assert!(matches!(fill.head().await, Head::Bypass));
        assert!(h.tiers.is_large(&h.key()).await);
        // No room in fill_memory: passed, not marked (the next one may fit).
        let h = harness(|c| c.fill_memory = Size(4096)).await;
        h.put(bytes(5000)).await;
        let (fill, _place) = h.fill(None);
        assert!(matches!(fill.head().await, Head::Bypass));
        assert!(!h.tiers.is_large(&h.key()).await);
        assert_eq!(h.tiers.metrics.fill_budget_exhausted.get(), 1);
    }

    #[tokio::test]
    async fn a_missing_object_is_remembered() {
        let h = harness(|_| {}).await;
        let (fill, _place) = h.fill(None);
        let Head::Failed(e) = fill.head().await else {
            panic!("a 404");
        };
        assert_eq!(e.status(), 404);
        h.settled().await;
        assert!(matches!(
            h.tiers.look(&h.key(), h.tiers.clock.now()).await,
            Found::Absent
        ));
    }

    #[tokio::test]
    async fn a_failing_origin_serves_the_stale_copy_while_it_may() {
        let h = harness(|_| {}).await;
        h.put(bytes(1000)).await;
        let (fill, place) = h.fill(None);
        let Head::Body(head) = fill.head().await else {
            panic!("a body");
        };
        collect(place.reader(0, head.length)).await.unwrap();
        h.settled().await;
        let Found::Answer(cached, _) = h.tiers.look(&h.key(), h.tiers.clock.now()).await else {
            panic!("stored");
        };
        // Past its hour, within stale_if_error; the origin gone.
        h.tiers.clock.advance(Duration::from_secs(3700));
        h.stop.cancel();
        let (fill, _place) = h.fill(Some(cached.clone()));
        let Head::Ready(stale, CacheStatus::Stale) = fill.head().await else {
            panic!("the stale copy");
        };
        assert_eq!(stale.body.to_vec(), cached.body.to_vec());
        assert!(stale.retry_at.is_some(), "backing off from the origin");
        // Past lifetime + stale_if_error: the error, not the copy.
        h.tiers.clock.advance(Duration::from_secs(3600));
        h.settled().await;
        let (fill, _place) = h.fill(Some(cached));
        assert!(matches!(fill.head().await, Head::Failed(_)));
    }

    /// A task for `h`'s key with `body` (chunks, then an end or an error) as the origin's
    /// body of unknown length.
    async fn pump_unsized(
        h: &Harness,
        chunks: Vec<Result<Bytes, std::io::Error>>,
    ) -> (Arc<Fill>, shared::Place) {
        let frames =
            futures_util::stream::iter(chunks.into_iter().map(|c| c.map(http_body::Frame::data)));
        let body = aws_sdk_s3::primitives::ByteStream::from_body_1_x(
            http_body_util::StreamBody::new(frames),
        );
        let (fill, leader) = h.inflight.join_or_lead(&h.key());
        let place = fill.place().unwrap();
        let task = FillTask {
            tiers: h.tiers.clone(),
            req: h.req.clone(),
            key: h.key(),
            fill: fill.clone(),
            stale: None,
        };
        let meta = ObjectMeta {
            fields: StoredFields {
                content_type: Some("image/png".into()),
                ..StoredFields::default()
            },
            ..ObjectMeta::default()
        };
        let head = Streamed {
            stamp: h.tiers.stamp(&meta, &crate::object::Exchange::now()),
            meta: Arc::new(meta),
            status: CacheStatus::Miss,
            length: None,
        };
        fill.set_head(Head::Body(head.clone()));
        tokio::spawn(async move {
            let _leader = leader;
            task.pump_open_ended(&head, true, body).await;
        });
        (fill, place)
    }

    #[tokio::test]
    async fn an_unsized_body_is_kept_only_once_it_ended_whole() {
        let h = harness(|_| {}).await;
        let chunks = (0..10)
            .map(|i| Ok(Bytes::from(vec![i as u8; 30_000])))
            .collect();
        let (_fill, place) = pump_unsized(&h, chunks).await;
        let got = collect(place.reader(0, None)).await.unwrap();
        assert_eq!(got.len(), 300_000);
        h.settled().await;
        let Found::Answer(cached, _) = h.tiers.look(&h.key(), h.tiers.clock.now()).await else {
            panic!("kept");
        };
        assert_eq!((cached.meta.size, cached.body.to_vec()), (300_000, got));
        assert!(h.budget_free());

        let h = harness(|_| {}).await;
        let broken = vec![
            Ok(Bytes::from(vec![1u8; 30_000])),
            Err(std::io::Error::other("connection reset")),
        ];
        let (_fill, place) = pump_unsized(&h, broken).await;
        assert!(
            collect(place.reader(0, None)).await.is_err(),
            "a broken transfer"
        );
        h.settled().await;
        assert!(matches!(
            h.tiers.look(&h.key(), h.tiers.clock.now()).await,
            Found::Miss(None)
        ));
        assert!(h.budget_free());
    }

    /// Past max_object_size, the body streams on whole to a slow reader; the fill holds
    /// at most its window beyond it, and keeps nothing.
    #[tokio::test]
    async fn an_unsized_body_over_the_limit_streams_on_and_is_forgotten() {
        let h = harness(|c| c.max_object_size = Size(100 << 10)).await;
        let chunks: Vec<_> = (0..64)
            .map(|i| Ok(Bytes::from(vec![i as u8; 64 << 10])))
            .collect();
        let (fill, place) = pump_unsized(&h, chunks).await;
        let mut reader = std::pin::pin!(place.reader(0, None));
        let mut got = 0usize;
        let mut most_held = 0u64;
        while let Some(chunk) = reader.next().await {
            got += chunk.unwrap().len();
            // A slow reader: let the fill run ahead as far as it may.
            tokio::task::yield_now().await;
            let held: u64 = fill.pieces().iter().map(|p| p.len() as u64).sum();
            most_held = most_held.max(held);
        }
        assert_eq!(got, 64 << 16);
        assert!(fill.forgets());
        assert!(most_held <= FORGET_WINDOW + (256 << 10), "held {most_held}");
        h.settled().await;
        assert!(h.tiers.is_large(&h.key()).await);
        assert!(matches!(
            h.tiers.look(&h.key(), h.tiers.clock.now()).await,
            Found::Miss(None)
        ));
        assert!(h.budget_free());
    }
}
