//! A limiter: a validated configuration and the backend that holds its state.
//! This is the whole library as Rust sees it; `ffi/` only translates.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::algorithm::Verdict;
use crate::algorithm::{Leases, Limits, Rate, NEVER};
use crate::config::{Backend, Config, OnError, MAX_RATES, NANOS_PER_MS};
use crate::error::Error;
use crate::metrics::Snapshot;
use crate::store::{wrong_kind, MemoryStore, RedisStore, ShmStore, Store, StoreStats};
use crate::top::{TopEntry, Which};

/// One decision, in milliseconds, as the C API reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rate_index: u32,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
    /// `u64::MAX` when the cost can never pass.
    pub retry_after_ms: u64,
    pub window_ms: u64,
}

/// Counters of a limiter (see `rl_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allowed: u64,
    pub limited: u64,
    pub errors: u64,
    pub keys: u64,
    pub evictions: u64,
    /// Checks denied without asking the backend (Redis: the local over-limit cache).
    pub local_denials: u64,
}

/// How long a caller told "deny" by `on_error=deny` is asked to wait.
pub(crate) const ERROR_RETRY_MS: u64 = 1000;

/// The backend of a limiter. An enum rather than a `Box<dyn Store>` so that
/// the memory backend's check is inlined into `rl_check`: returning its
/// answer through a virtual call cost a store-forwarding stall per check.
/// Every call goes through `on_store!`, one static dispatch for all.
enum Home {
    Memory(MemoryStore),
    Shm(ShmStore),
    Redis(Box<RedisStore>),
}

/// `on_store!(home, s => s.method(...))`: calls a `Store` method on the
/// backend `home` holds, each arm statically (and inlinable).
macro_rules! on_store {
    ($home:expr, $s:ident => $call:expr) => {
        match $home {
            Home::Memory($s) => $call,
            Home::Shm($s) => $call,
            Home::Redis($s) => $call,
        }
    };
}

pub struct Limiter {
    /// `config.rates` (or `config.concurrency`) in nanosecond ticks, made
    /// once for the check path.
    limits: Limits,
    /// The `window_ms` of each rate's decisions (of the lease's: index 0),
    /// made once: read from here, a check saves the match on `limits`, the
    /// bounds check and the load of the rate (14-19 instructions per
    /// `rl_check`, callgrind); the division by a constant was a multiply.
    windows_ms: [u64; MAX_RATES],
    store: Home,
    errors: AtomicU64,
    /// The configuration in full (an attach's as read from its region):
    /// `on_error`, `dry_run` (see `check`) and `capacity` are read from it.
    config: Config,
    /// `config.describe()`, made once: rl_describe() neither allocates nor fails.
    description: String,
}

/// Rates in nanosecond ticks, as the memory and shm backends run them.
pub fn rates_in_ns(config: &Config) -> Vec<Rate> {
    config.rates.iter().map(|r| Rate::new(config.algorithm, r.limit, r.period_ns, r.burst)).collect()
}

/// The limits of a configuration in nanosecond ticks: its rates, or its
/// concurrency limit.
pub fn limits_in_ns(config: &Config) -> Limits {
    match config.concurrency {
        Some(c) => Limits::Leases(Leases { slots: c.slots as usize, lease: c.lease_ns }),
        None => Limits::Rates(rates_in_ns(config)),
    }
}

/// The `window_ms` of decisions by each rate of `limits` (a lease's at index 0).
fn windows_ms(limits: &Limits) -> [u64; MAX_RATES] {
    let mut windows = [0; MAX_RATES];
    match limits {
        Limits::Rates(rates) => {
            for (w, r) in windows.iter_mut().zip(rates) {
                *w = r.period / NANOS_PER_MS;
            }
        }
        Limits::Leases(l) => windows[0] = l.lease / NANOS_PER_MS,
    }
    windows
}

