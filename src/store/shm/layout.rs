//! The layout of a shared-memory region, declared and documented in one place.
//!
//! ## The region, byte by byte
//!
//! A region is one POSIX shm object (`/dev/shm/<name>` on Linux), mapped
//! `MAP_SHARED` by every process that uses it, at whatever address each
//! process's `mmap` picks. So it holds **offsets, never pointers**: every
//! position below is computed by each process from its own configuration and
//! checked against the values the creator wrote in the header.
//!
//! This is layout version 6 (`LAYOUT_VERSION`): version 5 (the whole
//! configuration text, for attaching by name, and the rl_top sketches)
//! with the over-limit cache and its tally's stripes at the end. A region
//! of another version (5, or the two development builds' 4) is not opened
//! by this library, nor this library's by theirs: RL_ERR_INCOMPATIBLE,
//! naming both versions.
//!
//! ```text
//! offset             size                  what
//! 0                  HEADER_BYTES (384)    Header: identity, geometry, shared counters
//! config_text_offset config_text_len,      the configuration text (below), whole;
//!   (= 384)            rounded up to 64    zeros after it (64 bytes for the
//!                      (at most 4096)      shortest texts, 128 for most)
//! owners_offset      MAX_OWNERS * 8        the generation of each owner slot (owner.rs)
//!   (= 384 + text)   (32 KiB)
//! shard_headers_offset shards * 320        one ShardHeader per shard: its lock, stats, undo log
//!   (= owners + 32 KiB)
//! slots_offset       shards * shard_words * 8
//!   (= headers + shards * 320)             the key table (table/): per shard,
//!                                          sets * 8 slots of `stride` u64 words
//! top_offset         shards * top_words * 8
//!   (= end of slots)                       per shard, its two heavy-hitter
//!                                          sketches for rl_top (top/): Limited
//!                                          then Active, each 1 + 12 * top
//!                                          words (top/sketch.rs), the pair
//!                                          rounded up to whole cache lines;
//!                                          nothing when top=0
//! denials_offset     shards * denials_per_shard * 64
//!   (= end of sketches)                    the over-limit cache (store/denials.rs):
//!                                          per shard, its block of
//!                                          `denials_per_shard(shards)` entries
//!                                          (256 in all, at least 4 per shard),
//!                                          one cache line each: seq, fp, cost,
//!                                          at, until, reset_at, limit, index
//! tally_offset       STRIPES * 128 (32 KiB)
//!   (= end of cache, to 128)               the tally's stripes (store/tally.rs):
//!                                          two cache lines each: holder, denied,
//!                                          pending_fp, pending, key_len, key[9]
//! region_bytes       (= tally_offset + 32 KiB): the object's size
//! ```
//!
//! The header (all integers native-endian; the region never leaves the host):
//!
//! ```text
//!   0  magic            u64   MAGIC ("rlshm\0\0\x01"), written last but one
//!   8  version          u32   LAYOUT_VERSION; another one is RL_ERR_INCOMPATIBLE
//!  12  ready            u32   0 while the creator initialises; READY (release
//!                             store) once everything else is written
//!  16  region_bytes     u64   size of the whole object
//!  24  config_hash      u64   SipHash, fixed key, of the whole configuration text
//!                             (rates, algorithm, capacity, top), however long
//!  32  seed             2*u64 the keyed-hash seed (keyhash.rs), random per region
//!  48  epoch_offset_ns  u64   CLOCK_REALTIME - CLOCK_MONOTONIC at creation: every
//!                             process's clock is CLOCK_MONOTONIC + this, so all
//!                             agree, and windows align on wall-clock boundaries
//!  56  capacity         u64
//!  64  shards, sets, stride, owners, shard_headers_offset, shard_header_bytes,
//!      slots_offset, shard_words                    (u64 each) the geometry
//! 128  total_keys       u64   keys stored in the table (own cache line)
//! 192  dirty            u64   1 after a repair, until total_keys is recounted
//! 200  recoveries       u64   locks taken over from dead processes, ever
//! 208  top              u64   counters per sketch (`top=`), 0 for none
//! 216  top_offset       u64   where the sketches start
//! 224  denials_offset   u64   where the over-limit cache starts
//! 232  denials_per_shard u64  its entries per shard
//! 240  tally_offset     u64   where the tally's stripes start
//! 248  stripes          u64   how many (STRIPES, 256)
//! 256  recount_lock     u64   a lock (lock.rs) serialising recounts (own line)
//! 320  config_text_offset u64 where the configuration text is (HEADER_BYTES)
//! 328  config_text_len  u64   its length in bytes, at most CONFIG_TEXT_MAX
//! 336  (pad to 384 = HEADER_BYTES)
//! ```
//!
//! Everything from `region_bytes` to `shard_words`, `top` to `stripes`,
//! `config_text_offset` and `config_text_len` is compared, at open, with
//! what the opener computes from its configuration (region.rs, `check`).
//!
//! The configuration text is the region's identity in canonical form
//! (`config::identity_text`, ASCII: `rate algorithm [burst] capacity top`,
//! the order `Config::describe` starts with), e.g. `rate=100/min
//! algorithm=token_bucket burst=100 capacity=100000 top=32` (a concurrency
//! limiter's: `concurrency=16 lease=1min capacity=100000 top=32`): what
//! `config_hash` hashes, what an opener with another configuration is shown,
//! and what `backend=shm name=...` without `rate=` (an attach) parses to
//! learn the limits and the sketches' size. `top` is in it because the
//! sketches are part of the layout: regions with another `top` have another
//! size and place for them. (`Config::describe` goes on with `backend name
//! mode url prefix timeout_ms on_error dry_run`, none of which is a region's:
//! `mode` is the object's, the rest each handle's own.) Like the rest of the
//! header, the creator writes it before `ready` and nobody writes it again.
//! An opener reads it only after seeing `ready`, and only once its offset and
//! length are checked against the object's size and `region_bytes`, so a
//! damaged header cannot make it read outside the mapping.
//!
//! A shard header (one per shard, 320 bytes, starting on a cache line):
//!
//! ```text
//!   0  lock             u64: 0 free, else the holder's owner word (lock.rs,
//!                       owner.rs); alone on its cache line: waiters spin on it
//!  64  stats            ShardStats: allowed, limited, evictions, keys, cursor
//! 104  journal          the undo log of the shard: active, slot, saved[25]
//! ```
//!
//! ## Bytes per key
//!
//! The table has 2 slots per key of capacity (two-choice 8-way sets stay below
//! 8 entries per set at full capacity, see table/mod.rs); a slot is a 64-bit
//! fingerprint plus the rates' states: 1 word per token-bucket rate, 2 per
//! fixed-window rate, 3 per sliding-window rate. So:
//!
//! | configuration            | slot     | per key of capacity |
//! | ------------------------ | -------- | ------------------- |
//! | one token-bucket rate    | 16 bytes | **32 bytes**        |
//! | one fixed-window rate    | 24 bytes | 48 bytes            |
//! | one sliding-window rate  | 32 bytes | 64 bytes            |
//! | `concurrency=N`          | 8 (N+1)  | 16 (N+1): 272 bytes for N = 16 |
//!
//! plus a fixed 33 KiB (header, configuration text and owner slots) and 320 bytes per shard (at
//! most 64 shards: 20 KiB), e.g. 3.2 MB for the default capacity of 100 000
//! keys. (nginx's limit_req keeps 128 bytes per state.) The rl_top sketches
//! add `2 * (1 + 12 * top) * 8` bytes per shard, rounded up to 64: 6 KiB
//! per shard for the default top=32, 388 KiB for 64 shards (a capacity of
//! 16 384 or more), 6 KiB for 1 shard (a capacity under 512). The
//! over-limit cache adds 16 KiB (256 entries of 64 bytes; a few more when
//! the shards do not divide 256), and the tally's stripes 32 KiB.
//!
//! ## Locks: a robust lock per shard, not per-slot atomics
//!
//! A single GCRA state would fit one CAS, but window states are 2-3 words,
//! several rates are taken all-or-nothing, a new key needs a slot chosen and
//! the key count bumped, and `allowed`/`limited` must be counted exactly: a
//! lock-free check would pay a second atomic for the counters, as much as
//! the lock it saves. So each shard has a lock, held for a few dozen
//! nanoseconds, and with up to 64 shards workers on different keys rarely
//! meet.
//!
//! The lock is one word of the region (lock.rs): a compare-and-swap takes
//! it, another (from the holder's own word) releases it, waiters spin, then sleep, always within a
//! deadline. It is **robust**: the word names its holder's *owner word*,
//! whose liveness any process can ask the kernel about (an open-file-
//! description lock on the region's shm object, which the kernel drops when
//! the holder dies; owner.rs). A waiter that finds the holder dead takes the
//! lock over with one CAS and repairs the shard, as below. Not glibc's
//! robust mutexes: they do the same job at more than twice the cost per
//! check (their robust-list upkeep), and sleep in the kernel as soon as they
//! are contended (BENCHMARKS.md has the figures). Not a spinlock holding the
//! owner's pid, as nginx's shmtx does: a pid means nothing across PID
//! namespaces (containers sharing IPC but not PIDs), so a live owner could
//! be taken for dead; an OFD lock is on the one inode everybody maps.
//!
//! A takeover is safe because a live holder is never judged dead: it keeps
//! its owner slot's byte locked for as long as its handle is open (its own
//! open file description, never shared with a forked child, and held by a
//! mapping even if the host closes the descriptor, owner.rs), and the slot's
//! generation changes only once that lock is gone; a process whose
//! descriptor was closed or replaced counts every holder as alive. A wrong judgement can only go the other way (a child made by a
//! raw `clone` that skips the fork handler shares its parent's slot), and
//! that costs bounded waits, never two writers. A process *stopped* while
//! holding a lock keeps it, so every wait is bounded by `timeout_ms`
//! (mod.rs); past it the operation fails with a backend error without
//! touching that shard.
//!
//! ## What a killed process can leave behind, and the repair
//!
//! Every write to a shard's slots, stats and journal happens under its lock.
//! A process may die at any instruction, so the heir (the waiter that takes
//! the lock over, lock.rs) must assume any prefix of the dead owner's stores
//! was done:
//!
//! 1. **A slot being emptied** (reclaim, sweep, reset, eviction) has its
//!    fingerprint zeroed first: the slot is the whole old entry or empty.
//! 2. **A slot being filled** (a new key) gets its state first and its
//!    fingerprint last: the new key is whole or absent. (table/slot_writes.rs keeps both
//!    orders with compiler fences; a kill stops the process between two
//!    instructions, and its stores are visible to all before the kernel closes
//!    its descriptors, which is what makes it dead to the others.)
//! 3. **A stored key's state updated in place** (several words: window
//!    states, several rates) is preceded by an undo record: the slot index and
//!    its old words are written to the shard's journal, then `active = 1`,
//!    then the state is rewritten, then `active = 0`, then the unlock. If
//!    `active` is 1 the record is whole (it was written before), so the repair
//!    copies the old words back: the check that died never happened, which is
//!    right, since nobody got its answer. If `active` is 0 the slot was either
//!    not touched yet or completely written. A slot holding a single state
//!    word (one token-bucket rate) skips the record: its update is one
//!    aligned 8-byte store, which a kill cannot tear. An `rl_adjust` is
//!    recorded exactly like a check. A lease operation of a concurrency
//!    limiter (acquire, renew, release) writes one lease word of the slot,
//!    one aligned store, so it skips the record too (algorithm/leases.rs).
//! 4. **Counters.** The shard's key count and the table-wide count are not
//!    changed atomically with the slots (nor with each other), so the repair
//!    recounts the shard's non-empty slots (bounded: one pass over one
//!    shard), stores it, and sets the header's `dirty` flag. The dead process
//!    may also have died holding a second shard (the bounded reclaim pass of
//!    a full table try-locks another shard): that shard's heir repairs it
//!    the same way. allowed/limited/evictions are single-word increments: a
//!    dead check may or may not be counted, never garbled.
//! 5. **The total.** Whoever sees `dirty` set after an operation (one
//!    relaxed load per check) takes the robust `recount_lock`, then every
//!    shard lock in order (repairing any that was abandoned), sets
//!    `total_keys` to the sum of the shards' counts and clears `dirty`.
//!    While all shard locks are held no operation is half-way, so the sum is
//!    exact. Deadlock-free: a check holds one shard lock and only try-locks a
//!    second; recounts are serialised by `recount_lock`, taken while holding
//!    no shard lock. A recounter that dies leaves `dirty` set, so the next
//!    operation recounts again; so does one that gives up because a shard
//!    is held past `timeout_ms` (a stopped process): it releases what it took.
//! 6. The repair itself only writes the shard's own words, and is
//!    idempotent: an heir that dies while repairing leaves its own (dead)
//!    owner word in the lock, and the next heir repairs again.
//! 7. **The heavy-hitter sketches** (top/sketch.rs) of a shard are written
//!    under its lock, after the check's slot is done, and need no undo
//!    record and no repair: every state between two of their stores is a
//!    valid sketch. Adding to a listed key's count is one aligned 8-byte
//!    store. A new entry is written as a slot is filled: the sketch's
//!    `floor` (the largest count ever evicted) is raised to the victim's
//!    count first, then the victim's fingerprint is zeroed, then count,
//!    error, length and key bytes are written, the fingerprint last. So a
//!    kill leaves at worst one entry empty (its other words junk, never
//!    read: rl_top lists only entries with a fingerprint, and the key bytes
//!    of a listed entry are always its own), with the floor already covering
//!    the key it evicted; an entry that later takes an empty place starts
//!    from the floor, never from 0, so every listed `count` stays at or above
//!    its key's true count, and `count - error` at or below it. What a kill
//!    can lose is the dead check's own occurrence (nobody got its answer; as
//!    for allowed/limited, it may or may not be counted): so a key's count
//!    may lack at most one unit per kill that hit a record of that key. The
//!    heir's table repair (step 3) never touches the sketches. Reads clamp
//!    what a damaged region could hold: a key length above 64 is read as 64,
//!    an error above the count as the count; counts only saturate.
//!    `torn_records_keep_the_bounds` (sketch.rs), the storm and
//!    `a_process_killed_mid_sketch_record_leaves_sane_bounds` (tests.rs)
//!    check it.
//! 8. **The configuration text** (and the header's identity and geometry)
//!    is written only by the creator, before `ready`, and never again: no
//!    check, reset, sweep or repair writes it, so a kill after creation
//!    cannot tear it and there is nothing to repair. A creator killed
//!    before `ready` is the case of the last paragraph below; a text damaged
//!    by a stray writer is the next section's case (refused, never used).
//!
//! 9. **The over-limit cache** (store/denials.rs) of a shard is its block
//!    of entries, written only under the shard's lock (a check's denial
//!    remembered, an allowed check, adjust or reset forgetting it) and read
//!    by anyone without a lock. Each entry is a seqlock: its number is made
//!    odd, the fields written, the number made even (a value never seen
//!    before). A writer killed in between leaves the number odd: readers
//!    take an odd number as a miss and go to the locked path, which waits
//!    for the dead holder's lock and takes it over (lock.rs), so no reader
//!    ever waits on the entry itself. The heir's repair (mod.rs,
//!    `Locked::repair`) then empties every entry of the shard (a denial may
//!    also stand for a state its undo record just rolled back): the next
//!    denials are remembered afresh. A kill costs locked checks for the
//!    keys of that shard, never a wrong answer.
//! 10. **The tally's stripes** (store/tally.rs) are held by one owner word
//!     at a time (a compare-and-swap of `holder` from 0, a store of 0 to give
//!     back), and every prefix of a holder's stores is a valid stripe: a kill
//!     leaves the dead check counted in `denied` or not (nobody got its
//!     answer), never a count lost or garbled; a pending batch paired with
//!     its whole key; and a batch being recorded into the sketch (under that
//!     shard's lock, then `pending` zeroed) recorded or not. A stripe left
//!     held by a dead owner is taken over by `rl_top` and `rl_stats` (checked
//!     with `alive`, as a lock is, owner.rs), which record its pending batch.
//!     Until then the threads landing on it are answered by the table. So
//!     `limited` (the shards' counters plus the stripes' `denied`) loses
//!     nothing to a kill, and rl_top's Limited counts at most one batch
//!     twice per kill that fell between a batch's record and `pending`
//!     zeroed: a listed count stays at or above the true one. A sketch
//!     record torn by the kill (item 7) is written again whole by whoever
//!     records the batch after it. The heir's table repair touches neither.
//!
//! ## A damaged region
//!
//! Any process that can write the region can write anything into it (a stray
//! pointer in a worker, a bug, a hostile co-tenant with the same permissions).
//! The answers for the damaged keys may then be wrong, but nothing read from
//! the region can make a process read or write outside its mapping, panic,
//! or wait past `timeout_ms`: every position comes from the process's own
//! configuration (the header's geometry is compared with it once, at open,
//! and never read again; an attach takes its configuration from the stored
//! text, read within bounds, and keeps it only if the text is exactly the
//! canonical one, its hash matches and the whole geometry follows from it); the values read from the region that pick a place
//! are checked before use (a lock word's owner slot, owner.rs; the undo
//! record's slot index, journal.rs; the reclaim cursor, taken modulo the
//! shard's slots, table/; a sketch entry's key length, clamped to 64,
//! top/sketch.rs; an over-limit cache entry's number, fingerprint, reading
//! interval, rate index and limit, store/denials.rs; a stripe's key length
//! and fingerprint, store/tally.rs); counters are only counted on (saturating, and a
//! shard counter past 2^62, or a key count above the shard's slots, is
//! mended when the shard is next taken, mod.rs); a lock word that names no
//! live owner is taken over and its shard repaired, and one that names a
//! live owner who does not hold it costs waits bounded by `timeout_ms`. The
//! test `a_corrupted_region_never_crashes_or_hangs` (tests.rs) holds the
//! library to this.
//!
//! A process that dies while *creating* the region leaves `ready` at 0: others
//! (openers and attaches alike) wait at most `READY_WAIT` and then fail with
//! RL_ERR_IO, naming the region to remove; none has read its configuration
//! text, which is written before `ready` like the rest.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::owner::MAX_OWNERS;
use crate::algorithm::{Limits, STATE_WORDS};
use crate::config::{concurrency_text, identity_text, Algorithm, ConcurrencySpec, RateSpec, MAX_RATES};
use crate::keyhash::Seed;
use crate::store::denials::{Entry, ENTRY_BYTES};
use crate::store::tally::{Stripe, STRIPE_BYTES};
use crate::table::{Geometry, ShardStats};
use crate::top::Top;

