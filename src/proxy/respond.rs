//! The respond phase: an object (from memory, from a fill in progress, or streamed from
//! the origin) → status, headers and body, honouring `Range` and conditionals.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::conditional::{RangeAsk, not_modified, parse_range, range_applies};
use crate::body::ProxyBody;
use crate::cache::Cached;
use crate::cache::disk::FromFile;
use crate::cache::{Place, Streamed};
use crate::error::{Error, Kind, Side};
use crate::object::{EncodedHeaders, ObjectMeta, in_not_modified, response_headers};
use crate::origin::{OriginObject, next_chunk};
use crate::sendfile::Spans;

/// How to answer a request for an object whose metadata is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    NotModified,
    Unsatisfiable,
    /// `[start, start + len)`; `partial` for a 206.
    Bytes {
        start: u64,
        len: u64,
        partial: bool,
    },
}

fn plan(request: &HeaderMap, meta: &ObjectMeta) -> Plan {
    if not_modified(request, meta) {
        return Plan::NotModified;
    }
    let whole = Plan::Bytes {
        start: 0,
        len: meta.size,
        partial: false,
    };
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return whole;
    };
    if !range_applies(request, meta) {
        return whole;
    }
    match parse_range(range, meta.size) {
        RangeAsk::Whole => whole,
        RangeAsk::Unsatisfiable => Plan::Unsatisfiable,
        RangeAsk::Part { start, end } => Plan::Bytes {
            start,
            len: end - start + 1,
            partial: true,
        },
    }
}

/// An object held whole in memory (its headers encoded when it was stored).
pub(crate) fn from_memory(request: &HeaderMap, head: bool, cached: &Cached) -> Response<ProxyBody> {
    let body = &cached.body;
    build(
        request,
        head,
        &cached.meta,
        &cached.headers,
        |start, len| ProxyBody::pieces(body.range(start, len)),
    )
}

/// An object on disk, its body sent from the file through the connection's `spans`.
pub(crate) fn from_file(
    request: &HeaderMap,
    head: bool,
    from: FromFile,
    spans: Spans,
) -> Response<ProxyBody> {
    let meta = from.meta.clone();
    build(
        request,
        head,
        &meta,
        &response_headers(&meta),
        |start, len| ProxyBody::stream(from.body(spans, start, len), Some(len)),
    )
}

/// An object whose body is still arriving through a fill, read from this request's
/// `place` in it. A body of unknown length is sent whole (chunked), `Range` ignored (RFC
/// 9110 §14.2 allows it; the proxy waits for the whole body instead where it can).
pub(crate) fn from_fill(
    request: &HeaderMap,
    head: bool,
    streamed: &Streamed,
    place: Place,
) -> Response<ProxyBody> {
    let meta = &streamed.meta;
    let headers = response_headers(meta);
    if streamed.length.is_none() {
        if not_modified(request, meta) {
            return not_modified_response(&headers);
        }
        let body = if head {
            ProxyBody::empty()
        } else {
            ProxyBody::stream(place.reader(0, None), None)
        };
        let mut r = response(body);
        for (name, value) in headers {
            r.headers_mut().insert(name, value);
        }
        return r;
    }
    build(request, head, meta, &headers, |start, len| {
        ProxyBody::stream(place.reader(start, Some(len)), Some(len))
    })
}

