//! The table-wide key count after a repair: a process that took over a dead
//! holder's lock repairs that shard and recounts its keys (journal.rs), but
//! the count all shards share (`Header::total_keys`) is only marked `dirty`;
//! the next operation that sees the mark recounts it once, with every shard
//! locked, serialised by the header's recount lock.

use std::sync::atomic::{AtomicU64, Ordering};

use super::lock;
use super::wait::Budget;
use super::ShmStore;
use crate::error::Error;

/// The header's recount lock, held by this thread; unlocks when dropped
/// (also when unwinding: a recount writes nothing that needs repair).
struct RecountLocked<'a>(&'a AtomicU64, u64);

impl Drop for RecountLocked<'_> {
    fn drop(&mut self) {
        lock::unlock(self.0, self.1);
    }
}

impl ShmStore {
    /// After a repair, the table-wide key count is recounted once (see
    /// layout.rs). `wait`: wait (within `budget`) for a recount another
    /// process is doing, rather than leave it to that one.
    #[inline]
    pub(super) fn heal(&self, budget: &Budget, wait: bool) {
        if self.dirty().load(Ordering::Relaxed) != 0 {
            self.heal_slow(budget, wait);
        }
    }

    #[cold]
    #[inline(never)]
    fn heal_slow(&self, budget: &Budget, wait: bool) {
        if !self.patience.recount_due(self.clock.now()) {
            return;
        }
        if let Err(Error::Backend(_)) = self.recount_total(budget, wait) {
            // Some lock is held by a stopped process: `dirty` stays set, and
            // this process tries again `timeout` from now, not at every operation.
            self.patience.recount_gave_up(self.clock.now());
        }
    }

    /// Sets the table-wide key count to the sum of the shards' counts, with
    /// every shard locked. Serialised by the header's recount lock; called
    /// holding no shard lock. Every wait is within `budget`: on a timeout
    /// the shards taken so far are released and `dirty` stays set, for a
    /// later recount. If another process holds the recount lock, `wait` says
    /// whether to wait for it or leave the recount to it.
    pub(super) fn recount_total(&self, budget: &Budget, wait: bool) -> Result<(), Error> {
        let m = self.recount_lock();
        let me = self.owner.word(self.generations())?;
        // A recount writes one word, last: a dead recounter leaves nothing
        // half-done, only `dirty` still set, so an heir has nothing to repair.
        if !lock::try_lock(m, me) {
            if !wait {
                return Ok(());
            }
            lock::lock_until(m, me, self.patience.deadline(budget), |w| self.alive(w))
                .ok_or_else(|| self.timed_out("recount lock"))?;
        }
        let _held = RecountLocked(m, me);
        let result = (|| {
            if self.dirty().load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            let mut guards = Vec::with_capacity(self.layout.geometry.shards);
            for i in 0..self.layout.geometry.shards {
                guards.push(self.lock(i, budget)?);
            }
            // Saturating: a damaged count must not overflow (it is mended
            // at the shard's next check).
            let sum = guards.iter_mut().fold(0u64, |sum, g| sum.saturating_add(g.parts().1.keys));
            self.total_keys().store(sum, Ordering::Relaxed);
            self.dirty().store(0, Ordering::Release);
            Ok(())
        })();
        result
    }
}
