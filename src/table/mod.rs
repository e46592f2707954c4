//! The bounded key table shared by the memory and shm backends.
//!
//! ## Layout
//!
//! The table is split into `shards` independent shards, each guarded by its own
//! lock (so threads on different keys rarely meet). A shard is an array of
//! `sets * WAYS` slots; a slot is `stride` `u64` words:
//!
//! ```text
//! word 0            the key's 64-bit fingerprint (keyhash.rs); 0 = empty slot
//! words 1..stride   the states of the key's rates, back to back (algorithm/)
//! ```
//!
//! so one token-bucket rate takes 16 bytes per slot. Keys themselves are never
//! stored: any key length costs the same.
//!
//! ## Placement: two choices of an 8-way set
//!
//! A fingerprint names one shard and two candidate sets in it. A key lives in
//! one of its two sets; lookups scan both (16 slots at most), and a new key goes
//! to the emptier one. With twice as many slots as `capacity`, two choices keep
//! every set below 8 entries at full capacity with overwhelming probability
//! (the maximum load of balls-into-bins with two choices grows as log log n),
//! so a table that is not full does not evict. Memory is fixed when the table
//! is made: 2 slots per tracked key, 32 bytes per key for one token-bucket rate.
//!
//! ## Capacity and reclaiming
//!
//! At most `capacity` keys are tracked (a counter shared by all shards). A new
//! key takes, in order of preference:
//!   1. an empty slot, if the table is under capacity (expired entries are
//!      kept while there is room: their keys may come back, and a key found
//!      costs less than a key stored again);
//!   2. an expired slot in its sets (an expired state is exactly a fresh key's,
//!      so reusing it loses nothing);
//!   3. at capacity, an empty slot after a bounded reclaim pass over the next
//!      `RECLAIM_SLOTS` slots of the shard (a rotating cursor) frees an expired one;
//!   4. otherwise the live entry, in its two sets (or, if those are empty, among
//!      the slots just scanned, or in the whole shard), that will be fresh
//!      soonest: the cheapest to lose, never a hot key being limited. This is a
//!      *live eviction*, counted. The new key takes over the evicted one's unit
//!      of the table-wide count: the count is never lowered and raised again,
//!      since a thread on another shard could take the unit in between;
//!   5. if the shard holds no key at all, another shard gives one up, and its
//!      unit, the same way; if none can be locked without waiting, the new key
//!      is not stored (an eviction of its own).
//!
//! So the table-wide count only goes up by a bounded compare-and-swap
//! (`reserve_key`), and never exceeds `capacity`, not even for a moment.
//!
//! A key whose check is denied or is a peek is never inserted: an absent key
//! already answers as a fresh one. Every operation touches a bounded number of
//! slots; nothing is allocated after the table is made.
//!
//! ## Slot writes a killed process can leave behind
//!
//! See `slot_writes.rs`: every slot changes in one of three ways, each
//! leaving a slot that is whole at every instant.

mod slot_writes;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::algorithm::{check_all, fresh_at_all, Leases, Limits, Rate, Verdict, MAX_SLOTS};

/// When a slot's state is the same as a fresh key's (and may be dropped):
/// what the table needs to know of the limits a key's words are kept for.
pub trait Expiry {
    fn fresh_at(&self, state: &[u64]) -> u64;

    /// Whether a live entry may be dropped to make room for a new key. A
    /// rate limiter's may: the key only forgets some of its spending (it is
    /// the one closest to being fresh, and it is counted in `evictions`).
    /// A concurrency limiter's may not: its held leases would be forgotten
    /// and more than N requests of that key could run at once; a new key
    /// that finds no room is refused instead.
    fn may_evict_live(&self) -> bool {
        true
    }
}

impl Expiry for [Rate] {
    fn fresh_at(&self, state: &[u64]) -> u64 {
        fresh_at_all(self, state)
    }
}

impl Expiry for Limits {
    fn fresh_at(&self, state: &[u64]) -> u64 {
        Limits::fresh_at(self, state)
    }

