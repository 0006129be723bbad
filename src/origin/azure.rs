//! Azure Blob Storage: Get Blob and Get Blob Properties, one request each on one shared
//! HTTPS client, authorized with an Entra ID token of the platform's app in the
//! customer's directory (Microsoft's `azure_identity` acquires, caches and refreshes it)
//! or with the container SAS the customer issued; and user delegation SAS for presigned
//! URLs. Every Azure answer is classified into an [`OriginError`] here, the only place
//! that reads Azure's error codes.
//!
//! Why not `azure_storage_blob`: its download always sends `Range` (partitioned) and
//! turns a `304` into an error, and it has no SAS; docs/design.md, "Azure".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};
use base64::Engine;
use http::{HeaderMap, StatusCode};

use super::error::OriginError;
use super::exchange::read_fields;
use super::fetched::{Fetched, GetRequest, NotModified, OriginObject};
use crate::config::{self, Config, ProviderKind, Secret};
use crate::object::{Exchange, ObjectMeta, StoredFields};
use crate::source::{ObjectRef, encode_path};

/// The Blob service version every request names (user delegation SAS of the 2020-12-06
/// layout; Azurite and every Azure region accept it).
pub(super) const API_VERSION: &str = "2024-08-04";
/// The token audience of Azure Storage.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// A user delegation key lives at most 7 days.
const MAX_KEY_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Bytes of an error answer read for its message (logged, never sent to a client).
const MAX_ERROR_BODY: usize = 8 * 1024;

enum Access {
    /// The platform's app, with a token in the customer's directory.
    Token(Arc<dyn TokenCredential>),
    /// The customer's container SAS (query string, without `?`).
    Sas(Secret),
}

struct Container {
    account: String,
    /// `https://ACCOUNT.blob.core.windows.net`, or the configured endpoint.
    endpoint: String,
    access: Access,
    /// The user delegation key presigned URLs are signed with, while it lives.
    delegation: Mutex<Option<Arc<DelegationKey>>>,
}

/// Every configured Azure container and how it is read.
pub(super) struct AzureOrigin {
    http: reqwest::Client,
    containers: HashMap<String, Container>,
    timeout: Duration,
    max_attempts: u32,
}

