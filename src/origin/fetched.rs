//! What one origin call asks for and what it brings back, whichever the provider: the
//! request's range and validators, and the object (headers, streaming body, the tenant's
//! slot) or the `304` that says it has not changed.

use std::time::SystemTime;

use aws_sdk_s3::primitives::ByteStream;

use super::slots::Slot;
use crate::object::{Exchange, ObjectMeta, StoredFields};
use crate::peer::ClientKey;

/// What to ask the origin for, beyond the object itself.
#[derive(Debug, Clone, Default)]
pub struct GetRequest {
    /// A `Range` header value, forwarded as is.
    pub range: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<SystemTime>,
    /// Only this version (the rest of an object whose disk copy went bad mid-body).
    pub if_match: Option<String>,
    /// Whose share of the tenant's origin slots the request takes (`None`: the proxy's
    /// own, as for `bucketfront check`).
    pub client: Option<ClientKey>,
}

/// An object's headers and its body, still streaming from the origin.
pub struct OriginObject {
    pub meta: ObjectMeta,
    /// Bytes in this response's body (less than `meta.size` for a range); `None` when
    /// the origin did not say (a chunked or close-delimited body: its length is known
    /// only at its end, and `meta.size` is 0 until then).
    pub content_length: Option<u64>,
    /// `Content-Range` of a 206, as S3 sent it.
    pub content_range: Option<String>,
    pub body: ByteStream,
    /// The tenant's origin slot, held until the body is read or dropped.
    pub slot: Option<Slot>,
    /// When it was asked for and arrived (what its age counts from).
    pub exchange: Exchange,
}

pub enum Fetched {
    Object(Box<OriginObject>),
    /// The origin's `304`: the object has not changed.
    NotModified(Box<NotModified>),
}

/// What a `304` says: the stored fields it carries (they replace the stored ones, RFC
/// 9111 §4.3.4) and when it came.
#[derive(Debug, Clone)]
pub struct NotModified {
    pub fields: StoredFields,
    pub exchange: Exchange,
}
