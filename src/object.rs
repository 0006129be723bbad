//! What bucketfront knows about an object besides its bytes: the headers it passes on.
//! Shared by the origin (which reads it from S3), the cache (which stores it) and the
//! respond phase (which turns it into response headers).

use std::time::SystemTime;

use crate::pattern::{MediaRange, content_type_allowed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    /// The whole object's size in bytes (not the size of one range of it).
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
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
}
