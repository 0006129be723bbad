//! What the origin client sees of one exchange beyond the SDK's output: when the request
//! was sent and its answer arrived, and the answer's `Date`, `Age`, `Cache-Control` and
//! `Expires` as sent, which the cache's freshness is computed from (RFC 9111 §4.2.3), and
//! the stored fields a `304` carries (§4.3.4).
//!
//! It is an SDK interceptor, one per request. Before the SDK reads the answer it also
//! joins the field lines of a repeated `Cache-Control` into one list (RFC 9110 §5.3: they
//! are one), where the SDK would refuse the answer, and takes `Expires` out of the SDK's
//! hands (it is read here, where an invalid date means "already expired").

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::object::{Exchange, StoredFields};

/// What one answer said and when it came.
#[derive(Debug, Clone, Default)]
pub(super) struct Seen {
    pub exchange: Option<Exchange>,
    /// The stored fields the answer carried (all of them, for a `200` or a `304`).
    pub fields: StoredFields,
}

#[derive(Debug, Default)]
struct Recorded {
    sent: Option<SystemTime>,
    seen: Seen,
}

/// The interceptor; clones share what it records.
#[derive(Debug, Clone, Default)]
pub(super) struct Recorder(Arc<Mutex<Recorded>>);

impl Recorder {
    /// What the last attempt's answer said (nothing if none arrived).
    pub(super) fn seen(&self) -> Seen {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "bucketfront::origin::Recorder"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.lock().sent = Some(SystemTime::now());
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response_time = SystemTime::now();
        let headers = context.response_mut().headers_mut();
        let fields = read_fields(|name| headers.get_all(name).collect());
        // One line each for the SDK, which refuses repeated lines of a single field.
        headers.remove("cache-control");
        if let Some(list) = &fields.cache_control {
            let _ = headers.try_insert("cache-control", list.clone());
        }
        headers.remove("expires");
        headers.remove("expiresstring");
        let age = headers.get("age").and_then(|v| {
            let v = v.trim();
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| Duration::from_secs(v.parse().unwrap_or(u64::from(u32::MAX))))
        });
        let mut recorded = self.lock();
        let exchange = Exchange {
            request_time: recorded.sent.unwrap_or(response_time),
            response_time,
            age,
        };
        recorded.seen = Seen {
            exchange: Some(exchange),
            fields,
        };
        Ok(())
    }
}

/// The stored fields of an answer, each repeated line of a list joined with `, `. An
/// `Expires` sent twice becomes two dates in one value, which is no date: stale (RFC
/// 9111 §4.2.1 allows it). `Expires` is read before the SDK's own interceptor may have
/// moved it to `ExpiresString`.
pub(super) fn read_fields<'a>(get_all: impl Fn(&str) -> Vec<&'a str>) -> StoredFields {
    let joined = |name: &str| {
        let lines: Vec<&str> = get_all(name).into_iter().map(str::trim).collect();
        (!lines.is_empty()).then(|| lines.join(", "))
    };
    let one = |name: &str| get_all(name).first().map(|v| v.trim().to_string());
    let date = |name: &str| {
        get_all(name)
            .first()
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    };
    StoredFields {
        content_type: one("content-type"),
        etag: one("etag"),
        last_modified: date("last-modified"),
        content_encoding: one("content-encoding"),
        content_disposition: one("content-disposition"),
        content_language: one("content-language"),
        cache_control: joined("cache-control"),
        expires: joined("expires").or_else(|| joined("expiresstring")),
        date: date("date"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::Headers;

    #[test]
    fn repeated_lines_are_one_list() {
        let mut h = Headers::new();
        h.append("Cache-Control", "max-age=60");
        h.append("cache-control", "s-maxage=5");
        h.append("Expires", "Thu, 01 Jan 2099 00:00:00 GMT");
        h.append("Date", "Thu, 01 Jan 2026 00:00:00 GMT");
        h.append("Content-Type", "image/png");
        let f = read_fields(|n| h.get_all(n).collect());
        assert_eq!(f.cache_control.as_deref(), Some("max-age=60, s-maxage=5"));
        assert_eq!(f.expires.as_deref(), Some("Thu, 01 Jan 2099 00:00:00 GMT"));
        assert!(f.date.is_some());
        h.append("expires", "0");
        let twice = read_fields(|n| h.get_all(n).collect()).expires.unwrap();
        assert!(httpdate::parse_http_date(&twice).is_err(), "{twice}");
    }
}
