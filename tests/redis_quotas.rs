//! AI quotas on backend=redis, end to end through `Limiter` against a real
//! server (RL_TEST_REDIS_URL, RL_TEST_REDIS_SERVER: scripts/with_redis.sh
//! sets them; skipped without): `rl_adjust` on every algorithm (debt and its
//! recovery, refunds, peeks, the local over-limit cache), concurrency
//! limiters (at most N holders across threads and handles, renew, release,
//! expiry, stale and forged ids), the TTL of every key, hostile keys, a dead
//! server, and exactly one command per call.

mod redis_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ratelimit::config::Config;
use ratelimit::error::Error;
use ratelimit::limiter::Limiter;
use ratelimit::store::{RedisStore, Store};
use redis_common::{commands_during, conn, env_or_skip, prefix, refused_port, Server};

fn limiter(url: &str, pfx: &str, rest: &str) -> Limiter {
    Limiter::from_config_str(&format!("{rest} backend=redis url={url} prefix={pfx} timeout_ms=2000")).unwrap()
}

/// The PTTL of every Redis key under `pfx` (SCAN), by name.
fn ttls(c: &mut redis::Connection, pfx: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{pfx}*"))
            .arg("COUNT")
            .arg(1000)
            .query(c)
            .unwrap();
        for k in batch {
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(c).unwrap();
            let mut name = String::from_utf8_lossy(&k).into_owned();
            name.truncate(120);
            out.push((name, ttl));
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    out.sort();
    out
}

const WINDOWS: [&str; 3] = ["", "algorithm=fixed_window", "algorithm=sliding_window"];

/// Reserve, then settle up (debt) and down (refund) on every algorithm,
/// with a refill slow enough (10 a minute) that the test's own time does
/// not move the numbers.
#[test]
fn adjust_on_every_algorithm() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "adjust_on_every_algorithm") else { return };
    for algo in WINDOWS {
        let lim = limiter(&url, &prefix("adj"), &format!("rate=10/minute {algo}"));
        assert!(lim.check(b"k", 8).unwrap().allowed, "{algo}");
        // Used 5 more than reserved: over the limit, never denied.
        let d = lim.adjust(b"k", 5).unwrap();
        assert_eq!((d.allowed, d.remaining, d.limit), (false, 0, 10), "{algo}: {d:?}");
        assert!(d.retry_after_ms > 0 && d.retry_after_ms != u64::MAX, "{algo}: {d:?}");
        assert!(!lim.check(b"k", 1).unwrap().allowed, "{algo}: in debt");
        // A peek changes nothing.
        let p = lim.adjust(b"k", 0).unwrap();
        assert_eq!((p.allowed, p.remaining), (false, 0), "{algo}");
        // Refunds: back under the limit (13 -> 7 used), then never past fresh.
        let d = lim.adjust(b"k", -6).unwrap();
        assert_eq!((d.allowed, d.remaining, d.retry_after_ms), (true, 3, 0), "{algo}: {d:?}");
        let d = lim.adjust(b"k", i64::MIN).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 10), "{algo}: {d:?}");
        assert_eq!(lim.check(b"k", 0).unwrap().remaining, 10, "{algo}");
        assert!(lim.check(b"k", 10).unwrap().allowed, "{algo}");
        // A refund of a fresh key is nothing.
        let d = lim.adjust(b"fresh", -5).unwrap();
        assert_eq!((d.allowed, d.remaining, d.reset_ms), (true, 10, 0), "{algo}");
        // Huge charges saturate: denied, but with a finite wait.
        let d = lim.adjust(b"huge", i64::MAX).unwrap();
        assert!(!d.allowed && d.retry_after_ms != u64::MAX, "{algo}: {d:?}");
        let d = lim.adjust(b"huge", i64::MAX).unwrap();
        assert!(!d.allowed && d.retry_after_ms != u64::MAX, "{algo}: {d:?}");
        assert_eq!(lim.stats().unwrap().errors, 0);
    }
    // Several rates: every one settles; the tightest decides.
    let lim = limiter(&url, &prefix("adj-multi"), "rate=5/minute,100/hour");
    let d = lim.adjust(b"m", 7).unwrap();
    assert_eq!((d.allowed, d.rate_index, d.remaining), (false, 0, 0), "{d:?}");
    let d = lim.adjust(b"m", -7).unwrap();
    assert_eq!((d.allowed, d.rate_index, d.remaining), (true, 0, 5), "{d:?}");
    // Adjusts are refused on a concurrency limiter, leases on a rate limiter.
    let conc = limiter(&url, &prefix("adj-kind"), "concurrency=2");
    assert!(matches!(conc.adjust(b"k", 1), Err((Error::Invalid(_), _))));
    assert!(matches!(lim.acquire(b"k"), Err((Error::Invalid(_), _))));
    assert!(matches!(lim.renew(b"k", 1), Err(Error::Invalid(_))));
    assert!(matches!(lim.release(b"k", 1), Err(Error::Invalid(_))));
}

