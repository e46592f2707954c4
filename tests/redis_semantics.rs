//! backend=redis end to end through `Limiter` against a real server
//! (RL_TEST_REDIS_URL, set by scripts/with_redis.sh; skipped without it):
//! decisions, cost, peek, never, several rates, reset, binary keys, the TTL
//! of every key written, the local over-limit cache, many threads and two
//! handles on one key, the database from the URL, and AUTH.

mod redis_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ratelimit::error::Error;
use ratelimit::limiter::Limiter;
use redis_common::{conn, env_or_skip, prefix};

fn limiter(url: &str, pfx: &str, rest: &str) -> Limiter {
    Limiter::from_config_str(&format!("{rest} backend=redis url={url} prefix={pfx} timeout_ms=2000")).unwrap()
}

fn keys_of(c: &mut redis::Connection, pfx: &str) -> Vec<Vec<u8>> {
    let pattern = format!("{{{pfx}*");
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(c).unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys
}

#[test]
fn token_bucket_decisions() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "token_bucket_decisions") else { return };
    let lim = limiter(&url, &prefix("tb"), "rate=5/s");
    for left in (0..5).rev() {
        let d = lim.check(b"k", 1).unwrap();
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining, d.window_ms, d.retry_after_ms), (5, left, 1000, 0));
        assert!(d.reset_ms <= (5 - left) * 200 && d.reset_ms >= (5 - left) * 200 - 50, "{d:?}");
    }
    let d = lim.check(b"k", 1).unwrap();
    assert!(!d.allowed);
    assert!(d.retry_after_ms > 100 && d.retry_after_ms <= 200, "{d:?}");
    // peek: allowed, consumes nothing
    let p = lim.check(b"k", 0).unwrap();
    assert_eq!((p.allowed, p.remaining), (true, 0));
    // never
    let n = lim.check(b"other", 6).unwrap();
    assert_eq!((n.allowed, n.retry_after_ms), (false, u64::MAX));
    // exactly the burst fits a fresh key
    assert!(lim.check(b"other", 5).unwrap().allowed);
    // reset
    lim.reset(b"k").unwrap();
    assert_eq!(lim.check(b"k", 0).unwrap().remaining, 5);
    std::thread::sleep(std::time::Duration::from_millis(210));
    assert!(lim.check(b"other", 1).unwrap().allowed, "one unit back after 200 ms");
    let s = lim.stats().unwrap();
    assert_eq!((s.keys, s.evictions, s.errors), (0, 0, 0));
    assert_eq!((s.allowed, s.limited), (5 + 1 + 1 + 1 + 1, 2)); // peeks count as allowed
}

#[test]
fn windows_and_several_rates() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "windows_and_several_rates") else { return };
    for algo in ["fixed_window", "sliding_window"] {
        let lim = limiter(&url, &prefix("win"), &format!("rate=3/1000d algorithm={algo}"));
        for left in [2, 1, 0] {
            let d = lim.check(b"w", 1).unwrap();
            assert_eq!((d.allowed, d.remaining), (true, left), "{algo}");
        }
        let d = lim.check(b"w", 1).unwrap();
        assert!(!d.allowed && d.retry_after_ms > 0 && d.retry_after_ms != u64::MAX, "{algo} {d:?}");
        assert_eq!(d.window_ms, 1000 * 86_400_000);
    }
    // all or nothing: rate 0 denies, rate 1 keeps its units
    let lim = limiter(&url, &prefix("multi"), "rate=2/s,3/minute");
    assert_eq!(lim.check(b"m", 1).unwrap().rate_index, 0); // tie (1 vs 2 left): first... 1 < 2 -> rate 0
    assert!(lim.check(b"m", 1).unwrap().allowed);
    let d = lim.check(b"m", 1).unwrap();
    assert_eq!((d.allowed, d.rate_index), (false, 0));
    std::thread::sleep(std::time::Duration::from_millis(1050));
    let d = lim.check(b"m", 1).unwrap();
    assert_eq!((d.allowed, d.rate_index, d.remaining), (true, 1, 0), "rate 1 had exactly 1 left: {d:?}");
    let d = lim.check(b"m", 1).unwrap();
    assert_eq!((d.allowed, d.rate_index), (false, 1));
    assert!(d.retry_after_ms > 15_000 && d.retry_after_ms <= 20_000, "{d:?}");
}

