"""The FastAPI apps bench.py serves with `uvicorn apps:<name> --workers 4`:
the same route, limited by libratelimit's middleware (shm), by slowapi
(Redis: its answer to several workers), or not at all. Each allows every
request (10^9 per hour), so the bench measures the cost of a check, not
429s. BENCH_SHM_NAME and BENCH_REDIS_URL come from bench.py."""

import os

from fastapi import FastAPI


def _route(app: FastAPI) -> None:
    @app.get("/")
    async def root():
        return {"ok": True}


def _ours() -> FastAPI:
    from libratelimit import Limiter
    from libratelimit.asgi import RateLimitMiddleware

    app = FastAPI()
    _route(app)
    lim = Limiter(f"rate=1000000000/hour capacity=400000 backend=shm name={os.environ['BENCH_SHM_NAME']}")
    app.add_middleware(RateLimitMiddleware, limiter=lim)
    return app


def _slowapi() -> FastAPI:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIMiddleware
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, default_limits=["1000000000/hour"],
                      storage_uri=os.environ["BENCH_REDIS_URL"], headers_enabled=False)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIMiddleware)
    _route(app)
    return app


def _none() -> FastAPI:
    app = FastAPI()
    _route(app)
    return app


_which = os.environ.get("BENCH_APP")
libratelimit_shm = _ours() if _which == "libratelimit_shm" else None
slowapi_redis = _slowapi() if _which == "slowapi_redis" else None
unlimited = _none() if _which == "unlimited" else None
