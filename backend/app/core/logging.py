"""Logging: one format for every line the service writes, uvicorn's included, and the request log.

Readable text in development, one JSON object a line where LOG_FORMAT is json (the default in
production), at LOG_LEVEL, on stderr. uvicorn takes the same handler from backend/logging.json
(`--log-config`), so that its processes that never import the app (the reloader, the supervisor
of --workers) write in the same format; the app configures it again on import, for a uvicorn
started without it. uvicorn's access log is off (`--no-access-log`): `RequestLog` writes one line
per request instead, with its request id, and leaves out the health probes that succeed.
"""

import json
import logging.config
import time
from pathlib import Path

from asgi_correlation_id import CorrelationIdFilter
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import get_settings

LOG_CONFIG = Path(__file__).resolve().parents[2] / "logging.json"
TEXT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"
# Polled every few seconds by compose, Docker, load balancers and Kubernetes: a line each would bury
# the rest. Only the answers that say all is well are left out.
PROBES = frozenset({"/health", "/health/live"})

requests = logging.getLogger("app.request")


def handler() -> logging.Handler:
    """The service's one handler, made from the settings (the factory backend/logging.json names)."""
    settings = get_settings()
    # LOG_LEVEL is the root's level, not only the handler's: a line below it is then never made.
    # Every process builds its handler here, uvicorn's included, and uvicorn wraps the app in a
    # logger of every ASGI message when its loggers' effective level lets TRACE through.
    logging.getLogger().setLevel(settings.log_level)
    stream = logging.StreamHandler()
    stream.setLevel(settings.log_level)
    # The request id of the request a line was written for, or "-".
    stream.addFilter(CorrelationIdFilter(default_value="-"))
    if settings.log_format == "json":
        renamed = {"levelname": "level", "name": "logger", "correlation_id": "request_id"}
        # uvicorn repeats some messages with terminal colours in `color_message`.
        skipped = [*RESERVED_ATTRS, "color_message"]
        fields = ["levelname", "name", "message", "correlation_id"]
        stream.setFormatter(OrjsonFormatter(fields, rename_fields=renamed, reserved_attrs=skipped, timestamp="time"))
    else:
        stream.setFormatter(logging.Formatter(TEXT))
    return stream


def configure_logging() -> None:
    logging.config.dictConfig(json.loads(LOG_CONFIG.read_text()))
    # Whether or not uvicorn was told --no-access-log: the request log below replaces it.
    logging.getLogger("uvicorn.access").disabled = True


class RequestLog:
    """One line per request: method, path, status, duration in ms and client address (and, from
    the handler, the request id); a probe of PROBES answered 2xx is left out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not requests.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception is answered 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            method, path = scope["method"], scope["path"]
            probe = path.removeprefix(scope.get("root_path", "")) in PROBES and method in ("GET", "HEAD")
            if not (probe and 200 <= status < 300):
                duration = round((time.perf_counter() - started) * 1000, 1)
                client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
                fields = {"method": method, "path": path, "status": status, "duration_ms": duration, "client": client}
                # Made as Logger.info makes it, without looking up the caller's frame, which no
                # format here shows: a seventh of what a line costs, once per request.
                line = "%s %s %d %.1f ms %s", (method, path, status, duration, client)
                requests.handle(requests.makeRecord(requests.name, logging.INFO, "", 0, *line, None, extra=fields))