#[test]
fn binary_and_huge_keys() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "binary_and_huge_keys") else { return };
    let lim = limiter(&url, &prefix("bin"), "rate=1/minute");
    for k in [&b"a\0b"[..], b"a\0c", b"a", b"a\0", b"", b"{x}", b"}{"] {
        assert!(lim.check(k, 1).unwrap().allowed, "{k:?}");
    }
    assert!(!lim.check(b"a\0b", 1).unwrap().allowed);
    let mut big = vec![7u8; 1 << 20];
    assert!(lim.check(&big, 1).unwrap().allowed);
    *big.last_mut().unwrap() = 8;
    assert!(lim.check(&big, 1).unwrap().allowed, "differs in the last byte");
    assert!(!lim.check(&big, 1).unwrap().allowed);
    lim.reset(&big).unwrap();
    assert!(lim.check(&big, 1).unwrap().allowed);
}

#[test]
fn every_key_has_a_ttl_until_fresh() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "every_key_has_a_ttl_until_fresh") else { return };
    let mut c = conn(&url);
    // A window's key lives until its state is fresh; a token bucket's until
    // then rounded up to the next line of a grid of min(bucket, 1 s) of
    // server time (check.lua's store): up to a second longer.
    for (rest, max_ms) in [
        ("rate=5/s", 2_000),
        ("rate=10/s,1000/hour", 3_601_000),
        ("rate=3/minute algorithm=fixed_window", 60_000),
        ("rate=3/minute algorithm=sliding_window", 120_000),
        ("rate=1/s burst=20", 21_000),
    ] {
        let pfx = prefix("ttl");
        let lim = limiter(&url, &pfx, rest);
        for i in 0..20 {
            let key = format!("key-{}", i % 7);
            lim.check(key.as_bytes(), 1 + i % 2).unwrap();
        }
        lim.check(b"peeked-only", 0).unwrap();
        lim.check(b"never-fits", 1_000_000).unwrap();
        let keys = keys_of(&mut c, &pfx);
        assert!(!keys.is_empty(), "{rest}");
        for k in &keys {
            let ttl: i64 = redis::cmd("PTTL").arg(k).query(&mut c).unwrap();
            assert!(ttl > 0 && ttl <= max_ms, "{rest}: {} has PTTL {ttl}", String::from_utf8_lossy(k));
            assert!(!String::from_utf8_lossy(k).contains("peeked-only"), "a peek wrote {k:?}");
            assert!(!String::from_utf8_lossy(k).contains("never-fits"), "a denied fresh key was written");
        }
    }
    // A bucket's key lives until it is full again, rounded up to the next
    // whole second (the bucket is 1 s): 2 units of 5/s = 400 ms, so its
    // expiry is the first whole second of server time after that.
    let pfx = prefix("ttl-exact");
    let lim = limiter(&url, &pfx, "rate=5/s");
    lim.check(b"x", 2).unwrap();
    let keys = keys_of(&mut c, &pfx);
    let (ttl, at) = ttl_and_expiry(&mut c, &keys[0]);
    assert!(ttl > 300 && ttl <= 1_400, "PTTL {ttl}");
    // On the line, or 1 ms after it: the script's PX counts from its TIME
    // reading, Redis from its clock when SET runs, which may be in a later
    // millisecond (never an earlier one: the key never expires before it).
    assert!(at % 1_000 <= 1, "PEXPIRETIME {at}");
    let state: String = redis::cmd("GET").arg(&keys[0]).query(&mut c).unwrap();
    let stored: u64 = state.strip_prefix('+').expect("a \"+tat\" state").parse().unwrap();
    assert!(stored <= at as u64 * 1_000 && stored + 1_000_000 > at as u64 * 1_000, "tat {stored}, expiry {at} ms");
    // The state of a version that wrote "tat" with the expiry at the tat
    // itself: read as it was meant, and given an expiry on the grid.
    let now = server_us(&mut c);
    let _: () = redis::cmd("SET").arg(&keys[0]).arg(now + 400_000).arg("PX").arg(400).query(&mut c).unwrap();
    let d = lim.check(b"x", 1).unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 2), "{d:?}");
    let (ttl, at) = ttl_and_expiry(&mut c, &keys[0]);
    assert!(ttl > 500 && ttl <= 1_600 && at % 1_000 <= 1, "PTTL {ttl}, PEXPIRETIME {at}");
}

