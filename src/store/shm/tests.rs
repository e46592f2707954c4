//! Tests that need the region's insides: a process that dies holding a shard
//! lock half-way through a write, and a storm of workers killed at random
//! moments. (The C tests in tests/c/test_shm_*.c check the public contract.)
//!
//! Children are made with fork() and leave with _exit(); they only run
//! library code that does not allocate, so forking from the multi-threaded
//! test harness is safe.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::layout::HEADER_BYTES;
use super::wait::COOL_DOWN;
use super::*;
use crate::config::Config;
use crate::top::Which;

/// A region name unique to this test, removed when dropped.
struct Name(String);

impl Name {
    fn new(tag: &str) -> Name {
        // SAFETY: getpid has no preconditions.
        let name = Name(format!("/rl-rust-test-{}-{tag}", unsafe { libc::getpid() }));
        let _ = shm_unlink(&CString::new(name.0.as_str()).unwrap());
        name
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = shm_unlink(&CString::new(self.0.as_str()).unwrap());
    }
}

/// An attach's configuration for the region `name`.
fn attach_config(name: &Name) -> Config {
    Config::parse(&format!("backend=shm name={} timeout_ms=1000", name.0)).unwrap()
}

fn open(config: &str, name: &Name) -> ShmStore {
    let c = Config::parse(&format!("{config} backend=shm name={}", name.0)).unwrap();
    ShmStore::open(&c).unwrap()
}

