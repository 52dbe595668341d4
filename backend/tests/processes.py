"""The Python processes the tests start (uvicorn, Alembic, scripts), each run as `python -m MODULE ARGS`
or `python -c SCRIPT ARGS` would run it, but forked from a server that has imported the libraries.

A new interpreter spends 0.5-0.7 s of CPU importing FastAPI, SQLAlchemy, uvicorn and Alembic before
it does anything, and the suite starts some twenty: that was half of the suite's CPU. So each test
process has a multiprocessing fork server that imports them once, and the processes are its forks.
Each is still a process of its own: it imports the app anew and reads its own environment and
settings (nothing of the app is imported before the fork), handles its own signals, and exits
with its own code. What uvicorn's --workers and --reload start are new interpreters, as always.
"""

import asyncio
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import types
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

# Not devtools' BACKEND: its module imports the app's, which the fork server must not have.
BACKEND = Path(__file__).resolve().parents[1]
# The libraries those processes import before their own code, and this module (what each runs).
PRELOADED = [
    "alembic.command",
    "asgi_correlation_id",
    "asyncpg",
    "fastapi",
    "httptools",
    "orjson",
    "pydantic_settings",
    "sqlalchemy.ext.asyncio",
    "structlog",
    "uvicorn.main",
    "uvloop",
    __name__,
]

_forks = multiprocessing.get_context("forkserver")
_forks.set_forkserver_preload(PRELOADED)


def _become(args: Sequence[str], cwd: Path, env: Mapping[str, str], stdout: Path, stderr: Path) -> None:
    """In the fork: `python ARGS`, run in `cwd` with `env`, writing to these files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # Standard input on descriptor 0, as a new process has it (multiprocessing opens another, which
    # uvicorn's --workers and --reload would pass on to their children), from /dev/null.
    sys.stdin.close()
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY), (2, stderr, os.O_WRONLY)):
        file = os.open(path, flags | (os.O_CREAT | os.O_APPEND if fd else 0), 0o644)
        if file != fd:
            os.dup2(file, fd)
            os.close(file)
    sys.stdin = os.fdopen(0)
    option, target, *rest = args
    if option == "-m":
        sys.path.insert(0, str(cwd))
        sys.argv = [target, *rest]  # runpy puts the module's path first, as python -m does
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, "")
        sys.argv = ["-c", *rest]
        main = sys.modules["__main__"] = types.ModuleType("__main__")
        exec(compile(target, "<string>", "exec"), main.__dict__)  # noqa: S102 as python -c does


class Process:
    """A started process, with what the tests use of asyncio's: its exit code, signals, a wait."""

    def __init__(self, process: BaseProcess) -> None:
        self._process = process
        assert process.pid is not None, "started"
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        """As asyncio's: None while it runs, -N when signal N ended it."""
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        if self.returncode is None:
            loop = asyncio.get_running_loop()
            ended = asyncio.Event()
            loop.add_reader(self._process.sentinel, ended.set)  # readable once the process has ended
            try:
                await ended.wait()
            finally:
                loop.remove_reader(self._process.sentinel)
        return self.join()

    def join(self, timeout: float | None = None) -> int:
        """Its exit code, after waiting up to `timeout` seconds; raises TimeoutError if it still runs."""
        self._process.join(timeout)
        if self.returncode is None:
            raise TimeoutError(f"process {self.pid} still runs after {timeout} s")
        return self.returncode


def start(
    args: Sequence[str],
    *,
    stdout: Path,
    stderr: Path | None = None,
    cwd: Path = BACKEND,
    env: Mapping[str, str] | None = None,
) -> Process:
    """`python ARGS` (`-m MODULE ...` or `-c SCRIPT ...`), its output appended to `stdout` and its
    errors to `stderr` (by default the same file); in backend/ and this process's environment
    unless told otherwise, as a process started from here has them."""
    stderr = stderr or stdout
    for path in (stdout, stderr):
        path.touch()  # there to read, even for a process that ended before writing anything
    environment = dict(os.environ if env is None else env)
    process = _forks.Process(target=_become, args=(list(args), cwd, environment, stdout, stderr))
    process.start()
    return Process(process)


def run(
    args: Sequence[str], *, timeout: float, cwd: Path = BACKEND, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` to its end, as subprocess.run with capture_output and text would."""
    with tempfile.TemporaryDirectory() as folder:
        stdout, stderr = Path(folder, "stdout"), Path(folder, "stderr")
        process = start(args, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
        try:
            code = process.join(timeout)
        except TimeoutError:
            process.kill()
            process.join()
            raise
        return subprocess.CompletedProcess(args, code, stdout.read_text(), stderr.read_text())
