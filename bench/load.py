"""HTTP load with wrk: one run against one URL, its figures read from wrk_report.lua's JSON line."""

import asyncio
import json
import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from servers import BenchError

REPORT_SCRIPT = Path(__file__).with_name("wrk_report.lua")
CONNECTIONS = 64
# wrk's threads share the two cores with the server; two keep 64 connections busy without starving it.
THREADS = 2
# A request slower than this counts as a timeout error, so a server that stalls shows up as errors.
TIMEOUT_S = 2


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Summary:
    """Several runs of one server: throughput over all of them, the median p50, the worst p99."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    seconds: float
    runs: list[dict[str, float]]

    @classmethod
    def of(cls, runs: list[Run]) -> "Summary":
        requests, seconds = sum(r.requests for r in runs), sum(r.seconds for r in runs)
        return cls(
            rps=requests / seconds,
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=max(r.p99_ms for r in runs),
            errors=sum(r.errors for r in runs),
            requests=requests,
            seconds=seconds,
            runs=[{**asdict(r), "rps": r.rps} for r in runs],
        )


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)")
    return path


async def wrk_version() -> str:
    process = await asyncio.create_subprocess_exec(
        wrk_path(), "-v", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return output.decode(errors="replace").splitlines()[0].split(" Copyright")[0] if output else "unknown"


async def run_wrk(url: str, seconds: float) -> Run:
    """Load `url` with 64 keep-alive connections for `seconds`; errors are socket errors plus status >= 400."""
    command = [wrk_path(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", f"--timeout={TIMEOUT_S}s"]
    command += ["-s", str(REPORT_SCRIPT), url]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=seconds + 30)
    except TimeoutError:
        raise BenchError(f"wrk did not finish a {seconds:g} s run against {url}") from None
    finally:
        # Timed out or interrupted: no load may outlive the run.
        if process.returncode is None:
            process.kill()
            await process.wait()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_JSON "):
            report = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise BenchError(f"wrk gave no report for {url} (exit {process.returncode}): {err.decode(errors='replace')}")
    return Run(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        errors=sum(report[k] for k in report if k.endswith("_errors")),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
    )
