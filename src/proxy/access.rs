//! The access log line of one request, written when its response has ended (sent whole,
//! cut, or abandoned), with the bytes actually handed to the connection and how it
//! ended; and the per-tenant byte count, from the same figure. Built by the log phase,
//! carried by the response body until its end.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method};

use crate::activity::{Activity, EndReason};
use crate::auth::Tenant;
use crate::body::BodyEnd;
use crate::cache_status::CacheStatus;
use crate::error::Error;
use crate::metrics::Metrics;

use super::route::RouteName;

/// The access lines' target: `BUCKETFRONT_LOG` filters them by it.
const ACCESS_TARGET: &str = "bucketfront::access";

/// How a response ended, as the log line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Every byte was handed to the connection.
    Complete,
    /// The client went away first.
    ClientGone,
    /// The server cut the connection: the client took nothing for `send_timeout`.
    SendTimeout,
    /// The transfer was cut for another reason: the origin's body broke off, or the
    /// server closed the connection (eviction, the drain time).
    Aborted,
}

impl Delivery {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Delivery::Complete => "complete",
            Delivery::ClientGone => "client_gone",
            Delivery::SendTimeout => "send_timeout",
            Delivery::Aborted => "aborted",
        }
    }

    /// How a body that ended `how` on connection `conn` was delivered.
    pub(super) fn of(how: BodyEnd, conn: Option<&Activity>) -> Delivery {
        match how {
            BodyEnd::Complete => Delivery::Complete,
            BodyEnd::Failed => Delivery::Aborted,
            BodyEnd::Dropped => match conn.and_then(Activity::cut_reason) {
                None => Delivery::ClientGone,
                Some(EndReason::SendTimeout) => Delivery::SendTimeout,
                Some(_) => Delivery::Aborted,
            },
        }
    }
}

/// A request id as it is written: 16 hex digits.
struct RequestId(u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The `X-Request-Id` header of request `id`: [`RequestId`]'s digits, written into the
/// stack rather than through a `String`.
pub(super) fn request_id(id: u64) -> HeaderValue {
    let mut digits = [0u8; 16];
    let _ = write!(&mut digits[..], "{}", RequestId(id));
    HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Everything a request's log line says but how its body ended.
pub(super) struct Record {
    pub metrics: Arc<Metrics>,
    pub id: u64,
    pub client: Option<IpAddr>,
    pub method: Method,
    pub route: RouteName,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub status: u16,
    pub cache: CacheStatus,
    pub error: Option<Error>,
    pub tenant: Option<Arc<Tenant>>,
    pub started: Instant,
    /// Time to the response head.
    pub head_us: u64,
    /// The connection, which says whether the server cut it.
    pub conn: Option<Arc<Activity>>,
}

impl Record {
    /// Writes the line, and counts the bytes for the tenant. The query (which may hold a
    /// signature) is never logged.
    pub(super) fn write(self, bytes: u64, how: BodyEnd) {
        let outcome = Delivery::of(how, self.conn.as_deref());
        if let Some(tenant) = &self.tenant {
            self.metrics.tenant_request(&tenant.name, bytes);
        }
        let (error, side, detail) = match &self.error {
            Some(e) => (
                e.kind.code(),
                e.side.as_str(),
                e.detail.as_deref().unwrap_or(""),
            ),
            None => ("", "", ""),
        };
        const LEVEL: tracing::Level = tracing::Level::INFO;
        if !tracing::enabled!(target: ACCESS_TARGET, LEVEL) {
            return;
        }
        let duration_us = self.started.elapsed().as_micros() as u64;
        crate::logging::emit(LEVEL, ACCESS_TARGET, |line| {
            line.display("request_id", RequestId(self.id));
            match self.client {
                Some(client) => line.display("client", client),
                None => line.str("client", ""),
            };
            line.display("method", &self.method)
                .str("route", self.route.as_str())
                .str("bucket", self.bucket.as_deref().unwrap_or(""))
                .str("key", self.key.as_deref().unwrap_or(""))
                .u64("status", self.status.into())
                .u64("bytes", bytes)
                .str("outcome", outcome.as_str())
                .u64("head_us", self.head_us)
                .u64("duration_us", duration_us)
                .str("cache", self.cache.as_str())
                .str("error", error)
                .str("side", side)
                .str("detail", detail);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sixteen_hex_digits() {
        for id in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let want = format!("{id:016x}");
            assert_eq!(request_id(id), want.as_str());
            assert_eq!(RequestId(id).to_string(), want);
        }
    }

    #[test]
    fn deliveries() {
        let conn = Activity::new(Instant::now());
        assert_eq!(
            Delivery::of(BodyEnd::Complete, Some(&conn)),
            Delivery::Complete
        );
        assert_eq!(
            Delivery::of(BodyEnd::Failed, Some(&conn)),
            Delivery::Aborted
        );
        assert_eq!(
            Delivery::of(BodyEnd::Dropped, Some(&conn)),
            Delivery::ClientGone
        );
        conn.cut(EndReason::SendTimeout);
        assert_eq!(
            Delivery::of(BodyEnd::Dropped, Some(&conn)),
            Delivery::SendTimeout
        );
        conn.cut(EndReason::Evicted);
        assert_eq!(
            Delivery::of(BodyEnd::Dropped, Some(&conn)),
            Delivery::Aborted
        );
        assert_eq!(Delivery::of(BodyEnd::Dropped, None), Delivery::ClientGone);
    }
}
