//! The "physical floor" column of `make bench`: what any keyed, exact rate
//! limiter must do per check, and nothing else, through the cases of
//! bench/cases.rs. Per check: one reading of the clock libratelimit uses
//! (`ratelimit::clock::Clock`, the TSC scaled to ns), one keyed hash of the
//! key (`ratelimit::keyhash`, SipHash-1-3 under a secret seed: the price of
//! keys that clients cannot aim at one slot), and one atomic read-modify-write
//! of the key's word in a table of 8-byte words (an allowed check must record
//! its spending; two threads on one key must agree on it). A denial is the
//! same with a plain load instead of the write. No decision, no answer
//! fields, no FFI, no collision handling, no bound on keys: a floor, not a
//! limiter.
//!
//! The second column it prints, "minimal limiter", is the least a limiter
//! with libratelimit's semantics does, written only to be measured: the
//! same clock and keyed hash, then the key's shard (64 of them, picked by
//! the hash, each a `parking_lot` mutex on its own cache line) locked, the
//! key's slot found by linear probing (its fingerprint and token-bucket
//! state, two words; four slots per key of the bench, so it never fills),
//! GCRA decided at the clock's nanosecond, the new state stored, and the
//! answer's remaining, reset and retry-after computed. No bound on keys and
//! no eviction, no over-limit cache (a denial takes the lock too), no
//! counters, no `rl_top`, one rate, no C API. What libratelimit's memory
//! column costs above it is what its features cost (BENCHMARKS.md).
//!
//! Run by scripts/bench.sh; by hand: `cargo bench --bench floor -- [iterations [case]]`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use ratelimit::clock::Clock;
use ratelimit::keyhash::Seed;

#[path = "cases.rs"]
mod cases;

struct Floor {
    clock: Clock,
    seed: Seed,
    /// One word per slot, twice as many slots as the bench has keys.
    words: Box<[AtomicU64]>,
    /// One check per key, then denials: the word holds the time the key is
    /// denied until.
    denying: bool,
}

impl cases::Limiter for Floor {
    #[inline]
    fn check(&self, key: &String) -> bool {
        let now = self.clock.now();
        let fp = self.seed.fingerprint(key.as_bytes());
        let word = &self.words[(((fp >> 32) * self.words.len() as u64) >> 32) as usize];
        if !self.denying {
            word.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if word.load(Ordering::Relaxed) > now {
            return false;
        }
        word.store(u64::MAX, Ordering::Relaxed);
        true
    }
}

/// One shard of the minimal limiter: slots of `[fingerprint, tat]`, a
/// fingerprint of 0 marking an empty one (fingerprints are odd).
type Slots = Box<[[u64; 2]]>;

struct Minimal {
    clock: Clock,
    seed: Seed,
    /// GCRA's emission interval and bucket, in ns.
    interval: u64,
    bucket: u64,
    shards: Box<[CachePadded<Mutex<Slots>>]>,
}

impl Minimal {
    /// `make bench`'s configurations: `rate=1000000000/minute` (the burst
    /// as large as the rate), or one check per key per hour.
    fn new(denying: bool) -> Minimal {
        const SHARDS: usize = 64;
        let (interval, burst) = if denying { (3_600_000_000_000, 1) } else { (60, 1_000_000_000) };
        let per_shard = (4 * (cases::MANY_KEYS + 2 * cases::THREAD_KEYS) / SHARDS).next_power_of_two();
        Minimal {
            clock: Clock::new(),
            seed: Seed::random().expect("/dev/urandom"),
            interval,
            bucket: interval * burst,
            shards: (0..SHARDS).map(|_| CachePadded::new(Mutex::new(vec![[0; 2]; per_shard].into()))).collect(),
        }
    }
}

impl cases::Limiter for Minimal {
    #[inline]
    fn check(&self, key: &String) -> bool {
        let fp = self.seed.fingerprint(key.as_bytes());
        let now = self.clock.now();
        let mut slots = self.shards[(((fp >> 32) * self.shards.len() as u64) >> 32) as usize].lock();
        let mask = slots.len() - 1;
        let mut i = (fp >> 1) as usize & mask;
        while slots[i][0] != fp && slots[i][0] != 0 {
            i = (i + 1) & mask;
        }
        // GCRA as in src/algorithm/gcra.rs, for a cost of 1.
        let tat = slots[i][1];
        let now = now.max(tat.saturating_sub(self.bucket));
        let ahead = tat.saturating_sub(now);
        let free = self.bucket - ahead;
        let allowed = self.interval <= free;
        let (remaining, reset, retry_after) = if allowed {
            slots[i] = [fp, now + ahead + self.interval];
            ((free - self.interval) / self.interval, ahead + self.interval, 0)
        } else {
            (free / self.interval, ahead, self.interval - free)
        };
        drop(slots);
        black_box((remaining, reset, retry_after));
        allowed
    }
}

fn main() {
    let slots = 2 * (cases::MANY_KEYS + 2 * cases::THREAD_KEYS);
    cases::main("physical floor", |denying| Floor {
        clock: Clock::new(),
        seed: Seed::random().expect("/dev/urandom"),
        words: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        denying,
    });
    cases::main("minimal limiter", Minimal::new);
}
