//! Presigned GET URLs (PRODUCT.md sections 3 and 6), made with the bucket's tenant's
//! credentials and kept in memory until only `refresh_before` of their life is left.
//!
//! `expires_at` never outlives the credentials that signed the URL: a URL signed with
//! temporary (STS) credentials dies with the session whatever its own expiry says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::auth::Tenant;
use crate::body::ProxyBody;
use crate::cache::{CacheKey, CacheStatus};
use crate::config;
use crate::error::{Error, Kind, Side};
use crate::metrics::Metrics;
use crate::origin::Origins;
use crate::origin::credentials::error_chain;
use crate::source::ObjectRef;

/// SigV4 presigned URLs are valid for at most 7 days.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Entries kept at most; one entry is a few hundred bytes.
const MAX_ENTRIES: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: String,
    pub expires_at: SystemTime,
}

impl Presigned {
    /// `{"url", "expires_at"}`, or a `302` to the URL when `redirect`.
    pub fn response(&self, redirect: bool) -> Response<ProxyBody> {
        let remaining = self
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        let cache_control = format!("private, max-age={}", remaining.min(3600));
        let mut r = if redirect {
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::FOUND;
            if let Ok(v) = HeaderValue::from_str(&self.url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        } else {
            let body = serde_json::json!({
                "url": self.url,
                "expires_at": humantime::format_rfc3339_seconds(self.expires_at).to_string(),
            })
            .to_string();
            let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        if let Ok(v) = HeaderValue::from_str(&cache_control) {
            r.headers_mut().insert(header::CACHE_CONTROL, v);
        }
        r
    }
}

pub struct Presigner {
    /// Keyed by tenant as well as object, so no tenant ever gets another's URL.
    cache: moka::future::Cache<(String, CacheKey), Presigned>,
    expires_in: Duration,
    refresh_before: Duration,
    metrics: Arc<Metrics>,
}

impl Presigner {
    pub fn new(cfg: &config::Presign, metrics: Arc<Metrics>) -> Presigner {
        Presigner {
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(cfg.expires_in.0.min(MAX_EXPIRY))
                .build(),
            expires_in: cfg.expires_in.0.min(MAX_EXPIRY),
            refresh_before: cfg.refresh_before.0,
            metrics,
        }
    }

    /// A presigned URL for `obj`, from the cache while it has more than `refresh_before`
    /// of validity left at `now`.
    pub async fn get(
        &self,
        origins: &Origins,
        tenant: &Tenant,
        obj: &ObjectRef,
        now: SystemTime,
    ) -> Result<(Presigned, CacheStatus), Error> {
        let key = (tenant.name.clone(), CacheKey::of(obj));
        let refresh = match self.cache.get(&key).await {
            Some(p) if p.expires_at > now + self.refresh_before => {
                self.metrics.presign("hit");
                return Ok((p, CacheStatus::Hit));
            }
            Some(_) => true,
            None => false,
        };
        self.metrics
            .presign(if refresh { "refresh" } else { "miss" });
        let presigned = self.sign(origins, tenant, obj, now).await?;
        self.cache.insert(key, presigned.clone()).await;
        Ok((
            presigned,
            if refresh {
                CacheStatus::Revalidated
            } else {
                CacheStatus::Miss
            },
        ))
    }

    async fn sign(
        &self,
        origins: &Origins,
        tenant: &Tenant,
        obj: &ObjectRef,
        now: SystemTime,
    ) -> Result<Presigned, Error> {
        let failed = |detail: String| {
            Error::new(
                Kind::BadGateway,
                Side::Origin,
                "could not sign a URL for this object",
            )
            .with_detail(detail)
        };
        let provider = origins
            .credentials(tenant, obj)
            .ok_or_else(|| failed("no credentials configured".into()))?;
        let creds =
            aws_credential_types::provider::ProvideCredentials::provide_credentials(&provider)
                .await
                .map_err(|e| failed(error_chain(&e)))?;
        let mut expires_in = self.expires_in;
        if let Some(expiry) = creds.expiry() {
            expires_in = expires_in.min(expiry.duration_since(now).unwrap_or_default());
        }
        if expires_in < Duration::from_secs(1) {
            return Err(failed("credentials expire now".into()));
        }
        let presigning = PresigningConfig::builder()
            .start_time(now)
            .expires_in(expires_in)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let request = origins
            .client(tenant, obj)
            .get_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .presigned(presigning)
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        Ok(Presigned {
            url: request.uri().to_string(),
            expires_at: now + expires_in,
        })
    }
}
