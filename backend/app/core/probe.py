"""A cheap, bounded answer to "is the database reachable?" for /health."""

import asyncio
import logging
import time
from typing import Any

from app.core.database import Database, describe_error

logger = logging.getLogger(__name__)


class DatabaseProbe:
    """Checks the database at most once per `ttl` seconds, whatever the number of callers.

    Concurrent callers await the one check in flight, and a finished check answers callers
    for `ttl` seconds, so a burst of probes (or a load balancer polling every instance)
    costs at most one query per `ttl`. Each check, connection included, is bounded by `timeout`.
    """

    def __init__(self, database: Database, *, timeout: float, ttl: float, masked_url: str) -> None:
        self._database = database
        self._timeout = timeout
        self._ttl = ttl
        self._masked_url = masked_url
        self._in_flight: asyncio.Task[bool] | None = None
        self._last_result: bool | None = None
        self._checked_at = 0.0
        self._abandoned: set[asyncio.Future[None]] = set()

    async def is_reachable(self) -> bool:
        if self._last_result is not None and time.monotonic() - self._checked_at < self._ttl:
            return self._last_result
        if self._in_flight is None:
            self._in_flight = asyncio.create_task(self._check())
        # Shielded: a caller that goes away must not cancel the check the others are waiting on.
        return await asyncio.shield(self._in_flight)

    async def _check(self) -> bool:
        try:
            error = await self._ping()
            if error is not None and self._last_result is not False:
                logger.warning("Database %s is unreachable: %s", self._masked_url, describe_error(error))
            elif error is None and self._last_result is False:
                logger.info("Database %s is reachable again", self._masked_url)
            self._last_result, self._checked_at = error is None, time.monotonic()
            return self._last_result
        finally:
            # Whatever happened, the next caller starts a new check rather than await this one.
            self._in_flight = None

    async def aclose(self) -> None:
        """Stop the check in flight and wait for abandoned pings, so none outlives the engine."""
        pending: list[asyncio.Future[Any]] = [*self._abandoned]
        if self._in_flight is not None:
            pending.append(self._in_flight)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _ping(self) -> BaseException | None:
        """The ping's error, or None; a ping over budget is left to finish cancelling on its own.

        Cancelling a query on a stuck connection makes the driver close that connection politely,
        which waits up to seconds more for the stuck server: the answer must not wait for that.
        """
        ping = asyncio.ensure_future(self._database.ping())
        done, _ = await asyncio.wait({ping}, timeout=self._timeout)
        if done:
            return asyncio.CancelledError() if ping.cancelled() else ping.exception()
        ping.cancel()
        self._abandoned.add(ping)
        ping.add_done_callback(self._forget)
        return TimeoutError()

    def _forget(self, ping: asyncio.Future[None]) -> None:
        self._abandoned.discard(ping)
        if not ping.cancelled():
            ping.exception()  # retrieved, so asyncio does not report it as never retrieved
