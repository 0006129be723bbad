//! Hot URLs, remembered: for a request target that was just answered from the cache, the
//! outcome of its route, source and authorize phases (its object, its tenant, its checked
//! signature), so that the next GET or HEAD of the same target goes straight to the cache
//! lookup. Those three phases were about a third of a small hit's own CPU time
//! (BENCHMARKS.md, "The floor under a hit").
//!
//! Why it answers as the phases would:
//! - the key is the exact request target (path and query bytes): a target that differs in
//!   one byte (another signature, `exp` or parameter order) goes through every phase. The
//!   method is not in the key because the phases' outcome for GET and HEAD differs only in
//!   `head`, which the caller takes from the request; other methods never get here;
//! - only outcomes that passed every check are remembered, never a refusal;
//! - the one input of those phases that moves on its own is the clock: the caller checks
//!   the signature's window ([`Verified::holds_at`]) at every use;
//! - the memo belongs to one config's `State`: a reload (a key removed, a tenant or a
//!   bucket changed) starts with an empty one;
//! - the cache lookup and everything after it run as for any request, so purges,
//!   evictions and freshness are the cache's, not the memo's.
//!
//! A target is hashed once per call (keyed SipHash); the hash picks the shard and is the
//! key in it, and the target is compared whole on every use.
//!
//! Bounded in bytes ([`BUDGET`], entries charged their strings and [`ENTRY_OVERHEAD`]),
//! targets longer than [`MAX_TARGET`] are not remembered. Each shard keeps two
//! generations: new entries go into the young one; when it is full, the old one is dropped
//! and the young one becomes old; an entry found in the old one moves back to the young
//! one. Hot targets stay, a flood of new ones only pushes out what was not asked again.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::{Tenant, Verified};
use crate::source::ObjectRef;

use super::route::RouteName;

/// What the memo holds, all entries together: at most this many bytes of strings and
/// [`ENTRY_OVERHEAD`]s (docs/design.md, "Connection deadlines and the memory bound").
pub(super) const BUDGET: usize = 8 << 20;
/// Longer targets are not remembered (a signed path of a long key is ~300 bytes).
pub(super) const MAX_TARGET: usize = 1024;
/// What an entry is charged beyond its strings: more than the `Arc`, the `ObjectRef`,
/// the hash table's slot and the allocator's rounding take (about 410 bytes, measured).
pub(super) const ENTRY_OVERHEAD: usize = 512;
/// Shards, each behind its own lock (a power of two).
const SHARDS: usize = 16;
/// What each shard's generation holds at most.
const GENERATION_BUDGET: usize = BUDGET / SHARDS / 2;

/// The outcome of the route, source and authorize phases for one target.
#[derive(Debug)]
pub(super) struct Remembered {
    pub(super) route: RouteName,
    pub(super) obj: ObjectRef,
    pub(super) tenant: Arc<Tenant>,
    pub(super) verified: Verified,
}

impl Remembered {
    fn cost(&self, target: &str) -> usize {
        let obj = &self.obj;
        target.len()
            + obj.bucket.len()
            + obj.key.len()
            + obj.region.as_ref().map_or(0, String::len)
            + obj.account.as_ref().map_or(0, String::len)
            + ENTRY_OVERHEAD
    }
}

/// Remembered outcomes by request target; see the module's doc.
pub(super) struct Memo {
    shards: Box<[Mutex<Shard>]>,
    /// Hashes a target once per call: its bits pick the shard and the slot in it.
    hasher: RandomState,
}

#[derive(Default)]
struct Shard {
    young: Generation,
    old: Generation,
}

#[derive(Default)]
struct Generation {
    /// By the target's hash. The target itself is compared on every use, so two targets of
    /// one hash (one in 2^64, with a key an attacker does not know) cost a miss, never an
    /// answer for the other.
    entries: HashMap<u64, Entry, BuildHasherDefault<HashIsKey>>,
    /// What its entries are charged, together.
    bytes: usize,
}

struct Entry {
    target: Box<str>,
    outcome: Arc<Remembered>,
    cost: usize,
}

