//! The order in which one key's disk writes land. Writes run side by side (up to
//! `WRITE_SLOTS`), each ending with a rename onto its key's path, so two writes of one
//! key offered moments apart (a fill, then its rewrite after a `304`; or an object, then
//! its changed version) could finish oldest-last and leave the older copy on disk for
//! good. So each offered write takes a [`Ticket`] in the order of offering, and only the
//! newest ticket of its key lands (renames into place and is indexed); an older one that
//! finishes later is dropped. A purge supersedes every ticket of the keys it selects, so
//! a write it overtook cannot bring a purged object back.
//!
//! Landing holds the key's *turn*, a lock taken only on blocking threads: an older
//! write's rename already under way is waited for, never overtaken. The map of keys with
//! writes in flight is locked only for a lookup and never across I/O, so offering on an
//! async worker never waits for a disk. It holds one entry per key with a write in
//! flight, and writes in flight are bounded by the write budget.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::health::lock;
use crate::cache::entry::CacheKey;

/// A key's turn to land: held while a write renames into place (and indexes), or while
/// a purge removes the file.
pub(super) type Turn = Arc<Mutex<()>>;

#[derive(Default)]
pub(super) struct Landings {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Numbers tickets in the order of offering.
    next: u64,
    keys: HashMap<CacheKey, InFlight>,
}

struct InFlight {
    /// The ticket that may land: the newest, unless a purge superseded them all.
    newest: u64,
    /// Tickets alive; the entry goes with the last.
    tickets: usize,
    turn: Turn,
}

impl Landings {
    /// A ticket for a write of `key` offered now: newer than every ticket before it.
    pub(super) fn ticket(self: &Arc<Self>, key: &CacheKey) -> Ticket {
        let mut s = lock(&self.state);
        s.next += 1;
        let seq = s.next;
        let in_flight = s.keys.entry(key.clone()).or_insert_with(|| InFlight {
            newest: seq,
            tickets: 0,
            turn: Turn::default(),
        });
        in_flight.newest = seq;
        in_flight.tickets += 1;
        Ticket {
            landings: self.clone(),
            key: key.clone(),
            seq,
            turn: in_flight.turn.clone(),
        }
    }

    /// Supersedes every ticket of the keys `selected` picks: none of them lands. Returns
    /// those keys with their turns, for the purge to remove their files under (a write
    /// already landing is waited for, then removed).
    pub(super) fn supersede(&self, selected: &dyn Fn(&CacheKey) -> bool) -> Vec<(CacheKey, Turn)> {
        let mut s = lock(&self.state);
        s.next += 1;
        let purge = s.next;
        s.keys
            .iter_mut()
            .filter(|(k, _)| selected(k))
            .map(|(k, in_flight)| {
                in_flight.newest = purge;
                (k.clone(), in_flight.turn.clone())
            })
            .collect()
    }

    fn is_newest(&self, key: &CacheKey, seq: u64) -> bool {
        lock(&self.state)
            .keys
            .get(key)
            .is_some_and(|in_flight| in_flight.newest == seq)
    }
}

/// One offered write's place in its key's order. Blocking: [`Ticket::land`] may wait
/// for another write's rename.
pub(super) struct Ticket {
    landings: Arc<Landings>,
    key: CacheKey,
    seq: u64,
    turn: Turn,
}

impl Ticket {
    pub(super) fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Runs `land` (the rename into place and the indexing) in the key's turn if this is
    /// still its newest ticket; `Ok(None)` if a newer write or a purge superseded it
    /// (the caller removes its temporary file).
    pub(super) fn land<T>(&self, land: impl FnOnce() -> io::Result<T>) -> io::Result<Option<T>> {
        let _turn = lock(&self.turn);
        if !self.landings.is_newest(&self.key, self.seq) {
            return Ok(None);
        }
        land().map(Some)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = lock(&self.landings.state);
        if let Some(in_flight) = s.keys.get_mut(&self.key) {
            in_flight.tickets -= 1;
            if in_flight.tickets == 0 {
                s.keys.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lands(t: &Ticket) -> bool {
        t.land(|| Ok(())).unwrap().is_some()
    }

    #[test]
    fn only_the_newest_ticket_of_a_key_lands_whatever_the_order() {
        let l = Arc::new(Landings::default());
        let k = CacheKey::test("k");
        let (old, new) = (l.ticket(&k), l.ticket(&k));
        let other = l.ticket(&CacheKey::test("other"));
        assert!(lands(&new), "the newest lands first");
        assert!(!lands(&old), "the older one, finishing last, does not");
        assert!(lands(&other), "another key's order is its own");
        drop((old, new, other));
        assert!(lock(&l.state).keys.is_empty(), "nothing kept once written");
        let again = l.ticket(&k);
        assert!(lands(&again), "a later write lands");
    }

    #[test]
    fn a_purge_supersedes_the_writes_in_flight_of_the_keys_it_selects() {
        let l = Arc::new(Landings::default());
        let (cat, dog) = (CacheKey::test("cats/1"), CacheKey::test("dogs/1"));
        let (c, d) = (l.ticket(&cat), l.ticket(&dog));
        let turns = l.supersede(&|k: &CacheKey| k.key.starts_with("cats/"));
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].0, cat);
        assert!(!lands(&c), "purged while in flight");
        assert!(lands(&d));
        let after = l.ticket(&cat);
        assert!(lands(&after), "offered after the purge");
    }
}
