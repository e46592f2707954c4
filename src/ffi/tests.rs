//! The boundary's promises, tested from Rust (the `extern "C"` functions are
//! ordinary functions here): what a caught panic leaves behind in `*out` and
//! in the process's panic hook.

use std::ffi::{c_int, CStr};
use std::ptr;
use std::sync::Mutex;

use super::*;

fn create(config: &CStr) -> *mut rl_limiter {
    let mut lim = ptr::null_mut();
    assert_eq!(rl_create(config.as_ptr(), &mut lim), RL_OK);
    lim
}

/// A decision full of 0xAA bytes, so that a field left unwritten shows.
fn sentinel() -> rl_decision {
    // SAFETY: rl_decision is plain integers; any bit pattern is a valid value.
    unsafe {
        let mut d = std::mem::MaybeUninit::<rl_decision>::uninit();
        ptr::write_bytes(d.as_mut_ptr(), 0xAA, 1);
        d.assume_init()
    }
}

fn fields(d: &rl_decision) -> [u64; 7] {
    [d.allowed as u64, d.rate_index as u64, d.limit, d.remaining, d.reset_ms, d.retry_after_ms, d.window_ms]
}

fn last_error() -> String {
    // SAFETY: rl_last_error() returns a NUL-terminated string, valid until
    // this thread's next rl_* call.
    unsafe { CStr::from_ptr(rl_last_error()) }.to_string_lossy().into_owned()
}

/// A check that panics (a bug) returns RL_ERR_PANIC with `*out` holding the
/// decision a backend error would give: it follows on_error.
#[test]
fn a_panic_in_check_leaves_the_error_decision_in_out() {
    for (config, allowed, retry) in [(c"rate=5/s on_error=allow", 1, 0), (c"rate=5/s on_error=deny", 0, 1000)] {
        let lim = create(config);
        let mut d = sentinel();
        fault::panic_in_next_check();
        let rc: c_int = rl_check(lim, b"k".as_ptr().cast(), 1, 1, &mut d);
        assert_eq!(rc, RL_ERR_PANIC, "{config:?}");
        assert_eq!(fields(&d), [allowed, 0, 5, 0, 0, retry, 1000], "{config:?}");
        assert!(last_error().contains("injected fault"), "{:?}", last_error());
        // The panic consumed nothing, and the next check works.
        assert_eq!(rl_check(lim, b"k".as_ptr().cast(), 1, 0, &mut d), RL_OK);
        assert_eq!((d.allowed, d.remaining), (1, 5));
        rl_destroy(lim);
    }
}

/// rl_adjust and rl_acquire answer a panic the same way, and rl_acquire
/// hands out no lease: the place it may have taken is not leaked either,
/// since the panic comes before the limiter is called.
#[test]
fn a_panic_in_adjust_or_acquire_leaves_the_error_decision_and_no_lease() {
    let lim = create(c"rate=5/s on_error=deny");
    let mut d = sentinel();
    fault::panic_in_next_check();
    assert_eq!(rl_adjust(lim, b"k".as_ptr().cast(), 1, 3, &mut d), RL_ERR_PANIC);
    assert_eq!(fields(&d), [0, 0, 5, 0, 0, 1000, 1000]);
    assert_eq!(rl_adjust(lim, b"k".as_ptr().cast(), 1, 0, &mut d), RL_OK);
    assert_eq!((d.allowed, d.remaining), (1, 5), "the panicked adjust charged nothing");
    rl_destroy(lim);

    let lim = create(c"concurrency=1 lease=10s");
    let (mut d, mut lease) = (sentinel(), 77u64);
    fault::panic_in_next_check();
    assert_eq!(rl_acquire(lim, b"k".as_ptr().cast(), 1, &mut lease, &mut d), RL_ERR_PANIC);
    assert_eq!((lease, d.allowed, d.limit, d.window_ms), (0, 1, 1, 10_000));
    assert!(last_error().contains("injected fault"), "{:?}", last_error());
    assert_eq!(rl_acquire(lim, b"k".as_ptr().cast(), 1, &mut lease, &mut d), RL_OK);
    assert!(d.allowed == 1 && lease != 0, "the one place is free");
    assert_eq!(rl_release(lim, b"k".as_ptr().cast(), 1, lease), 1);
    // NULL lease: a denial, and nothing taken.
    assert_eq!(rl_acquire(lim, b"k".as_ptr().cast(), 1, std::ptr::null_mut(), &mut d), RL_ERR_NULL);
    assert_eq!((d.allowed, d.retry_after_ms, d.limit), (0, 1000, 1));
    assert_eq!(rl_acquire(lim, b"k".as_ptr().cast(), 1, &mut lease, &mut d), RL_OK);
    assert_eq!(d.allowed, 1);
    rl_destroy(lim);
}

/// Messages the host's own panic hook saw (the child test below).
static HOST_HOOK_SAW: Mutex<Vec<String>> = Mutex::new(Vec::new());

