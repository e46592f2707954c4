//! The AI-quota calls of the C API (rl_adjust; rl_acquire, rl_renew,
//! rl_release) driven by arbitrary sequences of operations, on a clock the
//! harness sets (forward and backward by any amount, or onto the instant a
//! state or a lease ends), for the memory and shm backends, checked against
//! a model kept here at the same clock readings.
//!
//! The first byte picks the backend (memory or shm) and the kind of limiter:
//!
//! - A rate limiter (token bucket, fixed or sliding window; one rate or
//!   several; bursts): checks with costs around the quota interleaved with
//!   rl_adjust of deltas around it (0, +-1, +-quota, +-(quota + 1), INT64_MIN,
//!   INT64_MAX, any). The library's decisions must be exactly those of the
//!   pure algorithms (`check_all`, `adjust_all`) on per-key states kept here.
//!   Besides, after every adjust, as the header promises: `*out` is written,
//!   `allowed` is 0 or 1 and is 1 exactly when `retry_after_ms` is 0,
//!   `remaining <= limit`, `limit` and `window_ms` are those of the deciding
//!   rate, and the key afterwards is what `*out` says: a cost-1 check at the
//!   same reading is allowed exactly when `allowed` (with the same
//!   `retry_after_ms` and deciding rate when not), and when allowed a peek
//!   reports the same rate, `remaining` and `reset_ms`. (A refund of
//!   INT64_MIN need not leave a key full: charges saturate, so a key charged
//!   INT64_MAX and then some owes more than 2^63 units.)
//!
//! - A concurrency limiter (`concurrency=N lease=D`, N in 1..=16, D from 5 ms
//!   to 2 s): rl_acquire, rl_renew and rl_release with ids that are held,
//!   released, expired, forged, 0, or another key's. The model is, per key,
//!   its N lease places, each free or holding (id, end), where a lease taken
//!   or renewed at reading `now` ends at `ceil((now + D) / 2^20) * 2^20` (the
//!   unit leases.rs keeps expiries in). A lease is held at a reading when it
//!   ends after it. At every call: an acquire is allowed exactly when fewer
//!   than N are held at that reading; allowed, its id is nonzero and differs
//!   from every held one; denied, the id is 0; `limit` = N, `remaining` =
//!   N - held afterwards, `retry_after_ms` = until the earliest held lease
//!   ends (rounded up), `reset_ms` = until the last one ends, `window_ms` = D;
//!   rl_release and rl_renew return 1 exactly when the model holds that id
//!   at that reading; never more than N are held.
//!
//!   Which place an allowed acquire took is read from the id (bits 32..41,
//!   the layout leases.rs documents), and it must be a place not held at
//!   that reading. The model needs it for the clock stepping back: leases.rs
//!   decides at the reading it is given, so a lease that ended but was
//!   neither released nor overwritten by a later acquire of its place is
//!   held again at a reading before its end, and a renew at such a reading
//!   sets its end from that reading, earlier than before (the model does
//!   the same). A released lease is gone for good, even an expired one
//!   (release clears its place either way, returning 0 for it).
//!
//! - Bad arguments on both kinds: NULL `out`, NULL `lease`, NULL key with a
//!   length, NULL handle are RL_ERR_NULL; an operation of the other kind
//!   (rl_check or rl_adjust on a concurrency limiter; rl_acquire, rl_renew,
//!   rl_release on a rate limiter) is RL_ERR_INVALID. Where there is a
//!   `*out` it holds a denial (`allowed` 0, `retry_after_ms` 1000, `limit` and
//!   `window_ms` of the limiter's first rate or its N and D, 0 without a
//!   handle); where there is a `*lease` it is 0. Nothing is consumed (the
//!   model is unchanged, and the next calls must still agree with it) and
//!   nothing is counted in rl_stats.
//!
//! rl_reset, rl_sweep and rl_stats_get run in between: a reset key is fresh;
//! a sweep drops exactly the keys whose state has expired at its reading;
//! stats count the checks and acquires the harness saw (adjust, renew and
//! release are not counted), no errors, no evictions, and as many keys as
//! the model may hold.
//!
//! A key whose state has expired may be dropped by the table (a sweep, or a
//! new key reusing its slot): expiry is judged at the reading of that moment,
//! so if the clock then steps back before it, the kept state and the fresh
//! one may both be right. As the api target does, the model then keeps both
//! possible states of the key and accepts an answer that either gives,
//! keeping the states that gave it.
//!
//! Clock readings stay below 2^62 - 2^36 ns (leases.rs stores expiries up to
//! 2^62 ns, the year 2116; the algorithms assume readings below 2^62).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ratelimit::algorithm::{adjust_all, check_all, fresh_at_all, Rate, Verdict};
use ratelimit::clock::fuzz_set_now;
use ratelimit::config::Config;
use ratelimit::ffi::*;
use ratelimit::limiter::rates_in_ns;

