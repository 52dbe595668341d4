"""The outage drill: /health while the database refuses, hangs, ends the app's sessions or fails over,
and how soon it says `connected` again."""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from devtools.network import Mode, SwitchProxy
from pgstats import Stats

PROBES = 20
# Far beyond any target, so a probe that waits this long shows up as a figure, not as a stuck run.
PROBE_TIMEOUT_S = 10.0
RECOVERY_LIMIT_S = 10.0
POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Outage:
    mode: str
    statuses: dict[str, int]  # status code (or timeout, broken) -> number of probes
    slowest_s: float  # from the burst's start to its last answer
    recovery_s: float | None  # from the database's return to the first `connected`; None: not within the limit


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def _status(reader: asyncio.StreamReader) -> int:
    """Read one response whole; its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return int(lines[0].split(b" ", 2)[1])


async def probe_burst(url: str, probes: int = PROBES) -> tuple[dict[str, int], float]:
    """`probes` GET requests sent at once, each on its own connection, as independent orchestrators send them.

    The connections are opened and used once beforehand on the liveness endpoint (no database), and
    the requests are written by hand: the figure is the app's time to answer, not this client's
    time to open connections or parse responses.
    """
    target = urlsplit(url)
    connections = [await asyncio.open_connection(target.hostname, target.port) for _ in range(probes)]
    try:
        for _, writer in connections:
            writer.write(_request(f"{target.path}/live"))
        await asyncio.gather(*(_status(reader) for reader, _ in connections))

        started = time.perf_counter()
        for _, writer in connections:
            writer.write(_request(target.path))

        async def answer(reader: asyncio.StreamReader) -> tuple[str, float]:
            try:
                status = str(await asyncio.wait_for(_status(reader), PROBE_TIMEOUT_S))
            except TimeoutError:
                status = "timeout"
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = "broken"
            return status, time.perf_counter() - started

        answers = await asyncio.gather(*(answer(reader) for reader, _ in connections))
    finally:
        for _, writer in connections:
            writer.close()
    return dict(Counter(status for status, _ in answers)), max(elapsed for _, elapsed in answers)


async def time_to_connected(url: str, limit_s: float = RECOVERY_LIMIT_S) -> float | None:
    """Seconds until /health answers 200 with `database: connected`, polling every 50 ms."""
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
        while (elapsed := time.perf_counter() - started) < limit_s:
            try:
                response = await client.get(url)
                if response.status_code == 200 and response.json().get("database") == "connected":
                    return elapsed
            except (httpx.HTTPError, ValueError):
                pass  # not answering, or not JSON: not connected yet
            await asyncio.sleep(POLL_INTERVAL_S)
    return None


async def outage(proxy: SwitchProxy, url: str, mode: Mode, cache_ttl_s: float) -> Outage:
    """Take the database away in `mode`, probe once the app's last good answer has expired, then restore it."""
    await proxy.set_mode(mode)
    # The app may answer from a result up to `cache_ttl_s` old; the probes must meet a fresh check.
    await asyncio.sleep(cache_ttl_s + 0.2)
    statuses, slowest = await probe_burst(url)
    await proxy.set_mode(Mode.FORWARD)
    recovery = await time_to_connected(url)
    return Outage(mode.value, statuses, slowest, recovery)


async def killed_connections(stats: Stats, database: str, url: str, cache_ttl_s: float) -> Outage:
    """End the app's sessions from the server side, as a restart or failover does, then probe at once.

    The database is up all along: every 503 here is a false one.
    """
    await asyncio.sleep(cache_ttl_s + 0.2)
    await stats.end_backends(database)
    statuses, slowest = await probe_burst(url)
    return Outage("killed", statuses, slowest, await time_to_connected(url))


async def failed_over(proxy: SwitchProxy, url: str, cache_ttl_s: float) -> Outage:
    """The server behind the app's connections vanishes without a word, as in a failover, and a
    working one takes new connections: the app learns it only from its next statement.

    The database is up all along: every 503 here is a false one.
    """
    await asyncio.sleep(cache_ttl_s + 0.2)
    proxy.fail_over()
    statuses, slowest = await probe_burst(url)
    return Outage("failover", statuses, slowest, await time_to_connected(url))
