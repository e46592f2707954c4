//! The Lua scripts and how one call is put to them: the key names, the
//! arguments and the replies. `check.lua` runs the checks and adjusts of a
//! rate limiter (its header documents its arguments and reply), `leases.lua`
//! the acquires, renews and releases of a concurrency limiter (likewise).
//!
//! **Key names.** A key's rates share one Redis key, named by the rates
//! (one GET and one SET per check, whatever their number):
//!
//! ```text
//! {<prefix><key>}:<rate>[,<rate>...]
//!     <rate> = t<limit>/<period_us>/<burst>    token bucket
//!            | f<limit>/<period_us>            fixed window
//!            | s<limit>/<period_us>            sliding window
//! {<prefix><key>}:c<N>/<lease_us>               concurrency limiter
//! ```
//!
//! The rates are part of the name, so limiters with other rates (or a rolling
//! deploy that changes them) never read each other's state as their own.
//! (Earlier builds kept one Redis key per rate, each named as a one-rate
//! key is now. A one-rate limiter's key is the same in both. A limiter of
//! several rates starts from fresh state when upgraded, and during a
//! rolling upgrade servers of the two builds count it separately, as
//! they do across a deploy that changes the rates: README, "Upgrading".)
//! Keys are binary: `<key>` is the caller's bytes unchanged (NULs included).
//! The braces are a Redis Cluster hash tag: the keys of one user key hash to
//! the same slot. Redis hashes the bytes
//! between the first `{` and the first `}` after it; since our `{` comes first
//! and all names of one check share everything up to the first `}`, they
//! share the tag even when `<key>` itself contains braces. The tag is never
//! empty because the prefix is non-empty and may not contain `{` or `}`
//! (checked at `rl_create`). A concurrency limiter has one key per key, a
//! sorted set of its leases (`leases.lua`), under the same hash-tag rule.

use redis::{Cmd, Value};

use crate::algorithm::{Algorithm, Outcome, Rate, Verdict, NEVER};

/// The rate script's source (checks and adjusts).
pub const SOURCE: &str = include_str!("check.lua");
/// The concurrency script's source (acquire, renew, release).
pub const LEASES_SOURCE: &str = include_str!("leases.lua");

/// The largest |delta| an adjust sends (2^50, the script's exact range for
/// one count: `rates.rs`). An `i64` may be up to 2^63, which Lua's doubles
/// cannot hold exactly; and nothing is lost by the clamp: every limit and
/// burst is at most 2^50, so a refund of 2^50 units empties any window, and
/// a charge of 2^50 units puts any rate as far into debt as the script keeps
/// (`check.lua`: 2^51 µs ahead, or a count of 2^51).
pub const MAX_DELTA: i64 = 1 << 50;

/// `delta` within what the script takes (see [`MAX_DELTA`]).
pub fn clamp_delta(delta: i64) -> i64 {
    delta.clamp(-MAX_DELTA, MAX_DELTA)
}

/// What the rate script is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `rl_check` of a cost (0: a peek).
    Check(u64),
    /// `rl_adjust` by a delta (already clamped: [`clamp_delta`]).
    Adjust(i64),
}

/// The line of a script that ends its definitions: above it, what a Redis
/// Function library runs once when loaded; below it, what its function runs
/// per call (`check.lua` explains).
const EACH_CALL: &str = "\n-- each call --\n";

/// A script and its SHA-1 (what `EVALSHA` names it by), and the name of
/// the Redis Function made of it (see [`Script::library`]).
pub struct Script {
    pub source: &'static str,
    pub sha: String,
    /// `rl_<sha>`: the name of the library and of its one function. The
    /// source's hash is in it because a function name is global to the
    /// server: two versions of the library (a rolling deploy) never replace
    /// each other's function.
    pub function: String,
}

impl Script {
    /// The rate script (`check.lua`).
    pub fn new() -> Script {
        Script::of(SOURCE)
    }