/// Rates and algorithms the input chooses from: the api target's, and
/// token-style quotas (large limits, per minute or day).
const RATES: &[&str] = &[
    "rate=5/s",
    "rate=10/s burst=3",
    "rate=2/s burst=40",
    "rate=3/100ms,20/s,100/min",
    "rate=7/3s burst=1",
    "rate=1000/1000d burst=5",
    "rate=100000/min",
    "rate=60/min,1000000/d",
    "rate=5/s algorithm=fixed_window",
    "rate=3/100ms,10/s algorithm=fixed_window",
    "rate=40000/min algorithm=fixed_window",
    "rate=5/s algorithm=sliding_window",
    "rate=4/250ms,30/10s algorithm=sliding_window",
    "rate=90000/min,1000000/d algorithm=sliding_window",
    "rate=1/ms,2/s,3/min,4/h,5/d algorithm=sliding_window",
    "rate=1/ms,2/s,3/min,4/h,5/d",
];

/// Lease lengths (milliseconds) a concurrency limiter chooses from.
const LEASES_MS: &[u64] = &[5, 7, 10, 50, 100, 250, 1000, 1500, 2000];

/// Enough room for every key: the table never evicts, and the library must
/// agree exactly with the model.
const ROOMY: u64 = 64;

/// A lease's end is kept in units of 2^20 ns, rounded up (leases.rs).
const UNIT: u64 = 1 << 20;
/// The latest end a lease can have, in units (42 bits).
const MAX_END_UNITS: u64 = (1 << 42) - 1;

/// The highest clock reading the harness uses.
const MAX_NOW: u64 = (1 << 62) - (1 << 36);

/// `retry_after_ms` of a decision that comes with an argument error (the header).
const ARGUMENT_RETRY_MS: u64 = 1000;

static KEYS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        b"".to_vec(),
        b"user:1".to_vec(),
        b"\0".to_vec(),
        b"\xff\xfe\x00\x01\r\n".to_vec(),
        vec![b'x'; 64],
        vec![b'k'; 1000],
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

/// What `*lease` holds before a call, to see whether it was written.
const LEASE_SENTINEL: u64 = 0x5A5A_5A5A_5A5A_5A5A;

type Fields = (u32, u32, u64, u64, u64, u64, u64);

fn fields(d: &rl_decision) -> Fields {
    (d.allowed, d.rate_index, d.limit, d.remaining, d.reset_ms, d.retry_after_ms, d.window_ms)
}

/// Reports a broken promise with the whole story, then aborts (the library's
/// panic hook may be silent, so the message is printed first).
macro_rules! fail {
    ($story:expr, $($arg:tt)*) => {{
        let story: Vec<String> = $story.iter().map(ToString::to_string).collect();
        eprintln!("quotas: {}\n--- operations:\n{}", format!($($arg)*), story.join("\n"));
        std::process::abort();
    }};
}

/// One step of the story told when a promise breaks, formatted only then.
enum Step {
    Create(String, u64),
    Check(usize, u64),
    Adjust(usize, i64),
    Acquire(usize),
    Renew(usize, u64),
    Release(usize, u64),
    Decided(i32, rl_decision),
    Acquired(i32, u64, rl_decision),
    Returned(i32),
    Clock(u64),
    Reset(usize),
    Sweep(u64, i64),
    Stats(i32, rl_stats),
    BadArgument(u8, i32, rl_decision, u64),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Create(config, now) => write!(f, "rl_create({config:?}) at {now}"),
            Step::Check(key, cost) => write!(f, "check key {key} cost {cost}"),
            Step::Adjust(key, delta) => write!(f, "adjust key {key} delta {delta}"),
            Step::Acquire(key) => write!(f, "acquire key {key}"),
            Step::Renew(key, id) => write!(f, "renew key {key} id {id:#x}"),
            Step::Release(key, id) => write!(f, "release key {key} id {id:#x}"),
            Step::Decided(rc, d) => write!(f, "  -> {rc} {d:?}"),
            Step::Acquired(rc, id, d) => write!(f, "  -> {rc} lease {id:#x} {d:?}"),
            Step::Returned(rc) => write!(f, "  -> {rc}"),
            Step::Clock(now) => write!(f, "clock {now}"),
            Step::Reset(key) => write!(f, "reset key {key}"),
            Step::Sweep(now, n) => write!(f, "sweep at {now} -> {n}"),
            Step::Stats(rc, s) => write!(f, "stats -> {rc} {s:?}"),
            Step::BadArgument(kind, rc, d, lease) => {
                write!(f, "bad argument {kind} -> {rc} {d:?} lease {lease:#x}")
            }
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

fn ceil_ms(ticks: u64) -> u64 {
    if ticks == u64::MAX {
        u64::MAX
    } else {
        ticks.div_ceil(1_000_000)
    }
}

fn last_error() -> String {
    // SAFETY: rl_last_error returns a NUL-terminated string, never NULL.
    unsafe { std::ffi::CStr::from_ptr(rl_last_error()) }.to_string_lossy().into_owned()
}

static SHM_NAME: LazyLock<String> = LazyLock::new(|| format!("/rl-fuzz-quotas-{}", std::process::id()));

fn unlink_region() {
    let name = std::ffi::CString::new(SHM_NAME.as_str()).unwrap();
    rl_shm_unlink(name.as_ptr());
}

/// One state a key may have in the library: whether the table stores it,
/// and its words (the states of its rates) or its lease places.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Possible<S> {
    stored: bool,
    state: S,
}

