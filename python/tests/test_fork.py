"""A Limiter made before os.fork() works in the children (gunicorn --preload)."""

import os
import threading

from conftest import Backend

from libratelimit import Limiter


def _in_children(n, body):
    """Runs body() in n forked children; returns their exit codes (0: ok)."""
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = body()
            finally:
                os._exit(code)
        pids.append(pid)
    codes = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return codes


def test_shm_limiter_made_before_fork_is_shared_exactly_by_the_children(shm):
    with Limiter(shm.config("rate=100/hour")) as lim:
        assert lim.check("k", cost=10).allowed

        def child():
            allowed = sum(lim.check("k").allowed for _ in range(40))
            return 10 + allowed  # the exit code says how many passed

        codes = _in_children(4, child)
        assert sum(c - 10 for c in codes) == 90 and all(c >= 10 for c in codes)
        assert not lim.check("k").allowed
        assert lim.stats()["allowed"] == 91


def test_redis_limiter_used_before_fork_works_in_the_children():
    with Limiter(Backend("redis").config("rate=50/hour")) as lim:
        assert lim.check("k", cost=5).allowed  # connected before the fork

        def child():
            return 10 + sum(lim.check("k").allowed for _ in range(20))

        codes = _in_children(3, child)
        assert sum(c - 10 for c in codes) == 45
        assert not lim.check("k").allowed


def test_memory_limiter_is_copied_into_each_child():
    with Limiter("rate=10/hour") as lim:
        lim.check("k", cost=4)
        codes = _in_children(2, lambda: 10 + sum(lim.check("k").allowed for _ in range(10)))
        assert codes == [16, 16]  # each child has its own copy of the 6 left
        assert lim.check("k", cost=0).remaining == 6


def test_a_fork_while_another_thread_holds_the_handle_lock_leaves_the_child_usable(shm):
    with Limiter(shm.config("rate=1000000/hour")) as lim:
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                lim.check("t")

        t = threading.Thread(target=spin)
        t.start()
        try:
            codes = _in_children(5, lambda: 0 if all(lim.check("c").allowed for _ in range(100)) else 1)
        finally:
            stop.set()
            t.join(30)
        assert codes == [0] * 5


def test_a_child_can_close_its_copy_without_closing_the_parents(shm):
    with Limiter(shm.config("rate=10/hour")) as lim:
        def child():
            lim.check("k")
            lim.close()
            return 0 if lim.closed else 1

        assert _in_children(1, child) == [0]
        assert lim.check("k").remaining == 8
