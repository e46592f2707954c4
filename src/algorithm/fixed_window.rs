//! Fixed window: at most `limit` units in each window of `period` ticks.
//!
//! Windows are aligned to multiples of the period on the backend's clock, which
//! counts from the Unix epoch (see `clock.rs`): a `100/minute` window starts on
//! the minute, on every host. State: `[window_start, count]`; a state whose
//! window has passed is the same as a fresh key's (the all-zero state).

use super::{Outcome, Rate, State, NEVER};

/// Decides one check of `cost` units at `now`.
#[inline(always)]
pub fn decide(rate: &Rate, state: &State, now: u64, cost: u64) -> (Outcome, State) {
    // A state written by a caller whose clock read came a moment later than
    // ours is from "the future": time never runs backwards for a key.
    let now = now.max(state[0]);
    let start = now - now % rate.period;
    let used = if state[0] == start { state[1] } else { 0 };
    let until_next = start + rate.period - now;
    let fits = cost <= rate.limit - used.min(rate.limit);

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
            remaining: rate.limit - used.min(rate.limit),
            reset: until_next,
            retry_after: if cost > rate.limit { NEVER } else { until_next },
        };
        (outcome, *state)
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
}