/// The key is the target's hash already: hashing it again would be the cost the map
/// keyed by hash saves.
#[derive(Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else still gets a hash.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Memo {
    fn default() -> Memo {
        Memo {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Memo {
    /// The outcome remembered for `target`, if any.
    pub(super) fn get(&self, target: &str) -> Option<Arc<Remembered>> {
        let hash = self.hasher.hash_one(target);
        let mut shard = self.shard(hash);
        if let Some(found) = shard.young.entries.get(&hash) {
            return (*found.target == *target).then(|| found.outcome.clone());
        }
        if shard.old.entries.get(&hash)?.target.as_ref() != target {
            return None;
        }
        let found = shard.old.entries.remove(&hash)?;
        shard.old.bytes -= found.cost;
        let outcome = found.outcome.clone();
        let dropped = shard.young_insert(hash, found);
        drop(shard);
        // The dropped generation is freed outside the lock.
        drop(dropped);
        Some(outcome)
    }

    /// Remembers `outcome` for `target` (unless the target is too long to be worth it).
    pub(super) fn remember(&self, target: &str, outcome: Remembered) {
        if target.len() > MAX_TARGET {
            return;
        }
        let hash = self.hasher.hash_one(target);
        let entry = Entry {
            cost: outcome.cost(target),
            target: target.into(),
            outcome: Arc::new(outcome),
        };
        let mut shard = self.shard(hash);
        let (young, old) = (
            shard.young.entries.remove(&hash),
            shard.old.entries.remove(&hash),
        );
        shard.young.bytes -= young.as_ref().map_or(0, |e| e.cost);
        shard.old.bytes -= old.as_ref().map_or(0, |e| e.cost);
        let dropped = shard.young_insert(hash, entry);
        drop(shard);
        drop((young, old, dropped));
    }

    /// What its entries are charged, together (at most [`BUDGET`]).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let shards = self.shards.iter();
        shards
            .map(|s| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                s.young.bytes + s.old.bytes
            })
            .sum()
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // Bits the map uses neither for its slot (the low ones) nor for its tags (the top 7).
        let i = (hash >> 32) as usize & (SHARDS - 1);
        // Nothing panics while holding a shard, and a map is whole between calls anyway.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shard {
    /// Inserts into the young generation, which first becomes the old one if `entry` does not
    /// fit; returns the generation that was dropped, for the caller to free unlocked.
    fn young_insert(&mut self, hash: u64, entry: Entry) -> Option<Generation> {
        let dropped = (self.young.bytes + entry.cost > GENERATION_BUDGET)
            .then(|| std::mem::replace(&mut self.old, std::mem::take(&mut self.young)));
        self.young.bytes += entry.cost;
        self.young.entries.insert(hash, entry);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tenants;
    use crate::config::{Config, ProviderKind, TenantConfig};
    use crate::pattern::BucketPattern;

    fn outcome(key: &str) -> Remembered {
        let config = Config {
            tenants: vec![TenantConfig {
                name: "t".into(),
                buckets: vec![BucketPattern::parse("bkt").unwrap()],
                require_signature: false,
                ..TenantConfig::default()
            }],
            ..Config::default()
        };
        let tenants = Tenants::from_config(&config);
        Remembered {
            route: RouteName::Object,
            obj: ObjectRef::new(ProviderKind::S3, "bkt", key).unwrap(),
            tenant: tenants.for_bucket("bkt").unwrap().clone(),
            verified: Verified { expires: None },
        }
    }

    #[test]
    fn remembers_exact_targets_only() {
        let memo = Memo::default();
        memo.remember("/b/k.png?exp=2000&sig=abc", outcome("k.png"));
        let found = memo.get("/b/k.png?exp=2000&sig=abc").unwrap();
        assert_eq!(found.obj.key, "k.png");
        for other in [
            "/b/k.png?exp=2000&sig=abd",
            "/b/k.png?sig=abc&exp=2000",
            "/b/k.png?exp=2000&sig=abc&",
            "/b/k.png",
        ] {
            assert!(memo.get(other).is_none(), "{other}");
        }
        let long = format!("/b/{}", "k".repeat(MAX_TARGET));
        memo.remember(&long, outcome("long"));
        assert!(memo.get(&long).is_none(), "too long to remember");
    }

    /// Entries are found by hash: another target under the same hash (a collision, made
    /// by hand here) is a miss, in either generation.
    #[test]
    fn a_target_of_the_same_hash_is_a_miss() {
        let memo = Memo::default();
        let (a, b) = ("/bkt/a.png?exp=2000&sig=abc", "/bkt/b.png?exp=2000&sig=abc");
        memo.remember(a, outcome("a.png"));
        assert!(memo.get(a).is_some());
        let hash = memo.hasher.hash_one(a);
        memo.shard(hash)
            .young
            .entries
            .get_mut(&hash)
            .unwrap()
            .target = b.into();
        assert!(memo.get(a).is_none());
        {
            let mut shard = memo.shard(hash);
            shard.old = std::mem::take(&mut shard.young);
        }
        assert!(memo.get(a).is_none());
        assert!(
            memo.shard(hash).old.entries.contains_key(&hash),
            "left where it was"
        );
        memo.remember(a, outcome("a.png"));
        assert_eq!(memo.get(a).unwrap().obj.key, "a.png");
        let shard = memo.shard(hash);
        assert!(shard.young.entries.contains_key(&hash) && shard.old.entries.is_empty());
    }

    #[test]
    fn stays_within_its_budget_and_keeps_what_is_asked_again() {
        let memo = Memo::default();
        let hot = "/b/hot.png?exp=2000&sig=abc";
        memo.remember(hot, outcome("hot.png"));
        let per_entry = memo.bytes();
        assert!(per_entry > ENTRY_OVERHEAD);
        // Ten times what fits, each new target asked once; the hot one asked between.
        let n = 10 * BUDGET / per_entry;
        for i in 0..n {
            let target = format!("/b/{i:08}.png?exp=2000&sig=abc");
            memo.remember(&target, outcome(&format!("{i:08}.png")));
            assert!(memo.bytes() <= BUDGET);
            if i % 64 == 0 {
                assert!(memo.get(hot).is_some(), "the hot target stays (at {i})");
            }
        }
        assert!(memo.bytes() > BUDGET / 4, "the budget is used");
        assert!(
            memo.get("/b/00000001.png?exp=2000&sig=abc").is_none(),
            "one asked once and long ago is gone"
        );
        // Charged once, replaced or not.
        let before = memo.bytes();
        memo.remember(hot, outcome("hot.png"));
        assert_eq!(memo.bytes(), before);
    }
}
