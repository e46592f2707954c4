"""The app the server tests run: `uvicorn app:app --workers 4`, gunicorn with
uvicorn workers, with and without --preload.

The limiter is made when this module is imported: in each worker, or with
gunicorn --preload once in the master, before it forks the workers. Its
configuration comes from RL_TEST_APP_CONFIG (a backend=shm region).
"""

import os

from fastapi import FastAPI

from libratelimit import Limiter
from libratelimit.asgi import RateLimitMiddleware

MADE_IN = os.getpid()
lim = Limiter(os.environ["RL_TEST_APP_CONFIG"])

app = FastAPI()


@app.get("/")
async def root():
    return {"pid": os.getpid()}


@app.get("/health")
async def health():
    return {"pid": os.getpid(), "limiter_made_in": MADE_IN}


app.add_middleware(RateLimitMiddleware, limiter=lim, exempt=("/health",))


class WorkerPid:
    """Outermost: every response, 429s included, names the worker that answered."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_pid(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers") or ()) + [
                    (b"x-worker-pid", str(os.getpid()).encode())
                ]
            await send(message)

        await self.app(scope, receive, send_pid)


app.add_middleware(WorkerPid)
