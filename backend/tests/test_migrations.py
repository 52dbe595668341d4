"""Alembic against the real test database: round trip, no drift, autogenerate and offline SQL."""

import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from app.models import Base
from devtools.migrations import BACKEND, alembic_config


def test_upgrade_downgrade_round_trip(test_db: str) -> None:
    config = alembic_config()
    command.downgrade(config, "base")
    command.upgrade(config, "head")


def test_models_match_migrations(test_db: str) -> None:
    command.check(alembic_config())  # raises when autogenerate would find a change


def test_first_revision_is_initial() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    base_id = script.get_base()
    assert base_id is not None
    base = script.get_revision(base_id)
    assert base is not None
    assert base.doc.startswith("initial")
    assert Path(base.path).name.split("_")[0].isdigit(), "revision files are named by date"


def test_autogenerate_writes_a_formatted_revision(test_db: str, tmp_path: Path) -> None:
    scripts = tmp_path / "alembic"
    shutil.copytree(BACKEND / "alembic", scripts)
    config = alembic_config(script_location=scripts)

    command.revision(config, message="nothing changed", autogenerate=True)

    written = [p for p in (scripts / "versions").glob("*.py") if "nothing_changed" in p.name]
    assert len(written) == 1
    source = written[0].read_text()
    assert "op." not in source, "an unchanged schema should give an empty migration"
    assert "import sqlalchemy as sa" not in source, "ruff's post-write hook should drop unused imports"
    assert not any(line != line.rstrip() for line in source.splitlines())


def test_offline_sql(test_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(alembic_config(), "head", sql=True)
    assert "CREATE TABLE alembic_version" in capsys.readouterr().out


def test_metadata_names_constraints() -> None:
    assert Base.metadata.naming_convention["pk"] == "pk_%(table_name)s"
    assert {"ix", "uq", "ck", "fk", "pk"} <= set(Base.metadata.naming_convention)
