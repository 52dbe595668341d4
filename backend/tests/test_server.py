"""The app as uvicorn serves it, in a process of its own: HEAD on the wire, the drain, and the start-up
and the shutdown during an outage."""

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from devtools.network import Mode, SwitchProxy
from tests.harness import served, url_through

# uvicorn's own shutdown and a bounded goodbye to a silent server take about a second; the waits
# a shutdown must not sit out (the 10 s connect bound, a 30 s drain) take twice this or more, so
# the bound tells the two apart on a machine busy enough to slow the first.
SHUTDOWN_LIMIT = 5.0


def fields(response: bytes) -> dict[str, str]:
    lines = response.decode().split("\r\n")[1:-2]
    parsed = (line.split(": ", 1) for line in lines)
    return {name.lower(): value for name, value in parsed if name.lower() not in ("date", "x-request-id")}


async def test_head_sends_the_headers_of_get_and_no_body(settings: Settings, tmp_path: Path) -> None:
    async with served(settings, tmp_path / "uvicorn.log") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for path in ("/health", "/health/live"):
            writer.write(
                f"HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\nGET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            # The next bytes on the connection are the GET's answer, not a body of the HEAD.
            get = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(fields(get)["content-length"]))

            assert head.startswith(b"HTTP/1.1 200 "), path
            assert get.startswith(b"HTTP/1.1 200 "), path
            assert fields(head) == fields(get), path
        writer.close()


@pytest.mark.parametrize("outage", ["idle", "probe in flight", "since start-up"])
async def test_sigterm_during_an_outage_exits_fast_and_quietly(
    settings: Settings, test_db: str, db_proxy: SwitchProxy, tmp_path: Path, outage: str
) -> None:
    log = tmp_path / "uvicorn.log"
    if outage == "since start-up":
        await db_proxy.set_mode(Mode.HANG)  # the server starts all the same (served waits for /health/live)
    # Connecting may take 10 s: shutdown must not wait for that bound, nor for the statement timeout.
    proxied = url_through(test_db, db_proxy.port)
    serving = served(settings, log, database_url=proxied, db_connect_timeout=10.0, health_cache_ttl=0.0)
    async with serving as server, httpx.AsyncClient() as client:
        if outage != "since start-up":
            assert (await client.get(f"{server.url}/health")).status_code == 200  # a connection waits in the pool
            await db_proxy.set_mode(Mode.HANG)
        probe_in_flight = outage == "probe in flight"
        if probe_in_flight:
            pending = asyncio.ensure_future(client.get(f"{server.url}/health"))
            await asyncio.sleep(0.2)
        elapsed = await server.stop()
        if probe_in_flight:
            await asyncio.gather(pending, return_exceptions=True)

    output = log.read_text()
    assert server.process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal it handled
    assert elapsed < SHUTDOWN_LIMIT, output
    assert "ERROR" not in output
    assert "Traceback" not in output


async def test_sigterm_drains_then_stops(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    async with served(settings, log, drain_period=1.0) as server:
        assert (await server.client.get("/health")).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.sleep(0.2)
        # Draining: taken out by load balancers, yet serving, on the connections it has and new ones.
        draining = await server.client.get("/health")
        assert draining.status_code == 503
        assert draining.json()["status"] == "error"
        assert draining.json()["database"] == "connected"
        assert (await server.client.get("/health/live")).status_code == 200
        async with httpx.AsyncClient(base_url=server.url) as another:
            assert (await another.get("/docs")).status_code == 200
        await server.process.wait()
        elapsed = time.monotonic() - started

    output = log.read_text()
    assert 1.0 <= elapsed < 1.0 + SHUTDOWN_LIMIT, output
    assert server.process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output


async def test_a_second_sigterm_ends_the_drain(settings: Settings, tmp_path: Path) -> None:
    async with served(settings, tmp_path / "uvicorn.log", drain_period=30) as server:
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert (await server.client.get("/health")).status_code == 503
        elapsed = await server.stop()  # SIGTERM again
    assert elapsed < SHUTDOWN_LIMIT
