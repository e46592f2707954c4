//! Concurrency limits: at most N leases of a key held at once, each expiring
//! on its own (`concurrency=N lease=DURATION`).
//!
//! A key's state is N words, one per lease place, in nanosecond ticks (the
//! memory and shm backends; Redis keeps a sorted set, see redis/leases.lua):
//!
//! ```text
//! bits 63..22  expiry, in units of 2^20 ns (1.05 ms), rounded up; 0 = free
//! bits 21..0   the tag of the place's latest lease (never 0 once used)
//! ```
//!
//! A place is held while its expiry lies ahead of now; released or expired,
//! it keeps its tag. Each acquire of a place takes the next tag, so the id
//! handed out, `tag << 42 | place << 32 | (32 bits of the key's
//! fingerprint)`, names one grant: a stale id (released, expired, or released
//! twice) no longer matches its place's tag, and a forged one also has to
//! match the key's fingerprint bits. A place's tags restart from a value
//! taken from the clock when its key's state is dropped and made again, so
//! an id of an earlier life of the key matches only by a 1 in 2^22 chance.
//!
//! Every change writes one aligned word, so a process killed in the middle
//! of one leaves the old word or the new one (the shm backend needs no undo
//! record for it). A lease outlives its holder only until it expires.
//!
//! Expiries are kept to 2^20 ns, rounded up: a lease lasts up to 1.05 ms
//! longer than asked. 42 bits of such units reach the year 2116.
//!
//! The functions are total: any words (a damaged shm slot), any `now`, any
//! id: an answer, never a panic.

use super::{Outcome, NEVER};

/// Bits of a place word (and of an id) that hold the tag.
const TAG_BITS: u32 = 22;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// Nanoseconds per unit of a stored expiry (a power of two: a shift).
const UNIT_SHIFT: u32 = 20;
/// The latest expiry a word can hold, in units.
const MAX_EXPIRY: u64 = (1 << (64 - TAG_BITS)) - 1;
/// Most lease places per key (`concurrency=` is at most this).
pub const MAX_SLOTS: usize = 1024;

/// A concurrency limit, in nanosecond ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leases {
    /// N: leases a key may hold at once (1..=MAX_SLOTS).
    pub slots: usize,
    /// How long a lease lasts from its acquire or renew, in ticks.
    pub lease: u64,
}

fn expiry_of(word: u64) -> u64 {
    word >> TAG_BITS
}

/// The expiry word for a lease taken at `now`, in units, rounded up.
fn expiry_units(now: u64, lease: u64) -> u64 {
    let end = now.saturating_add(lease);
    (end >> UNIT_SHIFT).saturating_add((end & ((1 << UNIT_SHIFT) - 1) != 0) as u64).min(MAX_EXPIRY)
}

/// The tick at which a held word's lease ends.
fn ends_at(word: u64) -> u64 {
    expiry_of(word) << UNIT_SHIFT // at most 2^62: 42 bits of units
}

fn held(word: u64, now: u64) -> bool {
    ends_at(word) > now
}

/// The id of the lease in `place` with `tag`, for the key of fingerprint `fp`.
fn id(tag: u64, place: usize, fp: u64) -> u64 {
    tag << 42 | (place as u64) << 32 | (fp >> 32)
}

impl Leases {
    /// The outcome for a key whose places are `words` (after any change):
    /// `remaining` free places, `reset` until every lease has expired, and,
    /// when `allowed` is false, `retry_after` until the earliest expires.
    fn outcome(&self, words: &[u64], now: u64, allowed: bool) -> Outcome {
        let (mut count, mut first, mut last) = (0u64, u64::MAX, now);
        for &w in words.iter().filter(|&&w| held(w, now)) {
            count += 1;
            first = first.min(ends_at(w));
            last = last.max(ends_at(w));
        }
        let slots = self.slots as u64;
        Outcome {
            allowed,
            limit: slots,
            remaining: slots.saturating_sub(count),
            reset: last - now,
            retry_after: match allowed {
                true => 0,
                false if count == 0 => NEVER, // no place at all (a damaged slot)
                false => first - now,
            },
        }
    }

