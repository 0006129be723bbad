//! The admin listener: `/healthz` (alive), `/readyz` (serving; 503 while draining),
//! `/metrics` (Prometheus text) and `POST /purge` (drop cached objects and presigned
//! URLs, docs/http.md "Purge"). Never exposed publicly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};

use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::cache::{Cache, CacheKey};
use crate::metrics::Metrics;
use crate::proxy::State;
use crate::purge::{PurgeRequest, Selector};

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub cache: Arc<Cache>,
    /// True once every listener is bound, false again while draining.
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    /// Answers one admin request; `state` is the config in force (for purges).
    pub async fn handle<B>(&self, req: Request<B>, state: Arc<State>) -> Response<ProxyBody>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&Method::POST, "/purge") => {
                let (status, body) = purge(req.into_body(), &state, &self.cache).await;
                (status, "application/json", body)
            }
            (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            (&Method::GET, "/readyz") if self.ready.load(Ordering::SeqCst) => {
                (StatusCode::OK, "text/plain", "ready\n".to_string())
            }
            (&Method::GET, "/readyz") => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "draining\n".to_string(),
            ),
            (&Method::GET, "/metrics") => {
                self.cache.maintain().await;
                (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.render(),
                )
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        };
        crate::body::small_response(status, content_type, body)
    }
}

/// Request bodies of `POST /purge` larger than this are refused.
const MAX_PURGE_BODY: usize = 64 << 10;

/// `POST /purge`: `{"purged": N}` (objects and remembered 404s dropped from the cache),
/// or a 400 saying what to send.
async fn purge<B>(body: B, state: &Arc<State>, cache: &Cache) -> (StatusCode, String)
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bad = |why: &str| {
        let body = serde_json::json!({"error": "bad_request", "message": why});
        (StatusCode::BAD_REQUEST, body.to_string())
    };
    let Ok(bytes) = http_body_util::Limited::new(body, MAX_PURGE_BODY)
        .collect()
        .await
    else {
        return bad("the body could not be read (at most 64 KiB of JSON)");
    };
    let request: PurgeRequest = match serde_json::from_slice(&bytes.to_bytes()) {
        Ok(r) => r,
        Err(e) => return bad(&format!("the body is not a purge request: {e}")),
    };
    let selector = match Selector::try_from(request) {
        Ok(s) => s,
        Err(why) => return bad(why),
    };
    if let Selector::Tenant(t) = &selector
        && !state.tenants.all().iter().any(|tenant| &tenant.name == t)
    {
        return bad(&format!("no tenant is named {t:?}"));
    }
    // Owned: the disk tier keeps a purge's selection until its start-up index is done.
    let selected = {
        let (state, selector) = (state.clone(), selector.clone());
        move |k: &CacheKey| {
            let owner = state.tenants.for_bucket(&k.bucket).map(|t| t.name.as_str());
            selector.matches(&k.bucket, &k.key, owner)
        }
    };
    let urls = state.presigner.purge(&selected).await;
    let purged = cache.purge(selected).await;
    tracing::info!(?selector, purged, presigned_urls = urls, "purge");
    (
        StatusCode::OK,
        serde_json::json!({ "purged": purged }).to_string(),
    )
}
