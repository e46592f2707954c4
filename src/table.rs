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
//!   1. an expired slot in its sets (an expired state is exactly a fresh key's,
//!      so reusing it loses nothing);
//!   2. an empty slot, if the table is under capacity;
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
//! The shm backend keeps this table in memory shared by processes, any of
//! which may be killed at any instruction. So every slot changes in one of
//! three ways, each leaving a slot that is whole at every instant:
//!   - emptied: the fingerprint is zeroed first, then the state (a slot with
//!     fingerprint 0 is empty whatever its other words hold);
//!   - filled: the state is written first, then the fingerprint;
//!   - updated in place (a stored key's check): `check` calls its
//!     `before_update` hook first, so the caller can save the old state in an
//!     undo log (the memory backend passes a no-op).
//!
//! Compiler fences keep those stores in that order; they cost nothing at run
//! time. The key counts (`ShardStats::keys`, the table-wide count) are not
//! updated atomically with the slots: a survivor recounts them.

use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};

use crate::algorithm::{check_all, fresh_at_all, Leases, Limits, Rate, Verdict, MAX_SLOTS};

/// When a slot's state is the same as a fresh key's (and may be dropped):
/// what the table needs to know of the limits a key's words are kept for.
pub trait Expiry {
    fn fresh_at(&self, state: &[u64]) -> u64;
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
}

impl Expiry for Leases {
    fn fresh_at(&self, state: &[u64]) -> u64 {
        Leases::fresh_at(self, state)
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
        let b = if place.b == place.a { 0..0 } else { place.b * WAYS..(place.b + 1) * WAYS };
        (place.a * WAYS..(place.a + 1) * WAYS).chain(b)
    }

    /// The slot holding `fp`, if the key is stored.
    #[inline]
    pub fn find(&self, place: Place, fp: u64) -> Option<usize> {
        self.candidates(place).find(|&i| self.words[i * self.geometry.stride] == fp)
    }

