//! The local over-limit cache: denials answered without a round trip.
//!
//! When Redis denies a key with a finite `retry_after`, nothing another host
//! does can make that key pass sooner (spending only pushes it later)
//! except a refund (`rl_adjust` with a negative delta, or `rl_reset`), so
//! until then every check of the key with the same cost or more is denied
//! here, without asking Redis (a larger cost is denied at least as long; its
//! reported `retry_after` is the smaller cost's, a lower bound, and a cost
//! above the smallest quota, which can never pass, still goes to Redis). Abusive clients that keep hammering a key
//! while limited then cost no Redis traffic at all. Peeks (cost 0) always go
//! to Redis. `rl_reset` or a refund of the key on this handle clears its
//! entry; a reset or refund made elsewhere (another host) is seen here only
//! after the entry expires (at most the `retry_after` Redis gave). An
//! adjust whose reply says the key is over its limit is remembered as a
//! denial of cost 1.
//!
//! The cache is a fixed array of [`SLOTS`] entries indexed by the key's keyed
//! hash (`keyhash.rs`, random seed per limiter, so clients cannot aim keys
//! at one slot); a newer denial overwrites an older one in the same slot.
//! Its memory is fixed (about 100 KiB) whatever the traffic. Answers report
//! the stored decision with `retry_after` and `reset` shrunk by the time
//! passed since the denial (measured from before the request was sent, so a
//! cached denial never outlives Redis's own). Hits are counted
//! (`rl_stats.local_denials`).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::algorithm::{Verdict, NEVER};
use crate::keyhash::Seed;

/// Entries in the cache.
pub const SLOTS: usize = 1024;

#[derive(Clone, Copy, Default)]
struct Entry {
    /// Key fingerprint; 0 = empty.
    fp: u64,
    /// The denied cost: checks of this cost or more are denied.
    cost: u64,
    /// Local monotonic ns: when the denied request was sent, and until when it holds.
    at: u64,
    until: u64,
    verdict: Option<Verdict>,
}

pub struct Denials {
    seed: Seed,
    /// The smallest quota of the limiter's rates: a larger cost can never
    /// pass, and Redis answers it with "never", so it is not answered here.
    max_cost: u64,
    slots: Box<[Mutex<Entry>]>,
    hits: AtomicU64,
}

impl Denials {
    pub fn new(seed: Seed, max_cost: u64) -> Denials {
        Denials {
            seed,
            max_cost,
            slots: (0..SLOTS).map(|_| Mutex::new(Entry::default())).collect(),
            hits: AtomicU64::new(0),
        }
    }

    pub fn fingerprint(&self, key: &[u8]) -> u64 {
        self.seed.fingerprint(key)
    }

    fn slot(&self, fp: u64) -> &Mutex<Entry> {
        // The low bit of a fingerprint is always 1: index by the high bits.
        &self.slots[(fp >> 40) as usize % SLOTS]
    }

    /// A denial still in force for `cost` units of the key, in µs ticks.
    pub fn lookup(&self, fp: u64, cost: u64, now_ns: u64) -> Option<Verdict> {
        if cost == 0 {
            return None;
        }
        let e = *self.slot(fp).lock();
        if e.fp != fp || cost < e.cost || cost > self.max_cost || now_ns >= e.until {
            return None;
        }
        let mut v = e.verdict?;
        let elapsed_us = (now_ns - e.at) / 1000;
        let wait_us = (e.until - now_ns).div_ceil(1000);
        v.outcome.retry_after = wait_us;
        v.outcome.reset = v.outcome.reset.saturating_sub(elapsed_us).max(wait_us);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(v)
    }

    /// Redis denied `cost` units of the key; `sent_ns` is when we asked.
    pub fn remember(&self, fp: u64, cost: u64, sent_ns: u64, verdict: Verdict) {
        let o = verdict.outcome;
        if o.allowed || cost == 0 || o.retry_after == NEVER || o.retry_after == 0 {
            return;
        }
        let until = sent_ns.saturating_add(o.retry_after.saturating_mul(1000));
        *self.slot(fp).lock() = Entry { fp, cost, at: sent_ns, until, verdict: Some(verdict) };
    }

    pub fn forget(&self, fp: u64) {
        let mut e = self.slot(fp).lock();
        if e.fp == fp {
            *e = Entry::default();
        }
    }

    /// Checks answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Outcome;

    fn denied(retry_us: u64) -> Verdict {
        Verdict {
            index: 1,
            outcome: Outcome { allowed: false, limit: 5, remaining: 0, reset: 3000, retry_after: retry_us },
        }
    }

    #[test]
    fn holds_until_retry_after_for_same_or_larger_cost() {
        let d = Denials::new(Seed([1, 2]), 5);
        let fp = d.fingerprint(b"k");
        d.remember(fp, 2, 1_000_000, denied(500));
        assert!(d.lookup(fp, 1, 1_000_000).is_none(), "a smaller cost may pass");
        assert!(d.lookup(fp, 0, 1_000_000).is_none(), "peeks go to Redis");
        let v = d.lookup(fp, 2, 1_200_000).unwrap();
        assert_eq!((v.index, v.outcome.retry_after, v.outcome.reset), (1, 300, 2800));
        assert_eq!(d.lookup(fp, 3, 1_499_999).unwrap().outcome.retry_after, 1);
        assert!(d.lookup(fp, 6, 1_200_000).is_none(), "above every quota: Redis says never");
        assert!(d.lookup(fp, 2, 1_500_000).is_none());
        assert_eq!(d.hits(), 2);
        d.remember(fp, 1, 0, denied(NEVER));
        d.remember(fp, 1, 2_000_000, denied(100));
        assert!(d.lookup(d.fingerprint(b"other"), 1, 2_000_000).is_none());
        d.forget(fp);
        assert!(d.lookup(fp, 1, 2_000_000).is_none());
    }
}
