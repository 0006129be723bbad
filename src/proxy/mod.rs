//! [`handle`]: one public request, through the phases in their fixed order:
//!
//! 1. route: method, path → [`route::Action`]
//! 2. source: → [`ObjectRef`]
//! 3. authorize: tenant, signature (a 403 comes before any I/O)
//! 4. lookup and 5. fetch: the cache, which calls the origin once per cold object
//! 6. respond: ranges, conditionals, headers, CORS
//! 7. log: one line and the metrics, for every request, errors included
//!
//! A GET or HEAD of a target [`memo`] remembers (answered from the cache before, its
//! signature still in its window) skips 1-3.

mod access;
pub(crate) mod conditional;
mod memo;
pub(crate) mod respond;
pub(crate) mod route;

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, request::Parts};

use crate::activity::ConnInfo;
use crate::auth::{self, Refusal, Tenant, Tenants};
use crate::body::{self, ProxyBody};
use crate::cache::{Cache, CacheStatus, Freshness, Served, VariantQuery};
use crate::clock::Clock;
use crate::config::{Config, ProviderKind};
use crate::cors::Cors;
use crate::error::{Error, Kind, Side};
use crate::metrics::Metrics;
use crate::object::downstream_cache_control;
use crate::origin::{GetRequest, Origins};
use crate::pattern::MediaRange;
use crate::peer::ClientKey;
use crate::presign::Presigner;
use crate::request::ObjectRequest;
use crate::sendfile::Spans;
use crate::source::{ObjectRef, parse_source_url};
use crate::variant::Variant;
use crate::variant::pool::RenderPool;
use route::{Action, Route, RouteName, Target};

/// Everything a request needs, built once per config.
pub struct State {
    pub config: Arc<Config>,
    pub tenants: Tenants,
    pub cors: Cors,
    pub cache: Arc<Cache>,
    pub origins: Arc<Origins>,
    pub presigner: Presigner,
    pub metrics: Arc<Metrics>,
    /// Where variants render (`[variants]`; a reload makes a new pool).
    pub renders: Arc<RenderPool>,
    /// The one clock (it outlives reloads, as the cache does).
    pub clock: Arc<Clock>,
    /// `[server] allowed_content_types`, shared by every request.
    allowed: Arc<[MediaRange]>,
    cache_control: HeaderValue,
    /// Hot targets' route, source and authorize outcomes, for this config only.
    memo: memo::Memo,
}

impl State {
    pub fn new(
        config: Arc<Config>,
        cache: Arc<Cache>,
        origins: Arc<Origins>,
        metrics: Arc<Metrics>,
        clock: Arc<Clock>,
    ) -> State {
        State {
            clock,
            allowed: config.server.allowed_content_types.clone().into(),
            tenants: Tenants::from_config(&config),
            cors: Cors::from_config(&config.cors),
            presigner: Presigner::new(&config.presign, metrics.clone()),
            renders: RenderPool::new(&config.variants, metrics.renders.waiting.clone()),
            cache_control: HeaderValue::from_str(&config.server.cache_control)
                .unwrap_or(HeaderValue::from_static("private, max-age=3600")),
            config,
            cache,
            origins,
            metrics,
            memo: memo::Memo::default(),
        }
    }

    /// Whether the request target `target` goes straight to the cache lookup.
    #[cfg(any(test, feature = "test-support"))]
    pub fn remembers(&self, target: &str) -> bool {
        self.memo.get(target).is_some()
    }
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const CSP: HeaderValue = HeaderValue::from_static("default-src 'none'; sandbox");

/// One request as it goes through the phases (pingora's per-request context): what was
/// asked, and what its log line will say, filled in as the phases run.
struct Ctx<'a> {
    state: &'a State,
    parts: &'a Parts,
    /// Its `X-Request-Id`, also in its log line.
    id: u64,
    started: Instant,
    route: RouteName,
    cache: CacheStatus,
    bucket: Option<String>,
    key: Option<String>,
    error: Option<Error>,
    /// The bucket's tenant, once known (its name for the metrics, its `cache_control`).
    tenant: Option<Arc<Tenant>>,
    /// How fresh the object answered is (for `Cache-Control` and `Age`).
    freshness: Option<Freshness>,
    /// `fmt=auto`: the answer depends on `Accept`.
    vary_accept: bool,
    /// The client ([`client_addr`]).
    client: Option<std::net::IpAddr>,
}