const CHILD_ENV: &str = "RL_TEST_PANIC_HOOK_CHILD";

/// A host program (here: a Rust one) that installed its own panic hook keeps
/// it: panics outside rl_* calls still reach it, panics caught inside them
/// do not (and print nothing). The panic hook is process-wide, so this runs
/// in a child process of its own: this test binary again, running only
/// `host_panic_hook_in_a_fresh_process`.
#[test]
fn the_host_keeps_its_panic_hook() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ffi::tests::host_panic_hook_in_a_fresh_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("injected fault"), "a caught panic was printed:\n{stderr}");
}

/// The child of `the_host_keeps_its_panic_hook`; does nothing on its own.
#[test]
fn host_panic_hook_in_a_fresh_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_default();
        HOST_HOOK_SAW.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    }));
    let saw = || HOST_HOOK_SAW.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // The first rl_* call installs the library's hook.
    let lim = create(c"rate=5/s");
    let mut d = sentinel();
    fault::panic_in_next_check();
    assert_eq!(rl_check(lim, b"k".as_ptr().cast(), 1, 1, &mut d), RL_ERR_PANIC);
    assert!(last_error().contains("injected fault"), "{:?}", last_error());
    assert_eq!(saw(), Vec::<String>::new(), "a panic inside rl_check reached the host's hook");

    let caught = std::panic::catch_unwind(|| panic!("the host's own panic"));
    assert!(caught.is_err());
    assert_eq!(saw(), vec!["the host's own panic".to_string()], "the host's hook missed its own panic");

    // The same on another thread, and after more rl_* calls.
    assert_eq!(rl_check(lim, b"k".as_ptr().cast(), 1, 1, &mut d), RL_OK);
    let joined = std::thread::spawn(|| panic!("a host thread's panic")).join();
    assert!(joined.is_err());
    assert_eq!(saw().len(), 2, "{:?}", saw());
    rl_destroy(lim);
}

/// rl_metrics fills a buffer of every size like snprintf: the first
/// `buf_len - 1` bytes of the whole text and a NUL, nothing past `buf_len`,
/// and the whole length as the result.
#[test]
fn metrics_have_snprintf_semantics() {
    let lim = create(c"rate=1/hour capacity=10");
    let mut d = sentinel();
    for key in [&b"a"[..], b"a", b"b\"\n"] {
        rl_check(lim, key.as_ptr().cast(), key.len(), 1, &mut d);
    }
    let labels = c"zone=\"z\"";
    let need = rl_metrics(lim, labels.as_ptr(), RL_METRICS_TOP_KEYS, ptr::null_mut(), 0);
    assert!(need > 0, "{}", last_error());
    let need = need as usize;
    let mut whole = vec![0x23u8; need + 1];
    assert_eq!(rl_metrics(lim, labels.as_ptr(), RL_METRICS_TOP_KEYS, whole.as_mut_ptr().cast(), need + 1), need as i64);
    assert_eq!(whole[need], 0);
    let text = String::from_utf8(whole[..need].to_vec()).unwrap();
    assert!(text.contains("ratelimit_checks_total{zone=\"z\",decision=\"limited\"} 1\n"), "{text}");
    assert!(text.contains("ratelimit_top_limited{zone=\"z\",key=\"a\"} 1\n"), "{text}");
    assert!(text.contains("ratelimit_capacity{zone=\"z\"} 10\n"), "{text}");
    for cap in 1..need + 3 {
        let mut buf = vec![0x23u8; cap + 8];
        assert_eq!(rl_metrics(lim, labels.as_ptr(), RL_METRICS_TOP_KEYS, buf.as_mut_ptr().cast(), cap), need as i64);
        let kept = (cap - 1).min(need);
        assert_eq!(&buf[..kept], &whole[..kept], "cap {cap}");
        assert_eq!(buf[kept], 0, "cap {cap}");
        assert!(buf[cap..].iter().all(|&b| b == 0x23), "cap {cap}: wrote past buf_len");
    }
    // Errors leave the empty string.
    let mut buf = [0x23u8; 16];
    assert_eq!(rl_metrics(lim, c"a=b".as_ptr(), 0, buf.as_mut_ptr().cast(), 16), RL_ERR_INVALID as i64);
    assert!(last_error().contains("labels"), "{}", last_error());
    assert_eq!(buf[0], 0);
    assert_eq!(rl_metrics(lim, ptr::null(), 2, buf.as_mut_ptr().cast(), 16), RL_ERR_INVALID as i64);
    assert!(last_error().contains("flags"), "{}", last_error());
    assert_eq!(rl_metrics(lim, ptr::null(), 0, ptr::null_mut(), 16), RL_ERR_NULL as i64);
    assert_eq!(rl_metrics(ptr::null_mut(), ptr::null(), 0, buf.as_mut_ptr().cast(), 16), RL_ERR_NULL as i64);
    rl_destroy(lim);
}
