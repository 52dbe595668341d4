"""An embedded PostgreSQL for machines with neither Docker nor a server, and database helpers.

The binaries come from the `pgserver` wheel (PostgreSQL packaged for pip), run by this module. A
server listens on a Unix socket only, so it never takes a TCP port. A new cluster is a copy of one
kept in backend/.pgcache/ (one that initdb made once, or one a caller kept there, see `seed`): a
copy takes a tenth of a second, initdb most of a second.
"""

import asyncio
import ctypes
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from glob import glob
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from app.core.config import normalize_database_url
from app.core.database import describe_error

BACKEND = Path(__file__).resolve().parents[1]
_PGSERVER = importlib.util.find_spec("pgserver")
assert _PGSERVER is not None, "pgserver is in the dev lock"
assert _PGSERVER.origin is not None
BIN = Path(_PGSERVER.origin).parent / "pginstall" / "bin"


def cached_cluster(name: str) -> Path:
    """Where a cluster called `name` is kept between runs, for the PostgreSQL this wheel has: in
    backend/.pgcache/, or in the temporary folder where the checkout is not the user's to write
    (a container's user on a bind mount of another user's checkout)."""
    cache = BACKEND / ".pgcache"
    if not os.access(cache if cache.exists() else BACKEND, os.W_OK):
        cache = Path(tempfile.gettempdir()) / f"lifebalance-pgcache-{os.getuid()}"
    return cache / f"{name}-{metadata.version('pgserver')}"


PRISTINE = cached_cluster("initdb")

# Where the system keeps files in memory; a throwaway cluster's own folder in it, made by tempfile.
MEMORY = "/dev/shm"  # noqa: S108
# prctl(2)'s option that has the kernel signal a process when its parent dies.
PR_SET_PDEATHSIG = 1
# A server whose data is thrown away needs no durability: nothing is flushed to disk.
THROWAWAY = ("-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")


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
    seen: list[str] = []
    for candidate in [*system, str(BIN / "psql")]:
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
def embedded_postgres(
    pgdata: Path | None = None, *, seed: Path | None = None, keep: Callable[[], bool] = lambda: False
) -> Iterator[str]:
    """A PostgreSQL server for the duration of the block; yields its admin URL.

    With `pgdata`, the data is kept there between runs, and a server already running on it (another
    process's) is used and left running. Without, a throwaway cluster lives in a temporary folder,
    in memory where the system has /dev/shm, and is deleted afterwards. With a `seed` folder, the
    throwaway cluster starts as a copy of the one kept there, if any; once stopped, it is kept there
    in its place if `keep()` says so, and what the block made in it is there from the next start on.
    """
    with _stopped_by_sigterm():
        if pgdata is not None:
            if not (pgdata / "PG_VERSION").exists():
                _copy_cluster(pgdata)
            with _serving(pgdata) as url:
                yield url
            return
        memory = MEMORY if os.access(MEMORY, os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix="lifebalance-pg-", dir=memory) as scratch:
            _hand_over(Path(scratch))
            data = Path(scratch) / "data"
            _copy_cluster(data, seed)
            with _serving(data, THROWAWAY) as url:
                yield url
            if seed is not None and keep():
                _keep(data, seed)


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """A SIGTERM (kill, timeout, an editor stopping a task) interrupts like Ctrl-C, so the server is
    stopped rather than left running; unless the process handles SIGTERM itself already."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _serving(data: Path, options: tuple[str, ...] = ()) -> Iterator[str]:
    if (running := _running_socket_dir(data)) is not None:
        yield _admin_url(running)
        return
    sockets = Path(tempfile.mkdtemp(prefix="lifebalance-pg-"))
    try:
        _hand_over(sockets)
        log = data / "postgres.log"
        # postgres itself rather than pg_ctl, whose waits poll ten times a second: a tenth of a
        # second more for each start and each stop. In a session of its own, as pg_ctl puts it,
        # so that a Ctrl-C in the terminal reaches this process, which then stops it.
        command = [str(BIN / "postgres"), "-D", str(data), "-c", "listen_addresses=", "-k", str(sockets), *options]
        with log.open("ab") as output:
            as_server = _as_server_user()
            server = subprocess.Popen(
                command, stdout=output, stderr=output, start_new_session=True, preexec_fn=_stop_with_parent, **as_server
            )
        try:
            _wait_until_ready(server, data, log)
            yield _admin_url(sockets)
        finally:
            server.send_signal(signal.SIGINT)  # a fast shutdown: sessions ended, then a checkpoint
            server.wait()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _stop_with_parent() -> None:
    """In the server's process, before postgres starts: a fast shutdown once the process that started
    it is gone, even killed outright (a debugger's Stop kills invoke with SIGKILL). Linux only."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def _wait_until_ready(server: subprocess.Popen[bytes], data: Path, log: Path, timeout: float = 60) -> None:
    """Until this server's postmaster.pid says it accepts connections, as pg_ctl reads it: its first
    line is the pid, its eighth the state (a stale file from a server that crashed names another)."""
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        with suppress(OSError):
            lines = [line.strip() for line in (data / "postmaster.pid").read_text().splitlines()]
            if lines[:1] == [str(server.pid)] and lines[7:8] == ["ready"]:
                return
        time.sleep(0.005)
    server.kill()
    server.wait()
    last = log.read_text(errors="replace").splitlines()[-5:]
    raise SystemExit(f"The embedded PostgreSQL in {data} did not start: {' / '.join(last)}")


def _running_socket_dir(data: Path) -> Path | None:
    """The socket folder of a server running on `data`, from its postmaster.pid; None if none runs."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        os.kill(int(lines[0]), 0)
    except (OSError, ValueError, IndexError):
        return None  # no file, a stale one, or one being written
    return Path(lines[4])


def _admin_url(sockets: Path) -> str:
    url = URL.create("postgresql", username="postgres", database="postgres", query={"host": str(sockets)})
    return url.render_as_string()


def _copy_cluster(data: Path, seed: Path | None = None) -> None:
    """A new cluster in `data`: a copy of the one kept in `seed`, else of the pristine one, which
    initdb makes on first use."""
    if seed is None or not (seed / "PG_VERSION").exists():
        seed = PRISTINE
        if not (PRISTINE / "PG_VERSION").exists():
            with tempfile.TemporaryDirectory(prefix="lifebalance-initdb-") as scratch:
                _hand_over(Path(scratch))
                made = Path(scratch) / "data"
                initdb = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
                _as_server(BIN / "initdb", "-D", str(made), *initdb)
                _keep(made, PRISTINE)
    shutil.copytree(seed, data, symlinks=True)
    _hand_over(data, recursive=True)


def _keep(data: Path, kept: Path) -> None:
    """A copy of the stopped cluster `data` in `kept`, in place of what was there."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix="staged-", dir=kept.parent))
    try:
        shutil.copytree(data, staged / "data", symlinks=True, ignore=shutil.ignore_patterns("postmaster.*", "*.log"))
        # Moved into place whole: a cluster half copied is never used. Another run may be doing the
        # same meanwhile; either copy is as good.
        with suppress(OSError):
            kept.rename(staged / "replaced")
        with suppress(OSError):
            (staged / "data").rename(kept)
    finally:
        shutil.rmtree(staged)


def _server_user() -> pwd.struct_passwd | None:
    """Who runs postgres, which refuses to run as root: as root, nobody; otherwise the caller."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def _hand_over(path: Path, *, recursive: bool = False) -> None:
    """Give `path` to the server's user (as root; otherwise it is the caller's already)."""
    if (user := _server_user()) is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for folder, names, files in os.walk(path) if recursive else ():
        for name in names + files:
            os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _as_server(program: Path, *args: str) -> None:
    subprocess.run([str(program), *args], check=True, stdout=subprocess.DEVNULL, **_as_server_user())


def _as_server_user() -> dict[str, Any]:
    """subprocess's arguments that run a program as the server's user."""
    user = _server_user()
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}


def with_database(url: str, name: str) -> str:
    """The same server and credentials as `url`, with another database."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _quoted(name: str) -> str:
    """A database name as an SQL identifier: identifiers cannot be bound as parameters."""
    return '"' + name.replace('"', '""') + '"'


