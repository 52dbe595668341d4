"""Developer tasks: `invoke --list` shows them, `invoke --help TASK` their options.

They work the same on a bare machine, inside `docker compose` and inside the devcontainer.
Without DATABASE_URL (in the environment or backend/.env), the tasks that need a database start an
embedded PostgreSQL whose data is kept in backend/.pgdata/; the tests start a throwaway one.
"""

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

ROOT = Path(__file__).resolve().parent
BACKEND = ROOT / "backend"
# Tools run as modules of this interpreter, so the tasks work without an activated virtualenv.
PYTHON = sys.executable
# The app's modules are imported by the tasks that use them, not here: `invoke test` and the
# others start faster without them.
sys.path.insert(0, str(BACKEND))


@contextmanager
def database() -> Iterator[None]:
    """Within the block, DATABASE_URL names the configured database, or else the embedded one."""
    from app.core.config import configured

    if configured("DATABASE_URL"):
        yield
        return
    from devtools.postgres import embedded_postgres, ensure_database, with_database

    with embedded_postgres(BACKEND / ".pgdata") as admin_url:
        url = with_database(admin_url, "lifebalance")
        ensure_database(url)
        print(f"DATABASE_URL is not set: using the embedded PostgreSQL in {BACKEND / '.pgdata'}", flush=True)
        os.environ["DATABASE_URL"] = url
        try:
            yield
        finally:
            del os.environ["DATABASE_URL"]


def run(
    command: list[str], *, cwd: Path = BACKEND, env: dict[str, str] | None = None, stop_on_failure: bool = True
) -> bool:
    """Run a program (in backend/ by default) on this terminal; its own output says what failed, so
    nothing is added. Not through invoke's runner, whose pseudo-terminal costs a shell for each
    command and, under VS Code's debugger, a wait of seconds for each."""
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})})
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:
            continue  # the terminal sent Ctrl-C to the program too: it stops and cleans up first
    if code and stop_on_failure:
        raise Exit(code=code)
    return code == 0


