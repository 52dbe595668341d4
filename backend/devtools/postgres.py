"""An embedded PostgreSQL for machines with neither Docker nor a server, and database helpers.

The server comes from the `pgserver` wheel (PostgreSQL binaries packaged for pip); it listens
on a Unix socket in its data folder only, so it never takes a TCP port.
"""

import asyncio
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from types import ModuleType

import asyncpg
from sqlalchemy.engine import make_url

from app.core.config import normalize_database_url


def _pgserver() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to a folder in /tmp,
        # which is where pgserver keeps its lock file: harmless, so not worth a warning.
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def psql_executable() -> str:
    """psql from PATH, else the one that comes with the embedded server."""
    if found := shutil.which("psql"):
        return found
    _pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


@contextmanager
def embedded_postgres(pgdata: Path | None = None) -> Iterator[str]:
    """Run a PostgreSQL server for the duration of the block and yield its admin URL.

    With `pgdata`, the data is kept there between runs; without, it lives in a temporary folder
    that is deleted afterwards.
    """
    pgserver = _pgserver()
    with TemporaryDirectory(prefix="lifebalance-pg-", ignore_cleanup_errors=True) as scratch:
        data = pgdata or Path(scratch) / "pgdata"
        data.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(data, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def with_database(url: str, name: str) -> str:
    """The same server and credentials as `url`, with another database."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def ensure_database(url: str) -> None:
    """Create the database that `url` names if it does not exist yet."""
    asyncio.run(_ensure_database(url))


async def _ensure_database(url: str) -> None:
    target = normalize_database_url(url)
    admin = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin, timeout=10)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target.database)
        if not exists:
            # Identifiers cannot be bound as parameters; quote it as PostgreSQL would.
            quoted = '"' + str(target.database).replace('"', '""') + '"'
            await connection.execute(f"CREATE DATABASE {quoted}")
    finally:
        await connection.close()
