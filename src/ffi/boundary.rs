//! The one boundary idiom every exported function goes through.
//!
//! - `ffi_boundary!` runs the body under `catch_unwind`: a panic (a bug in the
//!   library) never unwinds into C; the function returns its type's "panicked"
//!   value (`RL_ERR_PANIC`, a negative count, or a static string; or what the
//!   function's `on_panic:` says) and `rl_last_error()` says so.
//! - The panic hook is process-wide and may belong to the host (a Rust
//!   program linking the library, a test harness). The library's hook is
//!   chained in front of whatever hook was there: a panic inside an rl_*
//!   call is recorded silently as the last error (the host's stderr is not
//!   ours to print to); every other panic goes to the previous hook.
//! - `try_ref!`/`try_mut!`/`try_slice!` turn possibly-NULL pointers into
//!   references or return `RL_ERR_NULL` naming the argument.
//! - Each call starts by clearing this thread's last error and records the
//!   message of any error it returns.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use super::status::{RL_ERR_NULL, RL_ERR_PANIC};
use crate::error::Error;

/// This thread's last error message, "" when none.
struct LastError(RefCell<CString>);

impl Drop for LastError {
    fn drop(&mut self) {
        if !self.0.get_mut().as_bytes().is_empty() {
            THREADS_WITH_ERROR.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

thread_local! {
    static LAST_ERROR: LastError = LastError(RefCell::new(CString::default()));
}

/// How many threads hold a non-empty last error. While it is 0 (the usual
/// case) a call need not touch its thread-local to clear it: thread-locals of
/// a shared library cost a `__tls_get_addr` call, a noticeable part of a
/// check. A thread's own increment is always visible to its own later loads,
/// so a thread with an error never sees 0.
static THREADS_WITH_ERROR: AtomicUsize = AtomicUsize::new(0);

/// Records `message` as this thread's last error.
pub fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // try_with: a call made while this thread's thread-locals are being
    // destroyed (from another library's destructor) cannot record a message.
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.0.borrow_mut();
        if e.as_bytes().is_empty() && !c.as_bytes().is_empty() {
            THREADS_WITH_ERROR.fetch_add(1, Ordering::Relaxed);
        }
        *e = c;
    });
}

/// Clears this thread's last error (each call starts afresh).
#[inline]
pub fn clear_last_error() {
    if THREADS_WITH_ERROR.load(Ordering::Relaxed) == 0 {
        return;
    }
    // try_with: this runs outside the boundary, where a panic must not be.
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.0.borrow_mut();
        if !e.as_bytes().is_empty() {
            *e = CString::default();
            THREADS_WITH_ERROR.fetch_sub(1, Ordering::Relaxed);
        }
    });
}

/// This thread's last error message; valid until the thread's next rl_* call.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.0.borrow().as_ptr())
}

/// Records the error and returns its status code.
pub fn fail(e: Error) -> c_int {
    set_last_error(&e.to_string());
    super::status::code(&e)
}

thread_local! {
    /// Whether this thread is inside an rl_* body. Const-initialised and
    /// without a destructor: reading it is a plain load once its address is
    /// known, and it is readable at any time, even while the thread's other
    /// thread-locals are being destroyed.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `body` under `catch_unwind`, marked as inside the boundary for the
/// panic hook; `None` if it panicked. The thread-local's address is looked
/// up once for both updates (in a shared library each lookup is a call).
#[inline(always)]
pub fn catch<T>(body: impl FnOnce() -> T) -> Option<T> {
    INSIDE.with(|inside| {
        // Restores what it was rather than clearing it, should bodies ever nest.
        let was = inside.replace(true);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        inside.set(was);
        match result {
            Ok(value) => Some(value),
            Err(payload) => {
                // Never run a payload's destructor here: if it panicked too,
                // that panic would unwind into C. A caught panic is a bug and
                // rare; its payload (a message) is left to leak.
                std::mem::forget(payload);
                None
            }
        }
    })
}

static QUIET_PANICS: Once = Once::new();

/// Puts the library's panic hook in front of the current one (once per
/// process): a panic inside an rl_* body is recorded as this thread's last
/// error and not printed; any other panic goes to the hook that was there
/// before (the default one prints it, a host's own does what it does).
pub fn install_quiet_panic_hook() {
    QUIET_PANICS.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !INSIDE.with(Cell::get) {
                return previous(info);
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            set_last_error(&format!("internal error (a bug in libratelimit was caught): {msg}{at}"));
        }));
    });
}

