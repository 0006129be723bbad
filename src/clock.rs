//! The one clock of a running proxy: real time, which tests move forward instead of
//! sleeping past a lifetime or a signature's expiry. Every freshness decision, cache
//! stamp and disk file date, signature check and presigned URL reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Default)]
pub struct Clock {
    /// How far tests have moved this clock ahead of real time.
    skew_ms: AtomicU64,
}

impl Clock {
    pub fn now(&self) -> Instant {
        Instant::now() + self.skew()
    }

    /// Wall-clock time on this clock (what a disk file or a signature's `exp` is).
    pub fn wall(&self) -> SystemTime {
        SystemTime::now() + self.skew()
    }

    fn skew(&self) -> Duration {
        Duration::from_millis(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock forward by `by`.
    #[cfg(any(test, feature = "test-support"))]
    pub fn advance(&self, by: Duration) {
        self.skew_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}