/// "rlshm", two zeros, then 1: a libratelimit region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"rlshm\0\0\x01");
/// Bumped whenever anything in this file changes meaning or place.
pub const LAYOUT_VERSION: u32 = 6;
/// The value of `Header::ready` once the region is initialised.
pub const READY: u32 = 1;
/// Most words a slot can have: the fingerprint and every rate's state.
pub const MAX_STRIDE: usize = 1 + MAX_RATES * STATE_WORDS;
/// Longest configuration text a region may hold. Canonical texts stay under
/// 512 bytes (8 rates of 20-digit limits); the rest is room for new keys.
pub const CONFIG_TEXT_MAX: usize = 4096;

/// The region header (see the module docs for the byte offsets).
#[repr(C, align(64))]
pub struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub ready: AtomicU32,
    pub region_bytes: u64,
    pub config_hash: u64,
    pub seed: [u64; 2],
    pub epoch_offset_ns: u64,
    pub capacity: u64,

    pub shards: u64,
    pub sets: u64,
    pub stride: u64,
    /// Owner slots (`MAX_OWNERS`).
    pub owners: u64,
    pub shard_headers_offset: u64,
    pub shard_header_bytes: u64,
    pub slots_offset: u64,
    pub shard_words: u64,

    pub total_keys: AtomicU64,
    _pad_total: [u64; 7],

    pub dirty: AtomicU64,
    pub recoveries: AtomicU64,
    /// Counters per heavy-hitter sketch (`top=`), 0 for none.
    pub top: u64,
    /// Where the shards' sketches start.
    pub top_offset: u64,
    /// Where the over-limit cache starts, and its entries per shard.
    pub denials_offset: u64,
    pub denials_per_shard: u64,
    /// Where the tally's stripes start, and how many.
    pub tally_offset: u64,
    pub stripes: u64,

    pub recount_lock: AtomicU64,
    _pad_lock: [u64; 7],

    pub config_text_offset: u64,
    pub config_text_len: u64,
}

