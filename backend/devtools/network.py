"""Loopback networking for the tests and the benchmark: free ports, and a switchable front for PostgreSQL.

`SwitchProxy` is a TCP front that is switched between forwarding, refusing and hanging. The app
under test points its DATABASE_URL at it on 127.0.0.1, so the database can go away and come back
while the app keeps running:

- forward: every connection is relayed to the real server (TCP or Unix socket);
- refuse:  the port is closed, so connecting fails at once, and open connections are cut;
- hang:    connections are accepted and never answered, and open ones freeze mid-stream,
           as when a server or the network in between stops responding.

`delay` adds latency to everything relayed, each way, as a distant server has. The proxy also
reads the protocol it relays: what the app sends (`sent`), and which server process serves each
connection (`backend_pids`), so a test can count round trips or end the app's sessions from the
server side. It carries the project app's few health queries, not bulk traffic, so it does no
flow control.
"""

import asyncio
import enum
import socket
import struct
from collections import deque
from dataclasses import dataclass

from sqlalchemy.engine import make_url

# Requests a client sends before its start-up message; the server answers each with one byte.
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


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


@dataclass(frozen=True)
class Sent:
    """One message a client sent after its start-up: its type byte, and the SQL of a query or a parse."""

    connection: int
    kind: str
    sql: str = ""

    @property
    def ends_round_trip(self) -> bool:
        """A simple query or a sync: the client now waits for the server's answer."""
        return self.kind in ("Q", "S")


class _Wire:
    """Reads both directions of one relayed connection as PostgreSQL protocol messages."""

    def __init__(self, proxy: "SwitchProxy", number: int) -> None:
        self._proxy = proxy
        self._number = number
        self._from_client = bytearray()
        self._from_server = bytearray()
        self._started = False  # the client has sent its start-up message; typed messages follow
        self._answers_due = 0  # one-byte answers the server owes to SSL or GSS requests
        self._opaque = False  # encrypted: nothing more can be read

    def client_bytes(self, data: bytes) -> None:
        self._from_client += data
        while not self._opaque:
            if not self._started:
                if len(self._from_client) < 8:
                    return
                length, code = struct.unpack("!ii", self._from_client[:8])
                if len(self._from_client) < length:
                    return
                del self._from_client[:length]
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self._answers_due += 1
                elif code != _CANCEL_REQUEST:
                    self._started = True
                continue
            message = self._take(self._from_client)
            if message is None:
                return
            kind, body = message
            self._proxy.sent.append(Sent(self._number, kind, _sql(kind, body)))
            self._proxy._more_sent.set()

    def server_bytes(self, data: bytes) -> None:
        self._from_server += data
        while not self._opaque:
            if self._answers_due:
                if not self._from_server:
                    return
                answer = self._from_server[:1]
                del self._from_server[:1]
                self._answers_due -= 1
                self._opaque = answer != b"N"
                continue
            message = self._take(self._from_server)
            if message is None:
                return
            kind, body = message
            if kind == "K":  # BackendKeyData: the server process's pid, then the cancel key
                self._proxy.backend_pids[self._number] = struct.unpack("!i", body[:4])[0]

    @staticmethod
    def _take(buffer: bytearray) -> tuple[str, bytes] | None:
        if len(buffer) < 5:
            return None
        (length,) = struct.unpack("!i", buffer[1:5])
        if len(buffer) < 1 + length:
            return None
        kind, body = chr(buffer[0]), bytes(buffer[5 : 1 + length])
        del buffer[: 1 + length]
        return kind, body


def _sql(kind: str, body: bytes) -> str:
    if kind == "Q":  # the query text
        return body.rstrip(b"\0").decode(errors="replace")
    if kind == "P":  # the statement name, then the query text
        return body.split(b"\0")[1].decode(errors="replace")
    return ""


