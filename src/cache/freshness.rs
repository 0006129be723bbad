//! The cache's decisions as pure functions of times and answers, table-tested: how long
//! an object is fresh and may be served stale ([`Policy`]), whether an entry may be
//! served as it is ([`lookup`]), and what a fill does with the origin's answer
//! ([`outcome`]). The cache (`cache/mod.rs`) only carries them out.
//!
//! Ages are RFC 9111 §4.2.3's: the age an answer arrived with (from the origin's `Date`
//! and `Age`, and the round trip: [`Exchange::initial_age`](crate::object::Exchange))
//! plus the time it has spent here since.

use std::time::{Duration, Instant};

use crate::object::Directives;

/// The `[cache]` settings these decisions use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
    pub stale_while_revalidate: Duration,
}

/// How long one object is fresh, and for how long after that it may be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The freshness lifetime (§4.2.1), capped by `ttl`.
    pub lifetime: Duration,
    /// After `lifetime`: served stale at once while one revalidation runs (RFC 5861 §3).
    pub while_revalidating: Duration,
    /// After `lifetime`: served stale while the origin fails (RFC 5861 §4, §4.2.4).
    pub if_error: Duration,
}

/// The policy of an object with `d` as its rules:
///
/// - fresh for its own lifetime (`s-maxage`, `max-age`, `Expires` − `Date`), capped by
///   `ttl`; `ttl` for an object that states none (§4.2.2: the config is the heuristic);
///   zero for `no-cache` (§5.2.2.4);
/// - never stale when it says `must-revalidate`, `proxy-revalidate`, `no-cache` or
///   `s-maxage` (§4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10);
/// - an object with a lifetime of its own is served stale only as its own
///   `stale-while-revalidate=N` / `stale-if-error=N` allow, capped by the config; the
///   config's windows are for objects that state no lifetime (docs/http.md).
pub(crate) fn policy(d: &Directives, l: &Lifetimes) -> Policy {
    let lifetime = d.lifetime(l.ttl);
    let window = |own: Option<Duration>, config: Duration| {
        if d.must_revalidate {
            Duration::ZERO
        } else if d.max_age.is_some() {
            own.unwrap_or_default().min(config)
        } else {
            config
        }
    };
    Policy {
        lifetime,
        while_revalidating: window(d.stale_while_revalidate, l.stale_while_revalidate),
        if_error: window(d.stale_if_error, l.stale_if_error),
    }
}

/// What a decision needs to know of a stored object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// When its answer arrived (or was revalidated), on the cache's clock.
    pub received: Instant,
    /// Its age then (§4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    pub policy: Policy,
    /// After a failed revalidation: the stale copy is served until then without asking
    /// the origin again.
    pub retry_at: Option<Instant>,
}

impl Stored {
    /// Its age at `now` (§4.2.3 `current_age`).
    pub(crate) fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.received)
    }
}

/// An object entry as a lookup finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Within its lifetime: served as a `HIT`.
    Fresh,
    /// Expired, but a revalidation failed a moment ago and the stale copy may still be
    /// served: `STALE` at once, no new upstream request until `retry_at`.
    BackingOff,
    /// Expired less than its `stale-while-revalidate` window ago: `STALE` at once, while
    /// one revalidation runs in the background.
    Revalidating,
    /// Expired: a fill revalidates it.
    Expired,
}

/// How a lookup at `now` treats a stored object (§4.2: fresh while its age is below its
/// lifetime).
pub(crate) fn lookup(s: &Stored, now: Instant) -> Lookup {
    let age = s.age(now);
    if age < s.policy.lifetime {
        Lookup::Fresh
    } else if s.retry_at.is_some_and(|t| now < t) && may_serve_stale(s, now) {
        Lookup::BackingOff
    } else if age < s.policy.lifetime + s.policy.while_revalidating {
        Lookup::Revalidating
    } else {
        Lookup::Expired
    }
}

/// Whether a remembered 404 stored at `stored_at` still answers at `now`.
pub(crate) fn not_found_fresh(l: &Lifetimes, stored_at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(stored_at) < l.negative_ttl
}

