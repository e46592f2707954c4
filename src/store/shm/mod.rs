//! `backend=shm`: pre-forked worker processes of one host share one region of
//! POSIX shared memory (nginx-style), holding the same bounded key table as
//! the memory backend (`table.rs`).
//!
//! - `layout.rs`: what is where in the region, bytes per key, and why a
//!   process killed at any instant leaves nothing the others cannot repair;
//! - `region.rs`: creating (once, even when N workers start together), opening,
//!   checking and mapping the region;
//! - `lock.rs`: the robust process-shared mutexes, one per shard;
//! - `journal.rs`: the per-stripe undo log and the repair after a crash;
//! - `clock.rs`: the clock all processes agree on.
//!
//! A handle made before `fork()` works in the children (the mapping is
//! `MAP_SHARED` and inherited, the locks are process-shared); a handle opened
//! by name in each worker works just as well. A check takes one stripe lock,
//! touches at most the key's two 8-way sets (plus a bounded reclaim pass when
//! the table is full), and allocates nothing.

mod clock;
mod journal;
mod layout;
mod lock;
mod region;
#[cfg(test)]
mod tests;

use std::ffi::CStr;
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{AtomicU64, Ordering};

use self::clock::SharedClock;
use self::layout::{Header, Journal, Layout, Stripe, STRIPE_BYTES};
use self::lock::Acquired;
use self::region::{Init, Region};
use super::{Answer, Store, StoreStats};
use crate::algorithm::Rate;
use crate::error::Error;
use crate::keyhash::Seed;
use crate::table::{Shard, ShardStats};

/// Removes the shm object `name` (see `rl_shm_unlink`).
pub fn shm_unlink(name: &CStr) -> Result<(), Error> {
    region::unlink(name)
}

pub struct ShmStore {
    region: Region,
    layout: Layout,
    rates: Vec<Rate>,
    seed: Seed,
    clock: SharedClock,
    /// Which shard the next cross-shard reclaim pass starts at (per process).
    reclaim_turn: AtomicU64,
}

/// A stripe lock held by this thread; unlocks when dropped.
struct Locked<'a> {
    store: &'a ShmStore,
    index: usize,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard exists only while this thread holds the lock.
        unsafe { lock::unlock(self.store.lock_ptr(self.index)) };
    }
}

impl<'a> Locked<'a> {
    /// The stripe's words, stats and undo log.
    fn parts(&mut self) -> (&mut [u64], &mut ShardStats, &mut Journal) {
        let s = self.store.stripe(self.index);
        let words = self.store.words_ptr(self.index);
        // SAFETY: this thread holds the stripe's lock (the guard exists only
        // between lock and unlock), and every process reads or writes a
        // stripe's words, stats and journal only while holding that lock, so
        // nothing else touches them until the guard drops; borrowing `self`
        // mutably keeps this process from making a second view meanwhile.
        // The three are disjoint, inside the mapping (its size was checked
        // against the layout), aligned (64-byte offsets), and the mapping
        // outlives `self.store`.
        unsafe {
            (
                std::slice::from_raw_parts_mut(words, self.store.layout.geometry.shard_words()),
                &mut *addr_of_mut!((*s).stats),
                &mut *addr_of_mut!((*s).journal),
            )
        }
    }

    /// The stripe as table.rs works on it, and its undo log.
    fn shard(&mut self) -> (Shard<'_>, &mut Journal) {
        let store: &'a ShmStore = self.store;
        let (words, stats, journal) = self.parts();
        let shard = Shard {
            words,
            stats,
            total_keys: store.total_keys(),
            capacity: store.layout.capacity,
            geometry: store.layout.geometry,
        };
        (shard, journal)
    }

