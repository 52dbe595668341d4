"""An embedded PostgreSQL for machines with neither Docker nor a server, and database helpers.

The server comes from the `pgserver` wheel (PostgreSQL binaries packaged for pip); it listens
on a Unix socket in its data folder only, so it never takes a TCP port.
"""

import asyncio
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from glob import glob
from pathlib import Path
from tempfile import TemporaryDirectory
from types import ModuleType

import asyncpg
from sqlalchemy.engine import make_url

from app.core.config import normalize_database_url
from app.core.database import describe_error


def _pgserver() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to a folder in /tmp,
        # which is where pgserver keeps its lock file: harmless, so not worth a warning.
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def psql_for(url: str) -> str:
    """A psql for the server `url` names: one as new as the server at least, since psql reads older
    servers but warns on newer ones. One from the system first, for its line editing (the
    embedded server's own is built without it), then the embedded server's.
    """
    try:
        needed = asyncio.run(_server_major(url))
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        masked = make_url(url).render_as_string(hide_password=True)
        raise SystemExit(f"Cannot connect to {masked}: {describe_error(error)}") from None
    system = [*_on_path("psql"), *sorted(glob("/usr/lib/postgresql/*/bin/psql"), reverse=True)]
    _pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH

    seen: list[str] = []
    for candidate in [*system, str(POSTGRES_BIN_PATH / "psql")]:
        major = _psql_major(candidate)
        if major is not None and major >= needed:
            return candidate
        seen.append(f"{candidate} ({major})")
    raise SystemExit(
        f"No psql of version {needed} or later, for this PostgreSQL {needed} server (found: {', '.join(seen)}); "
        f"install the PostgreSQL {needed} client, e.g. `apt-get install postgresql-client-{needed}`"
    )


def _on_path(name: str) -> list[str]:
    found = (shutil.which(name, path=folder) for folder in os.get_exec_path())
    return list(dict.fromkeys(path for path in found if path))


def _psql_major(psql: str) -> int | None:
    """17 for "psql (PostgreSQL) 17.2"; None when it does not run."""
    try:
        output = subprocess.run([psql, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    return int(match.group(1)) if match else None


async def _server_major(url: str) -> int:
    libpq_url = normalize_database_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(libpq_url, timeout=10)
    try:
        return connection.get_server_version().major
    finally:
        await connection.close()


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
