//! Fail fast while Redis is down.
//!
//! Without this, every check during an outage would wait the whole
//! `timeout_ms` before `on_error` decides. After [`THRESHOLD`] consecutive
//! failures (connect refused, timeout, connection reset) the limiter stops
//! trying for [`COOL_DOWN_MS`]: checks fail at once, with no network call,
//! and `on_error` decides. Then exactly one check probes Redis (the others
//! keep failing fast meanwhile); if it succeeds the limiter is back to normal,
//! if not, another cool-down starts. A reply that is an error from a live
//! server (say, a key of the wrong type) is not a failure of the connection
//! and does not count. No thread is started: the state moves on only when
//! checks arrive.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Consecutive failures that start a cool-down.
pub const THRESHOLD: u32 = 3;
/// How long the limiter fails fast before probing again.
pub const COOL_DOWN_MS: u64 = 1000;

#[derive(Default)]
pub struct Breaker {
    failures: AtomicU32,
    /// Monotonic ns (the store's clock) until which checks fail fast.
    open_until: AtomicU64,
    probing: AtomicBool,
}

/// May this check use the network?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the one probe after a cool-down.
    Probe,
    /// No: fail fast.
    No,
}

impl Breaker {
    pub fn admit(&self, now_ns: u64) -> Admit {
        if self.failures.load(Ordering::Acquire) < THRESHOLD {
            return Admit::Yes;
        }
        if now_ns < self.open_until.load(Ordering::Acquire) {
            return Admit::No;
        }
        match self.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::No,
        }
    }

    pub fn success(&self, admit: Admit) {
        self.failures.store(0, Ordering::Release);
        if admit == Admit::Probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    pub fn failure(&self, admit: Admit, now_ns: u64) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if n >= THRESHOLD {
            self.open_until.store(now_ns + COOL_DOWN_MS * 1_000_000, Ordering::Release);
        }
        if admit == Admit::Probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Whether checks are failing fast now.
    pub fn is_open(&self, now_ns: u64) -> bool {
        self.failures.load(Ordering::Acquire) >= THRESHOLD && now_ns < self.open_until.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_once_recovers() {
        let b = Breaker::default();
        let ms = 1_000_000;
        for _ in 0..THRESHOLD {
            assert_eq!(b.admit(0), Admit::Yes);
            b.failure(Admit::Yes, 0);
        }
        assert_eq!(b.admit(10 * ms), Admit::No);
        assert!(b.is_open(10 * ms));
        let t = COOL_DOWN_MS * ms;
        assert_eq!(b.admit(t), Admit::Probe);
        assert_eq!(b.admit(t), Admit::No, "one probe at a time");
        b.failure(Admit::Probe, t);
        assert_eq!(b.admit(t + 1), Admit::No, "a failed probe starts another cool-down");
        assert_eq!(b.admit(2 * t), Admit::Probe);
        b.success(Admit::Probe);
        assert_eq!(b.admit(2 * t), Admit::Yes);
        assert!(!b.is_open(2 * t));
    }
}
