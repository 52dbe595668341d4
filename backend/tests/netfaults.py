"""Network stand-ins for a database in trouble, on 127.0.0.1 only.

`HungServer` accepts connections and never answers, like a PostgreSQL that is stuck.
`Gate` is a port that refuses connections until it is opened, then forwards them to the real
test database, like a PostgreSQL that is down and comes back; frozen, it passes nothing more,
like a server that stops answering on connections already open.
"""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import URL, make_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def url_at(port: int, *, password: str = "s3cret-pw") -> str:
    return URL.create(
        "postgresql+asyncpg", username="lifebalance", password=password, host="127.0.0.1", port=port, database="db"
    ).render_as_string(hide_password=False)


class HungServer:
    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()

    async def _handle(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._held.add(writer)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield self._server.sockets[0].getsockname()[1]
        finally:
            for writer in self._held:
                writer.close()
            self._server.close()
            await self._server.wait_closed()


class Gate:
    """A closed port until `open()`; then a TCP forwarder to the database at `target_url`."""

    def __init__(self, target_url: str) -> None:
        self.port = free_port()
        self._target: URL = make_url(target_url)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        self._flowing.clear()

    async def _connect_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_dir = self._target.query.get("host")
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{self._target.port or 5432}")
        return await asyncio.open_connection(self._target.host or "127.0.0.1", self._target.port or 5432)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        upstream_reader, upstream_writer = await self._connect_target()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    await self._flowing.wait()
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        for task in (pipe(reader, upstream_writer), pipe(upstream_reader, writer)):
            self._pipes.add(asyncio.create_task(task))

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._pipes.clear()