    /// The concurrency script (`leases.lua`).
    pub fn leases() -> Script {
        Script::of(LEASES_SOURCE)
    }

    fn of(source: &'static str) -> Script {
        let sha = redis::Script::new(source).get_hash().to_owned();
        Script { source, function: format!("rl_{sha}"), sha }
    }

    /// The source as a Redis Function library (Redis >= 7, `FUNCTION
    /// LOAD`): the lines above the script's "-- each call --" line are the
    /// library's body, run once when it is loaded; the lines from it on are
    /// the body of its one function, `function(KEYS, ARGV)`, registered
    /// under [`Script::function`]. So what the script only defines (its
    /// helper functions) is made once, not on every call as with `EVAL`.
    /// A script without that line becomes the function whole.
    pub fn library(&self) -> String {
        let (defs, each_call) = match self.source.find(EACH_CALL) {
            Some(i) => self.source.split_at(i + 1),
            None => ("", self.source),
        };
        let name = &self.function;
        format!("#!lua name={name}\n{defs}redis.register_function('{name}', function(KEYS, ARGV)\n{each_call}\nend)\n")
    }

    /// `FUNCTION LOAD REPLACE` of [`Script::library`]: REPLACE, so that it
    /// succeeds where the library is loaded already (on every primary of a
    /// cluster, where the redis crate sends it, some may have it).
    pub fn function_load(&self) -> Cmd {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(self.library());
        cmd
    }