// (The add-then-divide is the point: `div_ceil` compiles to a remainder test.)
#[allow(clippy::manual_div_ceil)]
#[inline(always)]
fn ceil_ms(ticks: u64, tick_ns: u64) -> u64 {
    // Nanosecond ticks (memory, shm): a u64 division by a constant, which
    // compiles to a multiply, instead of a call to the u128 division routine;
    // rounded up by adding first (an add, not a remainder test), for every
    // value the addition cannot overflow (NEVER is above them).
    if tick_ns == 1 && ticks <= u64::MAX - (NANOS_PER_MS - 1) {
        return (ticks + (NANOS_PER_MS - 1)) / NANOS_PER_MS;
    }
    if ticks == NEVER {
        return u64::MAX;
    }
    // The last 999,999 values below NEVER.
    if tick_ns == 1 {
        return ticks.div_ceil(NANOS_PER_MS);
    }
    (ticks as u128 * tick_ns as u128).div_ceil(NANOS_PER_MS as u128).min(u64::MAX as u128 - 1) as u64
}

impl Limiter {
    pub fn new(config: &Config) -> Result<Limiter, Error> {
        let (store, config) = match config.backend {
            Backend::Memory => (Home::Memory(MemoryStore::new(config)?), config.clone()),
            // Attach: the limits (and the sketches' size) are the region's,
            // the rest this handle's own.
            Backend::Shm if config.attaches() => {
                let (store, config) = ShmStore::attach(config)?;
                (Home::Shm(store), config)
            }
            Backend::Shm => (Home::Shm(ShmStore::open(config)?), config.clone()),
            Backend::Redis => (Home::Redis(Box::new(RedisStore::new(config)?)), config.clone()),
        };
        let limits = limits_in_ns(&config);
        Ok(Limiter {
            windows_ms: windows_ms(&limits),
            limits,
            store,
            errors: AtomicU64::new(0),
            description: config.describe(),
            config,
        })
    }

    /// The configuration, in full: for an attach, with the limits read from
    /// its region and the mode of its object.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The canonical configuration string (`Config::describe`).
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Parses `text` and builds the limiter it describes.
    pub fn from_config_str(text: &str) -> Result<Limiter, Error> {
        Limiter::new(&Config::parse(text)?)
    }

    /// A backend's verdict, in ticks of `tick_ns`, as the caller's decision.
    /// Inlined where `tick_ns` is a backend's constant, so that the
    /// conversions to milliseconds compile to multiplies.
    #[inline(always)]
    fn decision(&self, verdict: Verdict, tick_ns: u64) -> Decision {
        let o = verdict.outcome;
        Decision {
            allowed: o.allowed,
            rate_index: verdict.index as u32,
            limit: o.limit,
            remaining: o.remaining,
            reset_ms: ceil_ms(o.reset, tick_ns),
            retry_after_ms: if o.allowed { 0 } else { ceil_ms(o.retry_after, tick_ns) },
            window_ms: self.window_ms(verdict.index),
        }
    }

    /// A decision's `window_ms`: the period of rate `index`, or the length
    /// of a lease.
    #[inline(always)]
    fn window_ms(&self, index: usize) -> u64 {
        self.windows_ms[index]
    }

    /// A decision's `limit` when there is no answer: the first rate's
    /// quota, or the number of lease places.
    fn first_limit(&self) -> u64 {
        match &self.limits {
            Limits::Rates(rates) => rates[0].quota(),
            Limits::Leases(l) => l.slots as u64,
        }
    }

    /// Whether this is a concurrency limiter (`concurrency=`).
    pub fn is_concurrency(&self) -> bool {
        matches!(self.limits, Limits::Leases(_))
    }

    /// The decision a caller gets when the backend failed: `on_error`
    /// decides, and a dry run reports its denial as allowed (with its
    /// `retry_after_ms`, the mark of a would-be 429).
    pub fn error_decision(&self) -> Decision {
        let deny = self.config.on_error == OnError::Deny;
        Decision {
            allowed: !deny || self.config.dry_run,
            rate_index: 0,
            limit: self.first_limit(),
            remaining: 0,
            reset_ms: 0,
            retry_after_ms: if deny { ERROR_RETRY_MS } else { 0 },
            window_ms: self.window_ms(0),
        }
    }