class _End(asyncio.Protocol):
    """One socket of a relayed pair: whatever it reads is written to the other one."""

    def __init__(self, proxy: "SwitchProxy", wire: _Wire | None = None) -> None:
        self._proxy = proxy
        self.wire = wire
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        # Bytes read before the peer exists: some Pythons (3.11.2) do not honour a pause_reading()
        # made in connection_made, so the client's first packet can arrive this early.
        self.pending: list[bytes] = []
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._drain: asyncio.Task[None] | None = None
        self.orphaned = False  # the server behind it is gone: the next packet gets a reset
        self._close_when_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._proxy._ends.add(self)

    def data_received(self, data: bytes) -> None:
        if self.orphaned:
            assert self.transport is not None
            self.transport.abort()
            return
        self.observe(data)
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.send(data)

    def observe(self, data: bytes) -> None:
        """The server's side: what it sends."""
        if self.wire is not None:
            self.wire.server_bytes(data)

    def send(self, data: bytes) -> None:
        """Write to this socket, `delay` seconds from now."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._proxy.delay <= 0 and not self._delayed:
            self.transport.write(data)
            return
        self._delayed.append((asyncio.get_running_loop().time() + self._proxy.delay, data))
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._write_delayed())
            self._proxy._tasks.add(self._drain)
            self._drain.add_done_callback(self._proxy._tasks.discard)

    async def _write_delayed(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._delayed:
                due, data = self._delayed[0]
                await asyncio.sleep(max(0.0, due - loop.time()))
                self._delayed.popleft()
                if self._proxy.mode is Mode.HANG or self.transport is None or self.transport.is_closing():
                    continue  # in flight when the network stopped: lost
                self.transport.write(data)
        finally:
            self._drain = None
            if self._close_when_sent and self.transport is not None:
                self.transport.close()

    def close_when_sent(self) -> None:
        """Close once what is delayed for this socket has been written: a server's last words
        (a FATAL error before it hangs up) arrive, late, as they would from afar."""
        if self._drain is None:
            if self.transport is not None:
                self.transport.close()
        else:
            self._close_when_sent = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._proxy._ends.discard(self)
        if self.peer is not None:
            self.peer.close_when_sent()


class _ClientEnd(_End):
    """The app's side: held unread until the upstream side is connected (or forever, when hanging)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._proxy.accepted += 1
        self.wire = _Wire(self._proxy, self._proxy.accepted)
        assert self.transport is not None
        self.transport.pause_reading()
        if self._proxy.mode is Mode.FORWARD:
            task = asyncio.get_running_loop().create_task(self._connect_upstream())
            self._proxy._tasks.add(task)
            task.add_done_callback(self._proxy._tasks.discard)

    def observe(self, data: bytes) -> None:
        assert self.wire is not None
        self.wire.client_bytes(data)

    async def _connect_upstream(self) -> None:
        assert self.transport is not None
        try:
            upstream = await self._proxy.open_upstream(self.wire)
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
        for data in self.pending:
            upstream.send(data)
        self.pending.clear()
        self.transport.resume_reading()


class SwitchProxy:
    """Listens on 127.0.0.1:`port` (0 picks a free one, kept across mode changes).

    `accepted` counts the connections it took, whatever its mode: how often the app tried.
    `sent` lists what clients sent after start-up, and `backend_pids` maps each connection
    (numbered from 1, in the order accepted) to the server process serving it.
    """

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.mode = Mode.FORWARD
        self.delay = 0.0
        self.port = 0
        self.accepted = 0
        self.sent: list[Sent] = []
        self.backend_pids: dict[int, int] = {}
        self._more_sent = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._ends: set[_End] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open_upstream(self, wire: _Wire | None = None) -> _End:
        loop = asyncio.get_running_loop()

        def factory() -> _End:
            return _End(self, wire)

        if self.upstream.unix_path is not None:
            _, end = await loop.create_unix_connection(factory, self.upstream.unix_path)
        else:
            _, end = await loop.create_connection(factory, self.upstream.host, self.upstream.port)
        return end

    async def start(self) -> None:
        await self._listen()

    async def set_mode(self, mode: Mode, *, cut: bool = True) -> None:
        """Switch; back to forwarding, open connections are cut unless `cut` is False.

        A server that comes back has lost the sessions it had, hence the cut. With `cut=False`,
        a connection frozen by hanging stays frozen, as when its packets are lost for good while
        new connections get through: the worst case for a client waiting on it.
        """
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
            if cut:
                self._cut_all()
            await self._listen()

    async def until_sent(self, *kinds: str, sql: str = "") -> None:
        """Wait until a client has sent a message of one of these kinds (type bytes, as in `sent`),
        whose SQL contains `sql`."""
        while not any(message.kind in kinds and sql in message.sql for message in self.sent):
            self._more_sent.clear()
            await self._more_sent.wait()

    def fail_over(self) -> None:
        """The server behind the open connections is gone, and its replacement takes new ones.

        As after a failover, the clients are not told: the next thing one sends on an old
        connection is answered with a reset.
        """
        for end in self._ends:
            end.orphaned = True

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
