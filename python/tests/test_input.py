"""Bad input: wrong types, bad costs, odd keys, a closed limiter, closing under load."""

import threading

import pytest

from libratelimit import ClosedError, Limiter


@pytest.fixture
def lim():
    with Limiter("rate=1000/minute") as lim:
        yield lim


@pytest.mark.parametrize("key", [None, 1, 1.5, ["k"], bytearray(b"k"), memoryview(b"k"), object()])
def test_keys_of_other_types_are_type_errors(lim, key):
    with pytest.raises(TypeError, match="key must be str or bytes"):
        lim.check(key)
    for call in (lim.reset, lim.acquire):
        with pytest.raises(TypeError):
            call(key)
    with pytest.raises(TypeError):
        lim.adjust(key, 1)
    assert lim.stats()["allowed"] == 0


def test_a_str_with_a_lone_surrogate_is_a_clear_error(lim):
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        lim.check("user-\udcff")
    with pytest.raises(ValueError):  # UnicodeEncodeError is a ValueError
        lim.reset("\ud800")


def test_bytes_keys_hold_any_byte_nul_and_invalid_utf8_included(lim):
    keys = [b"", b"\0", b"a\0b", b"a\0c", b"\xff\xfe", b"\xc3\x28", b"\x80" * 3]
    for k in keys:
        assert lim.check(k, cost=10).remaining == 990
    # distinct keys: a\0b and a\0c are not cut at the NUL
    for k in keys:
        assert lim.check(k, cost=0).remaining == 990
    assert lim.stats()["keys"] == len(keys)
    assert lim.check("", cost=0).remaining == 990  # "" is b""


def test_a_1_mib_key_works(lim):
    huge = b"k" * (1 << 20)
    assert lim.check(huge, cost=999).remaining == 1
    assert lim.check(huge, cost=2).allowed is False
    assert lim.check(huge[:-1] + b"j").remaining == 999
    assert lim.check("é" * (1 << 19)).allowed  # 1 MiB once encoded


@pytest.mark.parametrize("cost", [True, False, 1.0, "1", None, 2 + 0j])
def test_costs_that_are_not_ints_are_type_errors(lim, cost):
    with pytest.raises(TypeError, match="cost must be an int"):
        lim.check("k", cost)
    assert lim.stats()["allowed"] == 0


def test_negative_and_too_large_costs(lim):
    with pytest.raises(ValueError, match="cost must be >= 0"):
        lim.check("k", -1)
    with pytest.raises(OverflowError):
        lim.check("k", 2**64)
    d = lim.check("k", 2**64 - 1)
    assert not d.allowed and d.retry_after_ms == 2**64 - 1
    assert lim.stats()["allowed"] == 0

    class Index:  # numpy-style integers are ints
        def __index__(self):
            return 3

    assert lim.check("k", Index()).remaining == 997  # type: ignore[arg-type]


def test_a_closed_limiter_raises_and_close_is_idempotent():
    lim = Limiter("rate=10/s")
    lease = Limiter("concurrency=1")
    held = lease.acquire("k")
    lim.close()
    lim.close()
    assert lim.closed
    for call in (
        lambda: lim.check("k"),
        lambda: lim.adjust("k", 1),
        lambda: lim.reset("k"),
        lim.sweep,
        lim.stats,
        lim.top,
        lim.metrics,
        lim.describe,
        lambda: lim.acquire("k"),
        lambda: lim.release("k", 1),
        lambda: lim.renew("k", 1),
    ):
        with pytest.raises(ClosedError, match="closed"):
            call()
    assert isinstance(ClosedError("x"), ValueError)
    lease.close()
    with held:  # releasing into a closed limiter on exit: logged, not raised
        pass
    with pytest.raises(ClosedError):
        held.release()
    with Limiter("rate=1/s") as again:
        pass
    assert again.closed
    assert "closed" in repr(again)


def test_closing_while_other_threads_are_checking_never_crashes(shm):
    # Many threads check one limiter in a loop while the main thread closes
    # it: every call either completes on the live handle or raises
    # ClosedError; the handle is destroyed by the last call out. On shm,
    # rl_destroy unmaps the region: a call still inside would crash.
    closed_mid_loop = 0
    for _ in range(20):
        lim = Limiter(shm.config("rate=1000000/s capacity=1000"))
        outcomes = {"ok": 0, "closed": 0, "other": []}
        lock = threading.Lock()
        start = threading.Barrier(9)

        def hammer():
            start.wait()
            ok = closed = 0
            for i in range(3000):
                try:
                    lim.check(b"key-%d" % (i % 50))
                    lim.stats()
                    ok += 1
                except ClosedError:
                    closed += 1
                    break
                except Exception as e:  # noqa: BLE001
                    with lock:
                        outcomes["other"].append(e)
                    break
            with lock:
                outcomes["ok"] += ok
                outcomes["closed"] += closed

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        start.wait()
        lim.close()
        for t in threads:
            t.join(30)
        assert not outcomes["other"]
        assert lim.closed and lim._handle is None  # destroyed once the last call left
        closed_mid_loop += outcomes["closed"]
    # the close did land while threads were inside their loops
    assert closed_mid_loop > 0


def test_close_during_a_call_destroys_the_handle_only_when_the_call_returns():
    # A Redis that accepts connections and never answers keeps a check inside
    # the C library for timeout_ms: close() meanwhile must not free the handle
    # under it (rl_destroy's rule: no other thread may be using it).
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        lim = Limiter(f"rate=10/s backend=redis url=redis://127.0.0.1:{port} timeout_ms=600")
        result = {}

        def check():
            result["decision"] = lim.check("k")

        t = threading.Thread(target=check)
        t.start()
        deadline = time.monotonic() + 5
        while lim._busy == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lim._busy == 1  # the check is inside the library
        lim.close()
        assert lim.closed and lim._handle is not None  # still in use: not destroyed
        with pytest.raises(ClosedError):
            lim.check("k")
        t.join(10)
        d = result["decision"]
        assert d.allowed and d.error is not None  # on_error=allow after the timeout
        assert lim._handle is None  # destroyed by the call on its way out
    finally:
        silent.close()
