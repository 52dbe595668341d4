"""The log of a real uvicorn: one format for every line, a line per request, no line for a good probe."""

import asyncio
import json
import re
import uuid
from pathlib import Path

import pytest

from app.core.config import Settings
from devtools.network import free_port
from tests import processes
from tests.harness import served, url_at

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ \[(\S+)\] ")


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
    # The project's app with the write routes of tests/writes.py, whose tables this database lacks.
    async with served(
        settings, log, app="tests.writes:create_app", options=["--factory", *options], log_format="json"
    ) as server:
        assert (await server.client.get("/health")).status_code == 200
        assert (await server.client.head("/health/live")).status_code == 200
        docs = await server.client.get("/docs", headers={"X-Request-ID": sent_id})
        refused = await server.client.post("/health", headers={"X-Request-ID": "not an id"})
        failed = await server.client.post("/accounts", json={"email": "ada@example.com"})
        servers = 2 if "--workers" in options else 1
        # Each server process says where the database stands, in the background of its start-up.
        for _ in range(100):
            if len(re.findall(r'"logger":\s*"app.core.migrations"', log.read_text())) == servers:
                break
            await asyncio.sleep(0.1)

    entries = records(log)
    assert requests_logged(entries) == [("GET", "/docs", 200), ("POST", "/health", 405), ("POST", "/accounts", 500)]
    assert not [entry for entry in entries if entry["logger"] == "uvicorn.access"], "one request log, not two"
    docs_entry, refused_entry, _ = (entry for entry in entries if entry["logger"] == "app.request")
    assert docs.headers["x-request-id"] == docs_entry["request_id"] == sent_id
    assert refused.headers["x-request-id"] == refused_entry["request_id"] != "not an id"
    assert isinstance(docs_entry["duration_ms"], float)
    assert str(docs_entry["client"]).startswith("127.0.0.1:")
    # A bug: a bare 500, and its traceback once in the log, in one object, under the request's id.
    assert failed.json() == {"detail": "Internal Server Error"}
    traced = [entry for entry in entries if entry["request_id"] == failed.headers["x-request-id"]]
    assert [entry["logger"] for entry in traced] == ["app.request", "uvicorn.error"]
    assert "UndefinedTableError" in str(traced[1]["exception"])
    # uvicorn's own lines, those of the process that supervises or reloads included; and each
    # server process's line on where the database stands.
    assert [entry["message"] for entry in entries].count("Application startup complete.") == servers
    assert any("reloader" in str(entry["message"]) or "parent" in str(entry["message"]) for entry in entries)
    revisions = [entry for entry in entries if entry["logger"] == "app.core.migrations"]
    assert len(revisions) == servers
    assert all("at this release's migrations" in str(entry["message"]) for entry in revisions)


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


def test_the_log_config_alone_sets_the_level() -> None:
    """As uvicorn's processes that never import the app have it: no line below LOG_LEVEL is even made,
    and uvicorn does not wrap an app in its logger of every ASGI message (which lets TRACE through).
    Two levels in one process, each read anew as a new process would."""
    script = (
        "import logging, os, uvicorn\n"
        "from app.core.config import get_settings\n"
        "for level in ('INFO', 'WARNING'):\n"
        "    os.environ['LOG_LEVEL'] = level\n"
        "    get_settings.cache_clear()\n"
        "    config = uvicorn.Config('starlette.applications:Starlette', factory=True, log_config='logging.json',"
        " proxy_headers=False)\n"
        "    config.load()\n"
        "    print(logging.getLevelName(logging.getLogger('uvicorn.error').getEffectiveLevel()),"
        " type(config.loaded_app).__name__)\n"
    )
    shown = processes.run(["-c", script], timeout=60)
    assert shown.stdout.splitlines() == ["INFO Starlette", "WARNING Starlette"], shown.stderr