    fn may_evict_live(&self) -> bool {
        matches!(self, Limits::Rates(_))
    }
}

impl Expiry for Leases {
    fn fresh_at(&self, state: &[u64]) -> u64 {
        Leases::fresh_at(self, state)
    }

    fn may_evict_live(&self) -> bool {
        false
    }
}

/// Slots per set.
pub(crate) const WAYS: usize = 8;
/// Slots examined by the inline reclaim pass when a full table takes a new key.
pub(crate) const RECLAIM_SLOTS: usize = 64;
/// Most shards a table is split into.
pub(crate) const MAX_SHARDS: usize = 64;
/// Fewest keys per shard (at capacity) before the table is split further.
const KEYS_PER_SHARD: u64 = 256;

/// How a table of a given capacity is cut up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub shards: usize,
    /// Sets per shard.
    pub sets: usize,
    /// Words per slot: 1 fingerprint + the rates' state words.
    pub stride: usize,
}

/// Where a fingerprint lives: its shard and its two candidate sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub shard: usize,
    pub a: usize,
    pub b: usize,
}

impl Geometry {
    pub fn new(capacity: u64, state_words: usize) -> Geometry {
        let mut shards = 1;
        while shards < MAX_SHARDS && capacity / (2 * shards as u64) >= KEYS_PER_SHARD {
            shards *= 2;
        }
        let slots_per_shard = (2 * capacity).div_ceil(shards as u64);
        let sets = slots_per_shard.div_ceil(WAYS as u64).max(1) as usize;
        Geometry { shards, sets, stride: 1 + state_words }
    }

    /// Words in one shard.
    pub fn shard_words(&self) -> usize {
        self.sets * WAYS * self.stride
    }

    /// The slots of set `set` of a shard (a key's are in its two sets).
    fn set_slots(&self, set: usize) -> std::ops::Range<usize> {
        set * WAYS..(set + 1) * WAYS
    }

    /// The words of set `set` within its shard's words: what to prefetch
    /// before taking the shard's lock for a key placed there.
    pub fn set_words(&self, set: usize) -> std::ops::Range<usize> {
        let slots = self.set_slots(set);
        slots.start * self.stride..slots.end * self.stride
    }

    /// Total slots in the table.
    pub fn slots(&self) -> usize {
        self.shards * self.sets * WAYS
    }

    #[inline]
    pub fn place(&self, fp: u64) -> Place {
        let range = |x: u64, n: usize| (((x >> 32) * n as u64) >> 32) as usize;
        let mixed = fp.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Place { shard: range(fp, self.shards), a: range(fp << 32, self.sets), b: range(mixed, self.sets) }
    }
}

/// Per-shard counters, kept under the shard's lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub allowed: u64,
    pub limited: u64,
    pub evictions: u64,
    /// Keys currently stored in this shard.
    pub keys: u64,
    /// Next slot the inline reclaim pass looks at.
    pub cursor: u64,
}

/// How a shard at capacity reaches the others: `elsewhere(f)` calls `f` on
/// other shards that the caller can lock *without waiting* (it holds a shard
/// lock already), one after another from a rotating start, until `f` returns
/// `Some`, and returns that (None if no shard did).
pub type Elsewhere<'e> = dyn FnMut(&mut dyn FnMut(&mut Shard) -> Option<u64>) -> Option<u64> + 'e;

/// A key as the table knows it: its fingerprint and where it may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    pub fp: u64,
    pub place: Place,
}

/// What an operation on a shard runs with besides its key: the time, and
/// the reach into other shards when the table is full.
pub struct At<'a, 'e> {
    pub now: u64,
    pub elsewhere: &'a mut Elsewhere<'e>,
}

/// One locked shard: its slots, its counters, and the table-wide key count.
pub struct Shard<'a> {
    pub words: &'a mut [u64],
    pub stats: &'a mut ShardStats,
    /// Keys stored in the whole table; never above `capacity` (see `insert`).
    pub total_keys: &'a AtomicU64,
    pub capacity: u64,
    pub geometry: Geometry,
}

