//! The denials answered from the over-limit cache (`denials.rs`), counted
//! where they happen, for memory and shm alike.
//!
//! Such a denial takes no lock of the table and writes nothing the threads
//! (or processes) share: it is counted in one of the stripes, picked by the
//! address of the caller's stack mixed with a salt (shm: the handle's owner
//! word, which differs between processes, whose stacks may sit at the same
//! addresses), so each thread has its own. Two threads share one only by
//! chance, which costs speed, never a count: a stripe is held with one
//! compare-and-swap of its `holder` word, and a caller that finds its
//! stripe held is answered by the table instead. A stripe also holds the
//! denials of the key it last counted that `rl_top` has not seen yet: they
//! go into the key's shard's Limited sketch, all at once, when the stripe
//! counts another key or `rl_top` is asked (`flush`), so its counts stay
//! exact.
//!
//! Where the stripes live is the backend's: a boxed slice (memory), or the
//! shm region (`Tally::over` a view of it). There, any process may die at
//! any instruction while holding a stripe, so its stores are ordered to
//! leave every prefix valid, and `holder` is the holder's owner word
//! (shm/owner.rs), so that a stripe left held by a dead process can be
//! taken over (`flush`, by `rl_top`) and its pending batch handed on:
//!
//! - `denied` is one aligned store, after the batch bookkeeping: a kill
//!   leaves the dead check counted or not (nobody got its answer);
//! - a new key is written only while `pending` is 0 (its bytes, length,
//!   then fingerprint), and `pending` grows after: a batch is never paired
//!   with half a key;
//! - a batch is recorded into the sketch (under its shard's lock) before
//!   `pending` is zeroed: a kill between the two leaves the batch to be
//!   recorded again by whoever takes the stripe over. So a kill can count
//!   one batch twice in `rl_top` (an overcount, the direction Space-Saving
//!   already errs in: a listed count stays at or above the true count), in
//!   a window of a few instructions, and never loses one; `limited` is never
//!   touched by it.
//!
//! Values read back are bounded before use (a key length at most
//! `KEY_BYTES + 1`; a fingerprint with its low bit clear, never a real one,
//! is no batch; a count at or above 2^62 is damage, not denials, and
//! restarts from 0), so a damaged stripe costs wrong counts, never a crash.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::top::sketch::KEY_BYTES;

/// Words of a stripe's key: one byte more than a sketch keeps, so the
/// sketch still knows a longer key was cut.
const KEY_WORDS: usize = (KEY_BYTES + 1).div_ceil(8);

/// A stripe count this large was not counted but damaged (see shm's
/// `DAMAGED_COUNT`): it is read as 0, and restarts from 0.
const DAMAGED: u64 = 1 << 62;

/// One stripe, two cache lines of its own. Only atomics, `repr(C)`: any
/// bytes are a valid value, so shm lays stripes in its region as they are
/// (store/shm/layout.rs). The fields other than `holder` are read and
/// written (relaxed: plain loads and stores) only by the holder, who took
/// `holder` with one compare-and-swap and gives it back with a release
/// store; `denied` alone is also read by anyone (`denied()`).
#[repr(C, align(128))]
#[derive(Default)]
pub struct Stripe {
    /// 0: free; else its holder (memory: 1; shm: the owner word).
    holder: AtomicU64,
    /// Denials counted here, ever.
    denied: AtomicU64,
    /// The key whose denials are not in its sketch yet: its fingerprint,
    /// how many, its length (at most `KEY_BYTES + 1`) and its first bytes.
    pending_fp: AtomicU64,
    pending: AtomicU64,
    key_len: AtomicU64,
    key: [AtomicU64; KEY_WORDS],
}

/// Bytes of a stripe.
pub const STRIPE_BYTES: usize = 128;
const _: () = assert!(std::mem::size_of::<Stripe>() == STRIPE_BYTES);

/// Where a stripe's pending denials go: `(fingerprint, key, count)`; true
/// once they are recorded, false if they could not be (shm: the shard's
/// lock not acquired in time): then they stay pending.
pub type Flush<'a> = dyn FnMut(u64, &[u8], u64) -> bool + 'a;

/// A held stripe, given back when dropped.
struct Held<'a>(&'a Stripe);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.holder.store(0, Ordering::Release);
    }
}

