"""Where the database stands against this release's migrations, said once when the server starts.

The server never migrates on its own: a release runs `alembic upgrade head` once, before the new
replicas start (deploy/README.md). A replica started on a database its migrations have not reached
warns, and serves anyway; during a rolling release, a replica of the release before finds the
database migrated past its own head, which expand-then-contract migrations allow.
"""

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"

logger = logging.getLogger(__name__)


async def report_revision(engine: AsyncEngine, connect_timeout: float) -> None:
    """One line: at this release's head, behind it (a warning), or past it. Nothing if the database
    cannot be reached: /health reports that, and this gives up."""
    # Reads outside a transaction: the connection goes back to the pool with no ROLLBACK, which a
    # server gone silent would never answer, and SQLAlchemy shields that close from cancellation.
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with asyncio.timeout(connect_timeout), autocommit.connect() as connection:
            # Alembic's table, read directly: where the database stands, or nowhere yet.
            current: list[str] = []
            if await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
                current = list(await connection.scalars(text("SELECT version_num FROM alembic_version")))
    except (OSError, TimeoutError, DBAPIError):
        return
    await asyncio.to_thread(_report, current)


def _report(current: Sequence[str]) -> None:
    # Alembic is imported here, in a thread, not with the app: it is a quarter of a second of every
    # process's start-up, and the server answers meanwhile.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(ALEMBIC_INI))
    heads, at = set(script.get_heads()), ", ".join(current) or "none (never migrated)"
    if set(current) == heads:
        logger.info("The database is at this release's migrations (revision %s)", at)
    elif set(current) <= {revision.revision for revision in script.walk_revisions()}:
        logger.warning(
            "The database is at revision %s, behind this release's migrations (%s): run `alembic upgrade head`",
            at,
            ", ".join(sorted(heads)),
        )
    else:
        logger.info("The database is at revision %s, past this release's migrations: a newer release's", at)