/// A key's lease places: free, or holding (id, end).
type Places = Vec<Option<(u64, u64)>>;

/// What the library may hold for every key.
struct Model<S> {
    keys: Vec<Vec<Possible<S>>>,
    fresh: S,
}

impl<S: Clone + Ord> Model<S> {
    fn new(fresh: S) -> Model<S> {
        let keys = (0..KEYS.len()).map(|_| vec![Possible { stored: false, state: fresh.clone() }]).collect();
        Model { keys, fresh }
    }

    /// Forgets what the table may have dropped: every stored state that has
    /// `expired` (all of them when `certain`, then only the dropped one is kept).
    fn may_drop(&mut self, skip: Option<usize>, certain: bool, expired: impl Fn(&S) -> bool) {
        for (i, k) in self.keys.iter_mut().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let mut next = Vec::new();
            for p in k.drain(..) {
                let gone = p.stored && expired(&p.state);
                if gone {
                    next.push(Possible { stored: false, state: self.fresh.clone() });
                }
                if !gone || !certain {
                    next.push(p);
                }
            }
            next.sort();
            next.dedup();
            *k = next;
        }
    }

    fn reset(&mut self, key: usize) {
        self.keys[key] = vec![Possible { stored: false, state: self.fresh.clone() }];
    }

    /// Keys surely stored, and keys that may be.
    fn stored_bounds(&self) -> (u64, u64) {
        let lo = self.keys.iter().filter(|k| k.iter().all(|p| p.stored)).count() as u64;
        let hi = self.keys.iter().filter(|k| k.iter().any(|p| p.stored)).count() as u64;
        (lo, hi)
    }

    /// Keys whose stored state surely / may have expired.
    fn expired_bounds(&self, expired: impl Fn(&S) -> bool) -> (i64, i64) {
        let gone = |p: &Possible<S>| p.stored && expired(&p.state);
        let lo = self.keys.iter().filter(|k| k.iter().all(gone)).count() as i64;
        let hi = self.keys.iter().filter(|k| k.iter().any(gone)).count() as i64;
        (lo, hi)
    }
}

struct Run<S> {
    lim: *mut rl_limiter,
    now: u64,
    capacity: u64,
    model: Model<S>,
    /// Checks and acquires answered allowed / denied.
    allowed: u64,
    limited: u64,
    /// Counts calls, to pass the empty key as NULL every other time.
    calls: u64,
    story: Vec<Step>,
}

impl<S: Clone + Ord> Run<S> {
    /// The key's bytes as the C API takes them (the empty key as NULL every other time).
    fn key(&mut self, key: usize) -> (*const std::ffi::c_void, usize) {
        self.calls += 1;
        let bytes = &KEYS[key];
        if bytes.is_empty() && self.calls.is_multiple_of(2) {
            (std::ptr::null(), 0)
        } else {
            (bytes.as_ptr().cast(), bytes.len())
        }
    }

    /// Moves the clock: forward or back by `amount`, or onto one of `marks`
    /// (instants where some state ends) give or take a tick.
    fn step_clock(&mut self, input: &mut Input, op: u8, scale: u64, marks: &[u64]) {
        let b = input.byte();
        let amount = match b >> 5 {
            0 => u64::from(input.byte()),
            1 => u64::from(input.byte()) * 1_000,
            2 => u64::from(input.byte()) * 1_000_000,
            3 => u64::from(input.byte()) * 1_000_000_000,
            4 => scale,
            5 => scale / 2 + u64::from(input.byte()),
            6 => UNIT * u64::from(b & 7) + u64::from(input.byte() & 3),
            _ => input.u64() >> (input.byte() & 63),
        };
        let now = match op % 4 {
            0 | 1 => self.now.saturating_add(amount),
            2 => self.now.saturating_sub(amount),
            _ if !marks.is_empty() => {
                let mark = marks[usize::from(b) % marks.len()];
                mark.saturating_add(u64::from(b >> 6) % 3).saturating_sub(1)
            }
            _ => self.now.saturating_add(amount),
        };
        self.now = now.clamp(1, MAX_NOW);
        fuzz_set_now(self.now);
        self.story.push(Step::Clock(self.now));
    }

    fn reset(&mut self, key: usize) {
        let (ptr, len) = self.key(key);
        self.story.push(Step::Reset(key));
        let rc = rl_reset(self.lim, ptr, len);
        if rc != RL_OK {
            fail!(self.story, "rl_reset = {rc}: {}", last_error());
        }
        self.model.reset(key);
    }

