//! The origin: S3 (and S3-compatible stores, and GCS through its XML API) read through
//! aws-sdk-s3, with per-tenant credentials. The fetch phase of the request path.
//!
//! Clients are built once per (tenant, region, endpoint) and reused, so connections are
//! pooled across requests. Every SDK failure is classified into an [`OriginError`]
//! here, the only place that looks at S3 error codes.

mod azure;
pub(crate) mod credentials;
mod error;
mod exchange;
mod fetched;
mod pool;
mod slots;

use error::classify;
pub(crate) use error::{OriginError, kms_key};
pub(crate) use fetched::{Fetched, GetRequest, NotModified, OriginObject};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::auth::Tenant;
use crate::config::{self, Config, ProviderKind};
use crate::metrics::{Metrics, UpstreamOutcome};
use crate::object::{Exchange, ObjectMeta, StoredFields};
use crate::source::ObjectRef;
use credentials::{CachedCredentials, error_chain};
use exchange::Recorder;
use slots::{Slot, Slots};

use crate::peer::ClientKey;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SdkKey {
    tenant: String,
    region: String,
    endpoint: Option<String>,
    path_style: bool,
    static_keys: bool,
}

/// Origin clients kept at once (tenants × regions × endpoints in use).
const MAX_CLIENTS: usize = 1024;
/// Buckets whose discovered region is remembered.
const MAX_DISCOVERED: usize = 100_000;

/// All origin clients and the tenants' credentials.
pub struct Origins {
    base: SdkConfig,
    origin: config::Origin,
    buckets: HashMap<String, config::Bucket>,
    gcs: Option<config::Gcs>,
    tenant_credentials: HashMap<String, SharedCredentialsProvider>,
    /// `max_concurrent_per_tenant` origin requests per tenant, so that one slow bucket
    /// cannot take every connection and task.
    tenant_slots: HashMap<String, Arc<Slots>>,
    metrics: Arc<Metrics>,
    clients: RwLock<HashMap<SdkKey, Client>>,
    /// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, which the SDK applies by itself.
    env_endpoint: Option<String>,
    /// Regions learnt from S3's wrong-region answers, per bucket.
    discovered: RwLock<HashMap<String, String>>,
    /// The embedded store, when it runs in this process (and in tests).
    embedded: Option<StoreAccess>,
    /// Azure containers, or why they cannot be read (an Entra ID credential that could
    /// not be made: said on every request to them, and by `check`).
    azure: Result<Option<azure::AzureOrigin>, String>,
}

impl Origins {
    /// Loads the proxy's own identity from the standard AWS chain and prepares one
    /// credentials provider per tenant (its assumed role, or the proxy's identity).
    pub async fn new(
        config: &Config,
        embedded: Option<StoreAccess>,
        metrics: Arc<Metrics>,
    ) -> Origins {
        // One HTTPS client for every origin client built from `base`: one pool of
        // connections, however many (tenant, region, endpoint) clients exist.
        let http = aws_smithy_http_client::Builder::new()
            .pool_idle_timeout(pool::IDLE_TIMEOUT)
            .pool_max_idle_per_host(pool::MAX_IDLE_PER_HOST)
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        let base = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .load()
            .await;
        let mut tenant_credentials = HashMap::new();
        for t in &config.tenants {
            let provider = match (&t.assume_role, base.credentials_provider()) {
                (Some(role), _) => {
                    let mut b = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
                        .session_name(format!("bucketfront-{}", t.name))
                        .configure(&base);
                    if base.region().is_none() {
                        b = b.region(Region::new("us-east-1"));
                    }
                    if let Some(id) = &role.external_id {
                        b = b.external_id(id.expose());
                    }
                    let assumed = SharedCredentialsProvider::new(b.build().await);
                    Some(SharedCredentialsProvider::new(CachedCredentials::new(
                        &t.name, assumed,
                    )))
                }
                (None, Some(own)) => Some(own),
                (None, None) => None,
            };
            if let Some(p) = provider {
                tenant_credentials.insert(t.name.clone(), p);
            }
        }
        Origins {
            base,
            origin: config.origin.clone(),
            buckets: config
                .buckets
                .iter()
                .map(|b| (b.name.clone(), b.clone()))
                .collect(),
            gcs: config.gcs.clone(),
            tenant_credentials,
            metrics,
            tenant_slots: config
                .tenants
                .iter()
                .map(|t| {
                    let slots = Slots::new(config.origin.max_concurrent_per_tenant);
                    (t.name.clone(), slots)
                })
                .collect(),
            clients: RwLock::new(HashMap::new()),
            discovered: RwLock::new(HashMap::new()),
            env_endpoint: std::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok(),
            embedded,
            azure: azure::AzureOrigin::new(config),
        }
    }