impl Shard<'_> {
    fn slot(&self, index: usize) -> &[u64] {
        let s = self.geometry.stride;
        &self.words[index * s..(index + 1) * s]
    }

    fn slot_mut(&mut self, index: usize) -> &mut [u64] {
        let s = self.geometry.stride;
        &mut self.words[index * s..(index + 1) * s]
    }

    /// The slot indices of the key's two sets (one set when both choices agree).
    fn candidates(&self, place: Place) -> impl Iterator<Item = usize> {
        let b = if place.b == place.a { 0..0 } else { self.geometry.set_slots(place.b) };
        self.geometry.set_slots(place.a).chain(b)
    }

    /// The slot holding `fp`, if the key is stored.
    #[inline]
    pub fn find(&self, place: Place, fp: u64) -> Option<usize> {
        self.candidates(place).find(|&i| self.words[i * self.geometry.stride] == fp)
    }

    /// Decides a check of `cost` units for `key` at `at.now`, storing the
    /// new state when it is taken, and counts it in the shard's stats.
    ///
    /// `at.elsewhere` is called when the table is at capacity and this shard
    /// has nothing expired nearby (see `Elsewhere`). `before_update(index,
    /// slot)` gets the slot's current words just before the state of a
    /// stored key may be rewritten in place (a check with `cost > 0`; a
    /// denial then writes nothing): the shm backend saves them in its undo
    /// log there, the memory backend passes a no-op (`slot_writes.rs`).
    #[inline]
    pub fn check(
        &mut self,
        rates: &[Rate],
        key: KeyAt,
        cost: u64,
        at: &mut At,
        mut before_update: impl FnMut(usize, &[u64]),
    ) -> Verdict {
        let now = at.now;
        let verdict = match self.find(key.place, key.fp) {
            Some(i) if cost > 0 => {
                slot_writes::rewrite(self.slot_mut(i), i, &mut before_update, |s| check_all(rates, s, now, cost))
            }
            Some(i) => check_all(rates, &mut self.slot_mut(i)[1..], now, cost),
            None => {
                let mut fresh = [0u64; 1 + crate::config::MAX_RATES * crate::algorithm::STATE_WORDS];
                let state = &mut fresh[..self.geometry.stride - 1];
                let verdict = check_all(rates, state, now, cost);
                if verdict.outcome.allowed && cost > 0 {
                    self.store_new(rates, key, state, at);
                }
                verdict
            }
        };
        if verdict.outcome.allowed {
            self.stats.allowed = self.stats.allowed.wrapping_add(1);
        } else {
            self.stats.limited = self.stats.limited.wrapping_add(1);
        }
        verdict
    }

    /// Runs `op` on the state words of `key` (a fresh key's zeros if it is
    /// not stored). `op` returns its result and whether it changed the
    /// words; a changed state of a key not stored is inserted (as a check's
    /// would be), an unchanged one is not. `before_update` is called, as in
    /// `check`, before `op` gets a stored key's words. Counts nothing in
    /// the shard's stats: the caller does. Also returns false when a changed
    /// state of a new key found no room and was not stored.
    pub fn update<R>(
        &mut self,
        limits: &(impl Expiry + ?Sized),
        key: KeyAt,
        at: &mut At,
        mut before_update: impl FnMut(usize, &[u64]),
        op: impl FnOnce(&mut [u64]) -> (R, bool),
    ) -> (R, bool) {
        if let Some(i) = self.find(key.place, key.fp) {
            return (slot_writes::rewrite(self.slot_mut(i), i, &mut before_update, |s| op(s).0), true);
        }
        let mut fresh = [0u64; 1 + MAX_SLOTS];
        let state = &mut fresh[..self.geometry.stride - 1];
        let (result, changed) = op(state);
        (result, !changed || self.store_new(limits, key, state, at))
    }

    /// Stores the state of a key not stored yet, in the slot `insert`
    /// picks (nowhere if it picks none, see there).
    /// Whether it was stored.
    #[inline]
    fn store_new(&mut self, limits: &(impl Expiry + ?Sized), key: KeyAt, state: &[u64], at: &mut At) -> bool {
        match self.insert(limits, key.place, at.now, at.elsewhere) {
            Some(i) => {
                slot_writes::fill(self.slot_mut(i), key.fp, state);
                true
            }
            None => false,
        }
    }

    /// Takes one of `key`'s lease places (`Leases::acquire`), counted in the
    /// shard's stats as a check is. A lease operation writes one aligned
    /// word in place, so it needs no undo record (`slot_writes.rs`).
    pub fn acquire(&mut self, leases: &Leases, key: KeyAt, at: &mut At) -> (crate::algorithm::Outcome, u64) {
        let now = at.now;
        let ((mut outcome, mut lease), stored) = self.update(
            leases,
            key,
            at,
            |_, _| {},
            |words| {
                let (outcome, lease) = leases.acquire(words, now, key.fp);
                ((outcome, lease), lease != 0)
            },
        );
        if !stored {
            // A full table of keys holding leases: the lease would be
            // forgotten at once, so it is refused. Every lease in the table
            // ends within one lease length (unless renewed).
            outcome = crate::algorithm::Outcome { allowed: false, remaining: 0, retry_after: leases.lease, ..outcome };
            lease = 0;
        }
        match outcome.allowed {
            true => self.stats.allowed = self.stats.allowed.wrapping_add(1),
            false => self.stats.limited = self.stats.limited.wrapping_add(1),
        }
        (outcome, lease)
    }

    /// Extends `lease` of `key` (`Leases::renew`): whether it was held.
    pub fn renew(&mut self, leases: &Leases, key: KeyAt, at: &mut At, lease: u64) -> bool {
        let now = at.now;
        self.update(
            leases,
            key,
            at,
            |_, _| {},
            |words| {
                let held = leases.renew(words, now, lease, key.fp);
                (held, held)
            },
        )
        .0
    }

    /// Frees `lease` of `key` (`Leases::release`): whether it was held.
    pub fn release(&mut self, leases: &Leases, key: KeyAt, at: &mut At, lease: u64) -> bool {
        let now = at.now;
        self.update(leases, key, at, |_, _| {}, |words| leases.release(words, now, lease, key.fp)).0
    }

    /// Forgets the key `fp`; true if it was stored.
    pub fn remove(&mut self, place: Place, fp: u64) -> bool {
        match self.find(place, fp) {
            Some(i) => {
                self.clear(i);
                true
            }
            None => false,
        }
    }

    /// Drops every expired entry of the shard; returns how many.
    pub fn sweep(&mut self, rates: &(impl Expiry + ?Sized), now: u64) -> u64 {
        let slots = self.geometry.sets * WAYS;
        self.reclaim(rates, now, 0, slots).0
    }

    /// Empties a slot: the fingerprint first, so that the slot is either the
    /// whole old entry or empty at every instant.
    #[inline]
    fn empty(&mut self, index: usize) {
        slot_writes::empty(self.slot_mut(index));
    }

    fn clear(&mut self, index: usize) {
        self.empty(index);
        // Saturating: a count that is wrong (shared memory overwritten) must
        // not wrap to 2^64 - 1 (the total would then refuse every new key),
        // nor panic a debug build in the middle of a write.
        self.stats.keys = self.stats.keys.saturating_sub(1);
        let _ = self.total_keys.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| k.checked_sub(1));
    }

    /// One bounded reclaim pass: clears the expired entries among the next
    /// `RECLAIM_SLOTS` slots at the shard's rotating cursor. Returns how many
    /// it cleared and the live slot seen that is fresh soonest.
    pub fn reclaim_step(&mut self, rates: &(impl Expiry + ?Sized), now: u64) -> (u64, Option<usize>) {
        let slots = self.geometry.sets * WAYS;
        let start = (self.stats.cursor % slots as u64) as usize;
        self.stats.cursor = ((start + RECLAIM_SLOTS) % slots) as u64;
        self.reclaim(rates, now, start, RECLAIM_SLOTS)
    }

    /// Clears expired entries among `len` slots from `start` (wrapping); returns
    /// how many it cleared and the live slot seen that is fresh soonest.
    fn reclaim(&mut self, rates: &(impl Expiry + ?Sized), now: u64, start: usize, len: usize) -> (u64, Option<usize>) {
        let slots = self.geometry.sets * WAYS;
        let (mut cleared, mut victim) = (0, None::<(u64, usize)>);
        for k in 0..len.min(slots) {
            let i = (start + k) % slots;
            if self.slot(i)[0] == 0 {
                continue;
            }
            let fresh_at = rates.fresh_at(&self.slot(i)[1..]);
            if fresh_at <= now {
                self.clear(i);
                cleared += 1;
            } else if victim.is_none_or(|(f, _)| fresh_at < f) {
                victim = Some((fresh_at, i));
            }
        }
        (cleared, victim.map(|(_, i)| i))
    }

    /// Takes one unit of the table-wide key count, if the table is under capacity.
    /// This is the only way the count goes up, so it never exceeds capacity.
    fn reserve_key(&self) -> bool {
        let cap = self.capacity;
        // `then`, not `then_some`: `k + 1` must not be computed for a count at
        // u64::MAX (a damaged shm region), where it would overflow.
        self.total_keys.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| (k < cap).then(|| k + 1)).is_ok()
    }

    /// The entry among `len` slots from `start` (wrapping) that is cheapest to
    /// lose: the first expired one (`true`), else the live one fresh soonest.
    fn cheapest(&self, rates: &(impl Expiry + ?Sized), now: u64, start: usize, len: usize) -> Option<(usize, bool)> {
        let slots = self.geometry.sets * WAYS;
        let mut victim = None::<(u64, usize)>;
        for k in 0..len.min(slots) {
            let i = (start + k) % slots;
            if self.slot(i)[0] == 0 {
                continue;
            }
            let fresh_at = rates.fresh_at(&self.slot(i)[1..]);
            if fresh_at <= now {
                return Some((i, true));
            }
            if victim.is_none_or(|(f, _)| fresh_at < f) {
                victim = Some((fresh_at, i));
            }
        }
        victim.map(|(_, i)| (i, false))
    }

    /// Empties one entry of this shard for a new key of *another* shard, which
    /// takes over its unit of the table-wide count (so the count is not
    /// touched, and no other thread can take that unit meanwhile): the
    /// cheapest entry among the next `RECLAIM_SLOTS` slots at the cursor, or
    /// in the whole shard if those are empty. A live one is counted as an
    /// eviction. False if the shard holds no key.
    pub fn give_up_key(&mut self, rates: &(impl Expiry + ?Sized), now: u64) -> bool {
        let slots = self.geometry.sets * WAYS;
        let start = (self.stats.cursor % slots as u64) as usize;
        self.stats.cursor = ((start + RECLAIM_SLOTS) % slots) as u64;
        let pick = self.cheapest(rates, now, start, RECLAIM_SLOTS).or_else(|| self.cheapest(rates, now, 0, slots));
        let Some((i, expired)) = pick else { return false };
        if !expired && !rates.may_evict_live() {
            return false;
        }
        self.empty(i);
        self.stats.keys = self.stats.keys.saturating_sub(1);
        if !expired {
            self.stats.evictions = self.stats.evictions.wrapping_add(1);
        }
        true
    }

    /// Picks the slot for a new key (see the module docs) and leaves it empty.
    /// None, in a case that needs a full table whose keys all lie in other
    /// shards, all busy: the new key is then not stored (counted as evicted).
    ///
    /// The table-wide count never goes above capacity, even for a moment: a
    /// unit freed by clearing an entry may be taken at once by a thread
    /// working on another shard, so an eviction never clears-then-re-adds.
    /// The evicted entry's unit passes to the new key without leaving the
    /// locks held here.
    fn insert(
        &mut self,
        rates: &(impl Expiry + ?Sized),
        place: Place,
        now: u64,
        elsewhere: &mut Elsewhere,
    ) -> Option<usize> {
        let stride = self.geometry.stride;
        let (mut empty_a, mut empty_b) = ((0, None), (0, None));
        let mut expired = None;
        let mut victim: Option<(u64, usize)> = None;
        for i in self.candidates(place) {
            let in_a = i / WAYS == place.a;
            if self.words[i * stride] == 0 {
                let e = if in_a { &mut empty_a } else { &mut empty_b };
                e.0 += 1;
                e.1 = e.1.or(Some(i));
                continue;
            }
            let fresh_at = rates.fresh_at(&self.slot(i)[1..]);
            if fresh_at <= now {
                expired = expired.or(Some(i));
            } else if victim.is_none_or(|(f, _)| fresh_at < f) {
                victim = Some((fresh_at, i));
            }
        }
        let empty = if empty_b.0 > empty_a.0 { empty_b.1 } else { empty_a.1.or(empty_b.1) };
        // 1. Room under capacity: an empty slot. (Expired entries are kept
        //    while there is room: their keys may come back, and a key found
        //    costs a check less than a key stored again. Replacing them first
        //    made a table of keys that expire between their checks churn,
        //    each new key pushing out another that would soon return.)
        if let Some(i) = empty {
            if self.reserve_key() {
                self.stats.keys = self.stats.keys.saturating_add(1);
                return Some(i);
            }
        }
        // 2. An expired entry: replacing it loses nothing and keeps the count.
        if let Some(i) = expired {
            self.empty(i);
            return Some(i);
        }
        let evict = rates.may_evict_live();
        let Some(i) = empty else {
            // 4. Both sets full of live entries: the new key takes the place
            //    (and the count) of the one fresh soonest, if live entries
            //    may go (`Expiry::may_evict_live`); else it is refused.
            if !evict {
                return None;
            }
            let (_, v) = victim.expect("a full set holds live entries");
            self.empty(v);
            self.stats.evictions = self.stats.evictions.wrapping_add(1);
            return Some(v);
        };
        // 3. At capacity: reclaim expired entries further along this shard,
        //    then in another shard (bounded passes), then, if no live entry
        //    was seen here either (a nearly empty shard), in the whole shard.
        //    (What they clear may be taken at once by another shard's insert.)
        let (mut cleared, far_victim) = self.reclaim_step(rates, now);
        if cleared == 0 {
            cleared = elsewhere(&mut |s| Some(s.reclaim_step(rates, now).0)).unwrap_or(0);
        }
        if cleared > 0 && self.reserve_key() {
            self.stats.keys = self.stats.keys.saturating_add(1);
            return Some(i);
        }
        let mut v = victim.map(|(_, v)| v).or(far_victim);
        if v.is_none() {
            let slots = self.geometry.sets * WAYS;
            let (cleared, whole_victim) = self.reclaim(rates, now, 0, slots);
            if cleared > 0 && self.reserve_key() {
                self.stats.keys = self.stats.keys.saturating_add(1);
                return Some(i);
            }
            v = whole_victim;
        }
        // 4. Evict the live entry that will be fresh soonest; the new key
        //    takes over its unit of the count, in this shard. (Leases:
        //    refused instead, here and below, see `may_evict_live`.)
        if !evict {
            return None;
        }
        if let Some(v) = v {
            self.empty(v);
            self.stats.evictions = self.stats.evictions.wrapping_add(1);
            return Some(i);
        }
        // 5. This shard holds no key at all, so every key is in another shard:
        //    one of them gives up an entry and its unit to the new key.
        if elsewhere(&mut |s| s.give_up_key(rates, now).then_some(1)).is_some() {
            self.stats.keys = self.stats.keys.saturating_add(1);
            return Some(i);
        }
        // 6. None could be locked without waiting: rather than go over
        //    capacity, the new key is not stored (its check is answered; it is
        //    the entry dropped for room). A full table with not one key in
        //    this shard, with 256 keys per shard, needs astronomical luck.
        self.stats.evictions = self.stats.evictions.wrapping_add(1);
        None
    }
}

#[cfg(test)]
mod tests;
