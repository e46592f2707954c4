//! Fault injection for the library's own tests and fuzz targets: makes the
//! next rl_check(), rl_adjust() or rl_acquire() on this thread panic inside
//! the boundary, as a bug would.
//! Compiled only under `cfg(test)` or `cfg(fuzzing)`: release builds carry
//! neither this module nor the check that consults it.

use std::cell::Cell;

thread_local! {
    static PANIC_IN_NEXT_CHECK: Cell<bool> = const { Cell::new(false) };
}

/// Makes the next rl_check(), rl_adjust() or rl_acquire() on this thread
/// panic once it has passed its
/// argument checks, before it calls into the limiter.
pub fn panic_in_next_check() {
    PANIC_IN_NEXT_CHECK.with(|p| p.set(true));
}

/// Called by rl_check(), rl_adjust() and rl_acquire(): panics if panic_in_next_check() asked for it.
pub(crate) fn check_point() {
    if PANIC_IN_NEXT_CHECK.with(|p| p.replace(false)) {
        panic!("injected fault: rl_check panicked");
    }
}
