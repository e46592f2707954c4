//! The over-limit cache: denials answered without taking the key's lock
//! (memory, shm) or making a round trip (Redis).
//!
//! A key denied with a finite `retry_after` stays denied until then for the
//! same cost or more: spending only pushes it later, and nothing else can
//! make it pass sooner except a refund (`rl_adjust` with a negative delta)
//! or `rl_reset`, which forget the key's entry here. So until then a check
//! of the key is answered from the cache: the stored verdict, with
//! `retry_after` and `reset` counted down to the caller's reading. Peeks
//! (cost 0) are never answered here, nor a cost above the smallest quota
//! (which can never pass).
//!
//! How exact that answer is depends on what the backend remembers:
//! - memory and shm remember only cost-1 denials and ask only for cost 1,
//!   and forget a key whenever its state changes (an allowed check, any
//!   adjust, a reset), under the key's shard lock: the cached answer is the
//!   one the table would give at that reading (`remaining` is 0
//!   throughout, and the durations run down with the clock); see
//!   `store/memory/mod.rs` and `store/shm/mod.rs`;
//! - Redis answers a larger cost from a smaller cost's denial (its
//!   `retry_after` then a lower bound), and another host's refund or reset
//!   is seen only when the entry runs out; see `store/redis/mod.rs`.
//!
//! The cache is a fixed array of entries indexed by the key's keyed
//! fingerprint (`keyhash.rs`, secret seed, so clients cannot aim keys at
//! one entry); a newer denial overwrites an older one in the same entry.
//! Where the array lives is the backend's: a boxed slice in the heap
//! (memory, Redis), or the shm region (`Denials::over` a view of it), one
//! implementation for all. The index scales the fingerprint's high 32 bits
//! to the array's length exactly as `table::Geometry::place` scales them to
//! the shards, so with `shards * k` entries the entries of a shard's keys
//! are that shard's own block of `k` (`floor(floor(x k) / k) = floor(x)`):
//! shm writes a block only under its shard's lock, and the shard's repair
//! clears it (`clear_block`).
//!
//! Each entry is one cache line guarded by its own sequence number (a
//! seqlock): a lookup reads the line and the number twice and writes
//! nothing, so threads (and processes) hammering a denied key share the
//! line read-only and never wait for each other. A writer that finds the
//! entry being written by another gives up (it is a cache). All fields are
//! atomics, read and written relaxed, so a torn read is detected, never
//! undefined; an odd number (a writer at it, or one killed mid-write) is a
//! miss, never a wait. Nothing read from an entry is trusted beyond what it
//! is checked for: the number even and unchanged, the fingerprint the
//! key's, the reading inside `[at, until)`, the rate index one of the
//! limiter's and the limit that rate's quota (in shm any process, or a
//! stray write, can put any bytes there).

use std::ops::Deref;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::algorithm::{Outcome, Rate, Verdict, NEVER};
use crate::config::MAX_RATES;

/// One remembered denial. All times are the backend's local clock, ns.
/// Only atomics, `repr(C)`, one cache line: any bytes are a valid value, so
/// shm lays entries in its region as they are (store/shm/layout.rs).
#[repr(C, align(64))]
#[derive(Default)]
pub struct Entry {
    /// Even: the fields are whole; odd: a writer is rewriting them.
    seq: AtomicU64,
    /// Key fingerprint (never 0); 0 = empty.
    fp: AtomicU64,
    /// The denied cost: checks of this cost or more are denied.
    cost: AtomicU64,
    /// The reading the denial was decided at, and until when it holds:
    /// it answers readings in between (an earlier one, another thread's
    /// clock behind this one's, is decided by the backend, which counts a
    /// window's durations from the window's start rather than from it).
    at: AtomicU64,
    until: AtomicU64,
    /// When the deciding rate is back to its full quota (`u64::MAX`: never).
    reset_at: AtomicU64,
    limit: AtomicU64,
    /// The deciding rate's index.
    index: AtomicU64,
}

/// Bytes of an entry: one cache line.
pub const ENTRY_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_BYTES);

