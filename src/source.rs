//! Source URLs and request paths → [`ObjectRef`] (provider, bucket, region?, key).
//!
//! The source phase of the request path. Pure parsing: the host of a source URL only
//! selects a provider and where the bucket name is; it is never dialled. Every form in
//! docs/http.md, "Routes" is accepted; anything else is a `400` before authorization.

use crate::config::{Partition, ProviderKind};
use crate::error::Error;

/// Longest object key S3 and GCS accept, in bytes of UTF-8.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// One object in one bucket of one provider: the cache key and the origin's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub provider: ProviderKind,
    pub bucket: String,
    /// The region named by the source URL, if any (config wins over it).
    pub region: Option<String>,
    /// The AWS partition, part of the object's identity: as an `https://` S3 URL names
    /// it (its domain, its region); `None` where nothing names it (`s3://`, the path
    /// form). The source phase sets the configured bucket's, refusing a URL that names
    /// another.
    pub partition: Option<Partition>,
    /// The Azure storage account a `*.blob.core.windows.net` URL names; the source
    /// phase refuses one that is not the container's configured account.
    pub account: Option<String>,
    pub key: String,
}

impl ObjectRef {
    pub fn new(provider: ProviderKind, bucket: &str, key: &str) -> Result<ObjectRef, Error> {
        ObjectRef::from_owned(provider, bucket.to_string(), key.to_string())
    }

    /// As [`ObjectRef::new`], taking names already owned (the path route's decoded ones).
    pub fn from_owned(
        provider: ProviderKind,
        bucket: String,
        key: String,
    ) -> Result<ObjectRef, Error> {
        object(provider, bucket, None, key)
    }
}

/// Percent-decodes once; `+` stays a literal plus. Malformed escapes and bytes that are
/// not UTF-8 are refused rather than guessed at.
pub(crate) fn decode_component(raw: &str) -> Result<String, Error> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(Error::bad_request("malformed percent-escape in the URL"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::bad_request("the URL does not decode to UTF-8"))
}

/// `/{bucket}/{key…}` (the leading `/` already present) → (bucket, key), both decoded once.
pub fn parse_path(path: &str) -> Result<(String, String), Error> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let Some((bucket, key)) = rest.split_once('/') else {
        return Err(Error::bad_request("expected /{bucket}/{key}"));
    };
    Ok((decode_component(bucket)?, decode_component(key)?))
}

/// Parses a source URL of docs/http.md, "Routes" into an [`ObjectRef`].
pub fn parse_source_url(url: &str) -> Result<ObjectRef, Error> {
    let bad = |why: &str| Error::bad_request(format!("unsupported source URL: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected scheme://host/key"))?;
    let scheme = scheme.to_ascii_lowercase();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // Query and fragment never name the object; only the path does.
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    if authority.contains('@') {
        return Err(bad("userinfo is not allowed"));
    }
    if authority.contains(':') || authority.starts_with('[') {
        return Err(bad("a port or IP literal is not allowed"));
    }
    let host = authority.to_ascii_lowercase();
    match scheme.as_str() {
        // s3://, gs:// and az:// name the bucket (container) in the authority and the key
        // literally, as the AWS CLI, gsutil and azcopy's az:// do: no percent-decoding.
        "s3" | "gs" | "az" => {
            let provider = match scheme.as_str() {
                "s3" => ProviderKind::S3,
                "gs" => ProviderKind::Gcs,
                _ => ProviderKind::Azure,
            };
            let key = path.strip_prefix('/').unwrap_or(path);
            object(provider, authority.to_string(), None, key.to_string())
        }
        "http" | "https" => parse_http(&host, path),
        _ => Err(bad("the scheme must be https, http, s3, gs or az")),
    }
}

fn object(
    provider: ProviderKind,
    bucket: String,
    region: Option<String>,
    key: String,
) -> Result<ObjectRef, Error> {
    validate_bucket(&bucket, provider)?;
    validate_key(&key)?;
    Ok(ObjectRef {
        provider,
        bucket,
        partition: None,
        account: None,
        region,
        key,
    })
}

