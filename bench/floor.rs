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
//! Run by scripts/bench.sh; by hand: `cargo bench --bench floor -- [iterations [case]]`.

use std::sync::atomic::{AtomicU64, Ordering};

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

fn main() {
    let slots = 2 * (cases::MANY_KEYS + 2 * cases::THREAD_KEYS);
    cases::main("physical floor", |denying| Floor {
        clock: Clock::new(),
        seed: Seed::random().expect("/dev/urandom"),
        words: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        denying,
    });
}