    fn sweep(&mut self, expired: impl Fn(&S) -> bool) {
        let swept = rl_sweep(self.lim);
        self.story.push(Step::Sweep(self.now, swept));
        if swept < 0 {
            fail!(self.story, "rl_sweep = {swept}: {}", last_error());
        }
        let (lo, hi) = self.model.expired_bounds(&expired);
        if swept < lo || swept > hi {
            fail!(self.story, "rl_sweep dropped {swept} entries; {lo}..={hi} had expired");
        }
        self.model.may_drop(None, true, &expired);
    }

    fn stats(&mut self) {
        let mut s = rl_stats { allowed: 7, limited: 7, errors: 7, keys: 7, evictions: 7, local_denials: 7 };
        let rc = rl_stats_get(self.lim, &mut s);
        self.story.push(Step::Stats(rc, s));
        if rc != RL_OK {
            fail!(self.story, "rl_stats_get = {rc}: {}", last_error());
        }
        if s.allowed != self.allowed || s.limited != self.limited || s.errors != 0 || s.local_denials != 0 {
            fail!(self.story, "stats {s:?}; the calls answered {} allowed, {} limited", self.allowed, self.limited);
        }
        let (lo, hi) = self.model.stored_bounds();
        if s.keys < lo || s.keys > hi || s.keys > self.capacity || s.evictions != 0 {
            fail!(self.story, "stats {s:?}: {lo}..={hi} keys are stored, none evicted");
        }
    }

    fn count(&mut self, d: &rl_decision) {
        if d.allowed == 1 {
            self.allowed += 1;
        } else {
            self.limited += 1;
        }
    }

    /// The denial that comes with an argument error.
    fn expect_argument_denial(&self, what: &str, d: &rl_decision, limit: u64, window_ms: u64) {
        let want = rl_decision {
            allowed: 0,
            rate_index: 0,
            limit,
            remaining: 0,
            reset_ms: 0,
            retry_after_ms: ARGUMENT_RETRY_MS,
            window_ms,
        };
        if fields(d) != fields(&want) {
            fail!(self.story, "{what}: *out is {d:?}, the header promises the denial {want:?}");
        }
    }
}

// ---- rate limiters -------------------------------------------------------

type Words = Vec<u64>;

fn rate_decision(rates: &[Rate], v: &Verdict) -> rl_decision {
    let o = v.outcome;
    rl_decision {
        allowed: o.allowed as u32,
        rate_index: v.index as u32,
        limit: o.limit,
        remaining: o.remaining,
        reset_ms: ceil_ms(o.reset),
        retry_after_ms: if o.allowed { 0 } else { ceil_ms(o.retry_after) },
        window_ms: rates[v.index].period / 1_000_000,
    }
}

struct Rates {
    rates: Vec<Rate>,
    run: Run<Words>,
}

impl Rates {
    /// The promises every decision keeps.
    fn well_formed(&self, what: &str, d: &rl_decision) {
        let story = &self.run.story;
        let Some(rate) = self.rates.get(d.rate_index as usize) else {
            fail!(story, "{what}: rate_index {} of {} rates", d.rate_index, self.rates.len())
        };
        if d.allowed > 1 || d.remaining > d.limit {
            fail!(story, "{what}: allowed {} remaining {} limit {}", d.allowed, d.remaining, d.limit);
        }
        if d.limit != rate.quota() || d.window_ms != rate.period / 1_000_000 {
            fail!(story, "{what}: limit/window_ms are not those of rate {}: {d:?}", d.rate_index);
        }
        if (d.allowed == 1) != (d.retry_after_ms == 0) {
            fail!(story, "{what}: retry_after_ms {} with allowed {}", d.retry_after_ms, d.allowed);
        }
    }

    fn check(&mut self, key: usize, cost: u64) {
        let (ptr, len) = self.run.key(key);
        self.run.story.push(Step::Check(key, cost));
        let mut d = SENTINEL;
        let rc = rl_check(self.run.lim, ptr, len, cost, &mut d);
        self.run.story.push(Step::Decided(rc, d));
        if rc != RL_OK || fields(&d) == fields(&SENTINEL) {
            fail!(self.run.story, "rl_check = {rc} ({}), *out {d:?}", last_error());
        }
        self.well_formed("rl_check", &d);
        if cost == 0 && d.allowed == 0 {
            fail!(self.run.story, "a peek (cost 0) was denied: {d:?}");
        }
        self.run.count(&d);
        let (rates, now) = (&self.rates, self.run.now);
        let mut next = Vec::new();
        let mut seen = Vec::new();
        let mut inserted = false;
        for p in &self.run.model.keys[key] {
            let mut p = p.clone();
            let v = check_all(rates, &mut p.state, now, cost);
            let want = rate_decision(rates, &v);
            if fields(&want) == fields(&d) {
                if !p.stored && v.outcome.allowed && cost > 0 {
                    p.stored = true;
                    inserted = true;
                }
                next.push(p);
            } else {
                seen.push(want);
            }
        }
        self.agree(key, next, &d, &seen, inserted);
    }