/// A shard's undo log: the old words of the one slot being rewritten.
#[repr(C)]
pub struct Journal {
    /// 1 while `saved` holds the old words of `slot` and the slot may be half-written.
    pub active: u64,
    pub slot: u64,
    pub saved: [u64; MAX_STRIDE],
}

/// One per shard: its lock, its counters and its undo log.
#[repr(C, align(64))]
pub struct ShardHeader {
    pub lock: AtomicU64,
    _pad_lock: [u64; 7],
    pub stats: ShardStats,
    pub journal: Journal,
}

pub const HEADER_BYTES: usize = size_of::<Header>();
pub const SHARD_HEADER_BYTES: usize = size_of::<ShardHeader>();

// The documented offsets, checked by the compiler.
const _: () = {
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, version) == 8);
    assert!(offset_of!(Header, ready) == 12);
    assert!(offset_of!(Header, config_hash) == 24);
    assert!(offset_of!(Header, seed) == 32);
    assert!(offset_of!(Header, epoch_offset_ns) == 48);
    assert!(offset_of!(Header, shards) == 64);
    assert!(offset_of!(Header, total_keys) == 128);
    assert!(offset_of!(Header, dirty) == 192);
    assert!(offset_of!(Header, recoveries) == 200);
    assert!(offset_of!(Header, top) == 208);
    assert!(offset_of!(Header, top_offset) == 216);
    assert!(offset_of!(Header, denials_offset) == 224);
    assert!(offset_of!(Header, denials_per_shard) == 232);
    assert!(offset_of!(Header, tally_offset) == 240);
    assert!(offset_of!(Header, stripes) == 248);
    assert!(offset_of!(Header, recount_lock) == 256);
    assert!(offset_of!(Header, config_text_offset) == 320);
    assert!(offset_of!(Header, config_text_len) == 328);
    assert!(HEADER_BYTES == 384);
    assert!(offset_of!(ShardHeader, stats) == 64);
    assert!(offset_of!(ShardHeader, journal) == 104);
    assert!(SHARD_HEADER_BYTES == 320);
    // Shard headers start on a cache line after the owner slots (the text area is
    // a whole number of cache lines).
    assert!((HEADER_BYTES + MAX_OWNERS * 8) % 64 == 0);
    // The over-limit cache and the tally lie in the region as they are.
    assert!(ENTRY_BYTES == 64 && std::mem::align_of::<Entry>() == 64);
    assert!(STRIPE_BYTES == 128 && std::mem::align_of::<Stripe>() == 128);
};

