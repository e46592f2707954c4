//! Process-shared robust mutexes, over `libc` directly.
//!
//! The mutexes live in the shared region. `PTHREAD_PROCESS_SHARED` lets every
//! process that maps it use them; `PTHREAD_MUTEX_ROBUST` means a process that
//! dies holding one does not wedge the others: the kernel releases it, and the
//! next `pthread_mutex_lock` succeeds with `EOWNERDEAD`. That caller owns the
//! lock, must repair what the dead owner may have left half-written, and then
//! calls `pthread_mutex_consistent`. If it died too before doing so, the next
//! owner gets `EOWNERDEAD` again.
//!
//! A process that is *stopped* (SIGSTOP, a debugger) while holding one is not
//! dead: the kernel keeps the lock its own. So nobody waits for a lock without
//! a deadline: `try_lock` first (the uncontended case, as cheap as a plain
//! lock: no system call, no clock read), then `lock_until`, which gives up at
//! a deadline and lets the caller report a backend error. After such a
//! timeout, mod.rs only `try_lock`s that stripe for a cool-down, failing at
//! once if it is still held, so a stopped holder costs one wait per
//! cool-down, not one per operation.
//!
//! The deadline is on `CLOCK_MONOTONIC` (`Instant`), but the wait itself is
//! `pthread_mutex_timedlock`, which takes a `CLOCK_REALTIME` time:
//! `pthread_mutex_clocklock` (glibc 2.30+) is not exposed by the `libc` crate,
//! and musl lacks it. The realtime deadline is derived from the monotonic one
//! just before each wait, and a wait that ends early by realtime (the wall
//! clock stepped forward) is resumed for what is left by the monotonic clock.
//! A wall clock stepped *backward* during a wait lengthens that one wait by
//! the size of the step; nothing else depends on the wall clock.

use std::time::{Duration, Instant};

use crate::error::Error;

/// How a lock was acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The usual case.
    Clean,
    /// Its previous owner died holding it: repair, then `make_consistent`.
    OwnerDied,
}

fn os_error(what: &str, rc: libc::c_int) -> Error {
    Error::Io(format!("{what}: {}", std::io::Error::from_raw_os_error(rc)))
}

/// Initialises a robust, process-shared mutex at `m`.
///
/// # Safety
/// `m` must be valid for writes, aligned, and not in use by anyone.
pub unsafe fn init(m: *mut libc::pthread_mutex_t) -> Result<(), Error> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is a local we own; `m` is valid per this function's contract.
    unsafe {
        let a = attr.as_mut_ptr();
        let rc = libc::pthread_mutexattr_init(a);
        if rc != 0 {
            return Err(os_error("pthread_mutexattr_init", rc));
        }
        let mut rc = libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED);
        if rc == 0 {
            rc = libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST);
        }
        if rc == 0 {
            rc = libc::pthread_mutex_init(m, a);
        }
        libc::pthread_mutexattr_destroy(a);
        if rc != 0 {
            return Err(os_error("initialising a process-shared robust mutex", rc));
        }
    }
    Ok(())
}

#[inline]
fn acquired(rc: libc::c_int, what: &str) -> Result<Option<Acquired>, Error> {
    if rc == 0 {
        return Ok(Some(Acquired::Clean));
    }
    acquired_slow(rc, what)
}

#[cold]
fn acquired_slow(rc: libc::c_int, what: &str) -> Result<Option<Acquired>, Error> {
    match rc {
        0 => Ok(Some(Acquired::Clean)),
        libc::EOWNERDEAD => Ok(Some(Acquired::OwnerDied)),
        libc::EBUSY => Ok(None),
        libc::ENOTRECOVERABLE => Err(Error::Io(format!(
            "{what}: the lock is not recoverable (a repair failed); remove the region with rl_shm_unlink and restart"
        ))),
        rc => Err(os_error(what, rc)),
    }
}

/// `CLOCK_REALTIME` now plus `left`, as a timespec.
fn realtime_after(left: Duration) -> libc::timespec {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to fill; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    // `left` is at most the 60 s timeout_ms allows: no overflow here.
    let nsec = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
    libc::timespec {
        tv_sec: now.tv_sec + left.as_secs() as libc::time_t + (nsec / 1_000_000_000) as libc::time_t,
        tv_nsec: (nsec % 1_000_000_000) as _,
    }
}

/// Locks `m`, waiting until `deadline` at most; `None` if it is still held
/// then. `EOWNERDEAD` is returned as `Acquired::OwnerDied`, as by `try_lock`.
/// Meant for after a `try_lock` that found `m` held (it does not try first).
///
/// # Safety
/// `m` must point to a mutex made by `init` that stays mapped, and the caller
/// must not hold it already.
#[cold]
pub unsafe fn lock_until(m: *mut libc::pthread_mutex_t, deadline: Instant) -> Result<Option<Acquired>, Error> {
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            // Out of time; one last look, so that a deadline already past
            // still takes a lock that is free.
            // SAFETY: per this function's contract.
            return unsafe { try_lock(m) };
        };
        let at = realtime_after(left);
        // SAFETY: per this function's contract; `at` is a valid timespec.
        let rc = unsafe { libc::pthread_mutex_timedlock(m, &at) };
        if rc != libc::ETIMEDOUT {
            return acquired(rc, "locking a shared stripe");
        }
        // Timed out by the wall clock: the loop checks the monotonic one.
    }
}

/// Locks `m` if it is free; `None` if someone holds it.
///
/// # Safety
/// `m` must point to a mutex made by `init` that stays mapped, and the caller
/// must not hold it already.
#[inline]
pub unsafe fn try_lock(m: *mut libc::pthread_mutex_t) -> Result<Option<Acquired>, Error> {
    // SAFETY: per this function's contract.
    let rc = unsafe { libc::pthread_mutex_trylock(m) };
    acquired(rc, "try-locking a shared stripe")
}

/// Declares the state guarded by `m` repaired.
///
/// # Safety
/// The caller must hold `m`, acquired with `Acquired::OwnerDied`.
pub unsafe fn make_consistent(m: *mut libc::pthread_mutex_t) -> Result<(), Error> {
    // SAFETY: per this function's contract.
    let rc = unsafe { libc::pthread_mutex_consistent(m) };
    if rc != 0 {
        return Err(os_error("pthread_mutex_consistent", rc));
    }
    Ok(())
}

/// Unlocks `m`.
///
/// # Safety
/// The caller must hold `m`.
pub unsafe fn unlock(m: *mut libc::pthread_mutex_t) {
    // SAFETY: per this function's contract. Unlocking a mutex we hold cannot
    // fail; there is nothing useful to do with an error here anyway.
    unsafe { libc::pthread_mutex_unlock(m) };
}