/// A remembered denial, as read whole from its entry.
#[derive(Clone, Copy)]
struct Denial {
    fp: u64,
    cost: u64,
    at: u64,
    until: u64,
    reset_at: u64,
    limit: u64,
    index: u64,
}

const EMPTY: Denial = Denial { fp: 0, cost: 0, at: 0, until: 0, reset_at: 0, limit: 0, index: 0 };

impl Entry {
    /// The entry's fields, if no writer changed them while they were read.
    #[inline]
    fn read(&self) -> Option<Denial> {
        let seq = self.seq.load(Ordering::Acquire);
        let d = Denial {
            fp: self.fp.load(Ordering::Relaxed),
            cost: self.cost.load(Ordering::Relaxed),
            at: self.at.load(Ordering::Relaxed),
            until: self.until.load(Ordering::Relaxed),
            reset_at: self.reset_at.load(Ordering::Relaxed),
            limit: self.limit.load(Ordering::Relaxed),
            index: self.index.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        (seq % 2 == 0 && self.seq.load(Ordering::Relaxed) == seq).then_some(d)
    }

    /// Rewrites the entry, unless another writer is at it (then nothing).
    fn write(&self, d: Denial) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq % 2 == 1 || self.seq.compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return;
        }
        self.fill(seq + 1, d);
    }

    /// With the number at the odd `odd`: writes the fields, then makes the
    /// number even (`odd + 1`, never a value a reader saw before).
    fn fill(&self, odd: u64, d: Denial) {
        fence(Ordering::Release);
        self.fp.store(d.fp, Ordering::Relaxed);
        self.cost.store(d.cost, Ordering::Relaxed);
        self.at.store(d.at, Ordering::Relaxed);
        self.until.store(d.until, Ordering::Relaxed);
        self.reset_at.store(d.reset_at, Ordering::Relaxed);
        self.limit.store(d.limit, Ordering::Relaxed);
        self.index.store(d.index, Ordering::Relaxed);
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Empties the entry whatever its number says: for a writer that died
    /// mid-write (its number left odd), by the one who repairs its shard.
    fn clear(&self) {
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        self.fill(odd, EMPTY);
    }
}

/// The cache over entries kept in `S`: a `Box<[Entry]>` of its own, or a
/// view of the shm region's.
pub struct Denials<S = Box<[Entry]>> {
    /// The smallest quota of the limiter's rates: a larger cost can never
    /// pass, and is never answered here.
    max_cost: u64,
    /// Each rate's quota, what an entry's `limit` must be for its `index`
    /// (`rates` of them).
    quotas: [u64; MAX_RATES],
    rates: usize,
    entries: S,
}

impl Denials {
    /// A cache of `entries` denials (64 bytes each) for a limiter of
    /// `rates` (none: a concurrency limiter, whose checks it never answers).
    pub fn new(entries: usize, rates: &[Rate]) -> Denials {
        Denials::over((0..entries.max(1)).map(|_| Entry::default()).collect(), rates)
    }
}

impl<S: Deref<Target = [Entry]>> Denials<S> {
    /// The cache in `entries` (at least one), for a limiter of `rates`.
    pub fn over(entries: S, rates: &[Rate]) -> Denials<S> {
        assert!(!entries.is_empty());
        let max_cost = rates.iter().map(Rate::quota).min().unwrap_or(0);
        let mut quotas = [0; MAX_RATES];
        for (q, r) in quotas.iter_mut().zip(rates) {
            *q = r.quota();
        }
        Denials { max_cost, quotas, rates: rates.len().min(MAX_RATES), entries }
    }

    #[inline]
    fn entry(&self, fp: u64) -> &Entry {
        // The low bit of a fingerprint is always 1: index by the high bits,
        // scaled to the length by a multiply (no division on the check path).
        &self.entries[(((fp >> 32) * self.entries.len() as u64) >> 32) as usize]
    }

    /// Whether two keys map to one entry (then only one of them is
    /// remembered at a time; with a random seed, two given keys do once in
    /// a few hundred handles).
    #[cfg(test)]
    pub fn share_an_entry(&self, a: u64, b: u64) -> bool {
        std::ptr::eq(self.entry(a), self.entry(b))
    }

