//! The C API driven by arbitrary sequences of operations, on a clock the
//! harness sets (forward and backward by any amount), checked against the pure
//! algorithms.
//!
//! The input picks a configuration (memory or shm; token bucket, fixed or
//! sliding window; one rate or several; bursts) and then a list of operations:
//! checks of keys from a small set (empty, binary, long) with costs around the
//! quota (0, 1, burst, burst + 1, huge), clock steps, resets, sweeps, stats,
//! header formatting, and calls with bad arguments. After every call:
//!
//! - the status is one the C API documents, and `*out` was written on every
//!   path (it is filled with a sentinel first), errors included;
//! - a decision is well formed: `allowed` is 0 or 1, `remaining <= limit`,
//!   `limit` and `window_ms` are those of the deciding rate, `retry_after_ms`
//!   is 0 exactly when allowed, a cost above a quota can never pass, and a
//!   peek (cost 0) is never denied;
//! - under capacity, the library's decision is exactly the one the pure
//!   algorithms (`check_all`) give on per-key states kept here, at the same
//!   clock readings;
//! - no key is ever admitted more than its rates allow. Time is counted per
//!   key as the latest clock reading at which it was admitted (the algorithms
//!   never move a key's time backwards), so with the clock only moving forward
//!   this is the plain bound: a bucket admits at most `burst + span / interval`
//!   units over any span, a fixed window at most `limit` per window, a sliding
//!   window at most `2 * limit` over any period.
//!
//! A key whose state has expired may be dropped by the table (a sweep, or a
//! new key reusing its slot): expiry is judged at the reading of that moment,
//! so if the clock then steps back before it, the table and the algorithms on
//! the kept state may both be right. The harness then keeps both possible
//! states of the key and accepts a decision that either gives.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ratelimit::algorithm::{check_all, fresh_at_all, Algorithm, Rate};
use ratelimit::clock::fuzz_set_now;
use ratelimit::config::Config;
use ratelimit::ffi::*;
use ratelimit::limiter::rates_in_ns;

/// Rates and algorithms the input chooses from.
const RATES: &[&str] = &[
    "rate=5/s",
    "rate=10/s burst=3",
    "rate=2/s burst=40",
    "rate=3/100ms,20/s,100/min",
    "rate=100000/s",
    "rate=7/3s burst=1",
    "rate=1/1000d",
    "rate=1000/1000d burst=5",
    "rate=5/s algorithm=fixed_window",
    "rate=3/100ms,10/s algorithm=fixed_window",
    "rate=1/1000d algorithm=fixed_window",
    "rate=5/s algorithm=sliding_window",
    "rate=4/250ms,30/10s algorithm=sliding_window",
    "rate=1000/1000d algorithm=sliding_window",
    "rate=1/ms,2/s,3/min,4/h,5/d algorithm=sliding_window",
    "rate=1/ms,2/s,3/min,4/h,5/d",
];

/// Enough room for every key: the table never evicts, and the library must
/// agree exactly with the algorithms.
const ROOMY: u64 = 64;

static KEYS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        b"".to_vec(),
        b"a".to_vec(),
        b"user:1".to_vec(),
        b"\0".to_vec(),
        b"\xff\xfe\x00\x01\r\n".to_vec(),
        vec![b'x'; 64],
        vec![b'k'; 1000],
        b"a\0b%s%n".to_vec(),
    ]
});

const SENTINEL: rl_decision = rl_decision {
    allowed: 0xA5A5_A5A5,
    rate_index: 0xA5A5_A5A5,
    limit: 0xA5A5_A5A5_A5A5_A5A5,
    remaining: 0xA5A5_A5A5_A5A5_A5A5,
    reset_ms: 0xA5A5_A5A5_A5A5_A5A5,
    retry_after_ms: 0xA5A5_A5A5_A5A5_A5A5,
    window_ms: 0xA5A5_A5A5_A5A5_A5A5,
};

type Fields = (u32, u32, u64, u64, u64, u64, u64);

