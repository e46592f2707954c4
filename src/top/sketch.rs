//! A Space-Saving sketch (Metwally, Agrawal, El Abbadi, 2005) of `n`
//! counters, kept in plain `u64` words so that the memory backend can hold it
//! in the heap and the shm backend in the shared region, with the same code.
//!
//! ## What it promises
//!
//! For a stream of (key, weight) with total weight `W`, recorded into a
//! fresh sketch of `n` counters:
//!
//! - every listed key has `count - error <= true weight <= count`;
//! - every key whose true weight exceeds `W / n` is listed;
//! - the counts add up to `W` (each record adds its weight to one counter).
//!
//! Keys are told apart by a 64-bit keyed hash of the WHOLE key (the table's
//! fingerprint, keyhash.rs): two keys that share their first 64 bytes are two
//! keys. Only the first 64 bytes are kept, with the full length's
//! "truncated" flag.
//!
//! ## Words
//!
//! ```text
//! 0                floor   the largest count ever evicted: a key not listed
//!                          has a true weight of at most this
//! 1 ..  1+n        fp      each entry's key fingerprint; 0 = empty entry
//! 1+n .. 1+2n      count   each entry's estimate (never below the true weight)
//! 1+2n .. 1+3n     error   each entry's overestimate bound
//! 1+3n .. 1+4n     meta    bits 0..32: bytes of the key kept (<= 64);
//!                          bit 32: the key was longer than 64 bytes
//! 1+4n .. 1+12n    key     8 words (64 bytes) per entry, native-endian
//! ```
//!
//! A record finds its key by one pass over the fingerprints; a key not
//! listed takes the first empty entry, or else replaces the entry with the
//! smallest count (Space-Saving's rule): it inherits that count as its
//! `error` and adds its weight. So a record costs one pass over `n`
//! fingerprints (and one over the counts for a key not listed).
//!
//! ## A writer killed at any instruction (shm)
//!
//! In shared memory the sketch is written under a shard lock by processes
//! that may die at any instruction; the next holder uses what is there
//! without any repair. So every state between two stores is valid:
//!
//! - adding to a listed key's count is one aligned 8-byte store;
//! - a new entry is written as a table slot is (table/slot_writes.rs): the floor is
//!   raised to the evicted count first, then the fingerprint is zeroed (the
//!   entry is empty from then on, whatever its other words hold), then the
//!   count, error, meta and key bytes are written, and the fingerprint last.
//!
//! A kill in the middle of a new entry leaves it empty, with the floor
//! already covering the key it evicted; the key being inserted loses the one
//! occurrence of the dead check (which nobody got an answer for, as with the
//! stats counters). Entries taking an empty place start from the floor, not
//! from 0, so every listed count stays an upper bound. Words damaged by other
//! means (a stray write) can make counts wrong but never make a read go
//! outside the sketch or panic: `read` clamps the key length to 64 and the
//! error to the count, and counts only ever saturate.

use std::sync::atomic::{compiler_fence, Ordering};

/// Bytes of a key kept in an entry.
pub const KEY_BYTES: usize = 64;
const KEY_WORDS: usize = KEY_BYTES / 8;
const TRUNCATED: u64 = 1 << 32;

/// One listed key, as read from a sketch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopEntry {
    /// The key's fingerprint (a hash of the whole key).
    pub fp: u64,
    /// The key's first `key_len` bytes; the rest are 0.
    pub key: [u8; KEY_BYTES],
    /// Bytes of `key` in use, at most 64.
    pub key_len: u32,
    /// The key was longer than 64 bytes.
    pub truncated: bool,
    /// Never below the key's true weight.
    pub count: u64,
    /// `count - error` is never above the key's true weight.
    pub error: u64,
}

/// A sketch of `n` counters over `words(n)` words.
pub struct Sketch<'a> {
    words: &'a mut [u64],
    n: usize,
}

/// Words of a sketch of `n` counters.
pub const fn words(n: usize) -> usize {
    1 + (4 + KEY_WORDS) * n
}

