"""What the fixtures and tests are built from: the test database, the app and its clients.

Fixtures (conftest.py) wire these together for the common cases; tests that need an app with
settings of their own (a database that refuses, a short budget) call them directly.
"""

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.api.deps import get_db
from app.core.config import Settings, normalize_database_url
from devtools.migrations import BACKEND
from devtools.network import free_port


def choose_test_database(test_url: str | None, dev_url: str | None) -> str | None:
    """TEST_DATABASE_URL, else `<name>_test` beside DATABASE_URL; None means "start an embedded one".

    Raises ValueError, naming the variable, for a malformed URL, and for a test database that is
    the development one: the suite may wipe what it is given.
    """
    for name, value in (("TEST_DATABASE_URL", test_url), ("DATABASE_URL", dev_url)):
        if value:
            try:
                normalize_database_url(value)
            except ValueError as error:
                raise ValueError(f"{name} {error}") from None
    if test_url:
        if dev_url and same_database(test_url, dev_url):
            raise ValueError("TEST_DATABASE_URL must not be the development database (DATABASE_URL)")
        return test_url
    if dev_url:
        dev = normalize_database_url(dev_url)
        return dev.set(database=f"{dev.database}_test").render_as_string(hide_password=False)
    return None


def same_database(a: str, b: str) -> bool:
    def key(url: str) -> tuple[object, ...]:
        parsed = normalize_database_url(url)
        return parsed.host, parsed.port or 5432, parsed.database, parsed.query.get("host")

    return key(a) == key(b)


def url_at(port: int, *, password: str = "s3cret-pw") -> str:
    """A database URL on 127.0.0.1:`port`, for a port where no PostgreSQL is."""
    return URL.create(
        "postgresql+asyncpg", username="lifebalance", password=password, host="127.0.0.1", port=port, database="db"
    ).render_as_string(hide_password=False)


def url_through(url: str, port: int, *, username: str | None = None, password: str | None = None) -> str:
    """The database `url` names, reached through a proxy on 127.0.0.1:`port` (as another role, if given)."""
    proxied = normalize_database_url(url).set(host="127.0.0.1", port=port, query={})
    if username is not None:
        proxied = proxied.set(username=username, password=password)
    return proxied.render_as_string(hide_password=False)


def build_app(settings: Settings) -> FastAPI:
    # Imported here, once the test database is in the environment: app.main reads settings on import.
    from app.main import create_app

    return create_app(settings)


@asynccontextmanager
async def client_for(settings: Settings, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on a started app of its own, with these settings changed."""
    app = build_app(settings.model_copy(update=overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@asynccontextmanager
async def rolled_back(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back at the end of the block."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


def joined_session(connection: AsyncConnection) -> AsyncSession:
    """A session inside the connection's transaction; its commits only release savepoints."""
    return AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@contextmanager
def rolled_back_client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient on a started app whose requests' writes are rolled back at the end of the block.

    TestClient runs the app on an event loop of its own, in a thread, and asyncpg connections
    belong to one loop: so the requests cannot share a test's `db_session`. They share instead a
    transaction opened on that loop, on the app's own engine. Rolling back, rather than emptying
    the tables afterwards, also undoes schema changes and needs no list of tables to keep up to date.
    """
    app = build_app(settings)
    with TestClient(app) as client:
        assert client.portal is not None
        with client.portal.wrap_async_context_manager(rolled_back(app.state.database.engine)) as connection:

            async def session_in_the_transaction() -> AsyncIterator[AsyncSession]:
                async with joined_session(connection) as session:
                    yield session

            app.dependency_overrides[get_db] = session_in_the_transaction
            yield client


class Server:
    """`uvicorn app.main:app` in a process of its own on 127.0.0.1, as it runs in production."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    async def stop(self) -> float:
        """SIGTERM, then the seconds until the process exited (killed after 30)."""
        started = time.monotonic()
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return time.monotonic() - started


@asynccontextmanager
async def served(settings: Settings, log: Path, **overrides: object) -> AsyncIterator[Server]:
    """The app served by uvicorn (no reload) with these settings, until the end of the block."""
    settings = settings.model_copy(update=overrides)
    env = {**os.environ, **{name.upper(): str(value) for name, value in settings.model_dump().items()}}
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(*command, cwd=BACKEND, env=env, stdout=output, stderr=output)
    server = Server(process, port, log)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            for _ in range(300):
                if process.returncode is not None:
                    raise RuntimeError(f"uvicorn exited with {process.returncode}; its output is in {log}")
                try:
                    if (await client.get("/health/live")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"uvicorn did not start; its output is in {log}")
        yield server
    finally:
        await server.stop()
