//! Status codes returned by the C API: `RL_OK` or a negative error.

use std::ffi::{c_char, c_int};

use crate::error::Error;

/// Success.
pub const RL_OK: c_int = 0;
/// A required pointer argument was NULL.
pub const RL_ERR_NULL: c_int = -1;
/// The configuration string is invalid; rl_last_error() names the token.
pub const RL_ERR_CONFIG: c_int = -2;
/// An OS call failed (shm open/map/permissions).
pub const RL_ERR_IO: c_int = -3;
/// The backend failed: Redis unreachable, timed out, or a script error.
pub const RL_ERR_BACKEND: c_int = -4;
/// An existing shared region has another layout version or configuration.
pub const RL_ERR_INCOMPATIBLE: c_int = -5;
/// Any other bad argument.
pub const RL_ERR_INVALID: c_int = -6;
/// An internal bug was caught at the library boundary.
pub const RL_ERR_PANIC: c_int = -7;

pub fn code(e: &Error) -> c_int {
    match e {
        Error::Null(_) => RL_ERR_NULL,
        Error::Config(_) => RL_ERR_CONFIG,
        Error::Io(_) => RL_ERR_IO,
        Error::Backend(_) => RL_ERR_BACKEND,
        Error::Incompatible(_) => RL_ERR_INCOMPATIBLE,
        Error::Invalid(_) => RL_ERR_INVALID,
    }
}

pub fn describe(status: c_int) -> *const c_char {
    match status {
        RL_OK => c"success",
        RL_ERR_NULL => c"a required pointer argument was NULL",
        RL_ERR_CONFIG => c"invalid configuration string",
        RL_ERR_IO => c"an operating system call failed",
        RL_ERR_BACKEND => c"the backend failed (unreachable, timed out or script error)",
        RL_ERR_INCOMPATIBLE => c"the shared region has another layout or configuration",
        RL_ERR_INVALID => c"invalid argument",
        RL_ERR_PANIC => c"internal error caught at the library boundary",
        _ => c"unknown status code",
    }
    .as_ptr()
}
