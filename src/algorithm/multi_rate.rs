//! Several rates per key, taken all-or-nothing.
//!
//! A key's slot holds the states of all its rates back to back (each rate uses
//! `Rate::words()` words). A check is decided against every rate; only when all
//! of them allow it are the new states written, so a denied check consumes
//! nothing anywhere.

use super::{adjust, decide, fresh_at, Outcome, Rate, State, STATE_WORDS};

/// The answer to one check over all rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Index of the deciding rate: when allowed, the one with the least
    /// remaining; when denied, the one that denied with the longest retry_after.
    /// Ties go to the first in configuration order.
    pub index: usize,
    pub outcome: Outcome,
}

/// The state held in `words` (1 to `STATE_WORDS` of them), zero-padded.
/// Spelled out per length: a variable-length copy became a memset and a
/// memcpy call whose byte stores the next 16-byte load could not forward
/// from (a store-forwarding stall on every check).
#[inline]
fn load(words: &[u64]) -> State {
    match *words {
        [a] => [a, 0, 0],
        [a, b] => [a, b, 0],
        [a, b, c, ..] => [a, b, c],
        [] => [0; STATE_WORDS],
    }
}

/// Writes the first `words.len()` (1 to `STATE_WORDS`) words of `new` back
/// into `words`. Spelled out per length, as `load` is: the loop compiled to
/// a call to memcpy for one word.
#[inline]
fn store(words: &mut [u64], new: &State) {
    match words {
        [a] => *a = new[0],
        [a, b] => (*a, *b) = (new[0], new[1]),
        [a, b, c, ..] => (*a, *b, *c) = (new[0], new[1], new[2]),
        [] => {}
    }
}

/// Decides `cost` units against every rate and, if all allow it, stores the new
/// states into `words`. `cost == 0` is a peek and never writes.
#[inline(always)]
pub fn check_all(rates: &[Rate], words: &mut [u64], now: u64, cost: u64) -> Verdict {
    // One rate (the common configuration): decide it, store it if taken.
    if let [rate] = rates {
        let n = rate.words();
        let (outcome, new) = decide(rate, &load(&words[..n]), now, cost);
        if outcome.allowed && cost > 0 {
            store(&mut words[..n], &new);
        }
        return Verdict { index: 0, outcome };
    }
    let mut news = [[0u64; STATE_WORDS]; crate::config::MAX_RATES];
    let mut verdict: Option<Verdict> = None;
    let mut all_allowed = true;
    let mut at = 0;
    for (index, rate) in rates.iter().enumerate() {
        let n = rate.words();
        let (outcome, new) = decide(rate, &load(&words[at..at + n]), now, cost);
        news[index] = new;
        at += n;
        let better = match &verdict {
            None => true,
            Some(v) if outcome.allowed != v.outcome.allowed => !outcome.allowed,
            Some(v) if outcome.allowed => outcome.remaining < v.outcome.remaining,
            Some(v) => outcome.retry_after > v.outcome.retry_after,
        };
        all_allowed &= outcome.allowed;
        if better {
            verdict = Some(Verdict { index, outcome });
        }
    }
    if all_allowed && cost > 0 {
        let mut at = 0;
        for (rate, new) in rates.iter().zip(&news) {
            let n = rate.words();
            store(&mut words[at..at + n], new);
            at += n;
        }
    }
    verdict.expect("a configuration has at least one rate")
}

/// Settles `delta` units after the fact on every rate (`rl_adjust`), storing
/// the new states into `words`; returns whether any word changed, and the
/// key afterwards: `allowed` says whether a check of cost 1 would pass now
/// (its `retry_after` when not), `remaining` and `reset` are a peek's. The
/// deciding rate is chosen as `check_all` chooses it for a check of cost 1.
/// `delta == 0` is a peek and writes nothing.
pub fn adjust_all(rates: &[Rate], words: &mut [u64], now: u64, delta: i64) -> (Verdict, bool) {
    let mut changed = false;
    let mut verdict: Option<Verdict> = None;
    let mut at = 0;
    for (index, rate) in rates.iter().enumerate() {
        let n = rate.words();
        let old = load(&words[at..at + n]);
        let state = if delta == 0 { old } else { adjust(rate, &old, now, delta) };
        if state != old {
            store(&mut words[at..at + n], &state);
            changed = true;
        }
        at += n;
        let (peek, _) = decide(rate, &state, now, 0);
        let (one, _) = decide(rate, &state, now, 1);
        let outcome = Outcome { allowed: one.allowed, retry_after: one.retry_after, ..peek };
        let better = match &verdict {
            None => true,
            Some(v) if outcome.allowed != v.outcome.allowed => !outcome.allowed,
            Some(v) if outcome.allowed => outcome.remaining < v.outcome.remaining,
            Some(v) => outcome.retry_after > v.outcome.retry_after,
        };
        if better {
            verdict = Some(Verdict { index, outcome });
        }
    }
    (verdict.expect("a configuration has at least one rate"), changed)
}

