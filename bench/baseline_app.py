"""Baseline for the benchmark: the cheapest endpoint of this project's own shape, with no database.

An APIRouter added with include_router, one async dependency through an Annotated alias, a
pydantic response model of three fields, with a timestamp computed per request, and the middleware
every request of the app goes through (the request id, the request log); nothing cached. /health
must cost no more than this. Run by bench/run.py as `uvicorn baseline_app:app --app-dir bench`
with backend/ on PYTHONPATH and the app's environment and `--log-config`, so that its request log
is on as the app's is.
"""

from datetime import UTC, datetime
from typing import Annotated

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from app.core.config import get_settings
from app.core.logging import RequestLog

router = APIRouter()


async def get_label() -> str:
    return "baseline"


Label = Annotated[str, Depends(get_label)]


class BaselineResponse(BaseModel):
    status: str
    timestamp: datetime
    label: str


@router.get("/health", response_model=BaselineResponse)
async def health(label: Label) -> BaselineResponse:
    return BaselineResponse(status="ok", timestamp=datetime.now(UTC).replace(microsecond=0), label=label)


app = FastAPI()
app.add_middleware(RequestLog, settings=get_settings())
app.add_middleware(CorrelationIdMiddleware)
app.include_router(router)
