//! Process-shared robust mutexes, over `libc` directly.
//!
//! The mutexes live in the shared region. `PTHREAD_PROCESS_SHARED` lets every
//! process that maps it use them; `PTHREAD_MUTEX_ROBUST` means a process that
//! dies holding one does not wedge the others: the kernel releases it, and the
//! next `pthread_mutex_lock` succeeds with `EOWNERDEAD`. That caller owns the
//! lock, must repair what the dead owner may have left half-written, and then
//! calls `pthread_mutex_consistent`. If it died too before doing so, the next
//! owner gets `EOWNERDEAD` again.

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

fn acquired(rc: libc::c_int, what: &str) -> Result<Option<Acquired>, Error> {
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

/// Locks `m`, waiting if needed.
///
/// # Safety
/// `m` must point to a mutex made by `init` that stays mapped, and the caller
/// must not hold it already.
pub unsafe fn lock(m: *mut libc::pthread_mutex_t) -> Result<Acquired, Error> {
    // SAFETY: per this function's contract.
    let rc = unsafe { libc::pthread_mutex_lock(m) };
    Ok(acquired(rc, "locking a shared stripe")?.expect("pthread_mutex_lock does not return EBUSY"))
}

/// Locks `m` if it is free; `None` if someone holds it.
///
/// # Safety
/// As for `lock`.
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
