//! Variants in the cache. A variant is an entry like any object, keyed by its object's
//! key plus the variant's id, so purges and the disk tier treat it as they treat objects.
//! Its fill renders instead of fetching: the source comes through [`Cache::serve`] (from
//! memory, disk or the origin: one GET for all of an object's variants), the render runs
//! on the [`RenderPool`], and concurrent requests for one variant wait for that one
//! render.
//!
//! A variant is as fresh as the source it was made from (same `stored_at`, same rules)
//! and its ETag is made from the source's. When it expires, the source is looked up again
//! (revalidated once if it expired too); the same source ETag keeps the variant
//! (`REVALIDATED`, no render), another one renders it again.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::cache_status::CacheStatus;
use crate::error::{Error, Kind, Side};
use crate::metrics::RenderOutcome;
use crate::object::{ObjectMeta, StoredFields};
use crate::origin::OriginObject;
use crate::origin::next_chunk;
use crate::request::ObjectRequest;
use crate::variant::pool::{PoolError, RenderPool};
use crate::variant::render::{self, RenderError};
use crate::variant::{Output, Variant};

use super::entry::{CacheKey, Cached, Stamp, digest_hex};
use super::fill::inflight::Leader;
use super::fill::shared::{Fill, Head};
use super::freshness;
use super::lookup::{Lookup, Served};
use super::pieces::Pieces;
use super::tiers::{Earlier, Found, REVALIDATION_BACKOFF};

/// A variant request as the cache needs it.
pub struct VariantQuery<'a> {
    pub variant: &'a Variant,
    /// The format negotiated for this client.
    pub output: Output,
    pub pool: &'a Arc<RenderPool>,
}

/// The variant of the object `req` names that `query` asks for, rendered once for all
/// concurrent requests and cached like an object.
pub(crate) async fn serve(
    lookup: &Lookup,
    req: &ObjectRequest,
    query: &VariantQuery<'_>,
) -> Result<Served, Error> {
    let tiers = &lookup.tiers;
    let key = CacheKey {
        variant: Some(query.variant.cache_id(query.output)),
        ..CacheKey::of(&req.obj)
    };
    let task = |fill: Arc<Fill>, stale: Option<Arc<Cached>>| RenderTask {
        lookup: lookup.clone(),
        req: req.whole(),
        key: key.clone(),
        fill,
        stale,
        spec: render::Spec {
            w: query.variant.w,
            h: query.variant.h,
            fit: query.variant.fit,
            q: query.variant.q,
            output: query.output,
        },
        pool: query.pool.clone(),
    };
    let now = tiers.clock.now();
    let stale = match tiers.look(&key, now).await {
        Found::Answer(cached, status) => {
            if status == CacheStatus::Hit {
                tiers.metrics.tiers.memory_hits.inc();
            }
            return Ok(complete(cached, status, now));
        }
        Found::Absent => return Ok(Served::NotFound),
        Found::Revalidate(stale) => {
            let (fill, leader) = lookup.inflight.join_or_lead(&key);
            if let Some(leader) = leader {
                spawn(leader, task(fill, Some(stale.clone())));
            }
            return Ok(complete(stale, CacheStatus::Stale, now));
        }
        Found::Miss(stale) => stale,
    };
    let (fill, leader) = lookup.inflight.join_or_lead(&key);
    match leader {
        Some(leader) => spawn(leader, task(fill.clone(), stale)),
        None => {
            tiers.metrics.coalesced.inc();
        }
    }
    match fill.head().await {
        Head::Ready(c, status) => Ok(complete(c, status, tiers.clock.now())),
        Head::Failed(e) => Err(e),
        Head::Pending | Head::Body(..) | Head::Bypass => Err(Error::new(
            Kind::BadGateway,
            Side::Internal,
            "the render ended without an answer",
        )),
    }
}

fn complete(cached: Arc<Cached>, status: CacheStatus, now: Instant) -> Served {
    Served::Complete {
        freshness: cached.freshness(now),
        cached,
        status,
    }
}

/// Runs a render task in its own task (a client hanging up does not cancel it); the
/// leader is held to its end, so a panic still releases the key.
fn spawn(leader: Leader, task: RenderTask) {
    tokio::spawn(async move {
        let _leader = leader;
        let head = match task.make().await {
            Ok((c, status)) => Head::Ready(c, status),
            Err(e) => Head::Failed(e),
        };
        task.fill.set_head(head);
    });
}

/// The source a variant is made from.
struct Source {
    meta: Arc<ObjectMeta>,
    body: Pieces,
    /// The variant is as fresh as its source: the same stamp.
    stamp: Stamp,
    /// `STALE` when the source is a stale copy; `BYPASS` when it may not be stored.
    status: CacheStatus,
}

struct RenderTask {
    lookup: Lookup,
    /// The source, asked for whole.
    req: ObjectRequest,
    key: CacheKey,
    fill: Arc<Fill>,
    stale: Option<Arc<Cached>>,
    spec: render::Spec,
    pool: Arc<RenderPool>,
}

