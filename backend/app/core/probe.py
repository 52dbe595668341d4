"""A cheap, bounded answer to "is the database available?" for /health."""

import asyncio
import enum
import logging
import time

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.config import Settings
from app.core.database import describe_error

logger = logging.getLogger(__name__)


class Reason(enum.StrEnum):
    """Why the database is unavailable: the few cases an operator acts on differently."""

    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    AUTHENTICATION_FAILED = "authentication failed"
    OTHER = "other"


def classify(error: BaseException) -> Reason:
    if isinstance(error, TimeoutError):
        return Reason.TIMEOUT
    if isinstance(error, ConnectionRefusedError):
        return Reason.REFUSED
    if isinstance(error, OSError):
        return Reason.UNREACHABLE
    cause: BaseException | None = error
    while cause is not None:
        # SQLSTATE class 28: invalid authorization (wrong password, a role that may not log in).
        if str(getattr(cause, "sqlstate", "") or "").startswith("28"):
            return Reason.AUTHENTICATION_FAILED
        cause = cause.orig if isinstance(cause, DBAPIError) else cause.__cause__
    return Reason.OTHER


class DatabaseProbe:
    """Checks the database at most once per HEALTH_CACHE_TTL, whatever the number of callers.

    A check takes the pooled connection of its own engine (see Database) and runs one statement
    on it, outside any transaction: one round trip. Concurrent callers share the check in flight,
    and its result answers callers for the TTL, so a burst of probes (or a load balancer polling
    every instance) costs one query.

    Each caller waits at most HEALTH_TIMEOUT. A check that takes longer goes on: the callers get
    "unavailable" meanwhile, and the connection it is opening serves the checks after it, so a
    slow but working database is reported available once a connection exists. Opening a
    connection (the driver's set-up queries included) is bounded by DB_CONNECT_TIMEOUT, and the
    statement by HEALTH_TIMEOUT, after which the connection is aborted.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        # Autocommit: the check's statement is sent alone, without BEGIN and ROLLBACK around it.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._timeout = settings.health_timeout
        self._ttl = settings.health_cache_ttl
        self._connect_timeout = settings.db_connect_timeout
        self._masked_url = settings.masked_database_url
        self._in_flight: asyncio.Task[None] | None = None
        self._available: bool | None = None
        self._reason: Reason | None = None
        self._answered_at = 0.0

    async def is_available(self) -> bool:
        if self._available is not None and time.monotonic() - self._answered_at < self._ttl:
            return self._available
        if self._in_flight is None:
            self._in_flight = asyncio.create_task(self._run())
        # wait() neither cancels the check when the budget runs out nor when this caller goes away.
        done, _ = await asyncio.wait({self._in_flight}, timeout=self._timeout)
        if not done:
            self._waited_too_long()
            return False
        done.pop().result()  # a bug in the check surfaces here, not as a silent "unavailable"
        assert self._available is not None
        return self._available

    async def aclose(self) -> None:
        """Stop the check in flight, so none outlives the engine."""
        if self._in_flight is not None:
            self._in_flight.cancel()
            await asyncio.gather(self._in_flight, return_exceptions=True)

    async def _run(self) -> None:
        try:
            error = await self._check()
            if error is None:
                self._record(None, "")
            else:
                self._record(classify(error), describe_error(error))
        finally:
            # Whatever happened, the next caller starts a new check rather than await this one.
            self._in_flight = None

    async def _check(self) -> BaseException | None:
        """None if the database answered, else what went wrong."""
        error = await self._check_once()
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            # The server closed the connection after the pool handed it out: once more, on a new one.
            error = await self._check_once()
        return error

    async def _check_once(self) -> BaseException | None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                connection = await self._engine.connect()
        except Exception as error:  # refused, unreachable, timed out, or refused by the server
            return error
        try:
            await self._ping(connection)
        except (DBAPIError, TimeoutError) as error:
            return error
        finally:
            # Shielded: a shutdown that cancels the check still gets the connection back in the
            # pool, where disposing of the engine closes it.
            await asyncio.shield(connection.close())
        return None

    async def _ping(self, connection: AsyncConnection) -> None:
        ping = asyncio.create_task(connection.exec_driver_sql("SELECT 1"))
        # However this ends (a shutdown may cancel it midway), the ping's outcome is retrieved,
        # so asyncio has no "exception never retrieved" to report.
        ping.add_done_callback(_retrieve)
        try:
            await asyncio.wait({ping}, timeout=self._timeout)
        finally:
            timed_out = not ping.done()
            if timed_out:
                # Aborted, not cancelled: a cancelled query makes the driver ask the server to
                # cancel it and then close politely, waiting on a server that does not answer.
                assert connection.sync_connection is not None
                driver = connection.sync_connection.connection.driver_connection
                assert driver is not None
                driver.terminate()
                await asyncio.wait({ping})
        if timed_out:
            raise TimeoutError(f"no answer within {self._timeout:g} s")
        ping.result()

    def _waited_too_long(self) -> None:
        """A caller's budget ran out while the check goes on: the answer meanwhile is "unavailable"."""
        if self._available is False:
            # Still unavailable for the reason the last check found, which a slow check that
            # fails the same way must not flip to "timeout" and back at every probe.
            self._answered_at = time.monotonic()
        else:
            self._record(Reason.TIMEOUT, f"no answer within {self._timeout:g} s")

    def _record(self, reason: Reason | None, detail: str) -> None:
        """Keep the answer, and log a change of state or of reason (never a repeat)."""
        if reason != self._reason or self._available is None:
            if reason is not None:
                logger.warning("Database %s is unavailable: %s (%s)", self._masked_url, reason, detail)
            elif self._available is False:
                logger.info("Database %s is available again", self._masked_url)
        self._available, self._reason, self._answered_at = reason is None, reason, time.monotonic()


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()
