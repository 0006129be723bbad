//! The cache's decisions as pure functions of times and answers, table-tested: whether an
//! entry may be served as it is, and what a fill does with the origin's answer. The
//! cache (`cache/mod.rs`) only carries them out.

use std::time::{Duration, Instant};

use crate::cache_status::CacheStatus;

/// The `[cache]` lifetimes these decisions use.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
}

/// An object entry as a lookup finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Within `ttl`: served as a `HIT`.
    Fresh,
    /// Expired, but a revalidation failed a moment ago and the stale copy may still be
    /// served: `STALE` at once, no new upstream request until `retry_at`.
    BackingOff,
    /// Expired: a fill revalidates it.
    Expired,
}

fn age(stored_at: Instant, now: Instant) -> Duration {
    now.saturating_duration_since(stored_at)
}

/// How a lookup at `now` treats an object stored at `stored_at`.
pub fn lookup(
    l: &Lifetimes,
    stored_at: Instant,
    retry_at: Option<Instant>,
    now: Instant,
) -> Lookup {
    if age(stored_at, now) < l.ttl {
        Lookup::Fresh
    } else if retry_at.is_some_and(|t| now < t) && may_serve_stale(l, stored_at, now) {
        Lookup::BackingOff
    } else {
        Lookup::Expired
    }
}

/// Whether a remembered 404 stored at `stored_at` still answers at `now`.
pub fn not_found_fresh(l: &Lifetimes, stored_at: Instant, now: Instant) -> bool {
    age(stored_at, now) < l.negative_ttl
}

/// Whether a copy stored at `stored_at` may still be served while the origin fails.
pub fn may_serve_stale(l: &Lifetimes, stored_at: Instant, now: Instant) -> bool {
    age(stored_at, now) < l.ttl + l.stale_if_error
}

/// The origin's answer to a fill, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Object,
    NotModified,
    NotFound,
    /// Any other failure; `transient` when it is the origin's fault (5xx, timeout,
    /// refused connection) rather than a refusal (403) that a stale copy must not hide.
    Failed {
        transient: bool,
    },
}

/// What the fill does with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Check the object against the limits and stream it (and store it if it fits).
    Take,
    /// The stale copy is still good: refresh its time, answer `REVALIDATED`.
    Refresh,
    /// Remember the 404 for `negative_ttl`, answer 404.
    RememberNotFound,
    /// Serve the stale copy as `STALE` and back off from the origin for a moment.
    ServeStale,
    /// Answer the error; keep whatever entry there is (a 5xx never replaces one).
    Fail,
    /// A 304 to a request that sent no validator: the origin is broken (502).
    Unexpected,
}

/// The fill's decision. `stale_stored_at` is the expired entry being revalidated, if any.
pub fn outcome(
    l: &Lifetimes,
    answer: Answer,
    stale_stored_at: Option<Instant>,
    now: Instant,
) -> Outcome {
    match (answer, stale_stored_at) {
        (Answer::Object, _) => Outcome::Take,
        (Answer::NotModified, Some(_)) => Outcome::Refresh,
        (Answer::NotModified, None) => Outcome::Unexpected,
        (Answer::NotFound, _) => Outcome::RememberNotFound,
        (Answer::Failed { transient: true }, Some(at)) if may_serve_stale(l, at, now) => {
            Outcome::ServeStale
        }
        (Answer::Failed { .. }, _) => Outcome::Fail,
    }
}

/// The `X-Cache` of an entry served by a lookup.
pub fn status(lookup: Lookup) -> Option<CacheStatus> {
    match lookup {
        Lookup::Fresh => Some(CacheStatus::Hit),
        Lookup::BackingOff => Some(CacheStatus::Stale),
        Lookup::Expired => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Lifetimes = Lifetimes {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(3600),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn lookups() {
        let t0 = Instant::now();
        let cases = [
            // (age, retry_at after t0, expected)
            (s(0), None, Lookup::Fresh),
            (s(59), None, Lookup::Fresh),
            (s(60), None, Lookup::Expired),
            (s(61), Some(s(62)), Lookup::BackingOff),
            (s(63), Some(s(62)), Lookup::Expired),
            // Past ttl + stale_if_error: never stale, however recent the failure.
            (s(3661), Some(s(4000)), Lookup::Expired),
        ];
        for (age, retry, want) in cases {
            let got = lookup(&L, t0, retry.map(|r| t0 + r), t0 + age);
            assert_eq!(got, want, "age {age:?}, retry {retry:?}");
        }
        assert!(not_found_fresh(&L, t0, t0 + s(9)));
        assert!(!not_found_fresh(&L, t0, t0 + s(10)));
        assert_eq!(status(Lookup::Fresh), Some(CacheStatus::Hit));
        assert_eq!(status(Lookup::BackingOff), Some(CacheStatus::Stale));
        assert_eq!(status(Lookup::Expired), None);
    }

    #[test]
    fn fill_outcomes() {
        let t0 = Instant::now();
        let transient = Answer::Failed { transient: true };
        let refused = Answer::Failed { transient: false };
        let cases = [
            (Answer::Object, None, s(0), Outcome::Take),
            (Answer::Object, Some(t0), s(100), Outcome::Take),
            (Answer::NotModified, Some(t0), s(100), Outcome::Refresh),
            (Answer::NotModified, None, s(0), Outcome::Unexpected),
            (
                Answer::NotFound,
                Some(t0),
                s(100),
                Outcome::RememberNotFound,
            ),
            (Answer::NotFound, None, s(0), Outcome::RememberNotFound),
            (transient, Some(t0), s(100), Outcome::ServeStale),
            (transient, Some(t0), s(3661), Outcome::Fail),
            (transient, None, s(0), Outcome::Fail),
            (refused, Some(t0), s(100), Outcome::Fail),
        ];
        for (answer, stale, now, want) in cases {
            assert_eq!(
                outcome(&L, answer, stale, t0 + now),
                want,
                "{answer:?}, stale {stale:?}, at {now:?}"
            );
        }
    }
}
