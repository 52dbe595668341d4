"""The process's database engine, its session factory and the request-scoped session dependency."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.core.config import Settings


class Database:
    """One async engine and one session factory, created at start-up and disposed at shutdown.

    Creating the engine opens no connection, so the app starts while the database is down;
    a connection that breaks is discarded by the pool, so it recovers once the database is back.
    """

    def __init__(self, settings: Settings) -> None:
        self.engine: AsyncEngine = create_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            connect_args={
                "timeout": settings.db_connect_timeout,
                # Client-side bound for a server that stops answering mid-query.
                "command_timeout": settings.db_statement_timeout,
                "server_settings": {
                    # In milliseconds, never 0: PostgreSQL reads 0 as "no limit".
                    "statement_timeout": str(max(1, round(settings.db_statement_timeout * 1000))),
                    "application_name": "lifebalance-backend",
                },
            },
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._close_timeout = settings.db_connect_timeout

    async def ping(self) -> None:
        """Run a trivial query; raises if the database cannot be reached."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close the pooled connections, within the connect bound: a server that stopped answering
        would hold each polite goodbye for the statement timeout, and shutdown with it."""
        with contextlib.suppress(TimeoutError):
            # Cancelling a close makes asyncpg abort that connection instead.
            await asyncio.wait_for(self.engine.dispose(), self._close_timeout)


def describe_error(error: BaseException) -> str:
    """A short reason for a failed database operation, for logs and the command line.

    SQLAlchemy's own message repeats the SQL and adds a link; the driver's error says what happened.
    """
    if isinstance(error, TimeoutError):
        return "no answer in time"
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    return f"{type(cause).__name__}: {cause}".rstrip(": ")


async def get_database(request: Request) -> Database:
    # async: a plain def dependency would be run in the thread pool on every request.
    database: Database = request.app.state.database
    return database


async def get_db(database: Annotated[Database, Depends(get_database)]) -> AsyncIterator[AsyncSession]:
    """A session for one request. Closing it rolls back whatever the request did not commit,
    so a request that fails leaves nothing behind."""
    async with database.sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_db)]