/// The time from which the whole slot is the same as a fresh key's.
pub fn fresh_at_all(rates: &[Rate], words: &[u64]) -> u64 {
    let mut at = 0;
    let mut latest = 0;
    for rate in rates {
        let n = rate.words();
        latest = latest.max(fresh_at(rate, &load(&words[at..at + n])));
        at += n;
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, NEVER};
    use super::*;

    /// A small deterministic generator, so failures replay.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Below one of `scales`, chosen at random: small and huge values alike.
        fn below_one_of(&mut self, scales: &[u64]) -> u64 {
            let scale = scales[self.below(scales.len() as u64) as usize];
            self.below(scale)
        }
    }

    fn words_of(rates: &[Rate]) -> Vec<u64> {
        vec![0; rates.iter().map(Rate::words).sum()]
    }

    #[test]
    fn denied_check_changes_no_state() {
        let rates = [Rate::new(Algorithm::TokenBucket, 3, 1000, 3), Rate::new(Algorithm::TokenBucket, 5, 60_000, 5)];
        let mut w = words_of(&rates);
        for _ in 0..3 {
            assert!(check_all(&rates, &mut w, 1, 1).outcome.allowed);
        }
        let before = w.clone();
        let v = check_all(&rates, &mut w, 1, 1);
        assert_eq!((v.outcome.allowed, v.index), (false, 0));
        assert_eq!(w, before, "denied by rate 0: rate 1 consumed nothing");
        // Rate 1 still has exactly 2 left: once rate 0 is full again, 2 pass
        // (rate 1 decides, having the least remaining), then rate 1 denies.
        let v = check_all(&rates, &mut w, 2000, 1);
        assert_eq!((v.outcome.allowed, v.index, v.outcome.remaining), (true, 1, 1));
        let v = check_all(&rates, &mut w, 2000, 1);
        assert_eq!((v.outcome.allowed, v.index, v.outcome.remaining), (true, 1, 0));
        let v = check_all(&rates, &mut w, 2000, 1);
        assert_eq!((v.outcome.allowed, v.index), (false, 1));
    }

    #[test]
    fn deciding_rate_is_least_remaining_or_longest_retry() {
        let rates = [Rate::new(Algorithm::FixedWindow, 2, 1000, 2), Rate::new(Algorithm::FixedWindow, 3, 100_000, 3)];
        let mut w = words_of(&rates);
        assert_eq!(check_all(&rates, &mut w, 0, 1).index, 0); // 1 vs 2 left
        let v = check_all(&rates, &mut w, 0, 1);
        assert_eq!((v.index, v.outcome.remaining), (0, 0)); // tie 0 vs 1 -> least is rate 0
        assert_eq!(check_all(&rates, &mut w, 1000, 1).index, 1); // 1 vs 0 left
        let v = check_all(&rates, &mut w, 1000, 2);
        assert_eq!((v.outcome.allowed, v.index, v.outcome.retry_after), (false, 1, 99_000));
        let v = check_all(&rates, &mut w, 1000, 3);
        assert_eq!((v.index, v.outcome.retry_after), (0, NEVER), "cost above rate 0's limit");
    }

    /// Over random sequences of checks, no window of length W ever admits more
    /// than the rate allows: `burst + W / interval` for a bucket, `limit` per
    /// aligned window for fixed windows, `2 * limit` for any span of one period
    /// under a sliding window (its estimate bounds the true count by the two
    /// windows it straddles).
    #[test]
    fn never_admits_more_than_the_quota() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let algorithm = [Algorithm::TokenBucket, Algorithm::FixedWindow, Algorithm::SlidingWindow][round % 3];
            let limit = 1 + rng.below(20);
            let period = 100 + rng.below(5000);
            let burst = if algorithm == Algorithm::TokenBucket { 1 + rng.below(30) } else { limit };
            let rate = Rate::new(algorithm, limit, period, burst);
            let rates = [rate];
            let mut w = words_of(&rates);
            let mut now = rng.below(1_000_000);
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for _ in 0..400 {
                now += rng.below(period / 4 + 1);
                let cost = rng.below(4);
                let v = check_all(&rates, &mut w, now, cost);
                if v.outcome.allowed && cost > 0 {
                    admitted.push((now, cost));
                }
                if !v.outcome.allowed && v.outcome.retry_after != NEVER {
                    // The retry_after is exact: one tick earlier still fails, at it the cost passes.
                    let mut probe = w.clone();
                    let ra = v.outcome.retry_after;
                    assert!(!check_all(&rates, &mut probe, now + ra - 1, cost).outcome.allowed);
                    assert!(check_all(&rates, &mut probe, now + ra, cost).outcome.allowed);
                }
            }
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let span = |len: u64| -> u64 {
                    admitted[i..].iter().take_while(|(t, _)| *t < start + len).map(|(_, c)| c).sum()
                };
                match algorithm {
                    Algorithm::TokenBucket => {
                        for len in [1, rate.interval, period, 3 * period] {
                            let bound = burst + (len - 1) / rate.interval;
                            assert!(span(len) <= bound, "bucket admitted {} in {len} > {bound}", span(len));
                        }
                    }
                    Algorithm::FixedWindow => {
                        let ws = start - start % period;
                        let used: u64 =
                            admitted.iter().filter(|(t, _)| *t >= ws && *t < ws + period).map(|(_, c)| c).sum();
                        assert!(used <= limit);
                    }
                    Algorithm::SlidingWindow => assert!(span(period) <= 2 * limit),
                }
            }
        }
    }

    /// The time a rate runs a check at: the later of `now` and the earliest
    /// time its stored state could have been written at.
    /// (A token bucket counts its durations from the caller's `now`: a tat
    /// more than a bucket ahead may be a debt, see gcra.rs.)
    fn key_time(rate: &Rate, state: &[u64], now: u64) -> u64 {
        match rate.algorithm {
            Algorithm::TokenBucket => now,
            _ => now.max(state[0]),
        }
    }

    /// Any state words (a corrupted shm slot), any time (a clock behind the
    /// stored state, or at its end), any cost, any rates the constructor takes:
    /// `check_all` and `fresh_at_all` answer without a panic (tests run with
    /// overflow checks), `remaining <= limit`, a peek passes and writes nothing,
    /// a denial writes nothing, `never` exactly when the cost is above a quota,
    /// an exact `retry_after` counted from the key's time, and from `fresh_at`
    /// on the state decides as a fresh key does.
    #[test]
    fn total_for_arbitrary_states_times_and_costs() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let algorithms = [Algorithm::TokenBucket, Algorithm::FixedWindow, Algorithm::SlidingWindow];
        for _ in 0..20_000 {
            let mut rates = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let algorithm = algorithms[rng.below(3) as usize];
                let limit = 1 + rng.below_one_of(&[10, 1_000_000, 1 << 50, u64::MAX]);
                let period = 1 + rng.below_one_of(&[1000, 1 << 30, 1 << 57, u64::MAX]);
                let mut burst = 1 + rng.below_one_of(&[10, 1 << 20, u64::MAX]);
                if burst.checked_mul(period.div_ceil(limit)).is_none() {
                    burst = 1;
                }
                rates.push(Rate::new(algorithm, limit, period, burst));
            }
            let mut now = match rng.below(4) {
                0 => u64::MAX - rng.below(1000),
                1 => rng.below(1000),
                _ => rng.below(1 << 62),
            };
            let mut w = words_of(&rates);
            for word in w.iter_mut() {
                *word = match rng.below(6) {
                    0 => 0,
                    1 => rng.below(20),
                    2 => rng.next(),
                    3 => u64::MAX - rng.below(1000),
                    _ => now.saturating_add(rng.below(1 << 40)).saturating_sub(rng.below(1 << 40)),
                };
            }
            if rng.below(4) == 0 {
                now = w[0].saturating_sub(rng.below(1 << 20)); // just behind the first rate's state
            }
            let cost = match rng.below(5) {
                0 => 0,
                1 => 1,
                2 => rng.next(),
                3 => u64::MAX,
                _ => rng.below(rates[0].quota().saturating_add(2)),
            };
            let before = w.clone();
            let v = check_all(&rates, &mut w, now, cost);
            let o = v.outcome;
            let fresh = fresh_at_all(&rates, &w);
            let what = format!("rates {rates:?} words {before:?} now {now} cost {cost}: {v:?}");
            assert!(o.remaining <= o.limit && o.limit == rates[v.index].quota(), "{what}");
            assert!(o.allowed || cost > 0, "a peek is denied: {what}");
            if !o.allowed || cost == 0 {
                assert_eq!(w, before, "{what}");
            }
            let over_a_quota = rates.iter().any(|r| cost > r.quota());
            if over_a_quota {
                assert_eq!((o.allowed, o.retry_after), (false, NEVER), "{what}");
            } else if rates.iter().all(|r| r.period < 1 << 62) {
                assert_ne!(o.retry_after, NEVER, "{what}"); // (2 periods may not fit a u64)
            }
            if let [rate] = rates[..] {
                let at = key_time(&rate, &before, now);
                match at.checked_add(o.retry_after) {
                    Some(ok) if !o.allowed && o.retry_after != NEVER => {
                        let mut probe = before.clone();
                        assert!(!check_all(&rates, &mut probe, ok - 1, cost).outcome.allowed, "{what}");
                        assert!(check_all(&rates, &mut probe, ok, cost).outcome.allowed, "{what}");
                    }
                    _ => {}
                }
            }
            let later = fresh.max(now).saturating_add(rng.below(1 << 20));
            if fresh < u64::MAX {
                let (a, b) = (
                    check_all(&rates, &mut w.clone(), later, cost),
                    check_all(&rates, &mut words_of(&rates), later, cost),
                );
                assert_eq!(
                    (a.outcome.allowed, a.outcome.remaining),
                    (b.outcome.allowed, b.outcome.remaining),
                    "{what} at {later}"
                );
            }
        }
    }

    /// Reserving R and settling to the actual use A leaves the key as a
    /// check of A would have (at the same time), on every algorithm; a
    /// charge only lowers what remains and a refund only raises it, never
    /// above a fresh key's; and any state, time and delta answer without a
    /// panic (tests run with overflow checks).
    #[test]
    fn settling_a_reservation_equals_charging_the_actual_use() {
        let mut rng = XorShift(0x6A09_E667_F3BC_C908);
        let algorithms = [Algorithm::TokenBucket, Algorithm::FixedWindow, Algorithm::SlidingWindow];
        for _ in 0..20_000 {
            let mut rates = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let algorithm = algorithms[rng.below(3) as usize];
                let limit = 1 + rng.below_one_of(&[10, 1000, 1 << 40]);
                let period = 1 + rng.below_one_of(&[1000, 1 << 30]);
                let burst =
                    if algorithm == Algorithm::TokenBucket { 1 + rng.below(2 * limit.min(1000)) } else { limit };
                rates.push(Rate::new(algorithm, limit, period, burst));
            }
            let now = (1 << 40) + rng.below(1 << 35);
            let mut before = words_of(&rates);
            // Some history first.
            for _ in 0..rng.below(4) {
                let at = now - rng.below(1 << 32);
                check_all(&rates, &mut before, at, rng.below(20));
            }
            let quota = rates.iter().map(Rate::quota).min().unwrap();
            let (reserve, actual) = (rng.below(quota + 1), rng.below(quota + 1));
            let mut settled = before.clone();
            let mut direct = before.clone();
            let reserved = check_all(&rates, &mut settled, now, reserve);
            let charged = check_all(&rates, &mut direct, now, actual);
            if reserved.outcome.allowed && charged.outcome.allowed {
                let (v, _) = adjust_all(&rates, &mut settled, now, actual as i64 - reserve as i64);
                let peek = check_all(&rates, &mut direct.clone(), now, 0);
                let what = format!("rates {rates:?} from {before:?}: reserve {reserve}, use {actual}");
                if actual > 0 {
                    assert_eq!(settled, direct, "{what}");
                } else {
                    // A check of 0 writes nothing; a full refund may leave
                    // other words that decide the same (a fresh state).
                    for probe in [1, quota] {
                        let a = check_all(&rates, &mut settled.clone(), now, probe);
                        let b = check_all(&rates, &mut direct.clone(), now, probe);
                        assert_eq!(
                            (a.outcome.allowed, a.outcome.remaining),
                            (b.outcome.allowed, b.outcome.remaining),
                            "{what}"
                        );
                    }
                }
                assert_eq!(v.outcome.remaining, peek.outcome.remaining, "{what}");
            }
            // Arbitrary deltas, states and times: monotone, bounded, total.
            let delta = match rng.below(4) {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => rng.next() as i64 >> rng.below(64),
            };
            let mut words = before.clone();
            if rng.below(4) == 0 {
                words.iter_mut().for_each(|w| *w = rng.next());
            }
            let at = [now, 0, u64::MAX, rng.next()][rng.below(4) as usize];
            let old: Vec<u64> = rates
                .iter()
                .scan(0, |i, r| {
                    let state = load(&words[*i..*i + r.words()]);
                    *i += r.words();
                    Some(decide(r, &state, at, 0).0.remaining)
                })
                .collect();
            let (v, changed) = adjust_all(&rates, &mut words, at, delta);
            assert!(v.outcome.remaining <= v.outcome.limit);
            assert!(delta != 0 || !changed, "a peek writes nothing");
            let mut i = 0;
            for (r, old) in rates.iter().zip(old) {
                let new = decide(r, &load(&words[i..i + r.words()]), at, 0).0.remaining;
                i += r.words();
                match delta {
                    d if d > 0 => assert!(new <= old, "{r:?}: a charge raised remaining {old} -> {new}"),
                    d if d < 0 => assert!(new >= old && new <= r.quota(), "{r:?}: a refund {old} -> {new}"),
                    _ => assert_eq!(new, old),
                }
            }
        }
    }
}