    /// Takes a free place of the key for a lease from `now`. Returns the
    /// outcome and, if allowed, the lease's id (nonzero); `words` is written
    /// only then, one word. `fp` is the key's fingerprint.
    pub fn acquire(&self, words: &mut [u64], now: u64, fp: u64) -> (Outcome, u64) {
        let n = self.slots.min(words.len());
        let words = &mut words[..n];
        let Some(place) = words.iter().position(|&w| !held(w, now)) else {
            return (self.outcome(words, now, false), 0);
        };
        let old_tag = words[place] & TAG_MASK;
        // A place never used starts from the clock (see the module docs).
        let tag = match old_tag {
            0 => (now >> 10) & TAG_MASK,
            t => (t + 1) & TAG_MASK,
        }
        .max(1);
        words[place] = expiry_units(now, self.lease) << TAG_BITS | tag;
        (self.outcome(words, now, true), id(tag, place, fp))
    }

    /// The place `lease` names, if that lease is the place's latest grant.
    fn place_of(&self, words: &[u64], lease: u64, fp: u64) -> Option<usize> {
        let place = ((lease >> 32) & 0x3ff) as usize;
        let tag = lease >> 42;
        let ok = lease & 0xffff_ffff == fp >> 32 && tag != 0 && place < self.slots.min(words.len());
        (ok && words[place] & TAG_MASK == tag).then_some(place)
    }

    /// Extends `lease` to `now + lease`: true if it was held.
    pub fn renew(&self, words: &mut [u64], now: u64, lease: u64, fp: u64) -> bool {
        match self.place_of(words, lease, fp) {
            Some(p) if held(words[p], now) => {
                words[p] = expiry_units(now, self.lease) << TAG_BITS | (words[p] & TAG_MASK);
                true
            }
            _ => false,
        }
    }

    /// Frees `lease`: true if it was held. An expired lease's place is
    /// already free; it is cleared all the same (nothing else changes).
    pub fn release(&self, words: &mut [u64], now: u64, lease: u64, fp: u64) -> (bool, bool) {
        match self.place_of(words, lease, fp) {
            Some(p) if expiry_of(words[p]) != 0 => {
                let was_held = held(words[p], now);
                words[p] &= TAG_MASK;
                (was_held, true)
            }
            _ => (false, false),
        }
    }

    /// The key's places as a peek sees them.
    pub fn peek(&self, words: &[u64], now: u64) -> Outcome {
        let words = &words[..self.slots.min(words.len())];
        let free = words.iter().any(|&w| !held(w, now));
        self.outcome(words, now, free)
    }

