"""Nothing a test commits reaches another test or the next run, and the app under test is never on
the development database."""

import asyncio
import os
import shutil
from pathlib import Path

import asyncpg
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import main
from app.core.config import Settings, normalize_database_url
from app.core.database import Database
from devtools.migrations import BACKEND, alembic_config
from devtools.postgres import comment_database, drop_database, recreate_database, with_database
from tests.harness import build_template, migrations_fingerprint, renew_test_database, use_database


async def test_what_a_test_commits_is_gone_in_the_next(settings: Settings, admin: asyncpg.Connection) -> None:
    for run in ("first", "second"):  # two tests in a row, as the test_db fixture gives each its database
        assert make_url(await renew_test_database(admin)).database == make_url(settings.database_url).database
        database = Database(settings)
        try:
            async with database.engine.begin() as connection:
                left = await connection.scalar(text("SELECT to_regclass('isolation_probe') IS NOT NULL"))
                assert left is False, f"{run}: an earlier test's committed table and rows are still there"
                await connection.execute(text("CREATE TABLE isolation_probe (run text)"))
                await connection.execute(text("INSERT INTO isolation_probe VALUES (:run)"), {"run": run})
        finally:
            await database.dispose()


def test_the_template_is_what_the_migrations_make_now(test_db: str) -> None:
    # A template that an earlier run left at head, with a table that a migration since edited no
    # longer makes: a run must not take it as it is.
    stale = with_database(test_db, f"{make_url(test_db).database}_stale")
    asyncio.run(recreate_database(stale))
    try:
        use_database(stale)
        command.upgrade(alembic_config(), "head")
        use_database(test_db)
        asyncio.run(_execute(stale, "CREATE TABLE made_by_an_old_migration (n int)"))
        asyncio.run(comment_database(stale, migrations_fingerprint() + " of an older migration"))

        assert build_template(stale) is True
        assert asyncio.run(_execute(stale, "SELECT to_regclass('made_by_an_old_migration') IS NULL"))

        # Made by the migrations as they are now, it is taken as it is by the next run.
        asyncio.run(_execute(stale, "CREATE TABLE left_by_this_run (n int)"))
        assert build_template(stale) is False
        assert asyncio.run(_execute(stale, "SELECT to_regclass('left_by_this_run') IS NOT NULL"))
    finally:
        use_database(test_db)  # as it was, spelling included: the tests after it read it
        asyncio.run(drop_database(stale))


def test_editing_a_migration_in_place_changes_the_fingerprint(tmp_path: Path) -> None:
    copy = shutil.copytree(BACKEND / "alembic", tmp_path / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
    assert migrations_fingerprint(copy) == migrations_fingerprint()
    migration = next((copy / "versions").glob("*.py"))
    # An edit that keeps the file's size, as a changed name or number does.
    migration.write_text(migration.read_text().replace("def upgrade", "def UPGRADE", 1))
    assert migrations_fingerprint(copy) != migrations_fingerprint()


async def _execute(url: str, sql: str) -> object:
    database = Database(Settings(database_url=url))
    try:
        async with database.engine.begin() as connection:
            result = await connection.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        await database.dispose()


def test_importing_the_app_reaches_the_test_database() -> None:
    # `main` was imported with this module, at collection, as `from app.main import app` would be.
    expected = normalize_database_url(os.environ["DATABASE_URL"]).render_as_string(hide_password=False)
    assert main.settings.database_url == expected
    assert "_test" in str(make_url(main.settings.database_url).database)
