"""Exceptions: one class for each RL_ERR_* status of include/ratelimit.h.

Every exception raised for a failed C call carries ``status`` (the negative
RL_ERR_* code) and, as its message, what rl_last_error() said (rl_strerror()
of the status when the library said nothing more).
"""

from typing import Dict, Type

from . import _ffi


class RateLimitError(Exception):
    """Base of every error the library reports. ``status`` is the RL_ERR_* code."""

    status: int = 0


class ConfigError(RateLimitError, ValueError):
    """RL_ERR_CONFIG: the configuration string is invalid (the message names the token)."""

    status = _ffi.RL_ERR_CONFIG


class SharedMemoryError(RateLimitError, OSError):
    """RL_ERR_IO: an OS call failed (shm open/map/permissions, no such region)."""

    status = _ffi.RL_ERR_IO


class BackendError(RateLimitError):
    """RL_ERR_BACKEND: Redis unreachable, timed out or failing; an shm lock held too long."""

    status = _ffi.RL_ERR_BACKEND


class IncompatibleError(RateLimitError):
    """RL_ERR_INCOMPATIBLE: an existing shm region has another layout or configuration."""

    status = _ffi.RL_ERR_INCOMPATIBLE


class InvalidArgumentError(RateLimitError, ValueError):
    """RL_ERR_INVALID / RL_ERR_NULL: a bad argument, e.g. check() on a concurrency
    limiter, acquire() on a rate limiter, malformed metrics labels."""

    status = _ffi.RL_ERR_INVALID


class InternalError(RateLimitError):
    """RL_ERR_PANIC: a bug in the library, caught at its boundary."""

    status = _ffi.RL_ERR_PANIC


class ClosedError(RateLimitError, ValueError):
    """The limiter was closed (like I/O on a closed file, a ValueError)."""


_BY_STATUS: Dict[int, Type[RateLimitError]] = {
    _ffi.RL_ERR_NULL: InvalidArgumentError,
    _ffi.RL_ERR_CONFIG: ConfigError,
    _ffi.RL_ERR_IO: SharedMemoryError,
    _ffi.RL_ERR_BACKEND: BackendError,
    _ffi.RL_ERR_INCOMPATIBLE: IncompatibleError,
    _ffi.RL_ERR_INVALID: InvalidArgumentError,
    _ffi.RL_ERR_PANIC: InternalError,
}


def strerror(status: int) -> str:
    """rl_strerror(): a static description of a status code."""
    return _ffi.rl_strerror(int(status)).decode("utf-8", "replace")


def last_error() -> str:
    """rl_last_error(): this thread's last error message ("" if the last call succeeded)."""
    return _ffi.rl_last_error().decode("utf-8", "replace")


def error_for(status: int, what: str = "") -> RateLimitError:
    """The exception for a failed call: call right after it, on the same thread,
    before any other rl_* call (rl_last_error() is per thread and per call)."""
    message = last_error() or strerror(status)
    if what:
        message = f"{what}: {message}"
    error = _BY_STATUS.get(status, RateLimitError)(message)
    error.status = status
    return error
