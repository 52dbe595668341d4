"""The process's database engine and its session factory."""

from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from app.core.config import Settings

# Asked of the server for each session: a client that vanishes (a crash, a network that died)
# is noticed within about a minute (30 s idle, then 3 probes 10 s apart), so its session does not
# hold a connection slot for hours.
TCP_KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}

# How long a closing connection waits for the server to see it off. Once a server has left one
# goodbye unanswered, the connections after it are aborted at once, so a shutdown with a silent
# server takes this long in all, not this long per pooled connection.
GOODBYE_TIMEOUT = 0.5


class Database:
    """The engines and the session factory, created at start-up and disposed at shutdown.

    Creating an engine opens no connection, so the app starts while the database is down; a
    connection that breaks is discarded by its pool, so the app recovers once the database is back.
    """

    def __init__(self, settings: Settings) -> None:
        connections = _bounded_goodbye_connection_class()
        self.engine = _engine(
            settings, connections, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
        )
        # /health's check has a connection of its own: busy requests cannot make it fail, and when
        # it aborts a connection that stopped answering, SQLAlchemy's reaction to a lost
        # connection (renewing the whole pool) does not reach the requests' connections.
        self.probe_engine = _engine(settings, connections, pool_size=1, max_overflow=0)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    async def dispose(self) -> None:
        await self.probe_engine.dispose()
        await self.engine.dispose()


def _engine(settings: Settings, connection_class: type[asyncpg.Connection], **pool: int) -> AsyncEngine:
    engine = create_async_engine(
        settings.database_url,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "timeout": settings.db_connect_timeout,
            # Client-side bound for a server that stops answering mid-query.
            "command_timeout": settings.db_statement_timeout,
            "connection_class": connection_class,
            "server_settings": {
                # In milliseconds, never 0: PostgreSQL reads 0 as "no limit".
                "statement_timeout": str(max(1, round(settings.db_statement_timeout * 1000))),
                "application_name": "lifebalance-backend",
                **TCP_KEEPALIVES,
            },
        },
        **pool,
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine


def describe_error(error: BaseException) -> str:
    """A short reason for a failed database operation, for logs and the command line.

    SQLAlchemy's own message repeats the SQL and adds a link; the driver's error says what happened.
    """
    if isinstance(error, TimeoutError):
        return "no answer in time"
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    return f"{type(cause).__name__}: {cause}".rstrip(": ")


def _discard_closed(
    dbapi_connection: Any, connection_record: ConnectionPoolEntry, connection_proxy: PoolProxiedConnection
) -> None:
    """A pooled connection that the server has closed (restart, failover, terminated session) is
    replaced at checkout: the pool opens a new one in its place, so no caller sees the dead one.
    The driver's own state tells, so this costs no round trip, unlike pool_pre_ping."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def _bounded_goodbye_connection_class() -> type[asyncpg.Connection]:
    """asyncpg's connection, whose polite close waits at most GOODBYE_TIMEOUT for the server.

    Each Database gets a class of its own, so that one server's silence does not cut short the
    goodbyes to another.
    """
    unanswered = False

    class BoundedGoodbyeConnection(asyncpg.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            nonlocal unanswered
            super().__init__(*args, **kwargs)
            unanswered = False  # the server has just accepted a connection: it answers

        async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109  (asyncpg's signature)
            nonlocal unanswered
            if unanswered:
                self.terminate()
                return
            try:
                await super().close(timeout=GOODBYE_TIMEOUT if timeout is None else min(timeout, GOODBYE_TIMEOUT))
            except TimeoutError:
                unanswered = True  # asyncpg has aborted the connection already

    return BoundedGoodbyeConnection