/// What an exported function returns when its body panicked or a required
/// pointer was NULL.
pub trait BoundaryValue {
    fn panicked() -> Self;
    fn null() -> Self;
}

impl BoundaryValue for c_int {
    fn panicked() -> Self {
        RL_ERR_PANIC
    }
    fn null() -> Self {
        RL_ERR_NULL
    }
}

impl BoundaryValue for i64 {
    fn panicked() -> Self {
        RL_ERR_PANIC as i64
    }
    fn null() -> Self {
        RL_ERR_NULL as i64
    }
}

impl BoundaryValue for () {
    fn panicked() -> Self {}
    fn null() -> Self {}
}

impl BoundaryValue for *const c_char {
    fn panicked() -> Self {
        c"(internal error)".as_ptr()
    }
    fn null() -> Self {
        c"".as_ptr()
    }
}

/// Runs an exported function's body behind the panic boundary.
/// `ffi_boundary!(keep_last_error; ...)` is for the few functions that
/// report on the last error rather than make a new one;
/// `ffi_boundary!(on_panic: EXPR; ...)` returns EXPR (evaluated outside the
/// boundary: it must not panic) instead of the type's "panicked" value, for
/// functions that must leave their outputs filled even then.
macro_rules! ffi_boundary {
    ( keep_last_error; on_panic: $on_panic:expr; $($body:tt)* ) => {{
        $crate::ffi::boundary::install_quiet_panic_hook();
        match $crate::ffi::boundary::catch(move || { $($body)* }) {
            Some(value) => value,
            None => $on_panic,
        }
    }};
    ( keep_last_error; $($body:tt)* ) => {
        $crate::ffi::boundary::ffi_boundary!(
            keep_last_error; on_panic: $crate::ffi::boundary::BoundaryValue::panicked(); $($body)*
        )
    };
    ( on_panic: $on_panic:expr; $($body:tt)* ) => {{
        $crate::ffi::boundary::clear_last_error();
        $crate::ffi::boundary::ffi_boundary!(keep_last_error; on_panic: $on_panic; $($body)*)
    }};
    ( $($body:tt)* ) => {{
        $crate::ffi::boundary::clear_last_error();
        $crate::ffi::boundary::ffi_boundary!(keep_last_error; $($body)*)
    }};
}

/// `&T` from a possibly-NULL `*const T`, or return `RL_ERR_NULL` naming it.
macro_rules! try_ref {
    ($ptr:ident) => {
        match $ptr.is_null() {
            true => {
                $crate::ffi::boundary::set_last_error(concat!("argument \"", stringify!($ptr), "\" is NULL"));
                return $crate::ffi::boundary::BoundaryValue::null();
            }
            // SAFETY: non-NULL, and the C caller promises it points to a live,
            // properly aligned object of this type for the duration of the call.
            false => unsafe { &*$ptr },
        }
    };
}

/// `&mut T` from a possibly-NULL `*mut T`, or return `RL_ERR_NULL` naming it.
macro_rules! try_mut {
    ($ptr:ident) => {
        match $ptr.is_null() {
            true => {
                $crate::ffi::boundary::set_last_error(concat!("argument \"", stringify!($ptr), "\" is NULL"));
                return $crate::ffi::boundary::BoundaryValue::null();
            }
            // SAFETY: non-NULL, and the C caller promises it points to a live,
            // writable, properly aligned object of this type, not aliased
            // elsewhere for the duration of the call.
            false => unsafe { &mut *$ptr },
        }
    };
}

/// `&[u8]` from a pointer and a length; NULL is allowed only with length 0.
macro_rules! try_slice {
    ($ptr:ident, $len:ident) => {
        if $len == 0 {
            &[][..]
        } else if $ptr.is_null() {
            $crate::ffi::boundary::set_last_error(concat!(
                "argument \"",
                stringify!($ptr),
                "\" is NULL but \"",
                stringify!($len),
                "\" is not 0"
            ));
            return $crate::ffi::boundary::BoundaryValue::null();
        } else {
            // SAFETY: non-NULL with a non-zero length; the C caller promises
            // `len` readable bytes at `ptr` for the duration of the call.
            unsafe { ::std::slice::from_raw_parts($ptr.cast::<u8>(), $len) }
        }
    };
}

pub(crate) use {ffi_boundary, try_mut, try_ref, try_slice};