/// Several rates share one Redis key (one GET and one SET per check): its
/// name lists the rates, its state every rate's words, and its expiry is on
/// the 1 s grid after the latest of their fresh times, kept while that line
/// stays put, moved when it moves; a refund all the way back deletes it,
/// and a damaged state is an error, not a wrong answer.
#[test]
fn several_rates_share_one_key() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "several_rates_share_one_key") else { return };
    let mut c = conn(&url);
    let grid_ms = 1_000;
    // The words of the key's state: after a "+" (its expiry on the grid),
    // 8-byte little-endian integers.
    let state = |c: &mut redis::Connection, k: &[u8]| -> Vec<u64> {
        let bytes: Vec<u8> = redis::cmd("GET").arg(k).query(c).unwrap();
        assert_eq!(bytes.first(), Some(&b'+'), "not on the grid: {bytes:?}");
        assert_eq!(bytes.len() % 8, 1, "{bytes:?}");
        bytes[1..].chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap())).collect()
    };

    // Two token buckets: the state is both tats; the expiry the line after
    // the later one.
    let pfx = prefix("one-key");
    let lim = limiter(&url, &pfx, "rate=5/s,100/hour");
    assert!(lim.check(b"k", 2).unwrap().allowed);
    let keys = keys_of(&mut c, &pfx);
    assert_eq!(keys, vec![format!("{{{pfx}k}}:t5/1000000/5,t100/3600000000/100").into_bytes()]);
    let before = server_us(&mut c);
    let tats = state(&mut c, &keys[0]);
    assert_eq!(tats.len(), 2, "{tats:?}");
    // 2 of 5/s and 2 of 100/hour ahead of now: 400 ms and 72 s.
    assert!(tats[0] <= before + 400_000 && tats[0] + 1_000_000 > before + 400_000, "{tats:?} at {before}");
    assert!(tats[1] <= before + 72_000_000 && tats[1] + 1_000_000 > before + 72_000_000, "{tats:?}");
    let (_, at) = ttl_and_expiry(&mut c, &keys[0]);
    // The first line after `fresh` (or 1 ms after it: PX counts from the
    // script's TIME, Redis from its clock when SET runs).
    let on_line =
        |at: i64, fresh: u64| at % grid_ms <= 1 && fresh < at as u64 * 1_000 && at as u64 * 1_000 <= fresh + 1_001_000;
    assert!(on_line(at, tats[1]), "expiry {at} ms, tats {tats:?}");
    // 40 more units of the hour: the line moves 28.8 s on, and the expiry with it.
    assert!(lim.check(b"k", 1).unwrap().allowed);
    assert!(!lim.check(b"k", 40).unwrap().allowed, "5/s has 2 left");
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    assert!(lim.check(b"k", 5).unwrap().allowed);
    let tats = state(&mut c, &keys[0]);
    let (_, at) = ttl_and_expiry(&mut c, &keys[0]);
    assert!(on_line(at, tats[1]), "expiry {at} ms, tats {tats:?}");
    assert!(tats[1] > before + 100_000_000, "8 of the hour used: {tats:?}");

    // Windows: the fresh time is the window's, so checks in one window keep
    // the expiry; the state holds every word of each rate.
    for (algo, words) in [("fixed_window", 4), ("sliding_window", 6)] {
        let pfx = prefix("one-key-win");
        let lim = limiter(&url, &pfx, &format!("rate=50/s,1000/1000d algorithm={algo}"));
        assert!(lim.check(b"w", 1).unwrap().allowed);
        let keys = keys_of(&mut c, &pfx);
        assert_eq!(keys.len(), 1, "{algo}");
        let first = state(&mut c, &keys[0]);
        assert_eq!(first.len(), words, "{algo}: {first:?}");
        let (_, at) = ttl_and_expiry(&mut c, &keys[0]);
        // The long window (start, count[, previous]) is the later fresh time.
        // (1000 days: no run of this test crosses its boundary.)
        let long = 86_400_000_000_000u64;
        let fresh = first[words / 2] + if algo == "fixed_window" { long } else { 2 * long };
        assert!(on_line(at, fresh), "{algo}: expiry {at}, state {first:?}");
        for _ in 0..5 {
            assert!(lim.check(b"w", 1).unwrap().allowed, "{algo}");
        }
        let now = state(&mut c, &keys[0]);
        assert_eq!(now[words / 2 + 1], 6, "{algo}: the long window counted 6: {now:?}");
        assert_eq!(ttl_and_expiry(&mut c, &keys[0]).1, at, "{algo}: the same window keeps its expiry");
        // A refund all the way back leaves no state: the key is gone.
        let d = lim.adjust(b"w", -1_000_000).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 50), "{algo}: {d:?}");
        assert!(keys_of(&mut c, &pfx).is_empty(), "{algo}: a fresh state is deleted");
    }

    // A state written without the grid (its expiry at its fresh time, as
    // with a test clock) is given one on the grid by the next check.
    let pfx = prefix("one-key-off");
    let lim = limiter(&url, &pfx, "rate=5/s,100/hour");
    assert!(lim.check(b"k", 1).unwrap().allowed);
    let keys = keys_of(&mut c, &pfx);
    let tats = state(&mut c, &keys[0]);
    let mut text = b"=".to_vec();
    text.extend(tats[0].to_le_bytes());
    text.extend(tats[1].to_le_bytes());
    let d = lim.check(b"k", 1).unwrap();
    assert_eq!((d.allowed, d.remaining, d.rate_index), (true, 3, 0), "the old state was read: {d:?}");
    let tats = state(&mut c, &keys[0]);
    let (_, at) = ttl_and_expiry(&mut c, &keys[0]);
    assert!(on_line(at, tats[1]), "expiry {at} ms, tats {tats:?}");

    // A damaged state: an error naming the script's failure, never a
    // decision made from garbage; the key works again once reset.
    let fine = [b"+".as_slice(), &tats[0].to_le_bytes(), &tats[1].to_le_bytes()].concat();
    let mut junks: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"+".to_vec(),
        fine[..16].to_vec(),              // a word short
        [fine.as_slice(), b"x"].concat(), // a byte too many
        [b"x", &fine[1..]].concat(),      // neither "+" nor "="
        [b" ", &fine[1..]].concat(),
        format!("+ {} {}", tats[0], tats[1]).into_bytes(), // decimal words
    ];
    for bad in [u64::MAX, 1 << 53] {
        let mut j = fine.clone();
        j[9..].copy_from_slice(&bad.to_le_bytes()); // negative, or not exact
        junks.push(j);
    }
    for junk in &junks {
        let _: () = redis::cmd("SET").arg(&keys[0]).arg(junk.as_slice()).query(&mut c).unwrap();
        let (e, _) = lim.check(b"k", 1).expect_err(&format!("{junk:?}"));
        assert!(matches!(e, Error::Backend(_)), "{junk:?}: {e}");
        let (e, _) = lim.adjust(b"k", -1).expect_err(&format!("{junk:?}"));
        assert!(matches!(e, Error::Backend(_)), "{junk:?}: {e}");
    }
    // The well-formed state is read again.
    let _: () = redis::cmd("SET").arg(&keys[0]).arg(fine.as_slice()).query(&mut c).unwrap();
    let d = lim.check(b"k", 0).unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 3), "{d:?}");
    lim.reset(b"k").unwrap();
    assert!(keys_of(&mut c, &pfx).is_empty());
    assert_eq!(lim.check(b"k", 1).unwrap().remaining, 4);
}

