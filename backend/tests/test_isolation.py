"""Each test's writes are rolled back, even when the code under test commits, whichever client made them."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.deps import DbSession, get_db
from app.core.config import Settings
from app.core.database import Database
from tests.harness import joined_session, rolled_back, rolled_back_client

# Routes of these tests only, added to the app under test: one that writes and commits, one that reads.
probe_routes = APIRouter(prefix="/isolation-probe")


@probe_routes.post("/{run}")
async def write(run: str, session: DbSession) -> None:
    await session.execute(text("CREATE TABLE isolation_probe (run text)"))
    await session.execute(text("INSERT INTO isolation_probe VALUES (:run)"), {"run": run})
    await session.commit()


@probe_routes.get("")
async def read(session: DbSession) -> list[str]:
    if not await session.scalar(text("SELECT to_regclass('isolation_probe') IS NOT NULL")):
        return []
    return list(await session.scalars(text("SELECT run FROM isolation_probe")))


async def test_committed_writes_through_a_session_are_rolled_back(engine: AsyncEngine) -> None:
    # Two tests in a row, as db_session gives each of them its session.
    for run in ("first", "second"):
        async with rolled_back(engine) as connection, joined_session(connection) as session:
            exists = await session.scalar(text("SELECT to_regclass('isolation_probe') IS NOT NULL"))
            assert exists is False, f"{run}: an earlier session's committed write is still there"
            await session.execute(text("CREATE TABLE isolation_probe (run text)"))
            await session.execute(text("INSERT INTO isolation_probe VALUES (:run)"), {"run": run})
            await session.commit()
            assert await session.scalar(text("SELECT run FROM isolation_probe")) == run


def test_writes_through_client_are_rolled_back(settings: Settings) -> None:
    # Two tests in a row, as the client fixture gives each of them its client.
    for run in ("first", "second"):
        with rolled_back_client(settings) as client:
            app = client.app
            assert isinstance(app, FastAPI)
            app.include_router(probe_routes)
            assert client.get("/isolation-probe").json() == [], f"{run}: an earlier client's write is still there"
            assert client.post(f"/isolation-probe/{run}").status_code == 200
            assert client.get("/isolation-probe").json() == [run]


async def test_requests_share_the_test_session(
    application: FastAPI, async_client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    application.include_router(probe_routes)
    assert (await async_client.post("/isolation-probe/async")).status_code == 200
    # The request's commit is visible to the test, inside the transaction that is rolled back after it.
    assert await db_session.scalar(text("SELECT run FROM isolation_probe")) == "async"


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
