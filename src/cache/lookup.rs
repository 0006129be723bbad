//! The lookup phase for an object: what the cache answers a request with ([`Served`]).
//! A fresh entry is the answer; an expired one within its stale-while-revalidate
//! window is served while one revalidation runs; anything else joins (or leads) the one
//! fill for the key and answers from what it learns; and what the cache does not keep
//! streams from the origin past it, with the request's range and validators.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use crate::cache_status::CacheStatus;
use crate::error::{Error, Kind, Side};
use crate::object::ObjectMeta;
use crate::origin::{Fetched, OriginObject};
use crate::request::ObjectRequest;
use crate::sendfile::Spans;

use super::disk::{BLOCK as DISK_BLOCK, FromFile};
use super::entry::{CacheKey, Cached, Freshness};
use super::fill::inflight::{Inflight, Leader};
use super::fill::shared::{Fill, Head, Place, Streamed};
use super::fill::{self};
use super::pieces::Pieces;
use super::tiers::{Found, Tiers};

/// What the lookup phase hands to the respond phase. Its `freshness` is taken at the
/// moment of the lookup, so that `Age` and `Cache-Control` agree.
pub enum Served {
    /// A complete object: from memory, or a body of unknown length that arrived whole
    /// for a request that needed its length.
    Complete {
        cached: Arc<Cached>,
        status: CacheStatus,
        freshness: Freshness,
    },
    /// Headers are known; the body streams from an in-flight fill, read from this
    /// request's place in it. `MISS`, `HIT` (a large object from disk), or `BYPASS`
    /// when the object's own rules forbid storing it (`no-store`, `private`).
    Streaming {
        head: Streamed,
        place: Place,
        freshness: Freshness,
    },
    /// Not cached (too large, no room in `fill_memory`): the origin's answer to the
    /// request's own range and validators, streaming.
    Passed {
        object: Box<OriginObject>,
        freshness: Freshness,
    },
    /// The origin's `304` to a passed-through conditional request.
    PassedNotModified,
    /// A 404 remembered for `negative_ttl`.
    NotFound,
    /// A fresh copy on disk, sent from its file (a plain HTTP/1 request's `HIT`).
    FromFile {
        from: Box<FromFile>,
        /// The connection's, where the body's parts are queued.
        spans: Spans,
        freshness: Freshness,
    },
}

/// The disk hits sent from their file rather than read into memory: objects of one block
/// from 128 KiB. Below it the copy costs little next to the rest of a response, and the
/// copy read into memory makes the object's later hits memory hits. Up to 1 MiB it was
/// measured too: as fast as the memory path, with a worse p99 (BENCHMARKS.md, "Disk-tier
/// hits sent from their file").
const FROM_FILE: RangeInclusive<u64> = (128 << 10)..=(DISK_BLOCK as u64);

/// Whether the answer to `req` for an object with `meta` is a `304`, which sends no body.
fn not_modified(req: &ObjectRequest, meta: &ObjectMeta) -> bool {
    let asked = &req.passthrough;
    meta.not_modified_by(asked.if_none_match.as_deref(), || asked.if_modified_since)
}

/// The object lookup: the cache's tiers and its fills in progress.
#[derive(Clone)]
pub(crate) struct Lookup {
    pub(crate) tiers: Arc<Tiers>,
    pub(crate) inflight: Arc<Inflight>,
}

impl Lookup {
    pub(crate) fn new(tiers: Arc<Tiers>) -> Lookup {
        Lookup {
            tiers,
            inflight: Arc::new(Inflight::default()),
        }
    }

    /// Looks the object up and, when it is cold or expired, fetches it (once for all
    /// concurrent requests). An answer whose content type the request does not allow is
    /// a `415`.
    pub(crate) async fn serve(&self, req: &ObjectRequest) -> Result<Served, Error> {
        let tiers = &self.tiers;
        let now = tiers.clock.now();
        let key = CacheKey::of(&req.obj);
        let (cached, status) = match tiers.look(&key, now).await {
            Found::Answer(c, status) => {
                if status == CacheStatus::Hit {
                    tiers.metrics.tiers.memory_hits.inc();
                }
                (c, status)
            }
            Found::Absent => return Ok(Served::NotFound),
            Found::Revalidate(stale) => {
                // The old copy at once; one revalidation in the background (a request
                // that finds one running leaves it be).
                let (_fill, leader) = self.inflight.join_or_lead(&key);
                if let Some(leader) = leader {
                    self.lead(leader, req, now).await;
                }
                (stale, CacheStatus::Stale)
            }
            // Not in memory at all: from disk at once if it can be. Else, and for an
            // expired copy in memory, through the fill.
            Found::Miss(expired) => {
                if expired.is_none()
                    && !req.head
                    && let Some(spans) = &req.spans
                    && let Some((from, stamp)) =
                        Box::pin(tiers.sendable(&key, &FROM_FILE, |meta| not_modified(req, meta)))
                            .await
                {
                    req.allows(&from.meta)?;
                    // As below: answered on the worker's next pass.
                    tokio::task::yield_now().await;
                    return Ok(Served::FromFile {
                        from: Box::new(from),
                        spans: spans.clone(),
                        freshness: stamp.freshness(now),
                    });
                }
                if expired.is_none()
                    && let Some(c) = Box::pin(tiers.disk_now(&key)).await
                {
                    // Answered on the worker's next pass, after the connections already
                    // waiting, as the fill's wake-up did: answered in the same turn, their
                    // p99 in the split bench rose in seven rounds of eight, by up to a
                    // quarter (BENCHMARKS.md, "Disk-tier hits without a fill").
                    tokio::task::yield_now().await;
                    (c, CacheStatus::Hit)
                } else {
                    return Box::pin(self.fill(req, &key, now)).await;
                }
            }
        };
        req.allows(&cached.meta)?;
        Ok(Served::Complete {
            freshness: cached.freshness(now),
            cached,
            status,
        })
    }

