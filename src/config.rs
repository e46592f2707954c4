//! The configuration string: whitespace-separated `key=value` tokens.
//!
//! Parsing is strict: an unknown key, a repeated key or a bad value is an error
//! whose message names the offending token, so that `rl_last_error()` can tell a
//! C programmer exactly what to fix. Pure: no I/O, no allocation beyond the result.
//!
//! Messages quote the caller's text only through [`quoted`]: at most 64 bytes
//! of it, control characters escaped, and credentials masked (`url=` may hold
//! a Redis password; see [`crate::error::redact`]), because `rl_last_error()`
//! ends up in logs and on consoles.

use std::fmt;

use crate::error::{is_invisible, quoted, redact, MASK};
use crate::top::{DEFAULT_TOP, MAX_TOP};

/// Nanoseconds in one millisecond.
pub(crate) const NANOS_PER_MS: u64 = 1_000_000;

/// Keys tracked when `capacity=` is not given.
pub(crate) const DEFAULT_CAPACITY: u64 = 100_000;
/// Largest `capacity=` accepted (2^32 keys; a memory table of that size needs ~128 GiB).
pub(crate) const MAX_CAPACITY: u64 = 1 << 32;
/// Longest a check may wait on Redis when `timeout_ms=` is not given.
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 50;
/// Longest an shm operation waits for a shard lock held by another process
/// when `timeout_ms=` is not given. A shard is held for well under a
/// microsecond, so only a holder that is stopped (SIGSTOP, a debugger) or
/// starved of CPU keeps it longer; but on an oversubscribed host a holder
/// preempted inside its critical section waits for its next time slice, which
/// can take several to tens of milliseconds. 1 s turns a stopped worker into
/// errors instead of a wedge without turning ordinary preemption into errors.
pub(crate) const DEFAULT_SHM_TIMEOUT_MS: u64 = 1000;
/// Longest period, and longest time a bucket may take to refill: 1000 days.
pub(crate) const MAX_PERIOD_NS: u64 = 1000 * 86_400_000 * NANOS_PER_MS;
/// Most rates one configuration may hold.
pub(crate) const MAX_RATES: usize = 8;

/// How the units of one rate are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Token bucket, computed as GCRA (one timestamp per key).
    TokenBucket,
    /// At most LIMIT units in each aligned window of PERIOD.
    FixedWindow,
    /// The weighted estimate over the current and the previous aligned window.
    SlidingWindow,
}

impl Algorithm {
    /// The name used in the configuration string.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
        }
    }
}

/// Where the state of the keys lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Shm,
    Redis,
}

/// What a check answers when the backend fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Allow,
    Deny,
}

/// One `LIMIT/PERIOD` of the `rate=` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    /// Units admitted per period.
    pub limit: u64,
    /// The period in nanoseconds.
    pub period_ns: u64,
    /// Bucket capacity (token bucket); equal to `limit` unless `burst=` says otherwise.
    pub burst: u64,
}

/// `concurrency=N lease=DURATION`: a concurrency limiter instead of rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencySpec {
    /// N: leases a key may hold at once, 1 to 1024.
    pub slots: u32,
    /// How long a lease lasts from its acquire or renew, in nanoseconds.
    pub lease_ns: u64,
}

/// Longest lease without a renew when `lease=` is not given.
pub(crate) const DEFAULT_LEASE_NS: u64 = 60_000 * NANOS_PER_MS;

/// A parsed, validated configuration. Its `Debug` masks the credentials of
/// `url`.
///
/// `rates` is empty for a concurrency limiter (`concurrency` is then set)
/// and for an *attach*: `backend=shm name=...` without `rate=` or `concurrency=`, which opens an existing region with the rates, algorithm and
/// capacity stored in it (then `algorithm`, `capacity` and `mode` hold their
/// defaults until the region says otherwise; see [`Config::attaches`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub rates: Vec<RateSpec>,
    /// Set for a concurrency limiter (`concurrency=`), which has no rates.
    pub concurrency: Option<ConcurrencySpec>,
    pub algorithm: Algorithm,
    pub backend: Backend,
    pub capacity: u64,
    pub name: Option<String>,
    pub url: Option<String>,
    pub prefix: String,
    pub timeout_ms: u64,
    pub on_error: OnError,
    pub mode: u32,
    /// Counters per heavy-hitter sketch for `rl_top` (`top=`); 0: tracking off.
    /// Part of an shm region's identity; per handle for memory and redis.
    pub top: usize,
    /// `dry_run=on`: decisions are computed and recorded as usual, but every
    /// one is reported allowed (per handle, never part of a region).
    pub dry_run: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Config {
            rates,
            concurrency,
            algorithm,
            backend,
            capacity,
            name,
            url,
            prefix,
            timeout_ms,
            on_error,
            mode,
            top,
            dry_run,
        } = self;
        f.debug_struct("Config")
            .field("rates", rates)
            .field("concurrency", concurrency)
            .field("algorithm", algorithm)
            .field("backend", backend)
            .field("capacity", capacity)
            .field("name", name)
            .field("url", &url.as_deref().map(redact))
            .field("prefix", prefix)
            .field("timeout_ms", timeout_ms)
            .field("on_error", on_error)
            .field("mode", &format_args!("{mode:#o}"))
            .field("top", top)
            .field("dry_run", dry_run)
            .finish()
    }
}

/// Why a configuration string was refused; the message names the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: String) -> Result<T, ConfigError> {
    Err(ConfigError(msg))
}

/// `key=value`, quoted for a message.
fn kv(key: &str, value: &str) -> String {
    quoted(&format!("{key}={value}"))
}

/// Whether `key` (the text before the first `=` of a token) may be printed
/// on its own: a plausible key name, not a fragment of a URL's credentials.
fn printable_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 32 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const KEYS: [&str; 15] = [
    "rate",
    "concurrency",
    "lease",
    "algorithm",
    "burst",
    "backend",
    "capacity",
    "name",
    "url",
    "prefix",
    "timeout_ms",
    "on_error",
    "mode",
    "top",
    "dry_run",
];

/// The keys that an attach (`backend=shm name=...` without `rate=`) takes
/// from the region instead, or that only matter when creating one (`mode`).
const REGION_KEYS: [&str; 6] = ["algorithm", "burst", "capacity", "top", "mode", "lease"];

