//! The patterns `config.toml` is made of, parsed once while the file is read: a value
//! that is not a valid pattern is a config error naming its key, never a pattern quietly
//! dropped later. Leaf types: they import nothing from the crate.
//!
//! - [`BucketPattern`]: a `[[tenants]] buckets` entry (`acme-images`, `acme-raw-*`).
//! - [`OriginPattern`]: a `[cors] allowed_origins` entry (`https://*.example.com`, `*`).
//! - [`MediaRange`]: a `[server] allowed_content_types` entry (`image/*`, `image/png`).

use std::fmt;

use serde::Deserialize;

/// A `[[tenants]] buckets` entry: an exact bucket name or a prefix glob (`acme-raw-*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum BucketPattern {
    Exact(String),
    Prefix(String),
}

impl BucketPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => {
                Err(format!("{s:?}: only one trailing '*' is allowed"))
            }
            Some("") => Err(format!(
                "{s:?}: a bare '*' would hand every bucket to one tenant"
            )),
            Some(prefix) => Ok(BucketPattern::Prefix(prefix.to_string())),
            None if s.contains('*') => Err(format!("{s:?}: '*' is only allowed at the end")),
            None => Ok(BucketPattern::Exact(s.to_string())),
        }
    }

    pub fn matches(&self, bucket: &str) -> bool {
        match self {
            BucketPattern::Exact(name) => name == bucket,
            BucketPattern::Prefix(prefix) => bucket.starts_with(prefix.as_str()),
        }
    }

    /// Whether some bucket name could match both patterns.
    pub fn overlaps(&self, other: &BucketPattern) -> bool {
        use BucketPattern::*;
        match (self, other) {
            (Exact(a), Exact(b)) => a == b,
            (Exact(a), p @ Prefix(_)) | (p @ Prefix(_), Exact(a)) => p.matches(a),
            (Prefix(a), Prefix(b)) => a.starts_with(b.as_str()) || b.starts_with(a.as_str()),
        }
    }
}

impl TryFrom<String> for BucketPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        BucketPattern::parse(&s)
    }
}

impl fmt::Display for BucketPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketPattern::Exact(name) => f.write_str(name),
            BucketPattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// An `allowed_origins` entry: `https://app.example.com`, `https://*.example.com`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum OriginPattern {
    Any,
    Exact(String),
    /// `scheme://` and `.example.com[:port]`: any subdomain, never the apex.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl OriginPattern {
    pub fn parse(s: &str) -> Result<OriginPattern, String> {
        if s == "*" {
            return Ok(OriginPattern::Any);
        }
        let (scheme, host) = s
            .split_once("://")
            .filter(|(scheme, _)| *scheme == "http" || *scheme == "https")
            .ok_or_else(|| format!("{s:?} must look like \"https://app.example.com\""))?;
        if host.is_empty() || host.contains('/') || host.ends_with(':') {
            return Err(format!("{s:?} must be scheme://host[:port] with no path"));
        }
        let host = host.to_ascii_lowercase();
        match host.strip_prefix('*') {
            Some(suffix)
                if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') =>
            {
                Ok(OriginPattern::Subdomains {
                    scheme: scheme.to_string(),
                    suffix: suffix.to_string(),
                })
            }
            Some(_) => Err(format!(
                "{s:?}: '*' is only allowed as the first label, as in https://*.example.com"
            )),
            None if host.contains('*') => {
                Err(format!("{s:?}: '*' is only allowed as the first label"))
            }
            None => Ok(OriginPattern::Exact(format!("{scheme}://{host}"))),
        }
    }

    /// Whether `origin` (an `Origin` header value) is one this pattern allows.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains { scheme, suffix } => {
                let Some(host) = origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|r| r.strip_prefix("://"))
                else {
                    return false;
                };
                let host = host.to_ascii_lowercase();
                host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && are_dns_labels(&host[..host.len() - suffix.len()])
            }
        }
    }
}

/// Whether `s` is one or more DNS labels joined by dots: each non-empty, of letters,
/// digits and inner hyphens (so `..`, a leading dot, a port or userinfo never match).
fn are_dns_labels(s: &str) -> bool {
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

impl TryFrom<String> for OriginPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        OriginPattern::parse(&s)
    }
}

/// An `allowed_content_types` entry: `type/subtype`, `type/*` or `*/*`, lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MediaRange {
    ty: String,
    /// `None` for `type/*`.
    sub: Option<String>,
}