    /// Keeps the key's states that gave the library's answer (there must be
    /// one); a new key may take the slot of another one that has expired.
    fn agree(
        &mut self,
        key: usize,
        mut next: Vec<Possible<Words>>,
        d: &rl_decision,
        seen: &[rl_decision],
        inserted: bool,
    ) {
        if next.is_empty() {
            fail!(
                self.run.story,
                "the library decided {d:?}; the algorithms, on the states the key may have: {seen:?}"
            );
        }
        next.sort();
        next.dedup();
        self.run.model.keys[key] = next;
        if inserted {
            let (rates, now) = (self.rates.clone(), self.run.now);
            self.run.model.may_drop(Some(key), false, move |w| fresh_at_all(&rates, w) <= now);
        }
    }

    fn adjust(&mut self, key: usize, delta: i64) {
        let (ptr, len) = self.run.key(key);
        self.run.story.push(Step::Adjust(key, delta));
        let mut d = SENTINEL;
        let rc = rl_adjust(self.run.lim, ptr, len, delta, &mut d);
        self.run.story.push(Step::Decided(rc, d));
        if rc != RL_OK || fields(&d) == fields(&SENTINEL) {
            fail!(self.run.story, "rl_adjust = {rc} ({}), *out {d:?}", last_error());
        }
        self.well_formed("rl_adjust", &d);
        let (rates, now) = (&self.rates, self.run.now);
        let mut next = Vec::new();
        let mut seen = Vec::new();
        let mut inserted = false;
        for p in &self.run.model.keys[key] {
            let mut p = p.clone();
            let (v, changed) = adjust_all(rates, &mut p.state, now, delta);
            let want = rate_decision(rates, &v);
            if fields(&want) != fields(&d) {
                seen.push(want);
                continue;
            }
            // The key is what *out says: a cost-1 check passes exactly when
            // allowed; a peek reports the same rate and units when it does.
            let one = rate_decision(rates, &check_all(rates, &mut p.state.clone(), now, 1));
            let peek = rate_decision(rates, &check_all(rates, &mut p.state.clone(), now, 0));
            let same = if d.allowed == 1 {
                one.allowed == 1
                    && (peek.rate_index, peek.remaining, peek.reset_ms) == (d.rate_index, d.remaining, d.reset_ms)
            } else {
                (one.allowed, one.rate_index, one.retry_after_ms) == (0, d.rate_index, d.retry_after_ms)
            };
            if !same {
                fail!(
                    self.run.story,
                    "rl_adjust said {d:?}, but on the key's state a cost-1 check decides {one:?} and a peek {peek:?}"
                );
            }
            if !p.stored && changed {
                p.stored = true;
                inserted = true;
            }
            next.push(p);
        }
        self.agree(key, next, &d, &seen, inserted);
    }

    fn bad_argument(&mut self, input: &mut Input, op: u8) {
        let kind = input.byte() % 7;
        let (limit, window_ms) = (self.rates[0].quota(), self.rates[0].period / 1_000_000);
        let (key, len) = (b"a".as_ptr().cast(), 1);
        let mut d = SENTINEL;
        let mut lease = LEASE_SENTINEL;
        let lim = self.run.lim;
        let (rc, want) = match kind {
            0 => (rl_adjust(lim, std::ptr::null(), 1 + usize::from(op >> 4), 1, &mut d), RL_ERR_NULL),
            1 => (rl_adjust(std::ptr::null_mut(), key, len, 1, &mut d), RL_ERR_NULL),
            2 => (rl_adjust(lim, key, len, 1, std::ptr::null_mut()), RL_ERR_NULL),
            3 => (rl_acquire(lim, key, len, &mut lease, &mut d), RL_ERR_INVALID),
            4 => (rl_renew(lim, key, len, 1), RL_ERR_INVALID),
            5 => (rl_release(lim, key, len, 1), RL_ERR_INVALID),
            _ => (rl_adjust(lim, key, len, i64::MIN, std::ptr::null_mut()), RL_ERR_NULL),
        };
        self.run.story.push(Step::BadArgument(kind, rc, d, lease));
        if rc != want {
            fail!(self.run.story, "bad argument {kind}: status {rc}, want {want} ({})", last_error());
        }
        match kind {
            0 | 3 => self.run.expect_argument_denial("bad argument", &d, limit, window_ms),
            1 => self.run.expect_argument_denial("bad argument", &d, 0, 0),
            _ => {}
        }
        if kind == 3 && lease != 0 {
            fail!(self.run.story, "rl_acquire on a rate limiter left *lease = {lease:#x}, not 0");
        }
    }