impl<'a> Sketch<'a> {
    /// The sketch of `n` counters in `words` (at least `words(n)` long; the
    /// rest is ignored). A fresh sketch is all zeros.
    pub fn new(words: &'a mut [u64], n: usize) -> Sketch<'a> {
        Sketch { words: &mut words[..self::words(n)], n }
    }

    /// Adds `weight` to the key `key` whose fingerprint is `fp` (never 0).
    #[inline]
    pub fn record(&mut self, fp: u64, key: &[u8], weight: u64) {
        let n = self.n;
        let Some((floor, rest)) = self.words.split_first_mut() else { return };
        let (fps, rest) = rest.split_at_mut(n);
        let (counts, rest) = rest.split_at_mut(n);
        let (errors, rest) = rest.split_at_mut(n);
        let (metas, keys) = rest.split_at_mut(n);
        if let Some(i) = fps.iter().position(|&f| f == fp) {
            counts[i] = counts[i].saturating_add(weight);
            return;
        }
        if n == 0 {
            return;
        }
        let (i, base) = match fps.iter().position(|&f| f == 0) {
            Some(i) => (i, *floor),
            None => {
                // The smallest count is evicted: the floor covers it first,
                // so a kill from here on cannot lose its bound.
                let mut victim = 0;
                for j in 1..n {
                    if counts[j] < counts[victim] {
                        victim = j;
                    }
                }
                let base = counts[victim].max(*floor);
                *floor = base;
                compiler_fence(Ordering::SeqCst);
                (victim, base)
            }
        };
        fps[i] = 0;
        compiler_fence(Ordering::SeqCst);
        let kept = key.len().min(KEY_BYTES);
        let mut bytes = [0u8; KEY_BYTES];
        bytes[..kept].copy_from_slice(&key[..kept]);
        for (w, chunk) in keys[i * KEY_WORDS..(i + 1) * KEY_WORDS].iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
        }
        metas[i] = kept as u64 | if key.len() > KEY_BYTES { TRUNCATED } else { 0 };
        errors[i] = base;
        counts[i] = base.saturating_add(weight);
        // Last: the entry is listed only once it is whole.
        compiler_fence(Ordering::SeqCst);
        fps[i] = fp;
    }
}

