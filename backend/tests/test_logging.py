"""The log of a real uvicorn: one format for every line, a line per request, no line for a good probe."""

import json
import re
import uuid
from pathlib import Path

import pytest

from app.core.config import Settings
from devtools.network import free_port
from tests.harness import served, url_at

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ \[(\S+)\] ")


def records(log: Path) -> list[dict[str, object]]:
    """Every line of the log as a JSON object; fails on a line that is not one."""
    lines = log.read_text().splitlines()
    assert lines
    return [json.loads(line) for line in lines]


def requests_logged(entries: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(entry["method"], entry["path"], entry["status"]) for entry in entries if entry["logger"] == "app.request"]


@pytest.mark.parametrize("options", [["--workers", "2"], ["--reload"]], ids=["workers", "reload"])
async def test_every_line_is_one_json_object_with_workers_or_reload(
    settings: Settings, tmp_path: Path, options: list[str]
) -> None:
    log = tmp_path / "uvicorn.log"
    sent_id = uuid.uuid4().hex
    async with served(settings, log, options=options, log_format="json") as server:
        assert (await server.client.get("/health")).status_code == 200
        assert (await server.client.head("/health/live")).status_code == 200
        docs = await server.client.get("/docs", headers={"X-Request-ID": sent_id})
        refused = await server.client.post("/health", headers={"X-Request-ID": "not an id"})

    entries = records(log)
    assert requests_logged(entries) == [("GET", "/docs", 200), ("POST", "/health", 405)]
    assert not [entry for entry in entries if entry["logger"] == "uvicorn.access"], "one request log, not two"
    docs_entry, refused_entry = (entry for entry in entries if entry["logger"] == "app.request")
    assert docs.headers["x-request-id"] == docs_entry["request_id"] == sent_id
    assert refused.headers["x-request-id"] == refused_entry["request_id"] != "not an id"
    assert isinstance(docs_entry["duration_ms"], float)
    assert str(docs_entry["client"]).startswith("127.0.0.1:")
    # uvicorn's own lines, those of the process that supervises or reloads included.
    started = [entry for entry in entries if entry["message"] == "Application startup complete."]
    assert len(started) == (2 if "--workers" in options else 1)
    assert any("reloader" in str(entry["message"]) or "parent" in str(entry["message"]) for entry in entries)


async def test_an_exception_is_logged_once_with_its_request_id(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    app, factory = "tests.writes:create_app", ["--factory"]
    async with served(settings, log, app=app, options=factory, log_format="json") as server:
        # The write routes' tables do not exist in this database: the route fails.
        response = await server.client.post("/accounts", json={"email": "ada@example.com"})

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    request_id = response.headers["x-request-id"]
    entries = [entry for entry in records(log) if entry["request_id"] == request_id]
    assert [entry["logger"] for entry in entries] == ["app.request", "uvicorn.error"]
    assert entries[0]["status"] == 500
    assert "UndefinedTableError" in str(entries[1]["exc_info"])


async def test_text_in_development_with_failing_probes_written(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    async with served(settings, log, database_url=url_at(free_port())) as server:
        assert (await server.client.get("/health/live")).status_code == 200
        assert (await server.client.get("/health")).status_code == 503

    lines = log.read_text().splitlines()
    assert all(TEXT_LINE.match(line) for line in lines), lines
    written = [line for line in lines if " app.request " in line]
    assert len(written) == 1
    assert re.search(r"\] GET /health 503 [\d.]+ ms 127\.0\.0\.1:\d+$", written[0]), written


async def test_log_level_governs_uvicorn_too(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    async with served(settings, log, database_url=url_at(free_port()), log_level="WARNING") as server:
        assert (await server.client.get("/health")).status_code == 503
        assert (await server.client.get("/docs")).status_code == 200

    levels = [TEXT_LINE.match(line) for line in log.read_text().splitlines()]
    assert levels, "the database's outage is a warning"
    assert {match.group(1) for match in levels if match} == {"WARNING"}, log.read_text()
