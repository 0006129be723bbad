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

use super::fill::{Fill, Head};
use super::inflight::Leader;
use super::pieces::Pieces;
use super::{
    Cache, CacheKey, CacheStatus, Cached, Earlier, Entry, Found, REVALIDATION_BACKOFF, Served,
    Stamp, freshness,
};
use crate::auth::Tenant;
use crate::error::{Error, Kind, Side};
use crate::object::ObjectMeta;
use crate::origin::{Fetched, GetRequest, OriginObject, Origins, next_chunk};
use crate::pattern::MediaRange;
use crate::source::ObjectRef;
use crate::variant::pool::{PoolError, RenderPool};
use crate::variant::render::{self, RenderError};
use crate::variant::{Output, Variant};

/// A variant request as the cache needs it.
pub struct VariantQuery<'a> {
    pub variant: &'a Variant,
    /// The format negotiated for this client.
    pub output: Output,
    pub pool: &'a Arc<RenderPool>,
}

impl Cache {
    /// The variant of `obj` that `query` asks for, rendered once for all concurrent
    /// requests and cached like an object.
    pub async fn serve_variant(
        self: &Arc<Self>,
        origins: &Arc<Origins>,
        tenant: &Arc<Tenant>,
        obj: &ObjectRef,
        allowed: &[MediaRange],
        query: &VariantQuery<'_>,
    ) -> Result<Served, Error> {
        let key = CacheKey {
            variant: Some(query.variant.cache_id(query.output)),
            ..CacheKey::of(obj)
        };
        let task = |fill: Arc<Fill>, stale: Option<Arc<Cached>>| RenderTask {
            cache: self.clone(),
            origins: origins.clone(),
            tenant: tenant.clone(),
            obj: obj.clone(),
            key: key.clone(),
            fill,
            stale,
            allowed: allowed.to_vec(),
            spec: render::Spec {
                w: query.variant.w,
                h: query.variant.h,
                fit: query.variant.fit,
                q: query.variant.q,
                output: query.output,
            },
            pool: query.pool.clone(),
        };
        let stale = match self.look(&key, self.clock.now()).await {
            Found::Served(served) => return Ok(self.counted(served)),
            Found::Revalidate(stale) => {
                let (fill, leader) = self.inflight.join_or_lead(&key);
                if let Some(leader) = leader {
                    spawn(leader, task(fill, Some(stale.clone())));
                }
                return Ok(Served::Complete(stale, CacheStatus::Stale));
            }
            Found::Miss(stale) => stale,
        };
        let (fill, leader) = self.inflight.join_or_lead(&key);
        match leader {
            Some(leader) => spawn(leader, task(fill.clone(), stale)),
            None => {
                self.metrics.coalesced.inc();
            }
        }
        match fill.head().await {
            Head::Ready(c, status) => Ok(Served::Complete(c, status)),
            Head::Failed(e) => Err(e),
            Head::Pending | Head::Body(..) | Head::Bypass => Err(Error::new(
                Kind::BadGateway,
                Side::Internal,
                "the render ended without an answer",
            )),
        }
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
    cache: Arc<Cache>,
    origins: Arc<Origins>,
    tenant: Arc<Tenant>,
    obj: ObjectRef,
    key: CacheKey,
    fill: Arc<Fill>,
    stale: Option<Arc<Cached>>,
    allowed: Vec<MediaRange>,
    spec: render::Spec,
    pool: Arc<RenderPool>,
}

impl RenderTask {
    async fn make(&self) -> Result<(Arc<Cached>, CacheStatus), Error> {
        let cache = &self.cache;
        let stale = match cache.earlier(&self.key, self.stale.as_ref(), false).await {
            Earlier::Fresh(c) => return Ok((c, CacheStatus::Hit)),
            Earlier::Expired(c) => Some(c),
            Earlier::None | Earlier::Streaming(..) => None,
        };
        let renders = &cache.metrics.renders;
        let ticket = self.pool.admit().await.map_err(|e| self.pool_error(e))?;
        let source = match self.source().await {
            Ok(source) => source,
            Err(e) => return self.stale_or(stale, e).await,
        };
        let etag = variant_etag(source.meta.etag.as_deref(), &self.key);
        // Made from the same source: the old variant is good again, without a render.
        if let Some(stale) = stale
            && source.meta.etag.is_some()
            && stale.meta.etag.as_deref() == Some(etag.as_str())
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
                renders.outcome("rendered");
                r
            }
            (Err(e), _) => {
                renders.outcome("unprocessable");
                return Err(self.render_error(e));
            }
        };
        let meta = ObjectMeta {
            content_type: Some(rendered.format.content_type().to_string()),
            size: rendered.bytes.len() as u64,
            etag: Some(etag),
            last_modified: source.meta.last_modified,
            // Not passed on: the bytes are no longer the object's (its encoding, its
            // download name, its language need not hold for them).
            content_encoding: None,
            content_disposition: None,
            content_language: None,
            cache_control: source.meta.cache_control.clone(),
            expires: source.meta.expires.clone(),
            date: source.meta.date,
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
        let cache = &self.cache;
        let transient = e.side != Side::Client
            && matches!(
                e.kind,
                Kind::BadGateway | Kind::GatewayTimeout | Kind::Overloaded
            );
        let now = cache.clock.now();
        match stale {
            Some(stale) if transient && freshness::may_serve_stale(&stale.stored(), now) => {
                tracing::warn!(bucket = %self.obj.bucket, error = %e, "source failing; serving the stale variant");
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
        self.cache.write_disk(&self.key, c);
        self.cache
            .entries
            .insert(self.key.clone(), Entry::Object(c.clone()))
            .await;
    }

    /// The source, whole: from the cache, or from the fill that fetches it now.
    async fn source(&self) -> Result<Source, Error> {
        let cache = &self.cache;
        let served = cache
            .serve(&self.origins, &self.tenant, &self.obj, &self.allowed)
            .await?;
        let allowed = |meta: &ObjectMeta| {
            if meta.content_type_allowed(&self.allowed) {
                Ok(())
            } else {
                Err(Error::unsupported_media_type(meta.content_type.as_deref()))
            }
        };
        match served {
            Served::Complete(c, status) => {
                allowed(&c.meta)?;
                Ok(Source {
                    meta: c.meta.clone(),
                    body: c.body.clone(),
                    stamp: c.stamp,
                    status,
                })
            }
            Served::Streaming(head, place) => {
                allowed(&head.meta)?;
                let fill = place.fill().clone();
                // This render reads the body whole, not as a stream: its place would hold
                // back a fill that turns out too large to keep.
                drop(place);
                let Some(pieces) = fill.whole().await else {
                    // A body of unknown length the fill did not keep (too large, or no
                    // room in fill_memory), or one that broke off.
                    if cache.large.contains_key(&CacheKey::of(&self.obj)) {
                        return Err(too_large());
                    }
                    if fill.forgets() {
                        return self.fetch_source().await;
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
            Served::NotFound => Err(Error::not_found().with_detail("remembered 404")),
            Served::Bypass if cache.large.contains_key(&CacheKey::of(&self.obj)) => {
                Err(too_large())
            }
            // fill_memory is in use: this render fetches its source itself. Its bytes
            // are held under the render's ticket (docs/variants.md, "Limits and memory").
            Served::Bypass => self.fetch_source().await,
        }
    }

    /// The source straight from the origin, not through the cache.
    async fn fetch_source(&self) -> Result<Source, Error> {
        let cache = &self.cache;
        let fetched = self
            .origins
            .get(&self.tenant, &self.obj, &GetRequest::default())
            .await
            .map_err(|e| e.into_error())?;
        let Fetched::Object(object) = fetched else {
            return Err(Error::bad_gateway().with_detail("unexpected 304"));
        };
        // `_slot`: the tenant's origin slot, held until the body has been read.
        let OriginObject {
            meta,
            content_length,
            mut body,
            slot: _slot,
            exchange,
            ..
        } = *object;
        if !meta.content_type_allowed(&self.allowed) {
            return Err(Error::unsupported_media_type(meta.content_type.as_deref()));
        }
        let limit = cache.cfg.max_object_size.0;
        if content_length.is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let idle = self.origins.idle_timeout();
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
                return Err(too_large());
            }
            pieces.push(chunk);
        }
        if content_length.is_some_and(|len| received != len) {
            return Err(Error::bad_gateway().with_detail("the source's body broke off"));
        }
        let stamp = cache.stamp(&meta, &exchange);
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
        let renders = &self.cache.metrics.renders;
        match e {
            PoolError::Panicked => {
                renders.outcome("unprocessable");
                tracing::warn!(bucket = %self.obj.bucket, key = %self.obj.key, "render panicked");
                Error::new(Kind::Unprocessable, Side::Origin, e.to_string())
                    .with_detail("render panicked")
            }
            PoolError::Busy => {
                renders.outcome("overloaded");
                Error::new(Kind::Overloaded, Side::Internal, e.to_string())
                    .with_detail("render queue full")
            }
            PoolError::TimedOut => {
                renders.outcome("timed_out");
                Error::new(Kind::Overloaded, Side::Internal, e.to_string())
                    .with_detail("render_timeout")
            }
        }
    }

    fn render_error(&self, e: RenderError) -> Error {
        Error::new(Kind::Unprocessable, Side::Origin, e.to_string()).with_detail(e.detail())
    }
}

fn too_large() -> Error {
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
    format!("\"v-{}\"", super::digest_hex(parts, 12))
}