impl Config {
    /// Parses a configuration string such as `rate=100/minute,1000/hour backend=memory`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut seen: [Option<&str>; KEYS.len()] = [None; KEYS.len()];
        for token in text.split_ascii_whitespace() {
            let Some((key, value)) = token.split_once('=') else {
                return err(format!("token {} is not key=value", quoted(token)));
            };
            let Some(slot) = KEYS.iter().position(|k| *k == key) else {
                let known = KEYS.join(", ");
                if printable_key(key) {
                    return err(format!("unknown key \"{key}\" in {} (known keys: {known})", quoted(token)));
                }
                return err(format!("unknown key in {} (known keys: {known})", quoted(token)));
            };
            if seen[slot].is_some() {
                return err(format!("key \"{key}\" given twice ({})", quoted(token)));
            }
            if value.is_empty() {
                return err(format!("empty value in {}", quoted(token)));
            }
            // Values are printed back by rl_describe() (and by tools such as
            // rlctl): no escape sequence, other control character, or
            // character that prints as something else (zero-width,
            // direction override) may ride along. No valid value needs one.
            if value.chars().any(is_invisible) {
                return err(format!(
                    "bad value in {}: control characters (and invisible or direction-changing ones) are not allowed",
                    quoted(token)
                ));
            }
            seen[slot] = Some(value);
        }
        let get = |k: &str| seen[KEYS.iter().position(|x| *x == k).unwrap()];

        let backend = match get("backend") {
            None | Some("memory") => Backend::Memory,
            Some("shm") => Backend::Shm,
            Some("redis") => Backend::Redis,
            Some(v) => return err(format!("bad value in {}: expected memory, shm or redis", kv("backend", v))),
        };

        // Without rate=, backend=shm attaches to an existing region and takes
        // its limits from it: keys that would restate them are refused rather
        // than ignored (or silently contradicted by the region).
        let rate_text = get("rate");
        let concurrency = parse_concurrency(get("concurrency"), get("lease"), rate_text)?;
        if let (Some(_), Some(key)) = (concurrency, ["algorithm", "burst"].into_iter().find(|k| get(k).is_some())) {
            return err(format!(
                "{} applies only to rate limiters (rate=), not to concurrency=",
                kv(key, get(key).unwrap_or_default())
            ));
        }
        if rate_text.is_none() && concurrency.is_none() && backend == Backend::Shm {
            if let Some(key) = REGION_KEYS.into_iter().find(|k| get(k).is_some()) {
                return err(format!(
                    "{} needs \"rate=\": without rate=, backend=shm name=... attaches to an existing region and \
                     takes its rate, algorithm, burst, capacity and top from it (and creates nothing, so mode= does not \
                     apply)",
                    kv(key, get(key).unwrap_or_default())
                ));
            }
        }
        let mut rates =
            match rate_text {
                Some(t) => parse_rates(t)?,
                None if backend == Backend::Shm || concurrency.is_some() => Vec::new(),
                None => return err(
                    "missing required key \"rate\" (e.g. rate=100/minute, or concurrency=N for an in-flight limit; \
                     only backend=shm name=... may omit both, to attach to an existing region)"
                        .into(),
                ),
            };
        let rate_text = rate_text.unwrap_or_default();

        let algorithm = match get("algorithm") {
            None | Some("token_bucket") => Algorithm::TokenBucket,
            Some("fixed_window") => Algorithm::FixedWindow,
            Some("sliding_window") => Algorithm::SlidingWindow,
            Some(v) => {
                return err(format!(
                    "bad value in {}: expected token_bucket, fixed_window or sliding_window",
                    kv("algorithm", v)
                ))
            }
        };

        if let Some(v) = get("burst") {
            let burst = parse_count("burst", v)?;
            if algorithm != Algorithm::TokenBucket {
                return err(format!("{} applies only to algorithm=token_bucket", kv("burst", v)));
            }
            if rates.len() != 1 {
                return err(format!(
                    "{} needs a single rate, {} has {}",
                    kv("burst", v),
                    kv("rate", rate_text),
                    rates.len()
                ));
            }
            rates[0].burst = burst;
        }
        // A bucket may take at most 2000 days to refill, which keeps every
        // timestamp the algorithm computes far inside a u64 of nanoseconds.
        for r in rates.iter().filter(|_| algorithm == Algorithm::TokenBucket) {
            let full_ns = r.burst as u128 * r.period_ns.div_ceil(r.limit) as u128;
            if full_ns > 2 * MAX_PERIOD_NS as u128 {
                return err(format!(
                    "\"burst={}\" with {} takes more than 2000 days to refill",
                    r.burst,
                    kv("rate", rate_text)
                ));
            }
        }

        let capacity = match get("capacity") {
            None => DEFAULT_CAPACITY,
            Some(v) => {
                let c = parse_count("capacity", v)?;
                if c > MAX_CAPACITY {
                    return err(format!("{} is above the maximum {MAX_CAPACITY}", kv("capacity", v)));
                }
                c
            }
        };

        let timeout_ms = match get("timeout_ms") {
            None if backend == Backend::Shm => DEFAULT_SHM_TIMEOUT_MS,
            None => DEFAULT_TIMEOUT_MS,
            Some(v) => {
                let t = parse_count("timeout_ms", v)?;
                if t > 60_000 {
                    return err(format!("{} is above the maximum 60000", kv("timeout_ms", v)));
                }
                t
            }
        };

        let on_error = match get("on_error") {
            None | Some("allow") => OnError::Allow,
            Some("deny") => OnError::Deny,
            Some(v) => return err(format!("bad value in {}: expected allow or deny", kv("on_error", v))),
        };

        let mode = match get("mode") {
            None => 0o600,
            Some(v) => parse_mode(v)?,
        };

