"""GET and HEAD /health and /health/live: the plan's body and headers, up and down, and their documentation.

How the database check behaves under faults is in test_probe.py.
"""

import re
from datetime import UTC, datetime

import httpx
import pytest

from app import __version__
from app.core.config import Settings
from devtools.network import free_port
from tests.harness import client_for, url_at

FIELDS = ["status", "timestamp", "database", "version", "environment"]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


async def test_health_answers_the_plan_body(client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    response = await client.get("/health")
    after = datetime.now(UTC)

    assert response.status_code == 200
    body = response.json()
    assert list(body) == FIELDS
    assert body["status"] == "ok"
    assert body["database"] == "connected"
    assert body["version"] == __version__ == "0.1.0"
    assert body["environment"] == "test"
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    stamp = datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= after
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"


async def test_unavailable_database_gives_503_with_the_same_fields(settings: Settings) -> None:
    async with client_for(settings, database_url=url_at(free_port())) as client:
        response = await client.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert list(body) == FIELDS
    assert body["status"] == "error"
    assert body["database"] == "disconnected"
    assert body["version"] == __version__
    assert body["environment"] == "test"
    assert TIMESTAMP.match(body["timestamp"])
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/health", "/health/live"])
async def test_head_answers_like_get(client: httpx.AsyncClient, path: str) -> None:
    get, head = await client.get(path), await client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.headers["cache-control"] == get.headers["cache-control"] == "no-store"
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.content == b""


async def test_head_reports_an_unavailable_database(settings: Settings) -> None:
    async with client_for(settings, database_url=url_at(free_port())) as client:
        response = await client.head("/health")
    assert response.status_code == 503


async def test_live_answers_without_database(settings: Settings) -> None:
    async with client_for(settings, database_url=url_at(free_port())) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert live.headers["cache-control"] == "no-store"
    assert ready.status_code == 503


@pytest.mark.parametrize("path", ["/health", "/health/live"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_answer_405_naming_get_and_head(client: httpx.AsyncClient, path: str, method: str) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_openapi_documents_get_only(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/health"]) == set(paths["/health/live"]) == {"get"}
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
async def test_docs_assets_are_served_by_the_app(client: httpx.AsyncClient, page: str, assets: list[str]) -> None:
    html = (await client.get(page)).text
    assert not re.search(r"https?://", html), "the page loads something from the internet"
    for asset in assets:
        url = re.search(rf'["\']([^"\']*{re.escape(asset)})["\']', html)
        assert url, f"{page} does not reference {asset}"
        assert url.group(1).startswith("/"), f"{asset} is not served by the app: {url.group(1)}"
        response = await client.get(url.group(1))
        assert response.status_code == 200
        assert len(response.content) > 10_000