fn fields(d: &rl_decision) -> Fields {
    (d.allowed, d.rate_index, d.limit, d.remaining, d.reset_ms, d.retry_after_ms, d.window_ms)
}

/// Reports a broken promise with the whole story, then aborts (the library's
/// panic hook may be silent, so the message is printed first).
macro_rules! fail {
    ($story:expr, $($arg:tt)*) => {{
        let story: Vec<String> = $story.iter().map(ToString::to_string).collect();
        eprintln!("api: {}\n--- operations:\n{}", format!($($arg)*), story.join("\n"));
        std::process::abort();
    }};
}

/// One step of the story told when a promise breaks. Kept as data and
/// formatted only then: formatting every step of every input cost more than
/// the calls it describes.
enum Step {
    Create(String, u64),
    Check(usize, u64, u64),
    Checked(i32, rl_decision),
    Clock(u64, bool, u64),
    Reset(usize),
    Sweep(u64),
    Stats(i32, rl_stats),
    BadArgument(u8, i32, rl_decision),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Create(config, now) => write!(f, "rl_create({config:?}) at {now}"),
            Step::Check(key, cost, now) => write!(f, "check key {key} cost {cost} at {now}"),
            Step::Checked(rc, d) => write!(f, "  -> {rc} {d:?}"),
            Step::Clock(now, forward, amount) => {
                write!(f, "clock {now} ({} {amount})", if *forward { "+" } else { "-" })
            }
            Step::Reset(key) => write!(f, "reset key {key}"),
            Step::Sweep(now) => write!(f, "sweep at {now}"),
            Step::Stats(rc, s) => write!(f, "stats -> {rc} {s:?}"),
            Step::BadArgument(kind, rc, d) => write!(f, "bad argument {kind} -> {rc} {d:?}"),
        }
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
}

/// What the harness knows about one key.
#[derive(Default)]
struct KeyModel {
    /// The states the library may hold for it (an all-zero state: not stored).
    states: Vec<Vec<u64>>,
    /// Admissions since it may last have been forgotten: (key time, cost).
    admitted: Vec<(u64, u64)>,
}

fn ceil_ms(ticks: u64) -> u64 {
    if ticks == u64::MAX {
        u64::MAX
    } else {
        ticks.div_ceil(1_000_000)
    }
}

/// Highest clock reading the harness uses (the algorithms assume readings below 2^62).
const MAX_NOW: u64 = 1 << 62;

struct Run {
    rates: Vec<Rate>,
    exact: bool,
    lim: *mut rl_limiter,
    now: u64,
    keys: Vec<KeyModel>,
    allowed: u64,
    limited: u64,
    /// The last decision rl_check returned.
    last: rl_decision,
    story: Vec<Step>,
}

impl Run {
    fn words(&self) -> usize {
        self.rates.iter().map(Rate::words).sum()
    }

    fn expect_decision(&self, cost: u64, d: &rl_decision) {
        let story = &self.story;
        if d.allowed > 1 {
            fail!(story, "allowed = {}", d.allowed);
        }
        let Some(rate) = self.rates.get(d.rate_index as usize) else {
            fail!(story, "rate_index {} of {} rates", d.rate_index, self.rates.len())
        };
        if d.remaining > d.limit {
            fail!(story, "remaining {} > limit {}: {d:?}", d.remaining, d.limit);
        }
        if d.limit != rate.quota() || d.window_ms != rate.period / 1_000_000 {
            fail!(story, "limit/window_ms are not those of rate {}: {d:?}", d.rate_index);
        }
        if (d.allowed == 1) != (d.retry_after_ms == 0) {
            fail!(story, "retry_after_ms {} with allowed {}", d.retry_after_ms, d.allowed);
        }
        if cost == 0 && d.allowed == 0 {
            fail!(story, "a peek (cost 0) was denied: {d:?}");
        }
        if self.rates.iter().any(|r| cost > r.quota()) && (d.allowed == 1 || d.retry_after_ms != u64::MAX) {
            fail!(story, "cost {cost} is above a quota, yet: {d:?}");
        }
    }

