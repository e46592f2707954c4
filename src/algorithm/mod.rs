//! The rate-limiting algorithms, as pure functions of `(state, now, rate, cost)`.
//!
//! No clock reads, no I/O, no locks: every backend hands in the time and stores
//! the state where it likes. Time is in *ticks*, whatever unit the caller's clock
//! counts in (nanoseconds for memory and shm); the algorithms never assume one.
//!
//! The state of one rate is at most [`STATE_WORDS`] `u64`s and the all-zero
//! state is a fresh key, so a backend can keep keys in fixed-size slots and
//! treat an expired slot as empty.
//!
//! Time never runs backwards for a key: a check whose `now` is earlier than
//! the earliest time its stored state can have been written at (a clock read
//! before another thread's, which took the key's lock first) runs at that
//! time instead. And every function here is total: for any rate `Rate::new`
//! builds, any state words (a shm slot may have been overwritten), any `now`
//! and any `cost`, it answers without an overflow, with `remaining <= limit`,
//! a peek (cost 0) allowed and a denial changing nothing. Each algorithm's
//! file says how.

mod divisor;
mod fixed_window;
mod gcra;
mod leases;
mod multi_rate;
mod sliding_window;

pub use crate::config::Algorithm;
pub use divisor::Divisor;
pub use leases::{Leases, MAX_SLOTS};
pub use multi_rate::{adjust_all, check_all, fresh_at_all, Verdict};

/// The most `u64` words any algorithm keeps per rate.
pub(crate) const STATE_WORDS: usize = 3;

/// What a limiter keeps for each key: the states of its rates (a rate
/// limiter), or its lease places (a concurrency limiter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limits {
    Rates(Vec<Rate>),
    Leases(Leases),
}

impl Limits {
    /// Words of state per key.
    pub fn state_words(&self) -> usize {
        match self {
            Limits::Rates(rates) => rates.iter().map(Rate::words).sum(),
            Limits::Leases(l) => l.slots,
        }
    }

    /// The time from which `words` are the same as a fresh key's.
    pub fn fresh_at(&self, words: &[u64]) -> u64 {
        match self {
            Limits::Rates(rates) => fresh_at_all(rates, words),
            Limits::Leases(l) => l.fresh_at(words),
        }
    }

    /// The rates, if this is a rate limiter.
    pub fn rates(&self) -> &[Rate] {
        match self {
            Limits::Rates(rates) => rates,
            Limits::Leases(_) => &[],
        }
    }
}

/// The state of one rate of one key. All zeros is a fresh key.
pub type State = [u64; STATE_WORDS];

/// The most an `adjust` charge may put a key in debt: a window's count, or
/// a bucket's tat past now in ticks. i64::MAX, so that the largest refund
/// (`i64::MIN` units) makes any key fresh again.
pub(crate) const MAX_DEBT: u64 = i64::MAX as u64;

/// `retry_after` of a check that can never pass (its cost is above the capacity).
pub(crate) const NEVER: u64 = u64::MAX;

/// One rate, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub algorithm: Algorithm,
    /// Units per period (window limit).
    pub limit: u64,
    /// The period in ticks.
    pub period: u64,
    /// Bucket capacity (token bucket only; equal to `limit` otherwise).
    pub burst: u64,
    /// Token bucket: ticks per unit, `ceil(period / limit)`.
    pub interval: u64,
    /// Token bucket: the whole bucket in ticks, `burst * interval`: how far
    /// ahead of now the tat may run (GCRA's tolerance).
    pub bucket_ticks: u64,
    /// Division by `interval` (token bucket) and by `period` (windows)
    /// without a division instruction (divisor.rs).
    pub per_interval: Divisor,
    pub per_period: Divisor,
}

impl Rate {
    pub fn new(algorithm: Algorithm, limit: u64, period: u64, burst: u64) -> Rate {
        assert!(limit > 0 && period > 0 && burst > 0, "rates are validated by the config parser");
        let interval = period.div_ceil(limit);
        let burst = if algorithm == Algorithm::TokenBucket { burst } else { limit };
        let bucket_ticks = match algorithm {
            Algorithm::TokenBucket => burst.checked_mul(interval).expect("the config parser bounds burst * interval"),
            _ => 0,
        };
        Rate {
            algorithm,
            limit,
            period,
            burst,
            interval,
            bucket_ticks,
            per_interval: Divisor::new(interval),
            per_period: Divisor::new(period),
        }
    }

    /// How many state words this rate keeps.
    pub fn words(&self) -> usize {
        match self.algorithm {
            Algorithm::TokenBucket => 1,
            Algorithm::FixedWindow => 2,
            Algorithm::SlidingWindow => 3,
        }
    }

    /// The capacity reported in decisions: the burst of a bucket, the limit of a window.
    pub fn quota(&self) -> u64 {
        self.burst
    }
}

/// What one rate says about one check. Durations are in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// The rate's quota (bucket capacity or window limit).
    pub limit: u64,
    /// Units still available after this check.
    pub remaining: u64,
    /// Until the rate is back to its full quota.
    pub reset: u64,
    /// 0 when allowed; else until the same cost can pass, or `NEVER`.
    pub retry_after: u64,
}

/// Decides one rate: the outcome, and the state to store if the check is taken.
/// On a denial the returned state is the given one.
#[inline(always)]
pub fn decide(rate: &Rate, state: &State, now: u64, cost: u64) -> (Outcome, State) {
    match rate.algorithm {
        Algorithm::TokenBucket => gcra::decide(rate, state, now, cost),
        Algorithm::FixedWindow => fixed_window::decide(rate, state, now, cost),
        Algorithm::SlidingWindow => sliding_window::decide(rate, state, now, cost),
    }
}

/// Settles `delta` units of one rate after the fact (`rl_adjust`): a charge
/// is never denied and may go past the quota; a refund never goes past a
/// fresh key. Returns the new state (the given one if nothing changes).
#[inline]
pub fn adjust(rate: &Rate, state: &State, now: u64, delta: i64) -> State {
    match rate.algorithm {
        Algorithm::TokenBucket => gcra::adjust(rate, state, now, delta),
        Algorithm::FixedWindow => fixed_window::adjust(rate, state, now, delta),
        Algorithm::SlidingWindow => sliding_window::adjust(rate, state, now, delta),
    }
}

/// The time from which `state` is the same as a fresh key's: from then on,
/// dropping it cannot change any decision.
pub fn fresh_at(rate: &Rate, state: &State) -> u64 {
    match rate.algorithm {
        Algorithm::TokenBucket => gcra::fresh_at(state),
        Algorithm::FixedWindow => fixed_window::fresh_at(rate, state),
        Algorithm::SlidingWindow => sliding_window::fresh_at(rate, state),
    }
}
