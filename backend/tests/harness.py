"""What the fixtures and tests are built from: the choice of test database, the app, its client, uvicorn.

Fixtures (conftest.py) wire these together for the common cases; tests that need an app with
settings of their own (a database that refuses, a short budget) call them directly.
"""

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy.engine import URL, make_url
from starlette.types import Receive, Scope, Send

from app.core.config import Settings, get_settings, normalize_database_url
from devtools.network import free_port
from devtools.postgres import (
    BACKEND,
    comment_database,
    database_comment,
    next_transaction_id,
    recreate_database,
)
from tests import processes


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


# How the run's first process tells pytest-xdist's workers where the migrated template is.
TEMPLATE_VARIABLE = "LIFEBALANCE_TEST_TEMPLATE"


def use_database(url: str) -> None:
    """Point the settings (the app's, Alembic's) at `url`, as for a test."""
    os.environ["DATABASE_URL"] = url
    os.environ["ENVIRONMENT"] = "test"
    get_settings.cache_clear()


def migrations_fingerprint(folder: Path = BACKEND / "alembic") -> str:
    """What the migrations in `folder` make, as far as it can change: a digest of its files."""
    digest = hashlib.sha256()
    for path in sorted(path for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_template(url: str) -> bool:
    """The database `url` names, made anew and migrated to head, unless it holds what the migrations
    make now already (its comment is their fingerprint); whether it was made anew.

    What each test's database copies: a migration edited in place is what the next run tests,
    while a run with none changed skips them (and Alembic's import: a fifth of a second).
    """
    fingerprint = migrations_fingerprint()
    if asyncio.run(database_comment(url)) == fingerprint:
        return False
    from alembic import command

    from devtools.migrations import alembic_config

    previous = os.environ.get("DATABASE_URL")
    asyncio.run(recreate_database(url))
    use_database(url)
    try:
        command.upgrade(alembic_config(), "head")
    finally:
        if previous is not None:
            use_database(previous)
    asyncio.run(comment_database(url, fingerprint))
    return True


# The server's next transaction id just after this process's test database was last made.
_unwritten_since: int | None = None


async def renew_test_database(admin: asyncpg.Connection) -> str:
    """This process's test database as a copy of the template, made anew unless nothing has written
    anything on the server since it last was (in the inner loop, one process, tests that only read
    keep it: a copy costs some 40 ms); its URL. `admin` is a connection to that server kept for the
    run: one of its own cost 3 ms a test."""
    global _unwritten_since
    url = os.environ["DATABASE_URL"]
    if _unwritten_since is None or await next_transaction_id(admin) != _unwritten_since:
        await recreate_database(url, template=make_url(os.environ[TEMPLATE_VARIABLE]).database, admin=admin)
        _unwritten_since = await next_transaction_id(admin)
    return url


def build_app(settings: Settings) -> FastAPI:
    # Imported here, once the test database is in the environment: app.main reads settings on import.
    from app.main import create_app

    return create_app(settings)


@asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on `app`, started: the tests' one way to send requests in process.

    Nothing is shared with the test or between requests: each gets its own session and connection
    from the app's real dependencies, as served. An exception in a route answers 500 and is
    logged, as uvicorn does, instead of surfacing in the test (httpx's default).
    """

    async def as_served(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
            raise

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=as_served, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@asynccontextmanager
async def client_for(settings: Settings, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """A started app of its own, with these settings changed, and its client."""
    async with started(build_app(settings.model_copy(update=overrides))) as client:
        yield client


class Server:
    """uvicorn in a process of its own on 127.0.0.1, as it runs in production, and a client on it."""

    def __init__(self, process: processes.Process, port: int, log: Path, client: httpx.AsyncClient) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.client = client

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
async def served(
    settings: Settings, log: Path, *, app: str = "app.main:app", options: Sequence[str] = (), **overrides: object
) -> AsyncIterator[Server]:
    """`app` served by uvicorn (with these options) and these settings, until the end of the block."""
    settings = settings.model_copy(update=overrides)
    env = {**os.environ, **{name.upper(): str(value) for name, value in settings.model_dump().items()}}
    port = free_port()
    command = ["-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-config", "logging.json", "--no-access-log", *options]
    process = processes.start(command, env=env, stdout=log)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        server = Server(process, port, log, client)
        try:
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
