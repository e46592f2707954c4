"""RateLimitMiddleware (plain ASGI and under FastAPI's TestClient) and the
FastAPI dependency `limit`."""

import asyncio
import json
import subprocess
import sys

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from libratelimit import Decision, Limiter
from libratelimit.asgi import RateLimitMiddleware, default_key
from libratelimit.fastapi import limit


def make_app(lim, **kw):
    app = FastAPI()

    @app.get("/")
    def root():
        return {"ok": True}

    @app.get("/metrics")
    def metrics():
        return {"m": 1}

    app.add_middleware(RateLimitMiddleware, limiter=lim, **kw)
    return app


def test_middleware_denies_over_the_quota_with_headers_and_json(backend):
    with Limiter(backend.config("rate=3/minute")) as lim:
        client = TestClient(make_app(lim))
        answers = [client.get("/", headers={"X-API-Key": "alice"}) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        ok = answers[0]
        assert ok.json() == {"ok": True}
        assert ok.headers["x-ratelimit-limit"] == "3" and ok.headers["x-ratelimit-remaining"] == "2"
        assert "retry-after" not in ok.headers
        denied = answers[3]
        body = denied.json()
        assert set(body) == {"error", "retry_after_ms"} and body["error"] == "rate_limited"
        assert 0 < body["retry_after_ms"] <= 20_000
        assert denied.headers["content-type"] == "application/json"
        assert denied.headers["retry-after"] == str(-(-body["retry_after_ms"] // 1000))
        assert denied.headers["x-ratelimit-remaining"] == "0"
        # another API key has its own quota; no key: the client's IP
        assert client.get("/", headers={"X-API-Key": "bob"}).status_code == 200
        assert client.get("/").status_code == 200
        assert lim.check("testclient", cost=0).remaining == 2  # TestClient's client host


def test_exempt_paths_key_and_cost_callables():
    with Limiter("rate=10/minute") as lim:
        client = TestClient(
            make_app(
                lim,
                key=lambda scope: dict(scope["headers"]).get(b"x-user"),
                cost=lambda scope: 4 if scope["method"] == "GET" else 1,
                exempt=("/metrics",),
            )
        )
        for _ in range(5):
            r = client.get("/metrics", headers={"X-User": "u"})
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers
        assert client.get("/", headers={"X-User": "u"}).headers["x-ratelimit-remaining"] == "6"
        assert client.get("/", headers={"X-User": "u"}).status_code == 200
        assert client.get("/", headers={"X-User": "u"}).status_code == 429
        # a key function returning None lets the request through unlimited
        for _ in range(5):
            r = client.get("/")
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers


def test_a_bad_cost_from_the_callable_is_an_error_not_a_free_pass():
    with Limiter("rate=10/minute") as lim:
        client = TestClient(make_app(lim, cost=lambda scope: -1), raise_server_exceptions=False)
        assert client.get("/").status_code == 500
        assert lim.stats()["allowed"] == 0


def test_backend_error_follows_on_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"redis://127.0.0.1:{port}"
    with Limiter(f"rate=1/minute backend=redis url={url} timeout_ms=50 on_error=allow") as allow:
        client = TestClient(make_app(allow))
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]
    with Limiter(f"rate=100/minute backend=redis url={url} timeout_ms=50 on_error=deny") as deny:
        r = TestClient(make_app(deny)).get("/")
        assert r.status_code == 429 and r.json() == {"error": "rate_limited", "retry_after_ms": 1000}


def test_the_middleware_is_plain_asgi_without_starlette():
    # Run in a fresh interpreter with starlette and fastapi made unimportable.
    code = r"""
import asyncio, sys, json
sys.modules["starlette"] = None
sys.modules["fastapi"] = None
from libratelimit import Limiter
from libratelimit.asgi import RateLimitMiddleware

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"hi"})

async def call(mw, path="/", headers=()):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(m):
        sent.append(m)
    scope = {"type": "http", "path": path, "method": "GET", "headers": list(headers), "client": ("10.0.0.7", 5)}
    await mw(scope, receive, send)
    return sent

async def main():
    lim = Limiter("rate=1/minute")
    mw = RateLimitMiddleware(app, limiter=lim, exempt=("/health",))
    first = await call(mw)
    second = await call(mw)
    other = await call(mw, headers=[(b"x-api-key", b"k")])
    health = await call(mw, path="/health")
    lifespan_seen = []
    async def inner(scope, receive, send):
        lifespan_seen.append(scope["type"])
    await RateLimitMiddleware(inner, limiter=lim)({"type": "lifespan"}, None, None)
    print(json.dumps({
        "first": [first[0]["status"], sorted(h[0].decode() for h in first[0]["headers"])],
        "second": [second[0]["status"], second[1]["body"].decode()],
        "other": other[0]["status"], "health": health[0]["status"],
        "health_headers": len(health[0]["headers"]), "lifespan": lifespan_seen,
        "modules": sorted(m for m in sys.modules if m.startswith(("starlette", "fastapi")) and sys.modules[m]),
    }))
asyncio.run(main())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["first"] == [200, ["x-app", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]]
    assert out["second"][0] == 429 and json.loads(out["second"][1])["error"] == "rate_limited"
    assert out["other"] == 200 and out["health"] == 200 and out["health_headers"] == 1
    assert out["lifespan"] == ["lifespan"] and out["modules"] == []


def test_default_key():
    assert default_key({"headers": [(b"x-api-key", b"\xffk")], "client": ("1.2.3.4", 1)}) == b"\xffk"
    assert default_key({"headers": [(b"x-other", b"k")], "client": ("1.2.3.4", 1)}) == "1.2.3.4"
    assert default_key({"headers": []}) == ""


def test_redis_checks_run_off_the_event_loop(backend):
    # backend=redis offloads to a thread by default; memory and shm don't.
    with Limiter(backend.config("rate=5/minute")) as lim:
        mw = RateLimitMiddleware(None, limiter=lim)  # type: ignore[arg-type]
        assert mw.offload is (backend.name == "redis")
        assert RateLimitMiddleware(None, limiter=lim, offload=True).offload is True  # type: ignore[arg-type]
        client = TestClient(make_app(lim, offload=True))
        assert [client.get("/").status_code for _ in range(6)] == [200] * 5 + [429]


def test_fastapi_dependency_per_route(backend):
    with Limiter(backend.config("rate=2/minute")) as logins, Limiter(backend.config("rate=100/minute")) as tokens:
        app = FastAPI()

        @app.post("/login", dependencies=[Depends(limit(logins))])
        def login():
            return {"ok": True}

        @app.post("/generate")
        def generate(request: Request, d: Decision = Depends(limit(tokens, key=lambda r: r.headers["x-user"],
                                                                   cost=lambda r: int(r.headers["x-cost"])))):
            return {"remaining": d.remaining}

        @app.get("/free")
        def free():
            return {}

        client = TestClient(app)
        r = [client.post("/login", headers={"X-API-Key": "a"}) for _ in range(3)]
        assert [x.status_code for x in r] == [200, 200, 429]
        assert r[0].headers["x-ratelimit-remaining"] == "1"
        assert r[2].json() == {"detail": {"error": "rate_limited", "retry_after_ms": r[2].json()["detail"]["retry_after_ms"]}}
        assert 0 < r[2].json()["detail"]["retry_after_ms"] <= 30_000 and "retry-after" in r[2].headers
        g = client.post("/generate", headers={"X-User": "u", "X-Cost": "60"})
        assert g.json() == {"remaining": 40} and g.headers["x-ratelimit-remaining"] == "40"
        assert client.post("/generate", headers={"X-User": "u", "X-Cost": "60"}).status_code == 429
        assert "x-ratelimit-limit" not in client.get("/free").headers
