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
//!      the slots just scanned), that will be fresh soonest: the cheapest to
//!      lose, never a hot key being limited. This is a *live eviction*, counted.
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

use crate::algorithm::{check_all, fresh_at_all, Rate, Verdict};

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

/// One locked shard: its slots, its counters, and the table-wide key count.
pub struct Shard<'a> {
    pub words: &'a mut [u64],
    pub stats: &'a mut ShardStats,
    /// Keys stored in the whole table; never above `capacity` (but see `insert`).
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
    /// nothing expired nearby: it should run `reclaim_step` on another shard
    /// it can lock without waiting, and return how many entries it freed.
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
        elsewhere: &mut dyn FnMut(u64) -> u64,
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
                    let i = self.insert(rates, place, now, elsewhere);
                    let slot = self.slot_mut(i);
                    slot[1..].copy_from_slice(state);
                    // Last: a slot is live only once its state is whole.
                    compiler_fence(Ordering::SeqCst);
                    slot[0] = fp;
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
    pub fn sweep(&mut self, rates: &[Rate], now: u64) -> u64 {
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
        // Saturating: in a damaged shm region a slot may hold a key that
        // was never counted (the count is mended at the next recount).
        self.stats.keys = self.stats.keys.saturating_sub(1);
        self.total_keys.fetch_sub(1, Ordering::Relaxed);
    }

    /// One bounded reclaim pass: clears the expired entries among the next
    /// `RECLAIM_SLOTS` slots at the shard's rotating cursor. Returns how many
    /// it cleared and the live slot seen that is fresh soonest.
    pub fn reclaim_step(&mut self, rates: &[Rate], now: u64) -> (u64, Option<usize>) {
        let slots = self.geometry.sets * WAYS;
        let start = (self.stats.cursor % slots as u64) as usize;
        self.stats.cursor = ((start + RECLAIM_SLOTS) % slots) as u64;
        self.reclaim(rates, now, start, RECLAIM_SLOTS)
    }

    /// Clears expired entries among `len` slots from `start` (wrapping); returns
    /// how many it cleared and the live slot seen that is fresh soonest.
    fn reclaim(&mut self, rates: &[Rate], now: u64, start: usize, len: usize) -> (u64, Option<usize>) {
        let slots = self.geometry.sets * WAYS;
        let (mut cleared, mut victim) = (0, None::<(u64, usize)>);
        for k in 0..len.min(slots) {
            let i = (start + k) % slots;
            if self.slot(i)[0] == 0 {
                continue;
            }
            let fresh_at = fresh_at_all(rates, &self.slot(i)[1..]);
            if fresh_at <= now {
                self.clear(i);
                cleared += 1;
            } else if victim.is_none_or(|(f, _)| fresh_at < f) {
                victim = Some((fresh_at, i));
            }
        }
        (cleared, victim.map(|(_, i)| i))
    }

    fn reserve_key(&self) -> bool {
        let cap = self.capacity;
        self.total_keys.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| (k < cap).then_some(k + 1)).is_ok()
    }

    /// Picks the slot for a new key (see the module docs) and leaves it empty.
    fn insert(&mut self, rates: &[Rate], place: Place, now: u64, elsewhere: &mut dyn FnMut(u64) -> u64) -> usize {
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
            let fresh_at = fresh_at_all(rates, &self.slot(i)[1..]);
            if fresh_at <= now {
                expired = expired.or(Some(i));
            } else if victim.is_none_or(|(f, _)| fresh_at < f) {
                victim = Some((fresh_at, i));
            }
        }
        // 1. An expired entry: replacing it loses nothing and keeps the count.
        if let Some(i) = expired {
            self.empty(i);
            return i;
        }
        let empty = if empty_b.0 > empty_a.0 { empty_b.1 } else { empty_a.1.or(empty_b.1) };
        if let Some(i) = empty {
            // 2. Room under capacity.
            if self.reserve_key() {
                self.stats.keys += 1;
                return i;
            }
            // 3. At capacity: reclaim expired entries further along this shard,
            //    then in another shard (bounded passes; the whole shard only if
            //    they found no entry at all, which needs a nearly empty shard).
            let (mut cleared, mut far_victim) = self.reclaim_step(rates, now);
            if cleared == 0 {
                cleared = elsewhere(now);
            }
            if cleared == 0 && far_victim.is_none() && victim.is_none() {
                let slots = self.geometry.sets * WAYS;
                (cleared, far_victim) = self.reclaim(rates, now, 0, slots);
            }
            if cleared > 0 && self.reserve_key() {
                self.stats.keys += 1;
                return i;
            }
            // 4. Evict the live entry that will be fresh soonest.
            if let Some(v) = victim.map(|(_, v)| v).or(far_victim) {
                self.clear(v);
                self.stats.evictions += 1;
            }
            // Without a victim the shard holds no key at all: every key is in
            // another shard. Rather than drop this key's state the table goes
            // one key over capacity; with 256 keys per shard that needs ~2^-64 luck.
            self.total_keys.fetch_add(1, Ordering::Relaxed);
            self.stats.keys += 1;
            return i;
        }
        // 4. Both sets full of live entries.
        let (_, v) = victim.expect("a full set holds live entries");
        self.empty(v);
        self.stats.evictions += 1;
        v
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
            let mut elsewhere = |now: u64| -> u64 {
                for (w, s) in others.iter_mut() {
                    let mut shard = Shard { words: w, stats: s, total_keys: total, capacity, geometry };
                    let cleared = shard.reclaim_step(rates, now).0;
                    if cleared > 0 {
                        return cleared;
                    }
                }
                0
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
                n += shard.sweep(&self.rates, now);
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
}