fn parse_http(host: &str, path: &str) -> Result<ObjectRef, Error> {
    let bad = |why: &str| Error::bad_request(format!("unsupported source URL: {why}"));
    if host.is_empty() || looks_like_ipv4(host) {
        return Err(bad("the host must be an S3, GCS or Azure Blob name"));
    }
    if let Some(account) = host.strip_suffix(".blob.core.windows.net") {
        let valid = (3..=24).contains(&account.len())
            && account
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(bad("not an Azure storage account host"));
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        let (container, key) = path
            .split_once('/')
            .ok_or_else(|| bad("expected /{container}/{blob}"))?;
        let mut obj = object(
            ProviderKind::Azure,
            decode_component(container)?,
            None,
            decode_component(key)?,
        )?;
        obj.account = Some(account.to_string());
        return Ok(obj);
    }
    let mut china = false;
    let (provider, bucket_in_host, region) = if let Some((prefix, cn)) = aws_prefix(host) {
        let (bucket, region) =
            split_s3_endpoint(prefix).ok_or_else(|| bad("not an S3 endpoint host"))?;
        china = cn;
        (ProviderKind::S3, bucket, region)
    } else if host == "storage.googleapis.com" {
        (ProviderKind::Gcs, None, None)
    } else if let Some(bucket) = host.strip_suffix(".storage.googleapis.com") {
        (ProviderKind::Gcs, Some(bucket.to_string()), None)
    } else {
        return Err(bad("the host is not an S3, GCS or Azure Blob endpoint"));
    };
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut obj = match bucket_in_host {
        Some(bucket) => object(provider, bucket, region, decode_component(path)?)?,
        None => {
            let (bucket, key) = path
                .split_once('/')
                .ok_or_else(|| bad("expected /{bucket}/{key}"))?;
            object(
                provider,
                decode_component(bucket)?,
                region,
                decode_component(key)?,
            )?
        }
    };
    if provider == ProviderKind::S3 {
        obj.partition = Some(if china {
            Partition::AwsCn
        } else {
            obj.region
                .as_deref()
                .map_or(Partition::Aws, Partition::of_region)
        });
    }
    Ok(obj)
}

/// The part of an AWS host before its partition's domain, and whether that domain is
/// the China partition's.
fn aws_prefix(host: &str) -> Option<(&str, bool)> {
    host.strip_suffix(".amazonaws.com")
        .map(|p| (p, false))
        .or_else(|| host.strip_suffix(".amazonaws.com.cn").map(|p| (p, true)))
}

/// `B.s3.REGION`, `B.s3`, `B.s3-REGION`, `B.s3.dualstack.REGION` and the same without
/// `B.` (path style) → (bucket in host?, region?). `None` for any other S3 host.
fn split_s3_endpoint(prefix: &str) -> Option<(Option<String>, Option<String>)> {
    let labels: Vec<&str> = prefix.split('.').collect();
    let n = labels.len();
    let last = labels[n - 1];
    let (endpoint_len, region) = if last == "s3" {
        (1, None)
    } else if let Some(region) = last.strip_prefix("s3-").filter(|r| is_region(r)) {
        (1, Some(region))
    } else if n >= 2 && labels[n - 2] == "s3" && is_region(last) {
        (2, Some(last))
    } else if n >= 3 && labels[n - 3] == "s3" && labels[n - 2] == "dualstack" && is_region(last) {
        (3, Some(last))
    } else {
        return None;
    };
    let bucket = (n > endpoint_len).then(|| labels[..n - endpoint_len].join("."));
    Some((bucket, region.map(String::from)))
}

/// AWS region names: `us-east-1`, `eu-west-1`, `us-gov-west-1`, `cn-north-1`.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

fn looks_like_ipv4(s: &str) -> bool {
    s.split('.').count() == 4
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
}

/// S3 bucket naming rules (and GCS's, which also allow `_` and longer dotted names).
pub(crate) fn validate_bucket(name: &str, provider: ProviderKind) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::bad_request(format!("invalid bucket name: {why}")));
    if provider == ProviderKind::Azure {
        // Azure container names: 3-63 lowercase letters, digits and single hyphens.
        let ok = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        return if ok {
            Ok(())
        } else {
            bad("an Azure container name is 3 to 63 lowercase letters, digits and single hyphens")
        };
    }
    let gcs = provider == ProviderKind::Gcs;
    let max = if gcs && name.contains('.') { 222 } else { 63 };
    if name.len() < 3 || name.len() > max {
        return bad("it must be 3 to 63 characters long");
    }
    let allowed = |b: u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || (gcs && b == b'_')
    };
    if !name.bytes().all(allowed) {
        return bad("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(name.as_bytes()[0]) || !alnum(name.as_bytes()[name.len() - 1]) {
        return bad("it must start and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("it must not contain '..'");
    }
    if looks_like_ipv4(name) {
        return bad("it must not look like an IP address");
    }
    if gcs && name.split('.').any(|l| l.len() > 63) {
        return bad("each dot-separated part must be at most 63 characters");
    }
    Ok(())
}

pub(crate) fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::bad_request("the object key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::bad_request(
            "the object key is longer than 1024 bytes",
        ));
    }
    Ok(())
}

/// Percent-encodes a key for a URL path, keeping `/`.
pub fn encode_path(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
