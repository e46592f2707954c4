"""Limiter, Decision, Lease: the C API of include/ratelimit.h as Python objects."""

import ctypes
import logging
import os
import struct
import threading
import time
import weakref
from ctypes import byref, c_uint64, c_void_p, create_string_buffer
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

from . import _ffi
from ._errors import BackendError, ClosedError, ConfigError, InternalError, RateLimitError, error_for

__all__ = ["Decision", "Lease", "Limiter", "TopEntry", "shm_unlink", "version"]

logger = logging.getLogger("libratelimit")

Key = Union[str, bytes]

UINT64_MAX = (1 << 64) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# rl_top()'s two rankings; top() also takes "limited" and "active".
TOP_LIMITED = _ffi.RL_TOP_LIMITED
TOP_ACTIVE = _ffi.RL_TOP_ACTIVE

# rl_format_headers() flags, for Decision.headers(flags=...).
HEADERS_LEGACY = _ffi.RL_HEADERS_LEGACY
HEADERS_IETF = _ffi.RL_HEADERS_IETF
HEADERS_RETRY_AFTER = _ffi.RL_HEADERS_RETRY_AFTER

# A backend error is logged at most once in this many seconds per limiter.
_WARN_EVERY_S = 10.0


def _key_bytes(key: Any) -> bytes:
    """A key as the library takes it: bytes as they are, str as UTF-8."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        # Lone surrogates (from os.fsdecode, surrogateescape...) raise
        # UnicodeEncodeError, a ValueError naming the character.
        return key.encode("utf-8")
    raise TypeError(f"key must be str or bytes, not {type(key).__name__}")


def _int_arg(value: Any, what: str) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value.__index__()


def _cost(cost: Any) -> int:
    if type(cost) is not int:
        cost = _int_arg(cost, "cost")
    if cost < 0:
        raise ValueError(f"cost must be >= 0, not {cost}")
    if cost > UINT64_MAX:
        raise OverflowError(f"cost must be at most 2**64 - 1, not {cost}")
    return cost


def _format_headers(d: "_ffi.rl_decision", flags: int) -> Dict[str, str]:
    buf = create_string_buffer(512)
    n = _ffi.rl_format_headers(byref(d), flags, buf, len(buf))
    if n < 0:
        raise error_for(n, "rl_format_headers")
    if n >= len(buf):  # the header promises at most 511 bytes
        buf = create_string_buffer(n + 1)
        n = _ffi.rl_format_headers(byref(d), flags, buf, len(buf))
        if n < 0:
            raise error_for(n, "rl_format_headers")
    out: Dict[str, str] = {}
    for line in buf.value.decode("ascii").split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            out[name] = value
    return out


class Decision(NamedTuple):
    """The answer to one check (rl_decision), immutable.

    ``allowed``: serve the request (True) or answer 429. ``rate_index``: which
    configured rate decided. ``limit``: that rate's quota. ``remaining``: units
    left in it. ``reset_ms``: until it is back to its full quota.
    ``retry_after_ms``: 0 when allowed, else until the same cost can pass
    (2**64 - 1: never, the cost is above the quota). ``window_ms``: the rate's
    period. With ``dry_run=on``, ``allowed`` is always True and
    ``retry_after_ms > 0`` marks a would-be denial.

    ``error`` is None, or the :class:`BackendError` (or :class:`InternalError`)
    that the library met: the decision is then the configured ``on_error``
    one (allowed with ``on_error=allow``, the default). It is not raised.

    ``bool(decision)`` is ``decision.allowed``.
    """

    allowed: bool
    rate_index: int
    limit: int
    remaining: int
    reset_ms: int
    retry_after_ms: int
    window_ms: int
    error: Optional[RateLimitError] = None

    def __bool__(self) -> bool:
        return self.allowed

    def headers(self, flags: int = 0) -> Dict[str, str]:
        """The HTTP headers of rl_format_headers(d, flags): with the default
        ``flags=0``, ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``,
        ``X-RateLimit-Reset`` and, when denied, ``Retry-After``. ``flags`` is
        a combination of HEADERS_LEGACY, HEADERS_IETF and HEADERS_RETRY_AFTER.
        """
        d = _ffi.rl_decision(
            1 if self.allowed else 0,
            self.rate_index,
            self.limit,
            self.remaining,
            self.reset_ms,
            self.retry_after_ms,
            self.window_ms,
        )
        return _format_headers(d, flags)


# rl_decision's fields in one call (cheaper than seven ctypes attribute reads).
_unpack = struct.Struct("=IIQQQQQ").unpack_from
assert struct.calcsize("=IIQQQQQ") == ctypes.sizeof(_ffi.rl_decision)
_new_decision = tuple.__new__


def _decision(out: "_ffi.rl_decision", error: Optional[RateLimitError] = None) -> Decision:
    allowed, rate_index, limit, remaining, reset_ms, retry_after_ms, window_ms = _unpack(out)
    return _new_decision(
        Decision, (allowed == 1, rate_index, limit, remaining, reset_ms, retry_after_ms, window_ms, error)
    )


class _TopEntryBase(NamedTuple):
    key: bytes
    count: int
    error: int


class TopEntry(_TopEntryBase):
    """One key of :meth:`Limiter.top`: ``(key, count, error)``, with
    ``count - error <= true count <= count``. ``key`` is the key's first 64
    bytes; ``truncated`` (an attribute, not part of the tuple) says the key
    was longer."""

    truncated: bool = False


class Lease:
    """What :meth:`Limiter.acquire` returns: the decision and, when allowed,
    the lease holding one of the key's in-flight places.

    Reads like a :class:`Decision` (``allowed``, ``remaining``,
    ``retry_after_ms``..., ``headers()``, ``bool()``). As a context manager
    it releases the lease on exit (``with lim.acquire(key) as d:``); a denied
    acquire holds nothing and exits without a call. ``renew()`` extends the
    lease; ``release()`` frees it early.
    """

    __slots__ = ("_limiter", "key", "id", "decision", "_released")

    def __init__(self, limiter: "Limiter", key: bytes, lease_id: int, decision: Decision) -> None:
        self._limiter = limiter
        self.key = key
        #: The lease's id (0: none held, after a denial or a backend error).
        self.id = lease_id
        self.decision = decision
        self._released = lease_id == 0

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def limit(self) -> int:
        return self.decision.limit

    @property
    def remaining(self) -> int:
        return self.decision.remaining

    @property
    def reset_ms(self) -> int:
        return self.decision.reset_ms

    @property
    def retry_after_ms(self) -> int:
        return self.decision.retry_after_ms

    @property
    def window_ms(self) -> int:
        return self.decision.window_ms

    @property
    def error(self) -> Optional[RateLimitError]:
        return self.decision.error

    @property
    def held(self) -> bool:
        """A lease was taken and not yet released through this object."""
        return not self._released

    def __bool__(self) -> bool:
        return self.decision.allowed

    def headers(self, flags: int = 0) -> Dict[str, str]:
        return self.decision.headers(flags)

    def renew(self) -> bool:
        """rl_renew(): True if the lease was still held (now for a whole lease
        length from now), False if it had expired or been released."""
        return self._limiter.renew(self.key, self.id)

    def release(self) -> bool:
        """rl_release(): True if the lease was held. Releasing twice is harmless."""
        self._released = True
        return self._limiter.release(self.key, self.id)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._released:
            return
        try:
            self.release()
        except (BackendError, InternalError, ClosedError) as e:
            # The lease frees its place by itself when it expires; failing the
            # block that already ran would turn a served request into an error.
            logger.warning("libratelimit: could not release lease %d: %s", self.id, e)

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, decision={self.decision!r})"


# Every open limiter, so that a forked child gets fresh locks (another thread
# of the parent may have held one at the fork).
_open_limiters: "weakref.WeakSet[Limiter]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lim in list(_open_limiters):
        lim._lock = threading.Lock()
        lim._calls = []  # the parent's other threads do not exist here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Limiter:
    """A rate (or concurrency) limiter: ``rl_create(config)``.

    ``config`` is the library's configuration string, e.g.
    ``"rate=100/minute,1000/hour backend=shm name=/api"`` (see the README's
    Configuration section). Raises :class:`ConfigError` (a ValueError) for a
    bad string, :class:`SharedMemoryError` (an OSError) or
    :class:`IncompatibleError` for a shm region that cannot be used.

    One limiter may be used by any number of threads at once, and after
    ``os.fork()`` in the children (the GIL is released during each C call).
    ``close()`` frees it (also on ``with`` exit and garbage collection); a
    call that is running in another thread finishes first, and calls after
    close raise :class:`ClosedError`.
    """

    def __init__(self, config: str) -> None:
        self._handle: Optional[int] = None
        self._lock = threading.Lock()
        self._calls: List[None] = []
        self._closing = False
        self._warned_at = 0.0
        self._suppressed = 0
        if not isinstance(config, str):
            raise TypeError(f"config must be a str, not {type(config).__name__}")
        raw = config.encode("utf-8")
        if b"\0" in raw:
            raise ConfigError("invalid configuration string: it contains a NUL character")
        out = c_void_p()
        status = _ffi.rl_create(raw, byref(out))
        if status != _ffi.RL_OK:
            raise error_for(status)
        self._handle = out.value
        self._config = config
        _open_limiters.add(self)

    # ---- the handle's lifetime -------------------------------------------
    # rl_destroy() must not run while another thread is inside a call on the
    # handle (the GIL is released during calls). Every call registers itself
    # in self._calls (list.append and list.pop are atomic, also in
    # free-threaded builds) BEFORE it reads self._closing; close() sets
    # self._closing BEFORE it looks at self._calls. So either close() sees
    # the call and leaves the destroy to the last call out, or the call sees
    # the close and does not start. _destroy_if_idle() holds the lock, so
    # the handle is destroyed once. (Cheaper than a lock taken twice per call.)
    def _enter(self) -> int:
        self._calls.append(None)
        handle = self._handle
        if self._closing or handle is None:
            self._leave()
            raise ClosedError("the limiter is closed")
        return handle

    def _leave(self) -> None:
        self._calls.pop()
        if self._closing:
            self._destroy_if_idle()

    def _destroy_if_idle(self) -> None:
        with self._lock:
            if not self._calls and self._handle is not None:
                handle, self._handle = self._handle, None
                _ffi.rl_destroy(handle)

    @property
    def _busy(self) -> int:
        """Calls inside the library now (for the tests)."""
        return len(self._calls)

    def close(self) -> None:
        """rl_destroy(). Idempotent. Waits for no one: a call running in another
        thread keeps the handle alive until it returns, then frees it."""
        if getattr(self, "_lock", None) is None:  # __init__ failed before making it
            return
        self._closing = True
        self._destroy_if_idle()

    @property
    def closed(self) -> bool:
        return self._closing or self._handle is None

    def __enter__(self) -> "Limiter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the module may be half gone
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<libratelimit.Limiter {state} {getattr(self, '_config', '')!r}>"

    # ---- deciding --------------------------------------------------------
    def _backend_error(self, status: int, what: str) -> RateLimitError:
        error = error_for(status, what)
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            more = f" ({self._suppressed} more since the last message)" if self._suppressed else ""
            logger.warning("libratelimit: %s; answered with on_error's decision%s", error, more)
            self._warned_at = now
            self._suppressed = 0
        else:
            self._suppressed += 1
        return error

    def check(self, key: Key, cost: int = 1) -> Decision:
        """rl_check(): may ``key`` spend ``cost`` units now?

        ``key``: str (UTF-8) or bytes (any bytes, NUL included). ``cost``: an
        int >= 0 (0 peeks: consumes nothing); bool and float are TypeError,
        a negative cost ValueError, one above 2**64 - 1 OverflowError.

        A backend error (Redis down or slow, an shm lock held too long) does
        not raise: the decision is the configured ``on_error`` one (allowed
        by default), with ``decision.error`` set to the BackendError; it is
        counted in ``stats()["errors"]`` and logged (at most every 10 s) on
        the ``libratelimit`` logger. A check on a concurrency limiter raises
        :class:`InvalidArgumentError`.
        """
        k = key if type(key) is bytes else _key_bytes(key)
        c = cost if type(cost) is int and 0 <= cost <= UINT64_MAX else _cost(cost)
        out = _ffi.rl_decision()
        handle = self._enter()
        try:
            status = _ffi.rl_check(handle, k, len(k), c, out)  # POINTER argtype: passed by reference
            if status != 0:
                return self._failed(status, out, "check")
        finally:
            self._leave()
        allowed, rate_index, limit, remaining, reset_ms, retry_after_ms, window_ms = _unpack(out)
        return _new_decision(
            Decision, (allowed == 1, rate_index, limit, remaining, reset_ms, retry_after_ms, window_ms, None)
        )

    def _failed(self, status: int, out: "_ffi.rl_decision", what: str) -> Decision:
        if status in (_ffi.RL_ERR_BACKEND, _ffi.RL_ERR_PANIC):
            return _decision(out, self._backend_error(status, what))
        raise error_for(status, what)

    def adjust(self, key: Key, delta: int) -> Decision:
        """rl_adjust(): charge (``delta > 0``, never denied: the key may go into
        debt) or refund (``delta < 0``) units after the fact. The decision
        describes the key afterwards. ``delta`` is an int in [-2**63, 2**63 - 1]
        (OverflowError outside). A backend error gives the on_error decision
        with ``error`` set, as in check()."""
        k = _key_bytes(key)
        d = _int_arg(delta, "delta")
        if not INT64_MIN <= d <= INT64_MAX:
            raise OverflowError(f"delta must be within [-2**63, 2**63 - 1], not {d}")
        out = _ffi.rl_decision()
        handle = self._enter()
        try:
            status = _ffi.rl_adjust(handle, k, len(k), d, byref(out))
            if status != 0:
                return self._failed(status, out, "adjust")
        finally:
            self._leave()
        return _decision(out)

    # ---- concurrency limiters ----------------------------------------------
    def acquire(self, key: Key) -> Lease:
        """rl_acquire() on a concurrency limiter (``concurrency=N lease=60s``):
        take one of ``key``'s N in-flight places for a lease length.

        Returns a :class:`Lease`; ``with lim.acquire(key) as d:`` releases it
        on exit. Check ``d.allowed``: a denied acquire holds nothing (its
        ``retry_after_ms`` says when the earliest lease expires). A backend
        error gives on_error's decision with no lease held (``id == 0``).
        """
        k = _key_bytes(key)
        out = _ffi.rl_decision()
        lease = c_uint64(0)
        handle = self._enter()
        try:
            status = _ffi.rl_acquire(handle, k, len(k), byref(lease), byref(out))
            if status != 0:
                return Lease(self, k, 0, self._failed(status, out, "acquire"))
        finally:
            self._leave()
        return Lease(self, k, lease.value, _decision(out))

    def _lease_call(self, fn: Any, key: Key, lease: int, what: str) -> bool:
        k = _key_bytes(key)
        lease_id = _int_arg(lease, "lease")
        if not 0 <= lease_id <= UINT64_MAX:
            raise OverflowError(f"lease must be within [0, 2**64 - 1], not {lease_id}")
        handle = self._enter()
        try:
            status = fn(handle, k, len(k), lease_id)
            if status < 0:
                raise error_for(status, what)
        finally:
            self._leave()
        return status == 1

    def renew(self, key: Key, lease: int) -> bool:
        """rl_renew(key, lease id): True if the lease was held (and now runs a
        whole lease length from now), False if it had expired or was released.
        Raises BackendError on a backend error."""
        return self._lease_call(_ffi.rl_renew, key, lease, "renew")

    def release(self, key: Key, lease: int) -> bool:
        """rl_release(key, lease id): True if the lease was held, False if not
        (expired, released already, or 0: harmless). Raises BackendError on a
        backend error (the lease then frees its place when it expires)."""
        return self._lease_call(_ffi.rl_release, key, lease, "release")

    # ---- housekeeping ----------------------------------------------------
    def sweep(self) -> int:
        """rl_sweep(): drop expired entries; returns how many."""
        handle = self._enter()
        try:
            n = _ffi.rl_sweep(handle)
            if n < 0:
                raise error_for(int(n), "sweep")
        finally:
            self._leave()
        return int(n)

    def reset(self, key: Key) -> None:
        """rl_reset(): forget ``key``; its next check starts fresh."""
        k = _key_bytes(key)
        handle = self._enter()
        try:
            status = _ffi.rl_reset(handle, k, len(k))
            if status != 0:
                raise error_for(status, "reset")
        finally:
            self._leave()

    def stats(self) -> Dict[str, int]:
        """rl_stats_get(): ``allowed``, ``limited``, ``errors``, ``keys``,
        ``evictions``, ``local_denials`` (with backend=shm region-wide,
        except ``errors``; see include/ratelimit.h)."""
        out = _ffi.rl_stats()
        handle = self._enter()
        try:
            status = _ffi.rl_stats_get(handle, byref(out))
            if status != 0:
                raise error_for(status, "stats")
        finally:
            self._leave()
        return {name: getattr(out, name) for name, _ in _ffi.rl_stats._fields_}

    def top(self, n: int = 10, which: Union[int, str] = TOP_LIMITED) -> List[TopEntry]:
        """rl_top(): the ``n`` heaviest keys, highest count first, as
        ``(key_bytes, count, error)`` tuples (:class:`TopEntry`). ``which``:
        ``TOP_LIMITED``/``"limited"`` (denied checks, the default) or
        ``TOP_ACTIVE``/``"active"`` (all checks; sampled with memory and shm).
        At most the configured ``top=`` keys come back."""
        rank = {"limited": TOP_LIMITED, "active": TOP_ACTIVE}.get(which, which) if isinstance(which, str) else which
        if rank not in (TOP_LIMITED, TOP_ACTIVE):
            raise ValueError(f"which must be TOP_LIMITED, TOP_ACTIVE, 'limited' or 'active', not {which!r}")
        cap = _int_arg(n, "n")
        if cap < 0:
            raise ValueError(f"n must be >= 0, not {cap}")
        cap = min(cap, 1024)  # `top=` is at most 1024
        entries = (_ffi.rl_top_entry * max(cap, 1))()
        handle = self._enter()
        try:
            got = _ffi.rl_top(handle, rank, entries, cap)
            if got < 0:
                raise error_for(int(got), "top")
        finally:
            self._leave()
        result = []
        for e in entries[: int(got)]:
            entry = TopEntry(bytes(e.key[: e.key_len]), e.count, e.error)
            entry.truncated = bool(e.truncated)
            result.append(entry)
        return result

    def metrics(self, labels: Union[None, str, Mapping[str, str]] = None, top_keys: bool = False) -> str:
        """rl_metrics(): the counters as Prometheus text (exposition 0.0.4).

        ``labels``: None, the library's ``name="value",...`` text, or a
        mapping of names to values (escaped here). ``top_keys=True`` adds the
        most denied keys (RL_METRICS_TOP_KEYS). Bad labels:
        :class:`InvalidArgumentError`."""
        if labels is None:
            text = b""
        elif isinstance(labels, str):
            text = labels.encode("utf-8")
        else:
            text = _labels_text(labels).encode("utf-8")
        if b"\0" in text:
            raise ValueError("labels must not contain NUL")
        flags = _ffi.RL_METRICS_TOP_KEYS if top_keys else 0
        size = 4096
        while True:
            buf = create_string_buffer(size)
            handle = self._enter()
            try:
                n = _ffi.rl_metrics(handle, text or None, flags, buf, size)
                if n < 0:
                    raise error_for(int(n), "metrics")
            finally:
                self._leave()
            if n < size:
                return buf.value.decode("utf-8")
            size = 2 * int(n) + 1

    def describe(self) -> str:
        """rl_describe(): the configuration in canonical form (passwords as ***)."""
        size = 512
        while True:
            buf = create_string_buffer(size)
            handle = self._enter()
            try:
                n = _ffi.rl_describe(handle, buf, size)
                if n < 0:
                    raise error_for(int(n), "describe")
            finally:
                self._leave()
            if n < size:
                return buf.value.decode("utf-8")
            size = int(n) + 1


def _labels_text(labels: Mapping[str, str]) -> str:
    parts = []
    for name, value in labels.items():
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{name}="{escaped}"')
    return ",".join(parts)


def version() -> str:
    """rl_version(): the library's version, e.g. "0.1.0"."""
    return _ffi.rl_version().decode("ascii")


def shm_unlink(name: str) -> None:
    """rl_shm_unlink(): remove the shared-memory region ``name`` (e.g. "/api").

    Open handles keep working on the old memory; the next Limiter with that
    name makes a new region. Raises :class:`SharedMemoryError` (an OSError)
    if there is no such region, :class:`InvalidArgumentError` for a name that
    is not a POSIX shm name."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    raw = name.encode("utf-8")
    if b"\0" in raw:
        raise ValueError("name must not contain NUL")
    status = _ffi.rl_shm_unlink(raw)
    if status != _ffi.RL_OK:
        raise error_for(status, "shm_unlink")