    /// The previous owner died holding the lock: repair, then mark it consistent.
    fn recover(&mut self) -> Result<(), Error> {
        let stride = self.store.layout.geometry.stride;
        let (words, stats, journal) = self.parts();
        journal::repair(words, stats, journal, stride);
        let h = self.store.header();
        // SAFETY: header atomics, only ever accessed atomically.
        unsafe {
            (*addr_of!((*h).dirty)).store(1, Ordering::Release);
            (*addr_of!((*h).recoveries)).fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: we hold the lock, acquired with EOWNERDEAD, and repaired it.
        unsafe { lock::make_consistent(self.store.lock_ptr(self.index)) }
    }
}

impl ShmStore {
    /// Opens the region `name` for these rates and capacity, creating it
    /// (with permissions `mode`) if it does not exist.
    pub fn open(rates: Vec<Rate>, capacity: u64, name: &str, mode: u32) -> Result<ShmStore, Error> {
        let layout = Layout::new(&rates, capacity)
            .ok_or_else(|| Error::Invalid(format!("capacity={capacity}: the shm region would be too large")))?;
        let seed = Seed::random().map_err(|e| Error::Io(format!("reading /dev/urandom for the hash seed: {e}")))?;
        let init = Init { seed: seed.0, epoch_offset_ns: SharedClock::epoch_offset_now() };
        let region = region::create_or_open(name, mode, &layout, &init)?;
        let h = region.header();
        // SAFETY: the region is ready and checked; the creator wrote these
        // fields before `ready` and never writes them again.
        let (seed, offset) = unsafe { (addr_of!((*h).seed).read(), addr_of!((*h).epoch_offset_ns).read()) };
        Ok(ShmStore {
            region,
            layout,
            rates,
            seed: Seed(seed),
            clock: SharedClock::new(offset),
            reclaim_turn: AtomicU64::new(0),
        })
    }

    /// Bytes of table memory per key of capacity.
    pub fn bytes_per_key(&self) -> f64 {
        self.layout.bytes_per_key()
    }

    fn header(&self) -> *mut Header {
        self.region.header()
    }

    fn stripe(&self, i: usize) -> *mut Stripe {
        assert!(i < self.layout.geometry.shards);
        // SAFETY: stripe `i` lies inside the mapping (checked layout).
        unsafe { self.region.base().add(self.layout.stripes_offset + i * STRIPE_BYTES).cast() }
    }

    fn lock_ptr(&self, i: usize) -> *mut libc::pthread_mutex_t {
        // SAFETY: a field of a stripe inside the mapping; no reference is made.
        unsafe { addr_of_mut!((*self.stripe(i)).lock) }
    }

    fn words_ptr(&self, i: usize) -> *mut u64 {
        assert!(i < self.layout.geometry.shards);
        let at = self.layout.slots_offset + i * self.layout.geometry.shard_words() * 8;
        // SAFETY: shard `i`'s words lie inside the mapping (checked layout).
        unsafe { self.region.base().add(at).cast() }
    }

    fn total_keys(&self) -> &AtomicU64 {
        // SAFETY: an aligned header field inside the mapping, only ever
        // accessed atomically; the mapping lives as long as `self`.
        unsafe { &*addr_of!((*self.header()).total_keys) }
    }

    fn dirty(&self) -> &AtomicU64 {
        // SAFETY: as for `total_keys`.
        unsafe { &*addr_of!((*self.header()).dirty) }
    }

    /// Locks stripe `i`, repairing it if its last owner died holding it. The
    /// caller must hold no stripe lock (or only try-lock, see `try_lock`).
    fn lock(&self, i: usize) -> Result<Locked<'_>, Error> {
        // SAFETY: the mutex was initialised by the region's creator and stays
        // mapped; no operation locks a stripe it already holds.
        let how = unsafe { lock::lock(self.lock_ptr(i)) }?;
        let mut guard = Locked { store: self, index: i };
        if how == Acquired::OwnerDied {
            guard.recover()?;
        }
        Ok(guard)
    }

