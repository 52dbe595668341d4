"""Alembic against the real test database: round trip, no drift, autogenerate, offline SQL, several
processes migrating at once, and what the server says at start-up of where the database stands."""

import asyncio
import logging
import os
import shutil
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings, normalize_database_url
from app.core.database import Database
from app.core.migrations import report_revision
from app.models import Base
from devtools.migrations import BACKEND, alembic_config
from devtools.network import Mode, SwitchProxy, free_port
from devtools.postgres import recreate_database
from tests import processes
from tests.harness import url_at, url_through


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


def test_a_refused_login_stops_the_migration_in_one_line(test_db: str) -> None:
    # A role the server does not know, refused as a wrong password is: while connecting.
    url = normalize_database_url(test_db).set(username="no_such_role").render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": url}
    result = processes.run(["-m", "alembic", "upgrade", "head"], env=env, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Cannot connect to postgresql+asyncpg://no_such_role"), last


def test_offline_sql(test_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(alembic_config(), "head", sql=True)
    assert "CREATE TABLE alembic_version" in capsys.readouterr().out


def test_metadata_names_constraints() -> None:
    assert Base.metadata.naming_convention["pk"] == "pk_%(table_name)s"
    assert {"ix", "uq", "ck", "fk", "pk"} <= set(Base.metadata.naming_convention)


# Migrations of the test's own after the project's: a table with an index and a row, as Phase 2's
# first will be, then one that takes a while (long enough for the runs to overlap) and adds a row.
PHASE_TWO_LIKE = """
import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels, depends_on = "a1", "{down}", None, None


def upgrade() -> None:
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
    op.create_index("ix_widgets_name", "widgets", ["name"], unique=True)
    op.execute("INSERT INTO widgets (name) VALUES ('first')")
"""
SLOW = """
from alembic import op

revision, down_revision, branch_labels, depends_on = "a2", "a1", None, None


def upgrade() -> None:
    op.execute("SELECT pg_sleep(0.5)")
    op.execute("INSERT INTO widgets (name) VALUES ('second')")
"""


@pytest.mark.parametrize("start", ["empty", "one revision behind"])
async def test_concurrent_migrations_take_turns(test_db: str, tmp_path: Path, start: str) -> None:
    scripts = tmp_path / "alembic"
    shutil.copytree(BACKEND / "alembic", scripts)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    (scripts / "versions" / "a1_widgets.py").write_text(PHASE_TWO_LIKE.format(down=head))
    (scripts / "versions" / "a2_slow.py").write_text(SLOW)
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        (BACKEND / "alembic.ini")
        .read_text()
        .replace("%(here)s/alembic", str(scripts))
        .replace("prepend_sys_path = %(here)s", f"prepend_sys_path = {BACKEND}")
    )
    env = {**os.environ, "DATABASE_URL": test_db}

    async def upgrade(replica: int) -> tuple[int, str]:
        output = tmp_path / f"replica-{replica}.log"
        process = processes.start(
            ["-m", "alembic", "-c", str(ini), "upgrade", "head"], cwd=tmp_path, env=env, stdout=output
        )
        return await process.wait(), output.read_text()

    await recreate_database(test_db)  # empty: not even the project's initial revision
    if start == "one revision behind":
        await asyncio.to_thread(command.upgrade, alembic_config(scripts), "a1")

    # Two replicas at once are enough: without the lock, both apply what is missing, and one of them
    # fails or a row is there twice.
    results = await asyncio.gather(upgrade(1), upgrade(2))

    assert [code for code, _ in results] == [0, 0], [output for _, output in results]
    # What was committed, as another connection sees it: each migration applied once.
    url = normalize_database_url(test_db).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == "a2"
        names = [row["name"] for row in await connection.fetch("SELECT name FROM widgets ORDER BY id")]
        assert names == ["first", "second"]
        assert await connection.fetchval("SELECT to_regclass('ix_widgets_name') IS NOT NULL")
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("state", "level", "says"),
    [
        ("at head", logging.INFO, "at this release's migrations (revision "),
        ("never migrated", logging.WARNING, "at revision none (never migrated), behind this release's migrations"),
        ("past head", logging.INFO, "at revision f00dfeed, past this release's migrations"),
    ],
)
async def test_start_up_says_where_the_database_stands(
    engine: AsyncEngine, test_db: str, caplog: pytest.LogCaptureFixture, state: str, level: int, says: str
) -> None:
    if state == "never migrated":
        await recreate_database(test_db)  # empty, not a copy of the migrated template
        await engine.dispose()
    elif state == "past head":
        async with engine.begin() as connection:  # as a newer release's migration leaves it
            await connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with caplog.at_level(logging.INFO, logger="app.core.migrations"):
        await report_revision(engine, connect_timeout=5)
    assert [(record.levelno, says in record.getMessage()) for record in caplog.records] == [(level, True)]


async def test_start_up_says_nothing_of_a_database_it_cannot_reach(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(settings.model_copy(update={"database_url": url_at(free_port())}))
    try:
        with caplog.at_level(logging.INFO, logger="app.core.migrations"):
            await report_revision(database.engine, connect_timeout=5)
    finally:
        await database.dispose()
    assert not caplog.records  # /health says the database is unavailable, once per change


async def test_the_report_ends_when_the_server_goes_silent_after_its_reads(
    settings: Settings, test_db: str, db_proxy: SwitchProxy
) -> None:
    """Its connection goes back to the pool with no round trip: a ROLLBACK sent to a server gone
    silent would keep the report, and the shutdown that awaits it, waiting for good (SQLAlchemy
    shields the close from cancellation)."""
    database = Database(settings.model_copy(update={"database_url": url_through(test_db, db_proxy.port)}))
    try:
        async with database.engine.connect() as connection:  # a pooled connection, as after start-up
            await connection.execute(text("SELECT 1"))
        db_proxy.sent.clear()
        report = asyncio.create_task(report_revision(database.engine, connect_timeout=30))
        rollback = asyncio.create_task(db_proxy.until_sent("Q", sql="ROLLBACK"))
        await asyncio.wait({report, rollback}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if rollback.done():
            await db_proxy.set_mode(Mode.HANG)  # silent from its answer on
        rollback.cancel()
        report.cancel()  # as the lifespan does at shutdown
        done, _ = await asyncio.wait({report}, timeout=3)
        assert done, "the report still waits on the silent server"
    finally:
        async with asyncio.timeout(5):
            await database.dispose()
