"""The production drill: compose.prod.yml under a steady load through HAProxy while replicas restart,
a release replaces them, and the database goes away for 10 s.

1. The toolchain as .ci/containers.py has it (this machine's Docker, else container-env's engine,
   stopped at the end if this run started it; the images python:3.11-slim, postgres:15 and
   haproxy:2.6, else container-env's stand-ins), and wrk, which .ci/run installs.
2. A fresh clone of HEAD: compose.prod.yml as compose reads it, deploy/haproxy.cfg as HAProxy does.
3. The first release, deploy/release: PostgreSQL, the migration, HAProxy, the two replicas.
4. Under load (wrk and .ci/production.lua: GET /health and POST /health in turn on 4 connections,
   a 20 ms pause after each answer), one scenario after the other, each until HAProxy has both
   replicas UP again:
     a. docker restart of a replica            c. docker kill -s TERM of one, then docker start
     b. docker compose restart of one          d. a release of a new image (deploy/release)
     e. the database stopped, and started 10 s later: what clients get meanwhile, and the time
        from pg_isready's first success to the first 200 through HAProxy
5. The logs: no traceback in any container's (followed from the first release on, so the replaced
   containers' too) nor in the releases' output; the request log's client is the one HAProxy saw
   (X-Forwarded-For), not HAProxy, and its request id the one HAProxy set and the response echoed;
   every container's json-file log bounded; HAProxy the only service with a published port.

Targets: no dropped request in a-d (no 502, 503 or 504, no answer but GET's 200 and POST's 405, no
socket error), the first 200 within 2 s of pg_isready in e, no traceback; it exits 1 if one is
missed or a check fails. Its compose project, containers, volumes and images are named after the
run and removed on exit, the Docker engine too if it started one. The load goes to 127.0.0.1 (the
published port) only; the drill reads HAProxy's stats page at the HAProxy container's address.

Usage: python3 .ci/production.py (from anywhere; CI runs it from .ci/run, after .ci/containers.py).
"""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from containers import LOCAL, ROOT, Failed, Journey, check, run_checks

IMAGES = ("python:3.11-slim", "postgres:15", "haproxy:2.6")
LUA = ROOT / ".ci/production.lua"
CONNECTIONS, PAUSE_MS = 4, 20
STEADY_S = 2  # of load before each scenario's event, and after both replicas are UP again
OUTAGE_S = 10
RECOVERY_S = 2  # the target: from pg_isready's first success to the first 200 through HAProxy
REPLICAS = ("app1", "app2")
SERVICES = ("postgres", "migrate", *REPLICAS, "haproxy")
ANSWERS = frozenset({"200", "405"})  # GET /health and POST /health, when nothing is dropped
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Figures:
    """What the load saw in one scenario, and HAProxy's retries meanwhile."""

    name: str
    sent: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    retries: int
    redispatches: int
    max_ms: float

    @property
    def dropped(self) -> int:
        wrong = sum(n for status, n in self.statuses.items() if status not in ANSWERS)
        return wrong + sum(self.socket_errors.values())

    def answers(self) -> str:
        return ", ".join(f"{status} x{n}" for status, n in sorted(self.statuses.items()))


@dataclass(frozen=True)
class Target:
    name: str
    figure: float
    limit: float
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.figure <= self.limit