/// Answers one request on the public listener. Never fails: errors become responses.
pub async fn handle(state: Arc<State>, parts: Parts) -> Response<ProxyBody> {
    let in_flight = body::InFlight::start(&state.metrics.in_flight);
    let mut ctx = Ctx {
        state: &state,
        parts: &parts,
        id: fastrand::u64(..),
        started: Instant::now(),
        route: RouteName::Other,
        cache: CacheStatus::Bypass,
        bucket: None,
        key: None,
        error: None,
        tenant: None,
        freshness: None,
        vary_accept: false,
        client: client_addr(&state, &parts),
    };
    let mut response = match ctx.phases().await {
        Ok(r) => r,
        Err(e) => {
            let r = respond::error_response(&e);
            ctx.error = Some(e);
            r
        }
    };
    ctx.finish(&mut response);
    ctx.count(&response);
    let record = ctx.record(&response);
    let body = response.body_mut();
    body.track(in_flight);
    body.on_end(Box::new(move |bytes, how| record.write(bytes, how)));
    response
}

impl Ctx<'_> {
    async fn phases(&mut self) -> Result<Response<ProxyBody>, Error> {
        let (state, parts) = (self.state, self.parts);
        if parts
            .extensions
            .get::<ConnInfo>()
            .is_some_and(|c| c.overflow)
        {
            let e = Error::new(
                Kind::Overloaded,
                Side::Internal,
                "the proxy is at its connection limit; retry shortly",
            );
            return Err(e.with_detail("max_connections reached"));
        }
        let asked = parts.uri.path_and_query().map(|t| t.as_str());
        if let Some(answer) = self.remembered(asked).await {
            return answer;
        }
        let action = route::route(&parts.method, parts.uri.path(), parts.uri.query())?;
        let (route, head, sig, variant) = match action {
            Action::Preflight(_) => {
                self.route = RouteName::Preflight;
                let mut r = Response::new(ProxyBody::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                state.cors.preflight(&parts.headers, r.headers_mut());
                return Ok(r);
            }
            Action::Serve {
                route,
                head,
                sig,
                variant,
            } => (route, head, sig, variant),
        };
        self.route = route.name();
        if let Some(v) = &variant {
            self.vary_accept = v.varies_by_accept();
            v.check_sizes(&state.config.variants.widths)?;
        }
        // `Some(redirect)` for a presign route.
        let (target, presign) = match route {
            Route::Object(t) => (t, None),
            Route::Presign { target, redirect } => (target, Some(redirect)),
        };
        let obj = source(state, target)?;
        self.bucket = Some(obj.bucket.clone());
        self.key = Some(obj.key.clone());
        let tenant = state
            .tenants
            .for_bucket(&obj.bucket)
            .ok_or_else(|| Refusal::NoTenant.into_error())?;
        self.tenant = Some(tenant.clone());
        let verified = auth::verify(
            tenant,
            &obj.bucket,
            &obj.key,
            &sig,
            auth::unix_secs(state.clock.wall()),
        )
        .map_err(Refusal::into_error)?;
        let req = self.object_request(obj, tenant.clone(), head);
        match presign {
            Some(redirect) => {
                // A presigned URL never outlives the signed request that asked for it.
                let now = state.clock.wall();
                let (presigned, status) =
                    Box::pin(state.presigner.get(&req, now, verified.expires)).await?;
                self.cache = status;
                Ok(presigned.response(redirect, now))
            }
            None => {
                let served = self.serve_object(&req, variant.as_ref()).await;
                if let Some(asked) = asked
                    && variant.is_none()
                    && served.is_ok()
                    && self.cache == CacheStatus::Hit
                {
                    let outcome = memo::Remembered {
                        route: self.route,
                        obj: req.obj,
                        tenant: req.tenant,
                        verified,
                    };
                    state.memo.remember(asked, outcome);
                }
                served
            }
        }
    }

    /// The request, served from the outcome [`memo`] remembers for its target, if that
    /// still holds; `None` when it goes through the phases.
    async fn remembered(
        &mut self,
        asked: Option<&str>,
    ) -> Option<Result<Response<ProxyBody>, Error>> {
        let state = self.state;
        let head = match self.parts.method {
            http::Method::GET => false,
            http::Method::HEAD => true,
            _ => return None,
        };
        let r = state.memo.get(asked?)?;
        if !r
            .verified
            .holds_at(&r.tenant, auth::unix_secs(state.clock.wall()))
        {
            return None;
        }
        self.route = r.route;
        self.bucket = Some(r.obj.bucket.clone());
        self.key = Some(r.obj.key.clone());
        self.tenant = Some(r.tenant.clone());
        let req = self.object_request(r.obj.clone(), r.tenant.clone(), head);
        Some(self.serve_object(&req, None).await)
    }

    /// What the cache is asked for this request's object.
    fn object_request(&self, obj: ObjectRef, tenant: Arc<Tenant>, head: bool) -> ObjectRequest {
        let client = ClientKey::of(
            self.client
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
        );
        ObjectRequest {
            origins: self.state.origins.clone(),
            tenant,
            client,
            obj,
            allowed: self.state.allowed.clone(),
            head,
            passthrough: passthrough_request(&self.parts.headers, client),
            spans: self.parts.extensions.get::<Spans>().cloned(),
        }
    }

    /// Lookup, fetch (or render) and respond for an object route.
    async fn serve_object(
        &mut self,
        req: &ObjectRequest,
        variant: Option<&Variant>,
    ) -> Result<Response<ProxyBody>, Error> {
        let (state, request) = (self.state, &self.parts.headers);
        self.cache = CacheStatus::Miss;
        let served = match variant {
            None => state.cache.serve(req).await?,
            Some(variant) => {
                let accept = request.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let query = VariantQuery {
                    variant,
                    output: variant.output(accept),
                    pool: &state.renders,
                };
                Box::pin(state.cache.serve_variant(req, &query)).await?
            }
        };
        let head = req.head;
        match served {
            Served::NotFound => {
                self.cache = CacheStatus::Hit;
                Err(Error::not_found().with_detail("remembered 404"))
            }
            Served::Complete {
                cached,
                status,
                freshness,
            } => {
                self.cache = status;
                self.freshness = Some(freshness);
                Ok(respond::from_memory(request, head, &cached))
            }
            Served::Streaming {
                head: streamed,
                place,
                freshness,
            } => {
                self.cache = streamed.status;
                self.freshness = Some(freshness);
                Ok(respond::from_fill(request, head, &streamed, place))
            }
            Served::Passed { object, freshness } => {
                self.cache = CacheStatus::Bypass;
                self.freshness = Some(freshness);
                Ok(respond::from_origin(
                    head,
                    *object,
                    state.origins.idle_timeout(),
                ))
            }
            Served::FromFile {
                from,
                spans,
                freshness,
            } => {
                self.cache = CacheStatus::Hit;
                self.freshness = Some(freshness);
                Ok(respond::from_file(request, head, *from, spans))
            }
            Served::PassedNotModified => {
                self.cache = CacheStatus::Bypass;
                Ok(respond::not_modified_passthrough())
            }
        }
    }

    /// Headers every response carries, errors included.
    fn finish(&self, response: &mut Response<ProxyBody>) {
        let ok = matches!(response.status().as_u16(), 200 | 206 | 304);
        let h = response.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::CONTENT_SECURITY_POLICY, CSP);
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, self.cache_control(ok));
        }
        // Answers from the cache say how old they are (RFC 9111 §5.1: the age their
        // answer arrived with, and the time since), so that downstream caches count their
        // lifetime from the same moment; so does an answer that arrived aged.
        if ok
            && let Some(f) = &self.freshness
            && (f.age.as_secs() > 0
                || matches!(
                    self.cache,
                    CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Revalidated
                ))
        {
            h.insert(header::AGE, HeaderValue::from(f.age.as_secs()));
        }
        h.insert(X_CACHE, HeaderValue::from_static(self.cache.as_str()));
        if self.vary_accept {
            h.append(header::VARY, HeaderValue::from_static("Accept"));
        }
        h.insert(X_REQUEST_ID, access::request_id(self.id));
        self.state.cors.apply(&self.parts.headers, h);
    }

    /// `no-store` on errors; otherwise the tenant's `cache_control` (else the server's),
    /// tightened by the object's own rules (docs/http.md, "Cache-Control downstream").
    fn cache_control(&self, ok: bool) -> HeaderValue {
        if !ok {
            return HeaderValue::from_static("no-store");
        }
        let base = self
            .tenant
            .as_ref()
            .and_then(|t| t.config.cache_control.as_deref())
            .unwrap_or(&self.state.config.server.cache_control);
        let fallback = || self.state.cache_control.clone();
        let Some(f) = &self.freshness else {
            return HeaderValue::from_str(base).unwrap_or_else(|_| fallback());
        };
        downstream_header(base, f).unwrap_or_else(fallback)
    }

    /// The request's metrics, as its head goes out (bytes are counted at its end).
    fn count(&self, response: &Response<ProxyBody>) {
        let metrics = &self.state.metrics;
        metrics.request(self.route.as_str(), response.status().as_u16());
        metrics.duration(
            self.route.as_str(),
            self.cache.as_str(),
            self.started.elapsed().as_secs_f64(),
        );
        if self.route.serves_objects() {
            metrics.cache(self.cache);
        }
    }

    /// The request's log line, but for how its body ends: written then.
    fn record(&mut self, response: &Response<ProxyBody>) -> access::Record {
        access::Record {
            metrics: self.state.metrics.clone(),
            id: self.id,
            client: self.client,
            method: self.parts.method.clone(),
            route: self.route,
            bucket: self.bucket.take(),
            key: self.key.take(),
            status: response.status().as_u16(),
            cache: self.cache,
            error: self.error.take(),
            tenant: self.tenant.take(),
            started: self.started,
            head_us: self.started.elapsed().as_micros() as u64,
            conn: self
                .parts
                .extensions
                .get::<ConnInfo>()
                .map(|c| c.activity.clone()),
        }
    }
}

