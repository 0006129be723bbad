//! The cache's decisions as pure functions of times and answers, table-tested: whether an
//! entry may be served as it is, and what a fill does with the origin's answer. The
//! cache (`cache/mod.rs`) only carries them out.

use std::time::{Duration, Instant};

use crate::cache_status::CacheStatus;

/// The `[cache]` lifetimes these decisions use (an object's own freshness lifetime is
/// decided when it is stored: `object::Directives::lifetime`).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
    pub stale_while_revalidate: Duration,
}

/// What a decision needs to know of a stored object.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub at: Instant,
    /// Fresh for this long after `at`.
    pub lifetime: Duration,
    /// `must-revalidate`, `proxy-revalidate` or `no-cache`: never served stale.
    pub strict: bool,
    /// After a failed revalidation: the stale copy is served until then without asking
    /// the origin again.
    pub retry_at: Option<Instant>,
}

/// An object entry as a lookup finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Within its lifetime: served as a `HIT`.
    Fresh,
    /// Expired, but a revalidation failed a moment ago and the stale copy may still be
    /// served: `STALE` at once, no new upstream request until `retry_at`.
    BackingOff,
    /// Expired less than `stale_while_revalidate` ago: `STALE` at once, while one
    /// revalidation runs in the background.
    Revalidating,
    /// Expired: a fill revalidates it.
    Expired,
}

fn age(stored_at: Instant, now: Instant) -> Duration {
    now.saturating_duration_since(stored_at)
}

/// How a lookup at `now` treats a stored object.
pub fn lookup(l: &Lifetimes, s: &Stored, now: Instant) -> Lookup {
    if age(s.at, now) < s.lifetime {
        Lookup::Fresh
    } else if s.retry_at.is_some_and(|t| now < t) && may_serve_stale(l, s, now) {
        Lookup::BackingOff
    } else if !s.strict && age(s.at, now) < s.lifetime + l.stale_while_revalidate {
        Lookup::Revalidating
    } else {
        Lookup::Expired
    }
}

/// Whether a remembered 404 stored at `stored_at` still answers at `now`.
pub fn not_found_fresh(l: &Lifetimes, stored_at: Instant, now: Instant) -> bool {
    age(stored_at, now) < l.negative_ttl
}

/// Whether a stored copy may still be served while the origin fails: within
/// `stale_if_error` after its lifetime, and only if the object allows it at all.
pub fn may_serve_stale(l: &Lifetimes, s: &Stored, now: Instant) -> bool {
    !s.strict && age(s.at, now) < s.lifetime + l.stale_if_error
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

/// The fill's decision. `stale` is the expired entry being revalidated, if any.
pub fn outcome(l: &Lifetimes, answer: Answer, stale: Option<&Stored>, now: Instant) -> Outcome {
    match (answer, stale) {
        (Answer::Object, _) => Outcome::Take,
        (Answer::NotModified, Some(_)) => Outcome::Refresh,
        (Answer::NotModified, None) => Outcome::Unexpected,
        (Answer::NotFound, _) => Outcome::RememberNotFound,
        (Answer::Failed { transient: true }, Some(s)) if may_serve_stale(l, s, now) => {
            Outcome::ServeStale
        }
        (Answer::Failed { .. }, _) => Outcome::Fail,
    }
}

/// The `X-Cache` of an entry served by a lookup.
pub fn status(lookup: Lookup) -> Option<CacheStatus> {
    match lookup {
        Lookup::Fresh => Some(CacheStatus::Hit),
        Lookup::BackingOff | Lookup::Revalidating => Some(CacheStatus::Stale),
        Lookup::Expired => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Lifetimes = Lifetimes {
        negative_ttl: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(3600),
        stale_while_revalidate: Duration::from_secs(30),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn stored(at: Instant, lifetime: u64, strict: bool, retry: Option<u64>) -> Stored {
        Stored {
            at,
            lifetime: s(lifetime),
            strict,
            retry_at: retry.map(|r| at + s(r)),
        }
    }

    #[test]
    fn lookups() {
        let t0 = Instant::now();
        let cases = [
            // (lifetime, strict, retry_at after t0, age, expected)
            (60, false, None, 0, Lookup::Fresh),
            (60, false, None, 59, Lookup::Fresh),
            (60, false, None, 60, Lookup::Revalidating),
            (60, false, None, 89, Lookup::Revalidating),
            (60, false, None, 90, Lookup::Expired),
            (60, false, Some(62), 61, Lookup::BackingOff),
            (60, false, Some(62), 63, Lookup::Revalidating),
            (60, false, Some(62), 95, Lookup::Expired),
            // Past lifetime + stale_if_error: never stale, however recent the failure.
            (60, false, Some(4000), 3661, Lookup::Expired),
            // `no-cache`: a lifetime of zero, revalidated on every use.
            (0, true, None, 0, Lookup::Expired),
            // must-revalidate: never stale, not even while revalidating.
            (60, true, Some(62), 61, Lookup::Expired),
            (60, true, None, 60, Lookup::Expired),
        ];
        for (lifetime, strict, retry, age, want) in cases {
            let got = lookup(&L, &stored(t0, lifetime, strict, retry), t0 + s(age));
            assert_eq!(got, want, "lifetime {lifetime}, strict {strict}, age {age}");
        }
        assert!(not_found_fresh(&L, t0, t0 + s(9)));
        assert!(!not_found_fresh(&L, t0, t0 + s(10)));
        assert_eq!(status(Lookup::Fresh), Some(CacheStatus::Hit));
        assert_eq!(status(Lookup::BackingOff), Some(CacheStatus::Stale));
        assert_eq!(status(Lookup::Revalidating), Some(CacheStatus::Stale));
        assert_eq!(status(Lookup::Expired), None);
    }

    #[test]
    fn fill_outcomes() {
        let t0 = Instant::now();
        let lax = stored(t0, 60, false, None);
        let strict = stored(t0, 60, true, None);
        let transient = Answer::Failed { transient: true };
        let refused = Answer::Failed { transient: false };
        let cases = [
            (Answer::Object, None, 0, Outcome::Take),
            (Answer::Object, Some(&lax), 100, Outcome::Take),
            (Answer::NotModified, Some(&lax), 100, Outcome::Refresh),
            (Answer::NotModified, Some(&strict), 100, Outcome::Refresh),
            (Answer::NotModified, None, 0, Outcome::Unexpected),
            (Answer::NotFound, Some(&lax), 100, Outcome::RememberNotFound),
            (Answer::NotFound, None, 0, Outcome::RememberNotFound),
            (transient, Some(&lax), 100, Outcome::ServeStale),
            (transient, Some(&lax), 3661, Outcome::Fail),
            // must-revalidate, proxy-revalidate, no-cache: a 502/504, never the old copy.
            (transient, Some(&strict), 100, Outcome::Fail),
            (transient, None, 0, Outcome::Fail),
            (refused, Some(&lax), 100, Outcome::Fail),
        ];
        for (answer, stale, at, want) in cases {
            assert_eq!(
                outcome(&L, answer, stale, t0 + s(at)),
                want,
                "{answer:?}, stale {stale:?}, at {at}"
            );
        }
    }
}
