"""GET /health and /health/live: the plan's body, and bounded answers when the database is in trouble.

Time limits here are generous bounds that only a missing timeout would break (the defaults wait
30 to 60 s); real latencies are measured by `invoke bench`, not asserted in tests.
"""

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from unittest.mock import AsyncMock

import httpx
import pytest
from fastapi.testclient import TestClient

from app import __version__
from app.core.config import Settings
from app.core.database import Database
from app.core.probe import DatabaseProbe
from devtools.network import Mode, SwitchProxy, free_port
from tests.conftest import build_app
from tests.harness import url_at, url_through

FIELDS = {"status", "timestamp", "database", "version", "environment"}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
BUDGET = 0.5
# Far below the 30-60 s an unbounded wait takes, far above any scheduling noise.
SLACK = 1.0


@asynccontextmanager
async def client_for(settings: Settings, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings.model_copy(update=overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def test_health_answers_the_plan_body(client: TestClient) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    response = client.get("/health")
    after = datetime.now(UTC)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == FIELDS
    assert body["status"] == "ok"
    assert body["database"] == "connected"
    assert body["version"] == __version__ == "0.1.0"
    assert body["environment"] == "test"
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    stamp = datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= after
    assert response.headers["cache-control"] == "no-store"


async def test_health_through_async_client(async_client: httpx.AsyncClient) -> None:
    response = await async_client.get("/health")
    assert response.status_code == 200
    assert response.json()["database"] == "connected"


async def test_refused_database_gives_503_quickly(settings: Settings) -> None:
    async with client_for(settings, database_url=url_at(free_port()), health_timeout=BUDGET) as client:
        started = time.monotonic()
        response = await client.get("/health")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert set(body) == FIELDS
    assert body["status"] == "error"
    assert body["database"] == "disconnected"
    assert body["version"] == __version__
    assert TIMESTAMP.match(body["timestamp"])
    assert response.headers["cache-control"] == "no-store"
    assert elapsed < BUDGET + SLACK


async def test_hung_database_gives_503_within_budget(settings: Settings, test_db: str, db_proxy: SwitchProxy) -> None:
    await db_proxy.set_mode(Mode.HANG)
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), health_timeout=BUDGET) as client:
        started = time.monotonic()
        response = await client.get("/health")
        elapsed = time.monotonic() - started

    assert db_proxy.accepted == 1, "the check should have reached the hung server"
    assert response.status_code == 503
    assert response.json()["database"] == "disconnected"
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


async def test_result_is_not_reused_after_ttl(settings: Settings, test_db: str, db_proxy: SwitchProxy) -> None:
    await db_proxy.set_mode(Mode.HANG)
    overrides = {"health_timeout": 0.1, "health_cache_ttl": 0.0}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        await client.get("/health")
        await client.get("/health")
    assert db_proxy.accepted == 2


@pytest.mark.parametrize("outage", [Mode.REFUSE, Mode.HANG])
async def test_health_recovers_when_database_returns(
    settings: Settings, test_db: str, db_proxy: SwitchProxy, outage: Mode
) -> None:
    overrides = {"health_timeout": BUDGET, "health_cache_ttl": 0.1}
    async with client_for(settings, database_url=url_through(test_db, db_proxy.port), **overrides) as client:
        assert (await client.get("/health")).status_code == 200
        await db_proxy.set_mode(outage)
        await asyncio.sleep(0.15)  # past the reuse window of the last result
        assert (await client.get("/health")).status_code == 503

        await db_proxy.set_mode(Mode.FORWARD)
        deadline = time.monotonic() + 5
        status = 503
        while status != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            status = (await client.get("/health")).status_code
        assert status == 200, "the app did not notice the database came back"


async def test_outage_leaks_no_secret(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="app.core.probe"):
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


async def test_a_failed_check_does_not_wedge_the_probe(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    database = Database(settings.model_copy(update={"database_url": url_at(free_port())}))
    probe = DatabaseProbe(database, timeout=BUDGET, ttl=0.0, masked_url="the test database")
    monkeypatch.setattr(probe, "_ping", AsyncMock(side_effect=RuntimeError("a bug in the check")))
    with pytest.raises(RuntimeError):
        await probe.is_reachable()

    monkeypatch.undo()
    assert await probe.is_reachable() is False, "the next probe must run a new check, not replay the failure"
    await probe.aclose()
    await database.dispose()


async def test_live_answers_without_database(settings: Settings) -> None:
    async with client_for(settings, database_url=url_at(free_port())) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 503


def test_openapi_documents_both_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    health = paths["/health"]["get"]["responses"]
    assert health["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/HealthResponse")
    assert health["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/HealthResponse")
    live = paths["/health/live"]["get"]["responses"]
    assert live["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/LivenessResponse")


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"]),
    ],
)
def test_docs_assets_are_served_by_the_app(client: TestClient, page: str, assets: list[str]) -> None:
    html = client.get(page).text
    assert not re.search(r"https?://", html), "the page loads something from the internet"
    for asset in assets:
        url = re.search(rf'["\']([^"\']*{re.escape(asset)})["\']', html)
        assert url, f"{page} does not reference {asset}"
        assert url.group(1).startswith("/"), f"{asset} is not served by the app: {url.group(1)}"
        response = client.get(url.group(1))
        assert response.status_code == 200
        assert len(response.content) > 10_000