/// What an object's `Cache-Control` is built from, and the value, as last built on this
/// thread: the hits of one object (and of objects stored under the same rules) answer with
/// the same value every time, and building it is a string and a header value per hit.
type CacheControlFor = (
    String,
    (crate::object::Directives, std::time::Duration),
    HeaderValue,
);

thread_local! {
    static LAST_CACHE_CONTROL: std::cell::RefCell<Option<CacheControlFor>> =
        const { std::cell::RefCell::new(None) };
}

/// [`downstream_cache_control`] as a header value (`None` if it is not one), reused from
/// [`LAST_CACHE_CONTROL`] when built from the same `base` and object rules.
fn downstream_header(base: &str, f: &Freshness) -> Option<HeaderValue> {
    LAST_CACHE_CONTROL.with_borrow_mut(|last| {
        let key = (f.directives, f.lifetime);
        if let Some((b, k, value)) = last.as_ref()
            && b == base
            && *k == key
        {
            return Some(value.clone());
        }
        let value =
            HeaderValue::from_str(&downstream_cache_control(base, &f.directives, f.lifetime))
                .ok()?;
        *last = Some((base.to_string(), key, value.clone()));
        Some(value)
    })
}

/// The client: the connection's peer, or the address a trusted proxy names.
fn client_addr(state: &State, parts: &Parts) -> Option<std::net::IpAddr> {
    parts.extensions.get::<ConnInfo>().map(|c| {
        let xff = || {
            let value = parts.headers.get(X_FORWARDED_FOR)?;
            value.to_str().ok()
        };
        crate::peer::client_addr(c.peer.ip(), xff, &state.config.server.trusted_proxies)
    })
}

