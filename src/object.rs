//! What bucketfront knows about an object besides its bytes: the headers it stored with
//! it, passed on with every answer, and the caching rules they carry. Shared by the
//! origin (which reads it from S3), the cache (which stores it and honours its rules)
//! and the respond phase (which turns it into response headers).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName, HeaderValue};

use crate::pattern::{MediaRange, content_type_allowed};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The whole object's size in bytes (not the size of one range of it).
    pub size: u64,
    pub fields: StoredFields,
}

/// The header fields stored with an object and sent with every answer for it; a `304`
/// carries the same set (those present replace the stored ones, RFC 9111 §4.3.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFields {
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// Stored with the object and sent as they are: a `gzip` SVG is served encoded
    /// (ranges are ranges of the encoded bytes, as S3 does).
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    /// The object's own `Cache-Control` (every field line of it, as one list) and
    /// `Expires` as the origin sent it (an invalid date means "already expired"), read as
    /// a shared cache reads them ([`Directives`]).
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    /// The origin's `Date` (or, when it sent none, when its answer arrived): what an
    /// `Expires` is measured from, and what goes downstream with `Age` (RFC 9110 §6.6.1).
    pub date: Option<SystemTime>,
}

impl StoredFields {
    /// Each field `new` has replaces the stored one; the others stay.
    pub fn overlay(&mut self, new: StoredFields) {
        fn keep<T>(slot: &mut Option<T>, new: Option<T>) {
            if new.is_some() {
                *slot = new;
            }
        }
        keep(&mut self.content_type, new.content_type);
        keep(&mut self.etag, new.etag);
        keep(&mut self.last_modified, new.last_modified);
        keep(&mut self.content_encoding, new.content_encoding);
        keep(&mut self.content_disposition, new.content_disposition);
        keep(&mut self.content_language, new.content_language);
        keep(&mut self.cache_control, new.cache_control);
        keep(&mut self.expires, new.expires);
        keep(&mut self.date, new.date);
    }
}

impl ObjectMeta {
    /// Whether a GET/HEAD with these validators is answered `304 Not Modified` (RFC 9110
    /// §13.2.2): `If-None-Match` (the header's value) when there is one, else
    /// `If-Modified-Since` against `Last-Modified` to the second. The date is asked for
    /// only then: browsers send both, and an `If-None-Match` makes it unread.
    pub(crate) fn not_modified_by(
        &self,
        if_none_match: Option<&str>,
        if_modified_since: impl FnOnce() -> Option<SystemTime>,
    ) -> bool {
        if let Some(inm) = if_none_match {
            let Some(etag) = &self.fields.etag else {
                return false;
            };
            return inm
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || same_etag(t, etag));
        }
        match (if_modified_since(), self.fields.last_modified) {
            (Some(since), Some(modified)) => to_the_second(modified) <= since,
            _ => false,
        }
    }

    /// `Last-Modified` as an HTTP date.
    pub fn last_modified_http(&self) -> Option<String> {
        self.fields.last_modified.map(httpdate::fmt_http_date)
    }

    /// Whether the content type is one of the allowed ranges (`image/*`, `image/png`).
    /// An object without a content type is never allowed: browsers would sniff it.
    pub fn content_type_allowed(&self, allowed: &[MediaRange]) -> bool {
        content_type_allowed(self.fields.content_type.as_deref(), allowed)
    }

    /// The caching rules of the object's own metadata; `received` stands in for a
    /// missing `Date` (RFC 9111 §4.2.1).
    pub fn directives(&self, received: SystemTime) -> Directives {
        Directives::parse(
            self.fields.cache_control.as_deref(),
            self.fields.expires.as_deref(),
            self.fields.date.unwrap_or(received),
        )
    }

    /// The header fields of a `304` replace the stored ones they name (RFC 9111 §4.3.4):
    /// a new lifetime, type or name applies at once.
    pub fn update(&mut self, new: &StoredFields) {
        self.fields.overlay(new.clone());
    }
}