/// Whether a stored copy may still be served while the origin fails: within its
/// `if_error` window after its lifetime.
pub(crate) fn may_serve_stale(s: &Stored, now: Instant) -> bool {
    s.age(now) < s.policy.lifetime + s.policy.if_error
}

/// The origin's answer to a fill, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
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
pub(crate) enum Outcome {
    /// Check the object against the limits and stream it (and store it if it fits).
    Take,
    /// The stale copy is still good: update its headers and time from the `304`
    /// (§4.3.4), answer `REVALIDATED`.
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
pub(crate) fn outcome(answer: Answer, stale: Option<&Stored>, now: Instant) -> Outcome {
    match (answer, stale) {
        (Answer::Object, _) => Outcome::Take,
        (Answer::NotModified, Some(_)) => Outcome::Refresh,
        (Answer::NotModified, None) => Outcome::Unexpected,
        (Answer::NotFound, _) => Outcome::RememberNotFound,
        (Answer::Failed { transient: true }, Some(s)) if may_serve_stale(s, now) => {
            Outcome::ServeStale
        }
        (Answer::Failed { .. }, _) => Outcome::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const L: Lifetimes = Lifetimes {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(3600),
        stale_while_revalidate: Duration::from_secs(30),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn stored(at: Instant, lifetime: u64, strict: bool, retry: Option<u64>) -> Stored {
        let (swr, sie) = if strict { (0, 0) } else { (30, 3600) };
        Stored {
            received: at,
            initial_age: Duration::ZERO,
            policy: Policy {
                lifetime: s(lifetime),
                while_revalidating: s(swr),
                if_error: s(sie),
            },
            retry_at: retry.map(|r| at + s(r)),
        }
    }

    fn rules(cc: &str, expires: Option<&str>) -> Directives {
        Directives::parse(Some(cc), expires, SystemTime::UNIX_EPOCH)
    }

    /// Each rule of the cache contract (docs/http.md) with the section it comes from:
    /// (Cache-Control, Expires, lifetime, stale-while-revalidate window, stale-if-error
    /// window) under a config of 1 h ttl, 30 s stale-while-revalidate, 1 h
    /// stale-if-error.
    #[test]
    fn policies() {
        let cases = [
            // No freshness of its own: the config's ttl and windows (§4.2.2).
            ("", None, 3600, 30, 3600),
            ("public", None, 3600, 30, 3600),
            // Its own lifetime: stale only as its own directives allow (RFC 5861).
            ("max-age=60", None, 60, 0, 0),
            ("max-age=0", None, 0, 0, 0),
            ("max-age=-1", None, 0, 0, 0), // §4.2.1: invalid = stale
            ("max-age=\"60\"", None, 0, 0, 0), // §5.2.2.1: token form
            ("max-age=60, stale-while-revalidate=10", None, 60, 10, 0),
            ("max-age=60, stale-if-error=120", None, 60, 0, 120),
            // ... capped by the config.
            (
                "max-age=60, stale-while-revalidate=600, stale-if-error=9999",
                None,
                60,
                30,
                3600,
            ),
            // Expires − Date (§5.3), and an invalid Expires: already expired.
            ("", Some("Thu, 01 Jan 1970 00:01:30 GMT"), 90, 0, 0),
            ("", Some("Thu, 01 Jan 1970 00:00:00 GMT"), 0, 0, 0),
            ("", Some("0"), 0, 0, 0),
            // Never stale (§4.2.4): must-revalidate (§5.2.2.2), proxy-revalidate
            // (§5.2.2.8), no-cache (§5.2.2.4), s-maxage (§5.2.2.10).
            ("must-revalidate", None, 3600, 0, 0),
            ("proxy-revalidate, stale-if-error=60", None, 3600, 0, 0),
            ("no-cache, stale-while-revalidate=60", None, 0, 0, 0),
            ("max-age=2, s-maxage=2", None, 2, 0, 0),
            ("max-age=600, s-maxage=5, stale-if-error=60", None, 5, 0, 0), // §4.2.1
            // Capped by ttl.
            ("max-age=86400", None, 3600, 0, 0),
        ];
        for (cc, expires, lifetime, swr, sie) in cases {
            let got = policy(&rules(cc, expires), &L);
            let want = Policy {
                lifetime: s(lifetime),
                while_revalidating: s(swr),
                if_error: s(sie),
            };
            assert_eq!(got, want, "{cc:?} {expires:?}");
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
            let got = lookup(&stored(t0, lifetime, strict, retry), t0 + s(age));
            assert_eq!(got, want, "lifetime {lifetime}, strict {strict}, age {age}");
        }
        assert!(not_found_fresh(&L, t0, t0 + s(9)));
        assert!(!not_found_fresh(&L, t0, t0 + s(10)));
    }

    /// §4.2.3: the age an answer arrived with counts, not only the time it spent here.
    #[test]
    fn an_answer_that_arrived_old_is_fresh_for_less() {
        let t0 = Instant::now();
        let old = Stored {
            initial_age: s(50),
            ..stored(t0, 60, false, None)
        };
        assert_eq!(old.age(t0 + s(5)), s(55));
        assert_eq!(lookup(&old, t0 + s(9)), Lookup::Fresh);
        assert_eq!(lookup(&old, t0 + s(10)), Lookup::Revalidating);
        let too_old = Stored {
            initial_age: s(400),
            ..stored(t0, 300, true, None)
        };
        assert_eq!(lookup(&too_old, t0), Lookup::Expired);
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
            // must-revalidate, proxy-revalidate, no-cache, s-maxage: a 502/504, never
            // the old copy.
            (transient, Some(&strict), 100, Outcome::Fail),
            (transient, None, 0, Outcome::Fail),
            (refused, Some(&lax), 100, Outcome::Fail),
        ];
        for (answer, stale, at, want) in cases {
            assert_eq!(
                outcome(answer, stale, t0 + s(at)),
                want,
                "{answer:?}, stale {stale:?}, at {at}"
            );
        }
    }

    /// No combination of directives serves `STALE` (at a lookup or on an origin
    /// failure) for an object marked `must-revalidate`, `proxy-revalidate`, `no-cache` or
    /// `s-maxage` once it has expired (§4.2.4).
    #[test]
    fn strict_objects_are_never_stale() {
        use proptest::prelude::*;
        let directive = prop::sample::select(vec![
            "public",
            "private",
            "max-age=0",
            "max-age=5",
            "max-age=x",
            "stale-while-revalidate=100",
            "stale-if-error=100",
            "stale-if-error=0",
            "immutable",
            "no-transform",
        ]);
        let strict = prop::sample::select(vec![
            "must-revalidate",
            "proxy-revalidate",
            "no-cache",
            "s-maxage=5",
            "s-maxage=0",
            "S-MAXAGE=1",
        ]);
        let expires = prop::option::of(prop::sample::select(vec![
            "0",
            "Thu, 01 Jan 1970 00:00:10 GMT",
        ]));
        let config = (0u64..5000, 0u64..5000, 0u64..5000);
        proptest!(ProptestConfig::with_cases(2000), |(
            mut list in prop::collection::vec(directive, 0..5),
            strict in strict,
            at in 0usize..5,
            expires in expires,
            (ttl, swr, sie) in config,
            after in 0u64..10_000,
            retry in prop::option::of(0u64..10_000),
        )| {
            list.insert(at.min(list.len()), strict);
            let cc = list.join(", ");
            let l = Lifetimes {
                ttl: s(ttl),
                negative_ttl: s(10),
                stale_if_error: s(sie),
                stale_while_revalidate: s(swr),
            };
            let p = policy(&rules(&cc, expires), &l);
            let t0 = Instant::now();
            let entry = Stored {
                received: t0,
                initial_age: Duration::ZERO,
                policy: p,
                retry_at: retry.map(|r| t0 + s(r)),
            };
            let now = t0 + p.lifetime + s(after);
            prop_assert_eq!(lookup(&entry, now), Lookup::Expired, "{}", cc);
            let failed = outcome(Answer::Failed { transient: true }, Some(&entry), now);
            prop_assert_eq!(failed, Outcome::Fail, "{}", cc);
        });
    }
}
