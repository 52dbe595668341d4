"""The embedded PostgreSQL: a cluster kept for the next start, and no server left behind by a killed process."""

import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from devtools.postgres import connect_admin, embedded_postgres, ensure_database, with_database
from tests import processes


async def database_names(url: str) -> list[str]:
    connection = await connect_admin(url)
    try:
        return [row[0] for row in await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE '%kept'")]
    finally:
        await connection.close()


def test_a_cluster_kept_as_a_seed_is_where_the_next_starts(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    with embedded_postgres(seed=seed, keep=lambda: True) as url:
        ensure_database(with_database(url, "kept"))
    with embedded_postgres(seed=seed, keep=lambda: False) as url:
        ensure_database(with_database(url, "not_kept"))
    with embedded_postgres(seed=seed) as url:
        assert asyncio.run(database_names(url)) == ["kept"]


def test_a_server_stops_when_the_process_that_started_it_is_killed() -> None:
    # As `invoke serve` is when VS Code's Stop kills it with SIGKILL, leaving no clean-up to run.
    folder = Path(tempfile.mkdtemp(prefix="lifebalance-test-"))
    folder.chmod(0o755)  # as root, the server runs as nobody, and reaches its data in here
    script = "import time\nfrom pathlib import Path\nfrom devtools.postgres import embedded_postgres\n"
    script += (
        f"with embedded_postgres(Path({str(folder / 'pgdata')!r})):\n    print('up', flush=True)\n    time.sleep(60)\n"
    )
    postmaster, sockets = None, None
    output = folder / "output"
    try:
        starter = processes.start(["-c", script], stdout=output, stderr=folder / "errors")
        try:
            deadline = time.monotonic() + 30
            while output.read_text() != "up\n" and starter.returncode is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert output.read_text() == "up\n"
            # postmaster.pid: the pid first, the socket folder fifth.
            lines = (folder / "pgdata" / "postmaster.pid").read_text().splitlines()
            postmaster, sockets = int(lines[0]), Path(lines[4])
        finally:
            starter.kill()
        assert stops_within(postmaster, 10), "the embedded PostgreSQL outlived the process that started it"
    finally:
        if postmaster is not None and running(postmaster):
            os.kill(postmaster, signal.SIGQUIT)  # this test's failure leaves nothing running either
            stops_within(postmaster, 10)  # before its folder goes: it writes there as it stops
        shutil.rmtree(folder)
        if sockets is not None:  # the killed process's to remove
            shutil.rmtree(sockets, ignore_errors=True)


def stops_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


def running(pid: int) -> bool:
    """Whether `pid` runs: neither gone nor a zombie that nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
