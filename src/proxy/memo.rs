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
//! Bounded in bytes ([`BUDGET`], entries charged their strings and [`ENTRY_OVERHEAD`]),
//! targets longer than [`MAX_TARGET`] are not remembered. Each shard keeps two
//! generations: new entries go into the young one; when it is full, the old one is dropped
//! and the young one becomes old; an entry found in the old one moves back to the young
//! one. Hot targets stay, a flood of new ones only pushes out what was not asked again.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
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
/// the hash table's slot and the allocator's rounding take (about 350 bytes, measured).
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
    hasher: RandomState,
}

#[derive(Default)]
struct Shard {
    young: Generation,
    old: Generation,
}

#[derive(Default)]
struct Generation {
    entries: HashMap<Box<str>, Arc<Remembered>>,
    /// What its entries are charged, together.
    bytes: usize,
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
        let mut shard = self.shard(target);
        if let Some(found) = shard.young.entries.get(target) {
            return Some(found.clone());
        }
        let (target, found) = shard.old.entries.remove_entry(target)?;
        let cost = found.cost(&target);
        shard.old.bytes -= cost;
        let dropped = shard.young_insert(target, found.clone(), cost);
        drop(shard);
        // The dropped generation is freed outside the lock.
        drop(dropped);
        Some(found)
    }

    /// Remembers `outcome` for `target` (unless the target is too long to be worth it).
    pub(super) fn remember(&self, target: &str, outcome: Remembered) {
        if target.len() > MAX_TARGET {
            return;
        }
        let cost = outcome.cost(target);
        let mut shard = self.shard(target);
        if let Some((key, old)) = shard.old.entries.remove_entry(target) {
            shard.old.bytes -= old.cost(&key);
        }
        if let Some(old) = shard.young.entries.remove(target) {
            shard.young.bytes -= old.cost(target);
        }
        let dropped = shard.young_insert(target.into(), Arc::new(outcome), cost);
        drop(shard);
        drop(dropped);
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

    fn shard(&self, target: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(target) as usize & (SHARDS - 1);
        // Nothing panics while holding a shard, and a map is whole between calls anyway.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shard {
    /// Inserts into the young generation, which first becomes the old one if `cost` does not
    /// fit; returns the generation that was dropped, for the caller to free unlocked.
    fn young_insert(
        &mut self,
        target: Box<str>,
        outcome: Arc<Remembered>,
        cost: usize,
    ) -> Option<Generation> {
        let dropped = (self.young.bytes + cost > GENERATION_BUDGET)
            .then(|| std::mem::replace(&mut self.old, std::mem::take(&mut self.young)));
        self.young.bytes += cost;
        self.young.entries.insert(target, outcome);
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