impl MediaRange {
    pub fn parse(s: &str) -> Result<MediaRange, String> {
        let bad = || format!("{s:?} is not like \"image/*\"");
        let lower = s.trim().to_ascii_lowercase();
        let (ty, sub) = lower.split_once('/').ok_or_else(bad)?;
        let token = |t: &str| !t.is_empty() && !t.contains(['/', ';', ',', ' ']);
        if !token(ty) || !token(sub) {
            return Err(bad());
        }
        let (ty, sub) = match (ty, sub) {
            ("*", "*") => ("*", None),
            (ty, "*") if !ty.contains('*') => (ty, None),
            (ty, sub) if !ty.contains('*') && !sub.contains('*') => (ty, Some(sub.to_string())),
            _ => return Err(bad()),
        };
        Ok(MediaRange {
            ty: ty.to_string(),
            sub,
        })
    }

    /// Whether a `Content-Type` value falls in this range (parameters ignored). A missing
    /// content type never does: browsers would sniff the bytes.
    pub fn matches(&self, content_type: Option<&str>) -> bool {
        let Some(ct) = content_type else {
            return false;
        };
        let essence = ct.split(';').next().unwrap_or("").trim();
        let Some((ty, sub)) = essence.split_once('/') else {
            return false;
        };
        (self.ty == "*" || self.ty.eq_ignore_ascii_case(ty))
            && self
                .sub
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(sub))
    }
}

impl TryFrom<String> for MediaRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        MediaRange::parse(&s)
    }
}

impl fmt::Display for MediaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ty, self.sub.as_deref().unwrap_or("*"))
    }
}

/// Whether `content_type` falls in one of `allowed` (none allows a missing type).
pub(crate) fn content_type_allowed(content_type: Option<&str>, allowed: &[MediaRange]) -> bool {
    allowed.iter().any(|range| range.matches(content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_patterns() {
        let p = |s| BucketPattern::parse(s).unwrap();
        assert!(p("acme-raw-*").matches("acme-raw-2024"));
        assert!(!p("acme-raw-*").matches("acme-images"));
        assert!(p("acme-images").matches("acme-images"));
        assert!(p("acme-*").overlaps(&p("acme-raw-*")));
        assert!(p("acme-*").overlaps(&p("acme-images")));
        assert!(!p("acme-*").overlaps(&p("beta-*")));
        assert!(!p("a-images").overlaps(&p("b-images")));
        assert_eq!(p("acme-raw-*").to_string(), "acme-raw-*");
        for bad in ["*", "a*b", "a**"] {
            assert!(BucketPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_origin_patterns() {
        for p in [
            "example.com",
            "https://",
            "https://a/b",
            "https://*",
            "https://a.*.com",
            "ftp://a.com",
        ] {
            assert!(OriginPattern::parse(p).is_err(), "{p}");
        }
    }

    /// A wildcard stands for one or more whole DNS labels: never an empty one, a dot too
    /// many, another port or userinfo.
    #[test]
    fn wildcard_origins_match_whole_labels_only() {
        let wild = OriginPattern::parse("https://*.example.com").unwrap();
        let with_port = OriginPattern::parse("https://*.example.com:8443").unwrap();
        let cases = [
            (&wild, "https://app.example.com", true),
            (&wild, "https://a.b.example.com", true),
            (&wild, "https://APP.Example.COM", true),
            (&wild, "https://a-1.example.com", true),
            (&wild, "https://..example.com", false),
            (&wild, "https://.example.com", false),
            (&wild, "https://a..example.com", false),
            (&wild, "https://.a.example.com", false),
            (&wild, "https://-a.example.com", false),
            (&wild, "https://a-.example.com", false),
            (&wild, "https://app.example.com.", false),
            (&wild, "https://app.example.com:8443", false),
            (&wild, "https://user@app.example.com", false),
            (&wild, "https://user:pw@app.example.com", false),
            (&wild, "https://a_b.example.com", false),
            (&wild, "https://example.com", false),
            (&wild, "http://app.example.com", false),
            (&with_port, "https://app.example.com:8443", true),
            (&with_port, "https://app.example.com", false),
            (&with_port, "https://app.example.com:443", false),
        ];
        for (pattern, origin, want) in cases {
            assert_eq!(pattern.matches(origin), want, "{pattern:?} {origin}");
        }
    }

    #[test]
    fn media_ranges() {
        let images = [MediaRange::parse("image/*").unwrap()];
        let cases = [
            (Some("image/png"), true),
            (Some("IMAGE/JPEG; charset=binary"), true),
            (Some("text/html"), false),
            (Some("imagex/png"), false),
            (Some("image"), false),
            (None, false),
        ];
        for (ct, want) in cases {
            assert_eq!(content_type_allowed(ct, &images), want, "{ct:?}");
        }
        let exact = [MediaRange::parse("Image/WebP").unwrap()];
        assert!(!content_type_allowed(Some("image/png"), &exact));
        assert!(content_type_allowed(Some("image/webp"), &exact));
        assert!(content_type_allowed(
            Some("text/plain"),
            &[MediaRange::parse("*/*").unwrap()]
        ));
        for bad in ["image", "/png", "image/", "*/png", "im*/png", "image/p*"] {
            assert!(MediaRange::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(exact[0].to_string(), "image/webp");
    }
}
