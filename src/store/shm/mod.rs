//! `backend=shm`: pre-forked worker processes of one host share one region of
//! POSIX shared memory (nginx-style), holding the same bounded key table as
//! the memory backend (`table/`).
//!
//! - `layout.rs`: what is where in the region, bytes per key, and why a
//!   process killed at any instant leaves nothing the others cannot repair;
//! - `region.rs`: creating (once, even when N workers start together), opening,
//!   checking and mapping the region;
//! - `lock.rs`: the robust process-shared locks, one per shard;
//! - `owner.rs`: who holds a lock, and whether that process is still alive;
//! - `journal.rs`: the per-shard undo log and the repair after a crash;
//! - `recount.rs`: the table-wide key count, recounted once after a repair;
//! - `clock.rs`: the clock all processes agree on;
//! - `wait.rs`: how long operations wait for held locks, and failing fast.
//!
//! A handle made before `fork()` works in the children (the mapping is
//! `MAP_SHARED` and inherited, the locks are process-shared, and the child
//! gets an owner word of its own, owner.rs); a handle opened by name in each
//! worker works just as well. A check takes one shard lock,
//! touches at most the key's two 8-way sets (plus a bounded reclaim pass when
//! the table is full), and allocates nothing. A key over its limit is
//! answered without the lock, as memory answers it: from the over-limit
//! cache in the region (`../denials.rs`, each shard's entries written under
//! its lock and emptied by its repair), counted in the caller's stripe of
//! the region (`../tally.rs`), so that a refund or reset by any process
//! clears the key's entry at once and `limited` and `rl_top` count every
//! such denial (layout.rs, items 9 and 10, for what a kill can leave). With `top=N` each shard also
//! holds its keys' heavy-hitter sketches (top/), updated under the same
//! lock: `rl_top` on any handle covers the whole region.
//!
//! Every wait for a lock is bounded by `timeout_ms`, and a shard held past
//! it makes this process fail fast on it for a while (`wait.rs`).

mod clock;
mod journal;
mod layout;
mod lock;
mod owner;
mod recount;
mod region;
#[cfg(test)]
mod tests;
mod wait;

use std::ffi::CStr;
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use self::clock::SharedClock;
use self::layout::{Header, Journal, Layout, ShardHeader, SHARD_HEADER_BYTES, STRIPES};
use self::lock::Acquired;
use self::owner::{Owner, MAX_OWNERS};
use self::region::{InRegion, Init, Region};
use self::wait::{Budget, Patience};
use super::denials::{Denials, Entry};
use super::tally::{Stripe, Tally};
use super::{wrong_kind, Store, StoreStats};
use crate::algorithm::{adjust_all, Limits, Verdict};
use crate::config::{Backend, Config};
use crate::error::Error;
use crate::keyhash::Seed;
use crate::limiter::limits_in_ns;
use crate::table::{At, KeyAt, Place, Shard, ShardStats};
use crate::top::{Top, TopEntry, Which};

#[cfg(test)]
thread_local! {
    /// Tests: the next check on this thread panics inside its critical
    /// section, after the key's state was rewritten and before the undo
    /// record is closed.
    static PANIC_IN_CHECK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Removes the shm object `name` (see `rl_shm_unlink`).
pub fn shm_unlink(name: &CStr) -> Result<(), Error> {
    region::unlink(name)
}

pub struct ShmStore {
    region: Region,
    /// The region's name, for error messages.
    name: String,
    layout: Layout,
    /// Per shard: words of slots, slots, and words of sketches (0 with
    /// `top=0`), made once from `layout` (not multiplied out per check).
    shard_words: usize,
    shard_slots: usize,
    top_words: usize,
    limits: Limits,
    seed: Seed,
    clock: SharedClock,
    /// This handle's identity in the region's locks.
    owner: Owner,
    /// How long operations wait for locks held by other processes (`timeout_ms`).
    patience: Patience,
    /// Which shard the next cross-shard reclaim pass starts at (per process).
    reclaim_turn: AtomicU64,
    /// The region's over-limit cache: cost-1 denials still in force,
    /// answered without a lock (`../denials.rs`).
    denials: Denials<InRegion<Entry>>,
    /// The region's stripes counting those denials (`../tally.rs`).
    tally: Tally<InRegion<Stripe>>,
}

/// A shard lock held by this thread; unlocks when dropped.
struct Locked<'a> {
    store: &'a ShmStore,
    index: usize,
    /// The shard's lock word (found once, when taken).
    word: &'a AtomicU64,
    /// The owner word it was taken with.
    me: u64,
}

