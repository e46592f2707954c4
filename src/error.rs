//! The library's errors. Each maps to one `RL_ERR_*` status at the C boundary
//! and carries the message `rl_last_error()` returns.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A required pointer was NULL; names the argument.
    Null(&'static str),
    /// The configuration string is invalid; names the token.
    Config(String),
    /// An OS call failed (shm open/map/permissions).
    Io(String),
    /// The backend (Redis) failed: unreachable, timed out, script error.
    Backend(String),
    /// An existing shared region has another layout or configuration.
    Incompatible(String),
    /// Any other bad argument.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Null(arg) => write!(f, "argument \"{arg}\" is NULL"),
            Error::Config(m) => write!(f, "config: {m}"),
            Error::Io(m) | Error::Backend(m) | Error::Incompatible(m) | Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Error {
        Error::Config(e.0)
    }
}