/// Runs `body` in a child process; returns its pid. The child exits with
/// `body`'s code (101 if it panicked), without running any destructor.
fn spawn(body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no preconditions; the child only runs `body` and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: ends the child at once, as a crash would.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for `pid`; its exit code, or 128 + the signal that killed it.
fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid int to fill.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {}
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Waits for `pid` at most `limit`; kills it and returns None after that.
fn wait_within(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: as in `wait`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        if Instant::now() > deadline {
            // SAFETY: our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait(pid);
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn recoveries(s: &ShmStore) -> u64 {
    // SAFETY: a header atomic.
    unsafe { (*addr_of!((*s.header()).recoveries)).load(Ordering::Relaxed) }
}

/// Everything a repair promises, checked with every shard locked: each
/// shard's key count is a recount, the total is their sum and within
/// capacity, no undo record is open, and `same_halves` slots (two identical
/// rates) have equal states.
fn assert_consistent(s: &ShmStore, same_halves: bool) {
    s.heal(&Budget::new(), true);
    let stride = s.layout.geometry.stride;
    let mut guards: Vec<_> = (0..s.layout.geometry.shards).map(|i| s.lock(i, &Budget::new()).unwrap()).collect();
    let mut sum = 0;
    for g in guards.iter_mut() {
        let index = g.index;
        let (words, stats, journal) = g.parts();
        let recount = words.chunks_exact(stride).filter(|w| w[0] != 0).count() as u64;
        assert_eq!(stats.keys, recount, "shard {index}: counted keys");
        assert_eq!(journal.active, 0, "shard {index}: open undo record");
        if same_halves {
            let half = (stride - 1) / 2;
            for w in words.chunks_exact(stride).filter(|w| w[0] != 0) {
                assert_eq!(w[1..1 + half], w[1 + half..], "a torn multi-rate state");
            }
        }
        sum += recount;
    }
    assert_eq!(s.total_keys().load(Ordering::Relaxed), sum, "table-wide key count");
    assert!(sum <= s.layout.capacity, "keys {sum} within capacity");
}

#[test]
fn layout_and_bytes_per_key() {
    let name = Name::new("layout");
    let s = open("rate=100/minute capacity=100000", &name);
    assert_eq!(s.layout.geometry.stride, 2);
    let bpk = s.bytes_per_key();
    assert!((32.0..32.2).contains(&bpk), "{bpk} bytes per key");
    let c = CString::new(name.0.as_str()).unwrap();
    assert!(shm_unlink(&c).is_ok());
    assert!(matches!(shm_unlink(&c), Err(Error::Io(_))));
    assert!(matches!(shm_unlink(c"no-slash"), Err(Error::Invalid(_))));
}

/// An attach (no configuration of its own) shares the creator's region and
/// learns its limits from it; with no region by that name it fails at once.
#[test]
fn an_attach_uses_the_stored_configuration() {
    let name = Name::new("attach");
    match ShmStore::attach(&attach_config(&name)) {
        Err(Error::Io(m)) => assert!(m.contains(&format!("no shm region \"{}\"", name.0)), "{m}"),
        r => panic!("attached to nothing: {:?}", r.map(|_| ())),
    }
    let created = open("rate=3/hour,100/d algorithm=fixed_window capacity=50 top=5", &name);
    let (attached, config) = ShmStore::attach(&attach_config(&name)).expect("attached");
    assert_eq!(
        config.describe(),
        format!(
            "rate=3/h,100/d algorithm=fixed_window capacity=50 top=5 backend=shm name={} mode=0600 timeout_ms=1000 \
             on_error=allow dry_run=off",
            name.0
        )
    );
    assert_eq!(config.mode, 0o600);
    assert_eq!(attached.layout, created.layout);
    assert!(created.check(b"k", 2).unwrap().outcome.allowed);
    let o = attached.check(b"k", 0).unwrap().outcome;
    assert_eq!((o.allowed, o.remaining), (true, 1));
    assert!(!attached.check(b"k", 2).unwrap().outcome.allowed);
}

/// An attach trusts the stored text only as far as the whole region agrees
/// with it: a text rewritten behind the library's back (another limit, a
/// non-canonical spelling, another backend, garbage) is refused, never used.
#[test]
fn an_attach_refuses_a_rewritten_configuration_text() {
    let name = Name::new("attach-forged");
    let original = "rate=5/s algorithm=token_bucket burst=5 capacity=100 top=32";
    for (forged, why) in [
        ("rate=6/s algorithm=token_bucket burst=5 capacity=100 top=32", "does not match its text \"rate=6/s"),
        ("rate=5/1s algorithm=token_bucket burst=5 capacity=10 top=32", "holds limits for \"rate=5/1s"),
        ("rate=5/s backend=redis url=redis://h:1 on_error=deny top=32", "is not a region's limits"),
        ("rate=5/s algorithm=token_bucket burst=5 capacity=0x1 top=32", "cannot use"),
        ("\u{7f}ate=5/s algorithm=token_bucket burst=5 capacity=100 top=32", "not printable ASCII"),
        // Sketches of another size, or `top` spelt another way.
        ("rate=5/s algorithm=token_bucket burst=5 capacity=100 top=33", "does not match its text"),
        ("rate=5/s algorithm=token_bucket burst=5 capacity=100 top=03", "holds limits for \"rate=5/s"),
        ("rate=5/s algorithm=token_bucket burst=5 capacity=100 top=xy", "cannot use"),
    ] {
        assert_eq!(forged.len(), original.len(), "{forged}");
        let created = open("rate=5/s capacity=100", &name);
        assert_eq!(created.layout.config_text, original);
        // SAFETY: the text area lies inside the mapping (the layout was
        // checked); nothing else uses the region while the test writes it.
        unsafe {
            let at = created.region.base().add(created.layout.config_text_offset);
            std::ptr::copy_nonoverlapping(forged.as_ptr(), at, forged.len());
        }
        match ShmStore::attach(&attach_config(&name)) {
            Err(Error::Incompatible(m)) => assert!(m.contains(why) && m.contains(&name.0), "{forged}: {m}"),
            r => panic!("{forged}: {:?}", r.map(|(_, c)| c)),
        }
        drop(created);
        shm_unlink(&CString::new(name.0.as_str()).unwrap()).unwrap();
    }
}

/// Attaching while the creator is still setting the region up (the object
/// empty, then sized but not ready) waits for it (the READY protocol), then
/// gets the creator's configuration, never a half-written one.
#[test]
fn an_attach_waits_for_a_creator_still_initialising() {
    let name = Name::new("attach-ready");
    let pause = Duration::from_millis(300);
    let creator = {
        let name = name.0.clone();
        std::thread::spawn(move || {
            region::CREATE_PAUSE.set(pause);
            let c = Config::parse(&format!("rate=7/min capacity=64 backend=shm name={name}")).unwrap();
            ShmStore::open(&c).unwrap()
        })
    };
    let path = format!("/dev/shm/{}", &name.0[1..]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::path::Path::new(&path).exists() {
        assert!(Instant::now() < deadline, "the creator never created {path}");
        std::thread::sleep(Duration::from_micros(100));
    }
    let started = Instant::now();
    let (attached, config) = ShmStore::attach(&attach_config(&name)).expect("attached");
    let waited = started.elapsed();
    let created = creator.join().unwrap();
    assert!(waited >= pause, "attached after {waited:?}, before the creator was done");
    assert_eq!(
        config.describe(),
        format!(
            "rate=7/min algorithm=token_bucket burst=7 capacity=64 top=32 backend=shm name={} mode=0600 \
             timeout_ms=1000 on_error=allow dry_run=off",
            name.0
        )
    );
    assert_eq!(attached.layout, created.layout);
    assert!(created.check(b"k", 7).unwrap().outcome.allowed);
    assert!(!attached.check(b"k", 1).unwrap().outcome.allowed);
}

/// A process dies holding a shard lock in the middle of rewriting a stored
/// key's state (undo record open, state half garbage) after bumping the key
/// counts for a key it never wrote. The next process to lock the shard rolls
/// the rewrite back, recounts, and answers as if the dead check never happened.
#[test]
fn a_process_that_dies_holding_a_lock_is_repaired() {
    let name = Name::new("dead-owner");
    let config = "rate=5/1000d,7/1000d algorithm=fixed_window capacity=1000";
    let s = open(config, &name);
    for _ in 0..3 {
        assert!(s.check(b"k", 1).unwrap().outcome.allowed);
    }
    assert!(s.check(b"other", 1).unwrap().outcome.allowed);
    let fp = s.seed.fingerprint(b"k");
    let place = s.layout.geometry.place(fp);

    let child = spawn(|| {
        let mut guard = s.lock(place.shard, &Budget::new()).unwrap();
        let (shard, journal, _) = guard.shard();
        let i = shard.find(place, fp).expect("k is stored");
        let stride = s.layout.geometry.stride;
        journal.begin(i, &shard.words[i * stride..(i + 1) * stride]);
        // Half a rewrite: the first rate's window count wiped (it would admit
        // 5 more), the second not yet written.
        shard.words[i * stride + 2] = 0;
        // And a new key reserved but never written.
        shard.stats.keys += 1;
        shard.total_keys.fetch_add(1, Ordering::Relaxed);
        // SAFETY: dies holding the lock, as a SIGKILL would leave it.
        unsafe { libc::_exit(0) }
    });
    assert_eq!(wait(child), 0);
    assert_eq!(recoveries(&s), 0);

    // The next process (a fresh handle opened by name) recovers.
    let next = spawn(|| {
        let s2 = open(config, &name);
        let v = s2.check(b"k", 1).unwrap();
        let stats = s2.stats().unwrap();
        let ok = v.outcome.allowed && v.index == 0 && v.outcome.remaining == 1 && stats.keys == 2;
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(wait(next), 0, "the next process answered from the repaired state");
    assert_eq!(recoveries(&s), 1);
    let v = s.check(b"k", 1).unwrap();
    assert!(v.outcome.allowed && v.outcome.remaining == 0);
    assert!(!s.check(b"k", 1).unwrap().outcome.allowed);
    assert_eq!(s.stats().unwrap().keys, 2);
    assert_consistent(&s, false);
}

/// A process dies holding a shard lock in the middle of a sketch record
/// that evicts an entry (top/sketch.rs: floor raised, the victim's
/// fingerprint zeroed, its count half rewritten). The next holder lists
/// neither the victim nor the junk count, and the victim's key, denied again,
/// comes back with a count that still bounds its true one.
#[test]
fn a_process_killed_mid_sketch_record_leaves_sane_bounds() {
    let name = Name::new("torn-sketch");
    let config = "rate=1/1000d capacity=100 top=2";
    let s = open(config, &name);
    assert_eq!(s.layout.geometry.shards, 1);
    for (key, checks) in [(&b"a"[..], 6), (b"b", 3)] {
        for _ in 0..checks {
            s.check(key, 1).unwrap();
        }
    }
    let listed = |s: &ShmStore| -> Vec<(Vec<u8>, u64, u64)> {
        let entries = s.top(Which::Limited, 10).unwrap();
        entries.iter().map(|e| (e.key[..e.key_len as usize].to_vec(), e.count, e.error)).collect()
    };
    assert_eq!(listed(&s), [(b"a".to_vec(), 5, 0), (b"b".to_vec(), 2, 0)]);
    let child = spawn(|| {
        let mut guard = s.lock(0, &Budget::new()).unwrap();
        let (_, _, top) = guard.shard();
        // A denial of a new key "c" evicting b (the smallest count), torn.
        let n = 2;
        let (fps, counts) = (1..1 + n, 1 + n..1 + 2 * n);
        let victim = (0..n).find(|&i| top[counts.start + i] == 2).expect("b's entry");
        top[0] = top[0].max(top[counts.start + victim]);
        top[fps.start + victim] = 0;
        top[counts.start + victim] = 999;
        // SAFETY: dies holding the lock, as a SIGKILL would leave it.
        unsafe { libc::_exit(0) }
    });
    assert_eq!(wait(child), 0);
    assert_eq!(listed(&s), [(b"a".to_vec(), 5, 0)], "the torn entry is not listed");
    assert_eq!(recoveries(&s), 1);
    assert!(!s.check(b"b", 1).unwrap().outcome.allowed);
    // b's third denial: from the floor (2), so 3 with an error of 2.
    assert_eq!(listed(&s), [(b"a".to_vec(), 5, 0), (b"b".to_vec(), 3, 2)]);
    assert_consistent(&s, false);
}

/// A process dies holding the lock of a shard and of the recount: the next
/// operations still complete and the counts come out right.
#[test]
fn a_dead_recounter_is_recovered() {
    let name = Name::new("dead-recounter");
    let s = open("rate=10/1000d capacity=5000", &name);
    for k in 0..500 {
        s.check(format!("k{k}").as_bytes(), 1).unwrap();
    }
    let child = spawn(|| {
        s.total_keys().store(12345, Ordering::Relaxed);
        s.dirty().store(1, Ordering::Relaxed);
        // Dies holding the recount lock and a shard's.
        assert!(lock::try_lock(s.recount_lock(), s.owner.word(s.generations()).unwrap()));
        let _g = s.lock(1, &Budget::new()).unwrap();
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    });
    assert_eq!(wait(child), 0);
    let checker = spawn(|| {
        let v = s.check(b"k7", 1).unwrap();
        (!(v.outcome.allowed && v.outcome.remaining == 8)) as i32
    });
    assert_eq!(wait_within(checker, Duration::from_secs(20)), Some(0), "checks go on");
    assert_eq!(s.stats().unwrap().keys, 500);
    assert_consistent(&s, false);
}

/// A child process stopped (SIGSTOP) while it holds a shard lock. Resumed
/// with `resume`; killed and reaped if dropped first (a failing test must not
/// leave a stopped process behind).
struct StoppedHolder(libc::pid_t);

impl StoppedHolder {
    /// Forks a child that locks shard `shard` of `s` and stops itself; returns
    /// once it is stopped. When continued it unlocks and exits with 0.
    fn new(s: &ShmStore, shard: usize) -> StoppedHolder {
        let pid = spawn(|| {
            let guard = s.lock(shard, &Budget::new()).unwrap();
            // SAFETY: stops this (single-threaded) child until SIGCONT.
            unsafe { libc::raise(libc::SIGSTOP) };
            drop(guard);
            0
        });
        let holder = StoppedHolder(pid);
        let mut status = 0;
        // SAFETY: our child; `status` is a valid int to fill.
        while unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) } != pid {}
        assert!(libc::WIFSTOPPED(status), "the holder stopped (status {status:#x})");
        holder
    }

    /// Continues the child; its exit code.
    fn resume(self) -> i32 {
        let pid = self.0;
        std::mem::forget(self);
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        wait(pid)
    }
}

impl Drop for StoppedHolder {
    fn drop(&mut self) {
        // SAFETY: our child (a stopped process dies of SIGKILL too).
        unsafe { libc::kill(self.0, libc::SIGKILL) };
        wait(self.0);
    }
}

fn shard_of(s: &ShmStore, key: &[u8]) -> usize {
    s.layout.geometry.place(s.seed.fingerprint(key)).shard
}

/// A key whose shard is not `shard`.
fn key_elsewhere(s: &ShmStore, shard: usize) -> Vec<u8> {
    (0..).map(|n| format!("other-{n}").into_bytes()).find(|k| shard_of(s, k) != shard).unwrap()
}

/// Scheduling slack on top of a timeout, generous for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(5);

/// `took` is at least `timeout` (the wait was not cut short) and at most
/// `timeout` plus generous slack (it was bounded).
fn assert_bounded(took: Duration, timeout: Duration, what: &str) {
    assert!(took >= timeout && took < timeout + SLACK, "{what} took {took:?}, timeout {timeout:?}");
}

/// A worker stopped while holding a shard lock does not wedge the others:
/// the first operation that needs that shard gives up after timeout_ms with
/// a backend error (checks answer with on_error and are counted in `errors`),
/// and for a cool-down after that the process's operations on the shard fail
/// at once instead of waiting again; then one waits again (a probe). Other
/// shards are served as usual, and once the holder goes on, so does
/// everything, with the errored checks having consumed nothing.
#[test]
fn a_stopped_lock_holder_costs_errors_not_a_wedge() {
    use crate::ffi::{
        rl_check, rl_create, rl_decision, rl_destroy, rl_last_error, rl_reset, rl_stats, rl_stats_get, rl_sweep,
        RL_ERR_BACKEND, RL_OK,
    };
    use crate::limiter::Limiter;

    const T: u64 = 200;
    /// Checks that fail fast after the first timeout, per limiter.
    const FAST: u64 = 5;
    let timeout = Duration::from_millis(T);
    // A failing-fast operation does not wait: well under the timeout, even on
    // a loaded CI machine.
    let quick = timeout / 2;
    let cool_down = COOL_DOWN.max(timeout);
    let name = Name::new("stopped-owner");
    let config = "rate=5/1000d capacity=1000";
    let s = open(config, &name);
    assert!(s.layout.geometry.shards > 1);
    let full = |on_error: &str| format!("{config} backend=shm name={} timeout_ms={T} on_error={on_error}", name.0);
    let allow = Limiter::from_config_str(&full("allow")).unwrap();
    let deny = Limiter::from_config_str(&full("deny")).unwrap();
    let shard = shard_of(&s, b"k");
    let other = key_elsewhere(&s, shard);
    assert_eq!(allow.check(b"k", 1).unwrap().remaining, 4);

    let holder = StoppedHolder::new(&s, shard);
    let want = format!("shm shard {shard} of region {}: lock not acquired within {T} ms", name.0);
    let waited = |m: &str| m.contains(&want) && !m.contains("failing fast");
    let fast = |m: &str| m.contains(&want) && m.contains("failing fast");
    let check_fails = |lim: &Limiter, allowed: bool, fast_or_not: &dyn Fn(&str) -> bool| {
        let Err((e, d)) = lim.check(b"k", 1) else { panic!("a check on the held shard succeeded") };
        assert_eq!(d.allowed, allowed, "the on_error decision");
        assert!(matches!(&e, Error::Backend(m) if fast_or_not(m)), "{e:?}");
    };
    // When the last limiter of the loop (deny) started failing fast.
    let mut suspect_since = Instant::now();
    for (lim, allowed) in [(&allow, true), (&deny, false)] {
        // The first check on the held shard waits for it, within the bound.
        let started = Instant::now();
        check_fails(lim, allowed, &waited);
        assert_bounded(started.elapsed(), timeout, "a check");
        suspect_since = Instant::now();
        // The next ones, within the cool-down, fail at once.
        for _ in 0..FAST {
            let started = Instant::now();
            check_fails(lim, allowed, &fast);
            assert!(started.elapsed() < quick, "a check failing fast took {:?}", started.elapsed());
        }
        // The other shards are not held up, nor failed.
        let started = Instant::now();
        assert!(lim.check(&other, 1).unwrap().allowed);
        assert!(started.elapsed() < quick, "a check on another shard waited");
    }
    // Resets, sweeps and stats fail fast on the suspect shard too...
    let started = Instant::now();
    assert!(matches!(deny.reset(b"k"), Err(Error::Backend(m)) if fast(&m)));
    assert!(matches!(deny.sweep(), Err(Error::Backend(m)) if fast(&m)));
    assert!(matches!(deny.stats(), Err(Error::Backend(m)) if fast(&m)));
    assert!(started.elapsed() < quick, "reset, sweep, stats failing fast took {:?}", started.elapsed());
    // ...and on a handle that has not timed out yet, each waits within the
    // bound, after which that handle's checks on the shard fail fast.
    for op in ["reset", "sweep", "stats"] {
        let fresh = Limiter::from_config_str(&full("deny")).unwrap();
        let started = Instant::now();
        let result = match op {
            "reset" => fresh.reset(b"k"),
            "sweep" => fresh.sweep().map(drop),
            _ => fresh.stats().map(drop),
        };
        assert!(matches!(&result, Err(Error::Backend(m)) if waited(m)), "{op}: {result:?}");
        assert_bounded(started.elapsed(), timeout, op);
        let started = Instant::now();
        check_fails(&fresh, false, &fast);
        assert!(started.elapsed() < quick, "a check after a {op} timed out waited");
    }

    // Through the C API (a new handle: it waits once, then fails fast).
    let cfg = CString::new(full("deny")).unwrap();
    let mut h = std::ptr::null_mut();
    assert_eq!(rl_create(cfg.as_ptr(), &mut h), RL_OK);
    let mut d = rl_decision::default();
    let started = Instant::now();
    assert_eq!(rl_check(h, b"k".as_ptr().cast(), 1, 1, &mut d), RL_ERR_BACKEND);
    assert_bounded(started.elapsed(), timeout, "rl_check");
    assert_eq!((d.allowed, d.retry_after_ms), (0, crate::limiter::ERROR_RETRY_MS));
    // SAFETY: rl_last_error returns a valid C string.
    let message = unsafe { std::ffi::CStr::from_ptr(rl_last_error()) }.to_string_lossy().into_owned();
    assert!(waited(&message), "rl_last_error: {message}");
    let started = Instant::now();
    assert_eq!(rl_check(h, b"k".as_ptr().cast(), 1, 1, &mut d), RL_ERR_BACKEND);
    assert_eq!((d.allowed, d.retry_after_ms), (0, crate::limiter::ERROR_RETRY_MS));
    // SAFETY: as above.
    let message = unsafe { std::ffi::CStr::from_ptr(rl_last_error()) }.to_string_lossy().into_owned();
    assert!(fast(&message), "rl_last_error: {message}");
    assert_eq!(rl_reset(h, b"k".as_ptr().cast(), 1), RL_ERR_BACKEND);
    assert_eq!(rl_sweep(h), RL_ERR_BACKEND as i64);
    let mut st = rl_stats::default();
    assert_eq!(rl_stats_get(h, &mut st), RL_ERR_BACKEND);
    assert!(started.elapsed() < quick, "C calls failing fast took {:?}", started.elapsed());

    // After the cool-down, one check waits again (the probe), and the next
    // ones fail fast again.
    std::thread::sleep((suspect_since + cool_down).saturating_duration_since(Instant::now()));
    let started = Instant::now();
    check_fails(&deny, false, &waited);
    assert_bounded(started.elapsed(), timeout, "the check after the cool-down");
    let started = Instant::now();
    check_fails(&deny, false, &fast);
    assert!(started.elapsed() < quick, "the check after the probe waited");
    assert!(deny.check(&other, 1).unwrap().allowed);

    // The holder goes on: so does everything, at once (the suspicion only
    // makes a held lock fail fast; a free one is taken as usual).
    assert_eq!(holder.resume(), 0);
    let started = Instant::now();
    assert_eq!(allow.stats().unwrap().errors, 1 + FAST);
    assert_eq!(deny.stats().unwrap().errors, 1 + FAST + 2);
    assert_eq!(rl_stats_get(h, &mut st), RL_OK);
    assert_eq!(st.errors, 2);
    let v = deny.check(b"k", 1).unwrap();
    assert!(v.allowed && v.remaining == 3, "failed checks consumed nothing: {v:?}");
    assert_eq!(rl_check(h, b"k".as_ptr().cast(), 1, 3, &mut d), RL_OK);
    assert_eq!((d.allowed, d.remaining), (1, 0));
    assert!(!deny.check(b"k", 1).unwrap().allowed);
    assert_eq!(rl_reset(h, b"k".as_ptr().cast(), 1), RL_OK);
    assert!(rl_sweep(h) >= 0);
    assert_eq!(allow.check(b"k", 1).unwrap().remaining, 4);
    assert!(started.elapsed() < quick, "the recovered operations took {:?}", started.elapsed());
    rl_destroy(h);
    assert_consistent(&s, false);
}

/// A holder killed while another process waits for its lock: the waiter
/// finds it dead, takes the lock over, repairs the shard, and
/// answers as usual, without waiting out its timeout.
#[test]
fn a_stopped_holder_killed_during_a_wait_is_repaired() {
    let name = Name::new("stopped-then-killed");
    let s = open("rate=5/1000d capacity=1000 timeout_ms=30000", &name);
    assert!(s.check(b"k", 2).unwrap().outcome.allowed);
    let holder = StoppedHolder::new(&s, shard_of(&s, b"k"));
    let pid = holder.0;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: our child, not reaped before `holder` is dropped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let started = Instant::now();
    let v = s.check(b"k", 1).unwrap();
    let took = started.elapsed();
    killer.join().unwrap();
    drop(holder);
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(20), "took {took:?}");
    assert!(v.outcome.allowed && v.outcome.remaining == 2, "{v:?}");
    assert_eq!(recoveries(&s), 1);
    assert_consistent(&s, false);
}

/// The table-wide recount after a repair needs every shard: with one held by
/// a stopped process it gives up within the operation's timeout, leaves
/// `dirty` set, and this process does not try again (nor wait again) until
/// `timeout` later; once the holder goes on, the next recount succeeds.
#[test]
fn a_recount_blocked_by_a_stopped_holder_gives_up_and_retries_later() {
    const T: u64 = 600;
    let timeout = Duration::from_millis(T);
    let name = Name::new("recount-stopped");
    let s = open(&format!("rate=10/1000d capacity=5000 timeout_ms={T}"), &name);
    assert!(s.layout.geometry.shards > 1);
    for k in 0..100 {
        s.check(format!("k{k}").as_bytes(), 1).unwrap();
    }
    // As a repair leaves it: the total is off (below capacity, so that no
    // insert below evicts), and flagged for a recount.
    s.total_keys().store(7, Ordering::Relaxed);
    s.dirty().store(1, Ordering::Relaxed);
    let held = 1;
    let key = key_elsewhere(&s, held);
    let holder = StoppedHolder::new(&s, held);

    // The check itself is answered; only its recount waits, within the timeout.
    let started = Instant::now();
    assert!(s.check(&key, 1).unwrap().outcome.allowed);
    assert_bounded(started.elapsed(), timeout, "a check that recounts");
    assert_eq!(s.dirty().load(Ordering::Relaxed), 1, "dirty stays set");
    // The next operations do not wait for the recount again.
    let started = Instant::now();
    assert!(s.check(&key, 1).unwrap().outcome.allowed);
    assert!(started.elapsed() < timeout / 2, "a second recount waited: {:?}", started.elapsed());

    assert_eq!(holder.resume(), 0);
    std::thread::sleep(timeout);
    s.check(&key, 0).unwrap();
    assert_eq!(s.dirty().load(Ordering::Relaxed), 0, "recounted");
    assert_eq!(s.stats().unwrap().keys, 101);
    assert_consistent(&s, false);
}

/// xorshift64*: deterministic per seed, no allocation.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Runs `workers` worker processes (`start(w, seed)` starts worker `w`)
/// and kills one at random, `kills` times: each victim is first let make
/// `progress` more operations (its count is `done(w)`; a bounded wait),
/// then killed with SIGKILL at a random moment up to `within_us` later and
/// replaced by a new worker. Then every worker is killed.
fn kill_at_random(
    workers: usize,
    kills: usize,
    mut seed: u64,
    progress: u64,
    within_us: u64,
    done: impl Fn(usize) -> u64,
    start: impl Fn(usize, u64) -> libc::pid_t,
) {
    let mut pids: Vec<libc::pid_t> = (0..workers).map(|w| start(w, next(&mut seed))).collect();
    for _ in 0..kills {
        let w = (next(&mut seed) % workers as u64) as usize;
        let before = done(w);
        let deadline = Instant::now() + Duration::from_secs(2);
        while done(w) < before + progress && Instant::now() < deadline {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_micros(next(&mut seed) % within_us));
        // SAFETY: our child.
        unsafe { libc::kill(pids[w], libc::SIGKILL) };
        assert_eq!(wait(pids[w]), 128 + libc::SIGKILL);
        pids[w] = start(w, next(&mut seed));
    }
    for pid in pids {
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait(pid);
    }
}

/// Counters shared with the storm's children (an anonymous shared page).
struct SharedCounters(*mut AtomicU64);

impl SharedCounters {
    fn new() -> SharedCounters {
        // SAFETY: a fresh anonymous shared mapping of one page.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        SharedCounters(p.cast())
    }
    fn get(&self, i: usize) -> &AtomicU64 {
        assert!(i < 512);
        // SAFETY: inside the page, aligned, zero-initialised, only used atomically.
        unsafe { &*self.0.add(i) }
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

const WORKERS: usize = 4;
const KILLS: usize = 1000;
const QUOTA: u64 = 100;
/// Storm counters: denials of "quota" seen by workers, then of each offender.
const DENIED: usize = 16;
const OFFENDERS: u64 = 50;

/// Workers hammer two regions (one inherited handle each) on many keys with
/// checks, resets and sweeps, and are SIGKILLed at random moments, hundreds
/// of times, each replaced at once. Afterwards every operation completes,
/// the counts are exact, no state is torn, and one key never admitted more
/// than its quota. Run by `make test-shm` (about 5-20 s).
#[test]
#[ignore = "slow: run by make test-shm"]
fn storm_of_killed_workers() {
    let (name_a, name_b) = (Name::new("storm-a"), Name::new("storm-b"));
    // Two identical sliding-window rates: 7-word slots whose halves must
    // always be equal; 1024 keys of capacity (4 shards) for 3000 keys, so
    // inserts reclaim and evict all the time.
    let config_a = "rate=1000000/1000d,1000000/1000d algorithm=sliding_window capacity=1024";
    let config_b = "rate=100/1000d capacity=100";
    let a = open(config_a, &name_a);
    let b = open(config_b, &name_b);
    assert!(a.layout.geometry.shards > 1);
    let counters = SharedCounters::new();
    let admitted = counters.get(0);

    let worker = |w: usize, seed: u64| {
        let (a, b, progress, counters) = (&a, &b, counters.get(1 + w), &counters);
        move || -> i32 {
            let mut x = seed | 1;
            let mut key = *b"key-0000";
            loop {
                let r = next(&mut x);
                let k = r % 3000;
                key[4..].copy_from_slice(&[
                    b'0' + (k / 1000) as u8,
                    b'0' + (k / 100 % 10) as u8,
                    b'0' + (k / 10 % 10) as u8,
                    b'0' + (k % 10) as u8,
                ]);
                match (r >> 32) % 256 {
                    0..=3 => {
                        a.reset(&key).unwrap();
                    }
                    4 => {
                        a.sweep().unwrap();
                    }
                    5..=40 => {
                        if b.check(b"quota", 1).unwrap().outcome.allowed {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        } else {
                            counters.get(DENIED).fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    41..=90 => {
                        // 50 offenders for b's 32 sketch counters: new
                        // entries replace old ones all the time, kills
                        // land in the middle of them.
                        let o = (r >> 40) % OFFENDERS;
                        if !b.check(format!("offender-{o:02}").as_bytes(), 1).unwrap().outcome.allowed {
                            counters.get(DENIED + 1 + o as usize).fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        a.check(&key, 1 + (r >> 40) % 3).unwrap();
                    }
                }
                progress.fetch_add(1, Ordering::Relaxed);
            }
        }
    };

    let started = Instant::now();
    kill_at_random(
        WORKERS,
        KILLS,
        0x9E37_79B9_7F4A_7C15,
        50,
        1500,
        |w| counters.get(1 + w).load(Ordering::Relaxed),
        |w, seed| spawn(worker(w, seed)),
    );
    let took = started.elapsed();

    // Every operation completes (in a child, so that a wedged lock fails the
    // test instead of hanging it; the limit is for liveness, not speed).
    let checker = spawn(|| {
        let mut x = 7u64;
        for _ in 0..2000 {
            let k = next(&mut x) % 3000;
            a.check(format!("key-{k:04}").as_bytes(), 1).unwrap();
            a.reset(format!("key-{:04}", k / 2).as_bytes()).unwrap();
        }
        a.sweep().unwrap();
        b.check(b"quota", 0).unwrap();
        a.stats().unwrap();
        b.stats().unwrap();
        0
    });
    assert_eq!(wait_within(checker, Duration::from_secs(60)), Some(0), "operations after the storm completed");

    assert_consistent(&a, true);
    assert_consistent(&b, false);
    let counted = admitted.load(Ordering::SeqCst);
    let peek = b.check(b"quota", 0).unwrap().outcome;
    let consumed = QUOTA - peek.remaining;
    eprintln!(
        "storm: {KILLS} kills in {took:?}, {} + {} locks recovered, quota key: {counted} admitted, {consumed} consumed",
        recoveries(&a),
        recoveries(&b)
    );
    assert!(counted <= consumed && consumed <= QUOTA, "admitted {counted}, consumed {consumed}, quota {QUOTA}");
    assert!(recoveries(&a) + recoveries(&b) > 0, "some kill hit a held lock");
    assert_top_sane_after_storm(&a, &b, &counters);
}

/// The heavy-hitter sketches after the storm: every entry is a key that was
/// recorded, whole (its bytes are its own), no count below what the workers
/// saw denied (a killed worker may have missed seeing a denial the region
/// counted, never the other way round), `count - error` not above it by more
/// than the kills, and the heaviest key listed.
fn assert_top_sane_after_storm(a: &ShmStore, b: &ShmStore, counters: &SharedCounters) {
    let limited = b.top(Which::Limited, 1000).unwrap();
    assert!(!limited.is_empty() && limited.len() <= 32, "{} entries", limited.len());
    assert!(limited.windows(2).all(|p| p[0].count >= p[1].count), "highest first");
    let seen = |o: usize| counters.get(DENIED + o).load(Ordering::SeqCst);
    let mut listed_quota = false;
    for e in &limited {
        let key = &e.key[..e.key_len as usize];
        assert!(e.key_len <= 64 && !e.truncated && e.error <= e.count, "{e:?}");
        assert_eq!(e.fp, b.seed.fingerprint(key), "an entry whose key bytes are another key's: {key:?}");
        let truth = if key == b"quota" {
            listed_quota = true;
            seen(0)
        } else {
            let o: usize = std::str::from_utf8(key).unwrap().strip_prefix("offender-").unwrap().parse().unwrap();
            seen(1 + o)
        };
        assert!(
            truth <= e.count,
            "{:?}: count {} below the {truth} denials seen",
            String::from_utf8_lossy(key),
            e.count
        );
        assert!(e.count - e.error <= truth + KILLS as u64, "{e:?} vs {truth}");
    }
    assert!(listed_quota, "the most denied key is listed");
    let active = a.top(Which::Active, 1000).unwrap();
    assert!(!active.is_empty() && active.len() <= 32);
    for e in &active {
        let key = &e.key[..e.key_len as usize];
        assert!(key.starts_with(b"key-") && key.len() == 8 && e.error <= e.count, "{e:?}");
        assert_eq!(e.fp, a.seed.fingerprint(key), "a torn entry: {key:?}");
    }
    eprintln!(
        "storm: top limited {:?}",
        limited
            .iter()
            .take(4)
            .map(|e| (String::from_utf8_lossy(&e.key[..e.key_len as usize]).into_owned(), e.count, e.error))
            .collect::<Vec<_>>()
    );
}

/// Owner words (owner.rs): a forked child gets its own, which is alive while
/// the child lives (even stopped) and dead once it died; the parent's stays
/// alive throughout.
#[test]
fn owner_words_live_and_die_with_their_process() {
    let name = Name::new("owners");
    let s = open("rate=5/1000d capacity=1000", &name);
    let parent = s.owner.word(s.generations()).unwrap();
    let shared = SharedCounters::new();
    let child = spawn(|| {
        shared.get(0).store(s.owner.word(s.generations()).unwrap(), Ordering::SeqCst);
        // SAFETY: stops this (single-threaded) child until SIGCONT or SIGKILL.
        unsafe { libc::raise(libc::SIGSTOP) };
        0
    });
    let mut status = 0;
    // SAFETY: our child.
    while unsafe { libc::waitpid(child, &mut status, libc::WUNTRACED) } != child {}
    let word = shared.get(0).load(Ordering::SeqCst);
    assert!(word != 0 && word != parent, "the child's own word: {word:#x} vs {parent:#x}");
    assert!(s.alive(word), "a stopped child is alive");
    assert!(s.alive(parent));
    // SAFETY: our child.
    unsafe { libc::kill(child, libc::SIGKILL) };
    wait(child);
    assert!(!s.alive(word), "a dead child is dead");
    assert!(s.alive(parent));
    assert_eq!(s.owner.word(s.generations()).unwrap(), parent);
}

/// A worker that forked a child of its own, then died holding a lock: the
/// child, still alive, must not keep the dead worker's owner word alive (the
/// fork handler gave the child its own open file description), so the next
/// process takes the lock over at once instead of waiting out its timeout.
#[test]
fn a_forked_child_does_not_keep_its_dead_parent_alive() {
    let name = Name::new("fork-masks");
    let config = "rate=5/1000d capacity=1000 timeout_ms=30000";
    let s = open(config, &name);
    assert!(s.check(b"k", 2).unwrap().outcome.allowed);
    let shared = SharedCounters::new();
    let worker = spawn(|| {
        // Its own handle (a description of its own), which its child inherits.
        let s = open(config, &name);
        let grandchild = spawn(|| loop {
            // SAFETY: waits for a signal (SIGKILL, from the test).
            unsafe { libc::pause() };
        });
        shared.get(0).store(grandchild as u64, Ordering::SeqCst);
        let _held = s.lock(shard_of(&s, b"k"), &Budget::new()).unwrap();
        // SAFETY: dies holding the lock, with its child still running.
        unsafe { libc::_exit(0) }
    });
    assert_eq!(wait(worker), 0);
    let grandchild = shared.get(0).load(Ordering::SeqCst) as libc::pid_t;
    assert!(grandchild > 0);
    let started = Instant::now();
    let answer = s.check(b"k", 1);
    let took = started.elapsed();
    // SAFETY: the worker's child, still running (now a child of init or a subreaper).
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    assert!(took < Duration::from_secs(5), "waited {took:?} for a lock whose holder is dead");
    let v = answer.unwrap();
    assert!(v.outcome.allowed && v.outcome.remaining == 2, "{v:?}");
    assert_eq!(recoveries(&s), 1);
}

/// Without /proc, an owner's own description comes from the name, only
/// while the name still refers to the region's file.
#[test]
fn the_owner_description_by_name_checks_the_inode() {
    let name = Name::new("owner-by-name");
    let _s = open("rate=5/1000d capacity=100", &name);
    let c = CString::new(name.0.as_str()).unwrap();
    // SAFETY: a NUL-terminated name.
    let mapped = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    assert!(mapped >= 0);
    let fd = super::owner::open_by_name(mapped, &name.0).unwrap();
    assert!(fd >= 0 && fd != mapped);
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    // The name removed and made again: another object now.
    shm_unlink(&c).unwrap();
    // SAFETY: as above.
    let other =
        unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o600) };
    assert!(other >= 0);
    let e = super::owner::open_by_name(mapped, &name.0).unwrap_err();
    assert!(matches!(&e, Error::Io(m) if m.contains("another object")), "{e:?}");
    // SAFETY: ours.
    unsafe { libc::close(other) };
    // SAFETY: ours.
    unsafe { libc::close(mapped) };
}

/// `key-` and `n` in 10 digits, without allocating (for forked children).
fn numbered(n: u64) -> [u8; 14] {
    let mut key = *b"key-0000000000";
    for (i, b) in key[4..].iter_mut().rev().enumerate() {
        *b = b'0' + (n / 10u64.pow(i as u32) % 10) as u8;
    }
    key
}

/// Worker processes insert distinct keys far past capacity while the parent
/// polls `stats`: the key count never exceeds capacity, the counts are exact,
/// and every key is either stored or counted as an eviction.
#[test]
fn keys_never_exceed_capacity_across_processes() {
    const PROCS: u64 = 6;
    for capacity in [1u64, 7, 100, 2100, 5000] {
        let name = Name::new(&format!("capacity-{capacity}"));
        let s = open(&format!("rate=1/1000d capacity={capacity}"), &name);
        let per_proc = (capacity * 3).max(2000);
        let counters = SharedCounters::new();
        let done = counters.get(0);
        let pids: Vec<_> = (0..PROCS)
            .map(|p| {
                let s = &s;
                spawn(move || {
                    let mut failed = 0;
                    for k in 0..per_proc {
                        if !s.check(&numbered(p * per_proc + k), 1).unwrap().outcome.allowed {
                            failed = 1;
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    failed
                })
            })
            .collect();
        let mut worst = 0;
        while done.load(Ordering::SeqCst) < PROCS {
            worst = worst.max(s.stats().unwrap().keys);
            std::thread::sleep(Duration::from_millis(1));
        }
        for pid in pids {
            assert_eq!(wait(pid), 0, "every new key was admitted");
        }
        let stats = s.stats().unwrap();
        assert!(worst <= capacity, "capacity {capacity}: {worst} keys seen");
        assert!(stats.keys <= capacity, "capacity {capacity}: {} keys", stats.keys);
        assert_eq!(stats.keys + stats.evictions, PROCS * per_proc, "capacity {capacity}: stored or evicted");
        assert_consistent(&s, false);
    }
}

/// A scratch file, removed when dropped: what a host might open on a
/// descriptor number the library had been using.
struct Scratch(String, libc::c_int);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        // SAFETY: getpid has no preconditions.
        let path = format!("/tmp/rl-rust-test-{}-{tag}", unsafe { libc::getpid() });
        let c = CString::new(path.as_str()).unwrap();
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC, 0o600) };
        assert!(fd >= 0);
        // SAFETY: ours; gives the file bytes to lock.
        assert_eq!(unsafe { libc::ftruncate(fd, 1 << 16) }, 0);
        Scratch(path, fd)
    }

    /// Puts this file on descriptor `n`, as `dup2` in a host that closed `n`
    /// behind the library's back and opened something else would.
    fn put_on(&self, n: libc::c_int) {
        // SAFETY: both are descriptors of this process.
        assert_eq!(unsafe { libc::dup2(self.1, n) }, n);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let c = CString::new(self.0.as_str()).unwrap();
        // SAFETY: ours, closed once; a NUL-terminated path.
        unsafe {
            libc::close(self.1);
            libc::unlink(c.as_ptr());
        }
    }
}

/// The host closes the descriptor a handle asks the kernel about owners
/// through, and the number is reused for an unrelated file: locks held by
/// live processes must still not be taken over (a waiter gives up at its
/// timeout, naming the problem), and the handle never closes a descriptor
/// that is no longer its own.
#[test]
fn a_reused_descriptor_number_does_not_make_live_holders_dead() {
    const T: u64 = 300;
    let name = Name::new("reused-fd");
    let s = open(&format!("rate=5/1000d capacity=1000 timeout_ms={T}"), &name);
    assert!(s.check(b"k", 1).unwrap().outcome.allowed);
    let holder = StoppedHolder::new(&s, shard_of(&s, b"k"));
    let scratch = Scratch::new("reused-fd");
    let n = s.owner.raw_fd().unwrap();
    scratch.put_on(n);

    let started = Instant::now();
    let answer = s.check(b"k", 1);
    assert!(started.elapsed() >= Duration::from_millis(T), "no wait: the live holder was taken for dead");
    let e = answer.expect_err("a live holder's lock was taken over");
    assert!(matches!(&e, Error::Backend(m) if m.contains("descriptor")), "{e:?}");
    assert_eq!(recoveries(&s), 0);
    drop(holder);
    drop(s);
    // The handle left descriptor `n` (now the host's) open.
    // SAFETY: a plain query of a descriptor number.
    assert!(unsafe { libc::fcntl(n, libc::F_GETFD) } >= 0, "the handle closed a descriptor not its own");
    // SAFETY: the copy made by put_on, closed once.
    unsafe { libc::close(n) };
}

/// The other side: a process whose handle's descriptor was closed (and the
/// number reused) while it holds a lock is still alive to the others, who
/// do not take that lock over.
#[test]
fn a_holder_whose_descriptor_was_closed_stays_alive() {
    const T: u64 = 300;
    let name = Name::new("closed-fd-holder");
    let config = format!("rate=5/1000d capacity=1000 timeout_ms={T}");
    let s = open(&config, &name);
    assert!(s.check(b"k", 1).unwrap().outcome.allowed);
    let scratch = Scratch::new("closed-fd-holder");
    let n = s.owner.raw_fd().unwrap();
    let guard = s.lock(shard_of(&s, b"k"), &Budget::new()).unwrap();
    scratch.put_on(n);
    let child = spawn(|| {
        let s2 = open(&config, &name);
        match s2.check(b"k", 1) {
            Err(Error::Backend(_)) => 0,
            Ok(_) => 1, // took the live parent's lock over
            Err(_) => 2,
        }
    });
    assert_eq!(wait_within(child, Duration::from_secs(20)), Some(0), "the holder was taken for dead");
    drop(guard);
    assert_eq!(recoveries(&s), 0);
    // The handle goes on with its locks (taking them needs no descriptor).
    assert!(s.check(b"k", 1).unwrap().outcome.allowed);
    drop(s);
    // SAFETY: the copy made by put_on, closed once.
    unsafe { libc::close(n) };
}

/// A panic inside a critical section (a bug, or an overflow check in a debug
/// build) unwinds through the shard's lock guard: the shard is repaired
/// before it is unlocked, as an heir would repair it, so the undo record is
/// closed (a later takeover has nothing stale to replay), the check that
/// panicked consumed nothing (its caller got RL_ERR_PANIC, not an answer),
/// and the counts are exact.
#[test]
fn a_panic_inside_a_critical_section_leaves_the_shard_repaired() {
    let name = Name::new("panic-inside");
    let config = "rate=5/1000d,7/1000d algorithm=fixed_window capacity=1000";
    let s = open(config, &name);
    assert!(s.layout.geometry.stride > 2, "a journaled slot");
    for _ in 0..3 {
        assert!(s.check(b"k", 1).unwrap().outcome.allowed);
    }
    PANIC_IN_CHECK.with(|p| p.set(true));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.check(b"k", 1)));
    assert!(caught.is_err(), "the injected panic");
    let shard = shard_of(&s, b"k");
    {
        let mut guard = s.lock(shard, &Budget::new()).expect("the shard was unlocked");
        assert_eq!(guard.parts().2.active, 0, "the undo record was left open");
    }
    // A process dies holding the shard; its heir repairs it: nothing to replay.
    let child = spawn(|| {
        let _held = s.lock(shard, &Budget::new()).unwrap();
        // SAFETY: dies holding the lock, as a SIGKILL would leave it.
        unsafe { libc::_exit(0) }
    });
    assert_eq!(wait(child), 0);
    let v = s.check(b"k", 1).unwrap();
    assert_eq!(recoveries(&s), 1);
    assert!(v.outcome.allowed && v.index == 0 && v.outcome.remaining == 1, "the panicked check consumed: {v:?}");
    assert_consistent(&s, false);
}

/// In a child process: panics are counted by the caller, and their message
/// (with its place) goes straight to stderr, past the harness's capture,
/// which a forked child's output would not get through.
fn report_panics_on_stderr() {
    std::panic::set_hook(Box::new(move |info| {
        let text = format!("child {}: {info}\n", std::process::id());
        // SAFETY: writes a buffer we own to stderr.
        unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
    }));
}

/// One word of damage: a random byte, a random word, or a value chosen to be
/// plausible where it lands (0, all ones, a small count or index, an owner
/// word with a slot in range, one of the `live` owner words).
fn damage(x: &mut u64, live: &[u64]) -> (u64, u32) {
    let r = next(x);
    let word = match r % 9 {
        8 => live[(next(x) % live.len() as u64) as usize],
        0 => 0,
        1 => u64::MAX,
        2 => next(x) % 64,
        // Owner slots in range, mostly among the few in use, with small
        // generations: sometimes a live owner's word.
        3 => ((next(x) % if r & 16 == 0 { 8 } else { MAX_OWNERS as u64 + 2 }) << 48) | (next(x) % 4),
        4 => next(x) >> (next(x) % 64),
        _ => next(x),
    };
    // Half the time one byte of it, else the whole word.
    (word, if r & 8 == 0 { 1 } else { 8 })
}

/// Random bytes and words of live regions (header, owner slots, lock words,
/// shard counters and cursors, undo records, slots, sketches, the
/// over-limit cache and the stripes) are overwritten, round
/// after round, while worker processes check, reset, sweep, read stats and
/// open new handles. Answers for damaged keys may be odd and operations may
/// fail, but no worker crashes or panics, and no operation waits past its
/// bound (`timeout_ms`, per shard for a sweep).
#[test]
fn a_corrupted_region_never_crashes_or_hangs() {
    const T: u64 = 100;
    const ROUNDS: usize = 50;
    const WORKERS: usize = 3;
    let timeout = Duration::from_millis(T);
    let (name_a, name_b) = (Name::new("corrupt-a"), Name::new("corrupt-b"));
    // Journaled multi-rate slots, and single-word token-bucket slots in a
    // table too small for its keys (reclaims, evictions).
    let config_a = format!("rate=20/1000d,30/1000d algorithm=sliding_window capacity=4096 timeout_ms={T}");
    let config_b = format!("rate=10/1000d capacity=600 timeout_ms={T}");
    let a = open(&config_a, &name_a);
    let b = open(&config_b, &name_b);
    assert!(a.layout.geometry.shards >= 8);
    let counters = SharedCounters::new();
    let (stop, ops, errors, panics) = (counters.get(0), counters.get(1), counters.get(2), counters.get(3));
    let (slowest_op, slowest_sweep, opens) = (counters.get(4), counters.get(5), counters.get(6));

    let worker = |seed: u64| {
        let (a, b, config_a, name_a) = (&a, &b, &config_a, &name_a);
        move || -> i32 {
            report_panics_on_stderr();
            let mut x = seed | 1;
            while stop.load(Ordering::Relaxed) == 0 {
                let r = next(&mut x);
                let key = format!("key-{}", r % 10_000);
                let s = if r & 1 == 0 { a } else { b };
                let started = Instant::now();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), Error> {
                    match (r >> 32) % 200 {
                        0 => {
                            s.sweep()?;
                            let took = started.elapsed().as_micros() as u64;
                            slowest_sweep.fetch_max(took, Ordering::Relaxed);
                            return Ok(());
                        }
                        1 => drop(s.stats()?),
                        13 | 14 => {
                            // Damaged sketches: odd entries, never a crash.
                            let which = if r & 2 == 0 { Which::Limited } else { Which::Active };
                            for e in s.top(which, 64)? {
                                assert!(e.key_len <= 64 && e.error <= e.count);
                            }
                        }
                        2 => {
                            // A new handle on a damaged region: refused or working.
                            let c = Config::parse(&format!("{config_a} backend=shm name={}", name_a.0)).unwrap();
                            let c = Config { timeout_ms: T, ..c };
                            opens.fetch_add(1, Ordering::Relaxed);
                            if let Ok(fresh) = ShmStore::open(&c) {
                                fresh.check(key.as_bytes(), 1)?;
                            }
                            return Ok(());
                        }
                        3..=12 => s.reset(key.as_bytes())?,
                        _ => drop(s.check(key.as_bytes(), (r >> 40) % 3)?),
                    }
                    slowest_op.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    Ok(())
                }));
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        panics.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            0
        }
    };
    let mut seed = 0x5EED_0FC0_FFEE_u64;
    let pids: Vec<libc::pid_t> = (0..WORKERS).map(|_| spawn(worker(next(&mut seed)))).collect();

    // The areas of a region, with how often each is hit.
    let areas = |s: &ShmStore| {
        let l = &s.layout;
        (
            s.region.base() as usize,
            l.region_bytes,
            l.geometry.shards,
            l.owners_offset,
            l.shard_headers_offset,
            l.slots_offset,
            l.denials_offset,
            l.tally_offset,
        )
    };
    let regions = [areas(&a), areas(&b)];
    // This process's owner words: a lock damaged into one of them is held by
    // a live owner that never lets go.
    let live = [a.owner.word(a.generations()).unwrap(), b.owner.word(b.generations()).unwrap()];
    let mut written = 0u64;
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(40));
        for _ in 0..16 {
            let (base, len, shards, owners, headers, slots, denials, tally) = regions[round % 2];
            let mut pick = |n: usize| (next(&mut seed) % n as u64) as usize;
            let shard = headers + pick(shards) * SHARD_HEADER_BYTES;
            let at = match pick(14) {
                0 => pick(HEADER_BYTES / 8) * 8,
                1 => owners + pick(MAX_OWNERS) * 8,
                2 | 3 => shard,                                                          // its lock word
                4 | 5 => shard + std::mem::offset_of!(ShardHeader, stats) + pick(5) * 8, // counters, cursor
                6 | 7 => shard + std::mem::offset_of!(ShardHeader, journal) + pick(2 + layout::MAX_STRIDE) * 8,
                8 => denials + pick((tally - denials) / 8) * 8, // the over-limit cache
                9 => tally + pick((len - tally) / 8) * 8,       // the stripes
                _ => slots + pick((len - slots) / 8) * 8,
            };
            let (value, bytes) = damage(&mut seed, &live);
            assert!(at + 8 <= len);
            // SAFETY: inside the mapping (checked above), 8-byte aligned; the
            // region's words are plain integers, any value is one (that is
            // the point), written atomically as the lock words are.
            unsafe {
                let p = (base + at) as *mut u8;
                if bytes == 1 {
                    let byte = (next(&mut seed) % 8) as usize;
                    (*p.add(byte).cast::<std::sync::atomic::AtomicU8>()).store(value as u8, Ordering::Relaxed);
                } else {
                    (*p.cast::<AtomicU64>()).store(value, Ordering::Relaxed);
                }
            }
            written += 1;
        }
    }
    stop.store(1, Ordering::Relaxed);
    let limit = timeout * (a.layout.geometry.shards as u32 + 2) + SLACK;
    let exits: Vec<Option<i32>> = pids.iter().map(|&pid| wait_within(pid, limit + SLACK)).collect();
    let (slowest_op, slowest_sweep) = (
        Duration::from_micros(slowest_op.load(Ordering::Relaxed)),
        Duration::from_micros(slowest_sweep.load(Ordering::Relaxed)),
    );
    eprintln!(
        "corruption: {written} words damaged, {} operations ({} errors, {} panics), {} opens; slowest {slowest_op:?}, \
         slowest sweep {slowest_sweep:?}",
        ops.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        panics.load(Ordering::Relaxed),
        opens.load(Ordering::Relaxed),
    );
    assert!(exits.iter().all(|e| *e == Some(0)), "workers crashed or hung: {exits:?}");
    // No panic anywhere, debug builds (overflow checks) included: the
    // algorithms are total on any state words, and every count and index
    // read from the region is checked or saturates.
    assert_eq!(panics.load(Ordering::Relaxed), 0, "panics (their messages are above)");
    assert!(ops.load(Ordering::Relaxed) > 1000, "the workers made progress");
    assert!(slowest_op < timeout + SLACK, "an operation took {slowest_op:?}");
    assert!(slowest_sweep < timeout * a.layout.geometry.shards as u32 + SLACK, "a sweep took {slowest_sweep:?}");
}