impl Drop for Locked<'_> {
    #[inline]
    fn drop(&mut self) {
        // Unwinding from a panic inside the critical section: the shard may
        // be half-written, with its undo record open. Repaired here as an heir
        // would repair it (the check that panicked never happened: its caller
        // gets an error, not an answer), before anyone else can see it.
        if std::thread::panicking() && self.word.load(Ordering::Relaxed) == self.me {
            Locked::repair_held(self.store, self.index, self.word, self.me, false);
        }
        // A lock that is no longer ours (taken over, or damaged) stays as it is.
        lock::unlock(self.word, self.me);
    }
}

/// A locked shard's memory: its slots, stats, undo log and heavy-hitter
/// sketches (empty with `top=0`).
struct Parts<'p> {
    words: &'p mut [u64],
    stats: &'p mut ShardStats,
    journal: &'p mut Journal,
    top: &'p mut [u64],
}

impl<'a> Locked<'a> {
    /// Unlocks at the end of a check's critical section: what the drop
    /// does, without asking whether this thread is unwinding (a section
    /// that got here completed; one a panic left is dropped, and repaired).
    #[inline(always)]
    fn release(self) {
        let this = std::mem::ManuallyDrop::new(self);
        lock::unlock(this.word, this.me);
    }

    /// The shard's words, stats and undo log.
    fn parts(&mut self) -> (&mut [u64], &mut ShardStats, &mut Journal) {
        let p = self.all_parts();
        (p.words, p.stats, p.journal)
    }