    /// Joins the key's fill, or starts it, and answers from what it learns.
    async fn fill(
        &self,
        req: &ObjectRequest,
        key: &CacheKey,
        now: Instant,
    ) -> Result<Served, Error> {
        if self.tiers.is_large(key).await {
            return self.pass(req).await;
        }
        let (fill, leader) = self.inflight.join_or_lead(key);
        // Taken before the fill can start, so that not a byte is forgotten before this
        // request reads it ([`Place`]).
        let place = fill.place();
        match leader {
            None => {
                self.tiers.metrics.coalesced.inc();
            }
            Some(leader) => self.lead(leader, req, now).await,
        }
        let head = fill.head().await;
        let now = self.tiers.clock.now();
        match head {
            Head::Pending => Err(Error::new(
                Kind::BadGateway,
                Side::Internal,
                "fill ended without a head",
            )),
            Head::Ready(cached, status) => {
                req.allows(&cached.meta)?;
                Ok(Served::Complete {
                    freshness: cached.freshness(now),
                    cached,
                    status,
                })
            }
            Head::Failed(e) => Err(e),
            Head::Bypass => self.pass(req).await,
            Head::Body(head) => {
                req.allows(&head.meta)?;
                // Joined a fill that no longer has its first bytes.
                let Some(place) = place else {
                    return self.pass(req).await;
                };
                if head.length.is_none() && (req.head || req.passthrough.range.is_some()) {
                    drop(place);
                    return self.once_whole(req, head, &fill).await;
                }
                Ok(Served::Streaming {
                    freshness: head.stamp.freshness(now),
                    head,
                    place,
                })
            }
        }
    }

    /// Starts the fill that `leader` owns. A fill that ended between the first look and
    /// taking the lead has stored its answer: that is the answer, without a fetch.
    async fn lead(&self, leader: Leader, req: &ObjectRequest, now: Instant) {
        let stale = match self.tiers.look(leader.key(), now).await {
            Found::Answer(c, status) => return leader.fill.set_head(Head::Ready(c, status)),
            Found::Absent => {
                let e = Error::not_found().with_detail("remembered 404");
                return leader.fill.set_head(Head::Failed(e));
            }
            Found::Revalidate(c) => Some(c),
            Found::Miss(stale) => stale,
        };
        fill::start(self.tiers.clone(), req.clone(), leader, stale);
    }

    /// A body of unknown length, for a request that needs its length (a `HEAD`, a
    /// `Range`): answered once the fill has it whole. A fill that does not keep it (too
    /// large) leaves this request to fetch for itself.
    async fn once_whole(
        &self,
        req: &ObjectRequest,
        head: Streamed,
        fill: &Fill,
    ) -> Result<Served, Error> {
        match fill.whole().await {
            Some(pieces) => {
                let body = Pieces::new(pieces);
                let meta = ObjectMeta {
                    size: body.len(),
                    ..ObjectMeta::clone(&head.meta)
                };
                let now = self.tiers.clock.now();
                Ok(Served::Complete {
                    freshness: head.stamp.freshness(now),
                    cached: Cached::new(Arc::new(meta), body, head.stamp),
                    status: head.status,
                })
            }
            None if fill.forgets() => self.pass(req).await,
            None => Err(Error::bad_gateway().with_detail("the origin body broke off")),
        }
    }

    /// The object streamed from the origin past the cache, with the request's range and
    /// validators forwarded.
    pub(crate) async fn pass(&self, req: &ObjectRequest) -> Result<Served, Error> {
        let fetched = req
            .origins
            .get(&req.tenant, &req.obj, &req.passthrough)
            .await
            .map_err(|e| e.into_error())?;
        match fetched {
            Fetched::NotModified(_) => Ok(Served::PassedNotModified),
            Fetched::Object(object) => {
                req.allows(&object.meta)?;
                Ok(Served::Passed {
                    freshness: self.tiers.arriving(&object),
                    object,
                })
            }
        }
    }
}