/// Stripes of the tally in a region: room for the threads of a few dozen
/// worker processes (two that share one lose speed, never a count).
pub const STRIPES: usize = 256;
/// Entries of the over-limit cache per shard: 256 in all (as memory has),
/// at least 4 per shard.
pub fn denials_per_shard(shards: usize) -> usize {
    256usize.div_ceil(shards.max(1)).max(4)
}

/// Where everything is, for one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub geometry: Geometry,
    pub capacity: u64,
    pub config_text_offset: usize,
    pub owners_offset: usize,
    pub shard_headers_offset: usize,
    pub slots_offset: usize,
    /// The heavy-hitter sketches (None for `top=0`) and where they start:
    /// `top.shard_words()` words per shard, in shard order.
    pub top: Option<Top>,
    pub top_offset: usize,
    /// The over-limit cache: `denials_per_shard` entries per shard, in shard order.
    pub denials_offset: usize,
    pub denials_per_shard: usize,
    /// The tally's `STRIPES` stripes, on a 128-byte boundary.
    pub tally_offset: usize,
    pub region_bytes: usize,
    /// The configuration in words, whole: what must match between
    /// processes, kept at `config_text_offset`.
    pub config_text: String,
    pub config_hash: u64,
}

impl Layout {
    pub fn new(limits: &Limits, capacity: u64, top: usize) -> Option<Layout> {
        let geometry = Geometry::new(capacity, limits.state_words());
        let config_text = describe(limits, capacity, top);
        if config_text.len() > CONFIG_TEXT_MAX {
            return None;
        }
        let config_text_offset = HEADER_BYTES;
        let owners_offset = config_text_offset + config_text.len().next_multiple_of(64);
        let shard_headers_offset = owners_offset + MAX_OWNERS * 8;
        let slots_offset = shard_headers_offset + geometry.shards * SHARD_HEADER_BYTES;
        let table_bytes = geometry.shards.checked_mul(geometry.shard_words())?.checked_mul(8)?;
        let top_offset = slots_offset.checked_add(table_bytes)?;
        let top = Top::new(top);
        let top_bytes = geometry.shards * top.map_or(0, |t| t.shard_words()) * 8;
        let denials_offset = top_offset.checked_add(top_bytes)?;
        let denials_per_shard = denials_per_shard(geometry.shards);
        let tally_offset = (denials_offset + geometry.shards * denials_per_shard * ENTRY_BYTES).next_multiple_of(128);
        let region_bytes = tally_offset.checked_add(STRIPES * STRIPE_BYTES)?;
        // Region sizes are off_t for ftruncate.
        if region_bytes > i64::MAX as usize {
            return None;
        }
        // Over the whole text, with a fixed key, so every process computes the
        // same hash. 63 bits (the fingerprint's low bit is always set) are
        // plenty: a collision needs a hostile configuration writer, who could
        // as well remove the region.
        let config_hash = Seed([0x726c_7368_6d5f_6366, LAYOUT_VERSION as u64]).fingerprint(config_text.as_bytes());
        Some(Layout {
            geometry,
            capacity,
            config_text_offset,
            owners_offset,
            shard_headers_offset,
            slots_offset,
            top,
            top_offset,
            denials_offset,
            denials_per_shard,
            tally_offset,
            region_bytes,
            config_text,
            config_hash,
        })
    }

