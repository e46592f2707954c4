//! The cases of bench/driver.c for the Rust columns of `make bench`
//! (bench/governor.rs, bench/floor.rs include this file): the same keys,
//! key order, cases and iteration counts, and the same output,
//! `<limiter> TAB <case> TAB <ns per check>` per case; for the threaded
//! cases ns per check is per thread (wall time / checks of one thread).

use std::sync::Barrier;
use std::time::Instant;

/// A limiter under test: `check` is true when the check is allowed.
pub trait Limiter: Sync {
    // &String, not &str: governor's keyed limiter takes a reference to its key type.
    #[allow(clippy::ptr_arg)]
    fn check(&self, key: &String) -> bool;
}

/// As bench/keys.h.
pub const MANY_KEYS: usize = 100_000;
pub const THREAD_KEYS: usize = 1_000;

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Key i, exactly as bench/keys.h makes it: "api-key-" and 8 digits.
pub fn make_key(i: u64) -> String {
    format!("api-key-{i:08}")
}

/// As shuffle() in bench/keys.h: Fisher-Yates, j = splitmix64(SEED + i) % (i + 1).
pub fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (splitmix64(0x5EED + i as u64) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Checks `iters` times, cycling through `keys`; returns (start, end, denied).
fn run<L: Limiter>(lim: &L, keys: &[String], iters: usize) -> (Instant, Instant, usize) {
    let mut denied = 0;
    let t0 = Instant::now();
    let mut k = 0;
    for _ in 0..iters {
        denied += !lim.check(&keys[k]) as usize;
        k += 1;
        if k == keys.len() {
            k = 0;
        }
    }
    (t0, Instant::now(), denied)
}

/// Inserts every key of `sets` (in order, untimed), then times `iters` checks
/// per set, one thread per set, each set's keys in a fixed shuffled order.
/// `denying`: a limiter of one check per key per hour, which the warm-up
/// takes, so that every timed check is denied.
fn case<L: Limiter>(lim: L, limiter: &str, name: &str, iters: usize, sets: &[&[String]], denying: bool) {
    for (i, keys) in sets.iter().enumerate() {
        let denied = run(&lim, keys, keys.len()).2;
        assert!(denied == 0 || denying && i > 0, "{name}: denied during warm-up");
    }
    // Each set's keys in their shuffled order, and in that order in memory
    // too, as bench/driver.c copies them into one array: the order is
    // shuffled first, then the keys are cloned in it, so that their bytes
    // are allocated one after another in the order they are read.
    // (Shuffling the Strings themselves would leave their bytes where they
    // were made, read in random order: a cache miss per check on 100k keys
    // that the C limiters do not pay.)
    let shuffled: Vec<Vec<String>> = sets
        .iter()
        .map(|keys| {
            let mut order: Vec<&String> = keys.iter().collect();
            shuffle(&mut order);
            order.into_iter().cloned().collect()
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
    let expected = if denying { iters * sets.len() } else { 0 };
    if denied != expected {
        eprintln!("{name}: {denied} checks denied, expected {expected}");
        std::process::exit(1);
    }
    println!("{limiter}\t{name}\t{:.1}", (t1 - t0).as_nanos() as f64 / iters as f64);
}

/// Runs every case (or those whose name contains the second argument) on
/// the limiters `new(denying)` makes, printing their lines as `limiter`.
/// `denying`: false for a limiter that never denies at these speeds, true
/// for one that allows one check per key per hour.
pub fn main<L: Limiter>(limiter: &str, new: impl Fn(bool) -> L) {
    // `cargo bench` passes `--bench`; take the positional arguments only.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let iters: usize = args.first().map(|a| a.parse().expect("iterations")).unwrap_or(2_000_000);
    let only = args.get(1).map(String::as_str);
    let keys: Vec<String> = (0..(MANY_KEYS + 2 * THREAD_KEYS) as u64).map(make_key).collect();
    let (many, own) = keys.split_at(MANY_KEYS);
    let (own0, own1) = own.split_at(THREAD_KEYS);
    let hot = &keys[..1];
    let cases: [(&str, &[&[String]], bool); 6] = [
        ("hot key", &[hot], false),
        ("100k keys", &[many], false),
        ("2 threads, own keys", &[own0, own1], false),
        ("2 threads, one key", &[hot, hot], false),
        ("denied: hot key", &[hot], true),
        ("denied: 2 threads, one key", &[hot, hot], true),
    ];
    for (name, sets, denying) in cases {
        if only.is_none_or(|o| name.contains(o)) {
            case(new(denying), limiter, name, iters, sets, denying);
        }
    }
}
