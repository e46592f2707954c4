"""A per-route limit for FastAPI, as a dependency::

    from fastapi import Depends, FastAPI
    from libratelimit import Limiter
    from libratelimit.fastapi import limit

    logins = Limiter("rate=5/minute backend=shm name=/logins")
    app = FastAPI()

    @app.post("/login", dependencies=[Depends(limit(logins))])
    async def login(): ...

Denied: ``HTTPException(429)`` with the library's headers and the detail
``{"error":"rate_limited","retry_after_ms":N}`` (FastAPI answers
``{"detail":{...}}``). Allowed: the response carries the ``X-RateLimit-*``
headers (when the route returns data for FastAPI to serialise; a Response
object returned by the route is sent as it is). Requires FastAPI.
"""

import asyncio
from typing import Awaitable, Callable, Optional, Union

from fastapi import HTTPException, Request, Response

from ._limiter import Decision, Limiter
from .asgi import _is_redis, default_key

__all__ = ["limit"]

RequestKey = Callable[[Request], Union[str, bytes, None]]
RequestCost = Callable[[Request], int]


def limit(
    limiter: Limiter,
    key: Optional[RequestKey] = None,
    cost: Union[int, RequestCost] = 1,
    offload: Optional[bool] = None,
) -> Callable[[Request, Response], Awaitable[Optional[Decision]]]:
    """A dependency that checks ``limiter`` for each request of the route.

    ``key(request)``: str or bytes (None: not limited); default the
    ``X-API-Key`` header, else the client IP. ``cost``: an int, or a
    callable(request) -> int. ``offload``: run the check in a thread (default:
    for backend=redis only). The dependency's value is the Decision (None
    when not limited), for a route that wants it
    (``d: Decision = Depends(limit(...))``).
    """
    run_in_thread = _is_redis(limiter) if offload is None else offload

    async def rate_limit(request: Request, response: Response) -> Optional[Decision]:
        k = key(request) if key is not None else default_key(request.scope)
        if k is None:
            return None
        c = cost(request) if callable(cost) else cost
        if run_in_thread:
            d = await asyncio.get_running_loop().run_in_executor(None, limiter.check, k, c)
        else:
            d = limiter.check(k, c)
        headers = d.headers()
        if not d.allowed:
            raise HTTPException(
                status_code=429,
                detail={"error": "rate_limited", "retry_after_ms": d.retry_after_ms},
                headers=headers,
            )
        response.headers.update(headers)
        return d

    return rate_limit
