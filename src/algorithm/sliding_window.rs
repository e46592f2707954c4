//! Sliding window: the weighted estimate over two aligned windows.
//!
//! The units counted in the previous window are assumed to have been spread
//! evenly over it, so the part of them still inside a window of `period` ending
//! now is `previous * (period - elapsed) / period`, where `elapsed` is how far
//! into the current window `now` is. A check passes when that estimate plus the
//! current window's count plus `cost` is at most `limit`. The comparison is done
//! exactly, multiplied through by `period`, in u128.
//!
//! State: `[current_start, current_count, previous_count]`, windows aligned as
//! in `fixed_window.rs`. It is fresh two periods after `current_start`.
//!
//! Time never runs backwards for a key: a check whose `now` is before the
//! stored window counts at that window's start (as in `fixed_window.rs`). Such
//! a check, or one earlier in the window than the check that wrote it (threads'
//! clock readings may cross), can find more carried over from the previous
//! window than that check did, so more than the limit in all: it is denied any
//! cost, but a peek (cost 0) is allowed, with nothing remaining, as always.
//!
//! Total: for any state words (a corrupted shm slot; a Redis key kept from a
//! configuration with a higher limit), any `now` and any `cost`, it returns
//! `remaining <= limit` and allows a cost of 0, without an overflow (the load
//! saturates in u128, which can only make a check more refused).

use super::{Outcome, Rate, State, NEVER};

/// Decides one check of `cost` units at `now`.
#[inline(always)]
pub fn decide(rate: &Rate, state: &State, now: u64, cost: u64) -> (Outcome, State) {
    let now = now.max(state[0]);
    let period = rate.period;
    let start = now - rate.per_period.rem(now);
    let (current, previous) = if state[0] == start {
        (state[1], state[2])
    } else if state[0].checked_add(period) == Some(start) {
        (0, state[1])
    } else {
        (0, 0)
    };
    let elapsed = now - start;
    let (p, limit) = (period as u128, rate.limit as u128);
    // Everything below is in units of 1/period: `load * period`.
    let carried = previous as u128 * (period - elapsed) as u128;
    let load = |cur: u64| carried.saturating_add(cur as u128 * p);
    let free = |cur: u64| (limit * p).saturating_sub(load(cur)) / p;
    // `start + 2 * period` may not fit a u64.
    let reset = |cur: u64| {
        if cur > 0 {
            (period - elapsed).saturating_add(period)
        } else if previous > 0 {
            period - elapsed
        } else {
            0
        }
    };

    let new_current = current.saturating_add(cost);
    if cost == 0 || load(new_current) <= limit * p {
        let outcome = Outcome {
            allowed: true,
            limit: rate.limit,
            remaining: free(new_current) as u64,
            reset: reset(new_current),
            retry_after: 0,
        };
        let next = if new_current == 0 && previous == 0 { *state } else { [start, new_current, previous] };
        (outcome, next)
    } else {
        let outcome = Outcome {
            allowed: false,
            limit: rate.limit,
            remaining: free(current) as u64,
            reset: reset(current),
            retry_after: retry_after(rate, start, current, previous, now, cost),
        };
        (outcome, *state)
    }
}

/// Ticks from `now` until `cost` fits, or `NEVER` when `cost > limit`.
fn retry_after(rate: &Rate, start: u64, current: u64, previous: u64, now: u64, cost: u64) -> u64 {
    if cost > rate.limit {
        return NEVER;
    }
    let (p, limit) = (rate.period as u128, rate.limit as u128);
    // Earliest `elapsed` in a window whose own count is `cur` and whose previous
    // count is `prev` at which `prev*(p-elapsed) + (cur+cost)*p <= limit*p`.
    let earliest = |cur: u64, prev: u64| -> Option<u128> {
        let room = limit.checked_sub(cur as u128 + cost as u128)? * p;
        if prev == 0 {
            return Some(0);
        }
        Some(p.saturating_sub(room / prev as u128))
    };
    // Both are at most `2 * period` ticks, which may not fit a u64.
    let ticks = |t: u128| u64::try_from(t).unwrap_or(NEVER);
    if let Some(e) = earliest(current, previous) {
        // Within this window (it is later than now, since the check was denied).
        if e < p {
            return ticks(start as u128 + e - now as u128);
        }
    }
    // In the next window this window's count becomes the previous one.
    let e = earliest(0, current).unwrap_or(0);
    ticks(start as u128 + p + e - now as u128)
}

/// Settles `delta` units after the fact, in the window of `now`: a charge
/// adds to its count, past the limit if need be (it weighs on the next
/// window as any count does); a refund takes back units counted in it, down
/// to none (the previous window's count is not refunded: those units were
/// spent in a window that has ended).
#[inline]
pub fn adjust(rate: &Rate, state: &State, now: u64, delta: i64) -> State {
    let now = now.max(state[0]);
    let period = rate.period;
    let start = now - rate.per_period.rem(now);
    let (current, previous) = if state[0] == start {
        (state[1], state[2])
    } else if state[0].checked_add(period) == Some(start) {
        (0, state[1])
    } else {
        (0, 0)
    };
    let d = delta.unsigned_abs();
    // A count stops at `MAX_DEBT`, so that the largest refund clears any.
    let current_now = match delta >= 0 {
        true => current.saturating_add(d).min(super::MAX_DEBT).max(current),
        false => current.saturating_sub(d),
    };
    if current_now == current {
        *state
    } else {
        [start, current_now, previous]
    }
}

