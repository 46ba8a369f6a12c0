"""A web app on patterns-server, with `patterns_client.aio` and Starlette.

    pip install 'patterns-client[web-example]'
    PATTERNS_TARGET=127.0.0.1:50051 uvicorn app:app --app-dir examples/python-web

One client for the whole app, made at import time, with its decorators declared at module
level; it opens its channel on the first call, in the server's event loop, and the app
closes it when it stops. What each endpoint shows:

    POST /login            sessions: a session per login, its id in a cookie
    GET  /me               the session of the cookie (401 without one)
    POST /logout           the session ended
    GET  /hello            a per-IP rate limit: RateLimit-* headers, 429 with Retry-After;
                           while the patterns server cannot answer, requests pass
    GET  /products/{id}    cache-aside: read through the cache, tagged with the product
    PUT  /products/{id}    a write to the source, then the product's tag invalidated
    GET  /catalog          a cached function (decorator declared at module level)
    POST /scores/{user}    points on today's board (a daily leaderboard)
    GET  /leaderboard      today's top 10
    POST /jobs/nightly     a job under a lock: one instance runs it, others get 409
    POST /news             publish an event
    GET  /events           Server-Sent Events relaying the news channel

Settings (environment): PATTERNS_TARGET (host:port), PATTERNS_API_KEY (when the server has
tenants), EXAMPLE_PREFIX (first part of every key: several apps, one server),
HELLO_LIMIT (requests per minute per IP, default 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from patterns_client import (
    Board,
    Event,
    Gap,
    LockNotAcquired,
    Mode,
    PatternsError,
    Period,
    Policy,
    aio,
)

PREFIX = os.environ.get("EXAMPLE_PREFIX", "web-example")
HELLO = Policy.gcra(int(os.environ.get("HELLO_LIMIT", "10")), timedelta(minutes=1))
SESSION_TTL = timedelta(hours=1)
TODAY = Board(f"{PREFIX}:scores", period=Period.DAILY)
NEWS = f"{PREFIX}:news"

# Made at import time: nothing is opened until the first call, in the running loop.
# A small timeout: a web request should not wait long for its helpers.
client = aio.Client(
    os.environ.get("PATTERNS_TARGET", "127.0.0.1:50051"),
    api_key=os.environ.get("PATTERNS_API_KEY") or None,
    timeout=timedelta(seconds=2),
)

# The source of truth the cache stands in front of: a database in a real app.
PRODUCTS: dict[str, dict[str, Any]] = {
    "1": {"id": "1", "name": "teapot", "price": 20},
    "2": {"id": "2", "name": "cup", "price": 5},
}
SOURCE_READS: dict[str, int] = {}


async def load_product(product_id: str) -> bytes:
    """A slow read of the source; counted, so the cache's work shows."""
    SOURCE_READS[product_id] = SOURCE_READS.get(product_id, 0) + 1
    await asyncio.sleep(0.01)
    return json.dumps(PRODUCTS[product_id]).encode()


@client.cache.cached(key=lambda: f"{PREFIX}:catalog", ttl=timedelta(minutes=5), tags=["catalog"])
async def catalog() -> bytes:
    """Declared at module level, with the module's client."""
    SOURCE_READS["catalog"] = SOURCE_READS.get("catalog", 0) + 1
    return json.dumps(sorted(PRODUCTS)).encode()


async def login(request: Request) -> Response:
    body = await request.json()
    session = await client.sessions.create(
        f"{PREFIX}:{body['user']}", ttl=SESSION_TTL, attributes={"name": body["user"]}
    )
    response = JSONResponse({"user": body["user"]})
    response.set_cookie("sid", session.id, httponly=True, samesite="lax")
    return response


async def me(request: Request) -> Response:
    sid = request.cookies.get("sid")
    session = await client.sessions.get(sid, touch=True) if sid else None
    if session is None:
        return JSONResponse({"error": "not logged in"}, 401)
    return JSONResponse({"user": session.attributes["name"], "expires_at": str(session.expires_at)})


async def logout(request: Request) -> Response:
    sid = request.cookies.get("sid")
    ended = await client.sessions.destroy(sid) if sid else False
    response = JSONResponse({"ended": ended})
    response.delete_cookie("sid")
    return response


