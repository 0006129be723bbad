//! What bucketfront knows about an object besides its bytes: the headers it stored with
//! it, passed on with every answer, and the caching rules they carry. Shared by the
//! origin (which reads it from S3), the cache (which stores it and honours its rules)
//! and the respond phase (which turns it into response headers).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName, HeaderValue};

use crate::pattern::{MediaRange, content_type_allowed};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    /// The whole object's size in bytes (not the size of one range of it).
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// Stored with the object and sent as they are: a `gzip` SVG is served encoded
    /// (ranges are ranges of the encoded bytes, as S3 does).
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    /// The object's own `Cache-Control` and `Expires`, read as a shared cache reads them
    /// ([`Directives`]).
    pub cache_control: Option<String>,
    pub expires: Option<SystemTime>,
}

impl ObjectMeta {
    /// `Last-Modified` as an HTTP date.
    pub fn last_modified_http(&self) -> Option<String> {
        self.last_modified.map(httpdate::fmt_http_date)
    }

    /// Whether the content type is one of the allowed ranges (`image/*`, `image/png`).
    /// An object without a content type is never allowed: browsers would sniff it.
    pub fn content_type_allowed(&self, allowed: &[MediaRange]) -> bool {
        content_type_allowed(self.content_type.as_deref(), allowed)
    }

    /// The caching rules of the object's own metadata, `fetched_at` being when its
    /// response arrived (what an `Expires` date is measured from).
    pub fn directives(&self, fetched_at: SystemTime) -> Directives {
        Directives::parse(self.cache_control.as_deref(), self.expires, fetched_at)
    }
}

/// Response headers made from an object's metadata, each encoded once.
pub type EncodedHeaders = Vec<(HeaderName, HeaderValue)>;

/// The headers an answer with this object's bytes carries: `Content-Type`, the stored
/// `Content-Encoding`/`-Disposition`/`-Language` (sent as stored: an encoded body stays
/// encoded, a range is a range of the encoded bytes), `Accept-Ranges` and the validators.
/// A cached object keeps them beside its bytes, so a hit copies reference counts instead
/// of validating strings and formatting a date. Values that are not valid header values
/// are left out.
pub fn response_headers(meta: &ObjectMeta) -> EncodedHeaders {
    let mut out = Vec::with_capacity(7);
    let last_modified = meta.last_modified_http();
    for (name, value) in [
        (header::CONTENT_TYPE, meta.content_type.as_deref()),
        (header::CONTENT_ENCODING, meta.content_encoding.as_deref()),
        (
            header::CONTENT_DISPOSITION,
            meta.content_disposition.as_deref(),
        ),
        (header::CONTENT_LANGUAGE, meta.content_language.as_deref()),
        (header::ETAG, meta.etag.as_deref()),
        (header::LAST_MODIFIED, last_modified.as_deref()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            out.push((name, v));
        }
    }
    out.push((header::ACCEPT_RANGES, HeaderValue::from_static("bytes")));
    out
}

/// Whether `name` is a validator (what a `304` repeats).
pub fn is_validator(name: &HeaderName) -> bool {
    name == header::ETAG || name == header::LAST_MODIFIED
}

/// An object's `Cache-Control`/`Expires` as RFC 9111 asks a shared cache to read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`: never stored; every request goes to the origin.
    pub no_store: bool,
    /// `private`: for one user's cache only; a shared cache does not store it.
    pub private: bool,
    /// `no-cache`: stored, but revalidated with the origin before every use.
    pub no_cache: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale, not even when the
    /// origin fails (`no-cache` implies it too).
    pub must_revalidate: bool,
    /// `s-maxage`, else `max-age`, else `Expires` − arrival: how long it is fresh.
    pub max_age: Option<Duration>,
}

impl Directives {
    pub fn parse(
        cache_control: Option<&str>,
        expires: Option<SystemTime>,
        fetched_at: SystemTime,
    ) -> Directives {
        let mut d = Directives::default();
        let (mut max_age, mut s_maxage) = (None, None);
        for part in cache_control.unwrap_or("").split(',') {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part.trim(), None),
            };
            let secs = || {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "private" => d.private = true,
                "no-cache" => d.no_cache = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                // A malformed value is treated as stale (RFC 9111 §4.2.1), as `0`.
                "max-age" => max_age = Some(secs().unwrap_or(Duration::ZERO)),
                "s-maxage" => s_maxage = Some(secs().unwrap_or(Duration::ZERO)),
                _ => {}
            }
        }
        d.must_revalidate |= d.no_cache;
        d.max_age = s_maxage
            .or(max_age)
            .or_else(|| expires.map(|e| e.duration_since(fetched_at).unwrap_or(Duration::ZERO)));
        d
    }

    /// Whether a shared cache may store the object at all.
    pub fn storable(&self) -> bool {
        !self.no_store && !self.private
    }

    /// How long the proxy keeps it fresh: its own lifetime capped by `ttl`; `no-cache`
    /// makes it zero (every use revalidates).
    pub fn lifetime(&self, ttl: Duration) -> Duration {
        if self.no_cache {
            return Duration::ZERO;
        }
        self.max_age.map_or(ttl, |m| m.min(ttl))
    }
}