    /// Locks stripe `i` only if it is free (never waits: safe while holding another).
    fn try_lock(&self, i: usize) -> Result<Option<Locked<'_>>, Error> {
        // SAFETY: as for `lock`.
        let Some(how) = (unsafe { lock::try_lock(self.lock_ptr(i)) })? else { return Ok(None) };
        let mut guard = Locked { store: self, index: i };
        if how == Acquired::OwnerDied {
            guard.recover()?;
        }
        Ok(Some(guard))
    }

    /// One bounded reclaim pass on the next shard after `me` that is free.
    fn reclaim_elsewhere(&self, me: usize, now: u64) -> u64 {
        let n = self.layout.geometry.shards;
        let start = self.reclaim_turn.fetch_add(1, Ordering::Relaxed) as usize;
        for k in 0..n {
            let i = (start + k) % n;
            if i == me {
                continue;
            }
            let Ok(Some(mut guard)) = self.try_lock(i) else { continue };
            let (mut shard, _) = guard.shard();
            return shard.reclaim_step(&self.rates, now).0;
        }
        0
    }

    /// After a repair, the table-wide key count is recounted once (see layout.rs).
    #[inline]
    fn heal(&self) {
        if self.dirty().load(Ordering::Relaxed) != 0 {
            let _ = self.recount_total();
        }
    }

    /// Sets the table-wide key count to the sum of the stripes' counts, with
    /// every stripe locked. Serialised by the header's recount lock; called
    /// holding no stripe lock.
    fn recount_total(&self) -> Result<(), Error> {
        let h = self.header();
        // SAFETY: a field inside the mapping; no reference is made.
        let m = unsafe { addr_of_mut!((*h).recount_lock) };
        // SAFETY: initialised by the creator; this thread does not hold it.
        let how = unsafe { lock::lock(m) }?;
        let result = (|| {
            if how == Acquired::OwnerDied {
                // A recount writes one word, last: a dead recounter leaves
                // nothing half-done, only `dirty` still set.
                // SAFETY: we hold it, acquired with EOWNERDEAD.
                unsafe { lock::make_consistent(m) }?;
            }
            if self.dirty().load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            let mut guards = Vec::with_capacity(self.layout.geometry.shards);
            for i in 0..self.layout.geometry.shards {
                guards.push(self.lock(i)?);
            }
            let sum = guards.iter_mut().map(|g| g.parts().1.keys).sum();
            self.total_keys().store(sum, Ordering::Relaxed);
            self.dirty().store(0, Ordering::Release);
            Ok(())
        })();
        // SAFETY: we hold it.
        unsafe { lock::unlock(m) };
        result
    }
}

impl Store for ShmStore {
    #[inline]
    fn check(&self, key: &[u8], cost: u64) -> Result<Answer, Error> {
        let fp = self.seed.fingerprint(key);
        let place = self.layout.geometry.place(fp);
        let now = self.clock.now();
        let verdict = {
            let mut guard = self.lock(place.shard)?;
            let (mut shard, journal) = guard.shard();
            let verdict = shard.check_with(
                &self.rates,
                place,
                fp,
                now,
                cost,
                &mut |now| self.reclaim_elsewhere(place.shard, now),
                |i, old| journal.begin(i, old),
            );
            journal.end();
            verdict
        };
        self.heal();
        Ok(Answer { verdict, tick_ns: 1 })
    }

    fn reset(&self, key: &[u8]) -> Result<(), Error> {
        let fp = self.seed.fingerprint(key);
        let place = self.layout.geometry.place(fp);
        {
            let mut guard = self.lock(place.shard)?;
            guard.shard().0.remove(place, fp);
        }
        self.heal();
        Ok(())
    }

    fn sweep(&self) -> Result<u64, Error> {
        let now = self.clock.now();
        let mut swept = 0;
        for i in 0..self.layout.geometry.shards {
            let mut guard = self.lock(i)?;
            swept += guard.shard().0.sweep(&self.rates, now);
        }
        self.heal();
        Ok(swept)
    }

    fn stats(&self) -> Result<StoreStats, Error> {
        self.heal();
        let mut total = StoreStats::default();
        for i in 0..self.layout.geometry.shards {
            let mut guard = self.lock(i)?;
            let s = guard.parts().1;
            total.allowed += s.allowed;
            total.limited += s.limited;
            total.evictions += s.evictions;
        }
        total.keys = self.total_keys().load(Ordering::Relaxed);
        Ok(total)
    }
}