    fn run(&mut self, input: &mut Input) {
        while !input.0.is_empty() {
            let op = input.byte();
            let key = usize::from(op >> 4) % KEYS.len();
            let quota = self.rates.iter().map(Rate::quota).min().unwrap();
            match op % 16 {
                0..=4 => {
                    let c = input.byte();
                    let cost = match c % 10 {
                        0 => 0,
                        1 | 2 => 1,
                        3 => 2,
                        4 => quota,
                        5 => quota + 1,
                        6 => quota - 1,
                        7 => u64::from(c >> 4),
                        8 => u64::MAX >> (c >> 2),
                        _ => input.u64(),
                    };
                    self.check(key, cost);
                }
                5..=8 => {
                    let c = input.byte();
                    let q = quota.min(i64::MAX as u64) as i64;
                    let delta = match c % 13 {
                        0 => 0,
                        1 | 2 => 1,
                        3 | 4 => -1,
                        5 => q,
                        6 => -q,
                        7 => q.saturating_add(1),
                        8 => -q.saturating_add(1),
                        9 => i64::MIN,
                        10 => i64::MAX,
                        11 => i64::from(c as i8 >> 1),
                        _ => input.u64() as i64 >> (c >> 2),
                    };
                    self.adjust(key, delta);
                }
                9..=12 => {
                    let scale = self.rates[usize::from(op >> 4) % self.rates.len()].period;
                    let marks: Vec<u64> = self
                        .run
                        .model
                        .keys
                        .iter()
                        .flatten()
                        .map(|p| fresh_at_all(&self.rates, &p.state))
                        .filter(|&t| t != 0)
                        .collect();
                    self.run.step_clock(input, op - 9, scale, &marks);
                }
                13 => self.run.reset(key),
                14 if op & 0x10 == 0 => {
                    let (rates, now) = (self.rates.clone(), self.run.now);
                    self.run.sweep(move |w| fresh_at_all(&rates, w) <= now);
                }
                14 => self.run.stats(),
                _ => self.bad_argument(input, op),
            }
        }
    }
}

// ---- concurrency limiters -------------------------------------------------

/// When a lease taken or renewed at `now` ends (leases.rs: rounded up to a unit).
fn lease_end(now: u64, lease: u64) -> u64 {
    now.saturating_add(lease).div_ceil(UNIT).min(MAX_END_UNITS) * UNIT
}

/// The held leases' ends at `now`.
fn held_ends(places: &Places, now: u64) -> impl Iterator<Item = u64> + '_ {
    places.iter().flatten().map(|&(_, end)| end).filter(move |&end| end > now)
}

/// When every lease of the key has ended (0: none is kept).
fn leases_fresh_at(places: &Places) -> u64 {
    places.iter().flatten().map(|&(_, end)| end).max().unwrap_or(0)
}

struct Conc {
    slots: usize,
    lease_ns: u64,
    run: Run<Places>,
    /// Ids handed out (any key, latest last; at most 64).
    history: Vec<u64>,
}

impl Conc {
    fn acquire(&mut self, key: usize) {
        let (ptr, len) = self.run.key(key);
        self.run.story.push(Step::Acquire(key));
        let mut d = SENTINEL;
        let mut id = LEASE_SENTINEL;
        let rc = rl_acquire(self.run.lim, ptr, len, &mut id, &mut d);
        self.run.story.push(Step::Acquired(rc, id, d));
        if rc != RL_OK || fields(&d) == fields(&SENTINEL) || id == LEASE_SENTINEL {
            fail!(self.run.story, "rl_acquire = {rc} ({}), *out {d:?}, *lease {id:#x}", last_error());
        }
        let (n, now, lease_ms) = (self.slots as u64, self.run.now, self.lease_ns / 1_000_000);
        if d.allowed > 1
            || (d.allowed == 1) != (id != 0)
            || (d.allowed == 1) != (d.retry_after_ms == 0)
            || (d.rate_index, d.limit, d.window_ms) != (0, n, lease_ms)
            || d.remaining > n
        {
            fail!(self.run.story, "rl_acquire: a malformed answer: lease {id:#x} {d:?} (N {n}, lease {lease_ms} ms)");
        }
        self.run.count(&d);
        let end = lease_end(now, self.lease_ns);
        let place = ((id >> 32) & 0x3ff) as usize;
        let mut next = Vec::new();
        let mut seen = Vec::new();
        let mut inserted = false;
        for p in &self.run.model.keys[key] {
            let held = held_ends(&p.state, now).count();
            let mut q = p.clone();
            let allowed = held < self.slots;
            if allowed {
                if id == 0 || place >= self.slots {
                    seen.push(format!("{held} held: allowed, a nonzero id naming a place below {n}"));
                    continue;
                }
                if let Some((_, e)) = q.state[place] {
                    if e > now {
                        seen.push(format!("{held} held: place {place} is held until {e}"));
                        continue;
                    }
                }
                if q.state.iter().flatten().any(|&(other, e)| other == id && e > now) {
                    seen.push(format!("{held} held: {id:#x} is held already"));
                    continue;
                }
                q.state[place] = Some((id, end));
                if !q.stored {
                    q.stored = true;
                    inserted = true;
                }
            } else if id != 0 {
                seen.push(format!("{held} held: denied"));
                continue;
            }
            let ends: Vec<u64> = held_ends(&q.state, now).collect();
            let want = rl_decision {
                allowed: allowed as u32,
                rate_index: 0,
                limit: n,
                remaining: n - ends.len() as u64,
                reset_ms: ceil_ms(ends.iter().max().map_or(0, |e| e - now)),
                retry_after_ms: if allowed { 0 } else { ceil_ms(ends.iter().min().unwrap() - now) },
                window_ms: lease_ms,
            };
            if fields(&want) != fields(&d) {
                seen.push(format!("{want:?}"));
                continue;
            }
            if allowed && ends.len() != held + 1 {
                fail!(self.run.story, "an allowed acquire holds no lease: {d:?}, ends {ends:?}");
            }
            next.push(q);
        }
        self.agree(key, next, &format!("lease {id:#x} {d:?}"), &seen, inserted);
        if id != 0 {
            if self.history.len() >= 64 {
                self.history.remove(0);
            }
            self.history.push(id);
        }
    }

