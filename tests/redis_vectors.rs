//! tests/vectors/algorithms.txt through both implementations of the
//! algorithms: the Rust one (`algorithm::check_all` and `adjust_all`,
//! microsecond ticks) and the Redis Lua script (with its "now" override).
//! An adjust's delta is clamped as the Redis store clamps it
//! (`script::clamp_delta`) and its charge bounded as the script bounds it
//! (`rates::bound_adjusted`) on both sides. The Redis half runs when
//! RL_TEST_REDIS_URL names a server (scripts/with_redis.sh sets it) and is
//! skipped with a notice otherwise.
//!
//! `RL_BLESS_VECTORS=1 cargo test --test redis_vectors` rewrites the expected
//! decisions from the Rust implementation (review the diff by hand!).

use ratelimit::algorithm::{adjust_all, check_all, Algorithm, Rate, Verdict};
use ratelimit::store::redis::{rates, script};
use ratelimit::store::RedisStore;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/algorithms.txt");

#[derive(Clone, Copy)]
enum Op {
    Check(u64),
    Adjust(i64),
}

struct Check {
    line: usize,
    now: u64,
    op: Op,
    expect: Option<String>,
}

struct Case {
    name: String,
    rates: Vec<Rate>,
    checks: Vec<Check>,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |w: &str| w.parse::<u64>().unwrap_or_else(|_| panic!("line {}: bad number {w:?}", i + 1));
        match words[0] {
            "case" => cases.push(Case { name: words[1].to_owned(), rates: Vec::new(), checks: Vec::new() }),
            "rate" => {
                let algorithm = match words[1] {
                    "token_bucket" => Algorithm::TokenBucket,
                    "fixed_window" => Algorithm::FixedWindow,
                    "sliding_window" => Algorithm::SlidingWindow,
                    a => panic!("line {}: unknown algorithm {a}", i + 1),
                };
                let (limit, period) = (num(words[2]), num(words[3]));
                let burst = words.get(4).map(|w| num(w)).unwrap_or(limit);
                let rate = Rate::new(algorithm, limit, period, burst);
                rates::check(&rate).unwrap_or_else(|e| panic!("line {}: outside the Redis range: {e}", i + 1));
                cases.last_mut().expect("rate before case").rates.push(rate);
            }
            "check" | "adjust" => {
                let (head, expect) = match line.split_once("=>") {
                    Some((h, e)) => (h, Some(e.split_whitespace().collect::<Vec<_>>().join(" "))),
                    None => (line, None),
                };
                let w: Vec<&str> = head.split_whitespace().collect();
                let op = match w[0] {
                    "check" => Op::Check(num(w[2])),
                    _ => Op::Adjust(
                        w[2].parse::<i64>().unwrap_or_else(|_| panic!("line {}: bad delta {:?}", i + 1, w[2])),
                    ),
                };
                let check = Check { line: i + 1, now: num(w[1]), op, expect };
                cases.last_mut().expect("check before case").checks.push(check);
            }
            w => panic!("line {}: unknown item {w:?}", i + 1),
        }
    }
    cases
}

fn render(v: &Verdict) -> String {
    let o = v.outcome;
    if o.allowed {
        format!("allow {} {} {} {}", v.index, o.limit, o.remaining, o.reset)
    } else {
        let retry = if o.retry_after == u64::MAX { "never".to_owned() } else { o.retry_after.to_string() };
        format!("deny {} {} {} {} {retry}", v.index, o.limit, o.remaining, o.reset)
    }
}

fn run_rust(case: &Case) -> Vec<String> {
    let mut words = vec![0u64; case.rates.iter().map(Rate::words).sum()];
    let rates = &case.rates;
    case.checks
        .iter()
        .map(|c| match c.op {
            Op::Check(cost) => render(&check_all(rates, &mut words, c.now, cost)),
            Op::Adjust(delta) => {
                let delta = script::clamp_delta(delta);
                let before = words.clone();
                adjust_all(rates, &mut words, c.now, delta);
                rates::bound_adjusted(rates, &before, &mut words, c.now, delta);
                // The key afterwards, from the state as bounded: a peek.
                render(&adjust_all(rates, &mut words, c.now, 0).0)
            }
        })
        .collect()
}

#[test]
fn vectors_rust() {
    let text = std::fs::read_to_string(PATH).unwrap();
    let cases = parse(&text);
    assert!(cases.len() >= 20, "the vectors file looks truncated");
    let got: Vec<Vec<String>> = cases.iter().map(run_rust).collect();

    if std::env::var_os("RL_BLESS_VECTORS").is_some() {
        let mut by_line = std::collections::HashMap::new();
        for (case, decisions) in cases.iter().zip(&got) {
            for (c, d) in case.checks.iter().zip(decisions) {
                by_line.insert(c.line, d.clone());
            }
        }
        let mut out = String::new();
        for (i, raw) in text.lines().enumerate() {
            match by_line.get(&(i + 1)) {
                Some(d) => {
                    let head = raw.split("=>").next().unwrap().trim_end();
                    out.push_str(&format!("{head:<40} => {d}\n"));
                }
                None => {
                    out.push_str(raw);
                    out.push('\n');
                }
            }
        }
        std::fs::write(PATH, out).unwrap();
        return;
    }

    let mut failures = Vec::new();
    let mut n = 0;
    for (case, decisions) in cases.iter().zip(&got) {
        for (c, d) in case.checks.iter().zip(decisions) {
            n += 1;
            let want = c.expect.as_deref().unwrap_or("(none: run with RL_BLESS_VECTORS=1)");
            if want != d {
                failures.push(format!("line {} ({}): expected {want}, Rust says {d}", c.line, case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {n} vectors differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn vectors_redis_script() {
    let Ok(url) = std::env::var("RL_TEST_REDIS_URL") else {
        eprintln!("SKIPPED vectors_redis_script: RL_TEST_REDIS_URL is not set (scripts/with_redis.sh sets it)");
        return;
    };
    let text = std::fs::read_to_string(PATH).unwrap();
    let prefix = format!("rl-vectors-{}:", std::process::id());
    let mut failures = Vec::new();
    let mut n = 0;
    for case in parse(&text) {
        let store = RedisStore::with_rates(case.rates.clone(), &url, &prefix, 2000).unwrap();
        for c in &case.checks {
            n += 1;
            let answer = match c.op {
                Op::Check(cost) => store.check_at(case.name.as_bytes(), cost, c.now),
                Op::Adjust(delta) => store.adjust_at(case.name.as_bytes(), delta, c.now),
            };
            let got = match answer {
                Ok(v) => render(&v),
                Err(e) => format!("error: {e}"),
            };
            let want = c.expect.as_deref().unwrap_or("(none)");
            if want != got {
                failures.push(format!("line {} ({}): expected {want}, Lua says {got}", c.line, case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {n} vectors differ:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{n} vectors agree between Rust and Lua");
}