    /// Decides a check of `cost` units for the key `fp` at `now`, storing the
    /// new state when it is taken, and counts it in the shard's stats.
    ///
    /// `elsewhere` is called when the table is at capacity and this shard has
    /// nothing expired nearby (see `Elsewhere`).
    ///
    /// `before_update(index, slot)` gets the slot's current words just before
    /// the state of a stored key may be rewritten in place (a check with
    /// `cost > 0`; a denial then writes nothing): the shm backend saves them
    /// in its undo log there, the memory backend passes a no-op.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn check(
        &mut self,
        rates: &[Rate],
        place: Place,
        fp: u64,
        now: u64,
        cost: u64,
        elsewhere: &mut Elsewhere,
        mut before_update: impl FnMut(usize, &[u64]),
    ) -> Verdict {
        let verdict = match self.find(place, fp) {
            Some(i) => {
                if cost > 0 {
                    before_update(i, self.slot(i));
                    compiler_fence(Ordering::SeqCst);
                }
                check_all(rates, &mut self.slot_mut(i)[1..], now, cost)
            }
            None => {
                let mut fresh = [0u64; 1 + crate::config::MAX_RATES * crate::algorithm::STATE_WORDS];
                let state = &mut fresh[..self.geometry.stride - 1];
                let verdict = check_all(rates, state, now, cost);
                if verdict.outcome.allowed && cost > 0 {
                    if let Some(i) = self.insert(rates, place, now, elsewhere) {
                        let slot = self.slot_mut(i);
                        slot[1..].copy_from_slice(state);
                        // Last: a slot is live only once its state is whole.
                        compiler_fence(Ordering::SeqCst);
                        slot[0] = fp;
                    }
                }
                verdict
            }
        };
        if verdict.outcome.allowed {
            self.stats.allowed += 1;
        } else {
            self.stats.limited += 1;
        }
        verdict
    }

    /// Runs `op` on the state words of the key `fp` (a fresh key's zeros if
    /// it is not stored). `op` returns its result and whether it changed the
    /// words; a changed state of a key not stored is inserted (as a check's
    /// would be), an unchanged one is not. `before_update` is called, as in
    /// `check`, before `op` gets a stored key's words. Counts nothing in
    /// the shard's stats: the caller does.
    #[allow(clippy::too_many_arguments)]
    pub fn update<R>(
        &mut self,
        limits: &(impl Expiry + ?Sized),
        place: Place,
        fp: u64,
        now: u64,
        elsewhere: &mut Elsewhere,
        mut before_update: impl FnMut(usize, &[u64]),
        op: impl FnOnce(&mut [u64]) -> (R, bool),
    ) -> R {
        if let Some(i) = self.find(place, fp) {
            before_update(i, self.slot(i));
            compiler_fence(Ordering::SeqCst);
            return op(&mut self.slot_mut(i)[1..]).0;
        }
        let mut fresh = [0u64; 1 + MAX_SLOTS];
        let state = &mut fresh[..self.geometry.stride - 1];
        let (result, changed) = op(state);
        if changed {
            if let Some(i) = self.insert(limits, place, now, elsewhere) {
                let slot = self.slot_mut(i);
                slot[1..].copy_from_slice(state);
                // Last: a slot is live only once its state is whole.
                compiler_fence(Ordering::SeqCst);
                slot[0] = fp;
            }
        }
        result
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
        let slot = self.slot_mut(index);
        slot[0] = 0;
        compiler_fence(Ordering::SeqCst);
        slot[1..].fill(0);
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
        self.empty(i);
        self.stats.keys = self.stats.keys.saturating_sub(1);
        if !expired {
            self.stats.evictions += 1;
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
        // 1. An expired entry: replacing it loses nothing and keeps the count.
        if let Some(i) = expired {
            self.empty(i);
            return Some(i);
        }
        let empty = if empty_b.0 > empty_a.0 { empty_b.1 } else { empty_a.1.or(empty_b.1) };
        let Some(i) = empty else {
            // 4. Both sets full of live entries: the new key takes the place
            //    (and the count) of the one fresh soonest.
            let (_, v) = victim.expect("a full set holds live entries");
            self.empty(v);
            self.stats.evictions += 1;
            return Some(v);
        };
        // 2. Room under capacity.
        if self.reserve_key() {
            self.stats.keys = self.stats.keys.saturating_add(1);
            return Some(i);
        }
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
        //    takes over its unit of the count, in this shard.
        if let Some(v) = v {
            self.empty(v);
            self.stats.evictions += 1;
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
        self.stats.evictions += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;
    use crate::keyhash::Seed;

    struct Table {
        geometry: Geometry,
        words: Vec<Vec<u64>>,
        stats: Vec<ShardStats>,
        total: AtomicU64,
        capacity: u64,
        rates: Vec<Rate>,
        seed: Seed,
    }

    impl Table {
        fn new(capacity: u64, rate: Rate) -> Table {
            let geometry = Geometry::new(capacity, rate.words());
            Table {
                geometry,
                words: vec![vec![0; geometry.shard_words()]; geometry.shards],
                stats: vec![ShardStats::default(); geometry.shards],
                total: AtomicU64::new(0),
                capacity,
                rates: vec![rate],
                seed: Seed([7, 9]),
            }
        }
        fn with<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Shard, Place, u64, &[Rate]) -> R) -> R {
            let fp = self.seed.fingerprint(key);
            let place = self.geometry.place(fp);
            let mut shard = Shard {
                words: &mut self.words[place.shard],
                stats: &mut self.stats[place.shard],
                total_keys: &self.total,
                capacity: self.capacity,
                geometry: self.geometry,
            };
            f(&mut shard, place, fp, &self.rates)
        }
        fn check(&mut self, key: &[u8], now: u64, cost: u64) -> Verdict {
            let fp = self.seed.fingerprint(key);
            let place = self.geometry.place(fp);
            let (me, geometry, capacity) = (place.shard, self.geometry, self.capacity);
            let (words, stats, total, rates) = (&mut self.words, &mut self.stats, &self.total, &self.rates);
            // Split the shards so the closure can reach the others.
            let (w_lo, w_rest) = words.split_at_mut(me);
            let (w_me, w_hi) = w_rest.split_first_mut().unwrap();
            let (s_lo, s_rest) = stats.split_at_mut(me);
            let (s_me, s_hi) = s_rest.split_first_mut().unwrap();
            let mut others: Vec<(&mut Vec<u64>, &mut ShardStats)> =
                w_hi.iter_mut().zip(s_hi.iter_mut()).chain(w_lo.iter_mut().zip(s_lo.iter_mut())).collect();
            let mut elsewhere = |f: &mut dyn FnMut(&mut Shard) -> Option<u64>| -> Option<u64> {
                for (w, s) in others.iter_mut() {
                    let mut shard = Shard { words: w, stats: s, total_keys: total, capacity, geometry };
                    if let Some(r) = f(&mut shard) {
                        return Some(r);
                    }
                }
                None
            };
            let mut shard = Shard { words: w_me, stats: s_me, total_keys: total, capacity, geometry };
            shard.check(rates, place, fp, now, cost, &mut elsewhere, |_, _| {})
        }
        fn sum(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
            self.stats.iter().map(f).sum()
        }
        fn sweep(&mut self, now: u64) -> u64 {
            let mut n = 0;
            for i in 0..self.geometry.shards {
                let mut shard = Shard {
                    words: &mut self.words[i],
                    stats: &mut self.stats[i],
                    total_keys: &self.total,
                    capacity: self.capacity,
                    geometry: self.geometry,
                };
                n += shard.sweep(self.rates.as_slice(), now);
            }
            n
        }
    }

    fn bucket(limit: u64, period: u64) -> Rate {
        Rate::new(Algorithm::TokenBucket, limit, period, limit)
    }

    #[test]
    fn geometry_scales_with_capacity() {
        let g = Geometry::new(1, 1);
        assert_eq!((g.shards, g.sets, g.stride), (1, 1, 2));
        let g = Geometry::new(100_000, 1);
        assert_eq!(g.shards, 64);
        assert!(g.slots() >= 200_000 && g.slots() < 200_000 + 64 * WAYS);
        for fp in [1u64, u64::MAX, 0x1234_5678_9abc_def1] {
            let p = g.place(fp);
            assert!(p.shard < g.shards && p.a < g.sets && p.b < g.sets);
        }
    }

    #[test]
    fn fills_to_capacity_without_evicting_then_bounds_keys() {
        for capacity in [1u64, 7, 100, 5000, 50_000] {
            let mut t = Table::new(capacity, bucket(1, 1_000_000));
            for k in 0..capacity {
                assert!(t.check(format!("key-{k}").as_bytes(), 10, 1).outcome.allowed);
            }
            assert_eq!(t.total.load(Ordering::Relaxed), capacity);
            assert_eq!(t.sum(|s| s.evictions), 0, "capacity {capacity}");
            for k in 0..capacity {
                let v = t.check(format!("key-{k}").as_bytes(), 10, 1);
                assert!(!v.outcome.allowed, "key-{k} must still be remembered");
            }
            for k in 0..capacity {
                t.check(format!("new-{k}").as_bytes(), 20, 1);
            }
            assert!(t.total.load(Ordering::Relaxed) <= capacity);
            assert_eq!(t.sum(|s| s.keys), t.total.load(Ordering::Relaxed));
            assert_eq!(t.sum(|s| s.evictions), capacity, "each new key evicted a live one");
        }
    }

    #[test]
    fn expired_entries_go_before_live_ones() {
        let mut t = Table::new(1000, bucket(1, 1000));
        for k in 0..1000 {
            t.check(format!("old-{k}").as_bytes(), 0, 1); // fresh again at 1000
        }
        // At 2000 every old key has expired: a flood of new keys reclaims them
        // and nothing live is evicted.
        for k in 0..1000 {
            assert!(t.check(format!("new-{k}").as_bytes(), 2000, 1).outcome.allowed);
        }
        assert_eq!(t.sum(|s| s.evictions), 0);
        assert!(t.total.load(Ordering::Relaxed) <= 1000);
    }

    #[test]
    fn hot_key_survives_a_flood() {
        // One unit every 1e9 ticks, bucket of 10.
        let mut t = Table::new(1000, bucket(10, 10_000_000_000));
        for k in 0..999 {
            t.check(format!("cold-{k}").as_bytes(), 0, 1); // fresh again at 1e9
        }
        // The hot key has spent its whole bucket: it is fresh only at 1.05e10,
        // so it is the last entry a flood of new keys may push out.
        assert!(t.check(b"hot", 500_000_000, 10).outcome.allowed);
        for k in 0..5000 {
            t.check(format!("flood-{k}").as_bytes(), 600_000_000 + k, 1);
        }
        assert!(t.sum(|s| s.evictions) > 0);
        assert!(!t.check(b"hot", 700_000_000, 1).outcome.allowed, "the hot key was kept");
    }

    #[test]
    fn sweep_and_remove() {
        let mut t = Table::new(500, bucket(10, 100));
        for k in 0..300 {
            t.check(format!("k{k}").as_bytes(), 1000, 1);
        }
        assert_eq!(t.sweep(1005), 0, "nothing has expired yet");
        assert!(t.with(b"k7", |s, p, fp, _| s.remove(p, fp)));
        assert!(!t.with(b"k7", |s, p, fp, _| s.remove(p, fp)));
        assert_eq!(t.sweep(1010), 299);
        assert_eq!(t.total.load(Ordering::Relaxed), 0);
        assert_eq!(t.sum(|s| s.keys), 0);
    }

    #[test]
    fn denied_and_peek_checks_of_new_keys_store_nothing() {
        let mut t = Table::new(10, bucket(2, 100));
        assert!(t.check(b"a", 0, 0).outcome.allowed);
        assert!(!t.check(b"b", 0, 3).outcome.allowed);
        assert_eq!(t.total.load(Ordering::Relaxed), 0);
        assert_eq!((t.sum(|s| s.allowed), t.sum(|s| s.limited)), (1, 1));
    }

    /// Keys of `t` that land in shard `shard`, as many as asked.
    fn keys_in(t: &Table, shard: usize, n: usize, tag: &str) -> Vec<Vec<u8>> {
        (0..)
            .map(|k| format!("{tag}-{k}").into_bytes())
            .filter(|k| t.geometry.place(t.seed.fingerprint(k)).shard == shard)
            .take(n)
            .collect()
    }

    fn stored(t: &Table) -> u64 {
        let stride = t.geometry.stride;
        t.words.iter().map(|w| w.chunks_exact(stride).filter(|s| s[0] != 0).count() as u64).sum()
    }

    /// A full table whose keys all lie in other shards: a new key in the empty
    /// shard takes a unit from another shard's eviction, never going over.
    #[test]
    fn a_new_key_in_an_empty_shard_of_a_full_table_stays_within_capacity() {
        let mut t = Table::new(600, bucket(1, 1_000_000));
        assert_eq!(t.geometry.shards, 2);
        // A smaller limit on the same geometry, so that one shard holds it all.
        let capacity = 250;
        t.capacity = capacity;
        for k in keys_in(&t, 1, capacity as usize, "far") {
            assert!(t.check(&k, 10, 1).outcome.allowed);
        }
        assert_eq!(t.total.load(Ordering::Relaxed), capacity);
        assert_eq!(t.sum(|s| s.evictions), 0);
        let near = keys_in(&t, 0, 2, "near");
        // The first takes the place of a key of shard 1, the second that of the first.
        for (n, k) in near.iter().enumerate() {
            assert!(t.check(k, 20 + n as u64, 1).outcome.allowed);
            assert_eq!(t.total.load(Ordering::Relaxed), capacity);
            assert_eq!(stored(&t), capacity);
            assert_eq!(t.sum(|s| s.keys), capacity);
            assert_eq!((t.stats[0].keys, t.stats[1].keys), (1, capacity - 1));
            assert_eq!((t.stats[0].evictions, t.stats[1].evictions), (n as u64, 1));
        }
        assert!(!t.check(&near[1], 30, 1).outcome.allowed, "the new key is remembered");
    }

    /// If no other shard can give a key up, the new key is answered but not
    /// stored, and counted as evicted: the count never goes over capacity.
    #[test]
    fn a_new_key_with_no_room_anywhere_is_not_stored() {
        let (capacity, g) = (600, Geometry::new(600, 1));
        let mut words = vec![0u64; g.shard_words()];
        let mut stats = ShardStats::default();
        let total = AtomicU64::new(capacity); // all in shards that are busy
        let mut shard = Shard { words: &mut words, stats: &mut stats, total_keys: &total, capacity, geometry: g };
        let rates = [bucket(1, 1_000_000)];
        let fp = Seed([1, 2]).fingerprint(b"k");
        let place = Place { shard: 0, ..g.place(fp) };
        let mut busy = |_: &mut dyn FnMut(&mut Shard) -> Option<u64>| None;
        assert!(shard.check(&rates, place, fp, 10, 1, &mut busy, |_, _| {}).outcome.allowed);
        assert_eq!(shard.find(place, fp), None);
        assert_eq!((shard.stats.keys, shard.stats.evictions), (0, 1));
        assert_eq!(total.load(Ordering::Relaxed), capacity);
    }

    /// Counts that are already wrong (a shared region overwritten) neither
    /// wrap nor panic when a key is removed.
    /// A table-wide count at u64::MAX (a damaged shm region) refuses new
    /// room rather than overflowing.
    #[test]
    fn a_total_count_at_the_top_refuses_room_without_overflow() {
        let mut t = Table::new(100, bucket(1, 1_000_000));
        t.total.store(u64::MAX, Ordering::Relaxed);
        let v = t.check(b"new key", 0, 1);
        assert!(v.outcome.allowed);
        assert_eq!(t.total.load(Ordering::Relaxed), u64::MAX, "no unit was taken");
    }

    #[test]
    fn removing_with_counts_at_zero_saturates() {
        let mut t = Table::new(100, bucket(1, 1_000_000));
        t.check(b"k", 10, 1);
        t.total.store(0, Ordering::Relaxed);
        t.stats.iter_mut().for_each(|s| s.keys = 0);
        assert!(t.with(b"k", |s, p, fp, _| s.remove(p, fp)));
        assert_eq!((t.total.load(Ordering::Relaxed), t.sum(|s| s.keys)), (0, 0));
    }

    /// Room freed in another shard can be taken by another thread's new key
    /// before this insert reserves it; the insert then evicts here, and the
    /// count still never exceeds capacity.
    #[test]
    fn room_taken_by_another_shard_meanwhile_is_not_overdrawn() {
        let (g, seed, rates) = (Geometry::new(600, 1), Seed([7, 9]), [bucket(1, 1000)]);
        assert_eq!(g.shards, 2);
        let place = |k: &String| g.place(seed.fingerprint(k.as_bytes()));
        let keys = |n: usize, want: &dyn Fn(Place) -> bool| -> Vec<String> {
            (0..).map(|i| format!("k{i}")).filter(|k| want(place(k))).take(n).collect()
        };
        // Sets the first bounded reclaim pass of a shard looks at.
        let first_pass = RECLAIM_SLOTS / WAYS;
        let outside = |p: Place| p.a >= first_pass && p.b >= first_pass;
        let new = &keys(1, &|p| p.shard == 0 && outside(p))[0];
        let n = place(new);
        let apart = |p: Place| ![n.a, n.b].contains(&p.a) && ![n.a, n.b].contains(&p.b);
        let live = keys(3, &|p| p.shard == 0 && outside(p) && apart(p));
        let old = &keys(1, &|p| p.shard == 1 && p.a < first_pass && p.b < first_pass)[0];

        let capacity = 4;
        let total = AtomicU64::new(0);
        let (mut words, mut stats) = (vec![vec![0u64; g.shard_words()]; 2], [ShardStats::default(); 2]);
        let mut none = |_: &mut dyn FnMut(&mut Shard) -> Option<u64>| None;
        for (key, now) in [(old, 0)].into_iter().chain(live.iter().map(|k| (k, 5000))) {
            let (fp, p) = (seed.fingerprint(key.as_bytes()), place(key));
            let mut shard = Shard {
                words: &mut words[p.shard],
                stats: &mut stats[p.shard],
                total_keys: &total,
                capacity,
                geometry: g,
            };
            assert!(shard.check(&rates, p, fp, now, 1, &mut none, |_, _| {}).outcome.allowed);
        }
        assert_eq!(total.load(Ordering::Relaxed), capacity);

        // At 5500 `old` has expired, the others have not.
        let (w0, w1) = words.split_at_mut(1);
        let (s0, s1) = stats.split_at_mut(1);
        let mut stolen = 0;
        let mut stealing = |f: &mut dyn FnMut(&mut Shard) -> Option<u64>| {
            let mut other = Shard { words: &mut w1[0], stats: &mut s1[0], total_keys: &total, capacity, geometry: g };
            let r = f(&mut other);
            if r.is_some_and(|freed| freed > 0) {
                // Meanwhile a new key of a third shard takes the room.
                total.fetch_add(1, Ordering::Relaxed);
                stolen += 1;
            }
            r
        };
        let mut shard = Shard { words: &mut w0[0], stats: &mut s0[0], total_keys: &total, capacity, geometry: g };
        let fp = seed.fingerprint(new.as_bytes());
        assert!(shard.check(&rates, n, fp, 5500, 1, &mut stealing, |_, _| {}).outcome.allowed);
        assert_eq!(stolen, 1);
        assert!(shard.find(n, fp).is_some(), "the new key is stored");
        assert_eq!((shard.stats.keys, shard.stats.evictions), (3, 1), "in place of a live key of its shard");
        assert_eq!(total.load(Ordering::Relaxed), capacity);
    }
}
