//! CORS (docs/http.md, "Routes"): which `Origin`s may read responses, the headers that say
//! so on every response (errors included), and preflight answers. bucketfront writes
//! these itself so that no customer has to configure CORS on a bucket.

use http::header::{self, HeaderMap, HeaderValue};

use crate::config;
use crate::pattern::OriginPattern;

/// The compiled `[cors]` section.
#[derive(Debug, Clone)]
pub struct Cors {
    patterns: Vec<OriginPattern>,
    max_age: HeaderValue,
}

const EXPOSE: HeaderValue =
    HeaderValue::from_static("Content-Length, Content-Range, ETag, X-Cache");
const METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");
/// Request headers a preflight may approve: what image loaders and range readers send.
const SIMPLE_HEADERS: &[&str] = &[
    "range",
    "if-none-match",
    "if-modified-since",
    "accept",
    "accept-language",
    "content-language",
    "cache-control",
];

impl Cors {
    pub fn from_config(c: &config::CorsConfig) -> Cors {
        Cors {
            patterns: c.allowed_origins.clone(),
            max_age: HeaderValue::from(c.max_age.0.as_secs()),
        }
    }

    /// The request's `Origin`, if it is allowed.
    pub fn allowed<'a>(&self, request: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = request.get(header::ORIGIN)?;
        let s = origin.to_str().ok()?;
        self.patterns.iter().any(|p| p.matches(s)).then_some(origin)
    }

    /// Adds the CORS headers of an actual (non-preflight) response; `Vary: Origin` always.
    pub fn apply(&self, request: &HeaderMap, response: &mut HeaderMap) {
        response.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed(request) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE);
        }
    }

    /// The headers of a preflight (`OPTIONS`) answer; the status is always 204.
    pub fn preflight(&self, request: &HeaderMap, response: &mut HeaderMap) {
        response.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = self.allowed(request) else {
            return;
        };
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(header::ACCESS_CONTROL_ALLOW_METHODS, METHODS);
        response.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        let requested = request
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| SIMPLE_HEADERS.contains(&h.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&requested)
            && !requested.is_empty()
        {
            response.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors::from_config(&config::CorsConfig {
            allowed_origins: origins
                .iter()
                .map(|s| OriginPattern::parse(s).unwrap())
                .collect(),
            max_age: config::Dur::secs(600),
        })
    }

    fn req(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn origin_matching_table() {
        let c = cors(&["http://127.0.0.1:8081", "https://*.example.com"]);
        let cases = [
            ("http://127.0.0.1:8081", true),
            ("http://127.0.0.1:8082", false),
            ("https://127.0.0.1:8081", false),
            ("https://app.example.com", true),
            ("https://a.b.example.com", true),
            ("https://APP.Example.com", true),
            ("https://example.com", false),
            ("http://app.example.com", false),
            ("https://app.example.com:8443", false),
            ("https://evilexample.com", false),
            ("https://app.example.com.evil.net", false),
            ("https://x@app.example.com", false),
            ("null", false),
        ];
        for (origin, want) in cases {
            assert_eq!(c.allowed(&req(origin)).is_some(), want, "{origin}");
        }
    }

    #[test]
    fn headers_for_allowed_and_other_origins() {
        let c = cors(&["https://app.example.com"]);
        let mut h = HeaderMap::new();
        c.apply(&req("https://app.example.com"), &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["vary"], "Origin");
        let mut h = HeaderMap::new();
        c.apply(&req("https://other.example.com"), &mut h);
        assert_eq!(h.len(), 1, "only Vary: {h:?}");
    }

    #[test]
    fn preflight_echoes_only_simple_headers() {
        let c = cors(&["https://app.example.com"]);
        let mut r = req("https://app.example.com");
        r.insert(
            "access-control-request-method",
            HeaderValue::from_static("GET"),
        );
        r.insert(
            "access-control-request-headers",
            HeaderValue::from_static("Range, X-Evil"),
        );
        let mut h = HeaderMap::new();
        c.preflight(&r, &mut h);
        assert_eq!(h["access-control-allow-headers"], "range");
        assert_eq!(h["access-control-allow-methods"], "GET, HEAD, OPTIONS");
        assert_eq!(h["access-control-max-age"], "600");
    }
}