    /// Whether the key `fp` has an entry, in force or not (one load): a
    /// check that finds none need not `forget` after an allowed answer.
    #[inline]
    pub fn holds(&self, fp: u64) -> bool {
        self.entry(fp).fp.load(Ordering::Relaxed) == fp
    }

    /// A denial still in force at `now_ns` for `cost` units of the key
    /// `fp`, its durations in ticks of `tick_ns` (rounded up). (Memory and
    /// shm ask only when `holds` said yes; a miss on another key costs one
    /// line's read, as `holds` does.)
    #[inline]
    pub fn lookup(&self, fp: u64, cost: u64, now_ns: u64, tick_ns: u64) -> Option<Verdict> {
        if cost == 0 || cost > self.max_cost {
            return None;
        }
        let d = self.entry(fp).read()?;
        if d.fp != fp || cost < d.cost || now_ns < d.at || now_ns >= d.until {
            return None;
        }
        // Checked, never trusted: a rate of this limiter, with its quota.
        let index = d.index as usize;
        if index >= self.rates || d.limit != self.quotas[index] {
            return None;
        }
        let retry_after = (d.until - now_ns).div_ceil(tick_ns);
        let reset = match d.reset_at {
            u64::MAX => NEVER,
            at => at.saturating_sub(now_ns).div_ceil(tick_ns).max(retry_after),
        };
        let outcome = Outcome { allowed: false, limit: d.limit, remaining: 0, reset, retry_after };
        Some(Verdict { index, outcome })
    }

    /// The key `fp` was denied `cost` units by a decision made at `at_ns`
    /// (for Redis: when the request was sent), durations in ticks of
    /// `tick_ns`. Remembered if it is a denial that runs out.
    pub fn remember(&self, fp: u64, cost: u64, at_ns: u64, tick_ns: u64, verdict: Verdict) {
        let o = verdict.outcome;
        if o.allowed || cost == 0 || o.retry_after == NEVER || o.retry_after == 0 {
            return;
        }
        let until = at_ns.saturating_add(o.retry_after.saturating_mul(tick_ns));
        let reset_at = match o.reset {
            NEVER => u64::MAX,
            reset => at_ns.saturating_add(reset.saturating_mul(tick_ns)).min(u64::MAX - 1),
        };
        let d = Denial { fp, cost, at: at_ns, until, reset_at, limit: o.limit, index: verdict.index as u64 };
        self.entry(fp).write(d);
    }

    /// Keeps the cache in step with a check of the key `fp` the table just
    /// decided at `now_ns` (memory and shm, whose checks are answered from
    /// the cache only for cost 1, in ns ticks). Called under the key's shard
    /// lock, so that no adjust or reset of the key falls between the
    /// decision and the cache: a cost-1 denial is remembered; an allowed
    /// check that spent something forgets the key's entry if `cached` (what
    /// `holds` said before the lock). (An entry of the key made since
    /// `cached` was read would be a denial decided under the lock before
    /// this check: this check cannot then be allowed unless the entry ran
    /// out, or the key was evicted.)
    #[inline]
    pub fn settle(&self, cached: bool, fp: u64, cost: u64, now_ns: u64, verdict: Verdict) {
        if verdict.outcome.allowed {
            if cached && cost > 0 {
                self.forget(fp);
            }
        } else if cost == 1 {
            self.remember(fp, 1, now_ns, 1, verdict);
        }
    }

    /// Drops the key's entry, if it has one. A read-only test when not.
    #[inline]
    pub fn forget(&self, fp: u64) {
        let entry = self.entry(fp);
        if entry.fp.load(Ordering::Relaxed) == fp {
            entry.write(EMPTY);
        }
    }

    /// Empties block `block` of `blocks` equal blocks (shm: a shard's
    /// entries, see the module docs), whatever state its entries are in.
    /// Only for the one writer of the block: shm's repair, under the
    /// shard's lock, after a writer died. Cannot panic.
    pub fn clear_block(&self, block: usize, blocks: usize) {
        let per = self.entries.len() / blocks.max(1);
        let start = block.saturating_mul(per);
        for entry in self.entries.get(start..start.saturating_add(per)).unwrap_or_default() {
            entry.clear();
        }
    }
}