/// A charge past the quota puts the key in debt; time pays it back, and
/// retry_after said when.
#[test]
fn debt_is_denied_until_time_pays_it_back() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "debt_is_denied_until_time_pays_it_back") else { return };
    // Token bucket, 5/s: reserve 5, used 10: one unit passes 1.2 s later.
    let lim = limiter(&url, &prefix("debt"), "rate=5/s");
    assert!(lim.check(b"d", 5).unwrap().allowed);
    let d = lim.adjust(b"d", 5).unwrap();
    assert!(!d.allowed && d.retry_after_ms > 1_050 && d.retry_after_ms <= 1_200, "{d:?}");
    assert!(d.reset_ms > 1_850 && d.reset_ms <= 2_000, "{d:?}");
    let c = lim.check(b"d", 1).unwrap();
    assert!(!c.allowed && c.retry_after_ms <= d.retry_after_ms, "{c:?}");
    std::thread::sleep(Duration::from_millis(600));
    assert!(!lim.check(b"d", 1).unwrap().allowed, "half way");
    std::thread::sleep(Duration::from_millis(d.retry_after_ms - 600 + 60));
    assert!(lim.check(b"d", 1).unwrap().allowed, "paid back");
    // A fixed window: the excess counts in this window only.
    let lim = limiter(&url, &prefix("debt-fw"), "rate=5/s algorithm=fixed_window");
    let d = lim.adjust(b"w", 50).unwrap();
    assert!(!d.allowed && d.retry_after_ms <= 1_000, "{d:?}");
    std::thread::sleep(Duration::from_millis(d.retry_after_ms + 30));
    let c = lim.check(b"w", 1).unwrap();
    assert_eq!((c.allowed, c.remaining), (true, 4), "a new window: {c:?}");
}

/// A refund forgets this handle's cached denial of the key at once; another
/// handle's cache still denies until its cached retry passes (documented).
#[test]
fn a_refund_clears_this_handles_cached_denial() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "a_refund_clears_this_handles_cached_denial") else { return };
    let pfx = prefix("refund-cache");
    let (a, b) = (limiter(&url, &pfx, "rate=2/minute"), limiter(&url, &pfx, "rate=2/minute"));
    assert!(a.check(b"c", 2).unwrap().allowed);
    for h in [&a, &b] {
        assert!(!h.check(b"c", 1).unwrap().allowed); // Redis denies: remembered
        assert!(!h.check(b"c", 1).unwrap().allowed); // the cache denies
        assert_eq!(h.stats().unwrap().local_denials, 1);
    }
    let d = a.adjust(b"c", -1).unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 1), "{d:?}");
    assert!(a.check(b"c", 1).unwrap().allowed, "this handle asks Redis again");
    assert_eq!(a.stats().unwrap().local_denials, 1);
    assert!(!b.check(b"c", 1).unwrap().allowed, "the other handle's cache still denies");
    assert_eq!(b.stats().unwrap().local_denials, 2);
}

