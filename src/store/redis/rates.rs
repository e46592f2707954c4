//! The rates as the Redis script runs them: in microsecond ticks, within the
//! range where Lua's numbers (IEEE doubles) count every integer exactly.
//!
//! Redis's `TIME` has microsecond resolution, so the script counts in
//! microseconds (`Store::TICK_NS` = 1000) where memory and shm count in
//! nanoseconds. Every configured period is a whole number of milliseconds, so
//! the conversion is exact.
//!
//! Lua 5.1 numbers are doubles: integers are exact below 2^53 ≈ 9.007e15. Time
//! since the epoch in microseconds is about 1.8e15 (it reaches 4e15 in the
//! year 2096), so the script keeps every quantity it stores or adds to a time
//! at most 2^50 ≈ 1.1e15 (35.7 years in microseconds). `rl_create` with
//! `backend=redis` therefore refuses, with `RL_ERR_CONFIG`:
//!
//! - a LIMIT or `burst=` above 2^50;
//! - a token bucket whose capacity in time, `burst × ceil(PERIOD / LIMIT)`,
//!   is above 2^50 µs (the config grammar's 2000-day refill cap already
//!   keeps configured buckets far below; rates built by hand are checked);
//! - a token bucket faster than one unit per microsecond (LIMIT above PERIOD
//!   in µs, e.g. `rate=2000000/s`), which microsecond ticks cannot express.
//!
//! An adjust (`rl_adjust`) sends |delta| at most 2^50 (`script::clamp_delta`)
//! and a charge stops at [`MAX_AHEAD`] µs of a bucket's debt or a window
//! count of [`MAX_COUNT`] ([`bound_adjusted`] states it in Rust): a debt
//! of 71 years is "never" in practice, and everything stays exact.
//!
//! Products that can exceed 2^53 (the sliding window's `previous × (period −
//! elapsed)` against `limit × period`) are computed exactly by the script in
//! two 52-bit limbs (`mul2`/`muldiv` in check.lua), not restricted.

use crate::algorithm::{Algorithm, Rate};
use crate::config::Config;

/// Nanoseconds per tick of the Redis backend.
pub const TICK_NS: u64 = 1000;

/// The largest count or duration (in µs) a rate may involve on Redis.
pub const MAX_QUANTITY: u64 = 1 << 50;

/// How far past now a charge may move a token bucket's tat on Redis, in µs
/// (`MAX_AHEAD` in check.lua).
pub const MAX_AHEAD: u64 = 1 << 51;

/// The largest count a charge may leave in a window on Redis (`MAX_COUNT`
/// in check.lua).
pub const MAX_COUNT: u64 = 1 << 51;

/// The state check.lua keeps after an adjust of `delta` at `now`: `after`
/// holds what `algorithm::adjust_all` made of `before`, and becomes the
/// same with a charge stopped at [`MAX_AHEAD`] / [`MAX_COUNT`] (never
/// below where the state already was). The Rust statement of the script's
/// bounds, for tests/redis_vectors.rs; the store itself runs the script.
pub fn bound_adjusted(rates: &[Rate], before: &[u64], after: &mut [u64], now: u64, delta: i64) {
    if delta <= 0 {
        return;
    }
    let mut at = 0;
    for r in rates {
        match r.algorithm {
            Algorithm::TokenBucket => {
                after[at] = before[at].max(after[at].min(now.saturating_add(MAX_AHEAD)));
            }
            // [start, count, ..]: the count of the window `after` is in.
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                let old = if before[at] == after[at] { before[at + 1] } else { 0 };
                after[at + 1] = old.max(after[at + 1].min(MAX_COUNT));
            }
        }
        at += r.words();
    }
}

/// The configuration's rates in microsecond ticks, or why Redis cannot run them.
pub fn rates_in_us(config: &Config) -> Result<Vec<Rate>, String> {
    let rates: Vec<Rate> =
        config.rates.iter().map(|r| Rate::new(config.algorithm, r.limit, r.period_ns / TICK_NS, r.burst)).collect();
    for (i, r) in rates.iter().enumerate() {
        check(r).map_err(|why| {
            let spec = &config.rates[i];
            format!(
                "rate {}/{}ms: {why} (backend=redis counts in microseconds with Lua doubles; see README)",
                spec.limit,
                spec.period_ns / 1_000_000
            )
        })?;
    }
    Ok(rates)
}

/// Whether one rate (in µs) stays inside the script's exact range.
pub fn check(r: &Rate) -> Result<(), String> {
    if r.limit > MAX_QUANTITY {
        return Err(format!("LIMIT {} is above 2^50", r.limit));
    }
    if r.period > MAX_QUANTITY {
        return Err(format!("PERIOD {} µs is above 2^50", r.period));
    }
    if r.algorithm == Algorithm::TokenBucket {
        if r.burst > MAX_QUANTITY {
            return Err(format!("burst {} is above 2^50", r.burst));
        }
        if r.limit > r.period {
            return Err("a token bucket may admit at most one unit per microsecond".into());
        }
        if (r.burst as u128) * (r.interval as u128) > MAX_QUANTITY as u128 {
            return Err(format!(
                "the bucket holds burst × interval = {} × {} µs, above 2^50 µs (35 years)",
                r.burst, r.interval
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        let c = Config::parse(text).unwrap();
        rates_in_us(&c).expect_err(text)
    }

    #[test]
    fn microsecond_rates_and_their_limits() {
        let c = Config::parse("rate=5/s,1000/hour backend=redis url=redis://h:1").unwrap();
        let r = rates_in_us(&c).unwrap();
        assert_eq!((r[0].period, r[0].interval, r[1].period), (1_000_000, 200_000, 3_600_000_000));
        assert!(refused("rate=2000000/s").contains("one unit per microsecond"));
        // (the config grammar already caps a bucket's refill at 2000 days;
        // rates built by hand are checked the same way)
        let huge = Rate::new(Algorithm::TokenBucket, 1, 86_400_000_000_000, 100_000);
        assert!(check(&huge).unwrap_err().contains("above 2^50"));
        assert!(refused("rate=2000000000000000/1000d algorithm=fixed_window").contains("LIMIT"));
        // Large but exact: fine.
        let c = Config::parse("rate=1000000000000000/1000d algorithm=sliding_window").unwrap();
        assert!(rates_in_us(&c).is_ok());
        let c = Config::parse("rate=1000000/s").unwrap();
        assert!(rates_in_us(&c).is_ok());
    }
}
