"""What the request log costs a request, measured in process, where this machine's swings cancel out.

bench/run.py runs it in a process of its own, from backend/, its stderr (the log) going to a file
as a server's does, and reads one JSON object from its stdout. Two copies of the app answer
/openapi.json in turn, in short batches: one writes the request log, the other filters it out as
LOG_LEVEL=WARNING does. The two batches of a pair run hundredths of a second apart, so a slow spell
of the machine slows both alike; the figure is the median of the pairs' ratios. uvicorn's own work
on a request is left out, which makes the log's share of a request look larger, never smaller.
"""

import asyncio
import json
import statistics
import time
from typing import Any

from fastapi import FastAPI
from starlette.types import Message

from app.main import create_app, settings

PAIRS = 60
BATCH = 200
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/openapi.json",
    "raw_path": b"/openapi.json",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"bench")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8000),
}


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Message) -> None:
    return None


async def batch(app: FastAPI) -> float:
    """Seconds a request, over one batch."""
    started = time.perf_counter()
    for _ in range(BATCH):
        await app(dict(SCOPE), receive, send)
    return (time.perf_counter() - started) / BATCH


async def main() -> None:
    # As production logs: JSON, at INFO; and the same app at WARNING, which writes no request log.
    logged = create_app(settings.model_copy(update={"log_format": "json", "log_level": "INFO"}))
    quiet = create_app(settings.model_copy(update={"log_format": "json", "log_level": "WARNING"}))
    async with logged.router.lifespan_context(logged), quiet.router.lifespan_context(quiet):
        for app in (logged, quiet):  # warm-up
            await batch(app)
        pairs = []
        for index in range(PAIRS):
            # Alternating which goes first, so neither gains from the other's aftermath.
            first, second = (logged, quiet) if index % 2 == 0 else (quiet, logged)
            times = {first: await batch(first), second: await batch(second)}
            pairs.append((times[logged], times[quiet]))
    print(
        json.dumps(
            {
                "logged_us": statistics.median(pair[0] for pair in pairs) * 1e6,
                "quiet_us": statistics.median(pair[1] for pair in pairs) * 1e6,
                "kept": statistics.median(quiet_s / logged_s for logged_s, quiet_s in pairs),
                "requests": PAIRS * BATCH * 2,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
