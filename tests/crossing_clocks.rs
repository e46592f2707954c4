//! Threads whose clock readings cross, through the public API.
//!
//! The memory and shm backends read the clock before taking a key's lock, so
//! a thread can read the clock, lose the race for the lock, and then find a
//! state written by a thread that read the clock after it: from its point of
//! view, the state is from the future. With many threads hammering one key
//! whose bucket is empty, a token bucket's tat then lies more than a bucket
//! ahead of such a thread's `now`. Every decision must still be one the
//! library promises: `remaining <= limit`, a peek (cost 0) allowed, no error
//! and no panic (overflow checks are on in debug builds).

use std::ffi::CString;
use std::sync::{Barrier, Mutex};

use ratelimit::limiter::{Decision, Limiter};
use ratelimit::store::shm_unlink;

const THREADS: usize = 8;
/// Checks per thread, all on one key of `rate=100000/s` (a bucket of 100,000,
/// drained first, so that they run with it empty, where the readings matter);
/// about a second's worth in either build.
const CHECKS: usize = if cfg!(debug_assertions) { 40_000 } else { 250_000 };

/// One test at a time: the threads of both would share two cores or so, and
/// too few checks a second would let the bucket refill.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Default)]
struct Tally {
    checks: u64,
    denied: u64,
    over_limit: u64,
    peeks_denied: u64,
    errors: u64,
    example: Option<Decision>,
}

fn hammer(limiter: &Limiter) -> Tally {
    let drained = limiter.check(b"one-key", 100_000).expect("a check");
    assert!(drained.allowed && drained.remaining == 0, "{drained:?}");
    let barrier = Barrier::new(THREADS);
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut t = Tally::default();
                    barrier.wait();
                    for i in 0..CHECKS {
                        let cost = if i % 4 == 3 { 0 } else { 1 };
                        match limiter.check(b"one-key", cost) {
                            Ok(d) => {
                                t.checks += 1;
                                t.denied += u64::from(!d.allowed);
                                let bad = d.remaining > d.limit || (cost == 0 && !d.allowed);
                                t.over_limit += u64::from(d.remaining > d.limit);
                                t.peeks_denied += u64::from(cost == 0 && !d.allowed);
                                if bad && t.example.is_none() {
                                    t.example = Some(d);
                                }
                            }
                            Err(_) => t.errors += 1,
                        }
                    }
                    t
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a check panicked")).collect()
    });
    let mut all = Tally::default();
    for t in tallies {
        all.checks += t.checks;
        all.denied += t.denied;
        all.over_limit += t.over_limit;
        all.peeks_denied += t.peeks_denied;
        all.errors += t.errors;
        all.example = all.example.or(t.example);
    }
    all
}

fn assert_promises_kept(backend: &str, t: &Tally) {
    assert_eq!(t.errors, 0, "{backend}: checks failed");
    assert!(
        t.over_limit == 0 && t.peeks_denied == 0,
        "{backend}: of {} decisions, {} had remaining > limit and {} peeks were denied; e.g. {:?}",
        t.checks,
        t.over_limit,
        t.peeks_denied,
        t.example
    );
    // Otherwise the bucket never ran dry and the test proved nothing.
    assert!(t.denied > 0, "{backend}: the bucket was never empty");
}

#[test]
fn memory_threads_with_crossing_clocks() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let limiter = Limiter::from_config_str("rate=100000/s").unwrap();
    assert_promises_kept("memory", &hammer(&limiter));
}

/// Removes the shm region when the test ends, however it ends.
struct Unlink(CString);
impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = shm_unlink(&self.0);
    }
}

#[test]
fn shm_threads_with_crossing_clocks() {
    let name = format!("/rl-crossing-{}", std::process::id());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let region = Unlink(CString::new(name.clone()).unwrap());
    let _ = shm_unlink(&region.0);
    let limiter = Limiter::from_config_str(&format!("backend=shm name={name} rate=100000/s")).unwrap();
    assert_promises_kept("shm", &hammer(&limiter));
}