/// Appends the listed entries of the sketch of `n` counters in `words` to
/// `out` (in no particular order). Words are not trusted: a key length past
/// 64 is read as 64, an error past the count as the count.
pub fn read(words: &[u64], n: usize, out: &mut Vec<TopEntry>) {
    let words = &words[..self::words(n)];
    let (fps, rest) = words[1..].split_at(n);
    let (counts, rest) = rest.split_at(n);
    let (errors, rest) = rest.split_at(n);
    let (metas, keys) = rest.split_at(n);
    for i in (0..n).filter(|&i| fps[i] != 0) {
        let mut key = [0u8; KEY_BYTES];
        for (chunk, w) in key.chunks_exact_mut(8).zip(&keys[i * KEY_WORDS..(i + 1) * KEY_WORDS]) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        let key_len = (metas[i] & 0xffff_ffff).min(KEY_BYTES as u64) as usize;
        key[key_len..].fill(0);
        out.push(TopEntry {
            fp: fps[i],
            key,
            key_len: key_len as u32,
            truncated: metas[i] & TRUNCATED != 0,
            count: counts[i],
            error: errors[i].min(counts[i]),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::keyhash::Seed;

    /// xorshift64*: deterministic per seed.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    struct Exact {
        counts: HashMap<Vec<u8>, u64>,
        total: u64,
    }

    /// Checks every promise of the module docs against exact counts.
    /// `slack` is weight the sketch may have lost (torn records).
    fn assert_bounds(words: &[u64], n: usize, seed: Seed, exact: &Exact, slack: u64, what: &str) {
        let mut listed = Vec::new();
        read(words, n, &mut listed);
        assert!(listed.len() <= n);
        let fp = |k: &[u8]| seed.fingerprint(k);
        for e in &listed {
            let (key, true_count) = exact
                .counts
                .iter()
                .find(|(k, _)| fp(k) == e.fp)
                .map(|(k, c)| (k.clone(), *c))
                .unwrap_or_else(|| panic!("{what}: a listed fingerprint that was never recorded"));
            assert!(e.count - e.error <= true_count, "{what}: {e:?} undercounts {true_count} at most by error");
            assert!(true_count <= e.count + slack, "{what}: {e:?} below the true count {true_count}");
            let kept = key.len().min(KEY_BYTES);
            assert_eq!(e.key_len as usize, kept, "{what}");
            assert_eq!(&e.key[..kept], &key[..kept], "{what}");
            assert_eq!(e.truncated, key.len() > KEY_BYTES, "{what}");
        }
        for (k, &c) in &exact.counts {
            if c > exact.total / n as u64 + slack {
                assert!(listed.iter().any(|e| e.fp == fp(k)), "{what}: {k:?} ({c} of {}) is not listed", exact.total);
            }
        }
        if slack == 0 {
            assert_eq!(listed.iter().map(|e| e.count).sum::<u64>(), exact.total, "{what}: counts add up");
        }
    }

    /// A random key from a skewed population: a few heavy hitters, many
    /// rare keys, and long keys that share their first 64 bytes.
    fn key(x: &mut u64) -> Vec<u8> {
        let r = next(x);
        let long = "L".repeat(64);
        match r % 10 {
            0..=3 => format!("heavy-{}", r >> 60).into_bytes(),
            4 => format!("{long}{}", (r >> 20) % 4).into_bytes(), // 4 keys, one 64-byte prefix
            5 => vec![(r >> 8) as u8; ((r >> 16) % 100) as usize], // binary, empty to 99 bytes
            _ => format!("rare-{}", (r >> 20) % 5000).into_bytes(),
        }
    }

    /// Property test: random skewed streams with random weights, sketches of
    /// 1 to 64 counters, checked against exact counts along the way.
    #[test]
    fn bounds_hold_against_exact_counts() {
        let seed = Seed([3, 4]);
        let mut x = 0x1234_5678_9abc_def1u64;
        for round in 0..60 {
            let n = [1, 2, 3, 8, 32, 64][round % 6];
            let mut words = vec![0u64; words(n)];
            let mut exact = Exact { counts: HashMap::new(), total: 0 };
            for step in 0..3000 {
                let k = key(&mut x);
                let w = if round % 2 == 0 { 1 } else { 1 + next(&mut x) % 40 };
                Sketch::new(&mut words, n).record(seed.fingerprint(&k), &k, w);
                *exact.counts.entry(k).or_default() += w;
                exact.total += w;
                if step % 500 == 499 {
                    assert_bounds(&words, n, seed, &exact, 0, &format!("round {round} step {step} n {n}"));
                }
            }
        }
    }

    #[test]
    fn long_keys_sharing_64_bytes_are_two_keys() {
        let seed = Seed([5, 6]);
        let (a, b) = ([b'x'; 100], [b'x'; 65]);
        let mut words = vec![0u64; words(4)];
        let mut s = Sketch::new(&mut words, 4);
        for _ in 0..3 {
            s.record(seed.fingerprint(&a), &a, 1);
        }
        s.record(seed.fingerprint(&b), &b, 1);
        s.record(seed.fingerprint(b"short"), b"short", 1);
        let mut listed = Vec::new();
        read(&words, 4, &mut listed);
        listed.sort_by_key(|e| std::cmp::Reverse(e.count));
        assert_eq!(listed.len(), 3);
        assert_eq!((listed[0].count, listed[0].key_len, listed[0].truncated), (3, 64, true));
        assert_eq!(listed[0].key, [b'x'; 64]);
        assert_eq!((listed[1].count, listed[1].key_len, listed[1].truncated), (1, 64, true));
        assert_eq!((listed[2].key_len, listed[2].truncated), (5, false));
        assert_eq!(&listed[2].key[..6], b"short\0");
    }

    /// Any state a writer killed mid-record can leave (module docs): the
    /// floor raised to the victim's count, then the victim's fingerprint
    /// zeroed and its other words anything. The stream goes on, and the
    /// bounds still hold, with the dead records' weight as slack.
    #[test]
    fn torn_records_keep_the_bounds() {
        let seed = Seed([7, 8]);
        let mut x = 0xfeed_f00d_u64;
        for round in 0..40 {
            let n = [2, 8, 32][round % 3];
            let mut words = vec![0u64; words(n)];
            let mut exact = Exact { counts: HashMap::new(), total: 0 };
            let mut slack = 0;
            for step in 0..4000 {
                let k = key(&mut x);
                let fp = seed.fingerprint(&k);
                if next(&mut x) % 100 == 0 {
                    // A record of `k` torn: it evicts the smallest entry (if
                    // `k` is not listed and none is empty) and dies.
                    let (fps, counts) = (1..1 + n, 1 + n..1 + 2 * n);
                    if !words[fps.clone()].contains(&fp) {
                        let i = if let Some(i) = words[fps.clone()].iter().position(|&f| f == 0) {
                            i
                        } else {
                            let i = (0..n).min_by_key(|&j| words[counts.start + j]).unwrap();
                            words[0] = words[0].max(words[counts.start + i]);
                            i
                        };
                        words[fps.start + i] = 0;
                        if next(&mut x) % 2 == 0 {
                            // Some of the new entry's words were written.
                            for w in [counts.start + i, 1 + 2 * n + i, 1 + 3 * n + i] {
                                words[w] = next(&mut x) % 1000;
                            }
                        }
                        // The dead check may or may not be counted: here, it is.
                        *exact.counts.entry(k).or_default() += 1;
                        exact.total += 1;
                        slack += 1;
                        continue;
                    }
                }
                Sketch::new(&mut words, n).record(fp, &k, 1);
                *exact.counts.entry(k).or_default() += 1;
                exact.total += 1;
                if step % 1000 == 999 {
                    assert_bounds(&words, n, seed, &exact, slack, &format!("round {round} step {step} n {n}"));
                }
            }
        }
    }

    /// Words of any value (a damaged region) neither panic nor read past
    /// the sketch; reads come out clamped.
    #[test]
    fn arbitrary_words_are_read_and_written_safely() {
        let mut x = 99u64;
        for n in [1usize, 5, 32] {
            for _ in 0..300 {
                let mut words: Vec<u64> = (0..words(n)).map(|_| next(&mut x) >> (next(&mut x) % 64)).collect();
                for _ in 0..20 {
                    let k = key(&mut x);
                    let fp = if next(&mut x) % 3 == 0 {
                        words[1 + (next(&mut x) as usize % n)] | 1
                    } else {
                        next(&mut x) | 1
                    };
                    Sketch::new(&mut words, n).record(fp, &k, next(&mut x) >> 1);
                }
                let mut listed = Vec::new();
                read(&words, n, &mut listed);
                for e in listed {
                    assert!(e.key_len <= 64 && e.error <= e.count);
                    assert!(e.key[e.key_len as usize..].iter().all(|&b| b == 0));
                }
            }
        }
    }
}
