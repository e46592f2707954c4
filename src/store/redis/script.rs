//! The Lua script (check.lua) and how one check is put to it: the key names,
//! the arguments and the reply.
//!
//! **Key names.** Each rate of a key has its own Redis key, so that each gets
//! the exact TTL of its own state:
//!
//! ```text
//! {<prefix><key>}:t<limit>/<period_us>/<burst>     token bucket
//! {<prefix><key>}:f<limit>/<period_us>             fixed window
//! {<prefix><key>}:s<limit>/<period_us>             sliding window
//! ```
//!
//! The rate is part of the name, so limiters with other rates (or a rolling
//! deploy that changes them) never read each other's state as their own.
//! Keys are binary: `<key>` is the caller's bytes unchanged (NULs included).
//! The braces are a Redis Cluster hash tag: every key of one check hashes to
//! the same slot, so the script may touch them all. Redis hashes the bytes
//! between the first `{` and the first `}` after it; since our `{` comes first
//! and all names of one check share everything up to the first `}`, they
//! share the tag even when `<key>` itself contains braces. The tag is never
//! empty because the prefix is non-empty and may not contain `{` or `}`
//! (checked at `rl_create`).

use redis::{Cmd, Value};

use crate::algorithm::{Algorithm, Outcome, Rate, Verdict, NEVER};

/// The script's source.
pub const SOURCE: &str = include_str!("check.lua");

/// The script and its SHA-1 (what `EVALSHA` names it by).
pub struct Script {
    pub sha: String,
}

impl Script {
    pub fn new() -> Script {
        Script { sha: redis::Script::new(SOURCE).get_hash().to_owned() }
    }

    /// `EVALSHA sha n key... cost now rate-args...` for one check.
    /// `now_us` overrides the server's clock (tests only).
    pub fn evalsha(&self, keys: &[Vec<u8>], rates: &[Rate], cost: u64, now_us: Option<u64>) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha);
        push_args(&mut cmd, keys, rates, cost, now_us);
        cmd
    }

    /// The same call as `EVAL` with the full source: used once after a
    /// `NOSCRIPT` reply; it runs the check and puts the script back into the
    /// server's script cache, so the next `EVALSHA` finds it.
    pub fn eval(&self, keys: &[Vec<u8>], rates: &[Rate], cost: u64, now_us: Option<u64>) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SOURCE);
        push_args(&mut cmd, keys, rates, cost, now_us);
        cmd
    }
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

fn push_args(cmd: &mut Cmd, keys: &[Vec<u8>], rates: &[Rate], cost: u64, now_us: Option<u64>) {
    cmd.arg(keys.len());
    for k in keys {
        cmd.arg(k.as_slice());
    }
    cmd.arg(cost);
    match now_us {
        Some(t) => cmd.arg(t),
        None => cmd.arg(""),
    };
    for r in rates {
        let code = match r.algorithm {
            Algorithm::TokenBucket => "t",
            Algorithm::FixedWindow => "f",
            Algorithm::SlidingWindow => "s",
        };
        cmd.arg(code).arg(r.limit).arg(r.period).arg(r.burst).arg(r.interval);
    }
}

/// The Redis key names of `key`'s rates (see the module documentation).
pub fn key_names(prefix: &[u8], key: &[u8], rates: &[Rate]) -> Vec<Vec<u8>> {
    rates
        .iter()
        .map(|r| {
            let suffix = match r.algorithm {
                Algorithm::TokenBucket => format!("}}:t{}/{}/{}", r.limit, r.period, r.burst),
                Algorithm::FixedWindow => format!("}}:f{}/{}", r.limit, r.period),
                Algorithm::SlidingWindow => format!("}}:s{}/{}", r.limit, r.period),
            };
            let mut name = Vec::with_capacity(1 + prefix.len() + key.len() + suffix.len());
            name.push(b'{');
            name.extend_from_slice(prefix);
            name.extend_from_slice(key);
            name.extend_from_slice(suffix.as_bytes());
            name
        })
        .collect()
}

/// The script's reply as a verdict in microsecond ticks.
pub fn parse_reply(value: &Value, rates: usize) -> Result<Verdict, String> {
    let bad = || {
        // A reply of another shape can be anything, of any size: show its start.
        let mut text = format!("{value:?}");
        if text.len() > 200 {
            let mut cut = 200;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        format!("unexpected reply from the rate-limit script: {text}")
    };
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
    fn names_share_one_hash_tag() {
        let rates = [
            Rate::new(Algorithm::TokenBucket, 10, 1_000_000, 20),
            Rate::new(Algorithm::SlidingWindow, 1000, 3_600_000_000, 1000),
        ];
        let names = key_names(b"rl:", b"a}b\0c", &rates);
        assert_eq!(names[0], b"{rl:a}b\0c}:t10/1000000/20".to_vec());
        assert_eq!(names[1], b"{rl:a}b\0c}:s1000/3600000000".to_vec());
        // Both hash on "rl:a": same slot.
        let tag = |n: &[u8]| {
            let close = n.iter().position(|&b| b == b'}').unwrap();
            n[1..close].to_vec()
        };
        assert_eq!(tag(&names[0]), tag(&names[1]));
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
        let v = parse_reply(&ok, 2).unwrap();
        assert_eq!((v.index, v.outcome.allowed, v.outcome.retry_after), (1, false, NEVER));
        assert!(parse_reply(&ok, 1).is_err());
        assert!(parse_reply(&Value::Nil, 1).is_err());
        // An odd reply is shown, but only its start.
        let huge = Value::BulkString(vec![b'x'; 1 << 20]);
        let e = parse_reply(&huge, 1).unwrap_err();
        assert!(e.starts_with("unexpected reply") && e.ends_with("...") && e.len() < 300, "{}", &e[..e.len().min(300)]);
    }
}
