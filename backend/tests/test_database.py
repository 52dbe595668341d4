"""The engine honours its time bounds: nothing waits for the drivers' long defaults."""

import asyncio
import time

import pytest
from sqlalchemy import text

from app.core.config import Settings
from app.core.database import Database
from devtools.network import Mode, SwitchProxy
from tests.harness import url_through

# Each bound below is tenths of a second; the defaults they replace are 30 to 60 s.
GUARD = 5.0


async def test_statement_timeout_reaches_the_server(settings: Settings) -> None:
    database = Database(settings.model_copy(update={"db_statement_timeout": 1.5}))
    try:
        async with database.engine.connect() as connection:
            assert await connection.scalar(text("SHOW statement_timeout")) == "1500ms"
    finally:
        await database.dispose()


async def test_connect_timeout_bounds_a_server_that_never_answers(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    await db_proxy.set_mode(Mode.HANG)
    url = url_through(test_db, db_proxy.port)
    database = Database(settings.model_copy(update={"database_url": url, "db_connect_timeout": 0.3}))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(database.ping(), GUARD)
    elapsed = time.monotonic() - started
    await database.dispose()
    assert elapsed < 0.3 + 1.0


async def test_pool_timeout_bounds_the_wait_for_a_connection(settings: Settings) -> None:
    bounded = {"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 0.3}
    database = Database(settings.model_copy(update=bounded))
    try:
        async with database.engine.connect():
            started = time.monotonic()
            with pytest.raises(Exception, match="QueuePool limit"):
                await asyncio.wait_for(database.ping(), GUARD)
            elapsed = time.monotonic() - started
    finally:
        await database.dispose()
    assert elapsed < 0.3 + 1.0


async def test_shutdown_does_not_wait_for_a_server_that_stopped_answering(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    url = url_through(test_db, db_proxy.port)
    database = Database(settings.model_copy(update={"database_url": url, "db_connect_timeout": 0.3}))
    await database.ping()  # leaves a connection in the pool
    await db_proxy.set_mode(Mode.HANG)

    started = time.monotonic()
    await asyncio.wait_for(database.dispose(), GUARD)
    assert time.monotonic() - started < 0.3 + 1.0