        // `top=0` is allowed: it turns tracking off.
        let top = match get("top") {
            None => DEFAULT_TOP,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= MAX_TOP && v.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return err(format!("bad value in {}: expected a whole number from 0 to {MAX_TOP}", kv("top", v))),
            },
        };

        let dry_run = match get("dry_run") {
            None | Some("off") => false,
            Some("on") => true,
            Some(v) => return err(format!("bad value in {}: expected on or off", kv("dry_run", v))),
        };

        let name = get("name").map(str::to_owned);
        if let Some(n) = &name {
            validate_shm_name(n)?;
        }
        let url = get("url").map(str::to_owned);
        if let Some(u) = &url {
            refuse_masked_password(u)?;
        }
        let prefix = get("prefix").unwrap_or("rl:").to_owned();

        // Keys that belong to one backend only are refused elsewhere, so that a
        // typo such as `backend=memroy name=/x` cannot silently mean something else.
        for (key, wanted) in
            [("name", Backend::Shm), ("mode", Backend::Shm), ("url", Backend::Redis), ("prefix", Backend::Redis)]
        {
            if get(key).is_some() && backend != wanted {
                return err(format!(
                    "key \"{key}\" applies only to backend={}",
                    match wanted {
                        Backend::Shm => "shm",
                        Backend::Redis => "redis",
                        Backend::Memory => "memory",
                    }
                ));
            }
        }
        if get("capacity").is_some() && backend == Backend::Redis {
            return err("key \"capacity\" applies only to backend=memory or backend=shm".into());
        }
        // Memory waits on no other process: nothing for a timeout to bound.
        if get("timeout_ms").is_some() && backend == Backend::Memory {
            return err("key \"timeout_ms\" applies only to backend=shm or backend=redis".into());
        }
        match backend {
            Backend::Shm if name.is_none() => return err("backend=shm needs \"name=\" (e.g. name=/api-limits)".into()),
            Backend::Redis if url.is_none() => {
                return err("backend=redis needs \"url=\" (e.g. url=redis://127.0.0.1:6379)".into())
            }
            _ => {}
        }

        Ok(Config {
            rates,
            concurrency,
            algorithm,
            backend,
            capacity,
            name,
            url,
            prefix,
            timeout_ms,
            on_error,
            mode,
            top,
            dry_run,
        })
    }

    /// Whether this is an attach: `backend=shm name=...` without `rate=` or `concurrency=`.
    pub fn attaches(&self) -> bool {
        self.rates.is_empty() && self.concurrency.is_none()
    }

    /// The canonical configuration string: every key that applies to the
    /// backend, defaults included, in a fixed order (`rate algorithm burst
    /// capacity top backend name mode url prefix timeout_ms on_error
    /// dry_run`),
    /// rates in the largest unit that divides their period exactly
    /// (`100/min`, `5/10s`, `7/250ms`), `mode` as four octal digits. Parsing
    /// it gives back an equal `Config`, except that a password in `url` is
    /// written as `***` (see [`redact`]), which [`Config::parse`] refuses.
    /// An attach prints no `rate`, `algorithm`, `burst`, `capacity`, `top` or
    /// `mode` (a limiter that attached describes the region's, see
    /// `Limiter::describe`).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if !self.attaches() {
            let with_capacity = self.backend != Backend::Redis;
            out = match self.concurrency {
                Some(c) => concurrency_text(c, self.capacity, with_capacity, self.top),
                None => identity_text(&self.rates, self.algorithm, self.capacity, with_capacity, self.top),
            };
            out.push(' ');
        }
        let backend = match self.backend {
            Backend::Memory => "memory",
            Backend::Shm => "shm",
            Backend::Redis => "redis",
        };
        out += &format!("backend={backend}");
        if let Some(name) = &self.name {
            out += &format!(" name={name}");
        }
        if self.backend == Backend::Shm && !self.attaches() {
            out += &format!(" mode={:04o}", self.mode);
        }
        if let Some(url) = &self.url {
            out += &format!(" url={}", masked_url(url));
        }
        if self.backend == Backend::Redis {
            out += &format!(" prefix={}", self.prefix);
        }
        if self.backend != Backend::Memory {
            out += &format!(" timeout_ms={}", self.timeout_ms);
        }
        let on_error = match self.on_error {
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        };
        out += &format!(" on_error={on_error} dry_run={}", if self.dry_run { "on" } else { "off" });
        out
    }
}

/// The limits of a configuration in canonical form, as [`Config::describe`]
/// starts and as an shm region records them (its identity: every process
/// sharing a region must agree on exactly this text):
/// `rate=LIST algorithm=NAME [burst=N] [capacity=N] top=N`, `burst` for a
/// token bucket with a single rate, `capacity` when `with_capacity`. `top`
/// is always there: an shm region's sketches are part of its layout; for
/// memory and redis it is the handle's own, described all the same.
pub fn identity_text(
    rates: &[RateSpec],
    algorithm: Algorithm,
    capacity: u64,
    with_capacity: bool,
    top: usize,
) -> String {
    let list: Vec<String> = rates.iter().map(rate_spec_text).collect();
    let mut out = format!("rate={} algorithm={}", list.join(","), algorithm.name());
    if let [only] = rates {
        if algorithm == Algorithm::TokenBucket {
            out += &format!(" burst={}", only.burst);
        }
    }
    if with_capacity {
        out += &format!(" capacity={capacity}");
    }
    out += &format!(" top={top}");
    out
}

/// A concurrency limiter's limits in canonical form, as [`identity_text`]
/// gives a rate limiter's: `concurrency=N lease=DURATION [capacity=N] top=N`.
pub fn concurrency_text(c: ConcurrencySpec, capacity: u64, with_capacity: bool, top: usize) -> String {
    let mut out = format!("concurrency={} lease={}", c.slots, period_text(c.lease_ns));
    if with_capacity {
        out += &format!(" capacity={capacity}");
    }
    out += &format!(" top={top}");
    out
}

/// `LIMIT/PERIOD` with the period in the largest unit that divides it
/// exactly, the count left out when it is 1: `100/min`, `5/10s`, `1/ms`.
/// (Periods are whole milliseconds: the grammar has no smaller unit.)
fn rate_spec_text(r: &RateSpec) -> String {
    let period = period_text(r.period_ns);
    match period.strip_prefix('1') {
        Some(unit) if unit.starts_with(|c: char| c.is_ascii_alphabetic()) => format!("{}/{unit}", r.limit),
        _ => format!("{}/{period}", r.limit),
    }
}

/// A duration in the largest unit that divides it exactly: `10s`, `1min`, `250ms`.
fn period_text(period_ns: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (86_400_000 * NANOS_PER_MS, "d"),
        (3_600_000 * NANOS_PER_MS, "h"),
        (60_000 * NANOS_PER_MS, "min"),
        (1_000 * NANOS_PER_MS, "s"),
        (NANOS_PER_MS, "ms"),
    ];
    let (unit_ns, unit) = UNITS.into_iter().find(|(ns, _)| period_ns % ns == 0).unwrap_or(UNITS[4]);
    format!("{}{unit}", period_ns / unit_ns)
}