impl RenderTask {
    async fn make(&self) -> Result<(Arc<Cached>, CacheStatus), Error> {
        let tiers = &self.lookup.tiers;
        let stale = match tiers.earlier(&self.key, self.stale.as_ref(), false).await {
            Earlier::Fresh(c) => return Ok((c, CacheStatus::Hit)),
            Earlier::Expired(c) => Some(c),
            Earlier::None | Earlier::Streaming(..) => None,
        };
        let renders = &tiers.metrics.renders;
        let ticket = self.pool.admit().await.map_err(|e| self.pool_error(e))?;
        let source = match self.source().await {
            Ok(source) => source,
            Err(e) => return self.stale_or(stale, e).await,
        };
        let etag = variant_etag(source.meta.fields.etag.as_deref(), &self.key);
        // Made from the same source: the old variant is good again, without a render.
        if let Some(stale) = stale
            && source.meta.fields.etag.is_some()
            && stale.meta.fields.etag.as_deref() == Some(etag.as_str())
        {
            let status = match source.status {
                CacheStatus::Stale => CacheStatus::Stale,
                _ => CacheStatus::Revalidated,
            };
            let renewed = Cached::new(stale.meta.clone(), stale.body.clone(), source.stamp);
            self.store(&renewed, source.status).await;
            return Ok((renewed, status));
        }
        let (spec, max_pixels, body) = (self.spec, self.pool.max_source_pixels, source.body);
        let rendered = ticket
            .render(move || {
                let started = Instant::now();
                let data = body.to_vec();
                (render::render(&data, &spec, max_pixels), started.elapsed())
            })
            .await
            .map_err(|e| self.pool_error(e))?;
        let rendered = match rendered {
            (Ok(r), took) => {
                renders.seconds.observe(took.as_secs_f64());
                renders.outcome(RenderOutcome::Rendered);
                r
            }
            (Err(e), _) => {
                renders.outcome(RenderOutcome::Unprocessable);
                return Err(self.render_error(e));
            }
        };
        let meta = ObjectMeta {
            size: rendered.bytes.len() as u64,
            fields: StoredFields {
                content_type: Some(rendered.format.content_type().to_string()),
                etag: Some(etag),
                last_modified: source.meta.fields.last_modified,
                // Not passed on: the bytes are no longer the object's (its encoding, its
                // download name, its language need not hold for them).
                content_encoding: None,
                content_disposition: None,
                content_language: None,
                cache_control: source.meta.fields.cache_control.clone(),
                expires: source.meta.fields.expires.clone(),
                date: source.meta.fields.date,
            },
        };
        let c = Cached::new(
            Arc::new(meta),
            Pieces::new(vec![Bytes::from(rendered.bytes)]),
            source.stamp,
        );
        self.store(&c, source.status).await;
        let status = match source.status {
            CacheStatus::Bypass | CacheStatus::Stale => source.status,
            _ => CacheStatus::Miss,
        };
        Ok((c, status))
    }

    /// The source could not be had: the expired variant is served `STALE` where the
    /// object's would be (a transient failure, within `stale_if_error`, not
    /// `must-revalidate`), so a source evicted from the cache does not turn an origin
    /// outage into errors for variants that are still there.
    async fn stale_or(
        &self,
        stale: Option<Arc<Cached>>,
        e: Error,
    ) -> Result<(Arc<Cached>, CacheStatus), Error> {
        let tiers = &self.lookup.tiers;
        let transient = e.side != Side::Client
            && matches!(
                e.kind,
                Kind::BadGateway | Kind::GatewayTimeout | Kind::Overloaded
            );
        let now = tiers.clock.now();
        match stale {
            Some(stale) if transient && freshness::may_serve_stale(&stale.stored(), now) => {
                tracing::warn!(bucket = %self.req.obj.bucket, error = %e, "source failing; serving the stale variant");
                let backing_off = stale.backing_off(now + REVALIDATION_BACKOFF);
                self.store(&backing_off, CacheStatus::Miss).await;
                Ok((backing_off, CacheStatus::Stale))
            }
            _ => Err(e),
        }
    }

    /// Keeps the variant in memory and on disk, unless its source may not be stored.
    async fn store(&self, c: &Arc<Cached>, source: CacheStatus) {
        if source == CacheStatus::Bypass {
            return;
        }
        let tiers = &self.lookup.tiers;
        tiers.write_disk(&self.key, c);
        tiers.insert(&self.key, c.clone()).await;
    }

