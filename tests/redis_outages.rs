//! backend=redis when Redis is not there, not answering, or comes back; and
//! how many Redis commands a check costs. These tests start their own
//! servers (RL_TEST_REDIS_SERVER, set by scripts/with_redis.sh) or fake ones
//! (a refused port, a listener that never answers); skipped without it.

mod redis_common;

use std::time::{Duration, Instant};

use ratelimit::error::Error;
use ratelimit::limiter::Limiter;
use ratelimit::store::redis::{COOL_DOWN_MS, THRESHOLD};
use redis_common::{commands_during, env_or_skip, prefix, refused_port, silent_server, Server};

const TIMEOUT_MS: u64 = 100;
/// Scheduling slack allowed on top of timeout_ms on a busy 2-core machine.
const MARGIN_MS: u64 = 250;

fn lim(port: u16, on_error: &str) -> Limiter {
    let t = Instant::now();
    let l = Limiter::from_config_str(&format!(
        "rate=5/s backend=redis url=redis://127.0.0.1:{port} timeout_ms={TIMEOUT_MS} on_error={on_error} prefix={}",
        prefix("out")
    ))
    .expect("creating a limiter never fails because Redis is down");
    // Touching the network would wait out the silent server's timeout; the
    // margin below it is for a busy machine (the first limiter of a process
    // also calibrates the clock).
    assert!(t.elapsed() < Duration::from_millis(TIMEOUT_MS * 4 / 5), "rl_create touched the network");
    l
}

/// One check that must fail with a backend error within the timeout.
fn failing_check(l: &Limiter, allowed: bool) -> Duration {
    let t = Instant::now();
    let (e, d) = l.check(b"k", 1).expect_err("Redis is unreachable");
    let took = t.elapsed();
    assert!(matches!(e, Error::Backend(_)), "{e:?}");
    assert_eq!(d.allowed, allowed, "on_error decides");
    assert!(took < Duration::from_millis(TIMEOUT_MS + MARGIN_MS), "took {took:?}");
    took
}

#[test]
fn refused_and_silent_servers_answer_within_the_timeout() {
    if env_or_skip("RL_TEST_REDIS_SERVER", "refused_and_silent_servers").is_none() {
        return;
    }
    let silent = silent_server();
    for (port, what) in [(refused_port(), "refused"), (silent, "silent")] {
        for (on_error, allowed) in [("allow", true), ("deny", false)] {
            let l = lim(port, on_error);
            let took = failing_check(&l, allowed);
            if what == "silent" {
                assert!(took >= Duration::from_millis(TIMEOUT_MS - 5), "{what}: gave up early: {took:?}");
            }
            let s = l.stats().unwrap();
            assert_eq!((s.errors, s.allowed, s.limited), (1, 0, 0), "{what}");
            // reset fails the same way, bounded too
            let t = Instant::now();
            assert!(matches!(l.reset(b"k"), Err(Error::Backend(_))));
            assert!(t.elapsed() < Duration::from_millis(TIMEOUT_MS + MARGIN_MS));
        }
    }
}

#[test]
fn fails_fast_after_repeated_failures_then_probes() {
    if env_or_skip("RL_TEST_REDIS_SERVER", "fails_fast").is_none() {
        return;
    }
    let l = lim(silent_server(), "deny");
    for _ in 0..THRESHOLD {
        assert!(failing_check(&l, false) >= Duration::from_millis(TIMEOUT_MS - 5));
    }
    // cooling down: no network, immediate answers
    let t = Instant::now();
    for _ in 0..100 {
        let (e, d) = l.check(b"k", 1).unwrap_err();
        assert!(!d.allowed);
        assert!(format!("{e}").contains("failing fast"), "{e}");
    }
    assert!(t.elapsed() < Duration::from_millis(50), "100 fail-fast checks took {:?}", t.elapsed());
    assert_eq!(l.stats().unwrap().errors, THRESHOLD as u64 + 100);
    // after the cool-down, one probe goes to the network again (and times out)
    std::thread::sleep(Duration::from_millis(COOL_DOWN_MS + 50));
    let took = failing_check(&l, false);
    assert!(took >= Duration::from_millis(TIMEOUT_MS - 5), "the probe did not try: {took:?}");
    let t = Instant::now();
    let _ = l.check(b"k", 1).unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(20), "a failed probe starts another cool-down");
}

#[test]
fn recovers_after_redis_restarts() {
    let Some(bin) = env_or_skip("RL_TEST_REDIS_SERVER", "recovers_after_redis_restarts") else { return };
    let mut server = Server::start(&bin);
    let l = Limiter::from_config_str(&format!(
        "rate=100000/s backend=redis url={} timeout_ms={TIMEOUT_MS} on_error=allow",
        server.url()
    ))
    .unwrap();
    // several pooled connections
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    assert!(l.check(b"k", 1).is_ok());
                }
            });
        }
    });
    server.kill();
    let t = Instant::now();
    for _ in 0..20 {
        let (_, d) = l.check(b"k", 1).expect_err("Redis is down");
        assert!(d.allowed);
    }
    assert!(t.elapsed() < Duration::from_millis(20 * (TIMEOUT_MS + MARGIN_MS)));
    server.restart();
    let back = Instant::now();
    loop {
        if l.check(b"k", 1).is_ok() {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "no recovery within 5 s of the restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("recovered {:?} after the restart", back.elapsed());
    // and stays healthy, also on other threads' connections
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert!(l.check(b"k", 1).is_ok());
                }
            });
        }
    });
}

