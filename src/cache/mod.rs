//! The object cache (docs/http.md, "X-Cache and the cache"): the lookup phase of the
//! request path. [`Cache`] is its front; the rooms behind it, bottom to top:
//!
//! - [`entry`], [`budget`], [`freshness`], [`pieces`]: what is stored, the byte budgets,
//!   the RFC 9111 decisions as pure functions, an object's bytes;
//! - `fill::shared` and `fill::inflight`: one fetch's head and body as they arrive,
//!   shared by every request for the key, and the map of fetches in progress;
//! - `tiers`: the memory tier (the only user of moka), the [`disk`] tier, `fill_memory`
//!   and the clock;
//! - `fill`: the miss path, one task per cold key that fetches once and stores what
//!   arrived whole;
//! - `lookup`: what a request for an object is answered with; `variants`: the same for
//!   a variant, rendered from its object.
//!
//! No room uses one above it (`src/layering.rs` checks it).

pub(crate) mod block;
pub(crate) mod budget;
pub(crate) mod disk;
pub(crate) mod entry;
pub(crate) mod fill;
pub(crate) mod freshness;
pub(crate) mod lookup;
pub(crate) mod pieces;
pub(crate) mod tiers;
mod variants;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::CacheConfig;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::request::ObjectRequest;
use lookup::Lookup;
use tiers::Tiers;

pub(crate) use crate::cache_status::CacheStatus;
pub(crate) use entry::{CacheKey, Cached, Freshness};
pub(crate) use fill::shared::{Place, Streamed};
pub(crate) use lookup::Served;
pub(crate) use variants::VariantQuery;

pub struct Cache {
    lookup: Lookup,
}

impl Cache {
    pub fn new(cfg: &CacheConfig, metrics: Arc<Metrics>, clock: Arc<Clock>) -> Arc<Cache> {
        let tiers = Arc::new(Tiers::new(cfg, metrics, clock));
        Arc::new(Cache {
            lookup: Lookup::new(tiers),
        })
    }

    fn tiers(&self) -> &Tiers {
        &self.lookup.tiers
    }

    /// The object `req` names: from memory or disk, from the one fetch for all
    /// concurrent requests, or streamed past the cache.
    pub async fn serve(&self, req: &ObjectRequest) -> Result<Served, Error> {
        self.lookup.serve(req).await
    }

    /// The variant of the object `req` names that `query` asks for, rendered once for
    /// all concurrent requests and cached like an object.
    pub async fn serve_variant(
        &self,
        req: &ObjectRequest,
        query: &VariantQuery<'_>,
    ) -> Result<Served, Error> {
        variants::serve(&self.lookup, req, query).await
    }

    /// Runs pending evictions now (moka does this lazily during calls).
    pub async fn maintain(&self) {
        self.tiers().maintain().await;
    }

    /// Waits until the disk tier (if any) has indexed the files it found at start.
    pub async fn disk_ready(&self) {
        self.tiers().disk_ready().await;
    }

    /// Waits (up to 10 s) for queued disk writes to end: called at shutdown.
    pub async fn flush(&self) {
        self.tiers().flush().await;
    }

    /// Drops every cached object (from memory and disk; and remembered 404, and "too
    /// large" mark) whose key `selected` picks; returns how many objects and 404s went. A
    /// fill in progress is not stopped: what it stores afterwards is the origin's answer
    /// from after the purge began.
    pub async fn purge(
        &self,
        selected: impl Fn(&CacheKey) -> bool + Send + Sync + 'static,
    ) -> usize {
        self.tiers().purge(selected).await
    }

    /// Objects and remembered 404s held (after [`Cache::maintain`], exact).
    pub fn entry_count(&self) -> u64 {
        self.tiers().entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.tiers().weighted_size()
    }

    pub fn max_object_size(&self) -> u64 {
        self.tiers().cfg.max_object_size.0
    }
}
