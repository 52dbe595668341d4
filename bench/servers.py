"""Starting and stopping the uvicorn servers under test, one worker each on 127.0.0.1."""

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devtools.network import free_port


class BenchError(Exception):
    """The benchmark itself broke (a server did not start, a figure could not be read)."""


@dataclass
class Server:
    name: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    startup_s: float = field(default=0.0)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/health"

    async def stop(self) -> None:
        """SIGTERM, so the app runs its shutdown; SIGKILL if it has not exited within 5 s."""
        if self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def start_server(
    name: str,
    app: str,
    *,
    app_dir: Path,
    env: dict[str, str],
    log_dir: Path,
    options: Sequence[str] = ("--log-level", "warning"),
    timeout_s: float = 30.0,
) -> Server:
    """Start `uvicorn app` and wait for its first 200 from /health; the time taken is its start-up time.

    uvicorn's access log is off for every server alike: it would halve the figures. The project's
    app writes its own request log, whose cost the benchmark measures.
    """
    port = free_port()
    log_path = log_dir / f"{name}.log"
    command = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", *options]
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command, cwd=app_dir, env={**os.environ, **env}, stdout=log, stderr=log
        )
    server = Server(name, port, process, log_path)
    try:
        server.startup_s = await _first_ok(server, started, timeout_s)
    except BaseException:
        await server.stop()
        raise
    return server


async def _first_ok(server: Server, started: float, timeout_s: float) -> float:
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.perf_counter() - started < timeout_s:
            if server.process.returncode is not None:
                raise BenchError(f"{server.name} exited with code {server.process.returncode}; see {server.log_path}")
            try:
                response = await client.get(server.url)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return time.perf_counter() - started
            await asyncio.sleep(0.01)
    raise BenchError(f"{server.name} gave no 200 on /health within {timeout_s:.0f} s; see {server.log_path}")