    /// Forgets, in the model, what the table may have dropped at `now`:
    /// every state already expired then (`certain`: the table drops them all).
    fn may_drop(&mut self, skip: Option<usize>, certain: bool) {
        let (rates, now, n) = (self.rates.clone(), self.now, self.words());
        for (i, k) in self.keys.iter_mut().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let mut dropped = false;
            let mut next: Vec<Vec<u64>> = Vec::new();
            for s in k.states.drain(..) {
                let expired = s.iter().any(|&w| w != 0) && fresh_at_all(&rates, &s) <= now;
                dropped |= expired;
                if !expired || !certain {
                    next.push(s);
                }
                if expired {
                    next.push(vec![0; n]);
                }
            }
            next.sort();
            next.dedup();
            k.states = next;
            if dropped {
                k.admitted.clear();
            }
        }
    }

    fn check(&mut self, key: usize, cost: u64) {
        let bytes = &KEYS[key];
        let mut d = SENTINEL;
        let rc = rl_check(self.lim, bytes.as_ptr().cast(), bytes.len(), cost, &mut d);
        self.story.push(Step::Checked(rc, d));
        if fields(&d) == fields(&SENTINEL) {
            fail!(self.story, "*out not written (status {rc})");
        }
        if rc != RL_OK {
            fail!(self.story, "status {rc} for a valid check: {:?}", last_error());
        }
        self.expect_decision(cost, &d);
        self.last = d;
        if d.allowed == 1 {
            self.allowed += 1;
        } else {
            self.limited += 1;
        }
        if !self.exact {
            return;
        }
        // Exactly the decision of the algorithms on one of the states the key may have.
        let (rates, now) = (self.rates.clone(), self.now);
        let mut next = Vec::new();
        let mut seen = Vec::new();
        let mut inserted = false;
        for s in &self.keys[key].states {
            let mut s = s.clone();
            let fresh = s.iter().all(|&w| w == 0);
            let v = check_all(&rates, &mut s, now, cost);
            let o = v.outcome;
            let want = rl_decision {
                allowed: o.allowed as u32,
                rate_index: v.index as u32,
                limit: o.limit,
                remaining: o.remaining,
                reset_ms: ceil_ms(o.reset),
                retry_after_ms: if o.allowed { 0 } else { ceil_ms(o.retry_after) },
                window_ms: rates[v.index].period / 1_000_000,
            };
            if fields(&want) == fields(&d) {
                inserted |= fresh && o.allowed && cost > 0;
                next.push(s);
            } else {
                seen.push(want);
            }
        }
        if next.is_empty() {
            fail!(self.story, "the library decided {d:?}; the algorithms, on the states the key may have: {seen:?}");
        }
        next.sort();
        next.dedup();
        self.keys[key].states = next;
        if inserted {
            // A new key may take the slot of another one that has expired.
            self.may_drop(Some(key), false);
        }
        if d.allowed == 1 && cost > 0 {
            self.admitted(key, cost);
        }
    }

    /// Records an admission and checks the key's rates were not exceeded.
    fn admitted(&mut self, key: usize, cost: u64) {
        let k = &mut self.keys[key];
        let t = k.admitted.last().map_or(self.now, |&(t, _)| t.max(self.now));
        if k.admitted.len() >= 256 {
            k.admitted.remove(0);
        }
        k.admitted.push((t, cost));
        for rate in &self.rates {
            let mut sum: u64 = 0;
            for &(ti, ci) in k.admitted.iter().rev() {
                sum = sum.saturating_add(ci);
                let bound = match rate.algorithm {
                    Algorithm::TokenBucket => rate.burst.saturating_add((t - ti) / rate.interval),
                    Algorithm::FixedWindow if ti - ti % rate.period == t - t % rate.period => rate.limit,
                    Algorithm::SlidingWindow if t - ti < rate.period => 2 * rate.limit,
                    _ => break,
                };
                if sum > bound {
                    fail!(self.story, "admitted {sum} units in [{ti}, {t}] of key {key}, more than {bound} ({rate:?})");
                }
            }
        }
    }
}

