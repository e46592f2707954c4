//! Token bucket as GCRA, the Generic Cell Rate Algorithm.
//!
//! GCRA keeps one timestamp per key instead of a token count and a refill time:
//! the *theoretical arrival time* `tat`, the moment the bucket would be full again
//! if nothing more were spent. A fresh key has `tat <= now` (the all-zero state).
//!
//! With the emission interval `T = period / limit` (one unit comes back every
//! `T`) and the bucket capacity `burst`, spending `cost` units moves the tat to
//! `max(tat, now) + cost * T`, and is allowed when that new tat lies at most
//! `burst * T` ahead of now, i.e. when the bucket still holds `cost` tokens.
//!
//! `T` is rounded UP to a whole tick, so a rate whose period is not a multiple
//! of its limit is admitted a hair slower than asked (under one tick per unit),
//! never faster. The configuration bounds `burst * T` to 1000 days of ticks, so
//! with a cost of at most `burst` (a larger one is refused first) and clock
//! readings below 2^62, no sum below can overflow a u64.

use super::{Outcome, Rate, State, NEVER};

/// Decides one check of `cost` units at `now`; returns the outcome and the state
/// to store if the check (and every other rate of it) is allowed.
#[inline(always)]
pub fn decide(rate: &Rate, state: &State, now: u64, cost: u64) -> (Outcome, State) {
    let (t, capacity) = (rate.interval, rate.capacity); // capacity = burst * T
    let base = state[0].max(now);
    // Tokens left in a bucket whose tat is `x`: the unused part of the capacity.
    let tokens = |x: u64| (capacity - (x - now)) / t;
    let denied = |retry_after| {
        let outcome =
            Outcome { allowed: false, limit: rate.burst, remaining: tokens(base), reset: base - now, retry_after };
        (outcome, *state)
    };
    if cost > rate.burst {
        return denied(NEVER); // more than a full bucket: no wait helps
    }
    let new_tat = base + cost * t;
    if new_tat - now <= capacity {
        let outcome = Outcome {
            allowed: true,
            limit: rate.burst,
            remaining: tokens(new_tat),
            reset: new_tat - now,
            retry_after: 0,
        };
        (outcome, [new_tat, 0, 0])
    } else {
        // Allowed again once `new_tat - later <= capacity`.
        denied(new_tat - capacity - now)
    }
}

/// The time from which this state is the same as a fresh key's.
pub fn fresh_at(state: &State) -> u64 {
    state[0]
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, Rate};
    use super::*;

    fn rate(limit: u64, period: u64, burst: u64) -> Rate {
        Rate::new(Algorithm::TokenBucket, limit, period, burst)
    }

    #[test]
    fn fresh_key_spends_the_burst_then_waits_one_interval() {
        let r = rate(5, 1000, 5); // one unit every 200 ticks
        let mut s = [0; 3];
        for left in (0..5).rev() {
            let (o, next) = decide(&r, &s, 10_000, 1);
            assert!(o.allowed);
            assert_eq!(o.remaining, left);
            assert_eq!(o.reset, (5 - left) * 200);
            s = next;
        }
        let (o, after) = decide(&r, &s, 10_000, 1);
        assert!(!o.allowed);
        assert_eq!((o.remaining, o.retry_after, o.reset), (0, 200, 1000));
        assert_eq!(after, s, "a denied check changes nothing");
        assert!(!decide(&r, &s, 10_199, 1).0.allowed);
        assert!(decide(&r, &s, 10_200, 1).0.allowed);
    }

    #[test]
    fn cost_and_capacity() {
        let r = rate(10, 60, 10);
        let (o, s) = decide(&r, &[0; 3], 100, 3);
        assert_eq!((o.allowed, o.remaining), (true, 7));
        let (o, _) = decide(&r, &s, 100, 8);
        assert_eq!((o.allowed, o.remaining, o.retry_after), (false, 7, 6));
        let (o, _) = decide(&r, &[0; 3], 100, 11);
        assert_eq!((o.allowed, o.retry_after), (false, NEVER));
        let (o, s2) = decide(&r, &s, 100, 0);
        assert_eq!((o.allowed, o.remaining, s2), (true, 7, s));
    }

    #[test]
    fn burst_above_limit() {
        let r = rate(1, 1000, 10);
        let mut s = [0; 3];
        for _ in 0..10 {
            let (o, n) = decide(&r, &s, 0, 1);
            assert!(o.allowed);
            s = n;
        }
        let (o, _) = decide(&r, &s, 0, 1);
        assert_eq!((o.allowed, o.retry_after, o.limit), (false, 1000, 10));
    }

    #[test]
    fn interval_rounds_up() {
        let r = rate(3, 1000, 3); // 333.33 -> 334 ticks per unit
        assert_eq!(r.interval, 334);
        let (o, s) = decide(&r, &[0; 3], 0, 3);
        assert!(o.allowed);
        assert!(!decide(&r, &s, 333, 1).0.allowed);
        assert!(decide(&r, &s, 334, 1).0.allowed);
    }
}
