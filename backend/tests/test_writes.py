"""The transaction rule on the wire: a 2xx is durable, a failed COMMIT or a raising route leaves nothing.

Each test runs twice, against the same write routes (tests/writes.py): through the tests' client,
in process, and served by a real uvicorn. Both must give the same answer; what was written is
read back on a connection of the test's own (`db_session`), as anyone else would see it.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.config import Settings, get_settings
from devtools.network import Mode, SwitchProxy, Upstream
from tests import writes
from tests.harness import Server, build_app, served, started, url_through
from tests.writes import Account, Entry

Api = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="module")
async def front() -> AsyncIterator[SwitchProxy]:
    """The test database behind a proxy, which both apps reach it through, so a test can cut it."""
    proxy = SwitchProxy(Upstream.from_url(os.environ["DATABASE_URL"]))
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture(scope="module")
async def server(front: SwitchProxy, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """uvicorn serving the write routes, one for the module: a server costs a second or two to start,
    and it takes each test's fresh database in its stride (the pool replaces the connections that the
    database's renewal ended)."""
    settings = get_settings().model_copy(update={"database_url": url_through(get_settings().database_url, front.port)})
    log = tmp_path_factory.mktemp("writes") / "uvicorn.log"
    async with served(settings, log, app="tests.writes:create_app", options=["--factory"]) as server:
        yield server


@pytest.fixture(params=["in process", "uvicorn"])
async def api(
    request: pytest.FixtureRequest, settings: Settings, engine: AsyncEngine, front: SwitchProxy, server: Server
) -> AsyncIterator[Api]:
    """Opens a client on the write routes: in process, or on the module's uvicorn."""
    async with engine.begin() as connection:
        await connection.run_sync(writes.WritesBase.metadata.create_all)

    @asynccontextmanager
    async def open_api() -> AsyncIterator[httpx.AsyncClient]:
        if request.param == "in process":
            proxied = url_through(settings.database_url, front.port)
            app = build_app(settings.model_copy(update={"database_url": proxied}))
            app.include_router(writes.router)
            async with started(app) as client:
                yield client
        else:
            yield server.client

    yield open_api
    await front.set_mode(Mode.FORWARD)  # after a test that cut it


async def count(session: AsyncSession, model: type[writes.WritesBase]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_2xx_means_the_write_is_durable(api: Api, db_session: AsyncSession) -> None:
    async with api() as client:
        response = await client.post("/accounts", json={"email": "ada@example.com"})
    assert response.status_code == 201
    account = await db_session.get(Account, response.json()["id"])
    assert account is not None
    assert response.json() == {"id": account.id, "email": "ada@example.com"}


@pytest.mark.parametrize(("failure", "status"), [("refuse", 422), ("crash", 500)])
async def test_a_route_that_raises_leaves_nothing(
    api: Api, db_session: AsyncSession, failure: str, status: int
) -> None:
    async with api() as client:
        response = await client.post(f"/accounts/{failure}", json={"email": "ada@example.com"})
    assert response.status_code == status
    assert await count(db_session, Account) == 0


async def test_a_commit_that_fails_answers_500_and_leaves_nothing(api: Api, db_session: AsyncSession) -> None:
    async with api() as client:
        response = await client.post("/entries", json={"account_id": 404})  # no such account: refused at COMMIT
    assert response.status_code == 500
    assert "writes_" not in response.text, "the error body must not carry the database's message"
    assert await count(db_session, Entry) == 0


async def test_a_connection_lost_before_the_commit_answers_500(
    api: Api, db_session: AsyncSession, front: SwitchProxy
) -> None:
    db_session.add(account := Account(email="ada@example.com"))
    await db_session.commit()
    async with api() as client:
        front.sent.clear()
        request = asyncio.ensure_future(client.post("/entries", json={"account_id": account.id, "pause": 0.5}))
        await front.until_sent("P", sql="INSERT INTO writes_entries")
        await front.set_mode(Mode.REFUSE)  # the server is gone before the COMMIT is sent
        response = await request
    assert response.status_code == 500
    assert await count(db_session, Entry) == 0


async def test_two_registrations_of_one_email_at_once(api: Api, db_session: AsyncSession) -> None:
    async with api() as client:
        responses = await asyncio.gather(*(client.post("/accounts", json={"email": "ada@example.com"}) for _ in "ab"))
    assert sorted(response.status_code for response in responses) == [201, 409]
    assert await count(db_session, Account) == 1
