"""Real servers with 4 worker processes sharing one backend=shm limiter:
exactly the quota of 200s under 40+ parallel requests, answered by several
workers. uvicorn --workers 4; gunicorn -k uvicorn.workers.UvicornWorker -w 4,
without and with --preload (the limiter made in the master before fork).
Loopback ports, bounded waits, every process group killed at the end."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import shm_name

import libratelimit

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
QUOTA = 25
REQUESTS = 60
PARALLEL = 40
WORKERS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, headers=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class Server:
    def __init__(self, argv, config):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="rl-py-server-", suffix=".log")
        env = dict(os.environ, RL_TEST_APP_CONFIG=config, PYTHONUNBUFFERED="1")
        # A session of its own: the server and its workers are one process group.
        self.proc = subprocess.Popen(argv, cwd=APPS, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def wait_ready(self, port, workers, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            if self.output().count("Application startup complete") >= workers:
                try:
                    if get(port, "/health", timeout=2)[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        pytest.fail(f"the server was not ready within {timeout} s:\n{self.output()}")

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self.log.close()


def burst(port, n, parallel, key):
    """n requests with one API key from `parallel` threads at once; returns
    the (status, worker pid) of each."""
    results = []
    lock = threading.Lock()
    start = threading.Barrier(parallel)
    todo = list(range(n))

    def client():
        start.wait(30)
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            status, headers, body = get(port, "/", {"X-API-Key": key})
            if status == 429:
                assert json.loads(body)["error"] == "rate_limited" and "retry-after" in headers
            with lock:
                results.append((status, headers.get("x-worker-pid")))

    threads = [threading.Thread(target=client) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


SERVERS = {
    "uvicorn": lambda port: [sys.executable, "-m", "uvicorn", "app:app", "--workers", str(WORKERS),
                             "--host", "127.0.0.1", "--port", str(port)],
    "gunicorn": lambda port: [sys.executable, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker",
                              "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "app:app"],
    "gunicorn --preload": lambda port: [sys.executable, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker",
                                        "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "--preload", "app:app"],
}


@pytest.mark.parametrize("server", list(SERVERS))
def test_four_workers_share_the_quota_exactly(server):
    region = shm_name()
    port = free_port()
    srv = Server(SERVERS[server](port), f"rate={QUOTA}/hour backend=shm name={region}")
    try:
        srv.wait_ready(port, WORKERS)
        health = json.loads(get(port, "/health")[2])
        if server.endswith("--preload"):
            assert health["limiter_made_in"] != health["pid"]  # made in the master, before fork
        else:
            assert health["limiter_made_in"] == health["pid"]
        results = burst(port, REQUESTS, PARALLEL, "the-key")
        statuses = [s for s, _ in results]
        assert len(results) == REQUESTS
        assert statuses.count(200) == QUOTA and statuses.count(429) == REQUESTS - QUOTA
        pids = {p for _, p in results}
        assert len(pids) >= 2, f"one worker answered everything: {pids}"
        # another key still has its whole quota
        status, headers, _ = get(port, "/", {"X-API-Key": "other"})
        assert status == 200 and headers["x-ratelimit-remaining"] == str(QUOTA - 1)
        with libratelimit.Limiter(f"backend=shm name={region}") as region_view:
            s = region_view.stats()
            assert s["allowed"] == QUOTA + 1 and s["limited"] == REQUESTS - QUOTA
    finally:
        srv.stop()
        try:
            libratelimit.shm_unlink(region)
        except libratelimit.SharedMemoryError:
            pass