/// A worker forked with an inherited handle whose host closes descriptors
/// (the number reused) before and after its first use: the handle reopens
/// the region by name for its owner, and its lock holder stays alive to the
/// others even after its descriptor is gone again.
#[test]
fn a_forked_worker_survives_its_descriptors_being_closed() {
    const T: u64 = 300;
    let name = Name::new("closefrom-child");
    let s = open(&format!("rate=5/1000d capacity=1000 timeout_ms={T}"), &name);
    assert!(s.check(b"k", 1).unwrap().outcome.allowed);
    let n = s.owner.raw_fd().unwrap();
    let pid = spawn(|| {
        let scratch = Scratch::new("closefrom-child");
        scratch.put_on(n); // before the handle's first use in this process
        if s.check(b"k", 1).is_err() {
            return 1;
        }
        let Some(m) = s.owner.raw_fd() else { return 2 };
        let _held = s.lock(shard_of(&s, b"k"), &Budget::new()).unwrap();
        scratch.put_on(m); // while holding a lock
                           // SAFETY: stops this (single-threaded) child until SIGKILL.
        unsafe { libc::raise(libc::SIGSTOP) };
        0
    });
    let mut status = 0;
    // SAFETY: our child; `status` is a valid int to fill.
    while unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) } != pid {}
    assert!(libc::WIFSTOPPED(status), "the worker failed before holding the lock (status {status:#x})");
    let holder = StoppedHolder(pid);
    let started = Instant::now();
    let answer = s.check(b"k", 1);
    assert!(started.elapsed() >= Duration::from_millis(T), "the live worker's lock was taken over");
    assert!(matches!(answer, Err(Error::Backend(_))), "{answer:?}");
    assert_eq!(recoveries(&s), 0);
    drop(holder);
    // (A new handle: this one fails fast on that shard for a cool-down.)
    let s2 = open(&format!("rate=5/1000d capacity=1000 timeout_ms={T}"), &name);
    assert!(s2.check(b"k", 1).unwrap().outcome.allowed, "taken over once the worker died");
    assert_eq!(recoveries(&s), 1);
}

