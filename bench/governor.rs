//! The governor column of `make bench`: governor's keyed limiter
//! (`DefaultKeyedRateLimiter<String>`: a DashMap of GCRA states, governor's
//! default quanta clock) run through the same cases, keys and iteration
//! counts as bench/driver.c.
//!
//! Run by scripts/bench.sh; by hand: `cargo bench --bench governor -- [iterations [case]]`.
//! Prints `<limiter> TAB <case> TAB <ns per check>` per case; for the threaded
//! cases ns per check is per thread (wall time / checks of one thread).

use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::Instant;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

const NAME: &str = "governor (Rust)";
/// As bench/keys.h.
const MANY_KEYS: usize = 100_000;
const THREAD_KEYS: usize = 1_000;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Key i, exactly as bench/keys.h makes it: 32 hex characters.
fn make_key(i: u64) -> String {
    format!("{:016x}{:016x}", splitmix64(2 * i), splitmix64(2 * i + 1))
}

/// As shuffle() in bench/keys.h: Fisher-Yates, j = splitmix64(SEED + i) % (i + 1).
fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (splitmix64(0x5EED + i as u64) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn limiter() -> DefaultKeyedRateLimiter<String> {
    // 10^9 per second, burst 10^9: never denies at the speeds measured.
    RateLimiter::keyed(Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap()))
}

/// Checks `iters` times, cycling through `keys`; returns (start, end, denied).
fn run(lim: &DefaultKeyedRateLimiter<String>, keys: &[String], iters: usize) -> (Instant, Instant, usize) {
    let mut denied = 0;
    let t0 = Instant::now();
    let mut k = 0;
    for _ in 0..iters {
        denied += lim.check_key(&keys[k]).is_err() as usize;
        k += 1;
        if k == keys.len() {
            k = 0;
        }
    }
    (t0, Instant::now(), denied)
}

/// Inserts every key of `sets` (in order, untimed), then times `iters` checks
/// per set, one thread per set, each set's keys in a fixed shuffled order.
fn case(name: &str, only: Option<&str>, iters: usize, sets: &[&[String]]) {
    if only.is_some_and(|o| !name.contains(o)) {
        return;
    }
    let lim = limiter();
    for keys in sets {
        assert_eq!(run(&lim, keys, keys.len()).2, 0, "{name}: denied during warm-up");
    }
    let shuffled: Vec<Vec<String>> = sets
        .iter()
        .map(|keys| {
            let mut v = keys.to_vec();
            shuffle(&mut v);
            v
        })
        .collect();
    let results: Vec<(Instant, Instant, usize)> = if sets.len() == 1 {
        vec![run(&lim, &shuffled[0], iters)]
    } else {
        let barrier = Barrier::new(sets.len());
        std::thread::scope(|s| {
            let handles: Vec<_> = shuffled
                .iter()
                .map(|keys| {
                    let (lim, barrier) = (&lim, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        run(lim, keys, iters)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let t0 = results.iter().map(|r| r.0).min().unwrap();
    let t1 = results.iter().map(|r| r.1).max().unwrap();
    let denied: usize = results.iter().map(|r| r.2).sum();
    if denied > 0 {
        eprintln!("{NAME}: {name}: {denied} checks denied; the bench rate must never deny");
        std::process::exit(1);
    }
    println!("{NAME}\t{name}\t{:.1}", (t1 - t0).as_nanos() as f64 / iters as f64);
}

fn main() {
    // `cargo bench` passes `--bench`; take the positional arguments only.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let iters: usize = args.first().map(|a| a.parse().expect("iterations")).unwrap_or(2_000_000);
    let only = args.get(1).map(String::as_str);
    let keys: Vec<String> = (0..(MANY_KEYS + 2 * THREAD_KEYS) as u64).map(make_key).collect();
    let (many, own) = keys.split_at(MANY_KEYS);
    let (own0, own1) = own.split_at(THREAD_KEYS);
    let hot = &keys[..1];
    case("hot key", only, iters, &[hot]);
    case("100k keys", only, iters, &[many]);
    case("2 threads, own keys", only, iters, &[own0, own1]);
    case("2 threads, one key", only, iters, &[hot, hot]);
}
