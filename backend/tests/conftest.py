"""Fixtures: a real, migrated PostgreSQL test database, per-test isolated sessions and HTTP clients.

The test database is never the development one. In order of preference it is
TEST_DATABASE_URL; else `<name>_test` on the DATABASE_URL server (created if missing); else a
throwaway embedded PostgreSQL started for this run. Whatever a test writes, through `db_session`,
`async_client` or `client`, commits included, is rolled back after it.
"""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.deps import get_db
from app.core.config import Settings, SettingsError, configured, get_settings
from app.core.database import Database
from devtools.migrations import alembic_config
from devtools.network import SwitchProxy, Upstream
from devtools.postgres import embedded_postgres, ensure_database, with_database
from tests.harness import build_app, choose_test_database, joined_session, rolled_back, rolled_back_client

TEST_DATABASE = pytest.StashKey[str | None]()
EMBEDDED_SERVER = pytest.StashKey[ExitStack]()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse, before anything runs, a test database that is malformed or is the development one."""
    try:
        config.stash[TEST_DATABASE] = choose_test_database(configured("TEST_DATABASE_URL"), configured("DATABASE_URL"))
    except ValueError as error:
        raise pytest.UsageError(f"Invalid configuration: {error}") from None


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for `-n auto`: more than the cores, since most tests wait on injected faults."""
    return max(3, os.cpu_count() or 1)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """With no database configured, one throwaway embedded server for the whole run.

    Started before pytest-xdist starts its workers, which find it in TEST_DATABASE_URL.
    """
    if session.config.stash[TEST_DATABASE] is None:
        server = session.config.stash[EMBEDDED_SERVER] = ExitStack()
        url = with_database(server.enter_context(embedded_postgres()), "lifebalance_test")
        session.config.stash[TEST_DATABASE] = os.environ["TEST_DATABASE_URL"] = url


def pytest_unconfigure(config: pytest.Config) -> None:
    if EMBEDDED_SERVER in config.stash:
        config.stash[EMBEDDED_SERVER].close()


@pytest.fixture(scope="session")
def test_db(request: pytest.FixtureRequest) -> str:
    """The URL of the test database, migrated to head once for the run."""
    url = request.config.stash[TEST_DATABASE]
    assert url is not None
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        # Parallel workers (pytest -n) each migrate and test a database of their own.
        url = with_database(url, f"{make_url(url).database}_{worker}")
    ensure_database(url)

    # The app, Alembic and every fixture below read their settings from here.
    os.environ["DATABASE_URL"] = url
    os.environ["ENVIRONMENT"] = "test"
    get_settings.cache_clear()
    try:
        get_settings()
    except SettingsError as error:
        pytest.exit(str(error), returncode=pytest.ExitCode.USAGE_ERROR)
    command.upgrade(alembic_config(), "head")
    return url


@pytest.fixture(scope="session")
def settings(test_db: str) -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    database = Database(settings)
    yield database.engine
    await database.dispose()


@pytest.fixture
async def db_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session whose writes are all rolled back after the test.

    Everything runs in one outer transaction; the session's own commits only release savepoints,
    so code under test may commit as it would in production.
    """
    async with rolled_back(engine) as connection, joined_session(connection) as session:
        yield session


@pytest.fixture
async def db_proxy(test_db: str) -> AsyncIterator[SwitchProxy]:
    """The test database behind a front on 127.0.0.1 that a test can make refuse, hang or lag."""
    proxy = SwitchProxy(Upstream.from_url(test_db))
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def application(settings: Settings, db_session: AsyncSession) -> AsyncIterator[FastAPI]:
    """The app, started, with its request sessions joined to the test's rolled-back transaction."""
    app = build_app(settings)

    async def the_test_session() -> AsyncSession:
        return db_session

    app.dependency_overrides[get_db] = the_test_session
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def async_client(application: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on `application`: requests share the test's `db_session`."""
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A synchronous client, whose requests' writes are rolled back after the test too
    (in a transaction of their own: see tests/harness.py)."""
    with rolled_back_client(settings) as client:
        yield client