@task(help={"host": "interface to listen on (default 127.0.0.1)", "port": "port (default 8000)"})
def serve(c: Context, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the API with auto-reload, after applying migrations."""
    from app.core.config import get_settings

    with database():
        get_settings()  # a wrong setting stops here, with its one-line message
        if not run([PYTHON, "-m", "alembic", "upgrade", "head"], stop_on_failure=False):
            print("Migrations not applied; serving anyway, /health reports the database as disconnected.")
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--reload", "--host", host, "--port", str(port)]
        command += ["--log-config", "logging.json", "--no-access-log"]  # the app writes the request log
        # Run directly rather than through invoke, so that uvicorn stops first, then the embedded
        # database, whether on Ctrl-C (a terminal sends it to both) or on SIGTERM (passed on).
        server = subprocess.Popen(command, cwd=BACKEND)
        signal.signal(signal.SIGTERM, lambda signum, frame: server.terminate())
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
        server.wait()


@task
def test(c: Context) -> None:
    """Run the test suite; arguments after -- go to pytest (invoke test -- -k health -x)."""
    pytest(c)


@task
def coverage(c: Context) -> None:
    """The test suite with branch coverage: a TOTAL line, htmlcov/index.html, and the floor of
    pyproject.toml, under which it fails; arguments after -- go to pytest."""
    pytest(
        c,
        "--cov",
        f"--cov-config={ROOT / 'pyproject.toml'}",
        "--cov-report=term",
        f"--cov-report=html:{ROOT / 'htmlcov'}",
    )


def pytest(c: Context, *options: str) -> None:
    # invoke joins the words after -- with spaces and loses their quoting; argv still has them.
    args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else shlex.split(c.remainder)
    # With arguments, from where they were typed, so paths in them are relative to it; without,
    # from the root, whose pytest.ini names the suite.
    run([PYTHON, "-m", "pytest", *options, *args], cwd=Path.cwd() if args else ROOT)


@task(help={"revision": "target revision (default head); going back is invoke downgrade"})
def migrate(c: Context, revision: str = "head") -> None:
    """Apply migrations to the database (alembic upgrade head)."""
    from devtools.migrations import applied, is_behind

    with database():
        # alembic upgrade to an older revision does nothing and succeeds: say so instead.
        if revision != "head" and is_behind(revision, current := applied(os.environ["DATABASE_URL"])):
            raise Exit(
                f"{revision} is older than the database's revision ({', '.join(current)}): "
                f"to go back to it, run invoke downgrade --revision {revision}",
                code=1,
            )
        run([PYTHON, "-m", "alembic", "upgrade", revision])


@task(help={"revision": "how far back: -1 (default) one migration, base all of them, or a revision id"})
def downgrade(c: Context, revision: str = "-1") -> None:
    """Undo migrations (alembic downgrade -1)."""
    with database():
        run([PYTHON, "-m", "alembic", "downgrade", revision])


@task(help={"message": "what the migration does, e.g. 'add users'"})
def makemigration(c: Context, message: str) -> None:
    """Create a migration from the models' changes (alembic revision --autogenerate)."""
    with database():
        run([PYTHON, "-m", "alembic", "upgrade", "head"])
        run([PYTHON, "-m", "alembic", "revision", "--autogenerate", "-m", message])


@task
def psql(c: Context) -> None:
    """Open psql on the configured (or embedded) database."""
    from sqlalchemy.engine import make_url

    from app.core.config import get_settings
    from devtools.postgres import psql_for

    with database():
        url = make_url(get_settings().database_url)
        # The password goes in the environment: on the command line, any local user could read it.
        env = {"PGPASSWORD": url.password} if url.password else {}
        libpq_url = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
        run([psql_for(str(url.render_as_string(hide_password=False))), libpq_url], env=env)


@task
def lint(c: Context) -> None:
    """Check style and types: ruff check, ruff format --check, mypy --strict."""
    run([PYTHON, "-m", "ruff", "check", "."], cwd=ROOT)
    run([PYTHON, "-m", "ruff", "format", "--check", "."], cwd=ROOT)
    run([PYTHON, "-m", "mypy"], cwd=ROOT)


@task(name="format")
def format_(c: Context) -> None:
    """Format the code and apply ruff's safe fixes."""
    run([PYTHON, "-m", "ruff", "check", "--fix", "."], cwd=ROOT)
    run([PYTHON, "-m", "ruff", "format", "."], cwd=ROOT)


# Compiled in this order: requirements-dev.in is constrained by requirements.txt; requirements-ci.in
# (what only CI runs) and requirements-uv.in (uv alone, which every install bootstraps from with pip)
# by requirements-dev.txt.
LOCKS = ("requirements", "requirements-dev", "requirements-ci", "requirements-uv")


@task(help={"upgrade": "move every pin to the newest allowed release, not only what the .in files changed"})
def lock(c: Context, upgrade: bool = False) -> None:
    """Refresh the pinned, hashed requirements*.txt from the requirements*.in files."""
    for name in LOCKS:
        # The header records this command, from which Dependabot (uv ecosystem) recompiles the lock
        # the same way: it reads --universal, --python-version and the hashes off the file.
        command = f"uv pip compile --universal --python-version 3.11 --generate-hashes {name}.in -o {name}.txt"
        options = ["--quiet", "--custom-compile-command", command, *(["--upgrade"] if upgrade else [])]
        run([PYTHON, "-m", *command.split(), *options])


@task(help={"quick": "a short smoke run, for CI"})
def bench(c: Context, quick: bool = False) -> None:
    """Benchmark /health against a baseline app and the per-request pattern, with an outage drill."""
    run([PYTHON, "bench/run.py", *(["--quick"] if quick else [])], cwd=ROOT)