class Load:
    """wrk in the background, from start to stop(); its figures."""

    def __init__(self, url: str) -> None:
        wrk = shutil.which("wrk")
        check(wrk is not None, "wrk is not installed: apt-get install wrk (.ci/run does)")
        command = [str(wrk), "-t1", f"-c{CONNECTIONS}", "-d600s", "--timeout", "10s", "-s", str(LUA), url]
        self.process = subprocess.Popen(
            [*command, "--", str(PAUSE_MS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGINT)  # wrk reports, and runs the script's done(), on SIGINT
        output, _ = self.process.communicate(timeout=30)
        line = next((line for line in output.splitlines() if line.startswith("DRILL_JSON ")), "")
        check(bool(line), f"wrk printed no figures: {output[-400:]}")
        figures: dict[str, Any] = json.loads(line.removeprefix("DRILL_JSON "))
        return figures


class Drill(Journey):
    def __init__(self) -> None:
        super().__init__("drill")
        # compose.prod.yml with the bundled PostgreSQL, its image named after the run, HAProxy on a
        # port Docker picks on 127.0.0.1.
        self.env.update(COMPOSE_FILE="compose.prod.yml", COMPOSE_PROFILES="postgres", IMAGE=self.project)
        self.env.update(HTTP_PORT="0")
        self.url = ""
        self.machine = ""
        self.haproxy = ""  # the HAProxy container's address, for its stats page
        self.loads: list[Load] = []
        self.follower: subprocess.Popen[str] | None = None
        self.released: list[str] = []  # the releases' output
        self.scenarios: list[Figures] = []
        self.outage: dict[str, Any] = {}
        self.tracebacks = -1

    # --- helpers

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def address(self, service: str) -> str:
        ip = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return self.run("docker", "inspect", "-f", ip, self.container(service), out=True)

    def status(self, url: str, timeout: float = 2) -> int:
        """The status of a GET, or 0 when there was no answer."""
        try:
            with LOCAL.open(url, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's rows for the replicas' backend, by server name (and BACKEND)."""
        with LOCAL.open(f"http://{self.haproxy}:8404/;csv", timeout=2) as response:
            page = response.read().decode()
        rows = csv.DictReader(io.StringIO(page.removeprefix("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas"}

    def wait_up(self, timeout: float = 90) -> None:
        """Until HAProxy has marked both replicas UP."""
        deadline, states = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            try:
                rows = self.stats()
                states = ", ".join(f"{r} {rows[r]['status']}" for r in REPLICAS)
                if all(rows[r]["status"] == "UP" for r in REPLICAS):
                    print(f"HAProxy: {states}", file=self.log, flush=True)
                    return
            except (OSError, KeyError) as error:
                states = str(error)
            time.sleep(0.25)
        raise Failed(f"HAProxy did not mark both replicas UP within {timeout:g} s: {states}")

    def release(self, tag: str) -> None:
        output = self.run(str(self.clone / "deploy/release"), tag, merge=True)
        self.released.append(output)

    def compose_logs(self, *services: str) -> list[str]:
        logs = self.run("docker", "compose", "logs", "--no-color", "--no-log-prefix", *services, out=True)
        return logs.splitlines()

    def under_load(self, name: str, event: Callable[[], object]) -> Figures:
        """The load from STEADY_S before the event to STEADY_S after both replicas are UP again."""
        before = self.stats()["BACKEND"]
        load = Load(self.url)
        self.loads.append(load)
        try:
            time.sleep(STEADY_S)
            event()
            self.wait_up()
            time.sleep(STEADY_S)
        finally:
            figures = load.stop()
        after = self.stats()["BACKEND"]
        errors = {kind: int(figures[kind]) for kind in ("connect", "read", "write", "timeout")}
        result = Figures(
            name=name,
            sent=int(figures["sent"]),
            statuses={status: int(n) for status, n in figures["statuses"].items()},
            socket_errors={kind: n for kind, n in errors.items() if n},
            retries=int(after["wretr"]) - int(before["wretr"]),
            redispatches=int(after["wredis"]) - int(before["wredis"]),
            max_ms=float(figures["max_ms"]),
        )
        socket = ", ".join(f"{k} {n}" for k, n in result.socket_errors.items()) or "none"
        self.note(f"sent {result.sent}; answers {result.answers()}; socket errors {socket}; dropped {result.dropped}")
        retried = f"HAProxy retried {result.retries} (redispatched {result.redispatches})"
        self.note(f"{retried}; the slowest answer {result.max_ms:.0f} ms")
        return result

    # --- the steps

    def announce(self) -> None:
        print(f"Production drill {self.project}: compose.prod.yml of HEAD, under load")
        if not self.quiet("docker", "info", "--format", "{{.ServerVersion}}"):
            print("  no Docker engine answers: container-env starts one, and this run stops it at the end")
        print(f"For this run only, in {self.work} (removed at the end): a clone of HEAD, the logs")

    def toolchain(self) -> None:
        """toolchain: Docker with Compose v2 (else container-env), the images, wrk"""
        self.engine(IMAGES)
        check(shutil.which("wrk") is not None, "wrk is not installed: apt-get install wrk (.ci/run does)")
        docker = self.run("docker", "version", "--format", "{{.Server.Version}}", out=True)
        compose = self.run("docker", "compose", "version", "--short", out=True)
        haproxy = self.run("docker", "run", "--rm", "--name", f"{self.project}-version", "haproxy:2.6", "-v", out=True)
        self.machine = f"{os.cpu_count()} cores, Docker {docker}, Compose {compose}, {' '.join(haproxy.split()[:3])}"
        self.note(self.machine)

    def fresh_clone(self) -> None:
        """fresh clone of HEAD"""
        self.run("git", "clone", "-q", "--no-hardlinks", str(ROOT), str(self.clone))
        self.run("git", "-C", str(self.clone), "log", "-1", "--format=HEAD %h %s")
        self.cwd = self.clone

    def static_checks(self) -> None:
        """compose.prod.yml as compose reads it; deploy/haproxy.cfg as HAProxy 2.6 does (haproxy -c)"""
        self.run("docker", "compose", "config", "--quiet")
        # Without a variable it needs, compose refuses: the secret has no default.
        unset = {k: v for k, v in self.env.items() if k != "POSTGRES_PASSWORD"}
        refused = subprocess.run(
            ["docker", "compose", "config", "--quiet"], cwd=self.cwd, env=unset, capture_output=True, text=True
        )
        print(refused.stderr, file=self.log)
        check(refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr, "compose ran without a password")
        config = f"{self.clone / 'deploy/haproxy.cfg'}:/usr/local/etc/haproxy/haproxy.cfg:ro"
        name = f"{self.project}-haproxy-check"
        check_config = ("haproxy:2.6", "haproxy", "-c", "-f", "/usr/local/etc/haproxy/haproxy.cfg")
        output = self.run("docker", "run", "--rm", "--name", name, "-v", config, *check_config, merge=True)
        check("Configuration file is valid" in output, "haproxy -c")

    def first_release(self) -> None:
        """first release: deploy/release (PostgreSQL, migrate, HAProxy, app1, app2); /health through HAProxy"""
        self.release(f"{self.project}-1")
        # From now on, every container's log, those that later releases replace included.
        follow = (self.work / "followed.log").open("w")
        self.follower = subprocess.Popen(
            ["docker", "compose", "logs", "--follow", "--no-color", "--timestamps"],
            cwd=self.cwd,
            env=self.env,
            stdout=follow,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = "http://" + self.run("docker", "compose", "port", "haproxy", "8080", out=True)
        self.haproxy = self.address("haproxy")
        self.wait_up()
        self.note(f"{self.url}/health: {self.health_ok(f'{self.url}/health')}")
        # Only HAProxy publishes a port, and only on 127.0.0.1.
        published = self.run("docker", "compose", "ps", "--format", "{{.Service}} {{.Ports}}", out=True)
        for line in published.splitlines():
            service, _, ports = line.partition(" ")
            check(("->" in ports) == (service == "haproxy"), f"published ports: {line}")
            check("->" not in ports or ports.startswith("127.0.0.1:"), f"not on 127.0.0.1: {line}")

    def restart(self) -> None:
        """a. docker restart app1, under load"""
        restart = ("docker", "restart", self.container("app1"))
        self.scenarios.append(self.under_load("a. docker restart app1", lambda: self.run(*restart)))

    def compose_restart(self) -> None:
        """b. docker compose restart app2, under load"""
        restart = ("docker", "compose", "restart", "app2")
        self.scenarios.append(self.under_load("b. docker compose restart app2", lambda: self.run(*restart)))

    def sigterm(self) -> None:
        """c. docker kill -s TERM app1 (as a pod deletion), then docker start, under load"""

        def event() -> None:
            name = self.container("app1")
            self.run("docker", "kill", "-s", "TERM", name)
            code = self.run("docker", "wait", name, out=True)
            check(code == "0", f"app1 exited {code} after SIGTERM")
            self.run("docker", "start", name)

        self.scenarios.append(self.under_load("c. SIGTERM app1, docker start", event))

    def new_release(self) -> None:
        """d. deploy/release of a new image (another tag), under load"""
        tag = f"{self.project}-2"
        self.scenarios.append(self.under_load("d. deploy/release, new image", lambda: self.release(tag)))
        images = self.run("docker", "compose", "ps", "--format", "{{.Service}} {{.Image}}", *REPLICAS, out=True)
        check(images.count(f"{self.project}:current") == len(REPLICAS), f"the replicas run {images}")
        version = '{{index .Config.Labels "org.opencontainers.image.version"}}'
        check(self.run("docker", "inspect", "-f", version, f"{self.project}:current", out=True) == tag, "the image")

    def database_outage(self) -> None:
        """e. the database stopped, started 10 s later, under load: first 200 through HAProxy after pg_isready"""
        postgres, times = self.container("postgres"), {}
        first_200: list[float] = []

        def poll() -> None:  # GET /health through HAProxy, every 50 ms, until a 200
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.status(f"{self.url}/health") == 200:
                    first_200.append(time.monotonic())
                    return
                time.sleep(0.05)

        def event() -> None:
            times["stop"] = time.monotonic()
            self.run("docker", "stop", postgres)
            time.sleep(OUTAGE_S)
            self.run("docker", "start", postgres)
            times["start"] = time.monotonic()
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            ready = ("pg_isready", "-q", "-h", "127.0.0.1", "-U", "lifebalance", "-d", "lifebalance")
            while time.monotonic() - times["start"] < 60:
                started = time.monotonic()  # the database accepted by the end of this check at the latest
                if self.ok("docker", "exec", postgres, *ready):
                    times["ready"] = started
                    break
                time.sleep(0.1)
            poller.join(60)
            check("ready" in times and bool(first_200), "the database or HAProxy did not come back within 60 s")

        figures = self.under_load("e. database stopped 10 s", event)
        recovery = max(0.0, first_200[0] - times["ready"])
        self.outage = {"figures": figures, "recovery_s": recovery, "down_s": times["start"] - times["stop"]}
        self.note(f"pg_isready {times['ready'] - times['stop']:.1f} s after the stop; first 200 {recovery:.2f} s later")

    def logs_checked(self) -> None:
        """the logs: no traceback; client and request id through HAProxy; json-file logs bounded"""
        # The request log through HAProxy: a request it logs (a 404), without a request id of its own.
        path = f"/drill-{self.project}"
        try:
            LOCAL.open(f"{self.url}{path}", timeout=5)
            raise Failed(f"{path} answered 2xx")
        except urllib.error.HTTPError as error:
            check(error.code == 404, f"{path}: {error.code}")
            echoed = error.headers["X-Request-ID"] or ""
        time.sleep(1)
        logged = (json.loads(x) for x in self.compose_logs(*REPLICAS) if path in x)
        line = next((entry for entry in logged if entry.get("path") == path), None)
        check(line is not None, f"no request log line for {path}")
        assert line is not None
        proxied = next((x for x in self.compose_logs("haproxy") if f"GET {path} " in x), "")
        print(f"{line}\n{proxied}", file=self.log)
        seen = proxied.split(":", 1)[0]  # HAProxy's line starts with the client's address:port
        client = str(line["client"]).rsplit(":", 1)[0]
        check(client == seen and client != self.haproxy, f"request log client {client}: HAProxy saw {seen}")
        check(line["request_id"] == echoed and f"{{{echoed}}}" in proxied, f"request id {line['request_id']}")
        self.note(f"request log: client {client} (X-Forwarded-For; HAProxy is {self.haproxy}), request id {echoed}")
        # Bounded logs, on every container of the project.
        for service in SERVICES:
            log = "{{json .HostConfig.LogConfig}}"
            config = json.loads(self.run("docker", "inspect", "-f", log, self.container(service), out=True))
            bounded = config["Type"] == "json-file" and {"max-size", "max-file"} <= config["Config"].keys()
            check(bounded, f"{service}: {config}")
        self.note("json-file logs bounded (max-size, max-file) on " + ", ".join(SERVICES))
        # No traceback: the followed logs, the current containers' logs, the releases' output.
        if self.follower is not None:
            self.follower.terminate()
            self.follower.wait(10)
        followed = (self.work / "followed.log").read_text(errors="replace")
        texts = {"followed": followed, "releases": "\n".join(self.released)}
        texts.update({service: "\n".join(self.compose_logs(service)) for service in SERVICES})
        found = {name: text.count(TRACEBACK) for name, text in texts.items()}
        self.tracebacks = sum(found.values())
        lines = sum(text.count("\n") for text in texts.values())
        self.note(f"tracebacks: {self.tracebacks} in {lines} lines ({', '.join(f'{k} {n}' for k, n in found.items())})")
        for name, text in texts.items():
            for x in text.splitlines():
                if TRACEBACK in x:
                    print(f"{name}: {x}", file=self.log)

    def drill(self) -> None:
        self.announce()
        for step in (self.toolchain, self.fresh_clone, self.static_checks, self.first_release):
            self.step(step)
        for step in (self.restart, self.compose_restart, self.sigterm, self.new_release, self.database_outage):
            self.step(step)
        self.step(self.logs_checked)

    # --- the end

    def targets(self) -> list[Target]:
        rows = [Target(f"{f.name}: dropped", f.dropped, 0) for f in self.scenarios]
        if self.outage:
            rows.append(Target("e. pg_isready to first 200 via HAProxy", self.outage["recovery_s"], RECOVERY_S, "s"))
        if self.tracebacks >= 0:
            rows.append(Target("tracebacks in the logs", self.tracebacks, 0))
        return rows

    def report(self) -> str:
        out = [
            f"Production drill, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {self.machine or f'{os.cpu_count()} cores'}",
            f"Load: wrk, {CONNECTIONS} connections through HAProxy, GET /health and POST /health in turn, "
            f"{PAUSE_MS} ms after each answer",
            f"  {'scenario':<34}{'sent':>6}  {'answers':<34}{'socket errors':<15}{'dropped':>7}{'retried':>9}",
        ]
        for f in [*self.scenarios, *([self.outage["figures"]] if self.outage else [])]:
            socket = ", ".join(f"{k} {n}" for k, n in f.socket_errors.items()) or "0"
            out.append(f"  {f.name:<34}{f.sent:>6}  {f.answers():<34}{socket:<15}{f.dropped:>7}{f.retries:>9}")
        out.append("  sent counts the requests in flight when the load stopped; retried: HAProxy's retries (GET, HEAD)")
        out.append("  e is no target: while no replica reaches its database, HAProxy answers 503 itself")
        if self.outage:
            out.append(
                f"Database outage: down {self.outage['down_s']:.1f} s; from pg_isready's first success to the "
                f"first 200 through HAProxy: {self.outage['recovery_s']:.2f} s"
            )
        out += ["", f"Targets:\n  {'target':<44}{'figure':>8}{'limit':>9}  met"]
        for t in self.targets():
            figure, limit = f"{t.figure:.{2 if t.unit else 0}f}{t.unit}", f"<= {t.limit:g}{t.unit}"
            out.append(f"  {t.name:<44}{figure:>8}{limit:>9}  {'yes' if t.met else 'NO'}")
        return "\n".join(out)

    def met(self) -> bool:
        return all(t.met for t in self.targets())

    def teardown(self) -> list[str]:
        for process in [load.process for load in self.loads] + ([self.follower] if self.follower else []):
            if process.poll() is None:
                process.kill()
                process.wait()
        return super().teardown()


def main() -> int:
    drill = Drill()
    return run_checks(drill, drill.drill, "Drill steps", "production drill", "all targets met")


if __name__ == "__main__":
    sys.exit(main())
