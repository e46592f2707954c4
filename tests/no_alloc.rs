//! rl_check of a key already stored allocates nothing, on the memory and shm
//! backends: the promise that the hot path never calls malloc, checked with a
//! counting allocator around the whole C entry point.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};

use ratelimit::ffi::{
    rl_acquire, rl_adjust, rl_check, rl_create, rl_decision, rl_destroy, rl_limiter, rl_release, rl_shm_unlink, RL_OK,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts allocations on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `n` allowed and `n` denied checks of one stored key.
fn allocations_per_checks(config: &str, n: usize) -> usize {
    let config = CString::new(config).unwrap();
    let mut lim: *mut rl_limiter = std::ptr::null_mut();
    assert_eq!(rl_create(config.as_ptr(), &mut lim), RL_OK);
    let key = b"api-key-0123456789abcdef";
    let mut d = rl_decision::default();
    let check = |d: &mut rl_decision| rl_check(lim, key.as_ptr().cast(), key.len(), 1, d);
    assert_eq!(check(&mut d), RL_OK); // the key is stored now
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut allowed = 0;
    for _ in 0..2 * n {
        assert_eq!(check(&mut d), RL_OK);
        allowed += d.allowed as usize;
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(allowed, n - 1, "the test meant half its checks to be denied");
    rl_destroy(lim);
    after - before
}

#[test]
fn a_stored_keys_check_allocates_nothing() {
    // Run serially in one test: the counter is process-wide.
    for algorithm in ["token_bucket", "fixed_window", "sliding_window"] {
        let n = allocations_per_checks(&format!("rate=1000/hour,5000/day algorithm={algorithm}"), 1000);
        assert_eq!(n, 0, "memory, {algorithm}");
        let name = format!("/rl-test-noalloc-{}", std::process::id());
        let cname = CString::new(name.clone()).unwrap();
        rl_shm_unlink(cname.as_ptr());
        let n = allocations_per_checks(
            &format!("rate=1000/hour,5000/day algorithm={algorithm} backend=shm name={name}"),
            1000,
        );
        rl_shm_unlink(cname.as_ptr());
        assert_eq!(n, 0, "shm, {algorithm}");
    }
    adjusts_and_leases_allocate_nothing();
}

/// Settling (rl_adjust) and leases (rl_acquire + rl_release) allocate
/// nothing either, on a stored key. (Called by the test above: the counter
/// is process-wide.)
fn adjusts_and_leases_allocate_nothing() {
    let name = format!("/rl-test-noalloc-q-{}", std::process::id());
    let cname = CString::new(name.clone()).unwrap();
    let key = b"api-key-0123456789abcdef";
    let mut d = rl_decision::default();
    for backend in ["", " backend=shm name=NAME"] {
        let backend = backend.replace("NAME", &name);
        rl_shm_unlink(cname.as_ptr());
        for config in ["rate=1000/hour,5000/day algorithm=sliding_window", "rate=1000/hour"] {
            let config = CString::new(format!("{config}{backend}")).unwrap();
            let mut lim: *mut rl_limiter = std::ptr::null_mut();
            assert_eq!(rl_create(config.as_ptr(), &mut lim), RL_OK);
            assert_eq!(rl_check(lim, key.as_ptr().cast(), key.len(), 10, &mut d), RL_OK);
            let deltas = [-3i64, 5, 0, -1].repeat(500);
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            for &delta in &deltas {
                assert_eq!(rl_adjust(lim, key.as_ptr().cast(), key.len(), delta, &mut d), RL_OK);
            }
            assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0, "rl_adjust: {config:?}");
            rl_destroy(lim);
            rl_shm_unlink(cname.as_ptr());
        }
        let config = CString::new(format!("concurrency=16 lease=1min{backend}")).unwrap();
        let mut lim: *mut rl_limiter = std::ptr::null_mut();
        assert_eq!(rl_create(config.as_ptr(), &mut lim), RL_OK);
        let mut lease = 0u64;
        assert_eq!(rl_acquire(lim, key.as_ptr().cast(), key.len(), &mut lease, &mut d), RL_OK);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            assert_eq!(rl_acquire(lim, key.as_ptr().cast(), key.len(), &mut lease, &mut d), RL_OK);
            assert_eq!(rl_release(lim, key.as_ptr().cast(), key.len(), lease), 1);
        }
        assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0, "leases: {config:?}");
        rl_destroy(lim);
        rl_shm_unlink(cname.as_ptr());
    }
}
