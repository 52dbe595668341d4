"""What the invoke tasks add to the tools they run: going back in the migrations, and the right psql."""

import os
import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory

from app.core.config import normalize_database_url
from devtools.migrations import BACKEND, alembic_config, applied, is_behind
from devtools.postgres import psql_for

ROOT = BACKEND.parent
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def invoke(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_is_behind_compares_with_the_database_revision() -> None:
    assert HEAD is not None
    assert is_behind("base", (HEAD,))
    assert not is_behind("head", (HEAD,))
    assert not is_behind(HEAD, (HEAD,))
    assert not is_behind(HEAD, ())
    assert not is_behind("+1", (HEAD,)), "relative targets are alembic's to judge"


def test_applied_reads_the_database(test_db: str) -> None:
    assert applied(test_db) == (HEAD,)


def test_migrate_refuses_to_go_back_and_downgrade_does(test_db: str) -> None:
    refused = invoke("migrate", "--revision", "base", database_url=test_db)
    assert refused.returncode == 1
    assert "invoke downgrade --revision base" in refused.stderr
    assert applied(test_db) == (HEAD,)

    assert invoke("downgrade", database_url=test_db).returncode == 0  # one step, from the first revision
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
