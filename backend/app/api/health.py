"""Health endpoints: readiness with a database check, and liveness without one."""

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
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
async def health(request: Request) -> JSONResponse:
    # Read from app.state rather than through Depends: sync dependencies run in the thread pool,
    # which cost this endpoint, polled by every orchestrator, most of its throughput.
    probe: DatabaseProbe = request.app.state.probe
    settings: Settings = request.app.state.settings
    connected = await probe.is_reachable()
    body = {
        "status": "ok" if connected else "error",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "database": "connected" if connected else "disconnected",
        "version": __version__,
        "environment": settings.environment,
    }
    return JSONResponse(body, status_code=200 if connected else 503, headers=NO_STORE)


@router.get("/health/live", response_model=LivenessResponse, summary="Liveness: the process answers")
async def live() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)