    /// `FCALL rl_<sha> 1 key op rate-args... [now]`: the same call as
    /// [`Script::evalsha`], to the script's Redis Function.
    pub fn fcall(&self, key: &[u8], rates: &[Rate], op: Op, now_us: Option<u64>) -> Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&self.function);
        push_args(&mut cmd, key, rates, op, now_us);
        cmd
    }

    /// `EVALSHA sha 1 key op rate-args... [now]` for one check or adjust
    /// of `key` (its Redis key name: [`key_name`]). `now_us` overrides the
    /// server's clock (tests only).
    pub fn evalsha(&self, key: &[u8], rates: &[Rate], op: Op, now_us: Option<u64>) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha);
        push_args(&mut cmd, key, rates, op, now_us);
        cmd
    }

    /// The same call as `EVAL` with the full source: used once after a
    /// `NOSCRIPT` reply; it runs the call and puts the script back into the
    /// server's script cache, so the next `EVALSHA` finds it.
    pub fn eval(&self, key: &[u8], rates: &[Rate], op: Op, now_us: Option<u64>) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.source);
        push_args(&mut cmd, key, rates, op, now_us);
        cmd
    }

    /// `EVALSHA` (or, with `full`, `EVAL`) of the concurrency script on the
    /// key `name`: `args` are its ARGV (see `leases.lua`).
    pub fn leases_call(&self, full: bool, name: &[u8], args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd(if full { "EVAL" } else { "EVALSHA" });
        if full {
            cmd.arg(self.source);
        } else {
            cmd.arg(&self.sha);
        }
        cmd.arg(1).arg(name);
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

fn push_args(cmd: &mut Cmd, key: &[u8], rates: &[Rate], op: Op, now_us: Option<u64>) {
    cmd.arg(1).arg(key);
    // The operation and its amount in one argument, the time override
    // (tests) last and only when given: each argument costs the server
    // (`check.lua`'s header).
    match op {
        Op::Check(cost) => cmd.arg(cost),
        Op::Adjust(delta) => cmd.arg(format!("a{}", clamp_delta(delta))),
    };
    for r in rates {
        let code = match r.algorithm {
            Algorithm::TokenBucket => "t",
            Algorithm::FixedWindow => "f",
            Algorithm::SlidingWindow => "s",
        };
        // (each algorithm reads two numbers: `check.lua`'s header)
        match r.algorithm {
            Algorithm::TokenBucket => cmd.arg(code).arg(r.burst).arg(r.interval),
            Algorithm::FixedWindow | Algorithm::SlidingWindow => cmd.arg(code).arg(r.limit).arg(r.period),
        };
    }
    if let Some(t) = now_us {
        cmd.arg(t);
    }
}

/// The longest reset an allowed check of `rate` can have, in µs: how the
/// script packs an allowed check's reply into one integer (`check.lua`'s
/// header says the same).
fn longest_reset(rate: &Rate) -> u64 {
    match rate.algorithm {
        Algorithm::TokenBucket => rate.bucket_ticks,
        Algorithm::FixedWindow => rate.period,
        Algorithm::SlidingWindow => 2 * rate.period,
    }
}

/// The Redis key name of `key` on a concurrency limiter of `slots` leases
/// of `lease_us` µs each (see the module documentation).
pub fn lease_key_name(prefix: &[u8], key: &[u8], slots: usize, lease_us: u64) -> Vec<u8> {
    let suffix = format!("}}:c{slots}/{lease_us}");
    let mut name = Vec::with_capacity(1 + prefix.len() + key.len() + suffix.len());
    name.push(b'{');
    name.extend_from_slice(prefix);
    name.extend_from_slice(key);
    name.extend_from_slice(suffix.as_bytes());
    name
}

/// The reply of the concurrency script's acquire: the outcome in µs, or
/// None if the id was taken (see `leases.lua`).
pub fn parse_acquire(value: &Value) -> Result<Option<Outcome>, String> {
    let bad = || format!("unexpected reply from the concurrency script: {}", shown(value));
    let Value::Array(items) = value else { return Err(bad()) };
    let mut n = Vec::with_capacity(5);
    for item in items {
        match item {
            Value::Int(v) => n.push(*v),
            _ => return Err(bad()),
        }
    }
    match n[..] {
        [-1] => Ok(None),
        [allowed @ (0 | 1), limit, remaining, reset, retry]
            if limit > 0 && (0..=limit).contains(&remaining) && reset >= 0 && retry >= 0 =>
        {
            Ok(Some(Outcome {
                allowed: allowed == 1,
                limit: limit as u64,
                remaining: remaining as u64,
                reset: reset as u64,
                retry_after: retry as u64,
            }))
        }
        _ => Err(bad()),
    }
}

/// The reply of the concurrency script's renew or release: whether the
/// lease was held.
pub fn parse_held(value: &Value) -> Result<bool, String> {
    match value {
        Value::Int(0) => Ok(false),
        Value::Int(1) => Ok(true),
        _ => Err(format!("unexpected reply from the concurrency script: {}", shown(value))),
    }
}

/// The start of a reply of any shape and size, to quote in an error.
fn shown(value: &Value) -> String {
    let mut text = format!("{value:?}");
    if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// The Redis key name of `key`'s rates (see the module documentation).
pub fn key_name(prefix: &[u8], key: &[u8], rates: &[Rate]) -> Vec<u8> {
    let mut name = Vec::with_capacity(2 + prefix.len() + key.len() + 24 * rates.len());
    name.push(b'{');
    name.extend_from_slice(prefix);
    name.extend_from_slice(key);
    name.extend_from_slice(b"}:");
    for (i, r) in rates.iter().enumerate() {
        let rate = match r.algorithm {
            Algorithm::TokenBucket => format!("t{}/{}/{}", r.limit, r.period, r.burst),
            Algorithm::FixedWindow => format!("f{}/{}", r.limit, r.period),
            Algorithm::SlidingWindow => format!("s{}/{}", r.limit, r.period),
        };
        if i > 0 {
            name.push(b',');
        }
        name.extend_from_slice(rate.as_bytes());
    }
    name
}

/// The script's reply to a call with `rates` as a verdict in microsecond
/// ticks: an allowed check packed into one integer, or any verdict as six
/// (`check.lua`'s header).
pub fn parse_reply(value: &Value, rates: &[Rate]) -> Result<Verdict, String> {
    // A reply of another shape can be anything, of any size: show its start.
    let bad = || format!("unexpected reply from the rate-limit script: {}", shown(value));
    if let Value::Int(v) = *value {
        // (remaining * (R + 1) + reset) * rates + index, below 2^53
        let n = rates.len() as u64;
        let Ok(v) = u64::try_from(v) else { return Err(bad()) };
        if n == 0 || v >= 1 << 53 {
            return Err(bad());
        }
        let index = (v % n) as usize;
        let rate = &rates[index];
        let span = longest_reset(rate) + 1;
        let (remaining, reset) = ((v / n) / span, (v / n) % span);
        if remaining > rate.burst {
            return Err(bad());
        }
        let outcome = Outcome { allowed: true, limit: rate.burst, remaining, reset, retry_after: 0 };
        return Ok(Verdict { index, outcome });
    }
    let rates = rates.len();
    let Value::Array(items) = value else { return Err(bad()) };
    let mut n = [0i64; 6];
    if items.len() != 6 {
        return Err(bad());
    }
    for (slot, item) in n.iter_mut().zip(items) {
        match item {
            Value::Int(v) => *slot = *v,
            _ => return Err(bad()),
        }
    }
    let [index, allowed, limit, remaining, reset, retry] = n;
    if index < 0 || index as usize >= rates || limit < 0 || remaining < 0 || reset < 0 || retry < -1 {
        return Err(bad());
    }
    Ok(Verdict {
        index: index as usize,
        outcome: Outcome {
            allowed: allowed == 1,
            limit: limit as u64,
            remaining: remaining as u64,
            reset: reset as u64,
            retry_after: if retry == -1 { NEVER } else { retry as u64 },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_for_all_rates() {
        let rates = [
            Rate::new(Algorithm::TokenBucket, 10, 1_000_000, 20),
            Rate::new(Algorithm::SlidingWindow, 1000, 3_600_000_000, 1000),
            Rate::new(Algorithm::FixedWindow, 5, 60_000_000, 5),
        ];
        // One rate: the name every build gave it.
        assert_eq!(key_name(b"rl:", b"a}b\0c", &rates[..1]), b"{rl:a}b\0c}:t10/1000000/20".to_vec());
        assert_eq!(
            key_name(b"rl:", b"a}b\0c", &rates),
            b"{rl:a}b\0c}:t10/1000000/20,s1000/3600000000,f5/60000000".to_vec()
        );
        // The hash tag is "rl:a" however many rates, and the concurrency
        // limiter's name shares the rule.
        let tag = |n: &[u8]| {
            let close = n.iter().position(|&b| b == b'}').unwrap();
            n[1..close].to_vec()
        };
        assert_eq!(tag(&key_name(b"rl:", b"a}b\0c", &rates)), b"rl:a".to_vec());
        assert_eq!(tag(&lease_key_name(b"rl:", b"a}b\0c", 2, 1)), b"rl:a".to_vec());
    }

    #[test]
    fn replies() {
        let ok = Value::Array(vec![
            Value::Int(1),
            Value::Int(0),
            Value::Int(5),
            Value::Int(0),
            Value::Int(9),
            Value::Int(-1),
        ]);
        let one = [Rate::new(Algorithm::TokenBucket, 10, 1_000_000, 20)];
        let two = [one[0], Rate::new(Algorithm::SlidingWindow, 1000, 60_000_000, 1000)];
        let v = parse_reply(&ok, &two).unwrap();
        assert_eq!((v.index, v.outcome.allowed, v.outcome.retry_after), (1, false, NEVER));
        assert!(parse_reply(&ok, &one).is_err());
        assert!(parse_reply(&Value::Nil, &one).is_err());
        // An allowed check packed into one integer: index 1 (the sliding
        // window, longest reset 2 minutes), 7 remaining, reset 5 µs.
        let v = parse_reply(&Value::Int((7 * 120_000_001 + 5) * 2 + 1), &two).unwrap();
        assert_eq!(v.index, 1);
        assert_eq!(v.outcome, Outcome { allowed: true, limit: 1000, remaining: 7, reset: 5, retry_after: 0 });
        // The bucket (20 of 100 ms each): longest reset 2 s.
        let v = parse_reply(&Value::Int(20 * 2_000_001 + 2_000_000), &one).unwrap();
        assert_eq!((v.index, v.outcome.limit, v.outcome.remaining, v.outcome.reset), (0, 20, 20, 2_000_000));
        for bad in [21 * 2_000_001, -1, 1 << 53] {
            assert!(parse_reply(&Value::Int(bad), &one).is_err(), "{bad}");
        }
        assert!(parse_reply(&Value::Int(0), &[]).is_err());
        // An odd reply is shown, but only its start.
        let huge = Value::BulkString(vec![b'x'; 1 << 20]);
        let e = parse_reply(&huge, &one).unwrap_err();
        assert!(e.starts_with("unexpected reply") && e.ends_with("...") && e.len() < 300, "{}", &e[..e.len().min(300)]);
    }

    #[test]
    fn lease_names_share_the_hash_tag_rule() {
        assert_eq!(lease_key_name(b"rl:", b"a}b\0{", 4, 30_000_000), b"{rl:a}b\0{}:c4/30000000".to_vec());
    }

    #[test]
    fn deltas_are_clamped_to_the_exact_range() {
        assert_eq!(clamp_delta(i64::MAX), 1 << 50);
        assert_eq!(clamp_delta(i64::MIN), -(1 << 50));
        assert_eq!(clamp_delta(-7), -7);
        let cmd = Script::new().evalsha(b"k", &[], Op::Adjust(i64::MIN), None);
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args[4..], [b"a-1125899906842624".to_vec()]);
    }

    #[test]
    fn the_library_is_the_script_split_at_its_each_call_line() {
        let s = Script::new();
        assert_eq!(s.function, format!("rl_{}", s.sha));
        let lib = s.library();
        let (defs, each_call) = SOURCE.split_at(SOURCE.find(EACH_CALL).expect("check.lua has the line") + 1);
        let head = format!("#!lua name={}\n", s.function);
        let register = format!("redis.register_function('{}', function(KEYS, ARGV)\n", s.function);
        assert_eq!(lib, format!("{head}{defs}{register}{each_call}\nend)\n"));
        // No KEYS or ARGV above the line: in a library they would be
        // globals, which a function may not read.
        for word in ["KEYS", "ARGV"] {
            assert!(
                !defs.lines().any(|l| !l.trim_start().starts_with("--") && l.contains(word)),
                "{word} above the line"
            );
        }
        // A script without the line is the function whole.
        let leases = Script::leases().library();
        assert!(leases.ends_with(&format!("function(KEYS, ARGV)\n{LEASES_SOURCE}\nend)\n")));
    }

    #[test]
    fn lease_replies() {
        let ints = |v: &[i64]| Value::Array(v.iter().map(|&i| Value::Int(i)).collect());
        let o = parse_acquire(&ints(&[0, 4, 0, 900, 100])).unwrap().unwrap();
        assert_eq!((o.allowed, o.limit, o.remaining, o.reset, o.retry_after), (false, 4, 0, 900, 100));
        assert_eq!(parse_acquire(&ints(&[-1])).unwrap(), None);
        for bad in [ints(&[1, 4, 5, 0, 0]), ints(&[2, 4, 0, 0, 0]), ints(&[1, 4, 0, -1, 0]), ints(&[]), Value::Nil] {
            assert!(parse_acquire(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_held(&Value::Int(1)), Ok(true));
        assert_eq!(parse_held(&Value::Int(0)), Ok(false));
        assert!(parse_held(&Value::Int(2)).is_err());
    }
}