    fn azure(&self) -> Result<&azure::AzureOrigin, OriginError> {
        match &self.azure {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(OriginError::Credentials(
                "no container is configured with provider = \"azure\"".into(),
            )),
            Err(e) => Err(OriginError::Credentials(e.clone())),
        }
    }

    /// Why no presigned URL may be made for `obj`, if so: an Azure container read with
    /// the customer's SAS (the URL would hand out that SAS: every blob of the container
    /// until its own expiry, past any `exp` and around the proxy's signatures).
    pub fn presign_refusal(&self, obj: &ObjectRef) -> Option<String> {
        let sas = obj.provider == ProviderKind::Azure
            && self
                .buckets
                .get(&obj.bucket)
                .is_some_and(|b| b.sas.is_some());
        sas.then(|| {
            format!(
                "presigned URLs are not made for container {}: it is read with the customer's SAS, which a URL would hand out whole; load the image through the proxy",
                obj.bucket
            )
        })
    }

    /// A presigned URL for an Azure blob, valid until `until` at most (see
    /// [`azure::AzureOrigin::presign`]).
    pub async fn presign_azure(
        &self,
        obj: &ObjectRef,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<(String, SystemTime), OriginError> {
        self.azure()?.presign(obj, now, until).await
    }

    /// The credentials `tenant` reads `obj` with (for presigning and `check`).
    pub fn credentials(
        &self,
        tenant: &Tenant,
        obj: &ObjectRef,
    ) -> Option<SharedCredentialsProvider> {
        let bucket = self.buckets.get(&obj.bucket);
        if let Some((access, secret)) =
            bucket.and_then(|b| b.access_key.as_ref().zip(b.secret_key.as_ref()))
        {
            let c = Credentials::new(
                access.expose(),
                secret.expose(),
                None,
                None,
                "bucket-config",
            );
            return Some(SharedCredentialsProvider::new(c));
        }
        if let Some(store) = &self.embedded
            && bucket.and_then(|b| b.endpoint.as_deref()) == Some(store.endpoint.as_str())
        {
            return Some(SharedCredentialsProvider::new(store.credentials.clone()));
        }
        if obj.provider == ProviderKind::Gcs
            && let Some(gcs) = &self.gcs
        {
            let c = Credentials::new(
                gcs.access_key.expose(),
                gcs.secret_key.expose(),
                None,
                None,
                "gcs-hmac",
            );
            return Some(SharedCredentialsProvider::new(c));
        }
        self.tenant_credentials.get(&tenant.name).cloned()
    }

    /// The (cached) client for `tenant` reading `obj`'s bucket.
    pub fn client(&self, tenant: &Tenant, obj: &ObjectRef) -> Client {
        let bucket = self.buckets.get(&obj.bucket);
        let gcs = obj.provider == ProviderKind::Gcs;
        let discovered = self.discovered_region(&obj.bucket);
        // Never the region named in the request's URL: a client (and its connections)
        // per made-up region would be memory an attacker picks. A wrong guess costs one
        // redirect, then the discovered region is used.
        let region = bucket
            .and_then(|b| b.region.clone())
            .or(discovered)
            .or_else(|| gcs.then(|| "auto".to_string()))
            .or_else(|| self.base.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".to_string());
        let key = SdkKey {
            tenant: tenant.name.clone(),
            region,
            path_style: self.path_style(obj),
            static_keys: bucket.is_some_and(|b| b.access_key.is_some()) || gcs,
            endpoint: self.endpoint(obj),
        };
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let client = self.build_client(&key, self.credentials(tenant, obj));
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        // Keys are configured or discovered regions only, so this is a backstop: start
        // over rather than grow (a client is cheap to rebuild; the pool is shared).
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.entry(key).or_insert(client).clone()
    }

    /// How many S3 clients are kept (one per tenant, region, addressing and endpoint).
    pub fn client_count(&self) -> usize {
        self.clients.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn build_client(&self, key: &SdkKey, creds: Option<SharedCredentialsProvider>) -> Client {
        let mut b = crate::s3::compatible(aws_sdk_s3::config::Builder::from(&self.base))
            .region(Region::new(key.region.clone()))
            .force_path_style(key.path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(self.origin.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.origin.connect_timeout.0)
                    .build(),
            );
        if let Some(endpoint) = &key.endpoint {
            b = b.endpoint_url(endpoint);
        }
        if let Some(creds) = creds {
            b = b.credentials_provider(creds);
        }
        Client::from_conf(b.build())
    }

    /// `GetObject`, answered within `first_byte_timeout` (headers; the body streams).
    /// A wrong-region answer teaches the bucket's region (from S3's header, else from
    /// HeadBucket) and the request is sent once more to that region.
    /// Every call is counted once here, by outcome, with its time to headers.
    pub async fn get(
        &self,
        tenant: &Tenant,
        obj: &ObjectRef,
        req: &GetRequest,
    ) -> Result<Fetched, OriginError> {
        let started = std::time::Instant::now();
        let fetched: Result<Fetched, OriginError> = async {
            let slot = self.slot(tenant, req.client).await?;
            let mut fetched = if obj.provider == ProviderKind::Azure {
                self.azure()?.get(obj, req).await?
            } else {
                self.get_in_region(tenant, obj, req).await?
            };
            if let Fetched::Object(o) = &mut fetched {
                // A part of the object where the whole was asked for would be sent
                // under 200 headers and then cut short: refuse it cleanly instead.
                if req.range.is_none() && o.content_range.is_some() {
                    tracing::warn!(bucket = %obj.bucket, "origin answered 206 to a GET without Range");
                    return Err(OriginError::Protocol(
                        "206 Partial Content to a GET without Range".into(),
                    ));
                }
                o.slot = slot;
            }
            Ok(fetched)
        }
        .await
        .map_err(|e| match e {
            // S3 says only AccessDenied to a Requester Pays bucket read without
            // `x-amz-request-payer`: the log says what it may be (`check` tells).
            OriginError::AccessDenied(d)
                if obj.provider == ProviderKind::S3 && self.request_payer(obj).is_none() =>
            {
                OriginError::AccessDenied(format!(
                    "{d} (if {} is a Requester Pays bucket: set request_payer = true; `bucketfront check` tells)",
                    obj.bucket
                ))
            }
            other => other,
        });
        let announced = match &fetched {
            Ok(Fetched::Object(o)) => o.content_length.unwrap_or(0),
            _ => 0,
        };
        self.metrics.tenant_origin(&tenant.name, announced);
        let outcome = match &fetched {
            Ok(Fetched::Object(_)) => UpstreamOutcome::Ok,
            Ok(Fetched::NotModified(_)) => UpstreamOutcome::NotModified,
            Err(e) => UpstreamOutcome::Failed(e.as_str()),
        };
        self.metrics
            .upstream(outcome, started.elapsed().as_secs_f64());
        fetched
    }

    /// The object's content type, from HeadObject (for presigning).
    pub async fn content_type(
        &self,
        tenant: &Tenant,
        client: Option<ClientKey>,
        obj: &ObjectRef,
    ) -> Result<Option<String>, OriginError> {
        let _slot = self.slot(tenant, client).await?;
        if obj.provider == ProviderKind::Azure {
            return self.azure()?.content_type(obj).await;
        }
        let call = self
            .client(tenant, obj)
            .head_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .set_request_payer(self.request_payer(obj))
            .set_expected_bucket_owner(tenant.config.expected_owner.clone())
            .send();
        match tokio::time::timeout(self.origin.first_byte_timeout.0, call).await {
            Err(_) => Err(OriginError::Timeout("HeadObject".into())),
            Ok(Ok(out)) => Ok(out.content_type),
            Ok(Err(e)) => match classify(e) {
                Ok(()) => Err(OriginError::Status {
                    status: 304,
                    code: "unexpected 304".into(),
                }),
                Err(e) => Err(e),
            },
        }
    }

    /// One of the tenant's origin slots for `client`'s share, waiting at most
    /// `first_byte_timeout` for it.
    async fn slot(
        &self,
        tenant: &Tenant,
        client: Option<ClientKey>,
    ) -> Result<Option<Slot>, OriginError> {
        let Some(slots) = self.tenant_slots.get(&tenant.name) else {
            return Ok(None);
        };
        let client =
            client.unwrap_or_else(|| ClientKey::of(std::net::Ipv4Addr::UNSPECIFIED.into()));
        match slots
            .acquire(client, self.origin.first_byte_timeout.0)
            .await
        {
            Some(slot) => Ok(Some(slot)),
            None => Err(OriginError::Busy(tenant.name.clone())),
        }
    }

    async fn get_in_region(
        &self,
        tenant: &Tenant,
        obj: &ObjectRef,
        req: &GetRequest,
    ) -> Result<Fetched, OriginError> {
        match self.get_once(tenant, obj, req).await {
            Err(OriginError::WrongRegion(hint)) => {
                let region = match hint {
                    Some(r) => Some(r),
                    None => self.head_bucket_region(tenant, obj).await,
                };
                let Some(region) = region.filter(|r| !r.is_empty()) else {
                    return Err(OriginError::WrongRegion(None));
                };
                tracing::info!(bucket = %obj.bucket, %region, "learnt the bucket's region");
                {
                    let mut discovered = self.discovered.write().unwrap_or_else(|e| e.into_inner());
                    if discovered.len() >= MAX_DISCOVERED {
                        discovered.clear();
                    }
                    discovered.insert(obj.bucket.clone(), region);
                }
                self.get_once(tenant, obj, req).await
            }
            other => other,
        }
    }

    /// HeadBucket answers `x-amz-bucket-region` whatever the caller may do with the bucket.
    async fn head_bucket_region(&self, tenant: &Tenant, obj: &ObjectRef) -> Option<String> {
        let client = self.client(tenant, obj);
        let call = client
            .head_bucket()
            .bucket(&obj.bucket)
            .set_expected_bucket_owner(tenant.config.expected_owner.clone())
            .send();
        match tokio::time::timeout(self.origin.first_byte_timeout.0, call).await {
            Ok(Ok(out)) => out.bucket_region,
            Ok(Err(SdkError::ServiceError(se))) => se
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .map(String::from),
            _ => None,
        }
    }

    async fn get_once(
        &self,
        tenant: &Tenant,
        obj: &ObjectRef,
        req: &GetRequest,
    ) -> Result<Fetched, OriginError> {
        let client = self.client(tenant, obj);
        let recorder = Recorder::default();
        let op = client
            .get_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .set_range(req.range.clone())
            .set_if_none_match(req.if_none_match.clone())
            .set_if_match(req.if_match.clone())
            .set_if_modified_since(
                req.if_modified_since
                    .map(aws_sdk_s3::primitives::DateTime::from),
            )
            .set_request_payer(self.request_payer(obj))
            .set_expected_bucket_owner(tenant.config.expected_owner.clone());
        let op = op.customize().interceptor(recorder.clone());
        if obj.provider == ProviderKind::Gcs {
            // GCS rejects the checksum-mode header; it is never needed for reads.
            let op = op.mutate_request(|r| {
                r.headers_mut().remove("x-amz-checksum-mode");
            });
            return self.send_get(op.send(), &recorder).await;
        }
        self.send_get(op.send(), &recorder).await
    }

    async fn send_get<F>(&self, send: F, recorder: &Recorder) -> Result<Fetched, OriginError>
    where
        F: Future<
            Output = Result<
                aws_sdk_s3::operation::get_object::GetObjectOutput,
                SdkError<
                    aws_sdk_s3::operation::get_object::GetObjectError,
                    aws_smithy_runtime_api::http::Response,
                >,
            >,
        >,
    {
        let timeout = self.origin.first_byte_timeout.0;
        let out = match tokio::time::timeout(timeout, send).await {
            Err(_) => {
                return Err(OriginError::Timeout(format!(
                    "no response headers within {timeout:?}"
                )));
            }
            Ok(Err(e)) => {
                classify(e)?;
                let seen = recorder.seen();
                return Ok(Fetched::NotModified(Box::new(NotModified {
                    exchange: seen.exchange.unwrap_or_else(Exchange::now),
                    fields: seen.fields,
                })));
            }
            Ok(Ok(out)) => out,
        };
        let content_length = out.content_length.and_then(|l| u64::try_from(l).ok());
        let size = out
            .content_range
            .as_deref()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.parse().ok())
            .or(content_length)
            .unwrap_or(0);
        let seen = recorder.seen();
        let exchange = seen.exchange.unwrap_or_else(Exchange::now);
        let meta = ObjectMeta {
            size,
            fields: StoredFields {
                content_type: out.content_type,
                etag: out.e_tag,
                last_modified: out.last_modified.and_then(|d| SystemTime::try_from(d).ok()),
                content_encoding: out.content_encoding,
                content_disposition: out.content_disposition,
                content_language: out.content_language,
                cache_control: seen.fields.cache_control,
                expires: seen.fields.expires,
                // RFC 9110 §6.6.1: an answer without a Date gets the time it arrived.
                date: Some(seen.fields.date.unwrap_or(exchange.response_time)),
            },
        };
        Ok(Fetched::Object(Box::new(OriginObject {
            meta,
            content_length,
            content_range: out.content_range,
            body: out.body,
            slot: None,
            exchange,
        })))
    }

    /// `requester` for a bucket configured as Requester Pays (the platform pays).
    fn request_payer(&self, obj: &ObjectRef) -> Option<aws_sdk_s3::types::RequestPayer> {
        self.buckets
            .get(&obj.bucket)
            .filter(|b| b.request_payer)
            .map(|_| aws_sdk_s3::types::RequestPayer::Requester)
    }

    /// The configured endpoint for `obj`'s bucket (or GCS's), if not AWS's own.
    fn endpoint(&self, obj: &ObjectRef) -> Option<String> {
        let bucket = self.buckets.get(&obj.bucket);
        bucket.and_then(|b| b.endpoint.clone()).or_else(|| {
            (obj.provider == ProviderKind::Gcs)
                .then(|| self.gcs.as_ref().map(|g| g.endpoint.clone()))
                .flatten()
        })
    }

    /// Whether `obj`'s bucket is addressed path-style: configured so, GCS, Azure, or an IP or
    /// `localhost` endpoint (where virtual-host addressing cannot work). Such stores
    /// resolve `.` and `..` in the path, so the proxy refuses those keys for them.
    pub fn path_style(&self, obj: &ObjectRef) -> bool {
        // Azure names the container in the path as well.
        matches!(obj.provider, ProviderKind::Gcs | ProviderKind::Azure)
            || self.buckets.get(&obj.bucket).is_some_and(|b| b.path_style)
            || self
                .endpoint(obj)
                .as_deref()
                .or(self.env_endpoint.as_deref())
                .is_some_and(is_local_endpoint)
    }

    /// The region learnt for `bucket` from a wrong-region answer, if any.
    pub fn discovered_region(&self, bucket: &str) -> Option<String> {
        self.discovered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket)
            .cloned()
    }

    /// The proxy's own identity and settings, from the standard AWS chain.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.base
    }