/// A `304` for a stored response: its validators, `Date` and `Expires`.
fn not_modified_response(headers: &EncodedHeaders) -> Response<ProxyBody> {
    let mut r = response(ProxyBody::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    let h = r.headers_mut();
    for (name, value) in headers.iter().filter(|(n, _)| in_not_modified(n)) {
        h.insert(name.clone(), value.clone());
    }
    r
}

fn build(
    request: &HeaderMap,
    head: bool,
    meta: &ObjectMeta,
    headers: &EncodedHeaders,
    body: impl FnOnce(u64, u64) -> ProxyBody,
) -> Response<ProxyBody> {
    match plan(request, meta) {
        Plan::NotModified => not_modified_response(headers),
        Plan::Unsatisfiable => {
            let mut r = error_response(&Error::new(
                Kind::RangeNotSatisfiable,
                Side::Client,
                "the requested range is not satisfiable",
            ));
            insert(
                r.headers_mut(),
                header::CONTENT_RANGE,
                format!("bytes */{}", meta.size),
            );
            r.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            r
        }
        Plan::Bytes {
            start,
            len,
            partial,
        } => {
            let mut r = response(if head || len == 0 {
                ProxyBody::empty()
            } else {
                body(start, len)
            });
            let h = r.headers_mut();
            for (name, value) in headers.iter() {
                h.insert(name.clone(), value.clone());
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            if partial {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                let range = format!("bytes {start}-{}/{}", start + len - 1, meta.size);
                insert(r.headers_mut(), header::CONTENT_RANGE, range);
            }
            r
        }
    }
}

/// An origin response passed through (objects too large to cache). Range and
/// conditionals were forwarded upstream, so its status is the origin's. A body of
/// unknown length is sent chunked, and cut (never ended cleanly) if the origin's breaks.
pub(crate) fn from_origin(head: bool, object: OriginObject, idle: Duration) -> Response<ProxyBody> {
    let len = object.content_length;
    let body = if head || len == Some(0) {
        ProxyBody::empty()
    } else {
        // The tenant's origin slot goes with the body: freed when it ends or is dropped.
        let state = (object.body, object.slot, None);
        let stream =
            futures_util::stream::unfold(state, move |(mut body, slot, failed)| async move {
                if let Some(e) = failed {
                    return Some((Err(e), (body, slot, None)));
                }
                match next_chunk(&mut body, idle).await {
                    Ok(Some(chunk)) => {
                        let (chunk, failed) = coalesce(chunk, &mut body);
                        Some((Ok(chunk), (body, slot, failed)))
                    }
                    Ok(None) => None,
                    Err(e) => Some((
                        Err(std::io::Error::other(e.to_string())),
                        (body, slot, None),
                    )),
                }
            });
        ProxyBody::stream(stream, len)
    };
    let mut r = response(body);
    let h = r.headers_mut();
    for (name, value) in response_headers(&object.meta) {
        h.insert(name, value);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(range) = object.content_range {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        insert(r.headers_mut(), header::CONTENT_RANGE, range);
    }
    r
}

/// `first` and the chunks of `body` already received, up to [`COALESCE`] bytes, as one:
/// fewer, larger writes to the client (and fewer task wake-ups) for a long stream whose
/// origin body arrives in socket-sized chunks. An error met on the way is returned beside the
/// bytes before it, to be sent after them.
fn coalesce(
    first: Bytes,
    body: &mut aws_sdk_s3::primitives::ByteStream,
) -> (Bytes, Option<std::io::Error>) {
    use futures_util::FutureExt;
    let mut more = Vec::new();
    let mut len = first.len();
    let mut failed = None;
    while len < COALESCE {
        match body.try_next().now_or_never() {
            Some(Ok(Some(chunk))) => {
                len += chunk.len();
                more.push(chunk);
            }
            Some(Err(e)) => {
                failed = Some(std::io::Error::other(e.to_string()));
                break;
            }
            // The end (the next read says so again) or nothing ready yet.
            Some(Ok(None)) | None => break,
        }
    }
    if more.is_empty() {
        return (first, failed);
    }
    let mut joined = bytes::BytesMut::with_capacity(len);
    joined.extend_from_slice(&first);
    for chunk in more {
        joined.extend_from_slice(&chunk);
    }
    (joined.freeze(), failed)
}

/// How many already-received bytes of a passed-through body are sent in one frame.
const COALESCE: usize = 256 << 10;

/// The origin's `304` for a passed-through conditional request.
pub(crate) fn not_modified_passthrough() -> Response<ProxyBody> {
    let mut r = response(ProxyBody::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    r
}

fn insert(h: &mut HeaderMap, name: header::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

/// Headers a response for an object ends up with (its stored ones, the proxy's own, CORS).
const HEADERS_PER_RESPONSE: usize = 20;

/// A response with room for all its headers from the start: a map grown header by header
/// reallocates several times per response.
fn response(body: ProxyBody) -> Response<ProxyBody> {
    let mut r = Response::new(body);
    *r.headers_mut() = HeaderMap::with_capacity(HEADERS_PER_RESPONSE);
    r
}

/// The JSON error response of docs/http.md, "Answers"; headers common to every response
/// are added by the caller.
pub(crate) fn error_response(e: &Error) -> Response<ProxyBody> {
    let body = Bytes::from(e.body());
    let mut r = response(ProxyBody::full(body.clone()));
    *r.status_mut() = e.status();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if e.kind == Kind::MethodNotAllowed {
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
    }
    if e.kind == Kind::Overloaded {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_have_room_for_their_headers() {
        assert!(response(ProxyBody::empty()).headers().capacity() >= HEADERS_PER_RESPONSE);
    }
}