impl Stripe {
    fn try_hold(&self, me: u64) -> Option<Held<'_>> {
        // (`then`, not `then_some`: a Held made and dropped would free the holder's stripe.)
        self.holder.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok().then(|| Held(self))
    }
}

fn get(field: &AtomicU64) -> u64 {
    field.load(Ordering::Relaxed)
}

fn set(field: &AtomicU64, value: u64) {
    field.store(value, Ordering::Relaxed)
}

impl Held<'_> {
    /// Hands the pending denials to `flush`; false if it could not take
    /// them (they stay pending).
    fn hand_over(&self, flush: &mut Flush) -> bool {
        let s = self.0;
        let pending = get(&s.pending);
        if pending == 0 {
            return true;
        }
        let fp = get(&s.pending_fp);
        // A real fingerprint has its low bit set (keyhash.rs); anything
        // else is damage, dropped.
        if fp & 1 == 1 {
            let mut bytes = [0u8; KEY_WORDS * 8];
            for (chunk, word) in bytes.chunks_exact_mut(8).zip(&s.key) {
                chunk.copy_from_slice(&get(word).to_le_bytes());
            }
            let len = get(&s.key_len).min(KEY_BYTES as u64 + 1) as usize;
            if !flush(fp, &bytes[..len], pending) {
                return false;
            }
        }
        set(&s.pending, 0);
        true
    }

    /// Makes `key` the pending one (none of its denials counted yet; only
    /// called with `pending` at 0).
    fn take_key(&self, fp: u64, key: &[u8]) {
        let s = self.0;
        let kept = &key[..key.len().min(KEY_BYTES + 1)];
        for (i, word) in s.key.iter().enumerate() {
            let mut chunk = [0u8; 8];
            let part = kept.get(i * 8..).unwrap_or_default();
            let n = part.len().min(8);
            chunk[..n].copy_from_slice(&part[..n]);
            set(word, u64::from_le_bytes(chunk));
        }
        set(&s.key_len, kept.len() as u64);
        set(&s.pending_fp, fp);
    }
}

/// The stripes of a limiter (memory) or of a region (shm), in `S`: a
/// `Box<[Stripe]>` of their own, or a view of the region's.
pub struct Tally<S = Box<[Stripe]>> {
    /// Keep pending denials for `rl_top` (false: count only).
    keep_keys: bool,
    stripes: S,
}

impl Tally {
    /// `stripes` stripes of their own.
    pub fn new(stripes: usize, keep_keys: bool) -> Tally {
        Tally::over((0..stripes.max(1)).map(|_| Stripe::default()).collect(), keep_keys)
    }
}

impl<S: Deref<Target = [Stripe]>> Tally<S> {
    /// The tally over `stripes` (at least one).
    pub fn over(stripes: S, keep_keys: bool) -> Tally<S> {
        assert!(!stripes.is_empty());
        Tally { keep_keys, stripes }
    }

    /// This caller's stripe: by the address of its stack, which differs
    /// between threads (their stacks are megabytes apart) and is all but
    /// constant within one, mixed with `salt`.
    #[inline]
    fn stripe(&self, salt: u64) -> &Stripe {
        let probe = 0u8;
        let at = std::ptr::addr_of!(probe) as usize as u64;
        let h = (at >> 16).wrapping_add(salt.wrapping_mul(0xD6E8_FEB8_6659_FD93)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.stripes[(((h >> 32) * self.stripes.len() as u64) >> 32) as usize]
    }

    /// Counts one denial of `key` (fingerprint `fp`) for the holder `me`
    /// (never 0) in the stripe `salt` picks; false, counting nothing, if
    /// the stripe is held, or if it holds another key's pending denials and
    /// `flush` could not take them.
    #[inline]
    pub fn count(&self, me: u64, salt: u64, fp: u64, key: &[u8], flush: &mut Flush) -> bool {
        let Some(held) = self.stripe(salt).try_hold(me) else { return false };
        let s = held.0;
        if self.keep_keys && get(&s.pending_fp) != fp {
            if !held.hand_over(flush) {
                return false;
            }
            held.take_key(fp, key);
        }
        let denied = get(&s.denied);
        set(&s.denied, if denied >= DAMAGED { 1 } else { denied + 1 });
        if self.keep_keys {
            set(&s.pending, get(&s.pending).saturating_add(1));
        }
        true
    }

    /// Hands every stripe's pending denials to `flush` (for `rl_top`), as
    /// holder `me`. A stripe found held is waited for with `wait(holder,
    /// me)`, which takes the word for `me` (true: memory spins on it; shm
    /// waits as for a shard lock, taking over a dead holder's) or gives up
    /// (false: that stripe's batch stays pending). Returns the stripes given
    /// up on.
    pub fn flush(&self, me: u64, wait: &mut dyn FnMut(&AtomicU64, u64) -> bool, flush: &mut Flush) -> usize {
        let mut missed = 0;
        for stripe in self.stripes.iter() {
            let held = match stripe.try_hold(me) {
                Some(held) => held,
                None if wait(&stripe.holder, me) => Held(stripe),
                None => {
                    missed += 1;
                    continue;
                }
            };
            if !held.hand_over(flush) {
                missed += 1;
            }
        }
        missed
    }

    /// Denials counted, in all stripes (each read as it stands: a stripe
    /// being counted in is seen before or after that count).
    pub fn denied(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.denied.load(Ordering::Acquire))
            .filter(|&n| n < DAMAGED)
            .fold(0, u64::saturating_add)
    }
}