    /// How long a body may go without a chunk before it counts as broken.
    pub fn idle_timeout(&self) -> Duration {
        self.origin.first_byte_timeout.0
    }
}

/// Whether an endpoint URL's host is an IP address or `localhost`.
fn is_local_endpoint(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return false;
    };
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

/// Reads the next chunk of an origin body, failing if it stalls for `idle`.
pub(crate) async fn next_chunk(
    body: &mut ByteStream,
    idle: Duration,
) -> Result<Option<Bytes>, OriginError> {
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Err(OriginError::Body(format!("no data for {idle:?}"))),
        Ok(None) => Ok(None),
        Ok(Some(Ok(b))) => Ok(Some(b)),
        Ok(Some(Err(e))) => Err(OriginError::Body(error_chain(&e))),
    }
}

/// The embedded store's address and the keys it accepts: a bucket configured with that
/// endpoint and no keys of its own is read with these.
#[derive(Debug, Clone)]
pub struct StoreAccess {
    pub endpoint: String,
    pub credentials: Credentials,
}

/// The embedded store, when it runs in-process.
pub(crate) type Embedded = Option<StoreAccess>;

#[cfg(test)]
mod tests {
    #[test]
    fn local_endpoints() {
        for (e, want) in [
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000", true),
            ("http://[::1]:9000", true),
            ("https://s3.eu-west-1.amazonaws.com", false),
            ("https://minio.internal.example", false),
        ] {
            assert_eq!(super::is_local_endpoint(e), want, "{e}");
        }
    }
}