    /// Takes `cost` units for `key`. On error the decision to obey comes with it.
    ///
    /// A dry run decides and records exactly as an enforcing limiter does
    /// (the backend never knows: a denial consumed nothing and counted in
    /// `limited`), then reports the decision allowed, keeping its other
    /// fields, `retry_after_ms` included.
    ///
    /// Inlined into `rl_check`, each backend's answer turned into the
    /// decision with that backend's tick as a constant.
    #[inline(always)]
    pub fn check(&self, key: &[u8], cost: u64) -> Result<Decision, (Error, Decision)> {
        if self.is_concurrency() {
            return Err(self.refused("rl_check"));
        }
        on_store!(&self.store, s => self.decided(s.check(key, cost), s.tick_ns()))
    }

    /// What an operation of the wrong kind (see `wrong_kind`) answers: an
    /// argument error, so a denial whatever `on_error` says.
    #[cold]
    fn refused(&self, op: &str) -> (Error, Decision) {
        let d = Decision { allowed: false, retry_after_ms: ERROR_RETRY_MS, ..self.error_decision() };
        (wrong_kind(&self.limits, op), d)
    }

    /// Turns a backend's verdict, in ticks of `tick_ns`, into the caller's
    /// decision (dry run included), or counts its error and gives
    /// `on_error`'s decision. (Called in each arm of the backend's dispatch,
    /// with the backend's tick: the check path matches the backend once.)
    #[inline(always)]
    fn decided(&self, verdict: Result<Verdict, Error>, tick_ns: u64) -> Result<Decision, (Error, Decision)> {
        match verdict {
            Ok(verdict) => {
                let mut d = self.decision(verdict, tick_ns);
                d.allowed |= self.config.dry_run;
                Ok(d)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A backend error, counted, with `on_error`'s decision.
    #[cold]
    #[inline(never)]
    fn failed(&self, e: Error) -> (Error, Decision) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        (e, self.error_decision())
    }

    /// Settles `delta` units after the fact (see `rl_adjust`). The decision
    /// describes the key afterwards; a dry run reports it allowed.
    pub fn adjust(&self, key: &[u8], delta: i64) -> Result<Decision, (Error, Decision)> {
        if self.is_concurrency() {
            return Err(self.refused("rl_adjust"));
        }
        on_store!(&self.store, s => self.decided(s.adjust(key, delta), s.tick_ns()))
    }

    /// Takes one of the key's in-flight places (see `rl_acquire`): the
    /// decision and the lease id, 0 when denied. A dry run's would-be
    /// denial is reported allowed, with lease 0 (releasing 0 is harmless).
    pub fn acquire(&self, key: &[u8]) -> Result<(Decision, u64), (Error, Decision)> {
        if !self.is_concurrency() {
            return Err(self.refused("rl_acquire"));
        }
        let mut lease = 0;
        let decided = on_store!(&self.store, s => {
            let verdict = s.acquire(key).map(|(verdict, id)| {
                lease = id;
                verdict
            });
            self.decided(verdict, s.tick_ns())
        });
        decided.map(|d| (d, lease))
    }

    /// `result`, with a backend error counted in `errors` as a check's is.
    fn counted<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Extends a held lease (see `rl_renew`): whether it was held.
    pub fn renew(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        if !self.is_concurrency() {
            return Err(self.refused("rl_renew").0);
        }
        self.counted(on_store!(&self.store, s => s.renew(key, lease)))
    }

    /// Frees a lease (see `rl_release`): whether it was held.
    pub fn release(&self, key: &[u8], lease: u64) -> Result<bool, Error> {
        if !self.is_concurrency() {
            return Err(self.refused("rl_release").0);
        }
        self.counted(on_store!(&self.store, s => s.release(key, lease)))
    }

    pub fn reset(&self, key: &[u8]) -> Result<(), Error> {
        on_store!(&self.store, s => s.reset(key))
    }

    pub fn sweep(&self) -> Result<u64, Error> {
        on_store!(&self.store, s => s.sweep())
    }

    /// The keys ranked by `which` (see `rl_top`), at most `max`.
    pub fn top(&self, which: Which, max: usize) -> Result<Vec<TopEntry>, Error> {
        on_store!(&self.store, s => s.top(which, max))
    }

    pub fn stats(&self) -> Result<Stats, Error> {
        let StoreStats { allowed, limited, keys, evictions } = on_store!(&self.store, s => s.stats())?;
        Ok(Stats {
            allowed,
            limited,
            errors: self.errors.load(Ordering::Relaxed),
            keys,
            evictions,
            local_denials: on_store!(&self.store, s => s.local_denials()),
        })
    }

    /// What `rl_metrics` reports: the counters, the capacity (memory, shm),
    /// the over-limit cache's denials (redis) and, if `top_keys`, the most
    /// denied keys (every tracked one).
    pub fn metrics(&self, top_keys: bool) -> Result<Snapshot, Error> {
        let s = self.stats()?;
        let top_limited = match top_keys {
            true => Some(self.top(Which::Limited, crate::top::MAX_TOP)?),
            false => None,
        };
        Ok(Snapshot {
            allowed: s.allowed,
            limited: s.limited,
            errors: s.errors,
            keys: s.keys,
            evictions: s.evictions,
            // Redis has no bound on its keys.
            capacity: (self.config.backend != Backend::Redis).then_some(self.config.capacity),
            local_denials: matches!(self.store, Home::Redis(_)).then_some(s.local_denials),
            top_limited,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn eight_threads_on_one_key_admit_exactly_the_quota() {
        let lim = Arc::new(Limiter::from_config_str("rate=1000/hour").unwrap());
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (lim, admitted) = (lim.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if lim.check(b"shared", 1).unwrap().allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(admitted.load(Ordering::Relaxed), 1000);
        let s = lim.stats().unwrap();
        assert_eq!((s.allowed, s.limited, s.keys), (1000, 3000, 1));
    }

    #[test]
    fn windows_under_threads_admit_exactly_the_quota() {
        for algo in ["fixed_window", "sliding_window"] {
            let lim = Arc::new(Limiter::from_config_str(&format!("rate=700/1000d algorithm={algo}")).unwrap());
            let admitted = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (lim, admitted) = (lim.clone(), admitted.clone());
                    std::thread::spawn(move || {
                        for _ in 0..200 {
                            if lim.check(b"k", 1).unwrap().allowed {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            // Windows are aligned to the epoch; a 1000-day one will not turn over mid-test.
            assert_eq!(admitted.load(Ordering::Relaxed), 700, "{algo}");
        }
    }

    /// Threads hammering their own denied keys while another reads the
    /// ranking: every read is sorted and within bounds, and at the end each
    /// key's count is exact (a handful of keys: nothing evicted).
    #[test]
    fn top_under_threads_is_exact_for_few_keys() {
        let lim = Arc::new(Limiter::from_config_str("rate=1/hour capacity=100").unwrap());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (lim, done) = (lim.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let top = lim.top(Which::Limited, 64).unwrap();
                    assert!(top.len() <= 4 && top.windows(2).all(|p| p[0].count >= p[1].count));
                    assert!(top.iter().all(|e| e.error == 0 && e.count <= 2000));
                    reads += 1;
                }
            })
        };
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let lim = lim.clone();
                std::thread::spawn(move || {
                    for _ in 0..=500 * (t + 1) {
                        lim.check(format!("t{t}").as_bytes(), 1).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let top = lim.top(Which::Limited, 64).unwrap();
        let got: Vec<_> = top.iter().map(|e| (e.key[..e.key_len as usize].to_vec(), e.count, e.error)).collect();
        let want: Vec<_> = (0..4u64).rev().map(|t| (format!("t{t}").into_bytes(), 500 * (t + 1), 0)).collect();
        assert_eq!(got, want);
        // Most of those denials were answered from the over-limit cache:
        // counted in `limited` all the same, and not as `local_denials`
        // (Redis round trips saved), which stays 0 for memory.
        let stats = lim.stats().unwrap();
        assert_eq!((stats.limited, stats.local_denials), (5000, 0));
    }

    /// A dry run decides and counts exactly as enforcing does; only
    /// `allowed` differs, and `retry_after_ms` marks the would-be denials.
    #[test]
    fn a_dry_run_decides_and_counts_as_enforcing_does() {
        for algorithm in ["token_bucket", "fixed_window", "sliding_window"] {
            let config = format!("rate=3/hour,5/day algorithm={algorithm}");
            let dry = Limiter::from_config_str(&format!("{config} dry_run=on")).unwrap();
            let real = Limiter::from_config_str(&config).unwrap();
            for (i, cost) in [1, 1, 2, 1, 0, 9, 1, 1].into_iter().enumerate() {
                let (d, r) = (dry.check(b"k", cost).unwrap(), real.check(b"k", cost).unwrap());
                assert!(d.allowed, "{algorithm}, check {i}");
                assert_eq!(d.retry_after_ms > 0, !r.allowed, "{algorithm}, check {i}: {d:?} {r:?}");
                // The times count from each check's own clock reading: a
                // preempted thread may read it a few ms apart.
                let same = Decision { allowed: r.allowed, reset_ms: r.reset_ms, retry_after_ms: r.retry_after_ms, ..d };
                assert_eq!(same, r, "{algorithm}, check {i}");
                assert!(d.reset_ms.abs_diff(r.reset_ms) <= 50, "{algorithm}, check {i}: {d:?} {r:?}");
                assert!(d.retry_after_ms.abs_diff(r.retry_after_ms) <= 50, "{algorithm}, check {i}: {d:?} {r:?}");
            }
            let (d, r) = (dry.stats().unwrap(), real.stats().unwrap());
            assert_eq!(d, r, "{algorithm}");
            assert_eq!((d.allowed, d.limited), (4, 4), "{algorithm}");
            // rl_top counts a would-be denial as a denial.
            let ranked = |lim: &Limiter| -> Vec<_> {
                let top = lim.top(Which::Limited, 8).unwrap();
                top.iter().map(|e| (e.key[..e.key_len as usize].to_vec(), e.count, e.error)).collect()
            };
            assert_eq!(ranked(&dry), vec![(b"k".to_vec(), 4, 0)], "{algorithm}");
            assert_eq!(ranked(&dry), ranked(&real), "{algorithm}");
        }
        // A backend error with on_error=deny: allowed, marked as a would-be 429.
        let lim = Limiter::from_config_str("rate=1/s on_error=deny dry_run=on").unwrap();
        let d = lim.error_decision();
        assert_eq!((d.allowed, d.retry_after_ms), (true, ERROR_RETRY_MS));
        let lim = Limiter::from_config_str("rate=1/s dry_run=on").unwrap();
        assert_eq!((lim.error_decision().allowed, lim.error_decision().retry_after_ms), (true, 0));
    }

    /// A limiter made from its own description describes itself the same way.
    #[test]
    fn a_description_makes_an_equivalent_limiter() {
        for text in [
            "rate=100/minute",
            "rate=5/10s,1000/hour algorithm=sliding_window capacity=7 on_error=deny dry_run=on top=0",
            "rate=9/min top=1024",
            "rate=1/s backend=redis url=redis://h:1/2 prefix=x: timeout_ms=9",
        ] {
            let lim = Limiter::from_config_str(text).unwrap();
            let again = Limiter::from_config_str(lim.describe()).unwrap();
            assert_eq!(again.describe(), lim.describe(), "{text}");
            assert_eq!(again.config(), lim.config(), "{text}");
        }
    }

    #[test]
    fn decisions_in_milliseconds() {
        let lim = Limiter::from_config_str("rate=5/s").unwrap();
        let d = lim.check(b"k", 1).unwrap();
        assert_eq!((d.allowed, d.limit, d.remaining, d.reset_ms, d.window_ms), (true, 5, 4, 200, 1000));
        let d = lim.check(b"k", 6).unwrap();
        assert_eq!((d.allowed, d.retry_after_ms), (false, u64::MAX));
        assert_eq!(ceil_ms(1, 1), 1);
        assert_eq!(ceil_ms(1_000_000, 1), 1);
        assert_eq!(ceil_ms(1_000_001, 1), 2);
        assert_eq!(ceil_ms(3, 1000), 1);
        assert_eq!(ceil_ms(u64::MAX - 1, 1), (u64::MAX - 1).div_ceil(1_000_000));
        for ticks in [0, 999_999, u64::MAX - 1_000_000, u64::MAX - 999_999, u64::MAX - 999_998] {
            assert_eq!(ceil_ms(ticks, 1), ticks.div_ceil(1_000_000), "{ticks}");
        }
        assert_eq!(ceil_ms(NEVER, 1), u64::MAX);
        assert_eq!(ceil_ms(u64::MAX - 1, 1_000_000), u64::MAX - 1);
    }

    /// Reserve, then settle: the key ends up charged what was used, on
    /// every algorithm; a charge past the quota is a debt that denies, with
    /// a retry_after that covers it; a refund stops at a fresh key.
    #[test]
    fn adjust_settles_reservations() {
        for algorithm in ["token_bucket", "fixed_window", "sliding_window"] {
            let lim = Limiter::from_config_str(&format!("rate=100/hour algorithm={algorithm}")).unwrap();
            assert!(lim.check(b"k", 60).unwrap().allowed);
            let d = lim.adjust(b"k", -45).unwrap();
            assert_eq!((d.allowed, d.remaining, d.limit), (true, 85, 100), "{algorithm}");
            let d = lim.adjust(b"k", 0).unwrap();
            assert_eq!((d.allowed, d.remaining), (true, 85), "{algorithm}: a peek");
            let d = lim.adjust(b"k", 135).unwrap();
            assert_eq!((d.allowed, d.remaining), (false, 0), "{algorithm}: 50 units of debt");
            let denied = lim.check(b"k", 1).unwrap();
            assert!(!denied.allowed, "{algorithm}");
            if algorithm == "token_bucket" {
                // 51 units at 36 s each before one unit is back.
                assert!(denied.retry_after_ms.abs_diff(51 * 36_000) < 1000, "{denied:?}");
                assert!(d.retry_after_ms.abs_diff(denied.retry_after_ms) < 1000, "{d:?} {denied:?}");
            }
            let d = lim.adjust(b"k", i64::MIN).unwrap();
            assert_eq!((d.allowed, d.remaining), (true, 100), "{algorithm}: fresh, not more");
            let d = lim.adjust(b"never seen", -5).unwrap();
            assert_eq!((d.allowed, d.remaining), (true, 100), "{algorithm}");
            let d = lim.adjust(b"deep", i64::MAX).unwrap();
            assert_eq!((d.allowed, d.remaining), (false, 0), "{algorithm}");
            assert!(!lim.check(b"deep", 1).unwrap().allowed, "{algorithm}");
            assert_eq!(lim.stats().unwrap().allowed, 1, "{algorithm}: an adjust is not a check");
        }
    }

    #[test]
    fn operations_of_the_other_kind_are_refused() {
        let rates = Limiter::from_config_str("rate=5/s").unwrap();
        let conc = Limiter::from_config_str("concurrency=2 lease=10s").unwrap();
        for (e, d) in [conc.check(b"k", 1).unwrap_err(), conc.adjust(b"k", 1).unwrap_err()] {
            assert!(matches!(&e, Error::Invalid(m) if m.contains("use rl_acquire")), "{e}");
            assert_eq!((d.allowed, d.limit, d.window_ms), (false, 2, 10_000));
        }
        let (e, d) = rates.acquire(b"k").unwrap_err();
        assert!(matches!(&e, Error::Invalid(m) if m.contains("use rl_check")), "{e}");
        assert!(!d.allowed);
        assert!(matches!(rates.renew(b"k", 1), Err(Error::Invalid(_))));
        assert!(matches!(rates.release(b"k", 1), Err(Error::Invalid(_))));
    }

    /// Eight threads on one key: never more than N leases held at once, all
    /// N used, every release of a held lease says so, and after all the
    /// releases the key is whole again.
    #[test]
    fn eight_threads_never_hold_more_than_n_leases() {
        let lim = Arc::new(Limiter::from_config_str("concurrency=4 lease=1min").unwrap());
        let (holders, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (lim, holders, most) = (lim.clone(), holders.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..5000 {
                        let (d, lease) = lim.acquire(b"hot").unwrap();
                        assert_eq!(d.allowed, lease != 0);
                        if d.allowed {
                            let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::yield_now();
                            holders.fetch_sub(1, Ordering::SeqCst);
                            assert!(lim.release(b"hot", lease).unwrap());
                            assert!(!lim.release(b"hot", lease).unwrap(), "released twice");
                        } else {
                            // A lease plus its rounding (1.05 ms), plus how far
                            // this thread's clock reading is behind the
                            // holder's (preemption: generous).
                            assert!(d.retry_after_ms > 0 && d.retry_after_ms < 62_000, "{d:?}");
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(most.load(Ordering::SeqCst), 4);
        let (d, _) = lim.acquire(b"hot").unwrap();
        assert_eq!((d.allowed, d.limit, d.remaining, d.window_ms), (true, 4, 3, 60_000));
    }

    /// A dry run reports a would-be denied acquire as allowed, with no lease.
    #[test]
    fn a_dry_run_acquire_holds_no_lease_when_it_would_be_denied() {
        let lim = Limiter::from_config_str("concurrency=1 dry_run=on").unwrap();
        let (d, lease) = lim.acquire(b"k").unwrap();
        assert!(d.allowed && lease != 0 && d.retry_after_ms == 0);
        let (d, none) = lim.acquire(b"k").unwrap();
        assert!(d.allowed && none == 0 && d.retry_after_ms > 0, "{d:?}");
        assert!(!lim.release(b"k", none).unwrap());
        assert!(lim.renew(b"k", lease).unwrap() && lim.release(b"k", lease).unwrap());
    }

    /// A concurrency region is attached to by name like a rate region, and
    /// describes itself as one.
    #[test]
    fn attaching_to_a_concurrency_region() {
        let name = format!("/rl-rust-test-{}-attach-conc", std::process::id());
        let cname = std::ffi::CString::new(name.clone()).unwrap();
        let _ = crate::store::shm_unlink(&cname);
        let made = Limiter::from_config_str(&format!("concurrency=2 lease=10s backend=shm name={name}")).unwrap();
        let attached = Limiter::from_config_str(&format!("backend=shm name={name}")).unwrap();
        assert!(attached.describe().starts_with("concurrency=2 lease=10s capacity=100000 top=32 backend=shm"));
        let (_, lease) = made.acquire(b"k").unwrap();
        let (d, other) = attached.acquire(b"k").unwrap();
        assert_eq!((d.allowed, d.remaining, d.window_ms), (true, 0, 10_000));
        assert!(!attached.acquire(b"k").unwrap().0.allowed);
        assert!(attached.release(b"k", lease).unwrap() && made.release(b"k", other).unwrap());
        let _ = crate::store::shm_unlink(&cname);
    }

    /// A table full of keys holding leases takes no new key: a lease is
    /// never forgotten to make room (that would let more than N requests of
    /// its key run at once). The new key is refused until leases end.
    #[test]
    fn a_full_table_never_drops_held_leases() {
        let lim = Limiter::from_config_str("concurrency=1 lease=1min capacity=16").unwrap();
        let mut held = Vec::new();
        for k in 0..64 {
            let key = format!("key-{k}");
            let (d, lease) = lim.acquire(key.as_bytes()).unwrap();
            assert_eq!(d.allowed, lease != 0);
            if d.allowed {
                held.push((key, lease));
            } else {
                assert_eq!((d.remaining, d.retry_after_ms), (0, 60_000), "{key}: refused for room, {d:?}");
            }
        }
        assert!(held.len() >= 16, "{} keys got a lease", held.len());
        for (key, _) in &held {
            assert!(!lim.acquire(key.as_bytes()).unwrap().0.allowed, "{key}: its one place is held");
        }
        for (key, lease) in &held {
            assert!(lim.release(key.as_bytes(), *lease).unwrap(), "{key}: its lease was kept");
        }
        assert_eq!(lim.stats().unwrap().evictions, 0);
    }
}
