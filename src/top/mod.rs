//! Heavy hitters for `rl_top`: which keys are denied most (`Which::Limited`)
//! and which are checked most (`Which::Active`).
//!
//! Each shard of a key table (memory: a shard of the heap table; shm: a
//! shard of the region) keeps two Space-Saving sketches (`sketch.rs`) of
//! `top` counters next to its slots, written under the shard's own lock
//! right after the check it records. So tracking takes no lock of its own: a
//! hot denied key serialises on nothing but the shard lock its check already
//! holds, for the few nanoseconds of one pass over `top` fingerprints.
//!
//! - **Limited**: every denied check adds 1 to its key: exact Space-Saving
//!   bounds over the denied checks.
//! - **Active**: one check in `SAMPLE` of each shard (every check counts: a
//!   shard's `allowed + limited` after the check is a multiple of `SAMPLE`)
//!   adds `SAMPLE` to its key. The bounds then hold for that sample, scaled:
//!   `count - error <= SAMPLE x (the key's sampled checks) <= count`, an
//!   estimate of the key's checks whose error is about `sqrt(SAMPLE x
//!   checks)` on top of `error` (a key with 10 000 checks: about 8%, with
//!   100 000: about 2.5%). Sampling keeps the allowed path within a few
//!   percent of `top=0` even when every check is a new key (each sampled
//!   record of a key not listed touches about ten cache lines of sketch).
//!
//! A key always lands in the same shard, so the shards' sketches split the
//! keys between them: each key's bounds come from its shard's sketch alone,
//! and a key whose count exceeds `total / top` exceeds its shard's
//! `shard total / top` too, so it is listed there. At most `top - 1` entries
//! can have a count above `total / top`, so the `top` highest entries of all
//! shards together list every such key: `rl_top` returns those.
//!
//! The Redis backend has no shards in this process: `LocalTop` keeps the
//! same sketches in 16 mutex-guarded parts, split by the key's hash,
//! recording every check (a check there costs a round trip; sampling would
//! save nothing). Per handle, like its counters.

pub mod sketch;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::error::Error;
use crate::keyhash::Seed;
pub use sketch::TopEntry;

/// Most counters per sketch (`top=` at most).
pub const MAX_TOP: usize = 1024;
/// Counters per sketch when `top=` is not given.
pub const DEFAULT_TOP: usize = 32;
/// The Active sketch records one check in this many of each shard, with this weight.
pub const SAMPLE: u64 = 64;

/// Which ranking `rl_top` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// By denied checks, exact bounds.
    Limited,
    /// By all checks, sampled.
    Active,
}

/// Heavy-hitter tracking with `top` counters per sketch (`top` >= 1; a
/// limiter with `top=0` has none and pays nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Top {
    n: usize,
}

impl Top {
    /// Tracking with `n` counters per sketch; None for 0 (tracking off).
    pub fn new(n: usize) -> Option<Top> {
        (n > 0).then_some(Top { n: n.min(MAX_TOP) })
    }

    pub fn entries(&self) -> usize {
        self.n
    }

    /// Words of one shard's two sketches, rounded up to whole cache lines.
    pub fn shard_words(&self) -> usize {
        (2 * sketch::words(self.n)).next_multiple_of(8)
    }

    /// The Active sketch's weight for a check after which its shard has
    /// counted `checks` checks: `SAMPLE` for one check in `SAMPLE`, else 0.
    #[inline]
    pub fn sample(checks: u64) -> u64 {
        if checks % SAMPLE == 0 {
            SAMPLE
        } else {
            0
        }
    }

    /// Records one check of `key` (fingerprint `fp`) in a shard's sketches
    /// `words`: a denial in Limited, and `active` (0: nothing) in Active.
    /// Called under the shard's lock. An allowed check that is not sampled
    /// (63 in 64) costs two tests here; the rest is out of line, so that it
    /// does not weigh on the inlined check path.
    #[inline(always)]
    pub fn record(&self, words: &mut [u64], fp: u64, key: &[u8], allowed: bool, active: u64) {
        if !allowed || active > 0 {
            self.record_sketches(words, fp, key, allowed, active);
        }
    }

    #[inline(never)]
    fn record_sketches(&self, words: &mut [u64], fp: u64, key: &[u8], allowed: bool, active: u64) {
        let w = sketch::words(self.n);
        let (limited, rest) = words.split_at_mut(w);
        if !allowed {
            sketch::Sketch::new(limited, self.n).record(fp, key, 1);
        }
        if active > 0 {
            sketch::Sketch::new(rest, self.n).record(fp, key, active);
        }
    }

    /// Records `n` denials of `key` at once, in both sketches (exactly in
    /// Active too: its sampled counts stay an estimate). For denials answered
    /// without the shard's lock and recorded later, under it.
    pub fn record_denials(&self, words: &mut [u64], fp: u64, key: &[u8], n: u64) {
        let w = sketch::words(self.n);
        let (limited, rest) = words.split_at_mut(w);
        sketch::Sketch::new(limited, self.n).record(fp, key, n);
        sketch::Sketch::new(rest, self.n).record(fp, key, n);
    }

