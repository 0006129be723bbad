//! What the cache holds, with no behaviour of its own: the key, a stored object and the
//! stamp its age and freshness are computed from, and the digest that names files and
//! variant ETags. Every other part of the cache builds on these.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Partition, ProviderKind};
use crate::object::{Directives, EncodedHeaders, ObjectMeta, response_headers};
use crate::source::ObjectRef;

use super::freshness::{Policy, Stored};
use super::pieces::Pieces;

/// What the cache is keyed by: never the signature, the query or the origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub provider: ProviderKind,
    /// S3's partition (the same bucket name in two is two buckets).
    pub partition: Partition,
    pub bucket: String,
    pub key: String,
    /// A variant's [`Variant::cache_id`](crate::variant::Variant::cache_id); `None` for
    /// the object itself.
    pub variant: Option<String>,
}

impl CacheKey {
    /// Key `k` of S3 bucket `b` (unit tests).
    #[cfg(test)]
    pub(crate) fn test(k: &str) -> CacheKey {
        CacheKey {
            provider: ProviderKind::S3,
            partition: Partition::Aws,
            bucket: "b".into(),
            key: k.into(),
            variant: None,
        }
    }

    pub fn of(obj: &ObjectRef) -> CacheKey {
        CacheKey {
            provider: obj.provider,
            partition: obj.partition.unwrap_or_default(),
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            variant: None,
        }
    }
}

/// A complete object in memory.
#[derive(Debug)]
pub struct Cached {
    pub meta: Arc<ObjectMeta>,
    /// [`response_headers`] of `meta`, encoded when the object was stored.
    pub headers: Arc<EncodedHeaders>,
    pub body: Pieces,
    /// When its answer arrived (or was last revalidated), and the rules it came with.
    pub stamp: Stamp,
    /// After a failed revalidation: until then the stale copy is served at once instead
    /// of every request waiting on a failing origin again.
    pub retry_at: Option<Instant>,
}

impl Cached {
    pub(crate) fn new(meta: Arc<ObjectMeta>, body: Pieces, stamp: Stamp) -> Arc<Cached> {
        Arc::new(Cached {
            headers: Arc::new(response_headers(&meta)),
            meta,
            body,
            stamp,
            retry_at: None,
        })
    }

    /// The same bytes, metadata and stamp, served stale until `retry_at` (no copy of the
    /// body).
    pub(crate) fn backing_off(&self, retry_at: Instant) -> Arc<Cached> {
        Arc::new(Cached {
            meta: self.meta.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            stamp: self.stamp,
            retry_at: Some(retry_at),
        })
    }

    pub(crate) fn stored(&self) -> Stored {
        Stored {
            received: self.stamp.received,
            initial_age: self.stamp.initial_age,
            policy: self.stamp.policy,
            retry_at: self.retry_at,
        }
    }

    /// How fresh this copy is at `now`, for the answer's `Cache-Control` and `Age`.
    pub fn freshness(&self, now: Instant) -> Freshness {
        self.stamp.freshness(now)
    }
}

/// How fresh an answer is: what the respond phase needs for `Cache-Control` and `Age`.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub directives: Directives,
    /// The object's freshness lifetime at the proxy.
    pub lifetime: Duration,
    /// Its age (RFC 9111 §4.2.3): the age its answer arrived with plus the time since.
    pub age: Duration,
}

/// When an answer arrived (or its copy was last revalidated) and the rules it came
/// with: what every later answer's age, freshness and `Cache-Control` are computed
/// from.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Its arrival, on the cache's clock.
    pub received: Instant,
    /// Its age then (RFC 9111 §4.2.3's corrected initial age).
    pub initial_age: Duration,
    pub directives: Directives,
    pub policy: Policy,
}

impl Stamp {
    /// Its age at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.received)
    }

    /// How fresh this copy is at `now`.
    pub fn freshness(&self, now: Instant) -> Freshness {
        Freshness {
            directives: self.directives,
            lifetime: self.policy.lifetime,
            age: self.age(now),
        }
    }
}

/// One entry of the memory tier.
#[derive(Clone)]
pub(crate) enum Entry {
    Object(Arc<Cached>),
    NotFound { stored_at: Instant },
}

/// The first `bytes` bytes of SHA-256 over `parts` (each length-prefixed, so that parts
/// cannot run into each other), in hex.
pub(crate) fn digest_hex<'a>(parts: impl IntoIterator<Item = &'a str>, bytes: usize) -> String {
    use aws_lc_rs::digest;
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    hex::encode(&ctx.finish().as_ref()[..bytes])
}

#[cfg(test)]
mod tests {
    /// Disk-tier file names are this digest: a change would turn a warm disk cache cold
    /// on upgrade. The values are from Python's `hashlib` (each part prefixed by its
    /// length as a little-endian u64).
    #[test]
    fn the_digest_and_its_hex_do_not_change() {
        let parts = ["s3", "acme-images", "cats/1.jpg"];
        assert_eq!(
            super::digest_hex(parts, 16),
            "522cadbbbe90953d1e7220635415c7b1"
        );
        assert_eq!(super::digest_hex(parts, 12), "522cadbbbe90953d1e722063");
    }
}
