//! Whether the disk tier may use its disk now, kept apart for reads and writes (a full
//! disk still reads; a hung one neither reads nor writes). After a failure the side that
//! failed is left alone for [`RETRY_AFTER`]; then one attempt tries the disk again while
//! the others keep going without it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failing side of the disk is left alone before one attempt tries it again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Health {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether to use the disk now: always while it works; after a failure, not until
    /// [`RETRY_AFTER`] has passed, and then for one attempt per [`RETRY_AFTER`].
    pub(super) fn may_try(&self) -> bool {
        let mut s = self.state();
        match s.retry_at {
            Some(at) if Instant::now() < at => false,
            Some(_) => {
                s.retry_at = Some(Instant::now() + RETRY_AFTER);
                true
            }
            None => true,
        }
    }

    /// Records a failure; `true` for the first of a run of them (the one to log).
    pub(super) fn failed(&self) -> bool {
        let mut s = self.state();
        s.retry_at = Some(Instant::now() + RETRY_AFTER);
        let first = s.failing_since.is_none();
        if first {
            s.failing_since = Some(Instant::now());
        }
        first
    }

    /// Records a success; how long the side had been failing, if it was.
    pub(super) fn recovered(&self) -> Option<Duration> {
        let mut s = self.state();
        s.retry_at = None;
        s.failing_since.take().map(|since| since.elapsed())
    }

    pub(super) fn is_failing(&self) -> bool {
        self.state().failing_since.is_some()
    }
}

/// The disk tier's locks guard a few assignments or a push each, so a state left by a
/// panic elsewhere is still whole: poisoning is ignored.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_pauses_attempts_and_a_success_ends_it() {
        let h = Health::default();
        assert!(h.may_try() && h.may_try());
        assert!(h.failed(), "the first failure is the one logged");
        assert!(!h.failed());
        assert!(h.is_failing() && !h.may_try());
        // As if RETRY_AFTER had passed: one attempt, then the others wait again.
        h.state().retry_at = Some(Instant::now());
        assert!(h.may_try());
        assert!(!h.may_try());
        assert!(h.recovered().is_some());
        assert!(!h.is_failing() && h.may_try());
        assert!(h.recovered().is_none());
    }
}
