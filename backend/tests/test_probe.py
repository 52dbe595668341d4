"""The database check behind /health, under faults injected by a proxy in front of the real test database.

Time limits here are generous bounds that only a missing timeout would break (the defaults wait
30 to 60 s); real latencies are measured by `invoke bench`, not asserted in tests.
"""

import asyncio
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator
from unittest.mock import AsyncMock

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.database import Database
from app.core.probe import DatabaseProbe
from devtools.network import Mode, SwitchProxy, free_port
from tests.harness import build_app, client_for, url_at, url_through

BUDGET = 0.3
# Far below the 30-60 s an unbounded wait takes, far above any scheduling noise.
SLACK = 1.0
PROBE_LOG = "app.core.probe"


async def poll_until_connected(client: httpx.AsyncClient, limit: float) -> float:
    """Seconds until /health says connected, polling every 50 ms; fails after `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if (await client.get("/health")).status_code == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not connected within {limit} s")


async def end_sessions(engine: AsyncEngine, pids: list[int]) -> None:
    """Ends these server processes, as an administrator or a restart would."""
    async with engine.connect() as connection:
        for pid in pids:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_refused_database_gives_503_quickly(settings: Settings) -> None:
    async with client_for(settings, database_url=url_at(free_port()), health_timeout=BUDGET) as client:
        started = time.monotonic()
        response = await client.get("/health")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < BUDGET + SLACK


async def test_hung_database_gives_503_within_budget(settings: Settings, test_db: str, db_proxy: SwitchProxy) -> None:
    await db_proxy.set_mode(Mode.HANG)
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), health_timeout=BUDGET) as client:
        started = time.monotonic()
        response = await client.get("/health")
        elapsed = time.monotonic() - started

    assert db_proxy.accepted == 1, "the check should have reached the hung server"
    assert response.status_code == 503
    assert BUDGET * 0.8 <= elapsed < BUDGET + SLACK


async def test_database_that_stops_answering_gives_503_within_budget(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    overrides = {"health_timeout": BUDGET, "health_cache_ttl": 0.0}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        assert (await client.get("/health")).status_code == 200  # a pooled connection now exists

        await db_proxy.set_mode(Mode.HANG)
        started = time.monotonic()
        response = await client.get("/health")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    # Not BUDGET plus the seconds the driver spends closing the stuck connection politely.
    assert elapsed < BUDGET + SLACK
    # Aborted, not cancelled: cancelling makes the driver connect again to send a cancel request.
    assert db_proxy.accepted == 1


async def test_burst_against_hung_database_costs_one_check(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    await db_proxy.set_mode(Mode.HANG)
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), health_timeout=BUDGET) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get("/health") for _ in range(20)))
        elapsed = time.monotonic() - started
        again = await client.get("/health")

    assert [r.status_code for r in responses] == [503] * 20
    assert again.status_code == 503
    # Twenty concurrent probes and one more within the reuse window: a single connection attempt.
    assert db_proxy.accepted == 1
    assert elapsed < BUDGET + SLACK


@pytest.mark.parametrize(("ttl", "checks"), [(5.0, 0), (0.0, 2)])
async def test_a_result_answers_probes_for_the_ttl(
    settings: Settings, test_db: str, db_proxy: SwitchProxy, ttl: float, checks: int
) -> None:
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), health_cache_ttl=ttl) as client:
        assert (await client.get("/health")).status_code == 200
        mark = len(db_proxy.sent)
        statuses = [(await client.get("/health")).status_code for _ in range(2)]
    assert statuses == [200] * 2
    assert sum(message.ends_round_trip for message in db_proxy.sent[mark:]) == checks


async def test_check_on_a_pooled_connection_is_one_round_trip(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    overrides = {"health_cache_ttl": 0.0}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        assert (await client.get("/health")).status_code == 200  # connects, and runs the driver's set-up queries
        mark = len(db_proxy.sent)
        assert (await client.get("/health")).status_code == 200

    check = db_proxy.sent[mark:]
    assert sum(message.ends_round_trip for message in check) == 1, check
    assert not any(m.sql.upper().startswith(("BEGIN", "ROLLBACK", "COMMIT")) for m in check), check
    assert db_proxy.accepted == 1


@pytest.mark.parametrize("fault", ["terminated", "failed over"])
async def test_a_connection_the_server_closed_gives_no_false_503(
    settings: Settings, test_db: str, db_proxy: SwitchProxy, engine: AsyncEngine, fault: str
) -> None:
    overrides = {"health_timeout": BUDGET, "health_cache_ttl": 0.0}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        assert (await client.get("/health")).status_code == 200
        if fault == "terminated":
            # The server says goodbye and closes: the driver sees it before the next check.
            await end_sessions(engine, list(db_proxy.backend_pids.values()))
            await asyncio.sleep(0.1)
        else:
            # The old server vanished without a word: only the next statement finds out.
            db_proxy.fail_over()
        response = await client.get("/health")

    assert response.status_code == 200, "the database is up: a new connection should have been made"
    assert db_proxy.accepted == 2


async def test_slow_database_is_reported_connected(settings: Settings, test_db: str, db_proxy: SwitchProxy) -> None:
    # 100 ms per round trip: opening a connection (a dozen round trips, the driver's set-up
    # included) takes longer than one check's budget, while a check (one or two) fits in it.
    db_proxy.delay = 0.05
    overrides = {"health_timeout": 0.3, "health_cache_ttl": 0.0, "db_connect_timeout": 10.0}
    answers: list[tuple[int, float]] = []
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and [status for status, _ in answers[-3:]] != [200] * 3:
            started = time.monotonic()
            status = (await client.get("/health")).status_code
            answers.append((status, time.monotonic() - started))

    assert [status for status, _ in answers[-3:]] == [200] * 3, answers
    assert answers[0][0] == 503, "the first check cannot have connected within its budget"
    assert max(elapsed for _, elapsed in answers) < 0.3 + SLACK, answers
    assert db_proxy.accepted == 1, "the first connection attempt should have been kept, not restarted"


async def test_the_drivers_set_up_queries_are_bounded_by_the_connect_timeout(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    db_proxy.delay = 0.05  # so the server can be silenced while the set-up queries are on the way
    overrides = {"health_timeout": 0.2, "health_cache_ttl": 0.0, "db_connect_timeout": 0.6}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        first = asyncio.create_task(client.get("/health"))
        await asyncio.wait_for(db_proxy.until_sent("Q", "P"), 5)  # connected, now setting up
        await db_proxy.set_mode(Mode.HANG)
        assert (await first).status_code == 503
        # The attempt ends by its bound (not the 30 s statement timeout), and the next one begins.
        deadline = time.monotonic() + 0.6 + SLACK
        while db_proxy.accepted < 2 and time.monotonic() < deadline:
            await client.get("/health")
        attempts = db_proxy.accepted  # before shutdown, which may connect to send a cancel request
    assert attempts >= 2


async def test_busy_requests_do_not_fail_the_check(settings: Settings) -> None:
    overrides = {"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 0.2, "health_timeout": BUDGET}
    app = build_app(settings.model_copy(update=overrides))
    async with (
        app.router.lifespan_context(app),
        app.state.database.engine.connect(),  # every connection requests may have is taken
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        response = await client.get("/health")
    assert response.status_code == 200


async def test_an_aborted_check_leaves_the_requests_connections_alone(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    overrides = {"database_url": url_through(test_db, db_proxy.port), "health_timeout": BUDGET, "health_cache_ttl": 0.0}
    app = build_app(settings.model_copy(update=overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        engine: AsyncEngine = app.state.database.engine

        async def use_three_connections() -> None:
            connections = [await engine.connect() for _ in range(3)]
            for connection in connections:
                await connection.execute(text("SELECT 1"))
                await connection.close()

        await use_three_connections()
        assert (await client.get("/health")).status_code == 200
        opened = db_proxy.accepted

        db_proxy.delay = BUDGET  # a round trip now takes twice the budget: the check aborts its connection
        assert (await client.get("/health")).status_code == 503
        db_proxy.delay = 0.0
        await use_three_connections()
    assert db_proxy.accepted == opened, "the requests' connections were replaced"


@pytest.mark.parametrize("outage", [Mode.REFUSE, Mode.HANG])
async def test_recovers_soon_after_the_database_returns(
    settings: Settings, test_db: str, db_proxy: SwitchProxy, outage: Mode
) -> None:
    overrides = {"health_timeout": BUDGET, "health_cache_ttl": 0.3}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        assert (await client.get("/health")).status_code == 200
        await db_proxy.set_mode(outage)
        await asyncio.sleep(0.35)  # past the reuse window of the last result
        assert (await client.get("/health")).status_code == 503

        await db_proxy.set_mode(Mode.FORWARD)
        assert await poll_until_connected(client, limit=5) < 2 + SLACK


async def test_recovery_from_a_silent_database_is_bounded_by_the_connect_timeout(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    connect_timeout = 0.8
    overrides = {"health_timeout": 0.2, "health_cache_ttl": 0.0, "db_connect_timeout": connect_timeout}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        await db_proxy.set_mode(Mode.HANG)
        assert (await client.get("/health")).status_code == 503  # an attempt now waits on the silent server
        # The network returns, but the attempt's packets are lost for good: only its bound ends it.
        await db_proxy.set_mode(Mode.FORWARD, cut=False)
        assert await poll_until_connected(client, limit=connect_timeout + 10) < connect_timeout + 1 + SLACK
    assert db_proxy.accepted == 2


async def test_one_log_line_per_change_of_state_or_reason(
    settings: Settings, test_db: str, db_proxy: SwitchProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # Budgets a connection to a working database meets even on a busy machine under coverage.
    overrides = {"health_timeout": 0.5, "health_cache_ttl": 0.0, "db_connect_timeout": 0.6}
    with caplog.at_level(logging.INFO, logger=PROBE_LOG):
        async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
            for mode in (Mode.FORWARD, Mode.REFUSE, Mode.HANG, Mode.FORWARD):
                await db_proxy.set_mode(mode)
                for _ in range(3):
                    await client.get("/health")
                if mode is Mode.HANG:
                    await asyncio.sleep(0.7)  # the attempt in flight ends by its bound, not by the next switch

    lines = [record.getMessage() for record in caplog.records if record.name == PROBE_LOG]
    assert len(lines) == 3, lines
    assert "unavailable: refused (ConnectionRefusedError: " in lines[0]
    assert "unavailable: timeout (" in lines[1]
    assert lines[2].endswith("is available again")


@pytest.fixture
async def login_role(engine: AsyncEngine) -> AsyncIterator[tuple[str, str]]:
    """A role of the test's own that may log in, and its password; dropped afterwards."""
    name, password = f"probe_{secrets.token_hex(4)}", secrets.token_hex(8)
    async with engine.connect() as connection:
        await connection.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
        await connection.commit()
    yield name, password
    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :name"), {"name": name}
        )
        await connection.execute(text(f"DROP ROLE {name}"))
        await connection.commit()


