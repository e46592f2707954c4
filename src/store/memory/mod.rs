//! `backend=memory`: the threads of one process share a sharded, bounded table.
//!
//! The table (`table/`) is cut into shards, each behind its own
//! `parking_lot::Mutex` on its own cache line, so threads working on different
//! keys rarely meet. Everything is allocated when the limiter is created; a
//! check allocates nothing.
//!
//! With `top=N` each shard also holds the two heavy-hitter sketches of its
//! keys (top/), updated under the shard's lock after each check: `rl_top`
//! covers this handle.
//!
//! A key denied a check of cost 1 is remembered in the over-limit cache
//! (`../denials.rs`) until it can pass, and the cost-1 checks of it are
//! answered from there meanwhile: without the shard's lock, writing nothing
//! the threads share (`../tally.rs` counts them and brings them to `rl_top`),
//! so a key under attack costs less per check than an allowed one, and two
//! threads hammering it do not wait for each other. The answer is the one
//! the table would give: the entry is remembered and forgotten under the
//! shard's lock, forgotten whenever the key's state changes (an allowed
//! check, an adjust, a reset), and while it holds, the only checks the
//! table could answer differently are peeks and other costs, which are
//! decided by the table. (A key evicted meanwhile is still denied until its
//! entry runs out: it was over its limit, and the table only forgot it.)

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use super::denials::Denials;
use super::tally::{spin, Tally};
use super::{wrong_kind, Store, StoreStats};
use crate::algorithm::{adjust_all, Limits, Verdict};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::Error;
use crate::keyhash::Seed;
use crate::limiter::limits_in_ns;
use crate::table::{At, Geometry, KeyAt, Shard, ShardStats};
use crate::top::{Top, TopEntry, Which};

struct ShardData {
    words: Box<[u64]>,
    stats: ShardStats,
    /// The shard's heavy-hitter sketches (empty when `top=0`).
    top: Box<[u64]>,
}

pub struct MemoryStore {
    limits: Limits,
    geometry: Geometry,
    capacity: u64,
    seed: Seed,
    clock: Clock,
    total_keys: CachePadded<AtomicU64>,
    /// Which shard the next cross-shard reclaim pass starts at.
    reclaim_turn: AtomicU64,
    shards: Box<[CachePadded<Mutex<ShardData>>]>,
    /// None: `top=0`, nothing tracked.
    top: Option<Top>,
    /// Cost-1 denials still in force, answered without a lock.
    denials: Denials,
    /// Denials answered from `denials`, counted per thread.
    tally: Tally,
}

/// Entries of the over-limit cache (64 bytes each).
const DENIALS: usize = 256;
/// Stripes counting its denials (128 bytes each).
const STRIPES: usize = 64;

impl MemoryStore {
    /// The table `config` describes (`backend=memory`): its limits in
    /// nanosecond ticks, `capacity` keys, `top` heavy hitters per sketch.
    pub fn new(config: &Config) -> Result<MemoryStore, Error> {
        let (limits, capacity) = (limits_in_ns(config), config.capacity);
        let top = Top::new(config.top);
        let state_words = limits.state_words();
        let geometry = Geometry::new(capacity, state_words);
        let seed = Seed::random().map_err(|e| Error::Io(format!("reading /dev/urandom for the hash seed: {e}")))?;
        let shard_words = geometry.shard_words();
        let mut shards = Vec::new();
        shards
            .try_reserve_exact(geometry.shards)
            .map_err(|_| Error::Invalid(format!("capacity={capacity}: out of memory")))?;
        // The whole table is asked for first with a fallible reservation
        // (refused: an error, not an abort), then each shard is taken zeroed
        // from the allocator (`vec!` of zeros is calloc), so that the pages of
        // a large table (concurrency=1024 at the default capacity is 1.6 GB)
        // cost nothing until keys are stored in them.
        let table_words = geometry.shards.checked_mul(shard_words);
        let mut probe = Vec::<u64>::new();
        if table_words.is_none_or(|n| probe.try_reserve_exact(n).is_err()) {
            return Err(Error::Invalid(format!(
                "capacity={capacity}: cannot allocate {} bytes for the key table",
                geometry.slots() as u128 * geometry.stride as u128 * 8
            )));
        }
        drop(probe);
        for _ in 0..geometry.shards {
            shards.push(CachePadded::new(Mutex::new(ShardData {
                words: vec![0u64; shard_words].into_boxed_slice(),
                stats: ShardStats::default(),
                top: vec![0; top.map_or(0, |t| t.shard_words())].into_boxed_slice(),
            })));
        }
        Ok(MemoryStore {
            denials: Denials::new(DENIALS, limits.rates()),
            limits,
            geometry,
            capacity,
            seed,
            clock: Clock::new(),
            total_keys: CachePadded::new(AtomicU64::new(0)),
            reclaim_turn: AtomicU64::new(0),
            shards: shards.into_boxed_slice(),
            top,
            tally: Tally::new(STRIPES, top.is_some()),
        })
    }