async def connect_admin(url: str) -> asyncpg.Connection:
    """A connection to the `postgres` database of the server `url` names."""
    admin = normalize_database_url(url).set(drivername="postgresql", database="postgres")
    return await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=10)


@asynccontextmanager
async def _administering(url: str, connection: asyncpg.Connection | None = None) -> AsyncIterator[asyncpg.Connection]:
    """`connection`, or one of its own to the server `url` names for the block."""
    if connection is not None:
        yield connection
        return
    connection = await connect_admin(url)
    try:
        yield connection
    finally:
        await connection.close()


def ensure_database(url: str) -> None:
    """Create the database that `url` names if it does not exist yet."""

    async def ensure() -> None:
        async with _administering(url) as connection:
            name = str(make_url(url).database)
            if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await connection.execute(f"CREATE DATABASE {_quoted(name)}")

    asyncio.run(ensure())


async def recreate_database(url: str, template: str | None = None, *, admin: asyncpg.Connection | None = None) -> None:
    """Drop the database `url` names, sessions and all, and create it anew (as a copy of `template`)."""
    async with _administering(url, admin) as connection:
        name = _quoted(str(make_url(url).database))
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {_quoted(template)}" if template else ""))


async def next_transaction_id(admin: asyncpg.Connection) -> int:
    """The id the next writing transaction on the server will take: unchanged, nothing has been
    written anywhere on it meanwhile (every write takes one; a bare nextval() does not)."""
    return int(await admin.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))


async def database_comment(url: str) -> str | None:
    """The comment on the database `url` names; None without one, or without the database."""
    async with _administering(url) as connection:
        query = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1"
        comment = await connection.fetchval(query, make_url(url).database)
        return None if comment is None else str(comment)


async def comment_database(url: str, comment: str) -> None:
    async with _administering(url) as connection:
        # Neither names nor COMMENT's text can be bound as parameters.
        literal = "'" + comment.replace("'", "''") + "'"
        await connection.execute(f"COMMENT ON DATABASE {_quoted(str(make_url(url).database))} IS {literal}")


async def drop_database(url: str) -> None:
    async with _administering(url) as connection:
        await connection.execute(f"DROP DATABASE IF EXISTS {_quoted(str(make_url(url).database))} WITH (FORCE)")
