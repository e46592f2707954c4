//! How long an operation waits for a held lock, and when it fails fast instead.
//!
//! **No unbounded wait.** A worker stopped (SIGSTOP, a debugger) while holding
//! a shard lock keeps it; only the locks of the dead are taken over.
//! So every lock is try-locked first (the uncontended path: no system call, no
//! clock read), and a held one is waited for until a deadline `timeout_ms`
//! after the operation first found a lock held (`Budget`). Past it, the
//! operation returns `Error::Backend` naming the shard and the region:
//! `rl_check` answers with `on_error` and counts an error, `rl_reset`,
//! `rl_sweep` and `rl_stats_get` return RL_ERR_BACKEND. Only the keys of that
//! shard are affected.
//!
//! **Fail fast on a stuck shard.** After such a timeout this process holds
//! the shard suspect for a cool-down (`COOL_DOWN`, or `timeout_ms` if
//! longer): meanwhile its operations on that shard still try-lock it and go
//! on as usual if it is free, but fail at once, without waiting, if it is
//! held. Then the next operation that finds it held waits again (one probe,
//! with the full bound), and the suspicion ends when a wait gets the lock.
//! The uncontended path never reads it (only a failed try-lock does), so
//! taking the lock free does not end it early: until the cool-down is over, a
//! live worker holding the shard for a moment makes it fail fast too. The
//! suspicion is per handle and per process, never in the region: another
//! process may see the shard differently, and a stale shared flag could
//! wedge the others. This is the Redis backend's circuit breaker
//! (`store/breaker.rs`), one per shard, opening at the first timeout.
//!
//! **Recounts.** A table-wide recount (layout.rs) that timed out on a held
//! shard is not tried again by this process for `timeout_ms`, so that a
//! stopped holder costs it one wait per `timeout_ms`, not one per operation.
//!
//! Times here are shared-clock nanoseconds (clock.rs), read by the caller
//! only on these slow paths; deadlines are `Instant`s.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::breaker::{Admit, Breaker};
use std::time::{Duration, Instant};

/// How long, after a wait for a shard timed out, this process fails fast on
/// that shard when it finds it held, before waiting for it again: the same
/// 1 s as the Redis breaker's cool-down (`redis::COOL_DOWN_MS`), or `timeout_ms`
/// if that is longer, so that a stopped holder costs a process at most one
/// wait per cool-down, not one per operation.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// The waiting budget of one operation: its deadline is fixed the first time
/// it finds a lock held, `timeout` later, and shared by every lock it then
/// waits for. Free until then (no clock read on the uncontended path).
pub struct Budget(Cell<Option<Instant>>);

impl Budget {
    pub fn new() -> Budget {
        Budget(Cell::new(None))
    }

    fn deadline(&self, timeout: Duration) -> Instant {
        *self.0.get().get_or_insert_with(|| Instant::now() + timeout)
    }
}

/// One handle's waiting policy, in this process.
pub struct Patience {
    /// Longest an operation waits for locks held by other processes (this
    /// process's `timeout_ms`; not part of the region's configuration).
    timeout: Duration,
    /// Per shard: whether to fail fast, instead of waiting, on finding it
    /// held. Opened when a wait for it timed out; asked only after a
    /// try-lock failed.
    suspect: Box<[Breaker]>,
    /// No recount before this: set when one timed out.
    recount_not_before: AtomicU64,
}

impl Patience {
    pub fn new(timeout: Duration, shards: usize) -> Patience {
        let cool_down = timeout.max(COOL_DOWN).as_nanos() as u64;
        // A probe waits at most `timeout`; past that plus a cool-down it has
        // surely reported, or its thread is gone and another may probe.
        let probe_for = (timeout.as_nanos() as u64).saturating_add(cool_down);
        Patience {
            timeout,
            suspect: (0..shards).map(|_| Breaker::new(1, cool_down, probe_for)).collect(),
            recount_not_before: AtomicU64::new(0),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long this process fails fast on a shard after a wait for it timed out.
    pub fn cool_down(&self) -> Duration {
        self.timeout.max(COOL_DOWN)
    }

    /// The deadline of an operation's waits.
    pub fn deadline(&self, budget: &Budget) -> Instant {
        budget.deadline(self.timeout)
    }

    /// Shard `i` was found held: whether to wait for it (false: fail fast,
    /// a wait for it timed out less than a cool-down ago). The one caller let
    /// through after a cool-down is the probe: until its wait ends, the
    /// other threads of this process keep failing fast.
    pub fn may_wait(&self, i: usize, now: impl Fn() -> u64) -> bool {
        let suspect = &self.suspect[i];
        // Closed (the common case) needs no clock read.
        suspect.is_closed() || suspect.admit(now()) != Admit::No
    }

    /// A wait for shard `i` got the lock (`got`), ending any suspicion, or
    /// timed out at `now()`, starting a cool-down.
    pub fn waited(&self, i: usize, got: bool, now: impl Fn() -> u64) {
        match got {
            true => self.suspect[i].success(),
            false => self.suspect[i].failure(now()),
        }
    }

    /// Whether a recount may be tried at `now`.
    pub fn recount_due(&self, now: u64) -> bool {
        now >= self.recount_not_before.load(Ordering::Relaxed)
    }

    /// A recount timed out at `now`: none before `timeout` from now.
    pub fn recount_gave_up(&self, now: u64) {
        self.recount_not_before.store(now.saturating_add(self.timeout.as_nanos() as u64), Ordering::Relaxed);
    }
}