    /// Bytes of table memory per key of capacity.
    pub fn bytes_per_key(&self) -> f64 {
        (self.geometry.slots() * self.geometry.stride * 8) as f64 / self.capacity as f64
    }

    /// Runs `f` on the shards other than `me` that are free, from a rotating
    /// start, until it returns Some (never waiting for a lock: the caller
    /// holds shard `me`'s). See `table::Elsewhere`.
    fn on_other_shards(&self, me: usize, f: &mut dyn FnMut(&mut Shard) -> Option<u64>) -> Option<u64> {
        let n = self.shards.len();
        let start = self.reclaim_turn.fetch_add(1, Ordering::Relaxed) as usize;
        for k in 0..n {
            let i = (start + k) % n;
            if i == me {
                continue;
            }
            let Some(mut guard) = self.shards[i].try_lock() else { continue };
            if let Some(r) = f(&mut self.view(&mut guard)) {
                return Some(r);
            }
        }
        None
    }

    fn with_shard<R>(&self, index: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        f(&mut self.view(&mut self.shards[index].lock()))
    }

    /// The table's view of one locked shard.
    fn view<'a>(&'a self, data: &'a mut ShardData) -> Shard<'a> {
        self.view_of(&mut data.words, &mut data.stats)
    }

    /// Runs `f` on the locked shard of `key`, with the key as the table
    /// knows it, the time and the reach into other shards, and the shard's
    /// sketches.
    fn on_key<R>(&self, key: &[u8], f: impl FnOnce(&mut Shard, KeyAt, &mut At, &mut [u64]) -> R) -> R {
        let fp = self.seed.fingerprint(key);
        let place = self.geometry.place(fp);
        let now = self.clock.now();
        let mut data = self.shards[place.shard].lock();
        let data = &mut *data;
        let mut shard = self.view_of(&mut data.words, &mut data.stats);
        // (The shard's index copied: a closure that borrowed `place` would keep it
        // in memory, and the table's copy of it would then be read back from there.)
        let me = place.shard;
        let mut at = At { now, elsewhere: &mut move |pass| self.on_other_shards(me, pass) };
        f(&mut shard, KeyAt { fp, place }, &mut at, &mut data.top)
    }

    /// Records `n` denials of `key` answered from the over-limit cache in
    /// its shard's sketches (`../tally.rs`). Always done.
    fn record_denials(&self, fp: u64, key: &[u8], n: u64) -> bool {
        if let Some(top) = &self.top {
            let shard = self.geometry.place(fp).shard;
            top.record_denials(&mut self.shards[shard].lock().top, fp, key, n);
        }
        true
    }

    /// The table's view of a locked shard's words and stats.
    fn view_of<'a>(&'a self, words: &'a mut [u64], stats: &'a mut ShardStats) -> Shard<'a> {
        Shard { words, stats, total_keys: &self.total_keys, capacity: self.capacity, geometry: self.geometry }
    }
}

impl Store for MemoryStore {
    const TICK_NS: u64 = 1;

