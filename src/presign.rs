//! Presigned GET URLs (docs/http.md, "Routes"), made with the bucket's tenant's
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
use crate::metrics::{Metrics, PresignOutcome};
use crate::origin::Origins;
use crate::origin::credentials::error_chain;
use crate::pattern::{MediaRange, content_type_allowed};
use crate::request::ObjectRequest;
use crate::source::ObjectRef;

/// SigV4 presigned URLs are valid for at most 7 days.
pub(crate) const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Entries kept at most; one entry is a few hundred bytes.
const MAX_ENTRIES: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: String,
    pub expires_at: SystemTime,
    pub signed_at: SystemTime,
    /// The object's content type (HeadObject when the URL was made), so that a URL is
    /// never handed out for an object the proxy itself would refuse with 415.
    pub content_type: Option<String>,
}

impl Presigned {
    /// `{"url", "expires_at"}`, or a `302` to the URL when `redirect`; cacheable for
    /// what is left of it at `now` (an hour at most).
    pub fn response(&self, redirect: bool, now: SystemTime) -> Response<ProxyBody> {
        let remaining = self
            .expires_at
            .duration_since(now)
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
    /// Drops the cached presigned URLs of the objects `selected` picks.
    pub async fn purge(&self, selected: impl Fn(&CacheKey) -> bool) -> usize {
        crate::cache::tiers::invalidate_selected(&self.cache, |(_, key)| selected(key))
            .await
            .len()
    }

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
    /// of validity left at `now`. It never outlives `not_after` (the signed request's
    /// `exp`), and is refused with 415 for a content type outside `allowed`.
    pub async fn get(
        &self,
        req: &ObjectRequest,
        now: SystemTime,
        not_after: Option<SystemTime>,
    ) -> Result<(Presigned, CacheStatus), Error> {
        let (origins, tenant, obj, allowed) = (&req.origins, &req.tenant, &req.obj, &req.allowed);
        if let Some(why) = origins.presign_refusal(obj) {
            return Err(Error::forbidden(why));
        }
        let key = (tenant.name.clone(), CacheKey::of(obj));
        let cached = self.cache.get(&key).await;
        let refresh = match &cached {
            Some(p) if self.reusable(p, now, not_after) => {
                self.metrics.presign(PresignOutcome::Hit);
                check_type(p, allowed)?;
                return Ok((p.clone(), CacheStatus::Hit));
            }
            Some(_) => true,
            None => false,
        };
        self.metrics.presign(if refresh {
            PresignOutcome::Refresh
        } else {
            PresignOutcome::Miss
        });
        let content_type = match cached {
            Some(p) => p.content_type,
            None => origins
                .content_type(tenant, Some(req.client), obj)
                .await
                .map_err(|e| e.into_error())?,
        };
        let presigned = self
            .sign(origins, tenant, obj, now, not_after, content_type)
            .await?;
        self.cache.insert(key, presigned.clone()).await;
        check_type(&presigned, allowed)?;
        Ok((
            presigned,
            if refresh {
                CacheStatus::Revalidated
            } else {
                CacheStatus::Miss
            },
        ))
    }

    /// A cached URL is reused while it has more than `refresh_before` (or half its own
    /// life, for a short one) left, and does not outlive `not_after`.
    fn reusable(&self, p: &Presigned, now: SystemTime, not_after: Option<SystemTime>) -> bool {
        let life = p.expires_at.duration_since(p.signed_at).unwrap_or_default();
        let margin = self.refresh_before.min(life / 2);
        p.expires_at > now + margin && not_after.is_none_or(|cap| p.expires_at <= cap)
    }

    async fn sign(
        &self,
        origins: &Origins,
        tenant: &Tenant,
        obj: &ObjectRef,
        now: SystemTime,
        not_after: Option<SystemTime>,
        content_type: Option<String>,
    ) -> Result<Presigned, Error> {
        let failed = |detail: String| {
            Error::new(
                Kind::BadGateway,
                Side::Origin,
                "could not sign a URL for this object",
            )
            .with_detail(detail)
        };
        if obj.provider == config::ProviderKind::Azure {
            let mut until = now + self.expires_in;
            if let Some(cap) = not_after {
                until = until.min(cap);
            }
            let (url, expires_at) = origins
                .presign_azure(obj, now, until)
                .await
                .map_err(|e| failed(e.to_string()))?;
            return Ok(Presigned {
                url,
                expires_at,
                signed_at: now,
                content_type,
            });
        }
        let provider = origins
            .credentials(tenant, obj)
            .ok_or_else(|| failed("no credentials configured".into()))?;
        let creds =
            aws_credential_types::provider::ProvideCredentials::provide_credentials(&provider)
                .await
                .map_err(|e| failed(error_chain(&e)))?;
        let mut expires_in = self.expires_in;
        for limit in [creds.expiry(), not_after].into_iter().flatten() {
            expires_in = expires_in.min(limit.duration_since(now).unwrap_or_default());
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
            signed_at: now,
            content_type,
        })
    }
}

fn check_type(p: &Presigned, allowed: &[MediaRange]) -> Result<(), Error> {
    if content_type_allowed(p.content_type.as_deref(), allowed) {
        Ok(())
    } else {
        Err(Error::unsupported_media_type(p.content_type.as_deref()))
    }
}
