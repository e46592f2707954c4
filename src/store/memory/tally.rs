//! The denials memory answers from its over-limit cache (`../denials.rs`),
//! counted where they happen.
//!
//! Such a denial takes no lock of the table and writes nothing the threads
//! share: it is counted in one of [`STRIPES`] stripes, picked by the address
//! of the caller's stack, so each thread has its own (two threads share one
//! only by chance, which costs speed, never a count: a stripe is locked
//! with `try_lock`, and a caller that finds its stripe busy is answered by
//! the table instead). A stripe also holds the denials of the key it last
//! counted that `rl_top` has not seen yet: they go into the key's shard's
//! Limited sketch, all at once, when the stripe counts another key or
//! `rl_top` is asked (`flush`), so its counts stay exact.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::top::sketch::KEY_BYTES;

/// Stripes per limiter.
const STRIPES: usize = 64;

/// Words of a stripe's key: one byte more than a sketch keeps, so the
/// sketch still knows a longer key was cut.
const KEY_WORDS: usize = (KEY_BYTES + 1).div_ceil(8);

/// One stripe. Its fields are atomics only so that they can be shared
/// without `unsafe`: they are read and written (relaxed: plain loads and
/// stores) only by the holder of `busy`, which is taken with one swap and
/// given back with a release store, so counting costs one atomic
/// read-modify-write, on a line no other thread uses.
#[derive(Default)]
struct Stripe {
    busy: AtomicBool,
    /// Denials counted here, ever.
    denied: AtomicU64,
    /// The key whose denials are not in its sketch yet: its fingerprint,
    /// how many, its length (at most `KEY_BYTES + 1`) and its first bytes.
    pending_fp: AtomicU64,
    pending: AtomicU64,
    key_len: AtomicU64,
    key: [AtomicU64; KEY_WORDS],
}

/// Where a stripe's pending denials go: `(fingerprint, key, count)`.
pub type Flush<'a> = dyn FnMut(u64, &[u8], u64) + 'a;

/// A held stripe, given back when dropped.
struct Held<'a>(&'a Stripe);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

impl Stripe {
    fn try_hold(&self) -> Option<Held<'_>> {
        // (`then`, not `then_some`: a Held made and dropped would free the holder's stripe.)
        (!self.busy.swap(true, Ordering::Acquire)).then(|| Held(self))
    }

    /// Waits for the stripe (held for a few dozen instructions at a time).
    fn hold(&self) -> Held<'_> {
        loop {
            if let Some(held) = self.try_hold() {
                return held;
            }
            std::thread::yield_now();
        }
    }
}

impl Held<'_> {
    fn get(field: &AtomicU64) -> u64 {
        field.load(Ordering::Relaxed)
    }

    fn set(field: &AtomicU64, value: u64) {
        field.store(value, Ordering::Relaxed)
    }

    /// Hands the pending denials to `flush`.
    fn hand_over(&self, flush: &mut Flush) {
        let s = self.0;
        let pending = Self::get(&s.pending);
        if pending > 0 {
            let mut bytes = [0u8; KEY_WORDS * 8];
            for (chunk, word) in bytes.chunks_exact_mut(8).zip(&s.key) {
                chunk.copy_from_slice(&Self::get(word).to_le_bytes());
            }
            let len = (Self::get(&s.key_len) as usize).min(KEY_BYTES + 1);
            flush(Self::get(&s.pending_fp), &bytes[..len], pending);
            Self::set(&s.pending, 0);
        }
    }

    /// Makes `key` the pending one (none of its denials counted yet).
    fn take_key(&self, fp: u64, key: &[u8]) {
        let s = self.0;
        let kept = &key[..key.len().min(KEY_BYTES + 1)];
        for (i, word) in s.key.iter().enumerate() {
            let mut chunk = [0u8; 8];
            let part = kept.get(i * 8..).unwrap_or_default();
            let n = part.len().min(8);
            chunk[..n].copy_from_slice(&part[..n]);
            Self::set(word, u64::from_le_bytes(chunk));
        }
        Self::set(&s.key_len, kept.len() as u64);
        Self::set(&s.pending_fp, fp);
    }
}

