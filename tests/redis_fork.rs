//! A limiter handle used before fork() keeps working in the child, and the
//! parent's keeps working too, at the same time: the child makes its own
//! connection instead of sharing the parent's socket (RL_TEST_REDIS_URL;
//! skipped without it). Alone in its test binary so that no other test
//! thread is running at the fork.

mod redis_common;

use ratelimit::limiter::Limiter;
use redis_common::{env_or_skip, prefix};

#[test]
fn a_handle_used_before_fork_works_in_the_child() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "a_handle_used_before_fork_works_in_the_child") else { return };
    let lim = Limiter::from_config_str(&format!(
        "rate=1000/hour backend=redis url={url} prefix={} timeout_ms=2000",
        prefix("fork")
    ))
    .unwrap();
    assert!(lim.check(b"parent", 1).unwrap().allowed); // the pool now holds a connection

    // SAFETY: fork() in a test: this binary runs one test, so the only other
    // thread is the harness's main thread, blocked waiting for us and holding
    // no lock the child needs. The child only runs checks and leaves with
    // _exit (no destructors, no atexit handlers, no test-harness output).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut ok = true;
        for _ in 0..200 {
            ok &= matches!(lim.check(b"child", 1), Ok(d) if d.allowed);
        }
        ok &= matches!(lim.check(b"child", 0), Ok(d) if d.remaining == 800);
        // SAFETY: ends the child at once, as above.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // Meanwhile the parent goes on with its own connection.
    for _ in 0..200 {
        assert!(lim.check(b"parent", 1).unwrap().allowed);
    }
    let mut status = 0;
    // SAFETY: waits for the child we just made; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child's checks failed (status {status})");
    assert_eq!(lim.check(b"child", 0).unwrap().remaining, 800, "the child's 200 units are in Redis");
    assert_eq!(lim.check(b"parent", 0).unwrap().remaining, 799);
    assert_eq!(lim.stats().unwrap().errors, 0);
}