    /// Bytes of table per key of capacity.
    pub fn bytes_per_key(&self) -> f64 {
        (self.geometry.slots() * self.geometry.stride * 8) as f64 / self.capacity as f64
    }
}

/// The configuration as the region records it (`config::identity_text`), e.g.
/// `rate=100/min algorithm=token_bucket burst=100 capacity=1000 top=32`, or
/// `concurrency=16 lease=1min capacity=1000 top=32`.
fn describe(limits: &Limits, capacity: u64, top: usize) -> String {
    let rates = match limits {
        Limits::Rates(rates) => rates,
        Limits::Leases(l) => {
            let spec = ConcurrencySpec { slots: l.slots as u32, lease_ns: l.lease };
            return concurrency_text(spec, capacity, true, top);
        }
    };
    let specs: Vec<RateSpec> =
        rates.iter().map(|r| RateSpec { limit: r.limit, period_ns: r.period, burst: r.burst }).collect();
    let algorithm = rates.first().map_or(Algorithm::TokenBucket, |r| r.algorithm);
    identity_text(&specs, algorithm, capacity, true, top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::limiter::limits_in_ns;

    fn layout(config: &str) -> Layout {
        let c = Config::parse(config).unwrap();
        Layout::new(&limits_in_ns(&c), c.capacity, c.top).unwrap()
    }

    /// The table in the module docs, for the default configuration and for
    /// tracking turned off: the text area, owners, shards, slots, sketches.
    #[test]
    fn the_documented_layout() {
        let l = layout("rate=100/minute");
        assert_eq!(l.config_text, "rate=100/min algorithm=token_bucket burst=100 capacity=100000 top=32");
        assert_eq!(l.config_text_offset, 384);
        assert_eq!(l.owners_offset, 384 + 128);
        assert_eq!(l.shard_headers_offset, l.owners_offset + 32 * 1024);
        assert_eq!(l.geometry.shards, 64);
        assert_eq!(l.slots_offset, l.shard_headers_offset + 64 * 320);
        assert_eq!(l.top_offset, l.slots_offset + 64 * l.geometry.shard_words() * 8);
        // Two sketches of 1 + 12 * 32 words, rounded up to 64 bytes: 6208 bytes per shard.
        assert_eq!(l.top.map(|t| t.shard_words() * 8), Some(6208));
        assert_eq!(l.denials_offset, l.top_offset + 64 * 6208);
        // 4 entries of 64 bytes per shard, then 256 stripes of 128 bytes.
        assert_eq!(l.denials_per_shard, 4);
        assert_eq!(l.tally_offset, l.denials_offset + 64 * 4 * 64);
        assert_eq!(l.region_bytes, l.tally_offset + 256 * 128);
        assert!(l.shard_headers_offset % 64 == 0 && l.slots_offset % 64 == 0 && l.top_offset % 64 == 0);
        assert!(l.denials_offset % 64 == 0 && l.tally_offset % 128 == 0);

        let off = layout("rate=100/minute top=0");
        assert!(off.config_text.ends_with(" capacity=100000 top=0"), "{}", off.config_text);
        assert_eq!((off.top, off.denials_offset), (None, off.top_offset));
        assert_eq!(off.region_bytes, off.tally_offset + 256 * 128);
        // One shard (a capacity under 512): 256 entries, all its own.
        let small = layout("rate=1/s capacity=100 top=0");
        assert_eq!((small.geometry.shards, small.denials_per_shard), (1, 256));
        assert_eq!(small.tally_offset, (small.denials_offset + 256 * 64).next_multiple_of(128));
        assert_ne!(off.config_hash, l.config_hash);
        assert_ne!(layout("rate=100/minute top=33").config_hash, l.config_hash);
    }
}