/// Leases are region-wide: N holders at most across processes, a lease may
/// be released by another process than the one that took it, and a process
/// killed holding leases loses them only when they expire.
#[test]
fn leases_are_shared_by_processes_and_outlive_a_killed_holder_until_they_expire() {
    let name = Name::new("leases");
    let store = open("concurrency=3 lease=800ms", &name);
    let (_, a) = store.acquire(b"k").unwrap();
    let (_, b) = store.acquire(b"k").unwrap();
    assert!(a != 0 && b != 0 && a != b);
    let child = spawn(|| {
        let store = open("concurrency=3 lease=800ms", &name);
        let (answer, c) = store.acquire(b"k").unwrap();
        if !answer.outcome.allowed || c == 0 || store.acquire(b"k").unwrap().1 != 0 {
            return 1;
        }
        // Another process's lease is released here: ids are region-wide.
        if !store.release(b"k", a).unwrap() {
            return 2;
        }
        // SAFETY: kill has no preconditions; the child dies holding lease c.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        3
    });
    assert_eq!(wait(child), 128 + libc::SIGKILL);
    assert!(!store.release(b"k", a).unwrap(), "released by the child already");
    let (answer, d) = store.acquire(b"k").unwrap();
    assert!(answer.outcome.allowed && d != 0);
    let (answer, none) = store.acquire(b"k").unwrap();
    assert_eq!((answer.outcome.allowed, none), (false, 0), "the dead child's lease is still held");
    let (other, _) = store.acquire(b"other key").unwrap();
    assert!(other.outcome.allowed, "another key is not touched");
    assert!(store.release(b"k", b).unwrap() && store.release(b"k", d).unwrap());
    std::thread::sleep(Duration::from_millis(1200));
    // Every lease has expired: the key is back to 3 free places.
    for _ in 0..3 {
        assert!(store.acquire(b"k").unwrap().0.outcome.allowed);
    }
    assert!(!store.acquire(b"k").unwrap().0.outcome.allowed);
}