#[test]
fn one_fcall_per_check_none_for_cached_denials() {
    let Some(bin) = env_or_skip("RL_TEST_REDIS_SERVER", "one_fcall_per_check") else { return };
    let server = Server::start(&bin);
    let mut admin = server.conn();
    let l = Limiter::from_config_str(&format!("rate=10/minute,100/hour backend=redis url={}", server.url())).unwrap();
    // The first check loads the function library, once.
    let seen = commands_during(server.port, &mut admin, || {
        l.check(b"warm-up", 1).unwrap();
    });
    assert_eq!(seen, ["fcall", "function", "fcall"], "FCALL, not found, FUNCTION LOAD, FCALL");
    let seen = commands_during(server.port, &mut admin, || {
        for i in 0..50 {
            l.check(format!("k{i}").as_bytes(), 1).unwrap();
        }
    });
    assert_eq!(seen, vec!["fcall"; 50], "50 checks: one FCALL each, nothing else");
    let mut denied = 0;
    let seen = commands_during(server.port, &mut admin, || {
        for _ in 0..100 {
            denied += !l.check(b"hot", 1).unwrap().allowed as u64;
        }
    });
    assert_eq!(denied, 90);
    // 10 allowed + 1 denial from Redis; the other 89 denials are local
    assert_eq!(seen, vec!["fcall"; 11]);
    assert_eq!(l.stats().unwrap().local_denials, 89);
    eprintln!("commands per check: 1 FCALL; 0 for the 89 cached denials");
    // A function flush (as a restart loses the library): the next check
    // loads it again, once; a script flush changes nothing.
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut admin).unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut admin).unwrap();
    let seen = commands_during(server.port, &mut admin, || {
        assert!(l.check(b"after-flush", 1).unwrap().allowed);
        assert!(l.check(b"after-flush", 1).unwrap().allowed);
    });
    assert_eq!(seen, ["fcall", "function", "fcall", "fcall"]);
}

/// A server without Redis Functions (before Redis 7; here FCALL renamed
/// away): checks fall back to EVALSHA for good, and decide the same.
#[test]
fn without_functions_checks_use_evalsha() {
    let Some(bin) = env_or_skip("RL_TEST_REDIS_SERVER", "without_functions") else { return };
    let server = Server::start_with(&bin, &["--rename-command", "FCALL", ""]);
    let mut admin = server.conn();
    let l = Limiter::from_config_str(&format!("rate=3/minute backend=redis url={}", server.url())).unwrap();
    let seen = commands_during(server.port, &mut admin, || {
        assert!(l.check(b"k", 1).unwrap().allowed);
    });
    // (MONITOR does not show the refused FCALL)
    assert_eq!(seen, ["evalsha", "eval"], "unknown command -> EVALSHA, NOSCRIPT -> EVAL");
    let seen = commands_during(server.port, &mut admin, || {
        assert!(l.check(b"k", 1).unwrap().allowed);
        assert!(l.check(b"k", 1).unwrap().allowed);
        assert!(!l.check(b"k", 1).unwrap().allowed);
    });
    assert_eq!(seen, vec!["evalsha"; 3], "no FCALL tried again");
    // Several rates in one key by EVALSHA too (the script makes their
    // functions on such calls only): all or nothing, and an adjust.
    let l = Limiter::from_config_str(&format!("rate=2/minute,3/hour backend=redis url={}", server.url())).unwrap();
    assert!(l.check(b"m", 1).unwrap().allowed);
    assert!(l.check(b"m", 1).unwrap().allowed);
    let d = l.check(b"m", 1).unwrap();
    assert_eq!((d.allowed, d.rate_index), (false, 0), "{d:?}");
    let d = l.adjust(b"m", -1).unwrap();
    assert_eq!((d.allowed, d.rate_index, d.remaining), (true, 0, 1), "{d:?}");
    let d = l.check(b"m", 1).unwrap();
    assert_eq!((d.allowed, d.rate_index, d.remaining), (true, 0, 0), "the minute's refunded unit spent: {d:?}");
    let d = l.check(b"m", 1).unwrap();
    assert!(!d.allowed, "{d:?}");
    assert_eq!(l.stats().unwrap().errors, 0);
}

/// An ACL that refuses FCALL, or only FUNCTION LOAD: checks fall back to
/// EVALSHA for good, and decide the same.
#[test]
fn functions_refused_by_an_acl_checks_use_evalsha() {
    let Some(bin) = env_or_skip("RL_TEST_REDIS_SERVER", "functions_refused_by_an_acl") else { return };
    let server = Server::start(&bin);
    let mut admin = server.conn();
    for (user, refused) in [("nofcall", "-fcall"), ("noload", "-function")] {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(">pw")
            .arg("~*")
            .arg("+@all")
            .arg(refused)
            .query(&mut admin)
            .unwrap();
        let url = format!("redis://{user}:pw@127.0.0.1:{}", server.port);
        let l = Limiter::from_config_str(&format!("rate=2/minute backend=redis url={url} prefix={user}:")).unwrap();
        assert!(l.check(b"k", 1).unwrap().allowed, "{user}");
        let seen = commands_during(server.port, &mut admin, || {
            assert!(l.check(b"k", 1).unwrap().allowed);
            assert!(!l.check(b"k", 1).unwrap().allowed);
        });
        assert_eq!(seen, vec!["evalsha"; 2], "{user}: no FCALL tried again");
    }
}