#[cfg(test)]
impl<S: Deref<Target = [Stripe]>> Tally<S> {
    /// Tests: takes the stripe `salt` picks for this caller, for `me`, and
    /// never gives it back (as a holder killed with it); false if held.
    pub fn hold_and_leave(&self, me: u64, salt: u64) -> bool {
        self.stripe(salt).try_hold(me).map(std::mem::forget).is_some()
    }

    /// Tests: the denials pending in all stripes.
    pub fn pending(&self) -> u64 {
        self.stripes.iter().map(|s| get(&s.pending)).sum()
    }
}

/// `Tally::flush`'s wait for a stripe of this process's own heap (memory):
/// held for a few dozen instructions at a time, by a live thread.
pub fn spin(holder: &AtomicU64, me: u64) -> bool {
    while holder.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_denial_and_hands_over_each_keys_batch() {
        let tally = Tally::new(64, true);
        let mut flushed = Vec::new();
        let long = [b'x'; 100];
        for (fp, key) in [(3, &b"a"[..]), (3, b"a"), (5, &long[..]), (3, b"a")] {
            assert!(tally.count(1, 0, fp, key, &mut |fp, key, n| {
                flushed.push((fp, key.to_vec(), n));
                true
            }));
        }
        assert_eq!(flushed, vec![(3, b"a".to_vec(), 2), (5, long[..KEY_BYTES + 1].to_vec(), 1)]);
        tally.flush(1, &mut spin, &mut |fp, key, n| {
            flushed.push((fp, key.to_vec(), n));
            true
        });
        assert_eq!(flushed.last(), Some(&(3, b"a".to_vec(), 1)));
        tally.flush(1, &mut spin, &mut |_, _, _| panic!("nothing is pending"));
        assert_eq!(tally.denied(), 4);
        let counting = Tally::new(64, false);
        assert!(counting.count(1, 0, 1, b"k", &mut |_, _, _| panic!("nothing is kept")));
        assert_eq!(counting.denied(), 1);
    }

    /// Threads counting at once, while another flushes (as `rl_top` does),
    /// lose no count and hand none over twice.
    #[test]
    fn threads_lose_no_count() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        let tally = Tally::new(64, true);
        let (flushed, counted, done) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
        let add = |_: u64, _: &[u8], n: u64| {
            flushed.fetch_add(n, Relaxed);
            true
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Relaxed) {
                    tally.flush(1, &mut spin, &mut add.clone());
                }
            });
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let (tally, counted) = (&tally, &counted);
                    s.spawn(move || {
                        for i in 0..100_000u64 {
                            if tally.count(1 + t, 0, (t * 10 + i % 3) | 1, b"k", &mut add.clone()) {
                                counted.fetch_add(1, Relaxed);
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().for_each(|w| w.join().unwrap());
            done.store(true, Relaxed);
        });
        tally.flush(1, &mut spin, &mut add.clone());
        let counted = counted.into_inner();
        assert!(counted > 0);
        assert_eq!(tally.denied(), counted);
        assert_eq!(flushed.load(Relaxed), counted);
    }
}