    /// The time from which the key holds no lease (its state can go).
    pub fn fresh_at(&self, words: &[u64]) -> u64 {
        words.iter().map(|&w| if expiry_of(w) == 0 { 0 } else { ends_at(w) }).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: u64 = 0xdead_beef_0000_0001;
    const MS: u64 = 1_000_000;

    fn leases(n: usize, lease_ms: u64) -> Leases {
        Leases { slots: n, lease: lease_ms * MS }
    }

    #[test]
    fn n_holders_then_denied_until_the_first_expires() {
        let l = leases(3, 1000);
        let mut w = vec![0u64; 3];
        let mut ids = Vec::new();
        for (i, left) in [2u64, 1, 0].into_iter().enumerate() {
            let (o, id) = l.acquire(&mut w, 10_000 * MS + i as u64 * MS, FP);
            assert!(o.allowed && id != 0);
            assert_eq!((o.limit, o.remaining), (3, left));
            ids.push(id);
        }
        let (o, id) = l.acquire(&mut w, 10_500 * MS, FP);
        assert_eq!((o.allowed, id, o.remaining), (false, 0, 0));
        // The first lease ends at 11_000 ms, rounded up to a 2^20 ns unit.
        assert!(o.retry_after >= 500 * MS && o.retry_after < 502 * MS, "{o:?}");
        assert!(o.reset >= 502 * MS && o.reset < 504 * MS, "{o:?}");
        let (o, id) = l.acquire(&mut w, 11_002 * MS, FP);
        assert!(o.allowed && id != 0 && !ids.contains(&id));
    }

    #[test]
    fn release_renew_and_stale_or_forged_ids() {
        let l = leases(2, 1000);
        let mut w = vec![0u64; 2];
        let now = 5_000 * MS;
        let (_, a) = l.acquire(&mut w, now, FP);
        assert_eq!(l.release(&mut w, now, a, FP), (true, true));
        assert_eq!(l.release(&mut w, now, a, FP), (false, false), "twice: harmless");
        assert!(!l.renew(&mut w, now, a, FP));
        let (_, b) = l.acquire(&mut w, now, FP);
        assert_ne!(a, b, "the place's next grant has another id");
        assert_eq!(l.release(&mut w, now, a, FP), (false, false), "a stale id frees nothing");
        assert_eq!(l.peek(&w, now).remaining, 1);
        for forged in [0, 1, u64::MAX, b ^ 1, b ^ (1 << 32), b ^ (1 << 42), b | 0x3ff << 32] {
            assert_eq!(l.release(&mut w, now, forged, FP), (false, false), "{forged:#x}");
            assert!(!l.renew(&mut w, now, forged, FP));
        }
        assert_eq!(l.release(&mut w, now, b, FP ^ (1 << 40)), (false, false), "another key's id");
        // Renewed just before it expires, it holds on.
        assert!(l.renew(&mut w, now + 999 * MS, b, FP));
        assert_eq!(l.peek(&w, now + 1500 * MS).remaining, 1);
        // Expired: renew and release say 0.
        assert!(!l.renew(&mut w, now + 2100 * MS, b, FP));
        assert_eq!(l.release(&mut w, now + 2100 * MS, b, FP), (false, true));
        assert_eq!(l.fresh_at(&w), 0);
    }

    #[test]
    fn arbitrary_words_times_and_ids() {
        let l = leases(4, 60_000);
        let odd = [0, 1, TAG_MASK, u64::MAX, u64::MAX - 1, 1 << 63, MAX_EXPIRY << TAG_BITS];
        for a in odd {
            for b in odd {
                for now in [0, 1, 1 << 40, u64::MAX - 1, u64::MAX] {
                    let mut w = [a, b, 0, u64::MAX];
                    let (o, id) = l.acquire(&mut w, now, FP);
                    assert!(o.remaining <= 4 && (o.allowed == (id != 0)));
                    let _ = l.renew(&mut w, now, id, FP);
                    let _ = l.release(&mut w, now, id ^ 5, FP);
                    let _ = l.fresh_at(&w);
                    assert!(l.peek(&w, now).allowed || l.peek(&w, now).retry_after > 0);
                }
            }
        }
    }

    /// Random acquires, renews and releases (good, stale and forged ids)
    /// against a model of the held leases: the places agree with it at
    /// every step, never more than N are held, and every id is named once.
    #[test]
    fn agrees_with_a_model_of_held_leases() {
        let mut x = 0x3C6E_F372_FE94_F82Bu64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for n in [1usize, 2, 5, 16] {
            let l = leases(n, 100);
            let mut w = vec![0u64; n];
            let mut now = 1 << 40;
            let mut model: Vec<(u64, u64)> = Vec::new(); // (id, ends at)
            let mut old_ids: Vec<u64> = Vec::new();
            let unit = 1u64 << UNIT_SHIFT;
            for _ in 0..20_000 {
                now += next(30 * MS);
                model.retain(|&(_, end)| end > now);
                match next(4) {
                    0 | 1 => {
                        let (o, id) = l.acquire(&mut w, now, FP);
                        assert_eq!(o.allowed, model.len() < n, "{n}: {o:?}");
                        if o.allowed {
                            assert!(id != 0 && !model.iter().any(|&(m, _)| m == id));
                            model.push((id, (now + 100 * MS).div_ceil(unit) * unit));
                        }
                        assert_eq!(o.remaining, (n - model.len()) as u64);
                    }
                    2 => {
                        let pick = if !model.is_empty() && next(2) == 0 {
                            model[next(model.len() as u64) as usize].0
                        } else if !old_ids.is_empty() {
                            old_ids[next(old_ids.len() as u64) as usize]
                        } else {
                            next(u64::MAX)
                        };
                        let held = model.iter().position(|&(m, _)| m == pick);
                        if next(2) == 0 {
                            assert_eq!(l.release(&mut w, now, pick, FP).0, held.is_some());
                            if let Some(i) = held {
                                old_ids.push(model.swap_remove(i).0);
                            }
                        } else {
                            assert_eq!(l.renew(&mut w, now, pick, FP), held.is_some());
                            if let Some(i) = held {
                                model[i].1 = (now + 100 * MS).div_ceil(unit) * unit;
                            }
                        }
                    }
                    _ => {
                        let o = l.peek(&w, now);
                        assert_eq!(o.remaining, (n - model.len()) as u64);
                        let first = model.iter().map(|&(_, e)| e).min();
                        if model.len() == n {
                            assert_eq!(Some(o.retry_after), first.map(|e| e - now));
                        }
                    }
                }
            }
        }
    }
}
