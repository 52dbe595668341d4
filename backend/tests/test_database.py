"""The engine honours its time bounds, replaces connections the server closed, and asks for keepalives."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.database import GOODBYE_TIMEOUT, TCP_KEEPALIVES, Database
from devtools.network import Mode, SwitchProxy
from tests.harness import url_through

# Each bound below is tenths of a second; the defaults they replace are 30 to 60 s.
GUARD = 5.0
# The proxied database's bound on connecting: well above what a connection takes on a busy
# machine (0.3 s was not, in a container build's test run), well below GUARD.
CONNECT_TIMEOUT = 2.0


@pytest.fixture
async def proxied(settings: Settings, test_db: str, db_proxy: SwitchProxy) -> AsyncIterator[Database]:
    """A Database on the test database through `db_proxy`, connecting within CONNECT_TIMEOUT."""
    url = url_through(test_db, db_proxy.port)
    database = Database(settings.model_copy(update={"database_url": url, "db_connect_timeout": CONNECT_TIMEOUT}))
    yield database
    await database.dispose()


async def ping(database: Database) -> None:
    async with database.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def test_statement_timeout_reaches_the_server(settings: Settings) -> None:
    database = Database(settings.model_copy(update={"db_statement_timeout": 1.5}))
    try:
        async with database.engine.connect() as connection:
            assert await connection.scalar(text("SHOW statement_timeout")) == "1500ms"
    finally:
        await database.dispose()


async def test_sessions_ask_for_tcp_keepalives(proxied: Database) -> None:
    async with proxied.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT name, setting, source FROM pg_settings WHERE name = ANY(:names)"),
                {"names": list(TCP_KEEPALIVES)},
            )
        ).all()
        over_tcp = await connection.scalar(text("SELECT inet_client_addr() IS NOT NULL"))
    # Over a Unix socket (the embedded server behind the proxy) the server shows 0 for these,
    # but still records that the client set them.
    assert {name: source for name, _, source in rows} == dict.fromkeys(TCP_KEEPALIVES, "client")
    if over_tcp:
        assert {name: setting for name, setting, _ in rows} == TCP_KEEPALIVES


async def test_connect_timeout_bounds_a_server_that_never_answers(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    # A bound of its own, shorter than CONNECT_TIMEOUT: no connection is to succeed here.
    bound = 0.5
    url = url_through(test_db, db_proxy.port)
    silent = Database(settings.model_copy(update={"database_url": url, "db_connect_timeout": bound}))
    await db_proxy.set_mode(Mode.HANG)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ping(silent), GUARD)
    finally:
        await silent.dispose()
    assert time.monotonic() - started < bound + 1.0


async def test_pool_timeout_bounds_the_wait_for_a_connection(settings: Settings) -> None:
    bounded = {"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 0.3}
    database = Database(settings.model_copy(update=bounded))
    try:
        async with database.engine.connect():
            started = time.monotonic()
            with pytest.raises(Exception, match="QueuePool limit"):
                await asyncio.wait_for(ping(database), GUARD)
            elapsed = time.monotonic() - started
    finally:
        await database.dispose()
    assert elapsed < 0.3 + 1.0


async def test_a_connection_the_server_closed_is_replaced_at_checkout(
    proxied: Database, db_proxy: SwitchProxy, engine: AsyncEngine
) -> None:
    await ping(proxied)  # leaves a connection in the pool
    async with engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": db_proxy.backend_pids[1]})
    await asyncio.sleep(0.1)

    await ping(proxied)  # would fail with "connection is closed" on the pooled one
    assert db_proxy.accepted == 2


async def test_shutdown_aborts_connections_to_a_server_that_stopped_answering(
    proxied: Database, db_proxy: SwitchProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # Several connections in the pool, then the server goes silent.
    connections = [await proxied.engine.connect() for _ in range(4)]
    for connection in connections:
        await connection.execute(text("SELECT 1"))
    for connection in connections:
        await connection.close()
    await db_proxy.set_mode(Mode.HANG)

    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="sqlalchemy.pool"):
        await asyncio.wait_for(proxied.dispose(), GUARD)
    elapsed = time.monotonic() - started

    # One unanswered goodbye, not one per connection, nor the statement timeout's 30 s.
    assert GOODBYE_TIMEOUT * 0.8 <= elapsed < GOODBYE_TIMEOUT + 0.5
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_shutdown_says_goodbye_to_a_server_that_answers(proxied: Database, db_proxy: SwitchProxy) -> None:
    connections = [await proxied.engine.connect() for _ in range(3)]
    for connection in connections:
        await connection.execute(text("SELECT 1"))
    for connection in connections:
        await connection.close()

    await proxied.dispose()
    assert [message.kind for message in db_proxy.sent].count("X") == 3  # Terminate, on each connection