/// Threads of several processes hammer one key: at no moment more than N
/// leases are held (counted in memory all the processes share).
#[test]
fn never_more_than_n_holders_across_processes() {
    let name = Name::new("holders");
    let store = open("concurrency=4 lease=30s", &name);
    // SAFETY: an anonymous shared mapping of 16 bytes, checked below; the
    // children inherit it.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            16,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(shared, libc::MAP_FAILED);
    // SAFETY: the mapping is 16 bytes, aligned, zeroed, and lives until the end of the test.
    let (holders, most) = unsafe { (&*(shared as *const AtomicU64), &*(shared as *const AtomicU64).add(1)) };
    let children: Vec<_> = (0..3)
        .map(|_| {
            spawn(|| {
                for _ in 0..3000 {
                    let (answer, lease) = store.acquire(b"hot").unwrap();
                    if answer.outcome.allowed {
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        holders.fetch_sub(1, Ordering::SeqCst);
                        if !store.release(b"hot", lease).unwrap() {
                            return 1;
                        }
                    }
                }
                0
            })
        })
        .collect();
    for c in children {
        assert_eq!(wait(c), 0);
    }
    let most = most.load(Ordering::SeqCst);
    assert!((1..=4).contains(&most), "{most} holders at once");
    assert_eq!(store.acquire(b"hot").unwrap().0.outcome.remaining, 3, "every lease was released");
    // SAFETY: unmaps the mapping made above; nothing uses it any more.
    unsafe { libc::munmap(shared, 16) };
}

