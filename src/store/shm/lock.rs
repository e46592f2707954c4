//! The region's locks: one 8-byte word each, 0 when free, otherwise the
//! owner word (owner.rs) of the handle holding it.
//!
//! - **Taking a free lock** is one compare-and-swap `0 -> owner word`
//!   (acquire), and **releasing** it a load that finds the caller's word
//!   and a store of 0 (release), which leaves a lock that is no longer the
//!   caller's alone (overwritten in a damaged region): no system call, no
//!   bookkeeping outside the word. The release needs no second atomic
//!   read-modify-write: only the holder itself, or an heir who judged it
//!   dead, ever changes a held lock's word, and a live holder is never
//!   judged dead (owner.rs), so the word cannot change between its load
//!   and its store. (A process killed in between leaves the lock held by a
//!   dead owner, as one killed before them does.) (glibc's robust mutexes
//!   cost more than twice that uncontended, for the robust-list upkeep around
//!   each atomic, and sleep in the kernel as soon as they are contended; see
//!   BENCHMARKS.md.)
//! - **A held lock** is waited for: spinning on a plain load for a few
//!   microseconds (holders keep it for tens of nanoseconds), then yielding,
//!   then sleeping in growing steps up to `MAX_PAUSE`, never past the
//!   caller's deadline.
//! - **A dead holder.** Once the spinning is over, and then every
//!   `LOOK_EVERY`, the waiter asks whether the holder's owner word is still
//!   alive (owner.rs). If not, it swaps the dead word for its own: that one
//!   compare-and-swap picks a single heir among any number of waiters, and
//!   fails if the lock changed hands meanwhile. The heir gets
//!   `Acquired::OwnerDied` and must repair what the dead holder guarded
//!   before using it; if the heir dies too, the next one repairs again.
//! - **A stopped holder** (SIGSTOP, a debugger) is alive and keeps the lock:
//!   the wait ends at the deadline, with `None`, and the caller reports a
//!   backend error (mod.rs adds the fail-fast cool-down).
//!
//! Deadlines are on the monotonic clock (`Instant`), so a wall clock stepped
//! back or forth changes no wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

/// How often a waiter asks whether a holder is still alive.
const LOOK_EVERY: Duration = Duration::from_millis(1);
/// The first and the longest sleep of a waiter, once spinning is over.
const FIRST_PAUSE: Duration = Duration::from_micros(20);
const MAX_PAUSE: Duration = Duration::from_millis(1);

/// How a lock was acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The usual case.
    Clean,
    /// Its previous holder died holding it: repair what it guards first.
    OwnerDied,
}

/// Takes `lock` for `me` if it is free.
#[inline]
pub fn try_lock(lock: &AtomicU64, me: u64) -> bool {
    lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// Releases `lock` if `me` holds it; false (and nothing done) if it holds
/// another word: then it is not the caller's to release. (A load and a
/// store, not a compare-and-swap: see the module docs.)
#[inline]
pub fn unlock(lock: &AtomicU64, me: u64) -> bool {
    if lock.load(Ordering::Relaxed) != me {
        return false;
    }
    lock.store(0, Ordering::Release);
    true
}

/// Takes `lock` for `me`, waiting until `deadline` at most; `None` if it is
/// still held by a live owner then (a deadline already past still takes a
/// lock that is free). `alive` says whether an owner word found in the lock
/// belongs to a live handle. Meant for after a `try_lock` that failed.
#[cold]
#[inline(never)]
pub fn lock_until(lock: &AtomicU64, me: u64, deadline: Instant, alive: impl Fn(u64) -> bool) -> Option<Acquired> {
    let backoff = Backoff::new();
    let mut pause = FIRST_PAUSE;
    let mut next_look: Option<Instant> = None;
    loop {
        let held = lock.load(Ordering::Relaxed);
        if held == 0 {
            if try_lock(lock, me) {
                return Some(Acquired::Clean);
            }
            continue;
        }
        if !backoff.is_completed() {
            backoff.snooze();
            continue;
        }
        let now = Instant::now();
        if next_look.is_none_or(|at| now >= at) {
            if !alive(held) {
                if lock.compare_exchange(held, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Some(Acquired::OwnerDied);
                }
                continue;
            }
            next_look = Some(now + LOOK_EVERY);
        }
        let left = deadline.checked_duration_since(now).filter(|d| !d.is_zero())?;
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_held_and_dead_holders() {
        let lock = AtomicU64::new(0);
        assert!(try_lock(&lock, 7));
        assert!(!try_lock(&lock, 8));
        // A live holder: the wait ends at the deadline.
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        assert_eq!(lock_until(&lock, 8, deadline, |_| true), None);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(lock.load(Ordering::Relaxed), 7);
        // A dead one: taken over at once.
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(lock_until(&lock, 8, far, |w| w != 7), Some(Acquired::OwnerDied));
        assert_eq!(lock.load(Ordering::Relaxed), 8);
        assert!(unlock(&lock, 8));
        // Free by the deadline, even one already past.
        assert_eq!(lock_until(&lock, 9, Instant::now(), |_| true), Some(Acquired::Clean));
    }

    #[test]
    fn only_the_holder_unlocks() {
        let lock = AtomicU64::new(0);
        assert!(!unlock(&lock, 7), "a free lock");
        assert!(try_lock(&lock, 7));
        assert!(!unlock(&lock, 8), "another owner's lock");
        assert_eq!(lock.load(Ordering::Relaxed), 7);
        // Taken over from 7 (judged dead): an unlock by 7 leaves the heir's lock.
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(lock_until(&lock, 9, far, |w| w != 7), Some(Acquired::OwnerDied));
        assert!(!unlock(&lock, 7));
        assert_eq!(lock.load(Ordering::Relaxed), 9);
        assert!(unlock(&lock, 9));
        assert_eq!(lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn waiters_get_it_when_the_holder_lets_go() {
        let lock = AtomicU64::new(0);
        let count = AtomicU64::new(0);
        std::thread::scope(|s| {
            for me in 1..=4u64 {
                let (lock, count) = (&lock, &count);
                s.spawn(move || {
                    for _ in 0..20_000 {
                        if !try_lock(lock, me) {
                            let far = Instant::now() + Duration::from_secs(60);
                            assert_eq!(lock_until(lock, me, far, |_| true), Some(Acquired::Clean));
                        }
                        // Not atomic as a whole: only correct under the lock.
                        let n = count.load(Ordering::Relaxed);
                        count.store(n + 1, Ordering::Relaxed);
                        assert!(unlock(lock, me));
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 80_000);
    }
}
