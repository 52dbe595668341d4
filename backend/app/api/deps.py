"""The dependencies routes declare, as `Annotated` aliases: the one way to reach shared objects.

Each object is made once, in the app's lifespan (app/main.py), and handed out here. The functions
are async so that FastAPI calls them on the event loop rather than in its thread pool.
"""

from collections.abc import AsyncGenerator
from typing import Annotated, NamedTuple

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.database import Database
from app.core.drain import Drain
from app.core.probe import DatabaseProbe


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (tests create apps with settings of their own)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_db(database: Annotated[Database, Depends(get_database)]) -> AsyncGenerator[AsyncSession]:
    """The request's unit of work: committed when the route returns, rolled back when it raises.

    Routes never commit. Through `DbSession` the commit completes before the response is sent, so
    a 2xx means the write is durable, and a commit that fails answers 500.
    """
    async with database.sessionmaker() as session:
        yield session
        await session.commit()


class Readiness(NamedTuple):
    """What /health answers from: the database check, and the drain before a shutdown. One
    dependency rather than two: each costs the busiest route some percent of its throughput."""

    probe: DatabaseProbe
    drain: Drain


async def get_readiness(request: Request) -> Readiness:
    readiness: Readiness = request.app.state.readiness
    return readiness


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": the commit runs when the route returns, not after the response (the default).
# A yield dependency that takes DbSession needs scope="function" too (FastAPI refuses otherwise).
DbSession = Annotated[AsyncSession, Depends(get_db, scope="function")]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
