"""The drain's mechanism, in process: SIGTERM starts it, the server's own handler ends it a period
later, a second SIGTERM at once. tests/test_server.py shows it under a real uvicorn."""

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from app.core.drain import Drain


@pytest.fixture
def stops() -> Iterator[list[float]]:
    """When the server's SIGTERM handler (a stand-in for uvicorn's) was called."""
    called: list[float] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: called.append(time.monotonic()))
    yield called
    signal.signal(signal.SIGTERM, previous)


async def test_sigterm_drains_for_the_period_then_stops_the_server(stops: list[float]) -> None:
    drain = Drain(0.3)
    drain.install()
    try:
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert drain.draining
        assert not stops, "the server stopped before the drain's end"
        await asyncio.sleep(0.4)
        assert len(stops) == 1
        assert stops[0] - sent >= 0.3
    finally:
        drain.uninstall()


async def test_a_second_sigterm_stops_the_server_at_once(stops: list[float]) -> None:
    drain = Drain(30)
    drain.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert drain.draining
        assert len(stops) == 1
    finally:
        drain.uninstall()


async def test_no_drain_leaves_sigterm_to_the_server(stops: list[float]) -> None:
    Drain(0).install()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.1)
    assert len(stops) == 1