#[cfg(test)]
impl<S: Deref<Target = [Entry]>> Denials<S> {
    /// Tests: leaves the entry of `fp` as a writer killed mid-write would:
    /// its number odd, a field rewritten (to let every reading pass).
    pub fn tear(&self, fp: u64) {
        let e = self.entry(fp);
        e.seq.fetch_add(1, Ordering::Relaxed);
        e.until.store(u64::MAX, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;

    fn denied(retry: u64) -> Verdict {
        Verdict {
            index: 1,
            outcome: Outcome { allowed: false, limit: 5, remaining: 0, reset: 3000, retry_after: retry },
        }
    }

    /// µs ticks, as Redis uses the cache.
    #[test]
    fn holds_until_retry_after_for_same_or_larger_cost() {
        let rates =
            [Rate::new(Algorithm::TokenBucket, 10, 1_000_000, 10), Rate::new(Algorithm::TokenBucket, 5, 1_000_000, 5)];
        let d = Denials::new(1024, &rates);
        let fp = 0x1234_5678_9abc_def1;
        d.remember(fp, 2, 1_000_000, 1000, denied(500));
        assert!(d.lookup(fp, 1, 1_000_000, 1000).is_none(), "a smaller cost may pass");
        assert!(d.lookup(fp, 0, 1_000_000, 1000).is_none(), "peeks are decided");
        let v = d.lookup(fp, 2, 1_200_000, 1000).unwrap();
        assert_eq!((v.index, v.outcome.retry_after, v.outcome.reset, v.outcome.limit), (1, 300, 2800, 5));
        assert_eq!(d.lookup(fp, 3, 1_499_999, 1000).unwrap().outcome.retry_after, 1);
        assert!(d.lookup(fp, 6, 1_200_000, 1000).is_none(), "above every quota: never, decided");
        assert!(d.lookup(fp, 2, 1_500_000, 1000).is_none());
        d.remember(fp, 1, 0, 1000, denied(NEVER));
        d.remember(fp, 1, 2_000_000, 1000, denied(100));
        assert!(d.lookup(fp ^ 0x100, 1, 2_000_000, 1000).is_none(), "another key");
        d.forget(fp);
        assert!(d.lookup(fp, 1, 2_000_000, 1000).is_none());
    }

    /// ns ticks, as memory uses it: durations count down to the reading.
    #[test]
    fn nanosecond_ticks_count_down_exactly() {
        let d = Denials::new(4, &[Rate::new(Algorithm::TokenBucket, 1, 1_000_000, 1)]);
        let fp = 0xff00_0000_0000_0001;
        let v = Verdict {
            index: 0,
            outcome: Outcome { allowed: false, limit: 1, remaining: 0, reset: 70, retry_after: 50 },
        };
        d.remember(fp, 1, 1000, 1, v);
        let got = d.lookup(fp, 1, 1030, 1).unwrap();
        assert_eq!((got.outcome.retry_after, got.outcome.reset), (20, 40));
        assert!(d.lookup(fp, 1, 1050, 1).is_none());
        // reset never: kept never.
        let never = Verdict { outcome: Outcome { reset: NEVER, ..v.outcome }, ..v };
        d.remember(fp, 1, 1000, 1, never);
        assert_eq!(d.lookup(fp, 1, 1010, 1).unwrap().outcome.reset, NEVER);
    }

    /// The memory backend's promise: while a cost-1 denial holds, the
    /// cached answer is exactly the table's, at every reading. For each
    /// algorithm and a two-rate mix, keys driven to a denial by random
    /// checks are then asked again at readings up to the denial's end.
    #[test]
    fn a_cached_cost_1_denial_is_the_algorithms_answer_until_it_ends() {
        use crate::algorithm::{check_all, STATE_WORDS};
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let configs: Vec<Vec<Rate>> = vec![
            vec![Rate::new(Algorithm::TokenBucket, 7, 1_000_000, 3)],
            vec![Rate::new(Algorithm::FixedWindow, 5, 1_000_000, 5)],
            vec![Rate::new(Algorithm::SlidingWindow, 9, 1_000_000, 9)],
            vec![
                Rate::new(Algorithm::TokenBucket, 10, 1_000_000, 10),
                Rate::new(Algorithm::SlidingWindow, 30, 7_000_000, 30),
            ],
        ];
        let mut checked = 0;
        for rates in &configs {
            for round in 0..300 {
                let d = Denials::new(8, rates);
                let fp = (round as u64) << 40 | 1;
                let mut words = [0u64; 2 * STATE_WORDS];
                let words = &mut words[..rates.iter().map(Rate::words).sum::<usize>()];
                let mut now = 1_000_000_000 + next(10_000_000);
                // Spend until a cost-1 check is denied.
                let denial = loop {
                    let v = check_all(rates, words, now, 1 + next(2));
                    if !v.outcome.allowed {
                        let v1 = check_all(rates, words, now, 1);
                        if !v1.outcome.allowed {
                            break v1;
                        }
                    }
                    now += next(200_000);
                };
                d.remember(fp, 1, now, 1, denial);
                // A reading behind the denial's (another thread's) is the
                // backend's to decide: a window counts from its start.
                assert!(d.lookup(fp, 1, now - 1, 1).is_none());
                let until = now + denial.outcome.retry_after;
                let mut t = now;
                while t < until {
                    let cached = d.lookup(fp, 1, t, 1).expect("still denied");
                    let decided = check_all(rates, &mut words.to_vec(), t, 1);
                    assert_eq!(cached, decided, "{rates:?} at {t} (denied at {now} until {until})");
                    checked += 1;
                    t += 1 + next((until - now) / 8 + 1);
                }
                assert!(d.lookup(fp, 1, until, 1).is_none());
                assert!(
                    check_all(rates, &mut words.to_vec(), until, 1).outcome.allowed,
                    "{rates:?}: retry_after is exact"
                );
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// Writers rewriting one entry with self-consistent denials while
    /// readers look it up: a reader only ever sees a whole denial (its
    /// fields all from one write), never a mix of two.
    #[test]
    fn concurrent_readers_never_see_a_torn_entry() {
        // Rate n's quota is n: the index and limit of every write agree.
        let rates: Vec<Rate> =
            (0..5).map(|n: u64| Rate::new(Algorithm::TokenBucket, n.max(1), 1_000_000, n.max(1))).collect();
        let d = Denials::new(1, &rates);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let (d, stop) = (&d, &stop);
                s.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let n = (i << 1 | w) % 4 + 1;
                        // Fingerprint, limit, reset and retry all derived from n.
                        let fp = n << 40 | 1;
                        let o = Outcome { allowed: false, limit: n, remaining: 0, reset: 3 * n, retry_after: 2 * n };
                        d.remember(fp, 1, 0, 1, Verdict { index: n as usize, outcome: o });
                    }
                });
            }
            // Until many whole reads (or 20 s: a starved machine). In a
            // thread of its own, so that a failed read stops the writers.
            let reader = s.spawn(|| {
                let (mut seen, start) = (0, std::time::Instant::now());
                for i in 0u64.. {
                    if seen >= 100_000 || start.elapsed().as_secs() >= 20 {
                        break;
                    }
                    let n = i % 4 + 1;
                    if let Some(v) = d.lookup(n << 40 | 1, 1, 0, 1) {
                        let o = v.outcome;
                        assert_eq!((v.index as u64, o.limit, o.reset, o.retry_after), (n, n, 3 * n, 2 * n));
                        seen += 1;
                    }
                }
                seen
            });
            let seen = reader.join();
            stop.store(true, Ordering::Relaxed);
            assert!(seen.expect("a torn read") > 0, "no lookup ever hit");
        });
    }

    /// With `shards * k` entries, every key's entry is in its shard's block
    /// of `k` (the shm backend's per-shard entries rest on it).
    #[test]
    fn a_keys_entry_is_in_its_shards_block() {
        use crate::table::Geometry;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for capacity in [1u64, 600, 20_000, 100_000, 1_000_000] {
            let g = Geometry::new(capacity, 1);
            for k in [1usize, 3, 4, 7] {
                let d = Denials::new(g.shards * k, &[Rate::new(Algorithm::TokenBucket, 1, 1, 1)]);
                for _ in 0..10_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let fp = x | 1;
                    let at = (d.entry(fp) as *const Entry as usize - d.entries.as_ptr() as usize) / ENTRY_BYTES;
                    assert_eq!(at / k, g.place(fp).shard, "capacity {capacity}, {k} per shard, fp {fp:x}");
                }
            }
        }
    }

    /// Entries of any bytes (a damaged shm region) are read without a
    /// panic or a wait, and answer only for the fingerprint they hold, with
    /// a rate of the limiter and its quota; an entry left odd (a writer
    /// killed mid-write) is a miss until cleared, and clearing empties it.
    #[test]
    fn damaged_entries_are_checked_never_trusted() {
        let rates = [Rate::new(Algorithm::TokenBucket, 3, 1_000_000, 3), Rate::new(Algorithm::FixedWindow, 9, 1, 9)];
        let d = Denials::new(8, &rates);
        fn words(e: &Entry) -> [&AtomicU64; 8] {
            [&e.seq, &e.fp, &e.cost, &e.at, &e.until, &e.reset_at, &e.limit, &e.index]
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let fp = next() | 1;
            let e = d.entry(fp);
            for w in words(e) {
                w.store(next() >> (next() % 64), Ordering::Relaxed);
            }
            if round % 2 == 0 {
                // Every field plausible but one, picked at random.
                let good = [next() & !1, fp, 1, 10, 1000, 2000, 3, 0];
                for (w, v) in words(e).into_iter().zip(good) {
                    w.store(v, Ordering::Relaxed);
                }
                let bad = (next() % 8) as usize;
                let v = [1, fp ^ 2, 2, 600, 500, 0, 4, 2][bad];
                words(e)[bad].store(v, Ordering::Relaxed);
                // A reading of 500 answers only if the broken field does not matter.
                let got = d.lookup(fp, 1, 500, 1);
                if bad == 5 {
                    // A reset before the retry is read as the retry: a valid answer.
                    let o = got.expect("only reset_at is off").outcome;
                    assert_eq!((o.retry_after, o.reset, o.limit), (500, 500, 3));
                } else {
                    assert!(got.is_none(), "field {bad} damaged, answered {got:?}");
                }
            }
            if let Some(v) = d.lookup(fp, 1, next() >> 1, 1) {
                assert!(v.index < 2 && v.outcome.limit == rates[v.index].quota() && !v.outcome.allowed);
                assert_eq!(e.fp.load(Ordering::Relaxed), fp);
            }
            assert!(d.lookup(fp ^ 4, 1, 500, 1).is_none() || e.fp.load(Ordering::Relaxed) == fp ^ 4);
        }
        // Odd: a miss, and no writer can use the entry; a clear makes it whole and empty.
        d.clear_block(0, 1);
        let fp = 0xabcd_0000_0000_0001;
        let v =
            Verdict { index: 0, outcome: Outcome { allowed: false, limit: 3, remaining: 0, reset: 9, retry_after: 5 } };
        d.remember(fp, 1, 100, 1, v);
        assert!(d.lookup(fp, 1, 101, 1).is_some());
        let e = d.entry(fp);
        e.seq.fetch_add(1, Ordering::Relaxed);
        assert!(d.lookup(fp, 1, 101, 1).is_none(), "odd: a miss");
        d.remember(fp, 1, 100, 1, v);
        d.forget(fp);
        assert!(d.lookup(fp, 1, 101, 1).is_none());
        let odd = e.seq.load(Ordering::Relaxed);
        d.clear_block(0, 1);
        assert!(e.seq.load(Ordering::Relaxed) % 2 == 0 && e.seq.load(Ordering::Relaxed) > odd);
        assert!(!d.holds(fp));
        d.remember(fp, 1, 100, 1, v);
        assert!(d.lookup(fp, 1, 101, 1).is_some(), "usable again");
    }
}