/// `url` with its password masked ([`redact`]), unless there is none to
/// mask (`redis://u:@h`: masking nothing would turn it into a mask).
fn masked_url(url: &str) -> std::borrow::Cow<'_, str> {
    let shown = redact(url);
    // `redact` replaces the secret by MASK: an empty secret makes it longer by exactly MASK.
    if shown.len() == url.len() + MASK.len() {
        return std::borrow::Cow::Borrowed(url);
    }
    shown
}

/// rl_describe() writes a `url=` password as `***`; a url whose password is
/// exactly that mask is such an output fed back, and would fail to
/// authenticate at the first check (where `on_error=allow` would hide it):
/// refused here instead. A real password `***` can be percent-encoded.
fn refuse_masked_password(url: &str) -> Result<(), ConfigError> {
    if url.contains('@') && redact(url) == url {
        return err(format!(
            "bad value in {}: the password is \"{MASK}\", the mask rl_describe() prints in place of a password; \
             write the real one (a password that really is {MASK} is written %2A%2A%2A)",
            kv("url", url)
        ));
    }
    Ok(())
}

/// `LIMIT/PERIOD[,LIMIT/PERIOD...]`.
fn parse_rates(text: &str) -> Result<Vec<RateSpec>, ConfigError> {
    let mut rates = Vec::new();
    for part in text.split(',') {
        if rates.len() == MAX_RATES {
            return err(format!("{} has more than {MAX_RATES} rates", kv("rate", text)));
        }
        rates.push(parse_rate(part, text)?);
    }
    Ok(rates)
}

/// `concurrency=N [lease=DURATION]`, if given; `rate=` may not be.
fn parse_concurrency(
    slots: Option<&str>,
    lease: Option<&str>,
    rate: Option<&str>,
) -> Result<Option<ConcurrencySpec>, ConfigError> {
    let Some(v) = slots else {
        if let Some(l) = lease {
            return err(format!(
                "{} needs \"concurrency=N\" (a lease is what a concurrency limiter hands out)",
                kv("lease", l)
            ));
        }
        return Ok(None);
    };
    if let Some(r) = rate {
        return err(format!(
            "{} and {} are two kinds of limiter: create one limiter for each",
            kv("rate", r),
            kv("concurrency", v)
        ));
    }
    let max = crate::algorithm::MAX_SLOTS;
    let slots = match v.parse::<u32>() {
        Ok(n) if (1..=max as u32).contains(&n) && v.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return err(format!("bad value in {}: expected a whole number from 1 to {max}", kv("concurrency", v))),
    };
    let lease_ns = match lease {
        None => DEFAULT_LEASE_NS,
        Some(l) => parse_period(l).or_else(|why| err(format!("bad value in {}: {why}", kv("lease", l))))?,
    };
    Ok(Some(ConcurrencySpec { slots, lease_ns }))
}

fn parse_rate(part: &str, whole: &str) -> Result<RateSpec, ConfigError> {
    let bad = |why: &str| err(format!("bad rate {} in {}: {why}", quoted(part), kv("rate", whole)));
    let Some((limit, period)) = part.split_once('/') else {
        return bad("expected LIMIT/PERIOD, e.g. 100/minute");
    };
    let limit = match limit.parse::<u64>() {
        Ok(0) => return bad("LIMIT must be at least 1"),
        Ok(n) if limit.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return bad("LIMIT must be a whole number"),
    };
    let period_ns = match parse_period(period) {
        Ok(p) => p,
        Err(why) => return bad(why),
    };
    Ok(RateSpec { limit, period_ns, burst: limit })
}

/// A PERIOD (`[COUNT]UNIT`, e.g. `minute`, `10s`) in nanoseconds, or why not.
fn parse_period(period: &str) -> Result<u64, &'static str> {
    let bad = Err;
    let digits = period.bytes().take_while(u8::is_ascii_digit).count();
    let (count, unit) = period.split_at(digits);
    let count = if count.is_empty() {
        1
    } else {
        match count.parse::<u64>() {
            Ok(0) => return bad("PERIOD must be longer than zero"),
            Ok(n) => n,
            Err(_) => return bad("PERIOD is too long"),
        }
    };
    let unit_ns: u64 = match unit {
        "ms" => NANOS_PER_MS,
        "s" | "sec" | "second" => 1_000 * NANOS_PER_MS,
        "m" | "min" | "minute" => 60_000 * NANOS_PER_MS,
        "h" | "hour" => 3_600_000 * NANOS_PER_MS,
        "d" | "day" => 86_400_000 * NANOS_PER_MS,
        "" => return bad("PERIOD needs a unit: ms, s, m, h or d"),
        _ => return bad("unknown unit (expected ms, s, sec, second, m, min, minute, h, hour, d, day)"),
    };
    // Periods are capped at 1000 days so that every timestamp the algorithms
    // compute stays far inside u64 nanoseconds.
    match count.checked_mul(unit_ns) {
        Some(p) if p <= MAX_PERIOD_NS => Ok(p),
        _ => bad("PERIOD is longer than 1000 days"),
    }
}

fn parse_count(key: &str, v: &str) -> Result<u64, ConfigError> {
    match v.parse::<u64>() {
        Ok(0) => err(format!("bad value in {}: must be at least 1", kv(key, v))),
        Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => err(format!("bad value in {}: expected a whole number", kv(key, v))),
    }
}

/// `mode=`: octal with a leading 0, as chmod(1) writes it (`0600`, `0660`),
/// permission bits only (no setuid, setgid or sticky bit), and never
/// writable by others: any local user could then rewrite the limits. A
/// value without the leading 0 is refused rather than guessed at: `mode=600`
/// could mean octal 0600 or decimal 600 (octal 01130).
fn parse_mode(v: &str) -> Result<u32, ConfigError> {
    let digits = match v.strip_prefix('0') {
        Some(d) if (1..=3).contains(&d.len()) && d.bytes().all(|b| (b'0'..=b'7').contains(&b)) => d,
        _ => {
            return err(format!(
                "bad value in {}: expected octal permissions with a leading 0, such as 0600 or 0660",
                kv("mode", v)
            ))
        }
    };
    let mode = u32::from_str_radix(digits, 8).expect("1 to 3 octal digits");
    if mode & 0o002 != 0 {
        return err(format!(
            "bad value in {}: it lets others write the region (o+w), so any local user could rewrite the limits; \
             use 0600 (this user) or 0660 (this user and group)",
            kv("mode", v)
        ));
    }
    Ok(mode)
}