impl AzureOrigin {
    /// `None` when no container is configured with `provider = "azure"`.
    pub(super) fn new(config: &Config) -> Result<Option<AzureOrigin>, String> {
        let buckets: Vec<&config::Bucket> = config
            .buckets
            .iter()
            .filter(|b| b.provider == ProviderKind::Azure)
            .collect();
        if buckets.is_empty() {
            return Ok(None);
        }
        // One pool of connections for every account and for Entra ID; no redirects (an
        // answer is classified, never followed to a host the config did not name). The
        // pool is bounded as the S3 one is: a burst leaves at most that many idle
        // connections per host, each holding its read buffer, and not for long.
        let http = reqwest::Client::builder()
            .connect_timeout(config.origin.connect_timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(super::pool::IDLE_TIMEOUT)
            .pool_max_idle_per_host(super::pool::MAX_IDLE_PER_HOST)
            .build()
            .map_err(|e| format!("the Azure HTTPS client could not be built: {e}"))?;
        let mut credentials: HashMap<String, Arc<dyn TokenCredential>> = HashMap::new();
        let mut containers = HashMap::new();
        for b in buckets {
            let (Some(account), Some(endpoint)) = (b.account.clone(), b.azure_endpoint()) else {
                return Err(format!("Azure container {} has no account", b.name));
            };
            let access = match (&b.sas, &b.directory, &config.azure) {
                (Some(sas), _, _) => Access::Sas(Secret::new(
                    sas.expose().trim_start_matches('?').to_string(),
                )),
                (None, Some(directory), Some(app)) => {
                    let credential = match credentials.get(directory) {
                        Some(c) => c.clone(),
                        None => {
                            let c = app_credential(app, directory, &http)?;
                            credentials.insert(directory.clone(), c.clone());
                            c
                        }
                    };
                    Access::Token(credential)
                }
                _ => {
                    return Err(format!(
                        "Azure container {} needs sas, or directory and an [azure] section",
                        b.name
                    ));
                }
            };
            containers.insert(
                b.name.clone(),
                Container {
                    account,
                    endpoint,
                    access,
                    delegation: Mutex::new(None),
                },
            );
        }
        Ok(Some(AzureOrigin {
            http,
            containers,
            timeout: config.origin.first_byte_timeout.0,
            max_attempts: config.origin.max_attempts.max(1),
        }))
    }

    fn container(&self, obj: &ObjectRef) -> Result<&Container, OriginError> {
        self.containers.get(&obj.bucket).ok_or_else(|| {
            OriginError::Credentials(format!(
                "container {} has no [[buckets]] entry with provider = \"azure\"",
                obj.bucket
            ))
        })
    }

    /// Get Blob, answered within `first_byte_timeout` (headers; the body streams).
    /// Transient failures (no connection, 500, 503) are retried up to `max_attempts`.
    pub(super) async fn get(
        &self,
        obj: &ObjectRef,
        req: &GetRequest,
    ) -> Result<Fetched, OriginError> {
        let mut attempt = 1;
        loop {
            match self.get_once(obj, req).await {
                Err(e) if attempt < self.max_attempts && transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn get_once(&self, obj: &ObjectRef, req: &GetRequest) -> Result<Fetched, OriginError> {
        let c = self.container(obj)?;
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: Option<String>| {
            if let Some(v) = value.and_then(|v| v.parse().ok()) {
                headers.insert(name, v);
            }
        };
        set("range", req.range.clone());
        set("if-none-match", req.if_none_match.clone());
        set("if-match", req.if_match.clone());
        set(
            "if-modified-since",
            req.if_modified_since.map(httpdate::fmt_http_date),
        );
        let sent = SystemTime::now();
        let resp = self
            .send(c, reqwest::Method::GET, &blob_url(c, obj), headers)
            .await?;
        let response_time = SystemTime::now();
        let fields = read_fields(|name| {
            resp.headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        });
        let exchange = Exchange {
            request_time: sent,
            response_time,
            age: resp
                .headers()
                .get("age")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs),
        };
        match resp.status() {
            StatusCode::NOT_MODIFIED => {
                return Ok(Fetched::NotModified(Box::new(NotModified {
                    fields,
                    exchange,
                })));
            }
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            _ => return Err(error_of(resp).await),
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let content_length = header("content-length").and_then(|l| l.trim().parse().ok());
        let content_range = (resp.status() == StatusCode::PARTIAL_CONTENT)
            .then(|| header("content-range"))
            .flatten();
        let size = content_range
            .as_deref()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.parse().ok())
            .or(content_length)
            .unwrap_or(0);
        let meta = ObjectMeta {
            size,
            fields: StoredFields {
                // RFC 9110 §6.6.1: an answer without a Date gets the time it arrived.
                date: Some(fields.date.unwrap_or(response_time)),
                ..fields
            },
        };
        let body: http::Response<reqwest::Body> = resp.into();
        Ok(Fetched::Object(Box::new(OriginObject {
            meta,
            content_length,
            content_range,
            body: ByteStream::from_body_1_x(body.into_body()),
            slot: None,
            exchange,
        })))
    }

    /// The blob's content type, from Get Blob Properties (for presigning).
    pub(super) async fn content_type(
        &self,
        obj: &ObjectRef,
    ) -> Result<Option<String>, OriginError> {
        let c = self.container(obj)?;
        let resp = self
            .send(
                c,
                reqwest::Method::HEAD,
                &blob_url(c, obj),
                HeaderMap::new(),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(String::from))
    }

    /// One request with the container's access: its SAS in the query, or a bearer token.
    async fn send(
        &self,
        c: &Container,
        method: reqwest::Method,
        url: &str,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, OriginError> {
        let timeout = self.timeout;
        let call = async {
            let mut url = url.to_string();
            let mut bearer = None;
            match &c.access {
                Access::Sas(sas) => {
                    url.push(if url.contains('?') { '&' } else { '?' });
                    url.push_str(sas.expose());
                }
                Access::Token(credential) => bearer = Some(token(credential.as_ref()).await?),
            }
            let mut rb = self.http.request(method, url.as_str());
            if let Some(token) = &bearer {
                rb = rb.bearer_auth(token.token.secret());
            }
            // Errors without the URL: it may carry the customer's SAS, never logged.
            let request = rb
                .headers(headers)
                .header("x-ms-version", API_VERSION)
                .header("x-ms-date", httpdate::fmt_http_date(SystemTime::now()))
                .build()
                .map_err(|e| {
                    OriginError::Protocol(format!("blob request not built: {}", e.without_url()))
                })?;
            self.http.execute(request).await.map_err(|e| {
                OriginError::Unreachable(format!(
                    "{} ({})",
                    c.endpoint,
                    super::credentials::error_chain(&e.without_url())
                ))
            })
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(OriginError::Timeout(format!(
                "no response headers within {timeout:?}"
            ))),
            Ok(r) => r,
        }
    }

    /// A presigned GET URL for `obj` valid until at most `until`: a user delegation SAS
    /// for one blob, read only, that also ends no later than the token it was derived
    /// with. Containers read with the customer's SAS have none (see [`OriginError`]).
    pub(super) async fn presign(
        &self,
        obj: &ObjectRef,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<(String, SystemTime), OriginError> {
        let c = self.container(obj)?;
        let Access::Token(credential) = &c.access else {
            return Err(OriginError::Credentials(format!(
                "container {} is read with the customer's SAS: a presigned URL would hand out that SAS, \
                 which reads every blob of the container until its own expiry; grant the platform's app \
                 the role (directory) to presign",
                obj.bucket
            )));
        };
        let key = self.delegation_key(c, credential.as_ref(), now).await?;
        let until = until.min(key.expiry);
        if until <= now + Duration::from_secs(1) {
            return Err(OriginError::Credentials(
                "the token expires now; no URL can be signed".into(),
            ));
        }
        let start =
            now - Duration::from_secs(60).min(now.duration_since(key.start).unwrap_or_default());
        let (st, se) = (iso(start), iso(until));
        let resource = format!("/blob/{}/{}/{}", c.account, obj.bucket, obj.key);
        let string_to_sign = [
            "r",
            &st,
            &se,
            &resource,
            &key.oid,
            &key.tid,
            &key.signed_start,
            &key.signed_expiry,
            &key.service,
            &key.version,
            "", // authorized user object id
            "", // unauthorized user object id
            "", // correlation id
            "", // IP range
            "https,http",
            API_VERSION,
            "b",
            "", // snapshot time
            "", // encryption scope
            "", // rscc
            "", // rscd
            "", // rsce
            "", // rscl
            "", // rsct
        ]
        .join("\n");
        let hmac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key.value);
        let sig = base64::engine::general_purpose::STANDARD
            .encode(aws_lc_rs::hmac::sign(&hmac, string_to_sign.as_bytes()));
        let q = |v: &str| percent_encoding::utf8_percent_encode(v, QUERY).to_string();
        let query = format!(
            "sv={API_VERSION}&spr=https%2Chttp&st={}&se={}&sr=b&sp=r&skoid={}&sktid={}&skt={}&ske={}&sks={}&skv={}&sig={}",
            q(&st),
            q(&se),
            q(&key.oid),
            q(&key.tid),
            q(&key.signed_start),
            q(&key.signed_expiry),
            q(&key.service),
            q(&key.version),
            q(&sig)
        );
        let expires_at = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                until
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
            );
        Ok((format!("{}?{query}", blob_url(c, obj)), expires_at))
    }

    /// The container's user delegation key, asked for again when it would end before
    /// the token does (a key ends with the token it was asked with, so no URL signed
    /// with it outlives the token).
    async fn delegation_key(
        &self,
        c: &Container,
        credential: &dyn TokenCredential,
        now: SystemTime,
    ) -> Result<Arc<DelegationKey>, OriginError> {
        let token = token(credential).await?;
        let token_end = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(token.expires_on.unix_timestamp()).unwrap_or(0));
        let held = c
            .delegation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(key) = held
            && key.expiry <= token_end
            && key.expiry > now + Duration::from_secs(300)
        {
            return Ok(key);
        }
        let expiry = token_end.min(now + MAX_KEY_LIFE);
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
            iso(now - Duration::from_secs(60)),
            iso(expiry)
        );
        let url = format!("{}/?restype=service&comp=userdelegationkey", c.endpoint);
        let call = self
            .http
            .post(url)
            .bearer_auth(token.token.secret())
            .header("x-ms-version", API_VERSION)
            .header("x-ms-date", httpdate::fmt_http_date(SystemTime::now()))
            .header("content-type", "application/xml")
            .body(body)
            .send();
        let resp = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => return Err(OriginError::Timeout("Get User Delegation Key".into())),
            Ok(Err(e)) => {
                return Err(OriginError::Unreachable(super::credentials::error_chain(
                    &e,
                )));
            }
            Ok(Ok(r)) => r,
        };
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        let xml = resp
            .text()
            .await
            .map_err(|e| OriginError::Body(super::credentials::error_chain(&e)))?;
        let key = Arc::new(DelegationKey::parse(&xml, expiry).ok_or_else(|| {
            OriginError::Protocol("the user delegation key answer could not be read".into())
        })?);
        *c.delegation.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        Ok(key)
    }
}

