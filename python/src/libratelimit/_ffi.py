"""The C ABI of libratelimit (include/ratelimit.h), declared for ctypes.

The shared library is looked for, in order:

1. ``RATELIMIT_LIBRARY``: a path to a ``libratelimit.so`` (when set, it is the
   only place looked at; a wrong path is an error, not a fallback);
2. the copy bundled at install, ``libratelimit/_lib/libratelimit.so`` (``pip
   install ./python`` after ``make`` bundles ``target/release/libratelimit.so``);
3. the system's loader: ``libratelimit.so.0`` as ``make install`` leaves it.

The functions are loaded with :class:`ctypes.CDLL`, which releases the GIL for
the length of every call.
"""

import ctypes
import os
from ctypes import POINTER, c_char_p, c_int, c_int64, c_size_t, c_uint32, c_uint64, c_void_p

RL_OK = 0
RL_ERR_NULL = -1
RL_ERR_CONFIG = -2
RL_ERR_IO = -3
RL_ERR_BACKEND = -4
RL_ERR_INCOMPATIBLE = -5
RL_ERR_INVALID = -6
RL_ERR_PANIC = -7

RL_TOP_LIMITED = 1
RL_TOP_ACTIVE = 2
RL_METRICS_TOP_KEYS = 1
RL_HEADERS_LEGACY = 1
RL_HEADERS_IETF = 2
RL_HEADERS_RETRY_AFTER = 4

# The header this module was written against (RL_VERSION_MAJOR/MINOR).
HEADER_VERSION = (0, 1)

TOP_KEY_BYTES = 64


class rl_decision(ctypes.Structure):
    _fields_ = [
        ("allowed", c_uint32),
        ("rate_index", c_uint32),
        ("limit", c_uint64),
        ("remaining", c_uint64),
        ("reset_ms", c_uint64),
        ("retry_after_ms", c_uint64),
        ("window_ms", c_uint64),
    ]


class rl_stats(ctypes.Structure):
    _fields_ = [
        ("allowed", c_uint64),
        ("limited", c_uint64),
        ("errors", c_uint64),
        ("keys", c_uint64),
        ("evictions", c_uint64),
        ("local_denials", c_uint64),
    ]


class rl_top_entry(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_uint8 * TOP_KEY_BYTES),
        ("key_len", c_uint32),
        ("truncated", c_uint32),
        ("count", c_uint64),
        ("error", c_uint64),
    ]


class LibraryNotFound(OSError):
    """The shared library could not be loaded from any of the places looked at."""


def _candidates():
    env = os.environ.get("RATELIMIT_LIBRARY")
    if env:
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = os.path.join(here, "_lib", "libratelimit.so")
    return [bundled, "libratelimit.so.0", "libratelimit.so"], False


def _load():
    paths, explicit = _candidates()
    errors = []
    for path in paths:
        if os.sep in path and not os.path.exists(path):
            errors.append(f"{path}: no such file")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append(str(e))
    where = "RATELIMIT_LIBRARY" if explicit else "the bundled copy, then the system's loader"
    raise LibraryNotFound(
        f"libratelimit: cannot load the shared library ({where}): " + "; ".join(errors)
        + ". Build it with `make` and set RATELIMIT_LIBRARY=/path/to/target/release/libratelimit.so,"
        " or reinstall the package after `make` to bundle it."
    )


lib, path = _load()


def _fn(name, restype, argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


_lim = c_void_p
_out_lim = POINTER(c_void_p)
_dec = POINTER(rl_decision)

rl_create = _fn("rl_create", c_int, [c_char_p, _out_lim])
rl_destroy = _fn("rl_destroy", None, [_lim])
rl_check = _fn("rl_check", c_int, [_lim, c_char_p, c_size_t, c_uint64, _dec])
rl_adjust = _fn("rl_adjust", c_int, [_lim, c_char_p, c_size_t, c_int64, _dec])
rl_acquire = _fn("rl_acquire", c_int, [_lim, c_char_p, c_size_t, POINTER(c_uint64), _dec])
rl_renew = _fn("rl_renew", c_int, [_lim, c_char_p, c_size_t, c_uint64])
rl_release = _fn("rl_release", c_int, [_lim, c_char_p, c_size_t, c_uint64])
rl_sweep = _fn("rl_sweep", c_int64, [_lim])
rl_reset = _fn("rl_reset", c_int, [_lim, c_char_p, c_size_t])
rl_stats_get = _fn("rl_stats_get", c_int, [_lim, POINTER(rl_stats)])
rl_top = _fn("rl_top", c_int64, [_lim, c_uint32, POINTER(rl_top_entry), c_size_t])
rl_metrics = _fn("rl_metrics", c_int64, [_lim, c_char_p, c_uint32, c_char_p, c_size_t])
rl_format_headers = _fn("rl_format_headers", c_int64, [_dec, c_uint32, c_char_p, c_size_t])
rl_describe = _fn("rl_describe", c_int64, [_lim, c_char_p, c_size_t])
rl_strerror = _fn("rl_strerror", c_char_p, [c_int])
rl_last_error = _fn("rl_last_error", c_char_p, [])
rl_version = _fn("rl_version", c_char_p, [])
rl_shm_unlink = _fn("rl_shm_unlink", c_int, [c_char_p])
