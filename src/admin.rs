//! The admin listener: `/healthz` (alive), `/readyz` (serving; 503 while draining) and
//! `/metrics` (Prometheus text). Never exposed publicly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::ProxyBody;
use crate::cache::Cache;
use crate::metrics::Metrics;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub cache: Arc<Cache>,
    /// True once every listener is bound, false again while draining.
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ProxyBody> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
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
        let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    }
}
