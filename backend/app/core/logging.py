"""Logging: one format for every line the service writes, uvicorn's included, and the request log.

Every line is rendered by the same structlog processor: readable text in development, one JSON
object a line where LOG_FORMAT is json (the default in production), at LOG_LEVEL, on stderr. The
standard library's records (uvicorn's, SQLAlchemy's, the app's `logging.getLogger(__name__)`)
reach it through structlog's ProcessorFormatter, in the handler that backend/logging.json names
(uvicorn's `--log-config`), so that uvicorn's processes that never import the app (the reloader,
the supervisor of --workers) write in the same format; the app configures it again on import, for
a uvicorn started without it.

uvicorn's access log is off (`--no-access-log`): `RequestLog` writes one line per request instead,
with its request id, and leaves out the health probes that succeed. It renders its line with that
processor and writes it to stderr itself: through a logger, the standard library's or structlog's,
the line took 17 % or more of a cheap route's time in process, against 13 % so (bench/log_cost.py).
"""

import json
import logging.config
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import structlog
from asgi_correlation_id import correlation_id
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.typing import EventDict, Processor, WrappedLogger

from app.core.config import Settings, get_settings

LOG_CONFIG = Path(__file__).resolve().parents[2] / "logging.json"
# Polled every few seconds by compose, Docker, load balancers and Kubernetes: a line each would bury
# the rest. Only the answers that say all is well are left out.
PROBES = frozenset({"/health", "/health/live"})


def _stamped(event: EventDict) -> EventDict:
    event["message"] = event.pop("event")
    # A datetime, which orjson writes as RFC 3339 at a tenth of the cost of isoformat().
    event["time"] = datetime.now(UTC)
    # The id of the request the line was written for (asgi-correlation-id's), or "-".
    event["request_id"] = correlation_id.get() or "-"
    return event


def _json(logger: WrappedLogger, method: str, event: EventDict) -> bytes:
    return orjson.dumps(_stamped(event), default=str)


def _text(logger: WrappedLogger, method: str, event: EventDict) -> bytes:
    event = _stamped(event)
    line = f"{event['time']:%Y-%m-%d %H:%M:%S.%f}"[:-3]
    line += f" {event['level'].upper()} {event['logger']} [{event['request_id']}] {event['message']}"
    return (line + (f"\n{event['exception']}" if "exception" in event else "")).encode()


def _renderer(settings: Settings) -> Callable[[WrappedLogger, str, EventDict], bytes]:
    """The processor every line ends with: it stamps the line and renders it as UTF-8."""
    return _json if settings.log_format == "json" else _text


def _decoded(logger: WrappedLogger, method: str, line: EventDict | bytes) -> str:
    """The line as the handler's stream takes it: text."""
    return line.decode() if isinstance(line, bytes) else str(line)


def handler() -> logging.Handler:
    """The service's one handler, made from the settings (the factory backend/logging.json names)."""
    settings = get_settings()
    # LOG_LEVEL is the root's level, not only the handler's: a line below it is then never made.
    # Every process builds its handler here, uvicorn's included, and uvicorn wraps the app in a
    # logger of every ASGI message when its loggers' effective level lets TRACE through.
    logging.getLogger().setLevel(settings.log_level)
    stream = logging.StreamHandler()
    stream.setLevel(settings.log_level)
    # uvicorn repeats some messages with terminal colours in `color_message`: left out, as every extra.
    added = [structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name]
    rendered: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        _renderer(settings),
        _decoded,
    ]
    stream.setFormatter(structlog.stdlib.ProcessorFormatter(processors=rendered, foreign_pre_chain=added))
    return stream


def configure_logging() -> None:
    logging.config.dictConfig(json.loads(LOG_CONFIG.read_text()))
    # Whether or not uvicorn was told --no-access-log: the request log below replaces it.
    logging.getLogger("uvicorn.access").disabled = True


class RequestLog:
    """One line per request: method, path, status, duration in ms and client address (and the
    request id); a probe of PROBES answered 2xx is left out."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.enabled = logging.getLevelName(settings.log_level) <= logging.INFO
        self.render = _renderer(settings)
        self.stream = sys.stderr.buffer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
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
                event = {
                    "level": "info",
                    "logger": "app.request",
                    "event": f"{method} {path} {status} {duration} ms {client}",
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": duration,
                    "client": client,
                }
                # One write of the whole line, then a flush, as the handler does: lines never mix.
                self.stream.write(self.render(None, "info", event) + b"\n")
                self.stream.flush()