    #[inline]
    fn check(&self, key: &[u8], cost: u64) -> Result<Verdict, Error> {
        let fp = self.seed.fingerprint(key);
        let now = self.clock.now();
        let Limits::Rates(rates) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_check")) };
        // One load tells whether the key has an entry; most keys have none.
        let cached = self.denials.holds(fp);
        if cached && cost == 1 {
            if let Some(verdict) = self.denials.lookup(fp, 1, now, 1) {
                if self.tally.count(1, 0, fp, key, &mut |fp, key, n| self.record_denials(fp, key, n)) {
                    return Ok(verdict);
                }
            }
        }
        // (The key's place only now: a cached denial does without it.)
        let place = self.geometry.place(fp);
        let mut data = self.shards[place.shard].lock();
        let data = &mut *data;
        // (The index copied, not `place` borrowed: see `on_key`.)
        let me = place.shard;
        let mut at = At { now, elsewhere: &mut move |pass| self.on_other_shards(me, pass) };
        let verdict =
            self.view_of(&mut data.words, &mut data.stats).check(rates, KeyAt { fp, place }, cost, &mut at, |_, _| {});
        self.denials.settle(cached, fp, cost, now, verdict);
        if let Some(top) = &self.top {
            let active = Top::sample(data.stats.allowed.wrapping_add(data.stats.limited));
            top.record(&mut data.top, fp, key, verdict.outcome.allowed, active);
        }
        Ok(verdict)
    }

    fn adjust(&self, key: &[u8], delta: i64) -> Result<Verdict, Error> {
        let Limits::Rates(rates) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_adjust")) };
        let verdict = self.on_key(key, |shard, k, at, _| {
            let now = at.now;
            if delta != 0 {
                self.denials.forget(k.fp);
            }
            // (A charge to a new key that found no room, see table's insert
            // step 6, is answered but not stored, as a check's would be.)
            shard.update(rates.as_slice(), k, at, |_, _| {}, |words| adjust_all(rates, words, now, delta)).0
        });
        Ok(verdict)
    }

    fn acquire(&self, key: &[u8]) -> Result<(Verdict, u64), Error> {
        let Limits::Leases(leases) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_acquire")) };
        let (outcome, lease) = self.on_key(key, |shard, k, at, top_words| {
            let (outcome, lease) = shard.acquire(leases, k, at);
            if let Some(top) = &self.top {
                let active = Top::sample(shard.stats.allowed.wrapping_add(shard.stats.limited));
                top.record(top_words, k.fp, key, outcome.allowed, active);
            }
            (outcome, lease)
        });
        Ok((Verdict { index: 0, outcome }, lease))
    }

    fn renew(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        let Limits::Leases(leases) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_renew")) };
        Ok(self.on_key(key, |shard, k, at, _| shard.renew(leases, k, at, lease)))
    }

    fn release(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        let Limits::Leases(leases) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_release")) };
        Ok(self.on_key(key, |shard, k, at, _| shard.release(leases, k, at, lease)))
    }

    fn reset(&self, key: &[u8]) -> Result<(), Error> {
        let fp = self.seed.fingerprint(key);
        let place = self.geometry.place(fp);
        self.with_shard(place.shard, |s| {
            self.denials.forget(fp);
            s.remove(place, fp)
        });
        Ok(())
    }

    fn sweep(&self) -> Result<u64, Error> {
        let now = self.clock.now();
        Ok((0..self.shards.len()).map(|i| self.with_shard(i, |s| s.sweep(&self.limits, now))).sum())
    }