    /// The source, whole: from the cache, from the fill that fetches it now, or (when
    /// the cache does not keep it for lack of room) straight from the origin, its bytes
    /// held under the render's ticket (docs/variants.md, "Limits and memory").
    async fn source(&self) -> Result<Source, Error> {
        let lookup = &self.lookup;
        let too_large = || async { lookup.tiers.is_large(&CacheKey::of(&self.req.obj)).await };
        match lookup.serve(&self.req).await? {
            Served::Complete { cached, status, .. } => Ok(Source {
                meta: cached.meta.clone(),
                body: cached.body.clone(),
                stamp: cached.stamp,
                status,
            }),
            Served::Streaming { head, place, .. } => {
                let fill = place.fill().clone();
                // This render reads the body whole, not as a stream: its place would hold
                // back a fill that turns out too large to keep.
                drop(place);
                let Some(pieces) = fill.whole().await else {
                    if too_large().await {
                        return Err(source_too_large());
                    }
                    if fill.forgets() {
                        return match lookup.pass(&self.req).await? {
                            Served::Passed { object, .. } => self.read(*object).await,
                            _ => Err(Error::bad_gateway().with_detail("unexpected 304")),
                        };
                    }
                    return Err(Error::bad_gateway().with_detail("the source's body broke off"));
                };
                let body = Pieces::new(pieces);
                Ok(Source {
                    meta: Arc::new(ObjectMeta {
                        size: body.len(),
                        ..ObjectMeta::clone(&head.meta)
                    }),
                    body,
                    stamp: head.stamp,
                    status: head.status,
                })
            }
            Served::Passed { object, .. } => {
                if too_large().await {
                    return Err(source_too_large());
                }
                self.read(*object).await
            }
            Served::PassedNotModified => Err(Error::bad_gateway().with_detail("unexpected 304")),
            // A source is asked for whole in memory (`ObjectRequest::whole` has no spans).
            Served::FromFile { .. } => {
                Err(Error::bad_gateway().with_detail("unexpected answer from a file"))
            }
            Served::NotFound => Err(Error::not_found().with_detail("remembered 404")),
        }
    }

    /// A source streamed past the cache, read whole (up to `max_object_size`).
    async fn read(&self, object: OriginObject) -> Result<Source, Error> {
        let tiers = &self.lookup.tiers;
        // `_slot`: the tenant's origin slot, held until the body has been read.
        let OriginObject {
            meta,
            content_length,
            mut body,
            slot: _slot,
            exchange,
            ..
        } = object;
        let limit = tiers.cfg.max_object_size.0;
        if content_length.is_some_and(|len| len > limit) {
            return Err(source_too_large());
        }
        let idle = self.req.origins.idle_timeout();
        let mut pieces = Vec::new();
        let mut received = 0u64;
        while let Some(chunk) = next_chunk(&mut body, idle)
            .await
            .map_err(|e| e.into_error())?
        {
            received += chunk.len() as u64;
            if content_length.is_some_and(|len| received > len) {
                break;
            }
            if received > limit {
                // A body of unknown length, larger than this proxy resizes.
                return Err(source_too_large());
            }
            pieces.push(chunk);
        }
        if content_length.is_some_and(|len| received != len) {
            return Err(Error::bad_gateway().with_detail("the source's body broke off"));
        }
        let stamp = tiers.stamp(&meta, &exchange);
        Ok(Source {
            status: if stamp.directives.storable() {
                CacheStatus::Miss
            } else {
                CacheStatus::Bypass
            },
            stamp,
            meta: Arc::new(ObjectMeta {
                size: received,
                ..meta
            }),
            body: Pieces::new(pieces),
        })
    }

    fn pool_error(&self, e: PoolError) -> Error {
        let renders = &self.lookup.tiers.metrics.renders;
        match e {
            PoolError::Panicked => {
                renders.outcome(RenderOutcome::Unprocessable);
                tracing::warn!(bucket = %self.req.obj.bucket, key = %self.req.obj.key, "render panicked");
                Error::new(Kind::Unprocessable, Side::Origin, e.to_string())
                    .with_detail("render panicked")
            }
            PoolError::Busy => {
                renders.outcome(RenderOutcome::Overloaded);
                Error::new(Kind::Overloaded, Side::Internal, e.to_string())
                    .with_detail("render queue full")
            }
            PoolError::TimedOut => {
                renders.outcome(RenderOutcome::TimedOut);
                Error::new(Kind::Overloaded, Side::Internal, e.to_string())
                    .with_detail("render_timeout")
            }
        }
    }

    fn render_error(&self, e: RenderError) -> Error {
        Error::new(Kind::Unprocessable, Side::Origin, e.to_string()).with_detail(e.detail())
    }
}

fn source_too_large() -> Error {
    Error::new(
        Kind::Unprocessable,
        Side::Origin,
        "the image is larger than this proxy resizes (cache.max_object_size)",
    )
}

/// A variant's ETag: a hash of its source's ETag and the variant's id. The same source
/// and request give the same ETag on every instance of a fleet and after a restart.
fn variant_etag(source: Option<&str>, key: &CacheKey) -> String {
    let parts = [source.unwrap_or(""), key.variant.as_deref().unwrap_or("")];
    format!("\"v-{}\"", digest_hex(parts, 12))
}