    /// Appends the entries of one shard's sketch `which` to `out`.
    pub fn read(&self, words: &[u64], which: Which, out: &mut Vec<TopEntry>) {
        let w = sketch::words(self.n);
        let words = match which {
            Which::Limited => &words[..w],
            Which::Active => &words[w..2 * w],
        };
        sketch::read(words, self.n, out);
    }

    /// The shards' entries, highest count first, at most `max` and `top` of them.
    pub fn finish(&self, mut all: Vec<TopEntry>, max: usize) -> Vec<TopEntry> {
        all.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)).then(a.key.cmp(&b.key)));
        all.truncate(max.min(self.n));
        all
    }
}

/// The sketches of a backend without shards in this process (Redis): 16
/// parts, each a mutex over both sketches, picked by the key's hash.
pub struct LocalTop {
    top: Top,
    seed: Seed,
    parts: Box<[Part]>,
}

/// One part of a `LocalTop`: both sketches of the keys hashed to it.
type Part = CachePadded<Mutex<Box<[u64]>>>;

const LOCAL_PARTS: usize = 16;

impl LocalTop {
    /// None for `top=0`.
    pub fn new(n: usize) -> Result<Option<LocalTop>, Error> {
        let Some(top) = Top::new(n) else { return Ok(None) };
        let seed = Seed::random().map_err(|e| Error::Io(format!("reading /dev/urandom for the hash seed: {e}")))?;
        let parts = (0..LOCAL_PARTS).map(|_| CachePadded::new(Mutex::new(vec![0; top.shard_words()].into()))).collect();
        Ok(Some(LocalTop { top, seed, parts }))
    }

    /// Records one decided check of `key`, exactly in both sketches.
    pub fn record(&self, key: &[u8], allowed: bool) {
        let fp = self.seed.fingerprint(key);
        let part = (fp >> 60) as usize % LOCAL_PARTS;
        self.top.record(&mut self.parts[part].lock(), fp, key, allowed, 1);
    }

    pub fn get(&self, which: Which, max: usize) -> Vec<TopEntry> {
        let mut all = Vec::new();
        for part in self.parts.iter() {
            self.top.read(&part.lock(), which, &mut all);
        }
        self.top.finish(all, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys spread over many shards: the merged top lists every key above
    /// total / top with its own shard's bounds, at most `top` entries.
    #[test]
    fn shards_merged_list_every_heavy_key() {
        let top = Top::new(8).unwrap();
        let shards = 5;
        let seed = Seed([1, 1]);
        let mut words = vec![vec![0u64; top.shard_words()]; shards];
        let mut exact = std::collections::HashMap::<String, u64>::new();
        let mut x = 17u64;
        let mut total = 0;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = x >> 33;
            let k = if r % 3 == 0 { format!("hot{}", r % 5) } else { format!("cold{}", r % 3000) };
            let fp = seed.fingerprint(k.as_bytes());
            top.record(&mut words[(fp % shards as u64) as usize], fp, k.as_bytes(), false, 0);
            *exact.entry(k).or_default() += 1;
            total += 1;
        }
        let mut all = Vec::new();
        words.iter().for_each(|w| top.read(w, Which::Limited, &mut all));
        let listed = top.finish(all, 100);
        assert_eq!(listed.len(), 8);
        assert!(listed.windows(2).all(|p| p[0].count >= p[1].count));
        for (k, c) in &exact {
            let e = listed.iter().find(|e| e.fp == seed.fingerprint(k.as_bytes()));
            if *c > total / 8 {
                assert!(e.is_some(), "{k} ({c} of {total}) not listed");
            }
            if let Some(e) = e {
                assert!(e.count - e.error <= *c && *c <= e.count, "{k}: {c} vs {e:?}");
                assert_eq!(&e.key[..e.key_len as usize], k.as_bytes());
            }
        }
        let mut active = Vec::new();
        words.iter().for_each(|w| top.read(w, Which::Active, &mut active));
        assert!(active.is_empty(), "nothing was sampled");
    }

    #[test]
    fn sampling_and_local_top() {
        assert_eq!((Top::sample(SAMPLE), Top::sample(SAMPLE + 1), Top::sample(0)), (SAMPLE, 0, SAMPLE));
        assert!(Top::new(0).is_none());
        assert_eq!(Top::new(5000).unwrap().entries(), MAX_TOP);
        let local = LocalTop::new(4).unwrap().unwrap();
        for i in 0..100 {
            local.record(b"bad", false);
            local.record(format!("k{i}").as_bytes(), true);
        }
        let limited = local.get(Which::Limited, 10);
        assert_eq!(limited.len(), 1);
        assert_eq!((limited[0].count, limited[0].error, &limited[0].key[..3]), (100, 0, &b"bad"[..]));
        let active = local.get(Which::Active, 2);
        assert_eq!(active.len(), 2);
        assert_eq!((active[0].count, active[0].error, &active[0].key[..3]), (100, 0, &b"bad"[..]));
        assert!(LocalTop::new(0).unwrap().is_none());
    }
}