/// The platform app's credential in one customer directory.
fn app_credential(
    app: &config::Azure,
    directory: &str,
    http: &reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, String> {
    let mut cloud = azure_core::cloud::CustomConfiguration::default();
    cloud.authority_host = app.authority.trim_end_matches('/').to_string();
    let client_options = ClientOptions {
        cloud: Some(Arc::new(cloud.into())),
        transport: Some(Transport::new(Arc::new(http.clone()))),
        ..ClientOptions::default()
    };
    let failed = |e: azure_core::Error| format!("[azure] app in directory {directory}: {e}");
    if let Some(secret) = &app.client_secret {
        let c = azure_identity::ClientSecretCredential::new(
            directory,
            app.client_id.clone(),
            secret.expose().to_string().into(),
            Some(azure_identity::ClientSecretCredentialOptions { client_options }),
        )
        .map_err(failed)?;
        return Ok(c);
    }
    let c = azure_identity::WorkloadIdentityCredential::new(Some(
        azure_identity::WorkloadIdentityCredentialOptions {
            credential_options: azure_identity::ClientAssertionCredentialOptions { client_options },
            client_id: Some(app.client_id.clone()),
            tenant_id: Some(directory.to_string()),
            token_file_path: app.federated_token_file.clone(),
        },
    ))
    .map_err(failed)?;
    Ok(c)
}

/// A token for Azure Storage, from the credential's cache while it has more than five
/// minutes left (the SDK's rule), else newly acquired.
async fn token(
    credential: &dyn TokenCredential,
) -> Result<azure_core::credentials::AccessToken, OriginError> {
    credential
        .get_token(&[STORAGE_SCOPE], None)
        .await
        .map_err(|e| OriginError::Credentials(format!("Entra ID token: {}", error_text(&e))))
}

/// The error and its causes, on one line (Entra ID's AADSTS text included).
fn error_text(e: &azure_core::Error) -> String {
    super::credentials::error_chain(e).replace('\n', " ")
}

fn blob_url(c: &Container, obj: &ObjectRef) -> String {
    format!("{}/{}/{}", c.endpoint, obj.bucket, encode_path(&obj.key))
}

/// Characters left as they are in a SAS query value.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `2026-12-04T18:00:00Z`: the time format of SAS fields and delegation keys.
fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn transient(e: &OriginError) -> bool {
    matches!(
        e,
        OriginError::Unreachable(_)
            | OriginError::Status {
                status: 500 | 502 | 503 | 504,
                ..
            }
    )
}

/// Azure's error answer → [`OriginError`]: missing blob, missing container and every
/// denial stay apart here (for the log and `check`) and become one 404 for clients.
async fn error_of(resp: reqwest::Response) -> OriginError {
    let status = resp.status().as_u16();
    let code = resp
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let message = read_message(resp).await;
    classify(status, &code, &message)
}

/// The `<Message>` (and `<AuthenticationErrorDetail>`) of an error body, bounded.
async fn read_message(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(Duration::from_secs(2), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let mut parts = Vec::new();
    for tag in ["Message", "AuthenticationErrorDetail"] {
        if let Some(v) = xml_value(&text, tag) {
            parts.push(v.lines().next().unwrap_or("").trim().to_string());
        }
    }
    parts.join(" ")
}

pub(super) fn classify(status: u16, code: &str, message: &str) -> OriginError {
    let detail = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    match (status, code) {
        // ResourceNotFound: the account (or container) itself is not there.
        (404, "ContainerNotFound" | "ResourceNotFound") => OriginError::NoSuchBucket,
        (404, _) => OriginError::NoSuchKey,
        (409, "BlobArchived") => OriginError::Archived("Azure Archive tier".into()),
        (403, _) | (401, _) => OriginError::AccessDenied(format!("Azure {detail}")),
        (416, _) => OriginError::RangeNotSatisfiable,
        _ => OriginError::Status {
            status,
            code: detail,
        },
    }
}

/// The text of the first `<tag>…</tag>` of a small, fixed-schema XML answer.
fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

/// What Get User Delegation Key answered: the key and the fields a SAS signed with it
/// repeats.
#[derive(Debug)]
struct DelegationKey {
    oid: String,
    tid: String,
    signed_start: String,
    signed_expiry: String,
    service: String,
    version: String,
    value: Vec<u8>,
    start: SystemTime,
    expiry: SystemTime,
}

impl DelegationKey {
    fn parse(xml: &str, asked_expiry: SystemTime) -> Option<DelegationKey> {
        let v = |tag| xml_value(xml, tag).map(str::to_string);
        let signed_expiry = v("SignedExpiry")?;
        let signed_start = v("SignedStart")?;
        let parsed = |t: &str| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok();
        Some(DelegationKey {
            oid: v("SignedOid")?,
            tid: v("SignedTid")?,
            service: v("SignedService")?,
            version: v("SignedVersion")?,
            value: base64::engine::general_purpose::STANDARD
                .decode(v("Value")?)
                .ok()?,
            start: parsed(&signed_start).unwrap_or(SystemTime::UNIX_EPOCH),
            expiry: parsed(&signed_expiry)
                .unwrap_or(asked_expiry)
                .min(asked_expiry),
            signed_start,
            signed_expiry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_errors_are_told_apart_and_never_an_oracle() {
        assert!(matches!(
            classify(404, "BlobNotFound", ""),
            OriginError::NoSuchKey
        ));
        assert!(matches!(
            classify(404, "ContainerNotFound", ""),
            OriginError::NoSuchBucket
        ));
        assert!(matches!(
            classify(
                409,
                "BlobArchived",
                "This operation is not permitted on an archived blob."
            ),
            OriginError::Archived(_)
        ));
        let denied = classify(403, "AuthorizationPermissionMismatch", "no role");
        assert!(
            matches!(&denied, OriginError::AccessDenied(d) if d.contains("AuthorizationPermissionMismatch"))
        );
        // All of them are one 404 to a client.
        for e in [
            classify(404, "BlobNotFound", ""),
            classify(404, "ContainerNotFound", ""),
            denied,
        ] {
            assert_eq!(e.into_error().status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(
            classify(503, "ServerBusy", "").into_error().status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn delegation_keys_are_read_and_never_outlive_what_was_asked() {
        let xml = "<?xml version=\"1.0\"?><UserDelegationKey><SignedOid>o</SignedOid><SignedTid>t</SignedTid>\
            <SignedStart>2026-12-04T18:00:00Z</SignedStart><SignedExpiry>2026-12-11T18:00:00Z</SignedExpiry>\
            <SignedService>b</SignedService><SignedVersion>2024-08-04</SignedVersion><Value>a2V5</Value></UserDelegationKey>";
        let asked = humantime::parse_rfc3339("2026-12-04T19:00:00Z").unwrap();
        let k = DelegationKey::parse(xml, asked).unwrap();
        assert_eq!((k.oid.as_str(), k.tid.as_str()), ("o", "t"));
        assert_eq!(k.value, b"key");
        assert_eq!(k.expiry, asked);
        assert!(DelegationKey::parse("<UserDelegationKey/>", asked).is_none());
    }
}
