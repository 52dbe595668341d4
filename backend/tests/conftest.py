"""Fixtures: a real, migrated PostgreSQL test database, per-test isolated sessions and HTTP clients.

The test database is never the development one. In order of preference it is
TEST_DATABASE_URL; else `<name>_test` on the DATABASE_URL server (created if missing); else a
throwaway embedded PostgreSQL started for this run.
"""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import httpx
import pytest
from alembic import command
from dotenv import dotenv_values
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.config import ENV_FILE, Settings, SettingsError, get_settings, normalize_database_url
from app.core.database import Database, get_db
from devtools.postgres import embedded_postgres, ensure_database, with_database
from tests.migrations import alembic_config


def configured_url(name: str) -> str | None:
    return os.environ.get(name) or dotenv_values(ENV_FILE).get(name)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse, before anything runs, a test database that is malformed or is the development one."""
    test_url, dev_url = configured_url("TEST_DATABASE_URL"), configured_url("DATABASE_URL")
    for name, value in (("TEST_DATABASE_URL", test_url), ("DATABASE_URL", dev_url)):
        if value:
            try:
                normalize_database_url(value)
            except ValueError as error:
                raise pytest.UsageError(f"Invalid configuration: {name} {error}") from None
    if test_url and dev_url and normalize_database_url(test_url) == normalize_database_url(dev_url):
        raise pytest.UsageError("TEST_DATABASE_URL must not be the development database (DATABASE_URL)")


@pytest.fixture(scope="session")
def test_db() -> Iterator[str]:
    """The URL of the test database, migrated to head once for the run."""
    with ExitStack() as stack:
        if url := configured_url("TEST_DATABASE_URL"):
            pass
        elif dev_url := configured_url("DATABASE_URL"):
            dev = normalize_database_url(dev_url)
            url = with_database(dev.render_as_string(hide_password=False), f"{dev.database}_test")
        else:
            url = with_database(stack.enter_context(embedded_postgres()), "lifebalance_test")
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
        yield url


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
    async with engine.connect() as connection:
        transaction = await connection.begin()
        async with AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        ) as session:
            yield session
        await transaction.rollback()


def build_app(settings: Settings) -> FastAPI:
    # Imported here, once the test database is in the environment: app.main reads settings on import.
    from app.main import create_app

    return create_app(settings)


@pytest.fixture
async def application(settings: Settings, db_session: AsyncSession) -> AsyncIterator[FastAPI]:
    """The app, started, with its request sessions joined to the test's rolled-back transaction."""
    app = build_app(settings)
    app.dependency_overrides[get_db] = lambda: db_session
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def async_client(application: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A synchronous client; the app runs on its own event loop, so use async_client for tests that write."""
    with TestClient(build_app(settings)) as client:
        yield client
