"""Health endpoints: readiness with a database check, and liveness without one."""

import json
import time
from functools import lru_cache
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app import __version__
from app.core.config import Settings
from app.core.probe import DatabaseProbe

router = APIRouter(tags=["health"])

# Probes must see the current state, never a copy cached by a client or proxy.
NO_STORE = {"Cache-Control": "no-store"}


class HealthResponse(BaseModel):
    status: Literal["ok", "error"]
    timestamp: str = Field(description="Time of the answer, UTC, ISO 8601", examples=["2025-10-10T15:06:00Z"])
    database: Literal["connected", "disconnected"]
    version: str = Field(examples=[__version__])
    environment: Literal["development", "test", "production"]


class LivenessResponse(BaseModel):
    status: Literal["ok"]


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Readiness: the service and its database",
    responses={503: {"model": HealthResponse, "description": "The database is unreachable"}},
)
async def health(request: Request) -> Response:
    # Read from app.state rather than through Depends: sync dependencies run in the thread pool,
    # which cost this endpoint, polled by every orchestrator, most of its throughput.
    probe: DatabaseProbe = request.app.state.probe
    settings: Settings = request.app.state.settings
    connected = await probe.is_reachable()
    body = render_health(int(time.time()), connected, settings.environment)
    return Response(body, status_code=200 if connected else 503, media_type="application/json", headers=NO_STORE)


@lru_cache(maxsize=8)
def render_health(second: int, connected: bool, environment: str) -> bytes:
    """The /health body; rendered once per second and state, since the timestamp has 1 s resolution."""
    return json.dumps(
        {
            "status": "ok" if connected else "error",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)),
            "database": "connected" if connected else "disconnected",
            "version": __version__,
            "environment": environment,
        },
        separators=(",", ":"),
    ).encode()


@router.get("/health/live", response_model=LivenessResponse, summary="Liveness: the process answers")
async def live() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)
