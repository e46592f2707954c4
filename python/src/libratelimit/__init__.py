"""libratelimit: may this key spend this cost now, and if not, when?

Pure Python over the C library's ABI (ctypes)::

    from libratelimit import Limiter
    lim = Limiter("rate=100/minute,1000/hour backend=shm name=/api")
    d = lim.check("user-123", cost=1)
    if not d.allowed:
        ...  # 429, with d.headers() and d.retry_after_ms

Backends: ``memory`` (one process), ``shm`` (the worker processes of one
host share a region), ``redis`` (a fleet). :mod:`libratelimit.asgi` has an
ASGI middleware for FastAPI/Starlette, :mod:`libratelimit.fastapi` a
per-route dependency.

The shared library is found through ``RATELIMIT_LIBRARY`` (a path), else the
copy bundled at install, else the system's loader (``make install``).
"""

from ._errors import (
    BackendError,
    ClosedError,
    ConfigError,
    IncompatibleError,
    InternalError,
    InvalidArgumentError,
    RateLimitError,
    SharedMemoryError,
    last_error,
    strerror,
)
from ._limiter import (
    HEADERS_IETF,
    HEADERS_LEGACY,
    HEADERS_RETRY_AFTER,
    TOP_ACTIVE,
    TOP_LIMITED,
    Decision,
    Lease,
    Limiter,
    TopEntry,
    shm_unlink,
    version,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ClosedError",
    "ConfigError",
    "Decision",
    "HEADERS_IETF",
    "HEADERS_LEGACY",
    "HEADERS_RETRY_AFTER",
    "IncompatibleError",
    "InternalError",
    "InvalidArgumentError",
    "Lease",
    "Limiter",
    "RateLimitError",
    "SharedMemoryError",
    "TOP_ACTIVE",
    "TOP_LIMITED",
    "TopEntry",
    "last_error",
    "shm_unlink",
    "strerror",
    "version",
]
