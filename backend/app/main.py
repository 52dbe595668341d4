"""The FastAPI application: `uvicorn app.main:app`, run from backend/."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api import health
from app.core.config import Settings, get_settings
from app.core.database import Database
from app.core.probe import DatabaseProbe


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        app.state.settings = settings
        app.state.database = database
        probe = DatabaseProbe(
            database,
            timeout=settings.health_timeout,
            ttl=settings.health_cache_ttl,
            masked_url=settings.masked_database_url,
        )
        app.state.probe = probe
        try:
            yield
        finally:
            await probe.aclose()
            await database.dispose()

    # FastAPIOffline serves the Swagger UI and ReDoc assets itself, so /docs works with no CDN.
    # The health routes are given directly, first in line: probes arrive constantly, and
    # include_router adds route-group work to every request (a tenth of /health's throughput in
    # invoke bench). Routers of later features are added with app.include_router as usual.
    app = FastAPIOffline(
        title="LifeBalance API", version=__version__, lifespan=lifespan, routes=list(health.router.routes)
    )
    return app


settings = get_settings()
logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app(settings)
# What the imports made lives as long as the process: keeping it out of the garbage collector's
# full passes keeps them short (they were /health's p99 latency spikes under load).
gc.collect()
gc.freeze()
