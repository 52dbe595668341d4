"""What an app did to its database, read from PostgreSQL's own statistics.

Each app under test has a database of its own, so pg_stat_database's row for it counts that app's
work alone. A backend publishes its counters lazily (at most once a second while busy, and an idle
one may sit on them for many seconds), but always when it exits: to read exact figures, the app's
backends are ended first, which the app's pool must survive anyway.
"""

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from servers import BenchError


@dataclass(frozen=True)
class Counters:
    transactions: int  # xact_commit + xact_rollback


class Stats:
    """An admin connection to another database of the same server, so reading adds nothing to the counts."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @classmethod
    async def connect(cls, admin_url: str) -> "Stats":
        return cls(await asyncpg.connect(admin_url, timeout=10))

    async def close(self) -> None:
        await self._connection.close()

    async def server_version(self) -> str:
        version: str = await self._connection.fetchval("SHOW server_version")
        return version

    async def backends(self, database: str) -> list[int]:
        """The server processes serving connections to `database`: one per connection the app holds."""
        rows = await self._connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database
        )
        return [row["pid"] for row in rows]

    async def counters(self, database: str) -> Counters:
        row = await self._connection.fetchrow(
            "SELECT xact_commit + xact_rollback AS transactions FROM pg_stat_database WHERE datname = $1",
            database,
        )
        if row is None:
            raise BenchError(f"pg_stat_database has no row for {database}")
        return Counters(row["transactions"])

    async def end_backends(self, database: str, timeout_s: float = 10.0) -> None:
        """End the app's connections from the server side, as an administrator or a restart would."""
        pids = await self.backends(database)
        for pid in pids:
            await self._connection.execute("SELECT pg_terminate_backend($1)", pid)
        deadline = time.monotonic() + timeout_s
        while pids and set(pids) & set(await self.backends(database)):
            if time.monotonic() > deadline:
                raise BenchError(f"connections to {database} did not end within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    async def settled_counters(self, database: str, timeout_s: float = 10.0) -> Counters:
        """End the app's connections, so their backends publish everything, then read the counters."""
        await self.end_backends(database, timeout_s)
        deadline = time.monotonic() + timeout_s
        # An exiting backend leaves pg_stat_activity a moment before it publishes its counters:
        # read until they hold still for a few tenths of a second.
        last, steady = await self.counters(database), 0
        while steady < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            current = await self.counters(database)
            last, steady = current, (steady + 1 if current == last else 0)
        return last
