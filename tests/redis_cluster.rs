//! backend=redis on a 3-node Redis Cluster (`url=redis+cluster://...`, from
//! RL_TEST_REDIS_CLUSTER_URL, which scripts/with_redis.sh sets after making
//! the cluster; skipped without it): several rates per key, all or nothing,
//! work on every slot because the keys of one check share a hash tag; so do
//! adjusts and concurrency limiters (one sorted set per key, same tag).

mod redis_common;

use std::sync::atomic::{AtomicU64, Ordering};

use ratelimit::limiter::Limiter;
use redis_common::{conn, env_or_skip, prefix};

#[test]
fn several_rates_on_a_cluster() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_CLUSTER_URL", "several_rates_on_a_cluster") else { return };
    let pfx = prefix("cluster");
    let lim =
        Limiter::from_config_str(&format!("rate=3/s,5/minute backend=redis url={url} prefix={pfx} timeout_ms=2000"))
            .unwrap();
    for i in 0..40 {
        let key = format!("user-{i}");
        for _ in 0..3 {
            assert!(lim.check(key.as_bytes(), 1).unwrap().allowed, "{key}");
        }
        let d = lim.check(key.as_bytes(), 1).unwrap();
        assert_eq!((d.allowed, d.rate_index), (false, 0), "{key}");
        // rate 1 still has exactly 2 of its 5: a cost of 2 passes rate 1 but not rate 0
        let d = lim.check(key.as_bytes(), 0).unwrap();
        assert_eq!((d.rate_index, d.remaining), (0, 0));
        lim.reset(key.as_bytes()).unwrap();
        let d = lim.check(key.as_bytes(), 0).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 3), "{key} after reset");
        assert!(lim.check(key.as_bytes(), 1).unwrap().allowed);
    }
    assert_eq!(lim.stats().unwrap().errors, 0);

    // The keys are spread over the nodes, and each has a TTL.
    let mut nodes_with_keys = 0;
    for node in url.trim_start_matches("redis+cluster://").split(',') {
        let mut c = conn(&format!("redis://{node}"));
        let (_, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(format!("{{{pfx}*"))
            .arg("COUNT")
            .arg(10_000)
            .query(&mut c)
            .unwrap();
        nodes_with_keys += !keys.is_empty() as u32;
        for k in keys {
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
            assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
        }
    }
    assert!(nodes_with_keys >= 2, "40 keys all landed on one node?");
}

#[test]
fn threads_on_one_cluster_key_admit_exactly_the_quota() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_CLUSTER_URL", "threads_on_one_cluster_key") else { return };
    let lim = Limiter::from_config_str(&format!(
        "rate=100/hour,150/day backend=redis url={url} prefix={} timeout_ms=2000",
        prefix("cl-race")
    ))
    .unwrap();
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    if lim.check(b"hot", 1).unwrap().allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 100);
}

/// Adjusts and leases on a cluster: the key's set of leases (and a rate
/// key's states) carry the hash tag, so every key of every slot works, and
/// N holders at most across threads.
#[test]
fn adjusts_and_leases_on_a_cluster() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_CLUSTER_URL", "adjusts_and_leases_on_a_cluster") else { return };
    let rates = Limiter::from_config_str(&format!(
        "rate=3/minute,10/hour backend=redis url={url} prefix={} timeout_ms=2000",
        prefix("cl-adj")
    ))
    .unwrap();
    let conc = Limiter::from_config_str(&format!(
        "concurrency=2 lease=30s backend=redis url={url} prefix={} timeout_ms=2000",
        prefix("cl-conc")
    ))
    .unwrap();
    for i in 0..20 {
        let key = format!("user-{i}");
        let d = rates.adjust(key.as_bytes(), 5).unwrap();
        assert_eq!((d.allowed, d.rate_index), (false, 0), "{key}");
        let d = rates.adjust(key.as_bytes(), -4).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 2), "{key}");
        let (d, a) = conc.acquire(key.as_bytes()).unwrap();
        assert!(d.allowed && a != 0, "{key}");
        let (_, b) = conc.acquire(key.as_bytes()).unwrap();
        assert!(!conc.acquire(key.as_bytes()).unwrap().0.allowed, "{key}");
        assert!(conc.renew(key.as_bytes(), a).unwrap());
        assert!(conc.release(key.as_bytes(), a).unwrap());
        assert!(conc.release(key.as_bytes(), b).unwrap());
        assert!(!conc.release(key.as_bytes(), b).unwrap());
    }
    let (holders, most) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    let (d, lease) = conc.acquire(b"hot").unwrap();
                    if d.allowed {
                        most.fetch_max(holders.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        holders.fetch_sub(1, Ordering::SeqCst);
                        assert!(conc.release(b"hot", lease).unwrap());
                    }
                }
            });
        }
    });
    assert!(most.load(Ordering::SeqCst) <= 2);
    assert_eq!(rates.stats().unwrap().errors + conc.stats().unwrap().errors, 0);
}