    fn agree(&mut self, key: usize, mut next: Vec<Possible<Places>>, got: &str, seen: &[String], inserted: bool) {
        if next.is_empty() {
            let states: Vec<String> = self.run.model.keys[key].iter().map(|p| format!("{p:?}")).collect();
            fail!(
                self.run.story,
                "the library answered {got} at {}; the model, on the states the key may have ({}), answers {seen:?}",
                self.run.now,
                states.join("; ")
            );
        }
        next.sort();
        next.dedup();
        self.run.model.keys[key] = next;
        if inserted {
            let now = self.run.now;
            self.run.model.may_drop(Some(key), false, move |s| leases_fresh_at(s) <= now);
        }
    }

    /// An id to renew or release: held, of this key, handed out before (to
    /// any key; released, expired), 0, or forged.
    fn pick_id(&self, input: &mut Input, key: usize) -> u64 {
        let c = input.byte();
        let now = self.run.now;
        let of_key: Vec<(u64, u64)> =
            self.run.model.keys[key].iter().flat_map(|p| p.state.iter().flatten().copied()).collect();
        let held: Vec<u64> = of_key.iter().filter(|&&(_, e)| e > now).map(|&(id, _)| id).collect();
        let pick = |v: &[u64]| (!v.is_empty()).then(|| v[usize::from(c >> 3) % v.len()]);
        let any = pick(&self.history).unwrap_or(1 << 42);
        match c % 8 {
            0..=2 => pick(&held).unwrap_or(any),
            3 => pick(&of_key.iter().map(|&(id, _)| id).collect::<Vec<_>>()).unwrap_or(any),
            4 => any,
            5 => 0,
            6 => any ^ (1 << (input.byte() % 64)),
            _ => input.u64(),
        }
    }

    fn renew_or_release(&mut self, key: usize, id: u64, release: bool) {
        let (ptr, len) = self.run.key(key);
        let rc = if release {
            self.run.story.push(Step::Release(key, id));
            rl_release(self.run.lim, ptr, len, id)
        } else {
            self.run.story.push(Step::Renew(key, id));
            rl_renew(self.run.lim, ptr, len, id)
        };
        self.run.story.push(Step::Returned(rc));
        if rc != 0 && rc != 1 {
            fail!(self.run.story, "status {rc}: {}", last_error());
        }
        let now = self.run.now;
        let end = lease_end(now, self.lease_ns);
        let mut next = Vec::new();
        let mut seen = Vec::new();
        for p in &self.run.model.keys[key] {
            let mut q = p.clone();
            let at = q.state.iter().position(|e| matches!(e, Some((i, _)) if *i == id));
            let held = at.is_some_and(|i| q.state[i].unwrap().1 > now);
            if held as i32 != rc {
                seen.push(format!("{}", held as i32));
                continue;
            }
            match at {
                // Release frees its place, held or expired.
                Some(i) if release => q.state[i] = None,
                Some(i) if held => q.state[i] = Some((id, end)),
                _ => {}
            }
            next.push(q);
        }
        self.agree(key, next, &format!("{rc}"), &seen, false);
    }