/// 3 handles x 8 threads acquire and release one key: never more than N
/// holders at once, and all N places get used.
#[test]
fn at_most_n_holders_across_threads_and_handles() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "at_most_n_holders") else { return };
    const N: u64 = 4;
    let pfx = prefix("conc");
    let handles: Vec<Limiter> = (0..3).map(|_| limiter(&url, &pfx, &format!("concurrency={N} lease=30s"))).collect();
    let (holders, most, granted, denied) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for h in &handles {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..40 {
                        let (d, lease) = h.acquire(b"hot").unwrap();
                        if !d.allowed {
                            assert_eq!(lease, 0);
                            assert!(d.retry_after_ms > 0 && d.retry_after_ms <= 30_000, "{d:?}");
                            denied.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        assert_ne!(lease, 0);
                        assert!(d.remaining < N && d.limit == N, "{d:?}");
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        granted.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(2));
                        holders.fetch_sub(1, Ordering::SeqCst);
                        assert!(h.release(b"hot", lease).unwrap(), "a held lease");
                    }
                });
            }
        }
    });
    let most = most.load(Ordering::SeqCst);
    eprintln!("{} granted, {} denied, at most {most} holders", granted.load(Ordering::Relaxed), denied.into_inner());
    assert!(most <= N, "{most} holders at once");
    assert_eq!(most, N, "all {N} places used");
    let d = handles[0].acquire(b"hot").unwrap().0;
    assert_eq!((d.allowed, d.remaining), (true, N - 1), "everything was released");
}

/// Renew and release say whether the lease was held: twice, forged, another
/// key's, expired: false. A lease expires on its own.
#[test]
fn leases_renew_release_and_expire() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "leases_renew_release_and_expire") else { return };
    // Times: each wait leaves 200 ms or more of slack either way.
    let lim = limiter(&url, &prefix("lease"), "concurrency=2 lease=1s");
    let t0 = Instant::now();
    let (d, a) = lim.acquire(b"k").unwrap();
    assert_eq!((d.allowed, d.limit, d.remaining, d.window_ms, d.retry_after_ms), (true, 2, 1, 1000, 0));
    assert!(d.reset_ms > 800 && d.reset_ms <= 1000, "{d:?}");
    let (d, b) = lim.acquire(b"k").unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 0));
    assert_ne!(a, b);
    let (d, none) = lim.acquire(b"k").unwrap();
    assert_eq!((d.allowed, none, d.remaining), (false, 0, 0));
    assert!(d.retry_after_ms > 700 && d.retry_after_ms <= 1000, "{d:?}");
    // Release: once true, then false; renew of a released lease: false.
    assert!(lim.release(b"k", a).unwrap());
    assert!(!lim.release(b"k", a).unwrap());
    assert!(!lim.renew(b"k", a).unwrap());
    for forged in [0, 1, u64::MAX, b ^ 1, b.wrapping_add(1)] {
        assert!(!lim.release(b"k", forged).unwrap(), "{forged:#x}");
        assert!(!lim.renew(b"k", forged).unwrap(), "{forged:#x}");
    }
    assert!(!lim.release(b"other", b).unwrap(), "another key's id");
    // b is renewed at ~500 ms (it would expire at 1 s): held until ~1.5 s.
    std::thread::sleep(Duration::from_millis(500).saturating_sub(t0.elapsed()));
    assert!(lim.renew(b"k", b).unwrap());
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(t0.elapsed()));
    let (d, c) = lim.acquire(b"k").unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 0), "b still holds one place: {d:?}");
    assert!(lim.release(b"k", c).unwrap());
    // Left alone, b expires: renew and release say 0, the place is free.
    std::thread::sleep(Duration::from_millis(1800).saturating_sub(t0.elapsed()));
    assert!(!lim.renew(b"k", b).unwrap(), "expired");
    assert!(!lim.release(b"k", b).unwrap(), "expired");
    let (d, _) = lim.acquire(b"k").unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 1), "{d:?}");
    // An expired lease frees its place for an acquire by itself.
    let one = limiter(&url, &prefix("lease-one"), "concurrency=1 lease=300ms");
    let (_, x) = one.acquire(b"k").unwrap();
    assert!(!one.acquire(b"k").unwrap().0.allowed);
    std::thread::sleep(Duration::from_millis(400));
    let (d, y) = one.acquire(b"k").unwrap();
    assert!(d.allowed && y != x, "{d:?}");
    assert!(!one.release(b"k", x).unwrap());
    assert!(one.release(b"k", y).unwrap());
    // reset forgets the key's leases.
    let (_, z) = one.acquire(b"r").unwrap();
    one.reset(b"r").unwrap();
    assert!(!one.release(b"r", z).unwrap());
}

