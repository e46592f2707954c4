//! The undo log of a shard, and the repair of a shard whose lock was
//! abandoned by a dead process (see layout.rs for the whole argument).

use std::sync::atomic::{compiler_fence, Ordering};

use super::layout::{Journal, MAX_STRIDE};
use crate::table::ShardStats;

impl Journal {
    /// Records the old words of slot `index` before they are rewritten in
    /// place. The record is whole before `active` says so.
    #[inline]
    pub fn begin(&mut self, index: usize, old: &[u64]) {
        self.slot = index as u64;
        self.saved[..old.len()].copy_from_slice(old);
        compiler_fence(Ordering::SeqCst);
        self.active = 1;
        // table/slot_writes.rs fences again before it rewrites the slot.
    }

    /// Closes the record once the rewrite is complete (or was not needed).
    #[inline]
    pub fn end(&mut self) {
        compiler_fence(Ordering::SeqCst);
        if self.active != 0 {
            self.active = 0;
        }
    }
}

/// Puts a shard back in order after its lock was taken over from a dead holder:
/// undoes a half-done in-place rewrite, then recounts the shard's keys.
/// Idempotent, so a repairer that dies too is simply repaired again. Touches
/// only the shard's own memory; returns the new key count.
pub fn repair(words: &mut [u64], stats: &mut ShardStats, journal: &mut Journal, stride: usize) -> u64 {
    if journal.active != 0 {
        let slots = words.len() / stride;
        // Checked, never trusted: a record that does not fit is dropped.
        if let Ok(slot) = usize::try_from(journal.slot) {
            if slot < slots && stride <= MAX_STRIDE {
                let dst = &mut words[slot * stride..(slot + 1) * stride];
                // In-place rewrites never change the fingerprint.
                if dst[0] == journal.saved[0] {
                    dst.copy_from_slice(&journal.saved[..stride]);
                }
            }
        }
        compiler_fence(Ordering::SeqCst);
        journal.active = 0;
    }
    let keys = words.chunks_exact(stride).filter(|slot| slot[0] != 0).count() as u64;
    stats.keys = keys;
    keys
}
