//! [`CacheStatus`]: the `X-Cache` value of a response, a leaf type shared by the cache,
//! the respond phase and the metrics.

/// The `X-Cache` value of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit = 0,
    Miss = 1,
    Stale = 2,
    Revalidated = 3,
    Bypass = 4,
}

impl CacheStatus {
    pub const ALL: [CacheStatus; 5] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Stale,
        CacheStatus::Revalidated,
        CacheStatus::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}