/// Every key an adjust or an acquire writes has a TTL, until it is fresh
/// (a debt makes it longer); a refund back to fresh deletes it.
#[test]
fn every_key_has_a_ttl() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "every_key_has_a_ttl") else { return };
    let mut c = conn(&url);
    // (A token bucket's key lives until its state is fresh, rounded up to
    // the next whole second of server time: check.lua's store.)
    for (algo, max_ms) in
        [("", 60_000 * 4 + 1_000), ("algorithm=fixed_window", 60_000), ("algorithm=sliding_window", 120_000)]
    {
        let pfx = prefix("ttl");
        let lim = limiter(&url, &pfx, &format!("rate=10/minute {algo}"));
        lim.adjust(b"charged", 3).unwrap();
        lim.adjust(b"debt", 40).unwrap(); // a bucket: 4 minutes of debt
        lim.check(b"refunded", 3).unwrap();
        lim.adjust(b"refunded", -3).unwrap();
        lim.adjust(b"peeked", 0).unwrap();
        lim.adjust(b"refund-only", -3).unwrap();
        let keys = ttls(&mut c, &pfx);
        assert_eq!(keys.len(), 2, "{algo}: only the charged keys: {keys:?}");
        for (k, ttl) in &keys {
            assert!(*ttl > 0 && *ttl <= max_ms, "{algo}: {k} has PTTL {ttl}");
        }
        if algo.is_empty() {
            let debt = keys.iter().find(|(k, _)| k.contains("debt")).unwrap().1;
            assert!(debt > 60_000 * 3, "the debt's TTL: {debt}");
        }
    }
    let pfx = prefix("ttl-lease");
    let lim = limiter(&url, &pfx, "concurrency=3 lease=5s");
    let (_, a) = lim.acquire(b"k").unwrap();
    lim.acquire(b"k").unwrap();
    assert!(lim.renew(b"k", a).unwrap());
    let keys = ttls(&mut c, &pfx);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].1 > 4_000 && keys[0].1 <= 5_000, "{keys:?}");
    assert!(keys[0].0.ends_with("}:c3/5000000"), "{keys:?}");
}

/// Binary keys, braces, NULs, 1 MiB: adjusts and leases work on them, each
/// key its own.
#[test]
fn hostile_keys() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "hostile_keys") else { return };
    let rates = limiter(&url, &prefix("hostile"), "rate=3/minute");
    let conc = limiter(&url, &prefix("hostile-c"), "concurrency=1 lease=10s");
    let mut big = vec![b'{'; 1 << 20];
    let mut big2 = big.clone();
    *big2.last_mut().unwrap() = b'}';
    big[7] = 0;
    let keys: [&[u8]; 8] = [b"a\0b", b"a\0c", b"", b"{x}", b"}{", b"{", &big, &big2];
    for k in keys {
        let d = rates.adjust(k, 3).unwrap();
        assert!(!d.allowed, "{:?}", &k[..k.len().min(8)]);
        let (d, lease) = conc.acquire(k).unwrap();
        assert!(d.allowed && lease != 0);
        assert!(!conc.acquire(k).unwrap().0.allowed);
    }
    for k in keys {
        assert_eq!(rates.adjust(k, -1).unwrap().remaining, 1, "each key its own");
        assert!(!conc.acquire(k).unwrap().0.allowed);
    }
}