/// rl_adjust is shared like a check: a charge made by one process is seen
/// by another, and a refund never goes past a fresh key.
#[test]
fn adjust_is_shared_by_processes() {
    for algorithm in ["token_bucket", "fixed_window", "sliding_window"] {
        let name = Name::new(&format!("adjust-{algorithm}"));
        let config = format!("rate=100/hour,1000/day algorithm={algorithm}");
        let store = open(&config, &name);
        assert!(store.check(b"k", 50).unwrap().outcome.allowed);
        let child = spawn(|| {
            let store = open(&config, &name);
            let o = store.adjust(b"k", -40).unwrap().outcome;
            i32::from(!(o.allowed && o.remaining == 90))
        });
        assert_eq!(wait(child), 0, "{algorithm}");
        let o = store.adjust(b"k", 200).unwrap().outcome;
        assert_eq!((o.allowed, o.remaining), (false, 0), "{algorithm}: in debt");
        assert!(!store.check(b"k", 1).unwrap().outcome.allowed, "{algorithm}");
        let o = store.adjust(b"k", i64::MIN).unwrap();
        assert_eq!((o.outcome.allowed, o.outcome.remaining), (true, 100), "{algorithm}: fresh again");
    }
}

/// The key's shard and slot state, copied under the shard's lock.
fn state_of(s: &ShmStore, key: &[u8]) -> Vec<u64> {
    let fp = s.seed.fingerprint(key);
    let place = s.layout.geometry.place(fp);
    let stride = s.layout.geometry.stride;
    let mut guard = s.lock(place.shard, &Budget::new()).unwrap();
    let (shard, ..) = guard.shard();
    let i = shard.find(place, fp).expect("the key is stored");
    shard.words[i * stride + 1..(i + 1) * stride].to_vec()
}