/// When one origin exchange happened, as the origin client measured it: what a
/// response's age is counted from (RFC 9111 §4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// When the request (its last attempt) was sent.
    pub request_time: SystemTime,
    /// When the response head arrived.
    pub response_time: SystemTime,
    /// The origin's (or an upstream cache's) `Age`.
    pub age: Option<Duration>,
}

impl Exchange {
    /// An exchange that took no time just now (objects made here, tests).
    pub fn now() -> Exchange {
        let now = SystemTime::now();
        Exchange {
            request_time: now,
            response_time: now,
            age: None,
        }
    }

    /// The response's age when it arrived, RFC 9111 §4.2.3's `corrected_initial_age`:
    /// the larger of its apparent age (arrival − `date`) and its `Age` plus the round
    /// trip. A `date` in the future (a fast origin clock) gives an apparent age of zero.
    /// `Date` has whole seconds (a response sent at 12:00:00.9 says 12:00:00), so the
    /// apparent age is counted in whole seconds, as `Age` is: an answer that arrives in
    /// the second its `Date` names has not aged.
    pub fn initial_age(&self, date: Option<SystemTime>) -> Duration {
        let apparent = date
            .and_then(|d| self.response_time.duration_since(d).ok())
            .map(|a| Duration::from_secs(a.as_secs()))
            .unwrap_or_default();
        let delay = self
            .response_time
            .duration_since(self.request_time)
            .unwrap_or_default();
        apparent.max(self.age.unwrap_or_default() + delay)
    }
}

/// Response headers made from an object's metadata, each encoded once.
pub(crate) type EncodedHeaders = Vec<(HeaderName, HeaderValue)>;

/// The headers an answer with this object's bytes carries: `Content-Type`, the stored
/// `Content-Encoding`/`-Disposition`/`-Language` (sent as stored: an encoded body stays
/// encoded, a range is a range of the encoded bytes), `Accept-Ranges`, the validators,
/// and the stored `Date` and `Expires` (a cached answer is the stored response, with
/// `Age`: RFC 9111 §4). A cached object keeps them beside its bytes, so a hit copies
/// reference counts instead of validating strings and formatting a date. Values that
/// are not valid header values are left out.
pub(crate) fn response_headers(meta: &ObjectMeta) -> EncodedHeaders {
    let mut out = Vec::with_capacity(9);
    let last_modified = meta.last_modified_http();
    let date = meta.fields.date.map(httpdate::fmt_http_date);
    for (name, value) in [
        (header::CONTENT_TYPE, meta.fields.content_type.as_deref()),
        (
            header::CONTENT_ENCODING,
            meta.fields.content_encoding.as_deref(),
        ),
        (
            header::CONTENT_DISPOSITION,
            meta.fields.content_disposition.as_deref(),
        ),
        (
            header::CONTENT_LANGUAGE,
            meta.fields.content_language.as_deref(),
        ),
        (header::ETAG, meta.fields.etag.as_deref()),
        (header::LAST_MODIFIED, last_modified.as_deref()),
        (header::DATE, date.as_deref()),
        (header::EXPIRES, meta.fields.expires.as_deref()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            out.push((name, v));
        }
    }
    out.push((header::ACCEPT_RANGES, HeaderValue::from_static("bytes")));
    out
}

/// Whether a `304` repeats `name`: the validators, and `Date` and `Expires` (RFC 9110
/// §15.4.5: what a `200` would have said of the response's freshness).
pub(crate) fn in_not_modified(name: &HeaderName) -> bool {
    name == header::ETAG
        || name == header::LAST_MODIFIED
        || name == header::DATE
        || name == header::EXPIRES
}

/// `t` without its fraction of a second: HTTP dates have none.
pub(crate) fn to_the_second(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// Whether two entity tags name the same version, by the weak comparison of RFC 9110
/// §8.8.3.2 (a `W/` prefix ignored). Quotes are optional on either side: some
/// S3-compatible stores send bare ETags, and clients echo what they got.
pub(crate) fn same_etag(a: &str, b: &str) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t)
            .to_string()
    };
    opaque(a) == opaque(b)
}

