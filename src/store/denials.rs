//! The over-limit cache: denials answered without taking the key's lock
//! (memory) or making a round trip (Redis).
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
//! - memory remembers only cost-1 denials and asks only for cost 1, and
//!   forgets a key whenever its state changes (an allowed check, any
//!   adjust, a reset), under the key's lock: the cached answer is the one
//!   the table would give at that reading (`remaining` is 0 throughout, and
//!   the durations run down with the clock); see `store/memory.rs`;
//! - Redis answers a larger cost from a smaller cost's denial (its
//!   `retry_after` then a lower bound), and another host's refund or reset
//!   is seen only when the entry runs out; see `store/redis/mod.rs`.
//!
//! The cache is a fixed array of entries indexed by the key's keyed
//! fingerprint (`keyhash.rs`, secret seed, so clients cannot aim keys at
//! one entry); a newer denial overwrites an older one in the same entry.
//! Each entry is one cache line guarded by its own sequence number (a
//! seqlock): a lookup reads the line and the number twice and writes
//! nothing, so threads hammering a denied key share the line read-only and
//! never wait for each other. A writer that finds the entry being written
//! by another gives up (it is a cache). All fields are atomics, read and
//! written relaxed, so a torn read is detected, never undefined.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::algorithm::{Outcome, Rate, Verdict, NEVER};

/// One remembered denial. All times are the backend's local clock, ns.
#[repr(align(64))]
#[derive(Default)]
struct Entry {
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

// One cache line per entry.
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

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
        fence(Ordering::Release);
        self.fp.store(d.fp, Ordering::Relaxed);
        self.cost.store(d.cost, Ordering::Relaxed);
        self.at.store(d.at, Ordering::Relaxed);
        self.until.store(d.until, Ordering::Relaxed);
        self.reset_at.store(d.reset_at, Ordering::Relaxed);
        self.limit.store(d.limit, Ordering::Relaxed);
        self.index.store(d.index, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }
}

pub struct Denials {
    /// The smallest quota of the limiter's rates: a larger cost can never
    /// pass, and is never answered here.
    max_cost: u64,
    entries: Box<[Entry]>,
}

impl Denials {
    /// A cache of `entries` denials (64 bytes each) for a limiter of
    /// `rates` (none: a concurrency limiter, whose checks it never answers).
    pub fn new(entries: usize, rates: &[Rate]) -> Denials {
        let max_cost = rates.iter().map(Rate::quota).min().unwrap_or(0);
        Denials { max_cost, entries: (0..entries.max(1)).map(|_| Entry::default()).collect() }
    }

    #[inline]
    fn entry(&self, fp: u64) -> &Entry {
        // The low bit of a fingerprint is always 1: index by the high bits,
        // scaled to the length by a multiply (no division on the check path).
        &self.entries[(((fp >> 32) * self.entries.len() as u64) >> 32) as usize]
    }

    /// Whether the key `fp` has an entry, in force or not (one load): a
    /// check that finds none need not `forget` after an allowed answer.
    #[inline]
    pub fn holds(&self, fp: u64) -> bool {
        self.entry(fp).fp.load(Ordering::Relaxed) == fp
    }

    /// A denial still in force at `now_ns` for `cost` units of the key
    /// `fp`, its durations in ticks of `tick_ns` (rounded up).
    #[inline]
    pub fn lookup(&self, fp: u64, cost: u64, now_ns: u64, tick_ns: u64) -> Option<Verdict> {
        // The cheap miss first: a plain read of the fingerprint.
        if cost == 0 || cost > self.max_cost || !self.holds(fp) {
            return None;
        }
        let d = self.entry(fp).read()?;
        if d.fp != fp || cost < d.cost || now_ns < d.at || now_ns >= d.until {
            return None;
        }
        let retry_after = (d.until - now_ns).div_ceil(tick_ns);
        let reset = match d.reset_at {
            u64::MAX => NEVER,
            at => at.saturating_sub(now_ns).div_ceil(tick_ns).max(retry_after),
        };
        let outcome = Outcome { allowed: false, limit: d.limit, remaining: 0, reset, retry_after };
        Some(Verdict { index: d.index as usize, outcome })
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

    /// Drops the key's entry, if it has one. A read-only test when not.
    #[inline]
    pub fn forget(&self, fp: u64) {
        let entry = self.entry(fp);
        if entry.fp.load(Ordering::Relaxed) == fp {
            entry.write(Denial { fp: 0, cost: 0, at: 0, until: 0, reset_at: 0, limit: 0, index: 0 });
        }
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
        let d = Denials::new(1024, &[Rate::new(Algorithm::TokenBucket, 5, 1_000_000, 5)]);
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
        let d = Denials::new(1, &[Rate::new(Algorithm::TokenBucket, 1, 1_000_000, 1)]);
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
}
