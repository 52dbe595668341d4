"""The FastAPI application: `uvicorn app.main:app`, run from backend/."""

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api import errors, health
from app.api.deps import Readiness
from app.core.config import Settings, get_settings
from app.core.database import Database
from app.core.drain import Drain
from app.core.logging import RequestLog, configure_logging
from app.core.migrations import report_revision
from app.core.probe import DatabaseProbe


def create_app(settings: Settings, *, served: bool = False) -> FastAPI:
    """The app; `served` for the one a server process runs, which the tests' apps are not."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What routes reach through app/api/deps.py: made once here, released at shutdown.
        database = Database(settings)
        probe = DatabaseProbe(database.probe_engine, settings)
        drain = Drain(settings.drain_period)
        app.state.settings, app.state.database = settings, database
        app.state.readiness = Readiness(probe, drain)
        checked = None
        if served:
            # What exists now lives as long as the process: out of the collector's full passes,
            # which were /health's p99 latency under load (bench/README.md).
            gc.collect()
            gc.freeze()
            drain.install()
            # In the background: a database that does not answer must not hold the start-up.
            checked = asyncio.create_task(report_revision(database.engine, settings.db_connect_timeout))
        try:
            yield
        finally:
            drain.uninstall()
            if checked is not None:
                checked.cancel()
                await asyncio.gather(checked, return_exceptions=True)
            await probe.aclose()
            await database.dispose()

    # FastAPIOffline serves the Swagger UI and ReDoc assets itself, so /docs works with no CDN.
    app = FastAPIOffline(title="LifeBalance API", version=__version__, lifespan=lifespan)
    # The last added runs first: the request id is set before the request log is written.
    app.add_middleware(RequestLog, settings=settings)
    app.add_middleware(CorrelationIdMiddleware)
    errors.install(app)
    app.include_router(health.router)
    return app


settings = get_settings()
configure_logging()
# Only the app uvicorn serves freezes the collector (a process that creates many apps, the tests,
# would keep their garbage for good) and takes SIGTERM over.
app = create_app(settings, served=True)
