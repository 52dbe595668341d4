"""Alembic environment: migrations run through the app's async engine settings and models."""

import asyncio

import asyncpg
from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import get_settings
from app.core.database import describe_error
from app.core.logging import configure_logging
from app.models import Base

config = context.config
target_metadata = Base.metadata
# The advisory lock of this database's migrations: any 64-bit number no other lock of it uses.
MIGRATION_LOCK = 0x6C69_6665_6261_6C61  # "lifebala"
settings = get_settings()
# The service's format and level (app/core/logging.py); in process (the tests), the caller's own.
if config.attributes.get("configure_logger", True):
    configure_logging()


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (`alembic upgrade head --sql`) without connecting."""
    context.configure(
        url=settings.database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_sync_migrations(connection: Connection) -> None:
    # Any number of processes may migrate at once (replicas, a job, a developer): they take turns
    # on this lock, so the first applies the migrations and the others find the database at head.
    # A session's lock, taken and committed before Alembic begins its transaction: within a
    # transaction Alembic did not begin, it would take that one as the caller's, and never commit.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()
    try:
        # Autogenerate also compares column types and server defaults, not only tables and columns.
        context.configure(
            connection=connection, target_metadata=target_metadata, compare_type=True, compare_server_default=True
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()


async def run_migrations_online() -> None:
    # Connecting is bounded like the app's; statements are not, since a migration may rightly take long.
    engine = create_async_engine(
        settings.database_url, poolclass=NullPool, connect_args={"timeout": settings.db_connect_timeout}
    )
    try:
        try:
            connection = await engine.connect()
        # A refused login (a wrong password, an unknown role) is the driver's own error: SQLAlchemy
        # wraps what goes wrong once connected, not while connecting.
        except (OSError, TimeoutError, SQLAlchemyError, asyncpg.PostgresError) as error:
            raise SystemExit(f"Cannot connect to {settings.masked_database_url}: {describe_error(error)}") from None
        try:
            await connection.run_sync(run_sync_migrations)
        finally:
            await connection.close()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