/// The over-limit cache in the region answers exactly as the table would:
/// for each algorithm and a two-rate mix, a key driven to a cost-1 denial
/// is looked up at readings from the denial's up to past its end, and each
/// answer is compared with the algorithm's on the key's stored state at
/// that reading; the checks the handle then answers are the cache's
/// (counted in a stripe, not under the lock), and a handle in another
/// process finds the same entry.
#[test]
fn cached_denials_are_the_tables_answers() {
    use crate::algorithm::check_all;
    let configs = [
        "rate=3/1000d",
        "rate=4/1000d burst=2",
        "rate=5/1000d algorithm=fixed_window",
        "rate=9/1000d algorithm=sliding_window",
        "rate=10/1000d,30/700d algorithm=sliding_window",
        "rate=2/1000d,3/1000d algorithm=fixed_window capacity=100",
    ];
    let mut x = 0x1234_5678_9abc_def1u64;
    for (c, config) in configs.iter().enumerate() {
        let name = Name::new(&format!("exact-{c}"));
        let s = open(config, &name);
        let Limits::Rates(rates) = &s.limits else { unreachable!() };
        let key = b"over";
        while s.check(key, 1).unwrap().outcome.allowed {}
        let fp = s.seed.fingerprint(key);
        let now = s.clock.now();
        let first = s.denials.lookup(fp, 1, now, 1).expect("the denial is cached");
        let until = now + first.outcome.retry_after;
        let state = state_of(&s, key);
        for _ in 0..2000 {
            let t = now + next(&mut x) % (first.outcome.retry_after + first.outcome.retry_after / 4 + 1);
            let decided = check_all(rates, &mut state.clone(), t, 1);
            match s.denials.lookup(fp, 1, t, 1) {
                Some(cached) => assert_eq!(cached, decided, "{config} at {t} (until {until})"),
                None => assert!(t >= until && decided.outcome.allowed, "{config} at {t}: a miss before {until}"),
            }
        }
        // Through the handle: answered from the cache, counted in a stripe.
        let (limited, counted) = (s.stats().unwrap().limited, s.tally.denied());
        for _ in 0..100 {
            let v = s.check(key, 1).unwrap();
            assert!(!v.outcome.allowed && v.outcome.retry_after <= first.outcome.retry_after && v.index == first.index);
        }
        assert_eq!(s.tally.denied() - counted, 100, "{config}: answered from the cache");
        assert_eq!(s.stats().unwrap().limited, limited + 100);
        // Another process, its own handle, the same entry.
        let child = spawn(|| {
            let s2 = open(config, &name);
            let before = s2.tally.denied();
            let v = s2.check(key, 1).unwrap();
            i32::from(v.outcome.allowed || s2.tally.denied() != before + 1)
        });
        assert_eq!(wait(child), 0, "{config}: another process answered from the cache");
        assert_eq!(s.stats().unwrap().limited, limited + 101);
    }
}

/// A refund, a charge or a reset made by another process takes effect at
/// once on the next check of a key answered from the over-limit cache.
#[test]
fn refunds_charges_and_resets_from_another_process_take_effect_at_once() {
    let name = Name::new("cache-changes");
    let s = open("rate=2/h", &name);
    let check = |cost| s.check(b"k", cost).unwrap().outcome;
    let elsewhere = |f: &dyn Fn(&ShmStore)| {
        let child = spawn(|| {
            f(&open("rate=2/h", &name));
            0
        });
        assert_eq!(wait(child), 0);
    };
    assert!(check(1).allowed && check(1).allowed);
    let denied = check(1);
    assert!(!denied.allowed && denied.retry_after > 0);
    for _ in 0..10 {
        let again = check(1);
        assert!(!again.allowed && again.retry_after <= denied.retry_after && again.remaining == 0);
    }
    assert_eq!((s.stats().unwrap().limited, s.tally.denied()), (11, 10), "ten from the cache");
    assert!(check(0).allowed, "a peek is the table's");
    elsewhere(&|s| assert!(s.adjust(b"k", -1).is_ok()));
    assert!(check(1).allowed, "refunded");
    assert!(!check(1).allowed);
    let before = check(1).retry_after;
    elsewhere(&|s| assert!(s.adjust(b"k", 1).is_ok()));
    let after = check(1).retry_after;
    assert!(after >= before + 1_799_000_000_000, "{before} -> {after}");
    elsewhere(&|s| s.reset(b"k").unwrap());
    assert!(check(1).allowed, "reset");
    assert!(!check(2).allowed && check(1).allowed, "other costs are the table's");
    assert_eq!(s.stats().unwrap().limited, 11 + 1 + 2 + 1);
}

/// A writer killed in the middle of an entry (its number odd, a field
/// rewritten to admit every reading) while holding the shard's lock: the
/// torn entry is never answered from; the next check of the key goes to
/// the locked path, takes the dead lock over, and the repair empties the
/// shard's entries, after which the key's denials are cached again. A torn
/// entry without a dead writer (damage) costs the locked path, nothing more.
#[test]
fn a_writer_killed_mid_entry_costs_a_locked_check_never_a_wrong_answer() {
    let name = Name::new("torn-entry");
    let config = "rate=2/1000d,3/1000d algorithm=fixed_window capacity=1000";
    let s = open(config, &name);
    while s.check(b"k", 1).unwrap().outcome.allowed {}
    let fp = s.seed.fingerprint(b"k");
    let shard = s.layout.geometry.place(fp).shard;
    assert!(s.denials.lookup(fp, 1, s.clock.now(), 1).is_some());
    let table = s.check(b"k", 1).unwrap();
    let child = spawn(|| {
        let guard = s.lock(shard, &Budget::new()).unwrap();
        s.denials.tear(fp);
        std::mem::forget(guard);
        // SAFETY: dies holding the lock, mid-write, as a SIGKILL would leave it.
        unsafe { libc::_exit(0) }
    });
    assert_eq!(wait(child), 0);
    assert!(s.denials.lookup(fp, 1, s.clock.now(), 1).is_none(), "an odd entry is a miss");
    let counted = s.tally.denied();
    let started = Instant::now();
    let v = s.check(b"k", 1).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(!v.outcome.allowed && v.index == table.index && v.outcome.retry_after <= table.outcome.retry_after);
    assert_eq!((recoveries(&s), s.tally.denied()), (1, counted), "decided under the lock taken over");
    // Remembered again by that check: the next one is the cache's.
    assert!(!s.check(b"k", 1).unwrap().outcome.allowed);
    assert_eq!(s.tally.denied(), counted + 1);
    // Damage alone (no writer, the lock free): every check decided under
    // the lock, rightly, until a repair of the shard.
    s.denials.tear(fp);
    for _ in 0..5 {
        let v = s.check(b"k", 1).unwrap();
        assert!(!v.outcome.allowed && v.outcome.retry_after <= table.outcome.retry_after);
    }
    assert_eq!(s.tally.denied(), counted + 1);
    assert!(s.check(b"k", 0).unwrap().outcome.allowed == s.check(b"k", 0).unwrap().outcome.allowed);
    assert_consistent(&s, false);
}