async def alter_role(engine: AsyncEngine, name: str, change: str) -> None:
    async with engine.connect() as connection:
        await connection.execute(text(f"ALTER ROLE {name} {change}"))
        await connection.commit()


async def test_authentication_failure_is_logged_as_such(
    settings: Settings,
    test_db: str,
    db_proxy: SwitchProxy,
    engine: AsyncEngine,
    login_role: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name, password = login_role
    url = url_through(test_db, db_proxy.port, username=name, password=password)
    with caplog.at_level(logging.INFO, logger=PROBE_LOG):
        async with client_for(settings, database_url=url, health_cache_ttl=0.0) as client:
            assert (await client.get("/health")).status_code == 200
            # While the app holds a connection, the role loses its password and its right to log in;
            # then its sessions end.
            await alter_role(engine, name, f"NOLOGIN PASSWORD '{secrets.token_hex(8)}'")
            await end_sessions(engine, list(db_proxy.backend_pids.values()))
            await asyncio.sleep(0.1)
            statuses = [(await client.get("/health")).status_code for _ in range(3)]

    assert statuses == [503] * 3
    lines = [record.getMessage() for record in caplog.records if record.name == PROBE_LOG]
    assert len(lines) == 1, lines
    assert "unavailable: authentication failed (" in lines[0]
    assert password not in caplog.text


async def test_a_slow_failure_is_logged_once_with_its_reason(
    settings: Settings,
    test_db: str,
    db_proxy: SwitchProxy,
    engine: AsyncEngine,
    login_role: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name, password = login_role
    await alter_role(engine, name, "NOLOGIN")
    # Refusing the login takes some round trips: longer than a probe waits.
    db_proxy.delay = 0.1
    url = url_through(test_db, db_proxy.port, username=name, password=password)
    with caplog.at_level(logging.INFO, logger=PROBE_LOG):
        async with client_for(settings, database_url=url, health_timeout=0.2, health_cache_ttl=0.0) as client:
            statuses = [(await client.get("/health")).status_code for _ in range(5)]

    assert statuses == [503] * 5
    probe_records = [record for record in caplog.records if record.name == PROBE_LOG]
    reasons = [record.getMessage().split("unavailable: ")[1].split(" (")[0] for record in probe_records]
    assert reasons == ["timeout", "authentication failed"], caplog.text


async def test_outage_leaks_no_secret(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with caplog.at_level(logging.WARNING, logger=PROBE_LOG):
        async with client_for(settings, database_url=url_at(port, password="hunter2-secret")) as client:
            response = await client.get("/health")

    assert response.status_code == 503
    assert "hunter2" not in response.text
    assert str(port) not in response.text
    assert "postgresql" not in response.text
    logged = caplog.text
    assert "hunter2" not in logged
    assert f"127.0.0.1:{port}" in logged, "the log should say which database failed"
    assert "***" in logged


@pytest.mark.parametrize("cancels", [1, 2, 3])
async def test_a_check_cancelled_mid_ping_leaves_nothing_behind(
    settings: Settings, test_db: str, db_proxy: SwitchProxy, caplog: pytest.LogCaptureFixture, cancels: int
) -> None:
    overrides = {"database_url": url_through(test_db, db_proxy.port), "health_cache_ttl": 0.0}
    database = Database(settings.model_copy(update=overrides))
    probe = DatabaseProbe(database.probe_engine, settings.model_copy(update=overrides))
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        assert await probe.is_available()
        await db_proxy.set_mode(Mode.HANG)
        waiting = asyncio.create_task(probe.is_available())
        await asyncio.sleep(0.1)  # the ping now waits on the silent server
        # A shutdown cancels the check, and may do so again while it is aborting its connection.
        check = probe._in_flight
        assert check is not None
        for _ in range(cancels):
            check.cancel()
            await asyncio.sleep(0)
        await asyncio.gather(check, waiting, return_exceptions=True)
        await asyncio.wait_for(database.dispose(), SLACK)
        del check, waiting  # what they hold (the ping's task among it) may now be collected,
        gc.collect()  # and a task whose exception nobody retrieved is reported when it is
        await asyncio.sleep(0)
    assert not caplog.records, caplog.text


async def test_a_failed_check_does_not_wedge_the_probe(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    database = Database(settings.model_copy(update={"database_url": url_at(free_port())}))
    probe = DatabaseProbe(database.probe_engine, settings.model_copy(update={"health_cache_ttl": 0.0}))
    monkeypatch.setattr(probe, "_check", AsyncMock(side_effect=RuntimeError("a bug in the check")))
    with pytest.raises(RuntimeError):
        await probe.is_available()

    monkeypatch.undo()
    assert await probe.is_available() is False, "the next probe must run a new check, not replay the failure"
    await probe.aclose()
    await database.dispose()
