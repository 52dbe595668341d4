"""What `invoke bench` prints: the figures of one run, and the targets they are held to."""

from dataclasses import dataclass
from typing import Any

from drill import PROBES
from load import CONNECTIONS

# The inner loop's file: what `invoke test -- FILE` costs a developer between two edits.
ONE_FILE = "backend/tests/test_health.py"

SERVERS = {
    "app": "/health (this project)",
    "baseline": "baseline (project's shape)",
    "bare": "bare FastAPI endpoint",
    "per-request": "per-request SELECT 1",
    "logged": "app /openapi.json, logged",
    "unlogged": "same, LOG_LEVEL=WARNING",
}
OUTAGES = {"refuse": "refusing", "hang": "hanging", "killed": "killed conns", "failover": "failed over"}


@dataclass(frozen=True)
class Target:
    """A figure of the run and its limit; `figure` is None when this run did not measure it."""

    name: str
    figure: float | None
    limit: float
    at_least: bool = False  # the figure must reach the limit, rather than stay within it
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.figure is None:
            return None
        return self.figure >= self.limit if self.at_least else self.figure <= self.limit


def targets(figures: dict[str, Any]) -> list[Target]:
    """Every target of the benchmark, in the order the table shows them."""
    ratios, load, db, outage = figures["ratios"], figures["load"], figures["database"], figures["outage"]
    suite = figures.get("test_suite")

    def answered(mode: str, status: str) -> int:
        count: int = outage[mode]["statuses"].get(status, 0)
        return count

    def recovery(mode: str) -> float:
        seconds: float | None = outage[mode]["recovery_s"]
        return float("inf") if seconds is None else seconds  # None: not within the drill's limit

    return [
        Target("request log: kept, in process", figures["log_cost"]["kept"], 0.85, at_least=True, unit="x"),
        Target("/health req/s vs the baseline", ratios["health_vs_baseline"], 0.95, at_least=True, unit="x"),
        Target("/health req/s vs per-request", ratios["health_vs_per_request"], 4, at_least=True, unit="x"),
        Target("/health errors under load", load["app"]["errors"], 0),
        Target("DB transactions under load", db["transactions_per_s"], 2, unit="/s"),
        Target("new DB connections under load", db["new_connections"], 0),
        Target("connections held after load", db["connections_held_after_load"], db["pool_size"]),
        Target(f"refusing DB: 503 of {PROBES} probes", answered("refuse", "503"), PROBES, at_least=True),
        Target("refusing DB: slowest answer", outage["refuse"]["slowest_s"], 0.1, unit="s"),
        Target(f"hanging DB: 503 of {PROBES} probes", answered("hang", "503"), PROBES, at_least=True),
        Target("hanging DB: slowest answer", outage["hang"]["slowest_s"], 1.5, unit="s"),
        Target("killed connections: false 503s", answered("killed", "503"), 0),
        Target("failover: false 503s", answered("failover", "503"), 0),
        *(Target(f"{OUTAGES[mode]}: back to connected", recovery(mode), 2, unit="s") for mode in ("refuse", "hang")),
        Target("start-up to first 200", figures["startup_s"]["app"], 1.5, unit="s"),
        Target("test suite, wall", None if suite is None else suite["wall_s"], 14, unit="s"),
        Target("one test file, wall", None if suite is None else suite["one_file_wall_s"], 2, unit="s"),
    ]


def table(figures: dict[str, Any]) -> str:
    plan, load, db = figures["plan"], figures["load"], figures["database"]
    ratios, cost = figures["ratios"], figures["log_cost"]
    out = [
        f"lifebalance-backend bench, {figures['started_at']}: {figures['machine']['cpu_count']} CPUs, "
        f"Python {figures['machine']['python']}, PostgreSQL {figures['postgres_version']} "
        f"({figures['database_source']}), {figures['wrk_version']}",
        "",
        f"Load: wrk, {CONNECTIONS} connections, {plan['rounds']} rounds x {plan['run_s']:g} s per server, "
        f"alternating, after {plan['warmup_s']:g} s warm-up",
        f"  {'server':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}",
    ]
    for key, label in SERVERS.items():
        s = load[key]
        out.append(f"  {label:<28}{s['rps']:>10.0f}{s['p50_ms']:>10.2f}{s['p99_ms']:>10.2f}{s['errors']:>9}")
    out += [
        f"  /health vs baseline {ratios['health_vs_baseline']:.2f}, vs per-request "
        f"{ratios['health_vs_per_request']:.1f}, vs bare endpoint {ratios['health_vs_bare']:.2f} (for information)",
        f"  the request log keeps {ratios['logged_vs_unlogged']:.2f} of a logged route's req/s",
        "  (each ratio: the median of the rounds' ratios)",
        "",
        f"The request log in process (bench/log_cost.py, {cost['requests']} requests of /openapi.json in "
        "paired batches, logged and not):",
        f"  {cost['logged_us']:.1f} us a request with it, {cost['quiet_us']:.1f} us without: it keeps "
        f"{cost['kept']:.2f} (the median of the pairs' ratios)",
        "",
        f"Database, from pg_stat_database during the app's {db['load_seconds']:.0f} s under load:",
        f"  {db['transactions']} transactions ({db['transactions_per_s']:.2f}/s), "
        f"{db['new_connections']} new connections; {db['connections_held_after_load']} connections held "
        f"after the load (pool size {db['pool_size']})",
        "",
        f"Outage drill: {PROBES} concurrent /health probes, then the database comes back",
        f"  {'database':<14}{'answers':<20}{'slowest':>10}{'back to connected':>20}",
    ]
    for mode, label in OUTAGES.items():
        o = figures["outage"][mode]
        answers = ", ".join(f"{status} x{count}" for status, count in sorted(o["statuses"].items()))
        back = "not within 10 s" if o["recovery_s"] is None else f"{o['recovery_s']:.2f} s"
        out.append(f"  {label:<14}{answers:<20}{o['slowest_s']:>9.3f}s{back:>20}")
    out += [
        "",
        "Start-up to first 200 on /health: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures["startup_s"].items()),
    ]
    suite = figures.get("test_suite")
    if suite is not None:
        out.append(f"Test suite: {suite['wall_s']:.1f} s wall, exit {suite['exit_code']} ({suite['summary']})")
        out.append(f"One test file ({ONE_FILE}), its second run: {suite['one_file_wall_s']:.1f} s wall")
    out += ["", f"Targets:\n  {'target':<40}{'figure':>10}{'limit':>12}  met"]
    marks = {True: "yes", False: "NO", None: "not measured"}
    for row in figures["targets"]:
        relation = ">=" if row["at_least"] else "<="
        figure = "-" if row["figure"] is None else f"{row['figure']:.2f}{row['unit']}"
        limit = f"{relation} {row['limit']:g}{row['unit']}"
        out.append(f"  {row['name']:<40}{figure:>10}{limit:>12}  {marks[row['met']]}")
    return "\n".join(out)