/// A key's PTTL and PEXPIRETIME (ms).
fn ttl_and_expiry(c: &mut redis::Connection, key: &[u8]) -> (i64, i64) {
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(c).unwrap();
    let at: i64 = redis::cmd("PEXPIRETIME").arg(key).query(c).unwrap();
    (ttl, at)
}

/// The server's TIME in µs.
fn server_us(c: &mut redis::Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(c).unwrap();
    s * 1_000_000 + us
}

#[test]
fn local_over_limit_cache() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "local_over_limit_cache") else { return };
    let pfx = prefix("cache");
    let lim = limiter(&url, &pfx, "rate=2/s");
    assert!(lim.check(b"c", 2).unwrap().allowed);
    let first = lim.check(b"c", 1).unwrap(); // Redis denies: remembered
    assert!(!first.allowed);
    assert_eq!(lim.stats().unwrap().local_denials, 0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let d = lim.check(b"c", 1).unwrap();
    assert!(!d.allowed);
    assert!(
        d.retry_after_ms < first.retry_after_ms && d.retry_after_ms + 150 >= first.retry_after_ms,
        "{first:?} then {d:?}"
    );
    assert!(!lim.check(b"c", 2).unwrap().allowed, "a larger cost is denied too");
    let s = lim.stats().unwrap();
    assert_eq!((s.local_denials, s.limited), (2, 3));
    // peeks still go to Redis and see the real state
    assert!(lim.check(b"c", 0).unwrap().allowed);
    assert_eq!(lim.stats().unwrap().local_denials, 2);
    // a cost that can never pass is Redis's "never", not the cached wait
    assert_eq!(lim.check(b"c", 3).unwrap().retry_after_ms, u64::MAX);
    // once retry_after has passed, the key is asked about again and passes
    std::thread::sleep(std::time::Duration::from_millis(first.retry_after_ms));
    assert!(lim.check(b"c", 1).unwrap().allowed);
    // reset clears the cached denial
    lim.check(b"c", 1).unwrap();
    assert!(!lim.check(b"c", 1).unwrap().allowed);
    lim.reset(b"c").unwrap();
    assert!(lim.check(b"c", 1).unwrap().allowed);
}

