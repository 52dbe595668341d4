"""What the invoke tasks add to the tools they run: going back in the migrations, and the right psql."""

import subprocess

import pytest
from alembic.script import ScriptDirectory
from invoke.collection import Collection
from invoke.program import Program

import tasks
from app.core.config import normalize_database_url
from devtools.migrations import alembic_config, applied, is_behind
from devtools.postgres import psql_for

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def invoke(*args: str) -> int:
    """`invoke ARGS`, parsed and run as its command line does, in this process (the tools a task
    runs still are processes of their own); its exit code."""
    try:
        Program(namespace=Collection.from_module(tasks)).run(["invoke", *args])
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def test_is_behind_compares_with_the_database_revision() -> None:
    assert HEAD is not None
    assert is_behind("base", (HEAD,))
    assert not is_behind("head", (HEAD,))
    assert not is_behind(HEAD, (HEAD,))
    assert not is_behind(HEAD, ())
    assert not is_behind("+1", (HEAD,)), "relative targets are alembic's to judge"


def test_applied_reads_the_database(test_db: str) -> None:
    assert applied(test_db) == (HEAD,)


def test_migrate_refuses_to_go_back_and_downgrade_does(test_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The tasks work on DATABASE_URL, which is this process's test database.
    assert invoke("migrate", "--revision", "base") == 1
    assert "invoke downgrade --revision base" in capsys.readouterr().err
    assert applied(test_db) == (HEAD,)

    assert invoke("downgrade") == 0  # one step, from the first revision
    assert applied(test_db) == ()


def test_psql_is_new_enough_for_the_server(test_db: str) -> None:
    psql = psql_for(test_db)
    url = normalize_database_url(test_db).set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run([psql, url, "-Atc", "SELECT 1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert "WARNING" not in result.stderr, "psql older than the server warns that some features may not work"


def test_psql_for_names_what_to_install_when_none_fits(test_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("devtools.postgres._psql_major", lambda psql: 9)  # every psql found is too old
    with pytest.raises(SystemExit, match=r"No psql of version \d+ or later.*install the PostgreSQL \d+ client"):
        psql_for(test_db)