/// The `Cache-Control` sent downstream for an object: `base` (the tenant's
/// `cache_control`, else `[server] cache_control`), tightened by the object's rules:
///
/// - `no-store` on the object → `no-store`;
/// - `private` → `public` becomes `private`; `no-cache` and `must-revalidate` are added;
/// - `max-age` and `s-maxage` never exceed `lifetime`, the object's freshness at the
///   proxy; with `Age` on the answer, a browser therefore never keeps an object past the
///   moment the proxy itself would revalidate it.
pub fn downstream_cache_control(base: &str, d: &Directives, lifetime: Duration) -> String {
    if d.no_store {
        return "no-store".into();
    }
    let cap = lifetime.as_secs();
    let mut out: Vec<String> = Vec::new();
    let mut has_max_age = false;
    for part in base.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        let capped = |v: &str| v.trim().parse::<u64>().map_or(0, |n| n.min(cap));
        if let Some(v) = lower.strip_prefix("max-age=") {
            has_max_age = true;
            out.push(format!("max-age={}", capped(v)));
        } else if let Some(v) = lower.strip_prefix("s-maxage=") {
            out.push(format!("s-maxage={}", capped(v)));
        } else if lower == "public" && d.private {
            out.push("private".into());
        } else {
            out.push(part.to_string());
        }
    }
    let stores = !out.iter().any(|p| p.eq_ignore_ascii_case("no-store"));
    if stores && !has_max_age {
        out.push(format!("max-age={cap}"));
    }
    for (wanted, name) in [
        (d.private, "private"),
        (d.no_cache, "no-cache"),
        (d.must_revalidate, "must-revalidate"),
    ] {
        if wanted && !out.iter().any(|p| p.eq_ignore_ascii_case(name)) {
            out.push(name.into());
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(cc: &str) -> Directives {
        Directives::parse(Some(cc), None, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn directives_as_a_shared_cache_reads_them() {
        let hour = Duration::from_secs(3600);
        let cases = [
            ("", true, hour, false),
            ("no-store", false, hour, false),
            ("private, max-age=60", false, Duration::from_secs(60), false),
            ("public, max-age=60", true, Duration::from_secs(60), false),
            (
                "max-age=60, s-maxage=120",
                true,
                Duration::from_secs(120),
                false,
            ),
            ("max-age=86400", true, hour, false),
            ("no-cache", true, Duration::ZERO, true),
            (
                "max-age=600, must-revalidate",
                true,
                Duration::from_secs(600),
                true,
            ),
            ("PROXY-REVALIDATE", true, hour, true),
            ("max-age=abc", true, Duration::ZERO, false),
            ("max-age=\"30\"", true, Duration::from_secs(30), false),
        ];
        for (cc, storable, lifetime, strict) in cases {
            let got = d(cc);
            assert_eq!(got.storable(), storable, "{cc}");
            assert_eq!(got.lifetime(hour), lifetime, "{cc}");
            assert_eq!(got.must_revalidate, strict, "{cc}");
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let expires = Directives::parse(None, Some(at + Duration::from_secs(90)), at);
        assert_eq!(expires.max_age, Some(Duration::from_secs(90)));
        let past = Directives::parse(None, Some(at - Duration::from_secs(90)), at);
        assert_eq!(past.max_age, Some(Duration::ZERO));
        let both = Directives::parse(Some("max-age=5"), Some(at + Duration::from_secs(90)), at);
        assert_eq!(
            both.max_age,
            Some(Duration::from_secs(5)),
            "max-age wins over Expires"
        );
    }

    #[test]
    fn downstream_never_outlives_the_proxys_freshness() {
        let hour = Duration::from_secs(3600);
        let cases = [
            ("private, max-age=3600", "", hour, "private, max-age=3600"),
            (
                "private, max-age=3600",
                "max-age=60",
                Duration::from_secs(60),
                "private, max-age=60",
            ),
            (
                "public, max-age=86400, immutable",
                "",
                hour,
                "public, max-age=3600, immutable",
            ),
            (
                "public, max-age=86400",
                "private",
                hour,
                "private, max-age=3600",
            ),
            ("private, max-age=3600", "no-store", hour, "no-store"),
            (
                "private, max-age=3600",
                "no-cache",
                Duration::ZERO,
                "private, max-age=0, no-cache, must-revalidate",
            ),
            (
                "private",
                "must-revalidate",
                hour,
                "private, max-age=3600, must-revalidate",
            ),
            (
                "public, s-maxage=600, max-age=60",
                "",
                Duration::from_secs(300),
                "public, s-maxage=300, max-age=60",
            ),
            ("no-store", "", hour, "no-store"),
        ];
        for (base, object, lifetime, want) in cases {
            let got = downstream_cache_control(base, &d(object), lifetime);
            assert_eq!(got, want, "base {base:?}, object {object:?}");
        }
    }
}
