"""Each test's writes are rolled back, even when the code under test commits."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.database import Database, DbSession, get_db


@pytest.mark.parametrize("run", ["first", "second"])
async def test_committed_writes_do_not_leak_into_the_next_test(db_session: AsyncSession, run: str) -> None:
    # Whichever run comes second would find the first one's table if isolation were broken.
    exists = await db_session.scalar(text("SELECT to_regclass('isolation_probe') IS NOT NULL"))
    assert exists is False

    await db_session.execute(text("CREATE TABLE isolation_probe (run text)"))
    await db_session.execute(text("INSERT INTO isolation_probe VALUES (:run)"), {"run": run})
    await db_session.commit()

    assert await db_session.scalar(text("SELECT run FROM isolation_probe")) == run


async def test_requests_share_the_test_session(
    application: FastAPI, async_client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    @application.post("/probe-write")
    async def probe_write(session: DbSession) -> dict[str, int]:
        await session.execute(text("CREATE TABLE request_probe (n int)"))
        await session.execute(text("INSERT INTO request_probe VALUES (1)"))
        await session.commit()
        return {"ok": 1}

    assert (await async_client.post("/probe-write")).status_code == 200
    # The request's commit is visible to the test, inside the transaction that is rolled back after it.
    assert await db_session.scalar(text("SELECT n FROM request_probe")) == 1


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    yield database
    await database.dispose()


async def test_get_db_rolls_back_when_the_request_fails(database: Database) -> None:
    sessions = get_db(database)
    session = await anext(sessions)
    await session.execute(text("CREATE TABLE failed_request_probe (n int)"))

    with pytest.raises(RuntimeError):
        await sessions.athrow(RuntimeError("handler failed"))

    async with database.engine.connect() as connection:
        left = await connection.scalar(text("SELECT to_regclass('failed_request_probe') IS NOT NULL"))
    assert left is False, "a failed request's uncommitted work must not persist"