    /// Everything of the shard.
    fn all_parts(&mut self) -> Parts<'_> {
        let s = self.store.shard_header(self.index);
        let words = self.store.words_ptr(self.index);
        let (top, top_words) = self.store.top_ptr(self.index);
        // SAFETY: this thread holds the shard's lock (the guard exists only
        // between lock and unlock), and every process reads or writes a
        // shard's words, stats, journal and sketches only while holding
        // that lock, so
        // nothing else touches them until the guard drops; borrowing `self`
        // mutably keeps this process from making a second view meanwhile.
        // The four are disjoint, inside the mapping (its size was checked
        // against the layout), aligned (64-byte offsets), and the mapping
        // outlives `self.store`.
        unsafe {
            Parts {
                words: std::slice::from_raw_parts_mut(words, self.store.shard_words),
                stats: &mut *addr_of_mut!((*s).stats),
                journal: &mut *addr_of_mut!((*s).journal),
                top: std::slice::from_raw_parts_mut(top, top_words),
            }
        }
    }

    /// The shard as table/ works on it, its undo log and its sketches.
    fn shard(&mut self) -> (Shard<'_>, &mut Journal, &mut [u64]) {
        let store: &'a ShmStore = self.store;
        let slots = store.shard_slots;
        let Parts { words, stats, journal, top } = self.all_parts();
        if (stats.allowed | stats.limited | stats.evictions) >= DAMAGED_COUNT || stats.keys > slots as u64 {
            store.mend_counters(words, stats);
        }
        let shard = Shard {
            words,
            stats,
            total_keys: store.total_keys(),
            capacity: store.layout.capacity,
            geometry: store.layout.geometry,
        };
        (shard, journal, top)
    }

    /// `repair` of the shard `index` whose lock `me` holds in `word`,
    /// through a guard of its own that never unlocks (the caller's guard
    /// does, and is not used meanwhile). The caller's guard is not passed
    /// by reference, so that on the hot path it can stay in registers.
    #[cold]
    #[inline(never)]
    fn repair_held(store: &ShmStore, index: usize, word: &AtomicU64, me: u64, taken_over: bool) {
        std::mem::ManuallyDrop::new(Locked { store, index, word, me }).repair(taken_over);
    }

    /// The previous holder died holding the lock (`taken_over`), or this
    /// thread panicked holding it: repair what may be left half-written
    /// (see layout.rs), and have the table-wide count recounted. Cannot
    /// panic (it runs while unwinding).
    fn repair(&mut self, taken_over: bool) {
        let stride = self.store.layout.geometry.stride;
        let (words, stats, journal) = self.parts();
        journal::repair(words, stats, journal, stride);
        // The shard's over-limit cache entries: one may be half-written
        // (its number odd), and any may stand for a state the undo record
        // just rolled back. Emptied: a miss costs only the locked path.
        self.store.denials.clear_block(self.index, self.store.layout.geometry.shards);
        let h = self.store.header();
        // SAFETY: header atomics, only ever accessed atomically.
        unsafe {
            (*addr_of!((*h).dirty)).store(1, Ordering::Release);
            if taken_over {
                (*addr_of!((*h).recoveries)).fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A shard counter this large was not counted but damaged (at a billion
/// operations a second it takes 146 years to reach): it is reset, so that
/// counting on cannot overflow.
const DAMAGED_COUNT: u64 = 1 << 62;

/// Cache lines of each of a key's two sets a check prefetches: the first
/// two, where a key usually is (a new key takes a set's first free slot).
/// For one token-bucket rate, the whole set.
const PREFETCH_LINES: usize = 2;
/// Bytes of a cache line, the unit a prefetch loads.
const LINE_BYTES: usize = 64;

/// The region name of a `backend=shm` configuration.
fn shm_name(config: &Config) -> Result<&str, Error> {
    config.name.as_deref().ok_or_else(|| Error::Config("backend=shm needs \"name=\" (e.g. name=/api-limits)".into()))
}

/// The owner-slot generations of a checked region (owner.rs).
fn generations<'a>(region: &'a Region, layout: &Layout) -> &'a [AtomicU64] {
    // SAFETY: the owner slots lie inside the checked mapping, 8-byte aligned,
    // and are only ever accessed atomically; the slice borrows the region.
    unsafe { std::slice::from_raw_parts(region.base().add(layout.owners_offset).cast::<AtomicU64>(), MAX_OWNERS) }
}

impl ShmStore {
    /// Opens the region `config` names (`backend=shm name=... rate=...` or
    /// `concurrency=...`) for its limits, capacity and top, creating it
    /// (with permissions `mode`) if it does not exist. Operations wait at
    /// most `timeout_ms` for locks held by other processes.
    pub fn open(config: &Config) -> Result<ShmStore, Error> {
        let (limits, capacity, name) = (limits_in_ns(config), config.capacity, shm_name(config)?);
        let layout = Layout::new(&limits, capacity, config.top)
            .ok_or_else(|| Error::Invalid(format!("capacity={capacity}: the shm region would be too large")))?;
        let seed = Seed::random().map_err(|e| Error::Io(format!("reading /dev/urandom for the hash seed: {e}")))?;
        let init = Init { seed: seed.0, epoch_offset_ns: SharedClock::epoch_offset_now() };
        let (region, fd) = region::create_or_open(name, config.mode, &layout, &init)?;
        ShmStore::with_region(region, fd, layout, limits, name, config.timeout_ms)
    }

    /// Opens the existing region `config` names with the limits stored in it
    /// (an attach: `backend=shm name=...` without `rate=` or
    /// `concurrency=`). Returns the store and the configuration in full: the
    /// region's limits, capacity and top, the object's permission bits in
    /// `mode`, and the rest (`timeout_ms`, `on_error`, `dry_run`) `config`'s.
    pub fn attach(config: &Config) -> Result<(ShmStore, Config), Error> {
        let name = shm_name(config)?;
        let mut stored = None;
        let (region_map, fd, layout, mode) = region::attach(name, |text| {
            // The text is the canonical one the creator wrote (layout.rs); one
            // that does not parse into limits, or whose layout is not the
            // region's, is refused (by the check that follows, for the latter).
            let unreadable = |why: String| {
                Error::Incompatible(format!(
                    "shm region \"{name}\" holds a configuration this library cannot use ({why}); remove it with \
                     rl_shm_unlink(\"{name}\") if no process uses it"
                ))
            };
            let region = Config::parse(text).map_err(|e| unreadable(e.0))?;
            if region.attaches() || region.backend != Backend::Memory {
                return Err(unreadable(format!("\"{text}\" is not a region's limits")));
            }
            let layout = Layout::new(&limits_in_ns(&region), region.capacity, region.top)
                .ok_or_else(|| unreadable(format!("\"{text}\" makes no region")))?;
            stored = Some(region);
            Ok(layout)
        })?;
        let region = stored.expect("set when attach succeeds");
        let config = Config {
            rates: region.rates,
            concurrency: region.concurrency,
            algorithm: region.algorithm,
            capacity: region.capacity,
            top: region.top,
            mode,
            ..config.clone()
        };
        let store = ShmStore::with_region(region_map, fd, layout, limits_in_ns(&config), name, config.timeout_ms)?;
        Ok((store, config))
    }

    /// The store over a checked, ready region.
    fn with_region(
        region: Region,
        fd: std::os::fd::OwnedFd,
        layout: Layout,
        limits: Limits,
        name: &str,
        timeout_ms: u64,
    ) -> Result<ShmStore, Error> {
        let h = region.header();
        // SAFETY: the region is ready and checked; the creator wrote these
        // fields before `ready` and never writes them again.
        let (seed, offset) = unsafe { (addr_of!((*h).seed).read(), addr_of!((*h).epoch_offset_ns).read()) };
        let patience = Patience::new(Duration::from_millis(timeout_ms), layout.geometry.shards);
        let owner = Owner::new(&fd, name, generations(&region, &layout))?;
        drop(fd); // the mapping keeps the object; the owner has its own descriptor
        let entries = layout.geometry.shards * layout.denials_per_shard;
        // SAFETY: both areas lie inside the checked mapping (its size and
        // offsets were compared with the layout), aligned (64 and 128 bytes,
        // layout.rs); entries and stripes are atomics only; the views live in
        // the store next to the region, which outlives their every use.
        let (entries, stripes) =
            unsafe { (region.view(layout.denials_offset, entries), region.view(layout.tally_offset, STRIPES)) };
        let denials = Denials::over(entries, limits.rates());
        let tally = Tally::over(stripes, layout.top.is_some());
        Ok(ShmStore {
            region,
            name: name.to_owned(),
            shard_words: layout.geometry.shard_words(),
            shard_slots: layout.geometry.sets * crate::table::WAYS,
            top_words: layout.top.map_or(0, |t| t.shard_words()),
            layout,
            limits,
            seed: Seed(seed),
            clock: SharedClock::new(offset),
            owner,
            patience,
            reclaim_turn: AtomicU64::new(0),
            denials,
            tally,
        })
    }

    /// Runs `f` on the locked shard of `key` (with the key as the table
    /// knows it, the time and the reach into other shards, the undo log and
    /// the sketches), then heals the key count if a repair asked for it.
    fn on_key<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut Shard, KeyAt, &mut At, &mut Journal, &mut [u64]) -> R,
    ) -> Result<R, Error> {
        let fp = self.seed.fingerprint(key);
        let place = self.layout.geometry.place(fp);
        self.prefetch_sets(place);
        let now = self.clock.now();
        let budget = Budget::new();
        let result = {
            let mut guard = self.lock(place.shard, &budget)?;
            let (mut shard, journal, top_words) = guard.shard();
            // (The shard's index copied: a closure that borrowed `place` would keep it
            // in memory, and the table's copy of it would then be read back from there.)
            let me = place.shard;
            let mut at = At { now, elsewhere: &mut move |pass| self.on_other_shards(me, pass) };
            f(&mut shard, KeyAt { fp, place }, &mut at, journal, top_words)
        };
        self.heal(&budget, false);
        Ok(result)
    }

    /// A shard's counters are impossible (see `DAMAGED_COUNT`; more keys
    /// than slots): the damaged ones are reset, the key count recounted.
    #[cold]
    #[inline(never)]
    fn mend_counters(&self, words: &[u64], stats: &mut ShardStats) {
        for count in [&mut stats.allowed, &mut stats.limited, &mut stats.evictions] {
            if *count >= DAMAGED_COUNT {
                *count = 0;
            }
        }
        let stride = self.layout.geometry.stride;
        let keys = words.chunks_exact(stride).filter(|slot| slot[0] != 0).count() as u64;
        if stats.keys != keys {
            stats.keys = keys;
            self.dirty().store(1, Ordering::Release);
        }
    }

    /// Bytes of table memory per key of capacity.
    pub fn bytes_per_key(&self) -> f64 {
        self.layout.bytes_per_key()
    }

    fn header(&self) -> *mut Header {
        self.region.header()
    }

    fn shard_header(&self, i: usize) -> *mut ShardHeader {
        assert!(i < self.layout.geometry.shards);
        // SAFETY: shard `i` lies inside the mapping (checked layout).
        unsafe { self.region.base().add(self.layout.shard_headers_offset + i * SHARD_HEADER_BYTES).cast() }
    }

    fn lock_word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: a field of a shard inside the mapping, only ever accessed
        // atomically; the mapping lives as long as `self`.
        unsafe { &*addr_of!((*self.shard_header(i)).lock) }
    }

    /// The region's owner slots (owner.rs).
    fn generations(&self) -> &[AtomicU64] {
        generations(&self.region, &self.layout)
    }

    /// Whether the owner word found in a lock belongs to a live handle.
    fn alive(&self, word: u64) -> bool {
        self.owner.alive(word, self.generations())
    }

    /// Shard `i`'s heavy-hitter sketches: where, and how many words (0 with `top=0`).
    fn top_ptr(&self, i: usize) -> (*mut u64, usize) {
        assert!(i < self.layout.geometry.shards);
        let words = self.top_words;
        // SAFETY: shard `i`'s sketches lie inside the mapping (checked
        // layout; for `top=0`, an empty range at its end).
        (unsafe { self.region.base().add(self.layout.top_offset + i * words * 8).cast() }, words)
    }

    /// Starts loading the first lines of the key's two sets
    /// (`Region::prefetch`): the key's slot is then on its way from memory
    /// while the shard's lock is taken, rather than asked for only behind
    /// it. A check of a key among many (the sets not in the CPU's caches)
    /// waits the less for it.
    #[inline(always)]
    fn prefetch_sets(&self, place: Place) {
        let shard = self.words_offset(place.shard);
        for set in [place.a, place.b] {
            let at = shard + self.layout.geometry.set_words(set).start * 8;
            for line in 0..PREFETCH_LINES {
                self.region.prefetch(at + line * LINE_BYTES);
            }
        }
    }

    /// Where shard `i`'s words start in the region, in bytes.
    fn words_offset(&self, i: usize) -> usize {
        self.layout.slots_offset + i * self.shard_words * 8
    }

    fn words_ptr(&self, i: usize) -> *mut u64 {
        assert!(i < self.layout.geometry.shards);
        let at = self.words_offset(i);
        // SAFETY: shard `i`'s words lie inside the mapping (checked layout).
        unsafe { self.region.base().add(at).cast() }
    }

    fn total_keys(&self) -> &AtomicU64 {
        // SAFETY: an aligned header field inside the mapping, only ever
        // accessed atomically; the mapping lives as long as `self`.
        unsafe { &*addr_of!((*self.header()).total_keys) }
    }

    fn recount_lock(&self) -> &AtomicU64 {
        // SAFETY: as for `total_keys`.
        unsafe { &*addr_of!((*self.header()).recount_lock) }
    }

    fn dirty(&self) -> &AtomicU64 {
        // SAFETY: as for `total_keys`.
        unsafe { &*addr_of!((*self.header()).dirty) }
    }

    /// Locks shard `i`, repairing it if its last owner died holding it, and
    /// waiting for it within `budget` if it is held (failing at once instead
    /// while it is suspect, see `wait_for`). The caller must hold no
    /// shard lock except in shard order (see `recount_total`), or only
    /// try-lock (see `try_lock`).
    /// (Inlined: the uncontended path is a few loads and one compare-and-swap.)
    #[inline(always)]
    fn lock(&self, i: usize, budget: &Budget) -> Result<Locked<'_>, Error> {
        let me = self.owner.word(self.generations())?;
        let word = self.lock_word(i);
        let how = if lock::try_lock(word, me) { Acquired::Clean } else { self.wait_for(i, me, budget)? };
        if how == Acquired::OwnerDied {
            Locked::repair_held(self, i, word, me, true);
        }
        Ok(Locked { store: self, index: i, word, me })
    }

    /// Shard `i` is held by someone else: waits for it until the deadline,
    /// or fails at once if a wait for it timed out less than a cool-down ago.
    #[cold]
    #[inline(never)]
    fn wait_for(&self, i: usize, me: u64, budget: &Budget) -> Result<Acquired, Error> {
        if !self.patience.may_wait(i, || self.clock.now()) {
            return Err(self.failing_fast(i));
        }
        let acquired = lock::lock_until(self.lock_word(i), me, self.patience.deadline(budget), |w| self.alive(w));
        self.patience.waited(i, acquired.is_some(), || self.clock.now());
        acquired.ok_or_else(|| self.timed_out(&format!("shard {i}")))
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::Backend(self.not_acquired(what))
    }

    /// Shard `i` is held, and a wait for it timed out less than a cool-down ago.
    #[cold]
    fn failing_fast(&self, i: usize) -> Error {
        Error::Backend(format!(
            "{}; failing fast, without waiting, for {} ms after that timeout",
            self.not_acquired(&format!("shard {i}")),
            self.patience.cool_down().as_millis()
        ))
    }

    fn not_acquired(&self, what: &str) -> String {
        let why = match self.owner.descriptor_trouble() {
            Some(trouble) => format!(": {trouble}"),
            None => " (a process holding it is stopped?)".to_owned(),
        };
        format!(
            "shm {what} of region {}: lock not acquired within {} ms{why}",
            self.name,
            self.patience.timeout().as_millis()
        )
    }

    /// Locks shard `i` only if it is free (never waits: safe while holding another).
    /// (A shard left locked by a dead process counts as held here: its
    /// repair is for the next operation that waits for it.)
    fn try_lock(&self, i: usize) -> Result<Option<Locked<'_>>, Error> {
        let me = self.owner.word(self.generations())?;
        let word = self.lock_word(i);
        Ok(lock::try_lock(word, me).then(|| Locked { store: self, index: i, word, me }))
    }

    /// Runs `f` on the shards other than `me` that are free, from a rotating
    /// start, until it returns Some (only try-locking: the caller holds
    /// shard `me`'s). See `table::Elsewhere`.
    fn on_other_shards(&self, me: usize, f: &mut dyn FnMut(&mut Shard) -> Option<u64>) -> Option<u64> {
        let n = self.layout.geometry.shards;
        let start = self.reclaim_turn.fetch_add(1, Ordering::Relaxed) as usize;
        for k in 0..n {
            let i = (start + k) % n;
            if i == me {
                continue;
            }
            let Ok(Some(mut guard)) = self.try_lock(i) else { continue };
            let (mut shard, ..) = guard.shard();
            if let Some(r) = f(&mut shard) {
                return Some(r);
            }
        }
        None
    }

    /// Records `n` denials of `key` answered from the over-limit cache in
    /// its shard's sketches, under the shard's lock (`../tally.rs`); false
    /// if the lock was not acquired within the caller's `budget` (they
    /// stay pending in their stripe).
    fn record_denials(&self, budget: &Budget, fp: u64, key: &[u8], n: u64) -> bool {
        let Some(top) = &self.layout.top else { return true };
        let Ok(mut guard) = self.lock(self.layout.geometry.place(fp).shard, budget) else { return false };
        top.record_denials(guard.all_parts().top, fp, key, n);
        drop(guard);
        self.heal(budget, false);
        true
    }

    /// Hands every stripe's pending denials to the sketches. A stripe held
    /// by a dead process is taken over (its state is whole at every
    /// instruction, `../tally.rs`); one held by a live one is waited for
    /// if `wait`, else left. All waits (for stripes and shards) within
    /// `budget`. Returns the stripes left.
    fn flush_stripes(&self, budget: &Budget, wait: bool) -> Result<usize, Error> {
        let me = self.owner.word(self.generations())?;
        let deadline = self.patience.deadline(budget);
        let mut take = |holder: &AtomicU64, me: u64| {
            if wait {
                return lock::lock_until(holder, me, deadline, |w| self.alive(w)).is_some();
            }
            let w = holder.load(Ordering::Relaxed);
            w != 0 && !self.alive(w) && holder.compare_exchange(w, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        };
        Ok(self.tally.flush(me, &mut take, &mut |fp, key, n| self.record_denials(budget, fp, key, n)))
    }
}

