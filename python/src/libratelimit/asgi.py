"""RateLimitMiddleware: a plain ASGI middleware (FastAPI, Starlette, any ASGI app).

It imports nothing beyond the standard library::

    from libratelimit import Limiter
    from libratelimit.asgi import RateLimitMiddleware

    lim = Limiter("rate=100/minute backend=shm name=/api")
    app.add_middleware(RateLimitMiddleware, limiter=lim,
                       key=lambda scope: ...,   # default: X-API-Key header, else client IP
                       cost=None,               # or a callable(scope) -> int
                       exempt=("/metrics",))

Each HTTP request is checked once before the app sees it. Denied: status 429,
the library's headers (rl_format_headers(d, 0): ``X-RateLimit-*`` and
``Retry-After``) and the JSON body ``{"error":"rate_limited","retry_after_ms":N}``;
the app is not called. Allowed: the app's response carries the same
``X-RateLimit-*`` headers, except those it sets itself (e.g. from a
per-route :func:`libratelimit.fastapi.limit`, which then win). Other scopes
(websocket, lifespan) pass through.
"""

import asyncio
import json
from typing import Any, Awaitable, Callable, Collection, List, MutableMapping, Optional, Tuple, Union

from ._limiter import Decision, Limiter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
KeyFunc = Callable[[Scope], Union[str, bytes, None]]
CostFunc = Callable[[Scope], int]

__all__ = ["RateLimitMiddleware", "default_key", "rate_limited_body"]


def default_key(scope: Scope) -> Union[str, bytes]:
    """The ``X-API-Key`` request header's value (bytes) when the request has
    one, else the client's IP address (str; "" when the server gives none).
    The two share one key space, as the C example servers' do."""
    for name, value in scope.get("headers") or ():
        if name == b"x-api-key":
            return bytes(value)
    client = scope.get("client")
    return client[0] if client else ""


def rate_limited_body(decision: Decision) -> bytes:
    """``{"error":"rate_limited","retry_after_ms":N}``, the body of a 429."""
    return json.dumps(
        {"error": "rate_limited", "retry_after_ms": decision.retry_after_ms}, separators=(",", ":")
    ).encode("ascii")


def asgi_headers(decision: Decision) -> List[Tuple[bytes, bytes]]:
    """The decision's headers as ASGI wants them: lower-case names, bytes."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in decision.headers().items()]


def _is_redis(limiter: Limiter) -> bool:
    return " backend=redis" in " " + limiter.describe()


class RateLimitMiddleware:
    """Limits every HTTP request of ``app`` with ``limiter``.

    - ``key(scope)`` names the key to charge: str or bytes, or None to let the
      request through unlimited. Default :func:`default_key`.
    - ``cost(scope)`` the units it costs (an int >= 0); default 1.
    - ``exempt``: paths (``scope["path"]``, exact match) never limited, e.g.
      ``("/metrics", "/health")``.
    - ``offload``: run the check in the event loop's default thread pool
      rather than in the loop. None (the default) offloads for
      ``backend=redis``, whose check waits on the network (up to
      ``timeout_ms``), and not for memory and shm, which answer in
      nanoseconds.

    A backend error lets the request through or not as the limiter's
    ``on_error`` says (see :meth:`Limiter.check`); errors of ``key`` or
    ``cost`` (a negative cost, a key of another type) propagate to the server
    as any exception of the app would.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        key: Optional[KeyFunc] = None,
        cost: Optional[CostFunc] = None,
        exempt: Collection[str] = (),
        offload: Optional[bool] = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.key = key or default_key
        self.cost = cost
        self.exempt = frozenset(exempt)
        self.offload = _is_redis(limiter) if offload is None else offload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        key = self.key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        cost = 1 if self.cost is None else self.cost(scope)
        if self.offload:
            loop = asyncio.get_running_loop()
            decision = await loop.run_in_executor(None, self.limiter.check, key, cost)
        else:
            decision = self.limiter.check(key, cost)
        headers = asgi_headers(decision)
        if not decision.allowed:
            body = rate_limited_body(decision)
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode("ascii")),
                    ]
                    + headers,
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                own = list(message.get("headers") or ())
                # The app's own rate-limit headers (a per-route limit's) win.
                names = {name.lower() for name, _ in own}
                message["headers"] = own + [h for h in headers if h[0] not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)