/// Redis unreachable: adjust and acquire answer with on_error's decision and
/// RL_ERR_BACKEND, renew and release with the error; nothing panics.
#[test]
fn redis_down_is_a_backend_error() {
    if env_or_skip("RL_TEST_REDIS_SERVER", "redis_down_is_a_backend_error").is_none() {
        return;
    }
    let port = refused_port();
    for (on_error, allowed) in [("allow", true), ("deny", false)] {
        let cfg = |rest: &str| {
            Limiter::from_config_str(&format!(
                "{rest} backend=redis url=redis://127.0.0.1:{port} timeout_ms=200 on_error={on_error}"
            ))
            .unwrap()
        };
        let rates = cfg("rate=5/s");
        let (e, d) = rates.adjust(b"k", 3).unwrap_err();
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        assert_eq!(d.allowed, allowed);
        let (e, d) = rates.adjust(b"k", -3).unwrap_err();
        assert!(matches!(e, Error::Backend(_)) && d.allowed == allowed, "{e:?}");
        let conc = cfg("concurrency=2 lease=1s");
        let (e, d) = conc.acquire(b"k").unwrap_err();
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        assert_eq!((d.allowed, d.limit, d.window_ms), (allowed, 2, 1000));
        assert!(matches!(conc.renew(b"k", 5), Err(Error::Backend(_))));
        assert!(matches!(conc.release(b"k", 5), Err(Error::Backend(_))));
        assert_eq!(rates.stats().unwrap().errors, 2);
        assert_eq!(conc.stats().unwrap().errors, 3, "the acquire, the renew and the release");
    }
}

/// A concurrency limiter's store never runs the rate script (it has no
/// rates): a check is refused before any network.
#[test]
fn a_concurrency_store_refuses_checks_without_a_round_trip() {
    let config = Config::parse("concurrency=3 lease=2s backend=redis url=redis://127.0.0.1:1").unwrap();
    let store = RedisStore::new(&config).unwrap();
    let t = Instant::now();
    assert!(matches!(store.check(b"k", 1), Err(Error::Invalid(_))));
    assert!(matches!(store.adjust(b"k", 1), Err(Error::Invalid(_))));
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(store.key_name(b"k"), b"{rl:k}:c3/2000000".to_vec());
}

/// Exactly one command per adjust (FCALL), acquire, renew and release
/// (EVALSHA),
/// as MONITOR sees them.
#[test]
fn one_command_per_call() {
    let Some(bin) = env_or_skip("RL_TEST_REDIS_SERVER", "one_command_per_call") else { return };
    let server = Server::start(&bin);
    let mut admin = server.conn();
    let rates =
        Limiter::from_config_str(&format!("rate=10/minute,100/hour backend=redis url={}", server.url())).unwrap();
    let conc =
        Limiter::from_config_str(&format!("concurrency=2 lease=10s backend=redis url={}", server.url())).unwrap();
    // Load both scripts (the rate script's function: FCALL, "not found",
    // FUNCTION LOAD, FCALL; the other: NOSCRIPT -> EVAL), once each.
    rates.adjust(b"warm-up", 1).unwrap();
    let (_, l) = conc.acquire(b"warm-up").unwrap();
    conc.release(b"warm-up", l).unwrap();
    let mut calls = 0;
    let seen = commands_during(server.port, &mut admin, || {
        for delta in [5, 20, 0, -3, -100, i64::MAX, i64::MIN] {
            rates.adjust(b"a", delta).unwrap();
            calls += 1;
        }
    });
    assert_eq!(seen, vec!["fcall"; calls], "one FCALL per adjust");
    let seen = commands_during(server.port, &mut admin, || {
        let (_, x) = conc.acquire(b"c").unwrap();
        let (_, y) = conc.acquire(b"c").unwrap();
        let (d, _) = conc.acquire(b"c").unwrap(); // denied
        assert!(!d.allowed);
        assert!(conc.renew(b"c", x).unwrap());
        assert!(conc.release(b"c", x).unwrap());
        assert!(!conc.release(b"c", x).unwrap());
        assert!(!conc.renew(b"c", x).unwrap());
        assert!(conc.release(b"c", y).unwrap());
    });
    assert_eq!(seen, vec!["evalsha"; 8], "one EVALSHA per acquire, renew and release");
    eprintln!("commands per call: 1 FCALL for rl_adjust, 1 EVALSHA for rl_acquire, rl_renew, rl_release");
    // A script flush: the next calls reload their scripts once.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut admin).unwrap();
    // (the last refund, clamped to 2^50 units, took every debt back)
    assert_eq!(rates.adjust(b"a", 0).unwrap().remaining, 10);
    assert!(conc.acquire(b"after-flush").unwrap().0.allowed);
}