fn validate_shm_name(n: &str) -> Result<(), ConfigError> {
    let ok = n.len() >= 2
        && n.len() <= 200
        && n.starts_with('/')
        && !n[1..].contains('/')
        && n.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        err(format!(
            "bad value in {}: expected a POSIX shm name like /api-limits (one leading '/', no other '/', at most 200 characters)",
            kv("name", n)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn good_configs() {
        // (text, [(limit, period_ns, burst) of each rate])
        type Want = &'static [(u64, u64, u64)];
        let table: &[(&str, Want)] = &[
            ("rate=100/minute", &[(100, 60 * SEC, 100)]),
            ("rate=5/10s", &[(5, 10 * SEC, 5)]),
            ("rate=10/s,1000/hour", &[(10, SEC, 10), (1000, 3600 * SEC, 1000)]),
            ("rate=1/ms", &[(1, 1_000_000, 1)]),
            ("rate=3/2d", &[(3, 2 * 86400 * SEC, 3)]),
            ("rate=1/sec", &[(1, SEC, 1)]),
            ("  rate=7/second\tburst=20\n", &[(7, SEC, 20)]),
            ("rate=7/min,8/h,9/day", &[(7, 60 * SEC, 7), (8, 3600 * SEC, 8), (9, 86400 * SEC, 9)]),
        ];
        for (text, want) in table {
            let c = Config::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let got: Vec<_> = c.rates.iter().map(|r| (r.limit, r.period_ns, r.burst)).collect();
            assert_eq!(&got[..], *want, "{text}");
        }
        let c = Config::parse("rate=1/s").unwrap();
        assert_eq!(c.algorithm, Algorithm::TokenBucket);
        assert_eq!(c.backend, Backend::Memory);
        assert_eq!(c.capacity, DEFAULT_CAPACITY);
        assert_eq!(c.on_error, OnError::Allow);
        assert_eq!(c.mode, 0o600);
        assert_eq!(c.prefix, "rl:");
        assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(c.top, DEFAULT_TOP);
        for (text, top) in
            [("rate=1/s top=0", 0), ("rate=1/s top=1024", 1024), ("rate=1/s top=7 backend=shm name=/x", 7)]
        {
            assert_eq!(Config::parse(text).unwrap().top, top, "{text}");
        }
        let c = Config::parse("rate=1/s backend=shm name=/x mode=0640 capacity=9").unwrap();
        assert_eq!((c.backend, c.mode, c.capacity, c.timeout_ms), (Backend::Shm, 0o640, 9, DEFAULT_SHM_TIMEOUT_MS));
        let c = Config::parse("rate=1/s backend=shm name=/x timeout_ms=250").unwrap();
        assert_eq!(c.timeout_ms, 250);
        let c = Config::parse("rate=1/s backend=redis url=redis://h:1").unwrap();
        assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
        let c = Config::parse(
            "rate=1/s backend=redis url=redis://h:1/2 prefix=a: timeout_ms=5 on_error=deny algorithm=sliding_window",
        )
        .unwrap();
        assert_eq!((c.timeout_ms, c.on_error, c.algorithm), (5, OnError::Deny, Algorithm::SlidingWindow));
    }

    /// Random strings built from the grammar's own pieces never panic the
    /// parser, and every refusal says something.
    #[test]
    fn arbitrary_input_is_refused_cleanly() {
        const PIECES: &[&str] = &[
            "rate",
            "=",
            "/",
            ",",
            " ",
            "\t",
            "1",
            "0",
            "99999999999999999999",
            "s",
            "ms",
            "m",
            "h",
            "d",
            "day",
            "burst",
            "algorithm",
            "token_bucket",
            "fixed_window",
            "backend",
            "shm",
            "redis",
            "memory",
            "name",
            "/x",
            "url",
            "redis://h:1",
            "capacity",
            "mode",
            "0644",
            "timeout_ms",
            "on_error",
            "deny",
            "prefix",
            "\u{e9}",
            "\0",
            "-",
            "@",
            "://",
            ":",
            "redis://u:Zq7x@h:1",
            "\x1b",
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(x % 12) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(PIECES[(x % PIECES.len() as u64) as usize]);
            }
            match Config::parse(&text) {
                Err(e) => assert!(!e.0.is_empty() && !e.0.contains("Zq7x") && !e.0.contains('\x1b'), "{text:?}: {e}"),
                Ok(c) => assert!(!format!("{c:?}").contains("Zq7x"), "{text:?}"),
            }
        }
    }

    /// `mode=` is octal with a leading 0 and never lets others write.
    #[test]
    fn modes() {
        let shm = |m: &str| Config::parse(&format!("rate=1/s backend=shm name=/x mode={m}"));
        for (m, want) in [("0600", 0o600), ("0660", 0o660), ("0640", 0o640), ("0644", 0o644), ("0604", 0o604)] {
            assert_eq!(shm(m).unwrap_or_else(|e| panic!("mode={m}: {e}")).mode, want, "mode={m}");
        }
        for (m, why) in [
            ("777", "leading 0"),
            ("600", "leading 0"),
            ("0777", "o+w"),
            ("0602", "o+w"),
            ("0666", "o+w"),
            ("0002", "o+w"),
            ("01777", "leading 0"),
            ("00600", "leading 0"),
            ("0", "leading 0"),
            ("0o600", "leading 0"),
            ("+0600", "leading 0"),
            ("0999", "leading 0"),
        ] {
            let e = shm(m).expect_err(m).0;
            assert!(e.contains(&format!("\"mode={m}\"")) && e.contains(why), "mode={m}: {e}");
        }
    }

    /// A Redis password never reaches a message, whichever token quotes it.
    #[test]
    fn messages_mask_credentials() {
        for (text, why) in [
            ("rate=1/s backend=redis url=redis://:Zq7xPW@h:1 url=redis://:Zq7xPW@h:2", "key \"url\" given twice"),
            ("rate=1/s backend=redis ulr=redis://u:Zq7xPW@h:1", "unknown key \"ulr\" in \"ulr=redis://u:***@h:1\""),
            ("rate=1/s backend=redis redis://:Zq7x=PW@h:1", "unknown key in \"redis://:***@h:1\""),
            ("rate=1/s backend=redis redis://:Zq7xPW@h:1", "token \"redis://:***@h:1\" is not key=value"),
            ("rate=1/s backend=redis :Zq7x@PW@h:1", "token \"***@h:1\" is not key=value"),
        ] {
            let e = Config::parse(text).expect_err(text).0;
            assert!(e.contains(why) && !e.contains("Zq7x") && !e.contains("PW"), "{text}: {e}");
        }
        let c = Config::parse("rate=1/s backend=redis url=redis://u:Zq7xPW@h:1").unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("redis://u:***@h:1") && !debug.contains("Zq7x"), "{debug}");
    }

    /// Messages quote at most about 64 bytes of a token, with control
    /// characters escaped.
    #[test]
    fn quoted_text_is_bounded_and_escaped() {
        let huge = format!("rate=1/s algorithm={}", "x".repeat(1 << 20));
        let e = Config::parse(&huge).unwrap_err().0;
        assert!(e.len() < 300 && e.contains("\"algorithm=xxx") && e.contains("...\""), "{e}");
        let e = Config::parse("rate=1/s backend=me\x1b[2Jm\x07ory").unwrap_err().0;
        assert!(e.contains("\"backend=me\\x1b[2Jm\\x07ory\"") && !e.contains('\x1b'), "{e}");
        let e = Config::parse("rate=1/s b\x00\"x=1").unwrap_err().0;
        assert!(e.contains("unknown key in \"b\\x00\\\"x=1\"") && !e.contains('\0'), "{e}");
    }

    #[test]
    fn dry_run() {
        assert!(!Config::parse("rate=1/s").unwrap().dry_run);
        assert!(!Config::parse("rate=1/s dry_run=off").unwrap().dry_run);
        assert!(Config::parse("rate=1/s dry_run=on").unwrap().dry_run);
        for backend in ["backend=shm name=/x", "backend=redis url=redis://h:1"] {
            assert!(Config::parse(&format!("rate=1/s dry_run=on {backend}")).unwrap().dry_run, "{backend}");
        }
        for v in ["yes", "1", "true", "ON"] {
            let e = Config::parse(&format!("rate=1/s dry_run={v}")).unwrap_err().0;
            assert!(e.contains(&format!("\"dry_run={v}\"")) && e.contains("on or off"), "{e}");
        }
    }

    /// `backend=shm name=...` without `rate=` attaches; the keys that would
    /// restate the region's limits are refused, naming the token.
    #[test]
    fn attach() {
        let c = Config::parse("backend=shm name=/x").unwrap();
        assert!(c.attaches() && c.rates.is_empty());
        assert_eq!((c.backend, c.name.as_deref(), c.timeout_ms), (Backend::Shm, Some("/x"), DEFAULT_SHM_TIMEOUT_MS));
        let c = Config::parse("name=/x timeout_ms=5 on_error=deny dry_run=on backend=shm").unwrap();
        assert!(c.attaches());
        assert_eq!((c.timeout_ms, c.on_error, c.dry_run), (5, OnError::Deny, true));
        assert!(!Config::parse("rate=1/s backend=shm name=/x").unwrap().attaches());
        for (text, want) in [
            ("backend=shm name=/x algorithm=fixed_window", "\"algorithm=fixed_window\" needs \"rate=\""),
            ("backend=shm name=/x burst=5", "\"burst=5\" needs \"rate=\""),
            ("backend=shm name=/x capacity=5", "\"capacity=5\" needs \"rate=\""),
            ("backend=shm name=/x mode=0600", "\"mode=0600\" needs \"rate=\""),
            ("backend=shm name=/x top=8", "\"top=8\" needs \"rate=\""),
            ("backend=shm name=/x top=0", "\"top=0\" needs \"rate=\""),
            ("backend=shm name=/x algorithm=bogus", "\"algorithm=bogus\" needs \"rate=\""),
            ("backend=shm", "needs \"name=\""),
            ("backend=shm name=x", "bad value in \"name=x\""),
            ("backend=shm name=/x url=redis://h:1", "key \"url\" applies only to backend=redis"),
            ("backend=shm name=/x prefix=p:", "key \"prefix\" applies only to backend=redis"),
            ("backend=shm name=/x dry_run=maybe", "\"dry_run=maybe\""),
            ("name=/x", "missing required key \"rate\""),
            ("backend=memory name=/x", "missing required key \"rate\""),
            ("backend=redis url=redis://h:1", "missing required key \"rate\""),
        ] {
            match Config::parse(text) {
                Ok(c) => panic!("{text:?} was accepted: {c:?}"),
                Err(e) => assert!(e.0.contains(want), "{text:?}: message {:?} lacks {want:?}", e.0),
            }
        }
    }

    #[test]
    fn control_characters_in_values_are_refused() {
        for text in [
            "rate=1/s backend=redis url=redis://h:1 prefix=a\x1b[2Jb",
            "rate=1/s\x0b",
            "rate=1/s\0",
            "rate=1/s backend=redis url=redis://h:1 prefix=\u{202e}gnp.",
            "rate=1/s backend=redis url=redis://h:1 prefix=a\u{85}b",
        ] {
            let e = Config::parse(text).unwrap_err().0;
            assert!(e.contains("control characters") && !e.contains('\x1b'), "{text:?}: {e}");
        }
        // Whitespace separates tokens, wherever it is.
        assert!(Config::parse("\r\nrate=1/s\x0cdry_run=on\n").unwrap().dry_run);
    }

    #[test]
    fn canonical_descriptions() {
        for (text, want) in [
            ("rate=100/minute", "rate=100/min algorithm=token_bucket burst=100 capacity=100000 top=32 backend=memory on_error=allow dry_run=off"),
            (
                "rate=5/10s,1000/hour algorithm=sliding_window capacity=7 on_error=deny dry_run=on top=0",
                "rate=5/10s,1000/h algorithm=sliding_window capacity=7 top=0 backend=memory on_error=deny dry_run=on",
            ),
            ("rate=0007/250ms burst=9 top=0010", "rate=7/250ms algorithm=token_bucket burst=9 capacity=100000 top=10 backend=memory on_error=allow dry_run=off"),
            ("rate=1/60000ms,2/24h,3/2d,4/1000ms", "rate=1/min,2/d,3/2d,4/s algorithm=token_bucket capacity=100000 top=32 backend=memory on_error=allow dry_run=off"),
            (
                "rate=1/s algorithm=fixed_window backend=shm name=/api mode=0640 top=1024",
                "rate=1/s algorithm=fixed_window capacity=100000 top=1024 backend=shm name=/api mode=0640 timeout_ms=1000 on_error=allow dry_run=off",
            ),
            ("backend=shm name=/api timeout_ms=5", "backend=shm name=/api timeout_ms=5 on_error=allow dry_run=off"),
            (
                "rate=1/s backend=redis url=redis://alice:s3cret@h:1/2 prefix=\"p\"=:",
                "rate=1/s algorithm=token_bucket burst=1 top=32 backend=redis url=redis://alice:***@h:1/2 prefix=\"p\"=: timeout_ms=50 on_error=allow dry_run=off",
            ),
        ] {
            assert_eq!(Config::parse(text).unwrap().describe(), want, "{text}");
        }
    }

    /// rl_describe()'s mask, fed back, is refused: it is not the password.
    #[test]
    fn a_masked_password_is_refused() {
        for url in ["redis://u:***@h:1", "redis://:***@h:1", "redis://***@h:1", "redis+cluster://u:***@a:1,b:2"] {
            let e = Config::parse(&format!("rate=1/s backend=redis url={url}")).unwrap_err().0;
            assert!(e.contains("the mask rl_describe() prints") && e.contains("%2A%2A%2A"), "{url}: {e}");
        }
        for url in ["redis://u:%2A%2A%2A@h:1", "redis://u:****@h:1", "redis://u@h:1", "redis://h:1"] {
            let ok = Config::parse(&format!("rate=1/s backend=redis url={url}"));
            assert!(ok.is_ok(), "{url}: {ok:?}");
        }
    }

    /// parse → describe → parse gives an equal configuration, for many
    /// generated ones (every key, every backend, every unit spelling, in any
    /// order, with any whitespace), and describe is a fixed point.
    #[test]
    fn describe_round_trips() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        const UNITS: [&str; 11] = ["ms", "s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"];
        const PREFIXES: [&str; 5] = ["rl:", "a=b", "\"q\"", "\u{e9}t\u{e9}:", "x{y}"];
        let (mut accepted, mut masked) = (0, 0);
        for _ in 0..20_000 {
            let mut tokens: Vec<String> = Vec::new();
            let backend = next(3);
            let attach = backend == 1 && next(4) == 0;
            let n_rates = 1 + next(3) as usize + if next(8) == 0 { 5 } else { 0 };
            if !attach {
                let rates: Vec<String> = (0..n_rates)
                    .map(|_| {
                        let limit = match next(4) {
                            0 => 1 + next(10),
                            1 => 1 + next(1 << 20),
                            2 => 1 + next(1 << 40),
                            _ => 1 + next(1000),
                        };
                        let zeros = if next(10) == 0 { "000" } else { "" };
                        let count = match next(3) {
                            0 => String::new(),
                            _ => (1 + next(90)).to_string(),
                        };
                        format!("{zeros}{limit}/{count}{}", UNITS[next(UNITS.len() as u64) as usize])
                    })
                    .collect();
                tokens.push(format!("rate={}", rates.join(",")));
                if next(2) == 0 {
                    tokens.push(format!(
                        "algorithm={}",
                        ["token_bucket", "fixed_window", "sliding_window"][next(3) as usize]
                    ));
                }
                if next(3) == 0 {
                    tokens.push(format!("burst={}", 1 + next(5000)));
                }
                if backend != 2 && next(2) == 0 {
                    tokens.push(format!("capacity={}", 1 + next(1 << 20)));
                }
                if next(2) == 0 {
                    let top = [0, 1, 32, 1024, next(1025), next(1025)][next(6) as usize];
                    let zeros = if next(10) == 0 { "00" } else { "" };
                    tokens.push(format!("top={zeros}{top}"));
                }
            }
            match backend {
                0 => {
                    if next(3) == 0 {
                        tokens.push("backend=memory".into());
                    }
                }
                1 => {
                    tokens.push("backend=shm".into());
                    tokens.push(format!("name=/r{}", next(100)));
                    if !attach && next(3) == 0 {
                        tokens.push(format!("mode={}", ["0600", "0660", "0640", "0400", "0644"][next(5) as usize]));
                    }
                }
                _ => {
                    tokens.push("backend=redis".into());
                    let creds = ["", "", "u:Zq7xPW@", ":Zq7xPW@", "Zq7xPW@", "u:@"][next(6) as usize];
                    let url = match next(3) {
                        0 => format!("redis://{creds}h:{}", 1 + next(65535)),
                        1 => format!("redis://{creds}[::1]:6379/{}", next(16)),
                        _ => format!("redis+cluster://{creds}a:1,b:2"),
                    };
                    tokens.push(format!("url={url}"));
                    if next(2) == 0 {
                        tokens.push(format!("prefix={}", PREFIXES[next(PREFIXES.len() as u64) as usize]));
                    }
                }
            }
            if backend != 0 && next(2) == 0 {
                tokens.push(format!("timeout_ms={}", 1 + next(60_000)));
            }
            if next(2) == 0 {
                tokens.push(format!("on_error={}", ["allow", "deny"][next(2) as usize]));
            }
            if next(2) == 0 {
                tokens.push(format!("dry_run={}", ["on", "off"][next(2) as usize]));
            }
            for i in (1..tokens.len()).rev() {
                tokens.swap(i, next(i as u64 + 1) as usize);
            }
            let mut text = String::new();
            for t in &tokens {
                text.push_str(t);
                text.push_str([" ", "\t", "\n  ", "\r\n"][next(4) as usize]);
            }
            let Ok(c) = Config::parse(&text) else { continue };
            accepted += 1;
            let d = c.describe();
            assert!(!d.contains("Zq7x") && !d.chars().any(|c| c.is_whitespace() && c != ' '), "{text:?} -> {d:?}");
            match Config::parse(&d) {
                Ok(again) => {
                    assert_eq!(again, c, "{text:?} -> {d:?}");
                    assert_eq!(again.describe(), d, "{text:?}");
                }
                Err(e) => {
                    // Only a password, masked, keeps the text from parsing.
                    assert!(c.url.as_deref().is_some_and(|u| u.contains("Zq7x")), "{text:?} -> {d:?}: {e}");
                    assert!(e.0.contains("the mask rl_describe() prints"), "{text:?}: {e}");
                    let restored = d.replacen(MASK, "Zq7xPW", 1);
                    assert_eq!(Config::parse(&restored).as_ref(), Ok(&c), "{restored:?}");
                    masked += 1;
                }
            }
        }
        assert!(accepted > 5000 && masked > 500, "{accepted} configurations accepted, {masked} with a password");
    }

    #[test]
    fn bad_configs_name_the_token() {
        let table: &[(&str, &str)] = &[
            ("", "missing required key \"rate\""),
            ("burts=5 rate=1/s", "unknown key \"burts\""),
            ("rate=1/s rate=2/s", "key \"rate\" given twice"),
            ("rate", "token \"rate\" is not key=value"),
            ("rate=", "empty value in \"rate=\""),
            ("rate=abc", "bad rate \"abc\""),
            ("rate=0/s", "LIMIT must be at least 1"),
            ("rate=-1/s", "bad rate \"-1/s\""),
            ("rate=+1/s", "LIMIT must be a whole number"),
            ("rate=5/0s", "PERIOD must be longer than zero"),
            ("rate=5/fortnight", "unknown unit"),
            ("rate=5/", "PERIOD needs a unit"),
            ("rate=/s", "bad rate \"/s\""),
            ("rate=5/s,", "bad rate \"\" in \"rate=5/s,\""),
            ("rate=5/s,,1/m", "bad rate \"\""),
            ("concurrency=0", "expected a whole number from 1 to 1024"),
            ("concurrency=1025", "expected a whole number from 1 to 1024"),
            ("concurrency=100000", "\"concurrency=100000\""),
            ("concurrency=-1", "\"concurrency=-1\""),
            ("concurrency=2 lease=0s", "\"lease=0s\": PERIOD must be longer than zero"),
            ("concurrency=2 lease=5", "\"lease=5\""),
            ("concurrency=2 lease=1001d", "longer than 1000 days"),
            ("lease=5s", "\"lease=5s\" needs \"concurrency=N\""),
            ("rate=1/s concurrency=2", "two kinds of limiter"),
            ("concurrency=2 algorithm=fixed_window", "applies only to rate limiters"),
            ("concurrency=2 burst=3", "applies only to rate limiters"),
            ("backend=shm name=/x lease=5s", "needs \"concurrency=N\""),
            ("rate=5/1001d", "longer than 1000 days"),
            ("rate=99999999999999999999/s", "LIMIT must be a whole number"),
            ("rate=1/s,1/s,1/s,1/s,1/s,1/s,1/s,1/s,1/s", "more than 8 rates"),
            ("rate=1/s algorithm=leaky", "bad value in \"algorithm=leaky\""),
            ("rate=1/s,2/m burst=3", "needs a single rate"),
            ("rate=1/s burst=0", "\"burst=0\": must be at least 1"),
            ("rate=1/s burst=x", "\"burst=x\": expected a whole number"),
            ("rate=1/day burst=2001", "takes more than 2000 days to refill"),
            ("rate=1/s algorithm=fixed_window burst=3", "only to algorithm=token_bucket"),
            ("rate=1/s backend=disk", "bad value in \"backend=disk\""),
            ("rate=1/s on_error=maybe", "bad value in \"on_error=maybe\""),
            ("rate=1/s capacity=0", "\"capacity=0\": must be at least 1"),
            ("rate=1/s capacity=99999999999", "above the maximum"),
            ("rate=1/s backend=redis url=redis://x timeout_ms=abc", "\"timeout_ms=abc\""),
            ("rate=1/s backend=shm name=/x mode=999", "\"mode=999\""),
            ("rate=1/s backend=shm name=/x mode=01777", "\"mode=01777\""),
            ("rate=1/s backend=shm", "needs \"name=\""),
            ("rate=1/s backend=shm name=x", "bad value in \"name=x\""),
            ("rate=1/s backend=shm name=/a/b", "bad value in \"name=/a/b\""),
            ("rate=1/s backend=redis", "needs \"url=\""),
            ("rate=1/s name=/x", "key \"name\" applies only to backend=shm"),
            ("rate=1/s url=redis://x", "key \"url\" applies only to backend=redis"),
            ("rate=1/s backend=redis url=redis://x capacity=5", "key \"capacity\" applies only"),
            ("rate=1/s timeout_ms=5", "key \"timeout_ms\" applies only to backend=shm or backend=redis"),
            ("rate=1/s backend=memory timeout_ms=5", "key \"timeout_ms\" applies only"),
            ("rate=1/s backend=shm name=/x timeout_ms=0", "\"timeout_ms=0\": must be at least 1"),
            ("rate=1/s backend=shm name=/x timeout_ms=60001", "above the maximum 60000"),
            ("rate=1/s top=1025", "bad value in \"top=1025\": expected a whole number from 0 to 1024"),
            ("rate=1/s top=-1", "bad value in \"top=-1\""),
            ("rate=1/s top=+3", "bad value in \"top=+3\""),
            ("rate=1/s top=8 top=9", "key \"top\" given twice"),
        ];
        for (text, want) in table {
            match Config::parse(text) {
                Ok(c) => panic!("{text:?} was accepted: {c:?}"),
                Err(e) => assert!(e.0.contains(want), "{text:?}: message {:?} lacks {want:?}", e.0),
            }
        }
    }

    #[test]
    fn concurrency_limiters() {
        let c = Config::parse("concurrency=16").unwrap();
        assert_eq!(c.concurrency, Some(ConcurrencySpec { slots: 16, lease_ns: DEFAULT_LEASE_NS }));
        assert!(c.rates.is_empty() && !c.attaches());
        assert_eq!(
            c.describe(),
            "concurrency=16 lease=1min capacity=100000 top=32 backend=memory on_error=allow dry_run=off"
        );
        let c = Config::parse("concurrency=1024 lease=1500ms backend=shm name=/c").unwrap();
        assert_eq!(c.concurrency, Some(ConcurrencySpec { slots: 1024, lease_ns: 1500 * NANOS_PER_MS }));
        assert!(c.describe().starts_with("concurrency=1024 lease=1500ms capacity=100000 top=32 backend=shm name=/c"));
        assert_eq!(Config::parse(&c.describe()).unwrap(), c);
        let c = Config::parse("concurrency=1 lease=2h backend=redis url=redis://h:1").unwrap();
        assert!(c.describe().starts_with("concurrency=1 lease=2h top=32 backend=redis"), "{}", c.describe());
        assert_eq!(Config::parse(&c.describe()).unwrap(), c);
    }
}