/// The largest delta-seconds a cache needs to tell apart (RFC 9111 §1.2.2): larger
/// values count as this.
const DELTA_MAX: u64 = 1 << 31;

/// A directive's delta-seconds (`1*DIGIT`, RFC 9111 §1.2.2); `None` when it is not one
/// (quoted, negative, empty, another token).
fn delta_seconds(value: Option<&str>) -> Option<Duration> {
    let v = value?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = v.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX);
    Some(Duration::from_secs(secs))
}

/// A `Cache-Control` list's directives as (lower-case name, raw argument) pairs. Commas
/// inside a quoted argument (`no-cache="a, b"`) do not split it.
fn cache_directives(list: &str) -> Vec<(String, Option<&str>)> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in list.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (part.to_ascii_lowercase(), None),
        })
        .collect()
}

/// An object's `Cache-Control`/`Expires` as RFC 9111 asks a shared cache to read them,
/// with RFC 5861's stale directives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`: never stored; every request goes to the origin.
    pub no_store: bool,
    /// `private`: for one user's cache only; a shared cache does not store it.
    pub private: bool,
    /// `no-cache`: stored, but revalidated with the origin before every use.
    pub no_cache: bool,
    /// Never served stale, not even when the origin fails: `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` (for a shared cache it implies proxy-revalidate:
    /// §5.2.2.10) and `no-cache`.
    pub must_revalidate: bool,
    /// The freshness lifetime the object states itself (§4.2.1): `s-maxage`, else
    /// `max-age`, else `Expires` − `Date`; zero where the value is invalid (§4.2.1: such
    /// a response is stale). `None`: no freshness metadata of its own.
    pub max_age: Option<Duration>,
    /// `stale-while-revalidate=N` (RFC 5861 §3).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error=N` (RFC 5861 §4).
    pub stale_if_error: Option<Duration>,
}

impl Directives {
    /// `cache_control` (every field line, as one list), `expires` as sent, and the
    /// response's `date` (what `Expires` is measured from).
    pub fn parse(
        cache_control: Option<&str>,
        expires: Option<&str>,
        date: SystemTime,
    ) -> Directives {
        let mut d = Directives::default();
        // `Some(None)`: present but invalid, or given twice with different values
        // (§4.2.1 allows taking such a response as stale).
        let (mut max_age, mut s_maxage): (Option<Option<Duration>>, Option<Option<Duration>>) =
            (None, None);
        let once = |slot: &mut Option<Option<Duration>>, v: Option<Duration>| {
            *slot = Some(match *slot {
                Some(prev) if prev != v => None,
                _ => v,
            });
        };
        for (name, value) in cache_directives(cache_control.unwrap_or("")) {
            match name.as_str() {
                "no-store" => d.no_store = true,
                "private" => d.private = true,
                "no-cache" => d.no_cache = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "max-age" => once(&mut max_age, delta_seconds(value)),
                "s-maxage" => once(&mut s_maxage, delta_seconds(value)),
                "stale-while-revalidate" => {
                    d.stale_while_revalidate = d.stale_while_revalidate.or(delta_seconds(value))
                }
                "stale-if-error" => d.stale_if_error = d.stale_if_error.or(delta_seconds(value)),
                _ => {}
            }
        }
        d.must_revalidate |= d.no_cache || s_maxage.is_some();
        let stated = |v: Option<Duration>| v.unwrap_or(Duration::ZERO);
        d.max_age = s_maxage.map(stated).or(max_age.map(stated)).or_else(|| {
            expires.map(|e| match httpdate::parse_http_date(e.trim()) {
                Ok(at) => at.duration_since(date).unwrap_or(Duration::ZERO),
                // An invalid date (`0`, two dates) means "already expired" (§5.3).
                Err(_) => Duration::ZERO,
            })
        });
        d
    }

