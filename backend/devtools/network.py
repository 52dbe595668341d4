"""Loopback networking for the tests and the benchmark: free ports, and a switchable front for PostgreSQL.

`SwitchProxy` is a TCP front that is switched between forwarding, refusing and hanging. The app
under test points its DATABASE_URL at it on 127.0.0.1, so the database can go away and come back
while the app keeps running:

- forward: every connection is relayed to the real server (TCP or Unix socket);
- refuse:  the port is closed, so connecting fails at once, and open connections are cut;
- hang:    connections are accepted and never answered, and open ones freeze mid-stream,
           as when a server or the network in between stops responding.

It carries the project app's few health queries, not bulk traffic, so it does no flow control.
"""

import asyncio
import enum
import socket
from dataclasses import dataclass

from sqlalchemy.engine import make_url


def free_port() -> int:
    """A port nothing listens on now on 127.0.0.1; the caller binds it a moment later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Mode(enum.Enum):
    FORWARD = "forward"
    REFUSE = "refuse"
    HANG = "hang"


@dataclass(frozen=True)
class Upstream:
    """Where the real server listens: a TCP address, or a Unix socket file."""

    host: str = "127.0.0.1"
    port: int = 5432
    unix_path: str | None = None

    @classmethod
    def from_url(cls, url: str) -> "Upstream":
        """The server a postgresql:// URL names, including the `?host=/socket/dir` form."""
        parsed = make_url(url)
        port = parsed.port or 5432
        host = parsed.query.get("host") or parsed.host or "localhost"
        if isinstance(host, tuple):  # a repeated ?host= lists fallbacks; the first one is enough here
            host = host[0]
        if host.startswith("/"):
            return cls(port=port, unix_path=f"{host}/.s.PGSQL.{port}")
        return cls(host=host, port=port)


class _End(asyncio.Protocol):
    """One socket of a relayed pair: whatever it reads is written to the other one."""

    def __init__(self, proxy: "SwitchProxy") -> None:
        self._proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        # Bytes read before the peer exists: some Pythons (3.11.2) do not honour a pause_reading()
        # made in connection_made, so the client's first packet can arrive this early.
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._proxy._ends.add(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        elif self.peer.transport is not None:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._proxy._ends.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _ClientEnd(_End):
    """The app's side: held unread until the upstream side is connected (or forever, when hanging)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._proxy.accepted += 1
        assert self.transport is not None
        self.transport.pause_reading()
        if self._proxy.mode is Mode.FORWARD:
            task = asyncio.get_running_loop().create_task(self._connect_upstream())
            self._proxy._tasks.add(task)
            task.add_done_callback(self._proxy._tasks.discard)

    async def _connect_upstream(self) -> None:
        assert self.transport is not None
        try:
            upstream = await self._proxy.open_upstream()
        except OSError:
            self.transport.abort()
            return
        if self._proxy.mode is not Mode.FORWARD or self.transport.is_closing():
            # The mode changed while connecting: this connection belongs to the old state.
            assert upstream.transport is not None
            upstream.transport.abort()
            self.transport.abort()
            return
        self.peer, upstream.peer = upstream, self
        assert upstream.transport is not None
        for data in self.pending:
            upstream.transport.write(data)
        self.pending.clear()
        self.transport.resume_reading()


class SwitchProxy:
    """Listens on 127.0.0.1:`port` (0 picks a free one, kept across mode changes).

    `accepted` counts the connections it took, whatever its mode: how often the app tried.
    """

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.mode = Mode.FORWARD
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._ends: set[_End] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open_upstream(self) -> _End:
        loop = asyncio.get_running_loop()

        def factory() -> _End:
            return _End(self)

        if self.upstream.unix_path is not None:
            _, end = await loop.create_unix_connection(factory, self.upstream.unix_path)
        else:
            _, end = await loop.create_connection(factory, self.upstream.host, self.upstream.port)
        return end

    async def start(self) -> None:
        await self._listen()

    async def set_mode(self, mode: Mode) -> None:
        if mode is self.mode:
            return
        self.mode = mode
        if mode is Mode.REFUSE:
            self._stop_listening()
            self._cut_all()
        elif mode is Mode.HANG:
            await self._listen()
            for end in self._ends:
                if end.transport is not None:
                    end.transport.pause_reading()
        else:
            # A database that comes back has lost the sessions it had: old connections are cut.
            self._cut_all()
            await self._listen()

    async def close(self) -> None:
        self._stop_listening()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ClientEnd(self), "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _cut_all(self) -> None:
        for end in list(self._ends):
            if end.transport is not None:
                end.transport.abort()
        self._ends.clear()
