"""The outage drill: /health while the database refuses or hangs, and how soon it says `connected` again."""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import httpx
from dbproxy import Mode, SwitchProxy

PROBES = 20
# Far beyond any target, so a probe that waits this long shows up as a figure, not as a stuck run.
PROBE_TIMEOUT_S = 10.0
RECOVERY_LIMIT_S = 10.0
POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Outage:
    mode: str
    statuses: dict[str, int]  # status code (or the client's error name) -> number of probes
    slowest_s: float  # from the burst's start to its last answer
    recovery_s: float | None  # from the database's return to the first `connected`; None: not within the limit


async def probe_burst(url: str, probes: int = PROBES) -> tuple[dict[str, int], float]:
    """`probes` concurrent GET requests, each on its own connection, as independent orchestrators send them.

    The connections are opened beforehand with the liveness endpoint (no database), so the figure
    is the app's time to answer rather than this client's time to open twenty connections.
    """
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, limits=httpx.Limits(max_connections=probes)) as client:
        await asyncio.gather(*(client.get(f"{url}/live") for _ in range(probes)))
        started = time.perf_counter()

        async def probe() -> tuple[str, float]:
            try:
                status = str((await client.get(url)).status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            return status, time.perf_counter() - started

        answers = await asyncio.gather(*(probe() for _ in range(probes)))
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
