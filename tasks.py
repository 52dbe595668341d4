"""Developer tasks: `invoke --list` shows them, `invoke --help TASK` their options.

They work the same on a bare machine, inside `docker compose` and inside the devcontainer.
Without DATABASE_URL (in the environment or backend/.env), serve and migrate start an embedded
PostgreSQL whose data is kept in backend/.pgdata/, and test starts a throwaway one.
"""

import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dotenv import dotenv_values
from invoke import Context, task

ROOT = Path(__file__).resolve().parent
BACKEND = ROOT / "backend"
# Tools run as modules of this interpreter, so the tasks work without an activated virtualenv.
PYTHON = shlex.quote(sys.executable)
sys.path.insert(0, str(BACKEND))


def configured_database_url() -> str | None:
    return os.environ.get("DATABASE_URL") or dotenv_values(BACKEND / ".env").get("DATABASE_URL")


@contextmanager
def database_env() -> Iterator[dict[str, str]]:
    """Environment for commands that need a database: the configured one, else the embedded one."""
    if configured_database_url():
        yield {}
        return
    from devtools.postgres import embedded_postgres, ensure_database, with_database

    with embedded_postgres(BACKEND / ".pgdata") as admin_url:
        url = with_database(admin_url, "lifebalance")
        ensure_database(url)
        print(f"DATABASE_URL is not set: using the embedded PostgreSQL in {BACKEND / '.pgdata'}", flush=True)
        yield {"DATABASE_URL": url}


def run(c: Context, command: str, env: dict[str, str] | None = None) -> None:
    with c.cd(str(BACKEND)):
        c.run(command, env=env or {}, pty=sys.stdout.isatty())


@task(help={"host": "interface to listen on (default 127.0.0.1)", "port": "port (default 8000)"})
def serve(c: Context, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API with auto-reload, after applying migrations."""
    with database_env() as env:
        run(c, f"{PYTHON} -m alembic upgrade head", env)
        run(c, f"{PYTHON} -m uvicorn app.main:app --reload --host {shlex.quote(host)} --port {port}", env)


@task
def test(c: Context) -> None:
    """Run the test suite; arguments after -- go to pytest (invoke test -- -k health -x)."""
    run(c, f"{PYTHON} -m pytest {c.remainder}")


@task(help={"revision": "target revision (default head)"})
def migrate(c: Context, revision: str = "head") -> None:
    """Apply migrations to the database (alembic upgrade head)."""
    with database_env() as env:
        run(c, f"{PYTHON} -m alembic upgrade {shlex.quote(revision)}", env)


@task(help={"message": "what the migration does, e.g. 'add users'"})
def makemigration(c: Context, message: str) -> None:
    """Create a migration from the models' changes (alembic revision --autogenerate)."""
    with database_env() as env:
        run(c, f"{PYTHON} -m alembic upgrade head", env)
        run(c, f"{PYTHON} -m alembic revision --autogenerate -m {shlex.quote(message)}", env)


@task
def psql(c: Context) -> None:
    """Open psql on the configured (or embedded) database."""
    with database_env() as env:
        url = env.get("DATABASE_URL") or configured_database_url() or ""
        from app.core.config import normalize_database_url

        libpq_url = normalize_database_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        run(c, f"psql {shlex.quote(libpq_url)}", env)


@task
def lint(c: Context) -> None:
    """Check style and types: ruff check, ruff format --check, mypy --strict on app/."""
    with c.cd(str(ROOT)):
        c.run(f"{PYTHON} -m ruff check .")
        c.run(f"{PYTHON} -m ruff format --check .")
        c.run(f"{PYTHON} -m mypy")


@task(name="format")
def format_(c: Context) -> None:
    """Format the code and apply ruff's safe fixes."""
    with c.cd(str(ROOT)):
        c.run(f"{PYTHON} -m ruff check --fix .")
        c.run(f"{PYTHON} -m ruff format .")


@task(help={"upgrade": "move every pin to the newest allowed release, not only what the .in files changed"})
def lock(c: Context, upgrade: bool = False) -> None:
    """Refresh the pinned requirements*.txt from the requirements*.in files."""
    compile_ = (
        f"{PYTHON} -m uv pip compile --universal --python-version 3.11 --quiet --custom-compile-command 'invoke lock'"
    )
    if upgrade:
        compile_ += " --upgrade"
    run(c, f"{compile_} requirements.in -o requirements.txt")
    run(c, f"{compile_} requirements-dev.in -o requirements-dev.txt")


@task(help={"quick": "a short smoke run, for CI"})
def bench(c: Context, quick: bool = False) -> None:
    """Benchmark /health against a baseline app and the per-request pattern, with an outage drill."""
    with c.cd(str(ROOT)):
        c.run(f"{PYTHON} bench/run.py{' --quick' if quick else ''}", pty=sys.stdout.isatty())