/// A process dies holding its stripe, with a batch of a key's denials
/// pending in it (and another key's batch handed over before): `limited`
/// counts every denial it was answered, and `rl_top` (which takes the dead
/// holder's stripe over) lists every one of them, exactly.
#[test]
fn a_process_killed_holding_a_stripe_loses_no_denial() {
    let name = Name::new("dead-stripe");
    let s = open("rate=1/1000d capacity=100 top=4", &name);
    // Two keys with over-limit cache entries of their own (the seed is random).
    let fp = |key: &[u8]| s.seed.fingerprint(key);
    let j = (0..).map(|i| format!("j{i}")).find(|j| !s.denials.share_an_entry(fp(b"k"), fp(j.as_bytes()))).unwrap();
    let j = j.as_bytes();
    for key in [&b"k"[..], j] {
        assert!(s.check(key, 1).unwrap().outcome.allowed);
        assert!(!s.check(key, 1).unwrap().outcome.allowed);
    }
    let child = spawn(|| {
        let denied = |key: &[u8]| !s.check(key, 1).unwrap().outcome.allowed;
        let all = (0..5).all(|_| denied(b"k")) && (0..3).all(|_| denied(j));
        let me = s.owner.word(s.generations()).unwrap();
        // Dies holding its stripe (j's 3 still pending in it).
        if all && s.tally.denied() == 8 && s.tally.hold_and_leave(me, me) {
            // SAFETY: dies holding the stripe, as a SIGKILL would leave it.
            unsafe { libc::_exit(0) }
        }
        1
    });
    assert_eq!(wait(child), 0);
    assert_eq!(s.tally.pending(), 3, "j's batch is pending in the dead process's stripe");
    // Denials of k go on in this process, from its own stripe.
    assert!(!s.check(b"k", 1).unwrap().outcome.allowed);
    assert_eq!(s.stats().unwrap().limited, 2 + 8 + 1);
    let top = s.top(Which::Limited, 10).unwrap();
    let counts: Vec<_> = top.iter().map(|e| (e.key[..e.key_len as usize].to_vec(), e.count, e.error)).collect();
    assert_eq!(counts, [(b"k".to_vec(), 7, 0), (j.to_vec(), 4, 0)]);
    assert_eq!(s.tally.pending(), 0);
    // The stripe was taken over and given back: a process landing on it counts again.
    let child = spawn(|| {
        let me = s.owner.word(s.generations()).unwrap();
        i32::from(!s.tally.hold_and_leave(me, me))
    });
    assert_eq!(wait(child), 0, "the dead process's stripe is free again");
}

/// Processes denying the same key at once, from the over-limit cache,
/// lose no count in `limited`, nor in `rl_top`.
#[test]
fn processes_denying_one_key_lose_no_count() {
    const PROCS: usize = 4;
    const CHECKS: u64 = 20_000;
    let name = Name::new("deny-procs");
    let s = open("rate=1/1000d", &name);
    assert!(s.check(b"k", 1).unwrap().outcome.allowed);
    assert!(!s.check(b"k", 1).unwrap().outcome.allowed);
    let pids: Vec<_> = (0..PROCS)
        .map(|_| spawn(|| i32::from(!(0..CHECKS).all(|_| !s.check(b"k", 1).unwrap().outcome.allowed))))
        .collect();
    for pid in pids {
        assert_eq!(wait(pid), 0);
    }
    let total = 1 + PROCS as u64 * CHECKS;
    assert_eq!(s.stats().unwrap().limited, total);
    assert!(s.tally.denied() > total / 2, "most were answered from the cache: {}", s.tally.denied());
    let top = s.top(Which::Limited, 1).unwrap();
    assert_eq!((top[0].count, top[0].error), (total, 0));
}

/// Workers deny a few keys from the cache and are SIGKILLed at random
/// moments, again and again. Afterwards every operation completes, and
/// `limited` holds every denial a worker was answered (plus at most the
/// one each kill cut short), and `rl_top` lists each key with at least
/// the denials seen.
#[test]
fn workers_killed_while_denying_lose_no_count() {
    const KEYS: u64 = 6;
    const KILLS: usize = 150;
    let name = Name::new("deny-kills");
    let s = open("rate=1/1000d capacity=1000 top=8", &name);
    let key = |k: u64| format!("d-{k}").into_bytes();
    for k in 0..KEYS {
        assert!(s.check(&key(k), 1).unwrap().outcome.allowed);
        assert!(!s.check(&key(k), 1).unwrap().outcome.allowed);
    }
    let counters = SharedCounters::new();
    let worker = |w: usize, seed: u64| {
        let (s, counters, key) = (&s, &counters, &key);
        move || -> i32 {
            let mut x = seed | 1;
            loop {
                // Runs of one key, so that batches build up and are handed over.
                let k = next(&mut x) % KEYS;
                for _ in 0..next(&mut x) % 8 {
                    if !s.check(&key(k), 1).unwrap().outcome.allowed {
                        counters.get(10 + k as usize).fetch_add(1, Ordering::SeqCst);
                    }
                    counters.get(w).fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    kill_at_random(
        3,
        KILLS,
        0xDEAD_BEEF,
        20,
        500,
        |w| counters.get(w).load(Ordering::Relaxed),
        |w, seed| spawn(worker(w, seed)),
    );
    let checker = spawn(|| {
        s.stats().unwrap();
        s.top(Which::Limited, 8).unwrap();
        i32::from((0..KEYS).any(|k| s.check(&key(k), 1).unwrap().outcome.allowed))
    });
    assert_eq!(wait_within(checker, Duration::from_secs(30)), Some(0), "operations after the kills completed");
    let seen: Vec<u64> = (0..KEYS).map(|k| counters.get(10 + k as usize).load(Ordering::SeqCst)).collect();
    // The initial denial of each key, and the checker's.
    let answered = seen.iter().sum::<u64>() + 2 * KEYS;
    let limited = s.stats().unwrap().limited;
    eprintln!("deny-kills: {answered} denials answered, limited {limited}, {} recoveries", recoveries(&s));
    assert!(answered <= limited && limited <= answered + KILLS as u64, "{answered} answered, {limited} counted");
    let top = s.top(Which::Limited, 8).unwrap();
    assert_eq!(top.len(), KEYS as usize);
    for e in &top {
        let k: u64 = std::str::from_utf8(&e.key[2..e.key_len as usize]).unwrap().parse().unwrap();
        assert!(e.count >= seen[k as usize] + 2 && e.error == 0, "d-{k}: {e:?}, {} seen", seen[k as usize]);
    }
    assert_consistent(&s, false);
}

/// Random bytes over the whole over-limit cache and every stripe: checks,
/// stats and top neither crash nor hang, and no key is answered other than
/// the table would (fresh keys pass, a key over its limit is denied).
#[test]
fn random_bytes_in_the_cache_and_stripes_never_mislead() {
    let name = Name::new("cache-bytes");
    let s = open("rate=2/1000d,3/1000d algorithm=fixed_window timeout_ms=100", &name);
    while s.check(b"over", 1).unwrap().outcome.allowed {}
    let mut x = 0xC0FF_EE00_u64 | 1;
    let l = &s.layout;
    let (from, to) = (l.denials_offset, l.region_bytes);
    for round in 0..20 {
        for at in (from..to).step_by(8) {
            let word = match next(&mut x) % 4 {
                0 => 0,
                1 => next(&mut x) % 8,
                _ => next(&mut x),
            };
            // SAFETY: an 8-byte aligned word inside the mapping; every word
            // of these areas is an atomic, any value is one.
            unsafe { (*s.region.base().add(at).cast::<AtomicU64>()).store(word, Ordering::Relaxed) };
        }
        let child = spawn(|| {
            for i in 0..200 {
                let fresh = format!("fresh-{round}-{i}");
                let f = s.check(fresh.as_bytes(), 1).unwrap();
                let o = s.check(b"over", 1).unwrap();
                if !f.outcome.allowed || o.outcome.allowed {
                    let text = format!("round {round} {i}: fresh {f:?} over {o:?}\n");
                    // SAFETY: writes a buffer we own to stderr.
                    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
                    return 1;
                }
            }
            s.stats().unwrap();
            s.top(Which::Limited, 10).unwrap();
            0
        });
        assert_eq!(wait_within(child, Duration::from_secs(20)), Some(0), "round {round}");
    }
}

/// A region of layout version 5 (no over-limit cache, no stripes) is
/// refused, by an opener and by an attach, naming both versions: this
/// library never reads its end as a cache.
#[test]
fn a_version_5_region_is_refused() {
    let name = Name::new("version-5");
    let s = open("rate=5/s", &name);
    // SAFETY: a header atomic.
    unsafe { (*s.header()).version.store(5, Ordering::Relaxed) };
    let c = Config::parse(&format!("rate=5/s backend=shm name={}", name.0)).unwrap();
    for result in [ShmStore::open(&c).map(drop), ShmStore::attach(&attach_config(&name)).map(drop)] {
        match result {
            Err(Error::Incompatible(m)) => {
                assert!(m.contains("has layout version 5, this library uses version 6"), "{m}")
            }
            r => panic!("{r:?}"),
        }
    }
}
