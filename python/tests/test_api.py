"""Every function of the C API through the Python API, on memory, shm and redis."""

import os
import threading
import time

import pytest

import libratelimit
from conftest import redis_url
from libratelimit import (
    TOP_ACTIVE,
    BackendError,
    ConfigError,
    Decision,
    IncompatibleError,
    InvalidArgumentError,
    Lease,
    Limiter,
    SharedMemoryError,
    TopEntry,
)

UINT64_MAX = 2**64 - 1


def test_check_spends_the_quota_exactly_then_denies(backend):
    with Limiter(backend.config("rate=5/minute")) as lim:
        decisions = [lim.check("user-1") for _ in range(7)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
        assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
        d = decisions[-1]
        assert isinstance(d, Decision) and not d and d.error is None
        assert d.limit == 5 and d.window_ms == 60_000 and d.rate_index == 0
        assert 0 < d.retry_after_ms <= 12_000 and d.reset_ms > 0
        # another key is untouched; str and its UTF-8 bytes are one key
        assert lim.check(b"user-2").remaining == 4
        assert lim.check("ключ").remaining == 4
        assert lim.check("ключ".encode()).remaining == 3


def test_cost_is_all_or_nothing_over_every_rate(backend):
    with Limiter(backend.config("rate=10/minute,15/hour algorithm=fixed_window")) as lim:
        assert lim.check("k", cost=8).allowed
        d = lim.check("k", cost=3)
        assert not d.allowed and d.rate_index == 0 and d.remaining == 2
        assert lim.check("k", cost=2).allowed
        peek = lim.check("k", cost=0)
        assert peek.allowed and peek.remaining == 0
        never = lim.check("other", cost=11)
        assert not never.allowed and never.retry_after_ms == UINT64_MAX


def test_headers_are_rl_format_headers(backend):
    with Limiter(backend.config("rate=2/minute")) as lim:
        lim.check("h")
        allowed = lim.check("h")
        assert allowed.headers() == {"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "60"}
        denied = lim.check("h")
        h = denied.headers()
        assert h["X-RateLimit-Remaining"] == "0" and int(h["Retry-After"]) == 30
        ietf = denied.headers(libratelimit.HEADERS_IETF)
        assert ietf["RateLimit-Policy"] == '"default";q=2;w=60' and "Retry-After" not in ietf


def test_adjust_charges_into_debt_and_refunds(backend):
    with Limiter(backend.config("rate=10/minute")) as lim:
        assert lim.check("a", cost=5).remaining == 5
        d = lim.adjust("a", 20)
        assert not d.allowed and d.remaining == 0 and d.retry_after_ms > 0
        assert not lim.check("a").allowed
        d = lim.adjust("a", -40)
        assert d.allowed and d.remaining == 10
        assert lim.adjust("a", 0).remaining == 10
        assert lim.adjust("a", -(2**63)).remaining == 10  # saturates in the library
        with pytest.raises(OverflowError):
            lim.adjust("a", 2**63)
        with pytest.raises(TypeError):
            lim.adjust("a", 1.5)


def test_reset_forgets_a_key(backend):
    with Limiter(backend.config("rate=1/hour")) as lim:
        assert lim.check("r").allowed and not lim.check("r").allowed
        lim.reset("r")
        assert lim.check("r").allowed
        lim.reset("never-seen")


def test_acquire_renew_release_and_the_with_block(backend):
    with Limiter(backend.config("concurrency=2 lease=30s")) as lim:
        with lim.acquire("c") as first:
            assert isinstance(first, Lease) and first.allowed and first.id != 0
            assert first.limit == 2 and first.remaining == 1 and first.window_ms == 30_000
            second = lim.acquire("c")
            assert second.allowed and second.remaining == 0
            third = lim.acquire("c")
            assert not third and third.id == 0 and 0 < third.retry_after_ms <= 30_001
            assert "Retry-After" in third.headers()
            with third:  # a denied lease holds nothing: exiting calls nothing
                pass
            assert first.renew() is True
            assert lim.renew("c", second.id) is True
            assert second.release() is True
            assert second.release() is False  # released already: harmless
        # the with block released `first`: both places are free again
        assert lim.release("c", first.id) is False
        assert lim.renew("c", first.id) is False
        a, b = lim.acquire("c"), lim.acquire("c")
        assert a.allowed and b.allowed
        assert lim.release("c", 0) is False
        with pytest.raises(InvalidArgumentError, match="rl_acquire"):
            lim.check("c")
        with pytest.raises(InvalidArgumentError):
            lim.adjust("c", 1)


def test_a_with_block_that_raises_still_releases(backend):
    with Limiter(backend.config("concurrency=1 lease=30s")) as lim:
        with pytest.raises(RuntimeError):
            with lim.acquire("x") as d:
                assert d.allowed
                raise RuntimeError("the request failed")
        assert lim.acquire("x").allowed


def test_acquire_on_a_rate_limiter_is_an_invalid_argument(backend):
    with Limiter(backend.config("rate=1/s")) as lim:
        with pytest.raises(InvalidArgumentError, match="rl_check"):
            lim.acquire("k")
        with pytest.raises(InvalidArgumentError):
            lim.release("k", 1)
        with pytest.raises(InvalidArgumentError):
            lim.renew("k", 1)


def test_stats_top_metrics_describe(backend):
    with Limiter(backend.config("rate=2/hour top=8")) as lim:
        for _ in range(5):
            lim.check("abuser")
        lim.check("fine")
        long_key = b"L" * 100
        for _ in range(3):
            lim.check(long_key)
        s = lim.stats()
        assert set(s) == {"allowed", "limited", "errors", "keys", "evictions", "local_denials"}
        assert s["allowed"] == 5 and s["limited"] == 4 and s["errors"] == 0
        if backend.name != "redis":
            assert s["keys"] == 3
        top = lim.top(n=10)
        assert top[0] == (b"abuser", 3, 0) and isinstance(top[0], TopEntry) and not top[0].truncated
        assert [(e.key, e.count, e.truncated) for e in top[1:]] == [(b"L" * 64, 1, True)]
        assert lim.top(n=1) == top[:1] and lim.top(n=0) == []
        active = lim.top(n=10, which=TOP_ACTIVE)
        assert lim.top(which="active") == active
        if backend.name == "redis":  # memory and shm sample 1 in 64
            assert {e.key for e in active} == {b"abuser", b"fine", b"L" * 64}
        with pytest.raises(ValueError):
            lim.top(which="busiest")
        text = lim.metrics(labels='app="chat"', top_keys=True)
        assert 'ratelimit_checks_total{app="chat",decision="allowed"} 5' in text
        assert 'ratelimit_top_limited{app="chat",key="abuser"} 3' in text
        assert "ratelimit_top_limited" not in lim.metrics()
        assert 'zone="a\\"b"' in lim.metrics(labels={"zone": 'a"b'})
        with pytest.raises(InvalidArgumentError, match="label"):
            lim.metrics(labels="bad label")
        desc = lim.describe()
        assert desc.startswith("rate=2/h ") and f"backend={backend.name}" in desc
        with Limiter(desc) as again:  # the canonical form recreates it
            assert again.describe() == desc


def test_sweep_drops_expired_entries(backend):
    with Limiter(backend.config("rate=10/100ms")) as lim:
        for i in range(5):
            lim.check(f"s{i}")
        time.sleep(0.25)
        n = lim.sweep()
        assert n == (5 if backend.name != "redis" else 0)


def test_dry_run_reports_would_be_denials_as_allowed(backend):
    with Limiter(backend.config("rate=1/minute dry_run=on")) as lim:
        assert lim.check("d").allowed
        d = lim.check("d")
        assert d.allowed and d.retry_after_ms > 0
        assert "Retry-After" not in d.headers()
        assert lim.stats()["limited"] == 1


def test_config_errors_carry_the_librarys_message():
    with pytest.raises(ConfigError, match='unknown key "burts"') as e:
        Limiter("rate=10/s burts=5")
    assert isinstance(e.value, ValueError) and e.value.status == -2
    with pytest.raises(ConfigError):
        Limiter("")
    with pytest.raises(ConfigError, match="NUL"):
        Limiter("rate=10/s\0 backend=shm")
    with pytest.raises(TypeError):
        Limiter(b"rate=10/s")  # type: ignore[arg-type]


def test_shm_regions_shared_incompatible_attached_and_unlinked(shm):
    config = shm.config("rate=3/hour")
    name = shm.regions[-1]
    with Limiter(config) as a, Limiter(config) as b:
        assert a.check("k").allowed and b.check("k").allowed and a.check("k").allowed
        assert not b.check("k").allowed
        with pytest.raises(IncompatibleError) as e:
            Limiter(f"rate=4/hour backend=shm name={name}")
        assert e.value.status == -5
        with Limiter(f"backend=shm name={name}") as attached:
            assert attached.describe().startswith("rate=3/h ")
            assert not attached.check("k").allowed
    libratelimit.shm_unlink(name)
    with pytest.raises(SharedMemoryError, match="No such file") as e:
        libratelimit.shm_unlink(name)
    assert isinstance(e.value, OSError) and e.value.status == -3
    with pytest.raises(SharedMemoryError, match=name):
        Limiter(f"backend=shm name={name}")
    with pytest.raises(InvalidArgumentError):
        libratelimit.shm_unlink("no-slash")


def test_shm_region_is_shared_with_another_process(shm):
    import subprocess
    import sys

    config = shm.config("rate=4/hour")
    with Limiter(config) as lim:
        assert lim.check("p", cost=3).allowed
        code = f"import libratelimit as L; l = L.Limiter({config!r}); print(l.check('p').remaining, l.check('p').allowed)"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert r.stdout.split() == ["0", "False"], r.stderr
        assert not lim.check("p").allowed


# ---- backend errors: the on_error decision, not an exception ---------------


def _dead_redis_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"redis://127.0.0.1:{port}"


def test_backend_error_with_on_error_allow_serves_and_reports(caplog):
    with Limiter(f"rate=1/minute backend=redis url={_dead_redis_url()} timeout_ms=50 on_error=allow") as lim:
        with caplog.at_level("WARNING", logger="libratelimit"):
            d = lim.check("k")
            d2 = lim.check("k")
        assert d.allowed and d2.allowed and d.retry_after_ms == 0
        assert isinstance(d.error, BackendError) and d.error.status == -4 and str(d.error)
        assert lim.stats()["errors"] == 2
        # logged once, not once per check
        assert len([r for r in caplog.records if r.name == "libratelimit"]) == 1
        a = lim.adjust("k", 5)
        assert a.allowed and isinstance(a.error, BackendError)


def test_backend_error_with_on_error_deny_denies():
    with Limiter(f"rate=100/minute backend=redis url={_dead_redis_url()} timeout_ms=50 on_error=deny") as lim:
        d = lim.check("k")
        assert not d.allowed and d.retry_after_ms == 1000 and isinstance(d.error, BackendError)
        assert d.headers()["Retry-After"] == "1"


def test_backend_error_in_acquire_holds_no_lease_and_release_raises():
    with Limiter(f"concurrency=1 backend=redis url={_dead_redis_url()} timeout_ms=50") as lim:
        with lim.acquire("k") as d:
            assert d.allowed and d.id == 0 and isinstance(d.error, BackendError)
        with pytest.raises(BackendError):
            lim.release("k", 12345)
        with pytest.raises(BackendError):
            lim.renew("k", 12345)


def test_redis_password_is_not_echoed():
    redis_url()  # skips (or fails under RL_TEST_REQUIRE_REDIS=1) without Redis
    url = os.environ["RL_TEST_REDIS_AUTH_URL"]
    password = os.environ["RL_TEST_REDIS_AUTH_PASSWORD"]
    with Limiter(f"rate=2/minute backend=redis url={url}") as lim:
        assert lim.check("k").allowed and lim.check("k").allowed and not lim.check("k").allowed
        assert password not in lim.describe() and "***" in lim.describe()
    with Limiter(f"rate=2/minute backend=redis url={url.replace(password, 'wrong')} timeout_ms=200") as bad:
        d = bad.check("k")
        assert isinstance(d.error, BackendError) and password not in str(d.error)


def test_threads_share_one_limiter_exactly(backend):
    with Limiter(backend.config("rate=500/hour")) as lim:
        results = []
        lock = threading.Lock()

        def work():
            mine = [lim.check("shared").allowed for _ in range(100)]
            with lock:
                results.extend(mine)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 800 and sum(results) == 500
