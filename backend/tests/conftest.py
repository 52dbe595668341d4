"""Fixtures: a real PostgreSQL test database, fresh for each test; the app, and the one HTTP client.

The suite never touches the development database. It runs on the server TEST_DATABASE_URL names;
else on the one DATABASE_URL names, in databases beside it (`<name>_test...`); else on a throwaway
embedded PostgreSQL started for the run (a copy of one kept in backend/.pgcache/). At the start of
a run the migrations build a template (`<test database>_template`) unless it holds what they make
now already (`build_template`), so a migration edited in place is what the run tests. Each test
that takes `settings` (or a fixture built on it) gets the process's test database made anew as a
copy of that template: what one test commits, no other test sees. The run drops those databases at
the end, and keeps the template for the next.
"""

import asyncio
import gc
import importlib
import os
from collections.abc import AsyncIterator
from contextlib import ExitStack

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.config import Settings, SettingsError, configured, get_settings
from app.core.database import Database, describe_error
from devtools.network import SwitchProxy, Upstream
from devtools.postgres import cached_cluster, connect_admin, drop_database, embedded_postgres, with_database
from tests.harness import (
    TEMPLATE_VARIABLE,
    build_app,
    build_template,
    choose_test_database,
    renew_test_database,
    started,
    use_database,
)

CHOSEN = pytest.StashKey[str | None]()
EMBEDDED_SERVER = pytest.StashKey[ExitStack]()
TEMPLATE_BUILT = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse, before anything runs, a test database that is malformed or is the development one."""
    if TEMPLATE_VARIABLE in os.environ:
        return  # a worker: the first process chose already
    try:
        config.stash[CHOSEN] = choose_test_database(configured("TEST_DATABASE_URL"), configured("DATABASE_URL"))
    except ValueError as error:
        raise pytest.UsageError(f"Invalid configuration: {error}") from None


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for `-n auto`: none when the arguments name test files or tests (the inner loop,
    where starting workers costs more than it saves); else more than the cores, since most tests
    wait on injected faults rather than compute."""
    if config.args and all(arg.split("::")[0].endswith(".py") for arg in config.args):
        return 0
    return max(3, os.cpu_count() or 1)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The template, built by the run's first process before pytest-xdist starts any worker; then
    this process's own test database, which the app under test reads from DATABASE_URL.

    Set before the tests are collected, so `from app.main import app` in a test module builds the
    app on the test database, never on the development one.
    """
    if TEMPLATE_VARIABLE not in os.environ:
        stash = session.config.stash
        url = stash[CHOSEN]
        if url is None:
            # The cluster is kept, with the template in it, for the next run's to start from.
            embedded = embedded_postgres(seed=cached_cluster("tests"), keep=lambda: stash.get(TEMPLATE_BUILT, False))
            server = stash[EMBEDDED_SERVER] = ExitStack()
            url = with_database(server.enter_context(embedded), "lifebalance_test")
        os.environ[TEMPLATE_VARIABLE] = template = with_database(url, f"{make_url(url).database}_template")
        try:
            stash[TEMPLATE_BUILT] = build_template(template)
        except (OSError, TimeoutError, asyncpg.PostgresError) as error:
            masked = make_url(template).render_as_string(hide_password=True)
            raise pytest.UsageError(f"Cannot create the test database {masked}: {describe_error(error)}") from None
    template = os.environ[TEMPLATE_VARIABLE]
    base = str(make_url(template).database).removesuffix("_template")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    use_database(with_database(template, f"{base}_{worker}" if worker else base))
    try:
        # The app's logging is configured on import: before any test captures logs, not during one.
        importlib.import_module("app.main")
    except SettingsError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_sessionfinish(session: pytest.Session) -> None:
    asyncio.run(drop_database(os.environ["DATABASE_URL"]))


def pytest_unconfigure(config: pytest.Config) -> None:
    if EMBEDDED_SERVER in config.stash:
        config.stash[EMBEDDED_SERVER].close()
    # What the run made is left to the exit, uncollected: collecting it took a fifth of a second of
    # every run, a tenth of one file's.
    gc.freeze()


@pytest.fixture(scope="session")
async def admin() -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test server for the whole run, closed at its end."""
    connection = await connect_admin(os.environ["DATABASE_URL"])
    yield connection
    await connection.close()


@pytest.fixture
async def test_db(admin: asyncpg.Connection) -> str:
    """The URL of this process's test database, made anew for this test from the migrated template."""
    return await renew_test_database(admin)


@pytest.fixture
def settings(test_db: str) -> Settings:
    """The settings of the app under test, on a fresh `test_db`."""
    return get_settings()


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine of the test's own on the test database, made as the app's is."""
    database = Database(settings)
    yield database.engine
    await database.dispose()


@pytest.fixture
async def db_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session of the test's own, beside the app's: to arrange rows, and to check what requests
    committed. It commits for real, like everything else here."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def application(settings: Settings) -> FastAPI:
    """The app under test (routers of a test's own can be added to it); `client` starts it."""
    return build_app(settings)


@pytest.fixture
async def client(application: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP client for route tests: each request gets a session and a connection of its own,
    commits for real, and answers what uvicorn would (500 for an exception)."""
    async with started(application) as client:
        yield client


@pytest.fixture
async def db_proxy(test_db: str) -> AsyncIterator[SwitchProxy]:
    """The test database behind a front on 127.0.0.1 that a test can make refuse, hang or lag."""
    proxy = SwitchProxy(Upstream.from_url(test_db))
    await proxy.start()
    yield proxy
    await proxy.close()