/// The time from which this state is the same as a fresh key's.
pub fn fresh_at(rate: &Rate, state: &State) -> u64 {
    if state[1] == 0 && state[2] == 0 {
        0
    } else if state[1] == 0 {
        state[0].saturating_add(rate.period)
    } else {
        state[0].saturating_add(rate.period.saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, Rate};
    use super::*;

    fn r() -> Rate {
        Rate::new(Algorithm::SlidingWindow, 10, 1000, 10)
    }

    #[test]
    fn previous_window_weighs_in_linearly() {
        let r = r();
        // 10 units in window [0,1000).
        let (o, s) = decide(&r, &[0; 3], 500, 10);
        assert_eq!((o.allowed, o.remaining, o.reset), (true, 0, 1500));
        // At 1250, 7.5 of them still count: 2 more fit, a third does not.
        let (o, s) = decide(&r, &s, 1250, 2);
        assert_eq!((o.allowed, o.remaining), (true, 0));
        let (o, _) = decide(&r, &s, 1250, 1);
        assert!(!o.allowed);
        // 10*(1000-e) + 3*1000 <= 10*1000  =>  e >= 300
        assert_eq!(o.retry_after, 50);
        assert!(!decide(&r, &s, 1299, 1).0.allowed);
        assert!(decide(&r, &s, 1300, 1).0.allowed);
    }

    #[test]
    fn retry_moves_to_next_window_when_current_is_full() {
        let r = r();
        let (_, s) = decide(&r, &[0; 3], 100, 10);
        let (o, _) = decide(&r, &s, 200, 1);
        // Next window: 10*(1000-e) + 1000 <= 10000  =>  e >= 100, at 1100.
        assert_eq!((o.allowed, o.retry_after), (false, 900));
        assert!(!decide(&r, &s, 1099, 1).0.allowed);
        assert!(decide(&r, &s, 1100, 1).0.allowed);
        assert_eq!(fresh_at(&r, &s), 2000);
        assert!(decide(&r, &s, 2000, 10).0.allowed);
    }

    /// A check whose clock reading is behind the stored window, or earlier in
    /// it than the check that wrote it, may find more carried over from the
    /// previous window than that check did: a peek still passes, with nothing
    /// remaining; a cost is denied.
    #[test]
    fn stale_now_peeks_and_never_wraps() {
        let r = r();
        let (_, s) = decide(&r, &[0; 3], 500, 10); // [0, 10, 0]
        let (o, s) = decide(&r, &s, 1600, 2); // carried 4, load 6
        assert_eq!((o.allowed, o.remaining, s), (true, 4, [1000, 2, 10]));
        // At 1100, 9 of the previous 10 still count: 11 > 10.
        let (o, n) = decide(&r, &s, 1100, 0);
        assert_eq!((o.allowed, o.remaining, o.reset, n), (true, 0, 1900, s));
        // Before the stored window: counted at its start, where all 10 count.
        for stale in [0, 999, 1000] {
            let (o, _) = decide(&r, &s, stale, 0);
            assert_eq!((o.allowed, o.remaining, o.reset), (true, 0, 2000), "peek at {stale}");
            let (o, n) = decide(&r, &s, stale, 1);
            // 10*(1000-e) + 3*1000 <= 10*1000  =>  e >= 300
            assert_eq!((o.allowed, o.retry_after, n), (false, 300, s), "at {stale}");
        }
    }

    /// States no check could have written (a corrupted shm slot, or a Redis key
    /// kept from a configuration with a higher limit) and times at the end of
    /// the clock: an answer, never a panic.
    #[test]
    fn arbitrary_states_and_times() {
        let huge = Rate::new(Algorithm::SlidingWindow, u64::MAX, u64::MAX, u64::MAX);
        for r in [r(), huge] {
            for start in [0, 1000, 1001, u64::MAX - 615, u64::MAX - 1000, u64::MAX] {
                for count in [0, 10, 11, u64::MAX] {
                    for now in [0, 1000, u64::MAX - 1, u64::MAX] {
                        for cost in [0, 1, 10, 11, u64::MAX] {
                            let s = [start, count, u64::MAX - count];
                            let (o, n) = decide(&r, &s, now, cost);
                            assert!(o.remaining <= r.limit, "{start} {count} {now} {cost}: {o:?}");
                            assert!(o.allowed || cost > 0, "a peek is allowed");
                            assert!(o.allowed || n == s);
                            let _ = fresh_at(&r, &s);
                        }
                    }
                }
            }
        }
    }
}
