//! Fixed window: at most `limit` units in each window of `period` ticks.
//!
//! Windows are aligned to multiples of the period on the backend's clock, which
//! counts from the Unix epoch (see `clock.rs`): a `100/minute` window starts on
//! the minute, on every host. State: `[window_start, count]`; a state whose
//! window has passed is the same as a fresh key's (the all-zero state).
//!
//! Time never runs backwards for a key: a check whose `now` is before the
//! stored window (it read the clock before another thread's check but took
//! the lock after it) counts at that window's start, so it neither forgets the
//! window's units nor moves the window back. Its `reset` and `retry_after`
//! count from that start.
//!
//! Total: for any state words (a corrupted shm slot; a Redis key kept from a
//! configuration with a higher limit), any `now` and any `cost`, it returns
//! `remaining <= limit`, `reset <= period`, and allows a cost of 0, without an
//! overflow: a stored count above the limit counts as the limit.

use super::{Outcome, Rate, State, NEVER};

/// Decides one check of `cost` units at `now`.
#[inline(always)]
pub fn decide(rate: &Rate, state: &State, now: u64, cost: u64) -> (Outcome, State) {
    let now = now.max(state[0]);
    let start = now - rate.per_period.rem(now);
    let used = if state[0] == start { state[1].min(rate.limit) } else { 0 };
    let until_next = rate.period - (now - start); // `start + period` may not fit a u64
    let fits = cost <= rate.limit - used;

    if fits {
        let used = used + cost;
        let outcome = Outcome {
            allowed: true,
            limit: rate.limit,
            remaining: rate.limit - used,
            reset: if used == 0 { 0 } else { until_next },
            retry_after: 0,
        };
        (outcome, if used == 0 { *state } else { [start, used, 0] })
    } else {
        let outcome = Outcome {
            allowed: false,
            limit: rate.limit,
            remaining: rate.limit - used,
            reset: until_next,
            retry_after: if cost > rate.limit { NEVER } else { until_next },
        };
        (outcome, *state)
    }
}

/// Settles `delta` units after the fact, in the window of `now`: a charge
/// adds to its count, past the limit if need be (checks are then denied
/// until the next window); a refund takes back units counted in it, down
/// to none (units counted in an earlier window have already expired).
#[inline]
pub fn adjust(rate: &Rate, state: &State, now: u64, delta: i64) -> State {
    let now = now.max(state[0]);
    let start = now - rate.per_period.rem(now);
    let used = if state[0] == start { state[1] } else { 0 };
    let d = delta.unsigned_abs();
    // A count stops at `MAX_DEBT`, so that the largest refund clears any.
    let used_now = match delta >= 0 {
        true => used.saturating_add(d).min(super::MAX_DEBT).max(used),
        false => used.saturating_sub(d),
    };
    if used_now == used {
        *state
    } else {
        [start, used_now, 0]
    }
}

/// The time from which this state is the same as a fresh key's.
pub fn fresh_at(rate: &Rate, state: &State) -> u64 {
    if state[1] == 0 {
        0
    } else {
        state[0].saturating_add(rate.period)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, Rate};
    use super::*;

    #[test]
    fn counts_within_aligned_windows() {
        let r = Rate::new(Algorithm::FixedWindow, 3, 1000, 3);
        let mut s = [0; 3];
        for left in [2, 1, 0] {
            let (o, n) = decide(&r, &s, 5_250, 1);
            assert_eq!((o.allowed, o.remaining, o.reset), (true, left, 750));
            s = n;
        }
        let (o, n) = decide(&r, &s, 5_999, 1);
        assert_eq!((o.allowed, o.retry_after, n), (false, 1, s));
        let (o, _) = decide(&r, &s, 6_000, 1);
        assert_eq!((o.allowed, o.remaining), (true, 2));
        assert_eq!(fresh_at(&r, &s), 6_000);
    }

    #[test]
    fn cost_above_limit_never_passes() {
        let r = Rate::new(Algorithm::FixedWindow, 3, 1000, 3);
        assert_eq!(decide(&r, &[0; 3], 7, 4).0.retry_after, NEVER);
        let (o, s) = decide(&r, &[0; 3], 7, 0);
        assert_eq!((o.allowed, o.remaining, o.reset, s), (true, 3, 0, [0; 3]));
    }

    /// A check whose clock reading is behind the stored window (it read the
    /// clock before another thread's check but took the lock after it) counts
    /// in the stored window: it neither forgets that window's units nor wraps.
    #[test]
    fn stale_now_counts_in_the_stored_window() {
        let r = Rate::new(Algorithm::FixedWindow, 3, 1000, 3);
        let (_, s) = decide(&r, &[0; 3], 6_100, 2); // [6_000, 2]
        for stale in [0, 5_000, 5_999, 6_000] {
            let (o, n) = decide(&r, &s, stale, 0);
            assert_eq!((o.allowed, o.remaining, o.reset, n), (true, 1, 1000, s), "peek at {stale}");
            let (o, _) = decide(&r, &s, stale, 2);
            assert_eq!((o.allowed, o.remaining, o.retry_after), (false, 1, 1000), "at {stale}");
        }
        let (o, n) = decide(&r, &s, 5_999, 1);
        assert_eq!((o.allowed, o.remaining, n), (true, 0, [6_000, 3, 0]));
    }

    /// States no check could have written (a corrupted shm slot, or a Redis key
    /// kept from a configuration with a higher limit) and times at the end of
    /// the clock: an answer, never a panic.
    #[test]
    fn arbitrary_states_and_times() {
        let r = Rate::new(Algorithm::FixedWindow, 3, 1000, 3);
        for start in [0, 6_000, 6_001, u64::MAX - 615, u64::MAX] {
            for count in [0, 3, 4, u64::MAX] {
                for now in [0, 6_000, u64::MAX - 1, u64::MAX] {
                    for cost in [0, 1, 3, 4, u64::MAX] {
                        let (o, n) = decide(&r, &[start, count, 0], now, cost);
                        assert!(o.remaining <= 3 && o.reset <= 1000, "{start} {count} {now} {cost}: {o:?}");
                        assert!(o.allowed || cost > 0, "a peek is allowed");
                        assert!(o.allowed || n == [start, count, 0]);
                    }
                }
            }
        }
        assert_eq!(fresh_at(&r, &[u64::MAX, 1, 0]), u64::MAX);
    }
}