#[test]
fn two_handles_four_threads_each_admit_exactly_the_quota() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "two_handles_four_threads") else { return };
    for rest in [
        "rate=300/hour",
        "rate=300/1000d algorithm=fixed_window",
        "rate=300/1000d algorithm=sliding_window",
        "rate=300/hour,100000/day", // one key for both rates
        "rate=100000/hour,300/day algorithm=sliding_window",
    ] {
        let pfx = prefix("race");
        let handles = [Arc::new(limiter(&url, &pfx, rest)), Arc::new(limiter(&url, &pfx, rest))];
        let admitted = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for h in &handles {
            for _ in 0..4 {
                let (h, admitted) = (h.clone(), admitted.clone());
                threads.push(std::thread::spawn(move || {
                    for _ in 0..100 {
                        if h.check(b"shared", 1).unwrap().allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(admitted.load(Ordering::Relaxed), 300, "{rest}");
        let s0 = handles[0].stats().unwrap();
        let s1 = handles[1].stats().unwrap();
        assert_eq!(s0.allowed + s1.allowed, 300);
        assert_eq!(s0.limited + s1.limited, 500);
        assert_eq!(s0.errors + s1.errors, 0);
    }
}

#[test]
fn database_from_the_url() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "database_from_the_url") else { return };
    let pfx = prefix("db");
    let lim = limiter(&format!("{url}/3"), &pfx, "rate=5/s");
    assert!(lim.check(b"in-db-3", 1).unwrap().allowed);
    let mut c = conn(&format!("{url}/3"));
    assert_eq!(keys_of(&mut c, &pfx).len(), 1);
    let mut c0 = conn(&url);
    assert!(keys_of(&mut c0, &pfx).is_empty());
}

#[test]
fn auth_with_a_password() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_AUTH_URL", "auth_with_a_password") else { return };
    let lim = limiter(&url, &prefix("auth"), "rate=2/s");
    let d = lim.check(b"k", 1).unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 1));
    assert!(lim.check(b"k", 1).unwrap().allowed);
    assert!(!lim.check(b"k", 1).unwrap().allowed);
    // the wrong password, or none: backend errors, on_error decides
    let port = url.rsplit(':').next().unwrap();
    for bad in [format!("redis://:wrong@127.0.0.1:{port}"), format!("redis://127.0.0.1:{port}")] {
        let lim = Limiter::from_config_str(&format!("rate=2/s backend=redis url={bad} on_error=deny timeout_ms=500"))
            .unwrap();
        let (e, d) = lim.check(b"k", 1).unwrap_err();
        assert!(!d.allowed);
        assert!(matches!(e, ratelimit::error::Error::Backend(_)), "{e:?}");
        assert_eq!(lim.stats().unwrap().errors, 1);
    }
}

/// A refused AUTH (wrong password, an unknown user, a password the server
/// does not expect) is a backend error whose message never contains the
/// password: rl_last_error() is printed and logged by the host program.
#[test]
fn auth_errors_never_contain_the_password() {
    let Some(auth) = env_or_skip("RL_TEST_REDIS_AUTH_URL", "auth_errors_never_contain_the_password") else { return };
    let Some(plain) = env_or_skip("RL_TEST_REDIS_URL", "auth_errors_never_contain_the_password") else { return };
    let hostport = |url: &str| url.rsplit('@').next().unwrap().trim_start_matches("redis://").to_owned();
    let (auth, plain) = (hostport(&auth), hostport(&plain));
    let cluster = std::env::var("RL_TEST_REDIS_CLUSTER_URL").ok().map(|c| c.replace("://", "://u:Zq7xWrongPW@"));
    for url in cluster.into_iter().chain([
        format!("redis://:Zq7xWrongPW@{auth}"),
        format!("redis://alice:Zq7xWrongPW@{auth}"),
        format!("redis://:Zq7x%40WrongPW@{auth}"),
        format!("redis://:Zq7xWrongPW@{plain}"),
        format!("redis://alice:Zq7xWrongPW@{plain}"),
    ]) {
        let lim = Limiter::from_config_str(&format!("rate=2/s backend=redis url={url} on_error=deny timeout_ms=500"))
            .unwrap();
        let (e, d) = lim.check(b"k", 1).unwrap_err();
        assert!(!d.allowed, "{url}");
        let message = e.to_string();
        assert!(matches!(e, ratelimit::error::Error::Backend(_)), "{url}: {e:?}");
        assert!(!message.contains("Zq7x") && !message.contains("WrongPW"), "{url}: {message}");
    }
}
