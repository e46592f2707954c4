//! The key table's own tests: placement, capacity, reclaiming and eviction.

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
        shard.check(rates, KeyAt { fp, place }, cost, &mut At { now, elsewhere: &mut elsewhere }, |_, _| {})
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

/// What a backend prefetches before taking a key's lock (`set_words` of
/// its two sets) holds the key's slot: for every stored key, at any load.
#[test]
fn a_stored_key_lies_in_the_words_of_one_of_its_sets() {
    for (capacity, rate) in [(400u64, bucket(1, 1_000_000)), (200, Rate::new(Algorithm::SlidingWindow, 5, 1000, 5))] {
        let mut t = Table::new(capacity, rate);
        let stride = t.geometry.stride;
        for k in 0..capacity {
            assert!(t.check(format!("key-{k}").as_bytes(), 10, 1).outcome.allowed);
        }
        for k in 0..capacity {
            let key = format!("key-{k}");
            let (i, place) = t.with(key.as_bytes(), |shard, place, fp, _| (shard.find(place, fp), place));
            let word = i.expect("a stored key is found") * stride;
            let sets = [t.geometry.set_words(place.a), t.geometry.set_words(place.b)];
            assert!(
                sets.iter().any(|w| w.contains(&word) && w.len() == WAYS * stride),
                "{key}: word {word} not in {sets:?}"
            );
            assert!(sets.iter().all(|w| w.end <= t.geometry.shard_words()));
        }
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

/// Keys that expire between their checks (a high rate, keys coming back
/// after more than their interval) stay stored while the table has room: a
/// new key takes an empty slot, not an expired key's, so that key is found
/// at its next check instead of being stored again and pushing out another.
/// At capacity the expired entries are reused, and nothing live is evicted.
#[test]
fn expired_entries_are_kept_while_there_is_room() {
    let mut t = Table::new(1000, bucket(1, 10)); // fresh again 10 ticks after a check
    for round in 0..3 {
        for k in 0..500u64 {
            // Every earlier key has expired when the next is checked.
            let now = (round * 500 + k) * 100;
            assert!(t.check(format!("k{k}").as_bytes(), now, 1).outcome.allowed);
        }
        assert_eq!(t.total.load(Ordering::Relaxed), 500, "round {round}: every key stored once");
        for k in 0..500u64 {
            assert!(t.with(format!("k{k}").as_bytes(), |s, p, fp, _| s.find(p, fp).is_some()), "k{k} stored");
        }
    }
    for k in 0..2000u64 {
        assert!(t.check(format!("new-{k}").as_bytes(), 1_000_000 + k * 100, 1).outcome.allowed);
        assert!(t.total.load(Ordering::Relaxed) <= 1000);
    }
    assert_eq!(t.total.load(Ordering::Relaxed), 1000);
    assert_eq!(t.sum(|s| s.keys), stored(&t));
    assert_eq!(t.sum(|s| s.evictions), 0, "only expired entries were replaced");
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
    assert!(
        shard
            .check(&rates, KeyAt { fp, place }, 1, &mut At { now: 10, elsewhere: &mut busy }, |_, _| {})
            .outcome
            .allowed
    );
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

/// Answer and eviction counters at u64::MAX (a shm region damaged while its
/// lock is held, after the counters were checked) wrap to 0 rather than
/// panic in a debug build.
#[test]
fn counters_at_the_top_wrap() {
    let mut t = Table::new(100, bucket(1, 1_000_000));
    t.stats.iter_mut().for_each(|s| (s.allowed, s.limited, s.evictions) = (u64::MAX, u64::MAX, u64::MAX));
    for i in 0..1000 {
        let key = format!("key-{i}");
        assert!(t.check(key.as_bytes(), 10, 1).outcome.allowed, "{key}");
        assert!(!t.check(key.as_bytes(), 10, 1).outcome.allowed, "{key}");
    }
    let wrapped = |n: u64| n < 2000;
    assert!(t.stats.iter().all(|s| wrapped(s.allowed) && wrapped(s.limited) && wrapped(s.evictions)));
    assert!(t.sum(|s| s.evictions) > 0, "1000 keys in room for 100 evicted some");
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
        let mut shard =
            Shard { words: &mut words[p.shard], stats: &mut stats[p.shard], total_keys: &total, capacity, geometry: g };
        assert!(
            shard
                .check(&rates, KeyAt { fp, place: p }, 1, &mut At { now, elsewhere: &mut none }, |_, _| {})
                .outcome
                .allowed
        );
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
    assert!(
        shard
            .check(&rates, KeyAt { fp, place: n }, 1, &mut At { now: 5500, elsewhere: &mut stealing }, |_, _| {})
            .outcome
            .allowed
    );
    assert_eq!(stolen, 1);
    assert!(shard.find(n, fp).is_some(), "the new key is stored");
    assert_eq!((shard.stats.keys, shard.stats.evictions), (3, 1), "in place of a live key of its shard");
    assert_eq!(total.load(Ordering::Relaxed), capacity);
}