    fn top(&self, which: Which, max: usize) -> Result<Vec<TopEntry>, Error> {
        let Some(top) = &self.top else { return Ok(Vec::new()) };
        self.tally.flush(1, &mut spin, &mut |fp, key, n| self.record_denials(fp, key, n));
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            top.read(&shard.lock().top, which, &mut all);
        }
        Ok(top.finish(all, max))
    }

    fn stats(&self) -> Result<StoreStats, Error> {
        let mut total = StoreStats::default();
        for shard in self.shards.iter() {
            let s = shard.lock().stats;
            total.allowed += s.allowed;
            total.limited += s.limited;
            total.evictions += s.evictions;
        }
        total.limited += self.tally.denied();
        total.keys = self.total_keys.load(Ordering::Relaxed);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    /// Keys that never expire during a test: every new key past capacity
    /// must push a live one out.
    fn forever(capacity: u64) -> Config {
        Config::parse(&format!("rate=1/1000d capacity={capacity}")).unwrap()
    }

    /// The stored keys, counted slot by slot, and the shards' own counts.
    fn recount(store: &MemoryStore) -> (u64, u64) {
        let stride = store.geometry.stride;
        let (mut slots, mut counted) = (0, 0);
        for shard in store.shards.iter() {
            let data = shard.lock();
            slots += data.words.chunks_exact(stride).filter(|w| w[0] != 0).count() as u64;
            counted += data.stats.keys;
        }
        (slots, counted)
    }

    /// A denied key answered from the over-limit cache answers as the
    /// table would: a refund or a reset lets it pass at once, a charge
    /// lengthens its wait at once, and every denial is counted.
    #[test]
    fn cached_denials_follow_every_change_of_the_key() {
        let store = MemoryStore::new(&Config::parse("rate=2/h").unwrap()).unwrap();
        let check = |cost| store.check(b"k", cost).unwrap().outcome;
        assert!(check(1).allowed && check(1).allowed);
        let denied = check(1);
        assert!(!denied.allowed && denied.retry_after > 0);
        // Answered from the cache now: the same answer, counted.
        for _ in 0..10 {
            let again = check(1);
            assert!(!again.allowed && again.retry_after <= denied.retry_after && again.remaining == 0);
        }
        assert_eq!(store.stats().unwrap().limited, 11);
        // A peek is the table's: allowed, and not counted.
        assert!(check(0).allowed);
        // A refund: allowed at once.
        store.adjust(b"k", -1).unwrap();
        assert!(check(1).allowed);
        assert!(!check(1).allowed);
        // A charge: the wait grows at once (one more interval of 30 min).
        let before = check(1).retry_after;
        store.adjust(b"k", 1).unwrap();
        let after = check(1).retry_after;
        assert!(after >= before + 1_799_000_000_000, "{before} -> {after}");
        // A reset: fresh at once.
        store.reset(b"k").unwrap();
        assert!(check(1).allowed);
        // Costs other than 1 are decided by the table: cost 2 of a key
        // with one unit left is denied, cost 1 then still allowed.
        assert!(!check(2).allowed);
        assert!(check(1).allowed);
        assert_eq!(store.stats().unwrap().limited, 11 + 1 + 2 + 1);
    }

    /// A key over its limit that the full table evicts is still denied at
    /// cost 1 until its cached denial runs out (it was over its limit; the
    /// table only forgot it), while another cost is the table's: fresh.
    #[test]
    fn an_evicted_key_stays_denied_until_its_cached_denial_ends() {
        let store = MemoryStore::new(&Config::parse("rate=2/h capacity=1").unwrap()).unwrap();
        let check = |key: &[u8], cost| store.check(key, cost).unwrap().outcome;
        assert!(check(b"k", 1).allowed && check(b"k", 1).allowed);
        assert!(!check(b"k", 1).allowed);
        assert!(check(b"other", 1).allowed);
        assert_eq!(store.stats().unwrap().evictions, 1, "k was evicted for other");
        assert!(!check(b"k", 1).allowed, "k is still over its limit");
        assert!(check(b"k", 2).allowed, "the table has forgotten k");
    }

    /// Threads insert distinct keys far past capacity while another polls
    /// `stats`: the key count never exceeds capacity, matches the table, and
    /// every key either is stored or was counted as an eviction.
    #[test]
    fn keys_never_exceed_capacity_under_concurrent_inserts() {
        const THREADS: u64 = 6;
        for capacity in [1u64, 7, 100, 600, 2100] {
            let store = MemoryStore::new(&forever(capacity)).unwrap();
            let per_thread = (capacity * 5).max(2000);
            let done = AtomicBool::new(false);
            let worst = AtomicU64::new(0);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        worst.fetch_max(store.stats().unwrap().keys, Ordering::Relaxed);
                    }
                });
                let workers: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let store = &store;
                        s.spawn(move || {
                            for k in 0..per_thread {
                                let key = format!("t{t}-k{k}");
                                assert!(store.check(key.as_bytes(), 1).unwrap().outcome.allowed);
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().unwrap();
                }
                done.store(true, Ordering::Relaxed);
            });
            let stats = store.stats().unwrap();
            let (slots, counted) = recount(&store);
            assert!(worst.load(Ordering::Relaxed) <= capacity, "capacity {capacity}: keys seen {worst:?}");
            assert!(stats.keys <= capacity, "capacity {capacity}: {} keys", stats.keys);
            assert_eq!(stats.keys, slots, "capacity {capacity}: counted keys vs stored keys");
            assert_eq!(counted, slots, "capacity {capacity}: shard counts vs stored keys");
            assert_eq!(
                stats.keys + stats.evictions,
                THREADS * per_thread,
                "capacity {capacity}: every key stored or evicted"
            );
        }
    }
}
