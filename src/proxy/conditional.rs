//! Range and conditional-request rules (RFC 9110 sections 13 and 14), pure functions used
//! by the respond phase for objects served from memory.

use http::HeaderMap;
use http::header;

use crate::object::{ObjectMeta, to_the_second};

/// What a `Range` header asks of an object of a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) range: the whole object.
    Whole,
    /// Bytes `[start, end]`, inclusive, within the object.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`. Malformed or
/// multi-range headers are ignored (RFC 9110 allows it), which serves the whole object.
pub fn parse_range(value: &str, size: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if size == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => RangeAsk::Whole,
        },
        (a, "") => match num(a) {
            Some(a) if a < size => RangeAsk::Part {
                start: a,
                end: size - 1,
            },
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Whole,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a > b => RangeAsk::Whole,
            (Some(a), Some(_)) if a >= size => RangeAsk::Unsatisfiable,
            (Some(a), Some(b)) => RangeAsk::Part {
                start: a,
                end: b.min(size - 1),
            },
            _ => RangeAsk::Whole,
        },
    }
}

/// Whether a GET/HEAD should be answered `304 Not Modified`.
pub(crate) fn not_modified(request: &HeaderMap, meta: &ObjectMeta) -> bool {
    let text = |name| request.get(name).and_then(|v| v.to_str().ok());
    let since = || text(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok());
    meta.not_modified_by(text(header::IF_NONE_MATCH), since)
}

/// Whether `If-Range` (if any) lets a `Range` apply; otherwise the whole object is sent.
pub(crate) fn range_applies(request: &HeaderMap, meta: &ObjectMeta) -> bool {
    let Some(v) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if v.starts_with('"') {
        // A strong comparison: weak validators never match If-Range.
        return meta.fields.etag.as_deref() == Some(v.trim());
    }
    match (httpdate::parse_http_date(v), meta.fields.last_modified) {
        (Ok(date), Some(modified)) => to_the_second(modified) == date,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::StoredFields;
    use http::HeaderValue;
    use std::time::{Duration, SystemTime};

    #[test]
    fn range_table() {
        use RangeAsk::*;
        let cases = [
            ("bytes=0-9", 100, Part { start: 0, end: 9 }),
            ("bytes=90-", 100, Part { start: 90, end: 99 }),
            ("bytes=-10", 100, Part { start: 90, end: 99 }),
            ("bytes=-1000", 100, Part { start: 0, end: 99 }),
            ("bytes=50-1000", 100, Part { start: 50, end: 99 }),
            ("bytes=99-99", 100, Part { start: 99, end: 99 }),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-200", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=5-1", 100, Whole),
            ("bytes=0-1,5-6", 100, Whole),
            ("bytes=abc", 100, Whole),
            ("bytes=-", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes=+1-2", 100, Whole),
        ];
        for (v, size, want) in cases {
            assert_eq!(parse_range(v, size), want, "{v} of {size}");
        }
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            size: 10,
            fields: StoredFields {
                content_type: Some("image/png".into()),
                etag: Some("\"abc\"".into()),
                last_modified: Some(
                    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
                ),
                ..StoredFields::default()
            },
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn conditional_table() {
        let lm =
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let earlier =
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
        let m = meta();
        assert!(not_modified(&headers(&[("if-none-match", "\"abc\"")]), &m));
        assert!(not_modified(
            &headers(&[("if-none-match", "W/\"abc\"")]),
            &m
        ));
        assert!(not_modified(
            &headers(&[("if-none-match", "\"x\", \"abc\"")]),
            &m
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &m));
        // Quotes on either side or neither (a store that sends bare ETags).
        assert!(not_modified(&headers(&[("if-none-match", "abc")]), &m));
        let mut bare = meta();
        bare.fields.etag = Some("abc".into());
        assert!(not_modified(
            &headers(&[("if-none-match", "\"abc\"")]),
            &bare
        ));
        assert!(!not_modified(&headers(&[("if-none-match", "\"x\"")]), &m));
        assert!(not_modified(&headers(&[("if-modified-since", &lm)]), &m));
        assert!(!not_modified(
            &headers(&[("if-modified-since", &earlier)]),
            &m
        ));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"x\""), ("if-modified-since", &lm)]),
            &m
        ));
        assert!(range_applies(&headers(&[]), &m));
        assert!(range_applies(&headers(&[("if-range", "\"abc\"")]), &m));
        assert!(!range_applies(&headers(&[("if-range", "\"old\"")]), &m));
        assert!(range_applies(&headers(&[("if-range", &lm)]), &m));
    }
}
