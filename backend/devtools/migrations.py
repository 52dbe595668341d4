"""Alembic's configuration, and where a database stands in the migration history."""

import asyncio
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import normalize_database_url

BACKEND = Path(__file__).resolve().parents[1]


def alembic_config(script_location: Path | None = None) -> Config:
    config = Config(BACKEND / "alembic.ini")
    # When migrations run in-process (the tests), the caller owns logging; alembic.ini's
    # fileConfig would replace its handlers.
    config.attributes["configure_logger"] = False
    if script_location is not None:
        config.set_main_option("script_location", str(script_location))
    return config


def applied(url: str) -> tuple[str, ...]:
    """The revisions the database `url` names is at; () before any migration."""

    async def read() -> tuple[str, ...]:
        engine = create_async_engine(normalize_database_url(url), poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def is_behind(target: str, current: tuple[str, ...]) -> bool:
    """Whether `target` is older than the revisions `current`: `alembic upgrade` to it does nothing."""
    script = ScriptDirectory.from_config(alembic_config())
    try:
        wanted = script.get_revisions(target)
    except CommandError:
        return False  # a relative or unknown target: alembic itself says what is wrong with it
    if not current:
        return False
    below = {revision.revision for revision in script.iterate_revisions(current, "base")} - set(current)
    return all(revision is not None and revision.revision in below for revision in wanted)
