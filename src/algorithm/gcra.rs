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
//! never faster.
//!
//! Time never runs backwards for a key. A tat more than a bucket ahead of
//! `now` means the bucket is empty and then some: either a check that read
//! the clock after this one took the lock first (threads' readings may cross,
//! or this clock is behind), or the key is in debt (`adjust` charged more
//! than the bucket held). Either way the check decides at
//! `max(now, tat - burst * T)`: it sees an empty bucket, never one "more than
//! full", and a peek still passes. Its `retry_after` and `reset` count from
//! the caller's own `now`, so they include the debt (and, for a stale
//! reading, are long by the staleness: never short). This is governor's and
//! nginx's answer too: compare instants, never subtract into a negative.
//!
//! `adjust` settles a cost after the fact: a charge moves the tat forward,
//! never denied and without bound (debt, paid back at the refill rate); a
//! refund moves it back, never before `now` (a fresh key).
//!
//! The functions are total: for any state words (a corrupted shm slot holds
//! arbitrary ones), any `now`, any `cost` and any delta they return
//! `remaining <= burst` and allow a cost of 0, without an overflow. Only the
//! stored tat can saturate, at `u64::MAX` ticks (the year 2554 in nanoseconds).

use super::{Outcome, Rate, State, NEVER};

/// Decides one check of `cost` units at `now`; returns the outcome and the state
/// to store if the check (and every other rate of it) is allowed.
#[inline(always)]
pub fn decide(rate: &Rate, state: &State, now: u64, cost: u64) -> (Outcome, State) {
    let (t, bucket) = (rate.interval, rate.bucket_ticks); // bucket = burst * T
    let tat = state[0];
    let caller_now = now;
    let now = now.max(tat.saturating_sub(bucket));
    // How far the key's time is ahead of the caller's (a debt, or a stale
    // reading): added to the durations reported.
    let behind = now - caller_now;
    // How far the bucket is from full, in ticks: at most `bucket` (by the
    // line above), so `free`, the ticks' worth of tokens in it, cannot wrap.
    let ahead = tat.saturating_sub(now);
    let free = bucket - ahead;
    let denied = |retry_after: u64| {
        let outcome = Outcome {
            allowed: false,
            limit: rate.burst,
            remaining: rate.per_interval.div(free),
            reset: ahead.saturating_add(behind),
            retry_after: if retry_after == NEVER { NEVER } else { retry_after.saturating_add(behind).min(NEVER - 1) },
        };
        (outcome, *state)
    };
    if cost > rate.burst {
        return denied(NEVER); // more than a full bucket: no wait helps
    }
    let need = cost * t; // at most `bucket`, which fits
    if need <= free {
        let outcome = Outcome {
            allowed: true,
            limit: rate.burst,
            remaining: rate.per_interval.div(free - need),
            reset: (ahead + need).saturating_add(behind),
            retry_after: 0,
        };
        // `now + ahead` is `max(tat, now)`.
        (outcome, [(now + ahead).saturating_add(need), 0, 0])
    } else {
        // `free` grows by one a tick (until the bucket is full, `need <= bucket`).
        denied(need - free)
    }
}

