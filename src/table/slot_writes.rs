//! How a slot is written so that a process killed at any instruction leaves
//! it whole (the shm backend keeps the table in memory shared by processes).
//!
//! The shm backend keeps this table in memory shared by processes, any of
//! which may be killed at any instruction. So every slot changes in one of
//! three ways, each leaving a slot that is whole at every instant:
//!   - emptied: the fingerprint is zeroed first, then the state (a slot with
//!     fingerprint 0 is empty whatever its other words hold);
//!   - filled: the state is written first, then the fingerprint;
//!   - updated in place (a stored key's check or adjust): `rewrite` calls
//!     the `before_update` hook first, so the caller can save the old state
//!     in an undo log (the memory backend passes a no-op; so do lease
//!     operations, which write a single aligned word).
//!
//! Compiler fences keep those stores in that order; they cost nothing at run
//! time. The key counts (`ShardStats::keys`, the table-wide count) are not
//! updated atomically with the slots: a survivor recounts them.

use std::sync::atomic::{compiler_fence, Ordering};

/// Empties a slot: the fingerprint first, so that the slot is either the
/// whole old entry or empty at every instant.
#[inline]
pub(super) fn empty(slot: &mut [u64]) {
    slot[0] = 0;
    compiler_fence(Ordering::SeqCst);
    slot[1..].fill(0);
}

/// Fills an empty slot with a new key: the state first, the fingerprint
/// last, so that the key is whole or absent at every instant.
#[inline]
pub(super) fn fill(slot: &mut [u64], fp: u64, state: &[u64]) {
    slot[1..].copy_from_slice(state);
    compiler_fence(Ordering::SeqCst);
    slot[0] = fp;
}

/// Rewrites a stored key's state in place with `op`, after `before_update`
/// has seen the old words (the shm backend's undo log: the record is whole
/// before the first word changes).
#[inline(always)]
pub(super) fn rewrite<R>(
    slot: &mut [u64],
    index: usize,
    before_update: &mut impl FnMut(usize, &[u64]),
    op: impl FnOnce(&mut [u64]) -> R,
) -> R {
    before_update(index, slot);
    compiler_fence(Ordering::SeqCst);
    op(&mut slot[1..])
}