    /// Whether a shared cache may store the object at all.
    pub fn storable(&self) -> bool {
        !self.no_store && !self.private
    }

    /// How long the proxy keeps it fresh: its own lifetime capped by `ttl` (which is
    /// also the lifetime of an object that states none); `no-cache` makes it zero (every
    /// use revalidates).
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
pub(crate) fn downstream_cache_control(base: &str, d: &Directives, lifetime: Duration) -> String {
    if d.no_store {
        return "no-store".into();
    }
    let cap = lifetime.as_secs();
    // Built in one string: this runs on every hit, and a list of parts cost a handful of
    // allocations per response.
    let mut out = String::with_capacity(base.len() + 32);
    let mut push = |part: std::fmt::Arguments| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = out.write_fmt(part);
    };
    let (mut has_max_age, mut no_store, mut private, mut no_cache, mut must_revalidate) =
        (false, false, false, false, false);
    for part in base.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let capped = |v: &str| v.trim().parse::<u64>().map_or(0, |n| n.min(cap));
        if let Some(v) = strip_prefix_ignore_case(part, "max-age=") {
            has_max_age = true;
            push(format_args!("max-age={}", capped(v)));
        } else if let Some(v) = strip_prefix_ignore_case(part, "s-maxage=") {
            push(format_args!("s-maxage={}", capped(v)));
        } else if part.eq_ignore_ascii_case("public") && d.private {
            private = true;
            push(format_args!("private"));
        } else {
            no_store |= part.eq_ignore_ascii_case("no-store");
            private |= part.eq_ignore_ascii_case("private");
            no_cache |= part.eq_ignore_ascii_case("no-cache");
            must_revalidate |= part.eq_ignore_ascii_case("must-revalidate");
            push(format_args!("{part}"));
        }
    }
    if !no_store && !has_max_age {
        push(format_args!("max-age={cap}"));
    }
    for (wanted, present, name) in [
        (d.private, private, "private"),
        (d.no_cache, no_cache, "no-cache"),
        (d.must_revalidate, must_revalidate, "must-revalidate"),
    ] {
        if wanted && !present {
            push(format_args!("{name}"));
        }
    }
    out
}