/// Settles `delta` units after the fact: a charge (`delta > 0`) moves the
/// tat `delta * T` past `max(tat, now)`, however far (debt); a refund moves
/// it back by as much, but not before `now` (a fresh key). Returns the state.
#[inline]
pub fn adjust(rate: &Rate, state: &State, now: u64, delta: i64) -> State {
    let tat = state[0];
    let ticks = delta.unsigned_abs().saturating_mul(rate.interval);
    if delta >= 0 {
        // A debt stops at `MAX_DEBT` ticks past now, so that the largest
        // refund (i64::MIN units, at least as many ticks) clears any.
        let most = now.saturating_add(super::MAX_DEBT);
        [tat.max(now).saturating_add(ticks).min(most).max(tat), 0, 0]
    } else if tat <= now {
        *state // already fresh
    } else {
        [tat.saturating_sub(ticks).max(now), 0, 0]
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

    /// A check that read the clock before another thread's check but took the
    /// lock after it finds a tat more than a bucket ahead of its `now`.
    /// The key's time is then at least `tat - bucket` (the writer's own
    /// `now` was): the bucket is empty, not "more than full".
    #[test]
    fn stale_now_more_than_a_bucket_behind_the_tat() {
        let r = rate(5, 1000, 5); // a bucket of 1000 ticks
        let (_, s) = decide(&r, &[0; 3], 10_000, 5); // tat 11_000
        for stale in [0, 1, 5_000, 9_999, 10_000] {
            let behind = 10_000 - stale; // durations count from the caller's reading
            let (o, next) = decide(&r, &s, stale, 0);
            assert_eq!((o.allowed, o.remaining, o.reset), (true, 0, 1000 + behind), "peek at {stale}");
            assert_eq!(next, s);
            let (o, next) = decide(&r, &s, stale, 1);
            assert_eq!(
                (o.allowed, o.remaining, o.reset, o.retry_after),
                (false, 0, 1000 + behind, 200 + behind),
                "at {stale}"
            );
            assert_eq!(next, s);
            assert_eq!(decide(&r, &s, stale, 6).0.retry_after, NEVER);
        }
        // Less than a bucket behind: the plain GCRA answer, as before.
        let (_, s) = decide(&r, &[0; 3], 10_000, 1); // tat 10_200
        let (o, s) = decide(&r, &s, 9_500, 1);
        assert_eq!((o.allowed, o.remaining, o.reset, s[0]), (true, 0, 900, 10_400));
        assert_eq!(decide(&r, &s, 9_500, 0).0.remaining, 0);
        assert_eq!(decide(&r, &s, 9_600, 0).0.remaining, 1);
    }

    /// A state no check could have written (the shm region is shared memory
    /// that a stray write can reach): still an answer, never a panic.
    #[test]
    fn arbitrary_tat_and_now() {
        let r = rate(5, 1000, 5);
        for tat in [u64::MAX, u64::MAX - 999, u64::MAX - 1000, 1 << 63, 999, 1000] {
            for now in [0, 1, 1000, 1 << 62, u64::MAX - 1000, u64::MAX] {
                for cost in [0, 1, 5, 6, u64::MAX] {
                    let (o, next) = decide(&r, &[tat, 0, 0], now, cost);
                    assert!(o.remaining <= 5, "{tat} {now} {cost}: {o:?}");
                    assert!(o.reset <= 1000 || tat > now.saturating_add(1000), "{tat} {now} {cost}: {o:?}");
                    let adjusted = [adjust(&r, &[tat, 0, 0], now, i64::MAX), adjust(&r, &[tat, 0, 0], now, i64::MIN)];
                    assert!(adjusted[0][0] >= tat && adjusted[1][0] <= tat.max(now), "{tat} {now}");
                    assert!(o.allowed || next == [tat, 0, 0]);
                    assert!(o.allowed || cost > 0, "a peek is allowed");
                }
            }
        }
    }

    /// A charge past the bucket is debt: checks are denied until the
    /// refill pays it back, with a retry_after that says exactly when.
    #[test]
    fn a_charge_puts_the_key_in_debt_that_time_pays_back() {
        let r = rate(10, 1000, 10); // one unit every 100 ticks
        let (_, s) = decide(&r, &[0; 3], 5_000, 10); // reserved 10: empty, tat 6_000
        let s = adjust(&r, &s, 5_000, 5); // used 15: 5 more
        assert_eq!(s[0], 6_500);
        let (o, _) = decide(&r, &s, 5_000, 1);
        assert_eq!((o.allowed, o.remaining, o.retry_after, o.reset), (false, 0, 600, 1_500));
        assert!(!decide(&r, &s, 5_599, 1).0.allowed);
        let (o, _) = decide(&r, &s, 5_600, 1);
        assert_eq!((o.allowed, o.remaining), (true, 0));
        assert_eq!(decide(&r, &s, 6_500, 0).0.remaining, 10);
    }

    /// A refund gives back what was reserved and not used, never more than
    /// a fresh key holds.
    #[test]
    fn a_refund_stops_at_a_fresh_key() {
        let r = rate(10, 1000, 10);
        let (_, s) = decide(&r, &[0; 3], 5_000, 8); // tat 5_800
        let s2 = adjust(&r, &s, 5_000, -5); // used 3
        assert_eq!(decide(&r, &s2, 5_000, 0).0.remaining, 7);
        let s3 = adjust(&r, &s, 5_000, -1_000_000);
        assert_eq!(s3[0], 5_000, "not before now: a fresh key");
        assert_eq!(decide(&r, &s3, 5_000, 0).0.remaining, 10);
        assert_eq!(adjust(&r, &[0; 3], 5_000, -3), [0; 3], "a fresh key stays as it is");
        assert_eq!(adjust(&r, &s, 5_000, 0), [5_800, 0, 0]);
    }
}