impl Store for ShmStore {
    const TICK_NS: u64 = 1;

    #[inline]
    fn check(&self, key: &[u8], cost: u64) -> Result<Verdict, Error> {
        let fp = self.seed.fingerprint(key);
        let now = self.clock.now();
        let budget = Budget::new();
        let Limits::Rates(rates) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_check")) };
        // A key over its limit: answered from the over-limit cache, without
        // the shard's lock, counted in this thread's stripe (as memory does;
        // see its module docs for why the answer is the table's).
        let cached = self.denials.holds(fp);
        if cached && cost == 1 {
            if let Some(verdict) = self.denials.lookup(fp, 1, now, 1) {
                if let Ok(me) = self.owner.word(self.generations()) {
                    if self.tally.count(me, me, fp, key, &mut |fp, key, n| self.record_denials(&budget, fp, key, n)) {
                        return Ok(verdict);
                    }
                }
            }
        }
        // (The key's place only now: a cached denial does without it.)
        let place = self.layout.geometry.place(fp);
        self.prefetch_sets(place);
        // A slot with one state word (one token-bucket rate) is updated in
        // place by one aligned 8-byte store: a killed process leaves the old
        // word or the new one, never a mix, so it needs no undo record (see
        // layout.rs, step 3).
        let journaled = self.layout.geometry.stride > 2;
        let verdict = {
            let mut guard = self.lock(place.shard, &budget)?;
            let (mut shard, journal, top_words) = guard.shard();
            // (The index copied, not `place` borrowed: see `on_key`.)
            let me = place.shard;
            let mut at = At { now, elsewhere: &mut move |pass| self.on_other_shards(me, pass) };
            let verdict = shard.check(rates, KeyAt { fp, place }, cost, &mut at, |i, old| {
                if journaled {
                    journal.begin(i, old)
                }
            });
            #[cfg(test)]
            if PANIC_IN_CHECK.with(|p| p.replace(false)) {
                panic!("injected: a panic inside a check's critical section");
            }
            journal.end();
            self.denials.settle(cached, fp, cost, now, verdict);
            // Its own crash argument (top/sketch.rs): needs no undo record.
            if let Some(top) = &self.layout.top {
                let active = Top::sample(shard.stats.allowed.wrapping_add(shard.stats.limited));
                top.record(top_words, fp, key, verdict.outcome.allowed, active);
            }
            guard.release();
            verdict
        };
        self.heal(&budget, false);
        Ok(verdict)
    }

