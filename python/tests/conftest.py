"""Fixtures of the Python package's tests (run by `make test-python`).

`backend` runs a test on memory, shm (a region of its own, removed after)
and redis (RL_TEST_REDIS_URL from scripts/with_redis.sh, a prefix of its
own). Without RL_TEST_REDIS_URL the redis cases are skipped, unless
RL_TEST_REQUIRE_REDIS=1 (as `make test-python` sets), where they fail.
"""

import itertools
import os
import uuid

import pytest

import libratelimit

_counter = itertools.count()

BACKENDS = ("memory", "shm", "redis")


def shm_name() -> str:
    return f"/rl-py-{os.getpid()}-{next(_counter)}"


def redis_url() -> str:
    url = os.environ.get("RL_TEST_REDIS_URL")
    if not url:
        if os.environ.get("RL_TEST_REQUIRE_REDIS") == "1":
            pytest.fail("RL_TEST_REDIS_URL is not set (run under scripts/with_redis.sh)")
        pytest.skip("no Redis (RL_TEST_REDIS_URL unset)")
    return url


class Backend:
    """Makes configurations for one backend; removes the shm regions it named."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.regions = []

    def config(self, spec: str) -> str:
        if self.name == "memory":
            return spec
        if self.name == "shm":
            region = shm_name()
            self.regions.append(region)
            return f"{spec} backend=shm name={region}"
        return f"{spec} backend=redis url={redis_url()} prefix=rl-py-{uuid.uuid4().hex}: timeout_ms=1000"

    def cleanup(self) -> None:
        for region in self.regions:
            try:
                libratelimit.shm_unlink(region)
            except libratelimit.SharedMemoryError:
                pass


@pytest.fixture(params=BACKENDS)
def backend(request):
    b = Backend(request.param)
    yield b
    b.cleanup()


@pytest.fixture
def shm():
    b = Backend("shm")
    yield b
    b.cleanup()