async def hello(request: Request) -> Response:
    ip = request.client.host if request.client else "unknown"
    # "allow": while the patterns server cannot answer, requests pass (fallback=True).
    decision = await client.ratelimit.check(f"{PREFIX}:ip:{ip}", HELLO, on_unavailable="allow")
    headers = decision.headers()
    if decision.fallback:
        headers["X-RateLimit-Fallback"] = "allow"
    if not decision.allowed:
        return JSONResponse({"error": "too many requests"}, 429, headers=headers)
    return JSONResponse({"hello": ip}, headers=headers)


async def product(request: Request) -> Response:
    product_id = request.path_params["id"]
    if product_id not in PRODUCTS:
        return JSONResponse({"error": "no such product"}, 404)
    value = await client.cache.get_or_compute(
        f"{PREFIX}:product:{product_id}",
        lambda: load_product(product_id),
        ttl=timedelta(minutes=10),
        tags=[f"{PREFIX}:product:{product_id}", "catalog"],
    )
    return Response(value, media_type="application/json")


async def update_product(request: Request) -> Response:
    product_id = request.path_params["id"]
    PRODUCTS[product_id] = {
        **PRODUCTS.get(product_id, {}),
        **await request.json(),
        "id": product_id,
    }
    # Write the source first, then drop every cached value made from it.
    dropped = await client.cache.invalidate_tags([f"{PREFIX}:product:{product_id}"])
    return JSONResponse({"updated": product_id, "invalidated": dropped})


async def list_catalog(request: Request) -> Response:
    return Response(await catalog(), media_type="application/json")


async def score(request: Request) -> Response:
    points = float(request.query_params.get("points", "1"))
    user = request.path_params["user"]
    submitted = await client.leaderboard.submit(TODAY, user, points, mode=Mode.INCREMENT)
    return JSONResponse({"user": user, "score": submitted.score, "rank": submitted.rank})


async def leaderboard(request: Request) -> Response:
    page = await client.leaderboard.top(TODAY, 10)
    standings = [{"user": s.member, "score": s.score, "rank": s.rank} for s in page.standings]
    return JSONResponse({"total": page.total, "top": standings})


async def nightly_job(request: Request) -> Response:
    seconds = float(request.query_params.get("seconds", "0"))
    try:
        # Held for the block, renewed while it runs; no wait: another instance has it.
        async with client.locks.hold(f"{PREFIX}:job:nightly", ttl=timedelta(seconds=10)) as held:
            await asyncio.sleep(seconds)  # the work; pass held.fencing_token to what it writes
            return JSONResponse({"ran": True, "fencing_token": held.fencing_token})
    except LockNotAcquired:
        return JSONResponse({"ran": False, "error": "running elsewhere"}, 409)


async def publish(request: Request) -> Response:
    receivers = await client.events.publish(NEWS, await request.body())
    return JSONResponse({"receivers": receivers})


async def events(request: Request) -> Response:
    subscription = client.events.subscribe(channels=[NEWS])
    # Subscribed before the response starts: what is published once the client has the
    # headers reaches it.
    try:
        await subscription.wait_subscribed(timeout=timedelta(seconds=5))
    except PatternsError:
        await subscription.close()
        raise  # a 503, by the handler below

    async def stream() -> AsyncIterator[str]:
        async with subscription:
            yield ": subscribed\n\n"
            async for item in subscription:
                if isinstance(item, Event):
                    yield f"data: {item.payload.decode(errors='replace')}\n\n"
                elif isinstance(item, Gap):  # events were lost meanwhile: reload
                    yield f"event: gap\ndata: {item.error.message}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def index(request: Request) -> Response:
    return JSONResponse({"service": "patterns web example", "see": "app.py's docstring"})


async def patterns_failed(request: Request, error: Exception) -> Response:
    """A call to the patterns server failed (and no fallback covered it): 503."""
    return JSONResponse({"error": str(error)}, 503)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await client.close()


app = Starlette(
    routes=[
        Route("/", index),
        Route("/login", login, methods=["POST"]),
        Route("/me", me),
        Route("/logout", logout, methods=["POST"]),
        Route("/hello", hello),
        Route("/products/{id}", product),
        Route("/products/{id}", update_product, methods=["PUT"]),
        Route("/catalog", list_catalog),
        Route("/scores/{user}", score, methods=["POST"]),
        Route("/leaderboard", leaderboard),
        Route("/jobs/nightly", nightly_job, methods=["POST"]),
        Route("/news", publish, methods=["POST"]),
        Route("/events", events),
    ],
    exception_handlers={PatternsError: patterns_failed},
    lifespan=lifespan,
)
