"""Where the database stands against this release's migrations, said once when the server starts.

The server never migrates on its own: a release runs `alembic upgrade head` once, before the new
replicas start (deploy/README.md). A replica started on a database its migrations have not reached
says so in one line, and serves anyway; during a rolling release, a replica of the release before
finds a database already migrated past its own head, which expand-then-contract migrations allow.
"""

import asyncio
import logging
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"

logger = logging.getLogger(__name__)


async def warn_if_behind(engine: AsyncEngine, connect_timeout: float) -> None:
    """One line if the database lacks migrations of this release. Nothing if it has them all, or
    more (a newer release's), or cannot be reached: /health reports that, and this gives up."""
    script = await asyncio.to_thread(ScriptDirectory.from_config, Config(ALEMBIC_INI))
    try:
        async with asyncio.timeout(connect_timeout), engine.connect() as connection:
            current = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    except (OSError, TimeoutError, DBAPIError):
        return
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    if set(current) != heads and set(current) <= known:
        logger.warning(
            "The database is at revision %s, behind this release's migrations (%s): run `alembic upgrade head`",
            ", ".join(current) or "none (never migrated)",
            ", ".join(sorted(heads)),
        )
