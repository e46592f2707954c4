//! Failing fast instead of waiting on something that is down: the Redis
//! server of a handle (redis/), or one shard of an shm region held by a
//! stopped process (shm/wait.rs). One policy for both.
//!
//! After `threshold` consecutive failures (each one a whole timeout spent)
//! the breaker opens for `cool_down`: callers are told at once to fail, with
//! no wait and no network call. Then exactly one caller is let through, the
//! probe; the others keep failing fast until it reports, or until
//! `probe_for` has passed (a probe that never reports cannot keep the breaker
//! open for ever). A success closes the breaker; a failure opens it for
//! another cool-down. No thread is started: the state moves on only when
//! callers arrive. Everything is per process: another process may see the
//! server or the shard differently, and a shared flag that went stale could
//! wedge them all.
//!
//! Times are nanoseconds of the caller's clock, read only on the slow paths
//! (the caller asks `admit` only after something failed or was found busy,
//! or, for Redis, once per call).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Whether a caller may try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Closed: try.
    Yes,
    /// The cool-down is over and this caller is the one probe: try.
    Probe,
    /// Open: fail at once.
    No,
}

pub struct Breaker {
    threshold: u32,
    cool_down_ns: u64,
    probe_for_ns: u64,
    /// Consecutive failures.
    failures: AtomicU32,
    /// While open: the end of the cool-down, or of the probe's time.
    open_until: AtomicU64,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures,
    /// for `cool_down_ns`, and gives a probe at most `probe_for_ns`.
    pub fn new(threshold: u32, cool_down_ns: u64, probe_for_ns: u64) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down_ns,
            probe_for_ns,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    /// Whether the breaker is closed (no clock needed to tell).
    pub fn is_closed(&self) -> bool {
        self.failures.load(Ordering::Acquire) < self.threshold
    }

    pub fn admit(&self, now_ns: u64) -> Admit {
        if self.is_closed() {
            return Admit::Yes;
        }
        let until = self.open_until.load(Ordering::Acquire);
        if now_ns < until {
            return Admit::No;
        }
        // The first caller past the cool-down becomes the probe; the probe's
        // own deadline keeps the others out meanwhile.
        let probe_until = now_ns.saturating_add(self.probe_for_ns);
        match self.open_until.compare_exchange(until, probe_until, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::No,
        }
    }

    /// The try succeeded: closed.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Release);
        }
    }

    /// The try failed at `now_ns`: one more failure, and at the threshold a
    /// cool-down from now.
    pub fn failure(&self, now_ns: u64) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if n >= self.threshold {
            self.open_until.store(now_ns.saturating_add(self.cool_down_ns), Ordering::Release);
        }
    }

    /// Whether callers are failing fast at `now_ns`.
    pub fn is_open(&self, now_ns: u64) -> bool {
        self.failures.load(Ordering::Acquire) >= self.threshold && now_ns < self.open_until.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn opens_after_threshold_probes_once_recovers() {
        let b = Breaker::new(3, 1000 * MS, 5000 * MS);
        for _ in 0..3 {
            assert_eq!(b.admit(0), Admit::Yes);
            b.failure(0);
        }
        assert_eq!(b.admit(10 * MS), Admit::No);
        assert!(b.is_open(10 * MS));
        let t = 1000 * MS;
        assert_eq!(b.admit(t), Admit::Probe);
        assert_eq!(b.admit(t), Admit::No, "one probe at a time");
        b.failure(t);
        assert_eq!(b.admit(t + 1), Admit::No, "a failed probe starts another cool-down");
        assert_eq!(b.admit(2 * t), Admit::Probe);
        b.success();
        assert_eq!(b.admit(2 * t), Admit::Yes);
        assert!(!b.is_open(2 * t));
    }

    /// A probe that never reports (its caller gone) keeps the others out
    /// only for `probe_for`, then another caller probes.
    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let b = Breaker::new(1, 100 * MS, 300 * MS);
        b.failure(0);
        assert_eq!(b.admit(100 * MS), Admit::Probe);
        assert_eq!(b.admit(399 * MS), Admit::No);
        assert_eq!(b.admit(400 * MS), Admit::Probe);
    }
}
