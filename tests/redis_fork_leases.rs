//! Lease ids of a concurrency limiter handle used before fork(): the child
//! inherits the handle's seed and counter, yet draws other ids than its
//! parent, so a stale id of one process never names another's lease
//! (RL_TEST_REDIS_URL; skipped without it). Alone in its test binary so
//! that no other test thread is running at the fork.

mod redis_common;

use std::io::Read;

use ratelimit::limiter::Limiter;
use redis_common::{env_or_skip, prefix};

/// Eight ids drawn by acquiring and releasing `key`.
fn draw(lim: &Limiter, key: &[u8]) -> Vec<u64> {
    (0..8)
        .map(|_| {
            let (d, id) = lim.acquire(key).unwrap();
            assert!(d.allowed && id != 0);
            assert!(lim.release(key, id).unwrap());
            id
        })
        .collect()
}

#[test]
fn children_of_a_fork_draw_other_lease_ids() {
    let Some(url) = env_or_skip("RL_TEST_REDIS_URL", "children_of_a_fork_draw_other_lease_ids") else { return };
    let lim = Limiter::from_config_str(&format!(
        "concurrency=1 lease=30s backend=redis url={url} prefix={} timeout_ms=2000",
        prefix("fork-lease")
    ))
    .unwrap();
    let before = draw(&lim, b"parent");
    let mut fds = [0; 2];
    // SAFETY: a pipe for the child's ids; `fds` is a valid out array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fork() in a test: this binary runs one test, so the only other
    // thread is the harness's main thread, blocked waiting for us and holding
    // no lock the child needs. The child only draws ids, writes them to the
    // pipe and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ids = draw(&lim, b"child");
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        // SAFETY: the write end of our pipe; `bytes` is valid for its length.
        let ok = unsafe { libc::write(fds[1], bytes.as_ptr().cast(), bytes.len()) } == bytes.len() as isize;
        // SAFETY: ends the child at once, as above.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // SAFETY: the parent's copy of the write end, closed so the read ends.
    unsafe { libc::close(fds[1]) };
    let parent = draw(&lim, b"parent");
    let mut bytes = Vec::new();
    // SAFETY: the read end of the pipe, owned from here on.
    let mut pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    pipe.read_to_end(&mut bytes).unwrap();
    let mut status = 0;
    // SAFETY: waits for the child we just made; `status` is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child failed (status {status})");
    let child: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(child.len(), 8);
    for id in &child {
        assert!(!parent.contains(id) && !before.contains(id), "{id:#x} drawn by both processes");
    }
}
