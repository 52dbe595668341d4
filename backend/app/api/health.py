"""Health endpoints: readiness with a database check, and liveness without one."""

import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from app import __version__
from app.api.deps import ReadinessDep, SettingsDep
from app.core.config import Environment

router = APIRouter(tags=["health"])

# Probes must see the current state, never a copy cached by a client or proxy.
NO_STORE = {"Cache-Control": "no-store"}


class HealthResponse(BaseModel):
    status: Literal["ok", "error"]
    timestamp: datetime = Field(description="Time of the answer, UTC, to the second", examples=["2025-10-10T15:06:00Z"])
    database: Literal["connected", "disconnected"]
    version: str = Field(examples=[__version__])
    environment: Environment


class LivenessResponse(BaseModel):
    status: Literal["ok"]


# HEAD answers like GET, without the body, for monitors that probe with HEAD. It is left out of
# the OpenAPI document, where it would repeat GET's operation.
@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Readiness: the service and its database",
    responses={503: {"model": HealthResponse, "description": "The database is unavailable, or the server is draining"}},
)
@router.head("/health", include_in_schema=False)
async def health(readiness: ReadinessDep, settings: SettingsDep) -> Response:
    # A Response of bytes rendered from HealthResponse, rather than the model for FastAPI to
    # validate and serialise: probes arrive constantly, and the body changes once a second at most.
    connected = await readiness.probe.is_available()
    ready = connected and not readiness.drain.draining
    body = render_health(int(time.time()), connected, ready, settings.environment)
    return Response(body, status_code=200 if ready else 503, media_type="application/json", headers=NO_STORE)


@lru_cache(maxsize=8)
def render_health(second: int, connected: bool, ready: bool, environment: Environment) -> bytes:
    """The /health body, rendered once per second and state: the timestamp has 1 s resolution."""
    return (
        HealthResponse(
            status="ok" if ready else "error",
            timestamp=datetime.fromtimestamp(second, UTC),
            database="connected" if connected else "disconnected",
            version=__version__,
            environment=environment,
        )
        .model_dump_json()
        .encode()
    )


@router.get("/health/live", response_model=LivenessResponse, summary="Liveness: the process answers")
@router.head("/health/live", include_in_schema=False)
async def live(response: Response) -> LivenessResponse:
    response.headers.update(NO_STORE)
    return LivenessResponse(status="ok")