/// The source phase: a path or source URL → a validated object reference.
fn source(state: &State, target: Target) -> Result<ObjectRef, Error> {
    let configured = |bucket: &str| {
        state
            .config
            .bucket(bucket)
            .map(|b| b.provider)
            .unwrap_or(ProviderKind::S3)
    };
    let obj = match target {
        Target::Url(url) => {
            let obj = parse_source_url(&url)?;
            // The provider is part of the object's identity: `gs://b/k` is not the
            // S3-configured bucket `b` (nor its signature, nor its cache entry).
            let provider = configured(&obj.bucket);
            if obj.provider != provider {
                return Err(Error::bad_request(format!(
                    "bucket {} is read from {}, not {}",
                    obj.bucket,
                    provider.as_str(),
                    obj.provider.as_str()
                )));
            }
            obj
        }
        Target::Path { bucket, key } => ObjectRef::from_owned(configured(&bucket), bucket, key)?,
    };
    // The partition is part of the object's identity too: a bucket configured in one is
    // not reached through a URL naming another (another owner's bucket of that name).
    let mut obj = obj;
    if obj.provider == ProviderKind::S3 {
        let partition = state.config.partition(&obj.bucket);
        if obj.partition.is_some_and(|named| named != partition) {
            return Err(Error::bad_request(format!(
                "bucket {} is read in the {} partition, not {}",
                obj.bucket,
                partition.as_str(),
                obj.partition.map_or("", |p| p.as_str())
            )));
        }
        obj.partition = Some(partition);
        // Access point and Object Lambda aliases and directory buckets name another
        // owner's data behind a bucket-shaped name: only ever served when configured
        // exactly, never through a glob.
        if is_alias(&obj.bucket) && !state.config.names_exactly(&obj.bucket) {
            return Err(Error::bad_request(format!(
                "bucket {} is an access point alias or a directory bucket: it is served only when configured by its exact name",
                obj.bucket
            )));
        }
    }
    // An Azure container is read in its configured account only: a URL naming another
    // account names another owner's container of that name.
    if obj.provider == ProviderKind::Azure {
        let account = state
            .config
            .bucket(&obj.bucket)
            .and_then(|b| b.account.clone());
        if obj.account.is_some() && obj.account != account {
            return Err(Error::bad_request(format!(
                "container {} is read in storage account {}, not {}",
                obj.bucket,
                account.as_deref().unwrap_or("(none)"),
                obj.account.as_deref().unwrap_or("")
            )));
        }
        obj.account = account;
    }
    // A path-style store resolves `.` and `..` segments in the request path, which
    // would read another key (or bucket) than the one named: refuse those keys.
    if state.origins.path_style(&obj) && obj.key.split('/').any(|s| s == "." || s == "..") {
        return Err(Error::bad_request(
            "keys with '.' or '..' path segments cannot be read from this bucket's endpoint",
        ));
    }
    Ok(obj)
}