    /// Journaled as a check is (a multi-word state is rewritten in place).
    fn adjust(&self, key: &[u8], delta: i64) -> Result<Verdict, Error> {
        let Limits::Rates(rates) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_adjust")) };
        let journaled = self.layout.geometry.stride > 2;
        let verdict = self.on_key(key, |shard, k, at, journal, _| {
            let now = at.now;
            if delta != 0 {
                self.denials.forget(k.fp);
            }
            let hook = |i, old: &[u64]| {
                if journaled {
                    journal.begin(i, old)
                }
            };
            let (verdict, _) =
                shard.update(rates.as_slice(), k, at, hook, |words| adjust_all(rates, words, now, delta));
            journal.end();
            verdict
        })?;
        Ok(verdict)
    }

    /// A lease operation writes one aligned word in place (leases.rs): a
    /// process killed in the middle leaves the old word or the new one, so
    /// it needs no undo record.
    fn acquire(&self, key: &[u8]) -> Result<(Verdict, u64), Error> {
        let Limits::Leases(leases) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_acquire")) };
        let (outcome, lease) = self.on_key(key, |shard, k, at, _, top_words| {
            let (outcome, lease) = shard.acquire(leases, k, at);
            if let Some(top) = &self.layout.top {
                let active = Top::sample(shard.stats.allowed.wrapping_add(shard.stats.limited));
                top.record(top_words, k.fp, key, outcome.allowed, active);
            }
            (outcome, lease)
        })?;
        Ok((Verdict { index: 0, outcome }, lease))
    }