fn last_error() -> String {
    // SAFETY: rl_last_error returns a NUL-terminated string, never NULL.
    unsafe { std::ffi::CStr::from_ptr(rl_last_error()) }.to_string_lossy().into_owned()
}

static SHM_NAME: LazyLock<String> = LazyLock::new(|| format!("/rl-fuzz-api-{}", std::process::id()));

fn unlink_region() {
    let name = std::ffi::CString::new(SHM_NAME.as_str()).unwrap();
    rl_shm_unlink(name.as_ptr());
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.byte();
    let rates_text = RATES[input.byte() as usize % RATES.len()];
    let shm = setup & 1 != 0;
    // Mostly roomy; sometimes a tiny table that must evict (then only the
    // decisions' own invariants are checked).
    let exact = setup & 6 != 0;
    let capacity = if exact { ROOMY } else { 1 + u64::from(setup >> 3) % 4 };
    let backend = if shm {
        unlink_region();
        format!("backend=shm name={} timeout_ms=1000", *SHM_NAME)
    } else {
        "backend=memory".to_string()
    };
    let config_text = format!("{rates_text} {backend} capacity={capacity}");
    let rates = rates_in_ns(&Config::parse(&config_text).expect("the harness's configurations are valid"));
    let mut now = 1_700_000_000_000_000_000 + (input.u64() >> 30);
    fuzz_set_now(now);

    let config = std::ffi::CString::new(config_text.clone()).unwrap();
    let mut lim = std::ptr::null_mut();
    let rc = rl_create(config.as_ptr(), &mut lim);
    if rc != RL_OK {
        eprintln!("api: rl_create({config_text:?}) = {rc}: {}", last_error());
        std::process::abort();
    }
    let n = rates.iter().map(Rate::words).sum();
    let mut run = Run {
        rates,
        exact,
        lim,
        now,
        keys: (0..KEYS.len()).map(|_| KeyModel { states: vec![vec![0; n]], admitted: Vec::new() }).collect(),
        allowed: 0,
        limited: 0,
        last: rl_decision::default(),
        story: vec![Step::Create(config_text.clone(), now)],
    };

    while !input.0.is_empty() {
        let op = input.byte();
        match op % 16 {
            // Checks (most operations).
            0..=6 => {
                let key = (op >> 4) as usize % KEYS.len();
                let quota = run.rates.iter().map(Rate::quota).min().unwrap();
                let c = input.byte();
                let cost = match c % 10 {
                    0 => 0,
                    1 | 2 | 3 => 1,
                    4 => 2,
                    5 => quota,
                    6 => quota + 1,
                    7 => u64::from(c >> 4),
                    8 => u64::MAX >> (c >> 2),
                    _ => input.u64(),
                };
                run.story.push(Step::Check(key, cost, run.now));
                run.check(key, cost);
            }
            // Clock steps: forward, backward, by small or any amounts.
            7..=10 => {
                let b = input.byte();
                let period = run.rates[b as usize % run.rates.len()].period;
                let amount = match b >> 5 {
                    0 => u64::from(input.byte()),
                    1 => u64::from(input.byte()) * 1_000,
                    2 => u64::from(input.byte()) * 1_000_000,
                    3 => u64::from(input.byte()) * 1_000_000_000,
                    4 => period,
                    5 => period / 2 + u64::from(input.byte()),
                    6 => run.rates[0].interval.max(1) * u64::from(input.byte() & 7),
                    _ => input.u64() >> (input.byte() & 63),
                };
                now = if op % 16 <= 8 {
                    now.saturating_add(amount).min(MAX_NOW)
                } else {
                    now.saturating_sub(amount).max(1)
                };
                run.now = now;
                fuzz_set_now(now);
                run.story.push(Step::Clock(now, op % 16 <= 8, amount));
            }
            11 => {
                let key = (op >> 4) as usize % KEYS.len();
                let bytes = &KEYS[key];
                run.story.push(Step::Reset(key));
                let rc = rl_reset(run.lim, bytes.as_ptr().cast(), bytes.len());
                if rc != RL_OK {
                    fail!(run.story, "rl_reset = {rc}: {}", last_error());
                }
                run.keys[key] = KeyModel { states: vec![vec![0; n]], admitted: Vec::new() };
            }
            12 => {
                run.story.push(Step::Sweep(run.now));
                let swept = rl_sweep(run.lim);
                if swept < 0 {
                    fail!(run.story, "rl_sweep = {swept}: {}", last_error());
                }
                if run.exact {
                    let (rates, now) = (run.rates.clone(), run.now);
                    let certain = run.keys.iter().all(|k| k.states.len() == 1);
                    let expect = run
                        .keys
                        .iter()
                        .filter(|k| {
                            let s = &k.states[0];
                            s.iter().any(|&w| w != 0) && fresh_at_all(&rates, s) <= now
                        })
                        .count() as i64;
                    if certain && swept != expect {
                        fail!(run.story, "rl_sweep dropped {swept} entries, {expect} had expired");
                    }
                    run.may_drop(None, true);
                }
            }
            13 => {
                let mut s = rl_stats { allowed: 7, limited: 7, errors: 7, keys: 7, evictions: 7, local_denials: 7 };
                let rc = rl_stats_get(run.lim, &mut s);
                run.story.push(Step::Stats(rc, s));
                if rc != RL_OK {
                    fail!(run.story, "rl_stats_get = {rc}: {}", last_error());
                }
                if s.allowed != run.allowed || s.limited != run.limited || s.errors != 0 {
                    fail!(
                        run.story,
                        "stats count {s:?}; the checks answered {} allowed, {} limited",
                        run.allowed,
                        run.limited
                    );
                }
                if s.keys > capacity {
                    fail!(run.story, "{} keys tracked at capacity {capacity}", s.keys);
                }
                if run.exact {
                    let stored = |k: &KeyModel| k.states.iter().any(|s| s.iter().any(|&w| w != 0));
                    let surely = |k: &KeyModel| k.states.iter().all(|s| s.iter().any(|&w| w != 0));
                    let (lo, hi) = (
                        run.keys.iter().filter(|k| surely(k)).count() as u64,
                        run.keys.iter().filter(|k| stored(k)).count() as u64,
                    );
                    if s.keys < lo || s.keys > hi || s.evictions != 0 {
                        fail!(run.story, "stats {s:?}: {lo}..={hi} keys are stored, none evicted");
                    }
                }
            }
            14 => {
                // The last decision as headers.
                let mut buf = [0u8; 600];
                let flags = u32::from(input.byte() & 7);
                let last = run.last;
                let got = rl_format_headers(&last, flags, buf.as_mut_ptr().cast(), buf.len());
                if !(0..512).contains(&got) {
                    fail!(run.story, "rl_format_headers({last:?}, {flags}) = {got}");
                }
            }
            _ => {
                // Bad arguments: an error status, `*out` a denial, nothing consumed.
                let kind = input.byte() % 3;
                let mut d = SENTINEL;
                let rc = match kind {
                    0 => rl_check(run.lim, std::ptr::null(), 1 + usize::from(op >> 4), 1, &mut d),
                    1 => rl_check(std::ptr::null_mut(), b"a".as_ptr().cast(), 1, 1, &mut d),
                    _ => rl_check(run.lim, b"a".as_ptr().cast(), 1, 1, std::ptr::null_mut()),
                };
                run.story.push(Step::BadArgument(kind, rc, d));
                if rc != RL_ERR_NULL && rc != RL_ERR_INVALID {
                    fail!(run.story, "status {rc} for a bad argument");
                }
                if kind != 2 && (fields(&d) == fields(&SENTINEL) || d.allowed != 0 || d.retry_after_ms == 0) {
                    fail!(run.story, "a bad argument must be answered with a denial in *out: {d:?}");
                }
                continue;
            }
        }
    }
    rl_destroy(run.lim);
    if shm {
        unlink_region();
    }
});