    fn bad_argument(&mut self, input: &mut Input, op: u8) {
        let kind = input.byte() % 10;
        let (n, lease_ms) = (self.slots as u64, self.lease_ns / 1_000_000);
        let (key, len) = (b"a".as_ptr().cast(), 1);
        let null_key = std::ptr::null();
        let long = 1 + usize::from(op >> 4);
        let mut d = SENTINEL;
        let mut lease = LEASE_SENTINEL;
        let lim = self.run.lim;
        let null_lim = std::ptr::null_mut();
        let (rc, want) = match kind {
            0 => (rl_acquire(lim, key, len, std::ptr::null_mut(), &mut d), RL_ERR_NULL),
            1 => (rl_acquire(lim, key, len, &mut lease, std::ptr::null_mut()), RL_ERR_NULL),
            2 => (rl_acquire(lim, null_key, long, &mut lease, &mut d), RL_ERR_NULL),
            3 => (rl_acquire(null_lim, key, len, &mut lease, &mut d), RL_ERR_NULL),
            4 => (rl_renew(lim, null_key, long, 1), RL_ERR_NULL),
            5 => (rl_release(lim, null_key, long, 1), RL_ERR_NULL),
            6 => (rl_release(null_lim, key, len, 1), RL_ERR_NULL),
            7 => (rl_renew(null_lim, key, len, 1), RL_ERR_NULL),
            8 => (rl_check(lim, key, len, 1, &mut d), RL_ERR_INVALID),
            _ => (rl_adjust(lim, key, len, -1, &mut d), RL_ERR_INVALID),
        };
        self.run.story.push(Step::BadArgument(kind, rc, d, lease));
        if rc != want {
            fail!(self.run.story, "bad argument {kind}: status {rc}, want {want} ({})", last_error());
        }
        match kind {
            0 | 2 | 8 | 9 => self.run.expect_argument_denial("bad argument", &d, n, lease_ms),
            3 => self.run.expect_argument_denial("bad argument", &d, 0, 0),
            _ => {}
        }
        // The header: every error of rl_acquire "denies with *lease = 0".
        if matches!(kind, 1..=3) && lease != 0 {
            fail!(self.run.story, "rl_acquire with a bad argument ({kind}) left *lease = {lease:#x}, not 0");
        }
    }

    fn run(&mut self, input: &mut Input) {
        while !input.0.is_empty() {
            let op = input.byte();
            let key = usize::from(op >> 4) % KEYS.len();
            match op % 16 {
                0..=3 => self.acquire(key),
                4 | 5 => {
                    let id = self.pick_id(input, key);
                    self.renew_or_release(key, id, true);
                }
                6 | 7 => {
                    let id = self.pick_id(input, key);
                    self.renew_or_release(key, id, false);
                }
                8..=11 => {
                    let marks: Vec<u64> = self
                        .run
                        .model
                        .keys
                        .iter()
                        .flatten()
                        .flat_map(|p| p.state.iter().flatten().map(|&(_, end)| end))
                        .collect();
                    self.run.step_clock(input, op - 8, self.lease_ns, &marks);
                }
                12 => self.run.reset(key),
                13 => {
                    let now = self.run.now;
                    self.run.sweep(move |s| leases_fresh_at(s) <= now);
                }
                14 => self.run.stats(),
                _ => self.bad_argument(input, op),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.byte();
    let shm = setup & 1 != 0;
    let concurrency = setup & 2 != 0;
    let choice = input.byte();
    let limits = if concurrency {
        let n = 1 + usize::from(choice % 16);
        let lease_ms = LEASES_MS[usize::from(choice >> 4) % LEASES_MS.len()];
        format!("concurrency={n} lease={lease_ms}ms")
    } else {
        RATES[usize::from(choice) % RATES.len()].to_string()
    };
    let backend = if shm {
        unlink_region();
        format!("backend=shm name={} timeout_ms=1000", *SHM_NAME)
    } else {
        "backend=memory".to_string()
    };
    let config_text = format!("{limits} {backend} capacity={ROOMY}");
    let config = Config::parse(&config_text).expect("the harness's configurations are valid");
    let now = 1_700_000_000_000_000_000 + (input.u64() >> 30);
    fuzz_set_now(now);

    let c_config = std::ffi::CString::new(config_text.clone()).unwrap();
    let mut lim = std::ptr::null_mut();
    let rc = rl_create(c_config.as_ptr(), &mut lim);
    if rc != RL_OK {
        eprintln!("quotas: rl_create({config_text:?}) = {rc}: {}", last_error());
        std::process::abort();
    }
    let story = vec![Step::Create(config_text.clone(), now)];
    fn run<S: Clone + Ord>(lim: *mut rl_limiter, now: u64, fresh: S, story: Vec<Step>) -> Run<S> {
        Run { lim, now, capacity: ROOMY, model: Model::new(fresh), allowed: 0, limited: 0, calls: 0, story }
    }
    if let Some(c) = config.concurrency {
        let slots = c.slots as usize;
        let mut conc =
            Conc { slots, lease_ns: c.lease_ns, run: run(lim, now, vec![None; slots], story), history: Vec::new() };
        conc.run(&mut input);
    } else {
        let rates = rates_in_ns(&config);
        let words = rates.iter().map(Rate::words).sum();
        let mut r = Rates { rates, run: run(lim, now, vec![0; words], story) };
        r.run(&mut input);
    }
    rl_destroy(lim);
    if shm {
        unlink_region();
    }
});
