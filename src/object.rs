//! What bucketfront knows about an object besides its bytes: the headers it passes on.
//! Shared by the origin (which reads it from S3), the cache (which stores it) and the
//! respond phase (which turns it into response headers).

use std::time::SystemTime;

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

    /// Whether the content type is one of the allowed patterns (`image/*`, `image/png`).
    /// An object without a content type is never allowed: browsers would sniff it.
    pub fn content_type_allowed(&self, allowed: &[String]) -> bool {
        content_type_allowed(self.content_type.as_deref(), allowed)
    }
}

/// Whether `content_type` matches one of the allowed patterns (`image/*`, `image/png`);
/// a missing content type never does (browsers would sniff the bytes).
pub fn content_type_allowed(content_type: Option<&str>, allowed: &[String]) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    allowed.iter().any(|pattern| match pattern.split_once('/') {
        Some(("*", "*")) => true,
        Some((pty, "*")) => pty.eq_ignore_ascii_case(ty),
        Some((pty, psub)) => pty.eq_ignore_ascii_case(ty) && psub.eq_ignore_ascii_case(sub),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ct: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            content_type: ct.map(String::from),
            size: 1,
            etag: None,
            last_modified: None,
        }
    }

    #[test]
    fn content_type_patterns() {
        let images = vec!["image/*".to_string()];
        assert!(meta(Some("image/png")).content_type_allowed(&images));
        assert!(meta(Some("IMAGE/JPEG; charset=binary")).content_type_allowed(&images));
        assert!(!meta(Some("text/html")).content_type_allowed(&images));
        assert!(!meta(Some("imagex/png")).content_type_allowed(&images));
        assert!(!meta(None).content_type_allowed(&images));
        let exact = vec!["image/webp".to_string()];
        assert!(!meta(Some("image/png")).content_type_allowed(&exact));
        assert!(meta(Some("image/webp")).content_type_allowed(&exact));
    }
}