/// S3 names that are not plain buckets: access point aliases (`-s3alias`), Object Lambda
/// access point aliases (`--ol-s3`) and directory buckets (`--x-s3`).
fn is_alias(bucket: &str) -> bool {
    bucket.ends_with("-s3alias") || bucket.ends_with("--ol-s3") || bucket.ends_with("--x-s3")
}

/// Range and validators forwarded upstream for objects that are not cached. S3 has no
/// `If-Range`, so a request carrying one gets the whole object (RFC 9110 allows ignoring
/// `Range`), never a range of a version the client does not have.
fn passthrough_request(h: &HeaderMap, client: ClientKey) -> GetRequest {
    let get = |name: HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    GetRequest {
        client: Some(client),
        range: get(header::RANGE)
            .filter(|r| r.starts_with("bytes=") && !r.contains(','))
            .filter(|_| !h.contains_key(header::IF_RANGE)),
        if_none_match: get(header::IF_NONE_MATCH),
        if_modified_since: get(header::IF_MODIFIED_SINCE)
            .and_then(|v| httpdate::parse_http_date(&v).ok()),
        if_match: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::object::Directives;

    /// The value reused on a thread is the one the same inputs build: a change of the base,
    /// of any rule or of the lifetime builds it again.
    #[test]
    fn a_reused_cache_control_is_the_one_its_inputs_build() {
        let fresh = |directives, secs| Freshness {
            directives,
            lifetime: Duration::from_secs(secs),
            age: Duration::ZERO,
        };
        let private = Directives {
            private: true,
            ..Directives::default()
        };
        let no_cache = Directives {
            no_cache: true,
            ..Directives::default()
        };
        let cases = [
            ("public, max-age=3600", fresh(Directives::default(), 600)),
            ("public, max-age=3600", fresh(Directives::default(), 600)),
            ("public, max-age=3600", fresh(private, 600)),
            ("public, max-age=3600", fresh(no_cache, 600)),
            ("public, max-age=3600", fresh(no_cache, 60)),
            ("private, max-age=3600", fresh(no_cache, 60)),
            ("public, max-age=3600", fresh(Directives::default(), 600)),
        ];
        for (base, f) in &cases {
            let built = downstream_cache_control(base, &f.directives, f.lifetime);
            assert_eq!(
                downstream_header(base, f).unwrap(),
                built.as_str(),
                "{base} {f:?}"
            );
        }
    }
}