/// `s` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn d(cc: &str) -> Directives {
        Directives::parse(Some(cc), None, at(T0))
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    /// Each rule with the section of RFC 9111 (or RFC 5861) it comes from.
    #[test]
    fn directives_as_a_shared_cache_reads_them() {
        let hour = Duration::from_secs(3600);
        // (Cache-Control, storable, lifetime under a 1 h ttl, never stale)
        let cases = [
            ("", true, hour, false),
            ("no-store", false, hour, false), // §5.2.2.5
            ("private, max-age=60", false, Duration::from_secs(60), false), // §5.2.2.7
            ("public, max-age=60", true, Duration::from_secs(60), false), // §5.2.2.1
            (
                "max-age=60, s-maxage=120",
                true,
                Duration::from_secs(120),
                true,
            ), // §5.2.2.10
            (
                "max-age=600, s-maxage=5",
                true,
                Duration::from_secs(5),
                true,
            ), // §4.2.1
            ("max-age=86400", true, hour, false), // capped by ttl
            ("no-cache", true, Duration::ZERO, true), // §5.2.2.4
            (
                "max-age=600, must-revalidate",
                true,
                Duration::from_secs(600),
                true,
            ), // §5.2.2.2
            ("PROXY-REVALIDATE", true, hour, true), // §5.2.2.8, §5.2
            ("max-age=abc", true, Duration::ZERO, false), // §4.2.1: invalid = stale
            ("max-age=\"30\"", true, Duration::ZERO, false), // §5.2.2.1: token form only
            ("max-age=-1", true, Duration::ZERO, false), // §1.2.2: 1*DIGIT
            ("max-age=", true, Duration::ZERO, false),
            (
                "max-age=60, max-age=60",
                true,
                Duration::from_secs(60),
                false,
            ),
            ("max-age=60, max-age=120", true, Duration::ZERO, false), // §4.2.1: conflicting
            ("max-age=0", true, Duration::ZERO, false),
            (
                "no-cache=\"Set-Cookie, X-A\", max-age=60",
                true,
                Duration::ZERO,
                true,
            ), // qualified = unqualified
            ("private=\"Set-Cookie\"", false, hour, false),
            ("max-age=99999999999999999999", true, hour, false), // §1.2.2: overflow = 2^31
        ];
        for (cc, storable, lifetime, strict) in cases {
            let got = d(cc);
            assert_eq!(got.storable(), storable, "{cc}");
            assert_eq!(got.lifetime(hour), lifetime, "{cc}");
            assert_eq!(got.must_revalidate, strict, "{cc}");
        }
        assert_eq!(
            d("stale-while-revalidate=30").stale_while_revalidate,
            secs(30)
        ); // RFC 5861 §3
        assert_eq!(d("stale-if-error=600").stale_if_error, secs(600)); // RFC 5861 §4
        assert_eq!(d("stale-if-error=x").stale_if_error, None);
        assert_eq!(
            d("public").max_age,
            None,
            "no freshness metadata of its own"
        );
    }

    #[test]
    fn expires_is_measured_from_date() {
        let date = at(T0);
        let parse = |cc: Option<&str>, e: &str| Directives::parse(cc, Some(e), date).max_age;
        let http = |t: u64| httpdate::fmt_http_date(at(t));
        // §5.3 / §4.2.1: Expires − Date.
        assert_eq!(parse(None, &http(T0 + 90)), secs(90));
        assert_eq!(parse(None, &http(T0 - 90)), secs(0));
        assert_eq!(parse(None, &http(T0)), secs(0), "Expires equal to Date");
        // §5.3: an invalid date, `0` above all, means already expired.
        for invalid in [
            "0",
            "-1",
            "soon",
            "",
            &format!("{}, {}", http(T0 + 90), http(T0 + 900)),
        ] {
            assert_eq!(parse(None, invalid), secs(0), "{invalid:?}");
        }
        // §5.2.2.1: max-age wins over Expires, even over an invalid one.
        assert_eq!(parse(Some("max-age=5"), &http(T0 + 90)), secs(5));
        assert_eq!(parse(Some("max-age=5"), "0"), secs(5));
        // The other date forms of RFC 9110 §5.6.7.
        assert_eq!(parse(None, "Tuesday, 14-Nov-23 22:15:00 GMT"), secs(100));
        assert_eq!(parse(None, "Tue Nov 14 22:15:00 2023"), secs(100));
    }

    #[test]
    fn a_304_carrying_every_field_replaces_every_field() {
        // Every field listed, so a field added to `StoredFields` fails to compile here
        // until it is, and then fails this test until `overlay` copies it.
        let new = StoredFields {
            content_type: Some("image/webp".into()),
            etag: Some("\"b\"".into()),
            last_modified: Some(at(T0 + 1)),
            content_encoding: Some("gzip".into()),
            content_disposition: Some("inline".into()),
            content_language: Some("de".into()),
            cache_control: Some("max-age=9".into()),
            expires: Some(httpdate::fmt_http_date(at(T0 + 9))),
            date: Some(at(T0 + 2)),
        };
        let mut meta = ObjectMeta {
            size: 7,
            fields: StoredFields::default(),
        };
        meta.update(&new);
        assert_eq!(meta.fields, new);
        assert_eq!(meta.size, 7);
    }

    #[test]
    fn a_304_replaces_only_what_it_carries() {
        let mut meta = ObjectMeta {
            fields: StoredFields {
                content_type: Some("image/png".into()),
                etag: Some("\"a\"".into()),
                cache_control: Some("max-age=1".into()),
                content_language: Some("en".into()),
                date: Some(at(T0)),
                ..StoredFields::default()
            },
            ..ObjectMeta::default()
        };
        meta.update(&StoredFields {
            content_type: Some("image/webp".into()),
            cache_control: Some("max-age=3600".into()),
            expires: Some("0".into()),
            date: Some(at(T0 + 5)),
            ..StoredFields::default()
        });
        assert_eq!(meta.fields.content_type.as_deref(), Some("image/webp"));
        assert_eq!(meta.fields.cache_control.as_deref(), Some("max-age=3600"));
        assert_eq!(meta.fields.expires.as_deref(), Some("0"));
        assert_eq!(meta.fields.date, Some(at(T0 + 5)));
        assert_eq!(meta.fields.etag.as_deref(), Some("\"a\""));
        assert_eq!(meta.fields.content_language.as_deref(), Some("en"));
    }

    /// RFC 9111 §4.2.3: the age a response arrives with.
    #[test]
    fn initial_age() {
        let ex = |sent: u64, arrived: u64, age: Option<u64>| Exchange {
            request_time: at(sent),
            response_time: at(arrived),
            age: age.map(Duration::from_secs),
        };
        let cases = [
            // (request, response, Age, Date, corrected initial age)
            (T0, T0, None, Some(T0), 0),
            (T0, T0 + 2, None, Some(T0 + 1), 2), // the round trip counts
            (T0, T0, None, Some(T0 - 30), 30),   // apparent age from Date
            (T0, T0, Some(100), Some(T0), 100),  // Age
            (T0, T0 + 1, Some(100), Some(T0 - 30), 101),
            (T0, T0, None, Some(T0 + 400), 0), // Date ahead of our clock
            (T0, T0, None, None, 0),
        ];
        // Whole seconds of apparent age (Date's resolution); the round trip as measured.
        let half = Duration::from_millis(500);
        let within = Exchange {
            request_time: at(T0),
            response_time: at(T0) + half,
            age: None,
        };
        assert_eq!(
            within.initial_age(Some(at(T0))),
            half,
            "only the round trip"
        );
        let later = Exchange {
            request_time: at(T0 + 1) + half,
            response_time: at(T0 + 1) + half,
            age: None,
        };
        assert_eq!(later.initial_age(Some(at(T0))), Duration::from_secs(1));
        for (sent, arrived, age, date, want) in cases {
            let got = ex(sent, arrived, age).initial_age(date.map(at));
            assert_eq!(
                got,
                Duration::from_secs(want),
                "{sent} {arrived} {age:?} {date:?}"
            );
        }
    }

    #[test]
    fn etags_compare_weakly_with_or_without_quotes() {
        for (a, b, same) in [
            ("\"abc\"", "\"abc\"", true),
            ("W/\"abc\"", "\"abc\"", true),
            ("abc", "\"abc\"", true),
            ("\"abc\"", "abc", true),
            ("\"abc\"", "\"abd\"", false),
            ("\"\"", "", true),
        ] {
            assert_eq!(same_etag(a, b), same, "{a} {b}");
        }
    }

    #[test]
    fn cache_control_lists_split_outside_quotes() {
        let got = cache_directives("a, b=1 ,C=\"x, y\", d=\"q\\\"z, w\",,e");
        let names: Vec<_> = got.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            names,
            [
                ("a", None),
                ("b", Some("1")),
                ("c", Some("\"x, y\"")),
                ("d", Some("\"q\\\"z, w\"")),
                ("e", None)
            ]
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
            // Directives are matched ignoring case; ones the proxy does not rewrite keep
            // theirs, and one already there is not added twice.
            (
                "PUBLIC, MAX-AGE= 99999, Private, No-Store",
                "private",
                hour,
                "private, max-age=3600, Private, No-Store",
            ),
            (
                "Public",
                "no-cache",
                hour,
                "Public, max-age=3600, no-cache, must-revalidate",
            ),
        ];
        for (base, object, lifetime, want) in cases {
            let got = downstream_cache_control(base, &d(object), lifetime);
            assert_eq!(got, want, "base {base:?}, object {object:?}");
        }
    }
}