    fn renew(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        let Limits::Leases(leases) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_renew")) };
        self.on_key(key, |shard, k, at, _, _| shard.renew(leases, k, at, lease))
    }

    fn release(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        let Limits::Leases(leases) = &self.limits else { return Err(wrong_kind(&self.limits, "rl_release")) };
        self.on_key(key, |shard, k, at, _, _| shard.release(leases, k, at, lease))
    }

    fn reset(&self, key: &[u8]) -> Result<(), Error> {
        let fp = self.seed.fingerprint(key);
        let place = self.layout.geometry.place(fp);
        let budget = Budget::new();
        {
            let mut guard = self.lock(place.shard, &budget)?;
            self.denials.forget(fp);
            guard.shard().0.remove(place, fp);
        }
        self.heal(&budget, false);
        Ok(())
    }

    /// Each shard gets its own budget (sweeping a large table may itself take
    /// longer than `timeout_ms`). A shard whose lock is not acquired in time
    /// is skipped, the others are swept, and the first such error is returned.
    fn sweep(&self) -> Result<u64, Error> {
        let now = self.clock.now();
        let mut swept = 0;
        let mut first_error = None;
        for i in 0..self.layout.geometry.shards {
            match self.lock(i, &Budget::new()) {
                Ok(mut guard) => swept += guard.shard().0.sweep(&self.limits, now),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.heal(&Budget::new(), false);
        match first_error {
            None => Ok(swept),
            Some(e) => Err(e),
        }
    }

    /// Region-wide: every shard's sketches, each copied under its lock
    /// (one budget for the whole call, as for `stats`).
    fn top(&self, which: Which, max: usize) -> Result<Vec<TopEntry>, Error> {
        let Some(top) = &self.layout.top else { return Ok(Vec::new()) };
        let budget = Budget::new();
        // The stripes' pending denials first, so that the counts are exact
        // (a stripe held past the budget by a stopped process keeps its own).
        self.flush_stripes(&budget, true)?;
        let mut all = Vec::new();
        for i in 0..self.layout.geometry.shards {
            let mut guard = self.lock(i, &budget)?;
            top.read(guard.all_parts().top, which, &mut all);
        }
        Ok(top.finish(all, max))
    }

    fn stats(&self) -> Result<StoreStats, Error> {
        // One budget for the whole call: if the recount timed out on a shard
        // held by a stopped process, the loop below fails on it at once.
        let budget = Budget::new();
        self.heal(&budget, true);
        let mut total = StoreStats::default();
        for i in 0..self.layout.geometry.shards {
            let mut guard = self.lock(i, &budget)?;
            let s = guard.parts().1;
            // Saturating: a damaged region's counters may be anything.
            total.allowed = total.allowed.saturating_add(s.allowed);
            total.limited = total.limited.saturating_add(s.limited);
            total.evictions = total.evictions.saturating_add(s.evictions);
        }
        // The denials answered from the over-limit cache, counted in the
        // stripes. (Stripes left held by dead processes are taken over on
        // the way, so that the threads landing on them use them again.)
        self.flush_stripes(&budget, false)?;
        total.limited = total.limited.saturating_add(self.tally.denied());
        total.keys = self.total_keys().load(Ordering::Relaxed);
        Ok(total)
    }
}
