"""`invoke bench`: the project's /health under load and through a database outage, beside references.

Runs a PostgreSQL (the configured one, else an embedded one) and five one-worker uvicorn servers
on 127.0.0.1: the project's app, as production logs; the same app without its request log; the
baseline, the cheapest endpoint of the project's own shape (no database); a bare FastAPI endpoint,
for information; and the per-request pattern most templates use. It loads each with wrk (the pair
on a route the request log writes a line for), counts the app's database work from PostgreSQL's
statistics, drills a refusing and a hanging database, connections ended by the server and a
failover, times start-up, the test suite and one test file, then prints a table of the figures
and their targets, and writes the same figures as JSON.

    python bench/run.py [--quick] [--json PATH]

Exit status: 0 whatever the figures (a missed target is reported, not fatal); 2 when the
benchmark itself broke (a server did not start, a figure could not be read).
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BACKEND = ROOT / "backend"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BACKEND))

from app.core.config import Settings, configured  # noqa: E402  (needs backend/ on sys.path)
from devtools.network import Mode, SwitchProxy, Upstream  # noqa: E402
from devtools.postgres import embedded_postgres, ensure_database, with_database  # noqa: E402
from drill import failed_over, killed_connections, outage, time_to_connected  # noqa: E402
from load import Run, Summary, run_wrk, wrk_version  # noqa: E402
from pgstats import Stats  # noqa: E402
from report import ONE_FILE, table, targets  # noqa: E402
from servers import BenchError, Server, start_server  # noqa: E402

# A route of the app that the request log writes a line for (unlike a successful /health).
LOGGED_ROUTE = "/openapi.json"
# One database per app under test, so pg_stat_database's row for it counts that app alone.
APP_DATABASE = "lifebalance_bench_app"
PER_REQUEST_DATABASE = "lifebalance_bench_per_request"
PACKAGES = ["fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools", "sqlalchemy", "asyncpg"]


@dataclass(frozen=True)
class Plan:
    warmup_s: float
    run_s: float
    rounds: int
    suite: bool


FULL = Plan(warmup_s=3, run_s=10, rounds=3, suite=True)
# For CI: shows that every part still works, in well under 90 s; its figures are rough.
QUICK = Plan(warmup_s=1, run_s=3, rounds=2, suite=False)


@contextmanager
def database() -> Iterator[tuple[str, str]]:
    """The server to use, as (a URL on it, "configured" or "embedded")."""
    if url := configured("DATABASE_URL"):
        yield url, "configured"
        return
    with embedded_postgres() as url:
        yield url, "embedded"


async def measure(plan: Plan, server_url: str, log_dir: Path) -> dict[str, Any]:
    app_db = with_database(server_url, APP_DATABASE)
    settings = Settings(database_url=app_db)  # the app's own defaults, env and backend/.env included
    proxy = SwitchProxy(Upstream.from_url(app_db))
    await proxy.start()
    # The app reaches its database through the proxy, so the drill can take it away and bring it back.
    app_env = {
        # The request log as production writes it: one JSON object a line.
        "LOG_FORMAT": "json",
        "DATABASE_URL": make_url(app_db)
        .difference_update_query(["host"])
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False),
    }
    per_request_env = {
        "DATABASE_URL": make_url(with_database(server_url, PER_REQUEST_DATABASE))
        .set(drivername="postgresql+asyncpg")
        .render_as_string(hide_password=False)
    }
    stats = await Stats.connect(with_database(server_url, "postgres"))
    servers: list[Server] = []
    try:
        # Started one after the other, so no start-up time includes another server's. The app runs
        # as it is served (logging.json, the request log at LOG_LEVEL INFO, in JSON); "quiet" is the
        # same app with LOG_LEVEL=WARNING, which writes no request log: the pair shows what it costs.
        as_served = partial(start_server, app="app.main:app", app_dir=BACKEND, log_dir=log_dir)
        app = await as_served("app", env=app_env, options=("--log-config", "logging.json"))
        quiet_env = {**app_env, "LOG_LEVEL": "WARNING"}
        quiet = await as_served("quiet", env=quiet_env, options=("--log-config", "logging.json"))
        servers += [app, quiet]
        # The baseline has the project's middleware, from backend/, and its logging as the app has
        # it, so that its request log is on too (and, like the app's, leaves successful probes out).
        baseline_env = {**app_env, "PYTHONPATH": str(BACKEND)}
        logged_as_app = ("--log-config", str(BACKEND / "logging.json"))
        servers.append(
            await start_server(
                "baseline", "baseline_app:app", app_dir=BENCH, env=baseline_env, options=logged_as_app, log_dir=log_dir
            )
        )
        servers.append(await start_server("bare", "bare_app:app", app_dir=BENCH, env={}, log_dir=log_dir))
        servers.append(
            await start_server(
                "per-request", "per_request_app:app", app_dir=BENCH, env=per_request_env, log_dir=log_dir
            )
        )
        # What each load requests: /health, and the route whose request log the pair compares.
        loads = {server.name: server.url for server in servers if server is not quiet}
        loads |= {"logged": app.base + LOGGED_ROUTE, "unlogged": quiet.base + LOGGED_ROUTE}
        for url in loads.values():
            await run_wrk(url, plan.warmup_s)

        # Publish everything the app did so far (start-up, warm-up) and let it reconnect, so the
        # window below holds the load runs alone.
        await stats.settled_counters(APP_DATABASE)
        if await time_to_connected(app.url) is None:
            raise BenchError(f"the app did not reconnect after its connections were ended; see {app.log_path}")
        before = await stats.counters(APP_DATABASE)
        # Connections are counted where the app opens them, at the proxy: the server's own count
        # (pg_stat_database.sessions) is published as lazily as its other counters.
        accepted_before = proxy.accepted

        runs: dict[str, list[Run]] = {name: [] for name in loads}
        for round_index in range(plan.rounds):
            # Alternate the order, so neither drift nor the previous run's aftermath favours one server.
            for name, url in loads.items() if round_index % 2 == 0 else reversed(loads.items()):
                runs[name].append(await run_wrk(url, plan.run_s))

        new_connections = proxy.accepted - accepted_before
        held = len(await stats.backends(APP_DATABASE))
        after = await stats.settled_counters(APP_DATABASE)

        if await time_to_connected(app.url) is None:
            raise BenchError(f"the app did not reconnect before the drill; see {app.log_path}")
        outages = [await outage(proxy, app.url, mode, settings.health_cache_ttl) for mode in (Mode.REFUSE, Mode.HANG)]
        outages.append(await killed_connections(stats, APP_DATABASE, app.url, settings.health_cache_ttl))
        outages.append(await failed_over(proxy, app.url, settings.health_cache_ttl))

        load_seconds = sum(run.seconds for run in runs["app"])
        return {
            "postgres_version": await stats.server_version(),
            "wrk_version": await wrk_version(),
            "load": {name: asdict(Summary.of(server_runs)) for name, server_runs in runs.items()},
            "database": {
                "load_seconds": load_seconds,
                "transactions": after.transactions - before.transactions,
                "transactions_per_s": (after.transactions - before.transactions) / load_seconds,
                "new_connections": new_connections,
                "connections_held_after_load": held,
                "pool_size": settings.db_pool_size,
            },
            "outage": {o.mode: asdict(o) for o in outages},
            "startup_s": {server.name: server.startup_s for server in servers},
        }
    finally:
        for server in servers:
            await server.stop()
        await proxy.close()
        await stats.close()


def log_cost(database_url: str, log_dir: Path) -> dict[str, Any]:
    """bench/log_cost.py's figures: what the request log costs a request, in process."""
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(BACKEND)}
    with (log_dir / "log_cost.log").open("wb") as log:
        result = subprocess.run(  # noqa: S603
            [sys.executable, str(BENCH / "log_cost.py")], cwd=BACKEND, env=env, stdout=subprocess.PIPE, stderr=log
        )
    if result.returncode != 0:
        raise BenchError(f"bench/log_cost.py exited with {result.returncode}; see {log_dir / 'log_cost.log'}")
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def run_suite() -> dict[str, Any]:
    """Wall times of the whole test suite and of one file (its second run), as `invoke test` runs them."""

    def timed(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        command = [sys.executable, "-m", "invoke", "test", "--", "-q", "-p", "no:cacheprovider", *args]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
        return time.perf_counter() - started, result

    wall, result = timed()
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    timed(ONE_FILE)
    one_file, _ = timed(ONE_FILE)
    return {
        "wall_s": wall,
        "exit_code": result.returncode,
        "summary": lines[-1] if lines else "",
        "one_file_wall_s": one_file,
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # A plain `kill` is handled like Ctrl-C, so the servers and the database are stopped either way.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs and no test suite: a smoke run for CI")
    parser.add_argument("--json", type=Path, help="where to write the figures (default bench/results/bench-*.json)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started_at = datetime.now(UTC)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    json_path: Path = args.json or RESULTS / f"bench-{started_at:%Y%m%dT%H%M%SZ}.json"

    figures: dict[str, Any] = {
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "plan": {**asdict(plan), "mode": "quick" if args.quick else "full"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": versions(),
    }
    try:
        with database() as (server_url, source):
            figures["database_source"] = source
            for name in (APP_DATABASE, PER_REQUEST_DATABASE):
                try:
                    ensure_database(with_database(server_url, name))
                except (OSError, asyncpg.PostgresError) as error:
                    masked = make_url(server_url).render_as_string(hide_password=True)
                    raise BenchError(f"cannot create database {name} on {masked}: {error}") from None
            figures |= asyncio.run(measure(plan, server_url, log_dir))
            figures["log_cost"] = log_cost(with_database(server_url, APP_DATABASE), log_dir)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    if plan.suite:
        # After the servers have stopped, so the suite has the machine to itself.
        figures["test_suite"] = run_suite()
    load = figures["load"]

    def ratio(server: str, reference: str) -> float:
        """The median of the rounds' ratios: each round's two runs are minutes apart at most, so a
        round that this machine's neighbours slowed counts once rather than in the totals."""
        rounds = zip(load[server]["runs"], load[reference]["runs"], strict=True)
        return float(statistics.median(run["rps"] / other["rps"] for run, other in rounds))

    figures["ratios"] = {
        "logged_vs_unlogged": ratio("logged", "unlogged"),
        "health_vs_baseline": ratio("app", "baseline"),
        "health_vs_per_request": ratio("app", "per-request"),
        "health_vs_bare": ratio("app", "bare"),
    }
    figures["targets"] = [asdict(target) | {"met": target.met} for target in targets(figures)]

    print(table(figures))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nFigures written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