pub struct Tally {
    /// Keep pending denials for `rl_top` (false: count only).
    keep_keys: bool,
    stripes: Box<[CachePadded<Stripe>]>,
}

impl Tally {
    pub fn new(keep_keys: bool) -> Tally {
        Tally { keep_keys, stripes: (0..STRIPES).map(|_| CachePadded::new(Stripe::default())).collect() }
    }

    /// This caller's stripe: by the address of its stack, which differs
    /// between threads (their stacks are megabytes apart) and is all but
    /// constant within one.
    #[inline]
    fn stripe(&self) -> &Stripe {
        let probe = 0u8;
        let at = std::ptr::addr_of!(probe) as usize as u64;
        &self.stripes[((at >> 16).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES]
    }

    /// Counts one denial of `key` (fingerprint `fp`); false, counting
    /// nothing, if the stripe is busy. A stripe holding another key's
    /// pending denials hands them to `flush` first.
    #[inline]
    pub fn count(&self, fp: u64, key: &[u8], flush: &mut Flush) -> bool {
        let Some(held) = self.stripe().try_hold() else { return false };
        let s = held.0;
        Held::set(&s.denied, Held::get(&s.denied) + 1);
        if self.keep_keys {
            if Held::get(&s.pending_fp) != fp {
                held.hand_over(flush);
                held.take_key(fp, key);
            }
            Held::set(&s.pending, Held::get(&s.pending) + 1);
        }
        true
    }

    /// Hands every stripe's pending denials to `flush` (for `rl_top`).
    pub fn flush(&self, flush: &mut Flush) {
        for stripe in self.stripes.iter() {
            stripe.hold().hand_over(flush);
        }
    }

    /// Denials counted, in all stripes.
    pub fn denied(&self) -> u64 {
        self.stripes.iter().map(|s| Held::get(&s.hold().0.denied)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_denial_and_hands_over_each_keys_batch() {
        let tally = Tally::new(true);
        let mut flushed = Vec::new();
        let long = [b'x'; 100];
        for (fp, key) in [(3, &b"a"[..]), (3, b"a"), (5, &long[..]), (3, b"a")] {
            assert!(tally.count(fp, key, &mut |fp, key, n| flushed.push((fp, key.to_vec(), n))));
        }
        assert_eq!(flushed, vec![(3, b"a".to_vec(), 2), (5, long[..KEY_BYTES + 1].to_vec(), 1)]);
        tally.flush(&mut |fp, key, n| flushed.push((fp, key.to_vec(), n)));
        assert_eq!(flushed.last(), Some(&(3, b"a".to_vec(), 1)));
        tally.flush(&mut |_, _, _| panic!("nothing is pending"));
        assert_eq!(tally.denied(), 4);
        let counting = Tally::new(false);
        assert!(counting.count(1, b"k", &mut |_, _, _| panic!("nothing is kept")));
        assert_eq!(counting.denied(), 1);
    }

    /// Threads counting at once, while another flushes (as `rl_top` does),
    /// lose no count and hand none over twice.
    #[test]
    fn threads_lose_no_count() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        let tally = Tally::new(true);
        let (flushed, counted, done) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
        let add = |_: u64, _: &[u8], n: u64| {
            flushed.fetch_add(n, Relaxed);
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Relaxed) {
                    tally.flush(&mut add.clone());
                }
            });
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let (tally, counted) = (&tally, &counted);
                    s.spawn(move || {
                        for i in 0..100_000u64 {
                            if tally.count(t * 10 + i % 3, b"k", &mut add.clone()) {
                                counted.fetch_add(1, Relaxed);
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().for_each(|w| w.join().unwrap());
            done.store(true, Relaxed);
        });
        tally.flush(&mut add.clone());
        let counted = counted.into_inner();
        assert!(counted > 0);
        assert_eq!(tally.denied(), counted);
        assert_eq!(flushed.load(Relaxed), counted);
    }
}
