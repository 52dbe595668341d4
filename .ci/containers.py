"""The container journey, with real containers, as a new user takes it.

1. The toolchain: this machine's Docker with Compose v2 and the registry's python:3.11-slim and
   postgres:15; where no registry answers, ../shared/tools/container-env's engine and local
   stand-ins instead. The Dev Containers CLI, and a headless Chrome or Chromium.
2. The checks that need Docker or the Dev Container schema: devcontainer.json, and what compose
   makes of the devcontainer's two compose files (pre-commit checks the other files).
3. docker compose up, cold; /health from the host; invoke test in the app service; hot reload;
   rebuilds after a lock edit and after a code edit; /docs and /redoc rendered in headless Chrome;
   data kept across down + up; the runtime image (root-owned, lean, healthy); down -v.
4. devcontainer up, cold, as a host user other than root (as root, an unused uid above 1000), so
   the CLI remaps the container user's uid; that user owns what it writes and can update the
   environment; inside: invoke migrate, invoke test (development data untouched), pre-commit,
   invoke serve and /health.

It works on a fresh clone of HEAD, as a new user would: uncommitted changes are not part of it.
"Cold" is as on a new machine with the base images pulled: no layer cache and an empty uv download
cache, with nothing pruned. Its compose projects, containers and images are named after the run,
so runs never collide and nothing else is touched. Everything it starts is removed on exit, failure
or not, the Docker engine too if it started one. It prints each check and its time, then the
timings against the project's targets.

Usage: python3 .ci/containers.py (from anywhere; CI runs it from .ci/run). Not as root, it uses sudo
for system packages and runs the devcontainer as the calling user; as root, as an unused uid that
gets no account on the machine.
"""

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NoReturn

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_ENV = "../shared/tools/container-env"  # from ROOT
IMAGES = ("python:3.11-slim", "postgres:15")
DEVCONTAINER_CLI = "0.89.0"
# Pinned to a commit of devcontainers/spec (the last to change this schema; the spec repo has no
# release tags): a schema change upstream cannot fail or pass a run unnoticed. Move it deliberately.
SCHEMA_URL = (
    "https://raw.githubusercontent.com/devcontainers/spec/d424cc157e9a110f3bf67d311b46c7306d5a465d"
    "/schemas/devContainer.base.schema.json"
)
SHARED_SCHEMA = ROOT.parent / "shared/schemas/devContainer.base.schema.json"
DC_FILES = ("-f", "docker-compose.yml", "-f", ".devcontainer/docker-compose.yml")
DB = "lifebalance"
# The Dev Containers CLI fails for a uid with no passwd entry (node's os.userInfo, then `id -un`):
# as root, the passwd and group files given first are bound over /etc's in a mount namespace that
# only the command sees, so the machine gets no account.
WITH_ACCOUNT = 'mount --bind "$0" /etc/passwd && mount --bind "$1" /etc/group && shift && exec "$@"'
RUNTIME_CHECK = """
import os, shutil, sysconfig
for path in (sysconfig.get_path("purelib"), "app", "alembic"):
    assert os.path.isdir(path) and not os.access(path, os.W_OK), path
for path in ("tests", "devtools", "requirements-dev.txt"):
    assert not os.path.exists(path), path
for tool in ("curl", "uv"):
    assert not shutil.which(tool), tool
print("runtime image: read-only to its user; no tests, devtools, dev lock, curl or uv")
"""
# One exec: start the server, wait for /health, stop it.
SERVE_CHECK = """
set -e
setsid invoke serve --port 8000 >/tmp/serve.log 2>&1 &
for _ in $(seq 60); do
  body=$(curl -fsS --max-time 5 http://127.0.0.1:8000/health 2>/dev/null) && break
  sleep 1
done
kill -- -$! || true
echo "$body"
case $body in *'"database":"connected"'*) ;; *) cat /tmp/serve.log; exit 1 ;; esac
"""
CHROME = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=15000"]
CHROME += ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server"]
# Straight to 127.0.0.1, whatever proxy the environment names.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failed(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Failed(what)


def unused_uid() -> int:
    taken = {line.split(":")[2] for f in ("/etc/passwd", "/etc/group") for line in Path(f).read_text().splitlines()}
    return next(uid for uid in range(1001, 60000) if str(uid) not in taken)


def no_warnings(output: str) -> None:
    warned = [line for line in output.splitlines() if "warn" in line.lower()]
    check(not warned, "warnings: " + " | ".join(warned))


class Journey:
    def __init__(self, kind: str = "ci") -> None:
        self.project = f"lifebalance-{kind}-{secrets.token_hex(3)}"
        self.dc_project = f"{self.project}-devcontainer"
        self.runtime = f"{self.project}-runtime"  # its compose project, image and container
        # Unique, so that a rebuild after it never finds the layers of an earlier run's same edit.
        self.edit = f"# edited by .ci/containers.py in {self.project}\n"
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.project}-"))
        self.work.chmod(0o755)  # the devcontainer's host user reaches its clone in here
        self.logs, self.clone = self.work / "logs", self.work / "lifebalance-backend"
        self.logs.mkdir(mode=0o700)
        (self.work / "tmp").mkdir()
        self.cwd = ROOT
        self.log: IO[str] = sys.stdout
        self.results: list[str] = []
        self.timings: list[str] = []
        self.dockerd = 0  # the pid of the engine this run started, if it started one
        self.chrome = ""
        self.api = ""  # where compose published the app, once it is up
        self.password = f"ci-{secrets.token_hex(8)}"
        path = [str(self.work / "npm/bin"), os.environ["PATH"]]  # the Dev Containers CLI, if this run installs it
        if (ROOT / ".venv/bin/check-jsonschema").exists():
            path.insert(0, str(ROOT / ".venv/bin"))
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join(path),
            # So that what honours it (Chrome, the Dev Containers CLI) leaves its files in the run's folder.
            "TMPDIR": str(self.work / "tmp"),
            "npm_config_cache": str(self.work / "npm-cache"),
            "COMPOSE_PROJECT_NAME": self.project,
            # Ports that Docker picks free as it binds them: a busy 8000 or 5432, or one taken while
            # the run builds, does not fail the run.
            "APP_PORT": "0",
            "POSTGRES_PORT": "0",
            **{"POSTGRES_USER": DB, "POSTGRES_DB": DB, "POSTGRES_PASSWORD": self.password},
        }
        # The CLI gives the container user the host user's uid, except for root, which is not a case
        # to support: as root, the devcontainer runs as an unused uid (host_user).
        self.uid = os.getuid() or unused_uid()
        self.as_user: list[str] = []
        self.user_env = {**self.env, "COMPOSE_PROJECT_NAME": self.dc_project}
        self.dc_args = ("--workspace-folder", ".", "--override-config", str(self.work / "devcontainer.json"))

    # --- running commands

    def run(self, *cmd: str, out: bool = False, merge: bool = False, user: bool = False, stdin: str = "") -> str:
        """Run cmd in the current folder, its output in the step's log. Returns its stdout if out, and
        its stderr with it if merge (the output that must have warned of nothing)."""
        print(f"$ {shlex.join(cmd)}", file=self.log, flush=True)
        result = subprocess.run(
            [*self.as_user, *cmd] if user else cmd,
            cwd=self.cwd,
            env=self.user_env if user else self.env,
            input=stdin,
            stdout=subprocess.PIPE if out or merge else self.log,
            stderr=subprocess.STDOUT if merge else self.log,
            text=True,
            errors="replace",
            timeout=900,
            check=False,
        )
        self.log.write(result.stdout or "")
        check(result.returncode == 0, f"exit {result.returncode}: {shlex.join(cmd)}")
        return (result.stdout or "").strip()

    def ok(self, *cmd: str) -> bool:
        try:
            self.run(*cmd)
        except (Failed, OSError):
            return False
        return True

    def quiet(self, *cmd: str) -> str:
        """A value a command prints, without its stderr; empty if it failed."""
        try:
            result = subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return result.stdout.strip() if result.returncode == 0 else ""

    def as_root(self, *cmd: str) -> None:
        self.run(*(cmd if os.getuid() == 0 else ("sudo", *cmd)))

    def step(self, fn: Callable[[], None]) -> None:
        """Run a step, named by its docstring, its commands' output in a log of its own; if it fails,
        show the log's end and stop."""
        name = str(fn.__doc__)
        print(f"--- {name}", flush=True)
        log = self.logs / (re.sub(r"[^a-zA-Z0-9]+", "_", name)[:80] + ".log")
        t0 = time.monotonic()
        try:
            with log.open("w") as self.log:
                fn()
        except BaseException as e:
            self.results.append(f"FAIL {time.monotonic() - t0:4.0f}s  {name}")
            if not isinstance(e, Exception):  # interrupted: straight to the teardown
                raise
            # A failed check or command, or a bug: the log says which.
            print(f"FAILED ({e}): {name}; last lines of its log:")
            print("\n".join(f"    | {line}" for line in log.read_text(errors="replace").splitlines()[-60:]))
            raise Failed(name) from e
        finally:
            self.log = sys.stdout
        self.results.append(f"ok   {time.monotonic() - t0:4.0f}s  {name}")

    def note(self, text: str) -> None:
        print(f"    {text}", flush=True)

    def timing(self, what: str, t0: float, target: float) -> None:
        seconds = time.monotonic() - t0
        over = "  OVER" if seconds > target else ""
        self.timings.append(f"  {what:<52} {seconds:5.1f}s  (target {target:>4g}s){over}")

    def health_ok(self, url: str) -> str:
        """200 and a connected database, within 60 s; the body."""
        for _ in range(60):
            try:
                with LOCAL.open(url, timeout=5) as response:
                    body = json.load(response)
                break
            except OSError:
                time.sleep(1)
        else:
            raise Failed(f"no 200 from {url} within 60 s")
        print(body, file=self.log)
        check(body["status"] == "ok" and body["database"] == "connected", f"{url}: {body}")
        return json.dumps(body, separators=(",", ":"))

    def pg(self, sql: str) -> str:
        pg = ("postgres", "psql", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", DB, "-d", DB, "-Atc", sql)
        return self.run("docker", "compose", "exec", "-T", "-e", f"PGPASSWORD={self.password}", *pg, out=True)

    def dc(self, *cmd: str, out: bool = False, merge: bool = False) -> str:
        """devcontainer exec, as the devcontainer's host user."""
        return self.run("devcontainer", "exec", *self.dc_args, *cmd, out=out, merge=merge, user=True)

    def dc_psql(self, sql: str) -> str:
        url = f"postgresql://{DB}:{self.password}@postgres/{DB}"
        return self.dc("psql", url, "-v", "ON_ERROR_STOP=1", "-Atc", sql, out=True)

    def cold_build_args(self) -> list[str]:
        # UV_NO_CACHE (backend/Dockerfile): no download cache. The namespace gives the build cache
        # mounts of its own: BuildKit of Docker 20.10 (Debian's docker.io) hands a --no-cache build a
        # new, empty cache mount and drops the one it had, which would be the developer's uv cache.
        return ["UV_NO_CACHE=1", f"BUILDKIT_CACHE_MOUNT_NS={self.project}"]

    # --- the steps

    def announce(self) -> None:
        engine = self.quiet("docker", "info", "--format", "{{.ServerVersion}}")
        self.chrome = shutil.which("google-chrome") or shutil.which("chromium") or ""
        print(f"Container journey {self.project}")
        print("Installs on this machine, to stay:")
        print(f"  - the images {' and '.join(IMAGES)}, pulled when a registry answers, else stand-ins built")
        print(f"    by {CONTAINER_ENV} images; Docker's build cache keeps the layers its builds add")
        if not engine:
            print(f"  - no Docker engine answers: {CONTAINER_ENV} engine installs Debian's docker.io and the")
            print("    Compose v2 plugin, and starts dockerd, which this run stops at the end")
        if not self.chrome:
            print("  - Debian's chromium (apt-get), for /docs and /redoc")
        cli = self.quiet("devcontainer", "--version") == DEVCONTAINER_CLI
        cli_note = "" if cli else f", and the Dev Containers CLI {DEVCONTAINER_CLI} (npm install --prefix)"
        print(f"For this run only, in {self.work} (removed at the end): a clone of HEAD, the logs{cli_note}")
        if self.quiet("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"):
            print("note: uncommitted changes are not part of this run")

    def engine(self, images: tuple[str, ...] = IMAGES) -> None:
        """This machine's Docker with Compose v2, else container-env's engine (stopped at the end if
        this run started it); the images, pulled, else already here, else container-env's stand-ins."""
        if not (self.ok("docker", "info") and self.ok("docker", "compose", "version")):
            check((ROOT / CONTAINER_ENV).exists(), "needs Docker with Compose v2 and the images " + ", ".join(images))
            was_running = self.ok("docker", "info")
            self.as_root(str(ROOT / CONTAINER_ENV), "engine")
            if not was_running:  # container-env started dockerd, with nohup: this run stops it
                self.dockerd = int(Path("/var/run/docker.pid").read_text())
                check(Path(f"/proc/{self.dockerd}/comm").read_text().strip() == "dockerd", "dockerd's pid")
        # The registry's image, else one already here (a stand-in where no registry answers).
        kept = "{{index .RepoTags 0}}: {{.Id}}, kept (no registry answered)"
        if not all(
            self.ok("docker", "pull", "-q", i) or self.ok("docker", "image", "inspect", "-f", kept, i) for i in images
        ):
            self.as_root(str(ROOT / CONTAINER_ENV), "images")

    def toolchain(self) -> None:
        """container toolchain (Docker and images, else container-env; devcontainer CLI; Chrome)"""
        self.engine()
        if self.quiet("devcontainer", "--version") != DEVCONTAINER_CLI:
            npm = ("npm", "install", "--prefix", str(self.work / "npm"), "--global", "--no-audit", "--no-fund")
            self.run(*npm, f"@devcontainers/cli@{DEVCONTAINER_CLI}")
        if not self.chrome:  # GitHub's runners have Google Chrome; elsewhere Debian's chromium.
            self.as_root("apt-get", "update", "-qq")
            apt = ("apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium")
            self.as_root("env", "DEBIAN_FRONTEND=noninteractive", *apt)
            self.chrome = shutil.which("chromium") or ""
        self.run("docker", "version", "--format", "Docker {{.Server.Version}}")
        self.run("docker", "compose", "version")
        self.run("devcontainer", "--version")
        self.run(self.chrome, "--version")

    def host_user(self) -> None:
        """devcontainer host user: an unused uid, in the Docker socket's group, with no account on the machine"""
        name, home, tmp = "lifebalance-ci", self.work / "home", self.work / "dc-tmp"
        for folder in (home, tmp):
            folder.mkdir()
            os.chown(folder, self.uid, self.uid)
        passwd, group = self.work / "passwd", self.work / "group"
        passwd.write_text(Path("/etc/passwd").read_text() + f"{name}:x:{self.uid}:{self.uid}::{home}:/bin/bash\n")
        group.write_text(Path("/etc/group").read_text() + f"{name}:x:{self.uid}:\n")
        docker = os.stat(self.env.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")).st_gid
        bind = ["unshare", "--mount", "--propagation", "private", "sh", "-c", WITH_ACCOUNT, str(passwd), str(group)]
        self.as_user = [*bind, "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", f"--groups={docker}", "--"]
        self.user_env.update(HOME=str(home), USER=name, LOGNAME=name, TMPDIR=str(tmp))
        check(self.run("id", out=True, user=True).startswith(f"uid={self.uid}({name})"), "the uid's account")
        check(self.quiet("getent", "passwd", str(self.uid)) == "", "an account on the machine")
        self.run("docker", "version", "--format", "Docker {{.Server.Version}}", user=True)
        self.note(f"uid {self.uid}; an account only in its commands' own mount namespace")

    def fresh_clone(self) -> None:
        """fresh clone of HEAD"""
        self.run("git", "clone", "-q", "--no-hardlinks", str(ROOT), str(self.clone))
        self.run("git", "-C", str(self.clone), "log", "-1", "--format=HEAD %h %s")
        if os.getuid() == 0:  # the devcontainer's host user owns the clone, as a user's own clone
            self.run("chown", "-R", f"{self.uid}:{self.uid}", str(self.clone))
        self.cwd = self.clone

    def static_checks(self) -> None:
        """devcontainer.json against its schema; the devcontainer's compose files against compose-spec"""
        schema = SHARED_SCHEMA
        if not schema.exists():
            schema = self.work / "devContainer.base.schema.json"
            with urllib.request.urlopen(SCHEMA_URL, timeout=60) as response:
                schema.write_bytes(response.read())
        config = self.run(sys.executable, ".ci/jsonc.py", "--print", ".devcontainer/devcontainer.json", out=True)
        self.run("check-jsonschema", "--schemafile", str(schema), "-", stdin=config)
        # The override's `!reset` tag is compose's own: check what compose makes of the two files.
        compose = self.run("docker", "compose", *DC_FILES, "config", out=True)
        schema_args = ("--builtin-schema", "vendor.compose-spec", "--force-filetype", "yaml")
        self.run("check-jsonschema", *schema_args, "-", stdin=compose)

    def compose_up_wait(self) -> None:
        try:
            self.run("docker", "compose", "up", "--wait", "--wait-timeout", "300")
            self.api = "http://" + self.run("docker", "compose", "port", "app", "8000", out=True)
        except Failed:  # what it left: the states, then the app's log last
            self.ok("docker", "compose", "ps", "-a")
            self.ok("docker", "compose", "logs", "--tail", "20", "postgres")
            self.ok("docker", "compose", "logs", "--tail", "40", "app")
            raise

    def compose_up(self) -> None:
        """cold docker compose build, up --wait; migrated; /health from the host is 200, connected"""
        t0 = time.monotonic()
        build_args = [f"--build-arg={arg}" for arg in self.cold_build_args()]
        self.run("docker", "compose", "build", "--no-cache", *build_args)
        self.compose_up_wait()
        self.timing("cold docker compose build --no-cache, up --wait", t0, 20)
        self.run("docker", "compose", "ps")
        self.note(f"{self.api}/health: {self.health_ok(f'{self.api}/health')}")
        # The dev image's own command applied the migrations before serving.
        self.pg("SELECT version_num FROM alembic_version")

    def compose_exec_tasks(self) -> None:
        """docker compose exec app invoke test (no warnings)"""
        no_warnings(self.run("docker", "compose", "exec", "-T", "app", "invoke", "test", merge=True))

    def hot_reload(self) -> None:
        """hot reload: an edit under backend/ restarts the server"""
        main = self.clone / "backend/app/main.py"
        original = main.read_text()
        since = ("docker", "compose", "logs", "--since", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "app")
        t0 = time.monotonic()
        main.write_text(original + self.edit)
        # From the edit to the new server process ready (the logs asked every tenth of a second).
        while "Application startup complete" not in self.quiet(*since):
            check(time.monotonic() - t0 < 30, "no restart within 30 s")
            time.sleep(0.1)
        self.timing("hot reload: an edit to the new server ready", t0, 1.5)
        self.run(*since)
        self.health_ok(f"{self.api}/health")
        main.write_text(original)  # in place, so the owner is kept; it reloads once more
        time.sleep(2)
        self.health_ok(f"{self.api}/health")

    def rebuild_after(self, path: str, what: str, target: float) -> None:
        """Time `docker compose build app` once the file changed, then restore it."""
        file = self.clone / path
        original = file.read_text()
        file.write_text(original + self.edit)
        t0 = time.monotonic()
        self.run("docker", "compose", "build", "app")
        self.timing(f"docker compose build app after {what}", t0, target)
        file.write_text(original)

    def rebuilds(self) -> None:
        """docker compose build app after a lock edit, after a code edit"""
        # The committed tree with the uv cache that the developer's builds share (the cold build used
        # none), so that the lock edit downloads only what a new pin would add, as on their machine.
        self.run("docker", "compose", "build", "app")
        # A comment is enough to invalidate the layers a real edit would: uv then reinstalls the whole
        # environment from its cache mount.
        self.rebuild_after("backend/requirements-dev.txt", "a lock edit", 15)
        self.rebuild_after("backend/app/main.py", "a code edit", 5)
        self.run("docker", "compose", "build", "app")  # back to the image of the committed tree (cached)
        time.sleep(2)  # the edits reloaded the server: let it settle
        self.health_ok(f"{self.api}/health")

    def render(self, page: str) -> str:
        """The page's DOM after its scripts ran, in headless Chrome with no network."""
        profile = f"--user-data-dir={self.work / 'chrome'}"
        return self.run(self.chrome, *CHROME, profile, "--dump-dom", f"{self.api}/{page}", out=True)

    def docs_rendered(self) -> None:
        """/docs and /redoc rendered in headless Chrome (no network)"""
        docs = self.render("docs")
        # Swagger UI builds one block per operation, with its path in data-path.
        for mark in ('class="opblock opblock-get', 'data-path="/health"', 'data-path="/health/live"'):
            check(mark in docs, f"/docs without {mark}")
        redoc = self.render("redoc")
        # ReDoc lists each operation in its menu and shows its path beside the verb.
        check(re.search(r'data-item-id="tag/[^"]*/operation/', redoc) is not None, "/redoc lists no operation")
        check(">/health<" in redoc, "/redoc without /health")

    def data_persists(self) -> None:
        """data survives docker compose down + up"""
        self.pg("CREATE TABLE ci_persistence (note text); INSERT INTO ci_persistence VALUES ('kept')")
        self.run("docker", "compose", "down")
        self.compose_up_wait()
        check(self.pg("SELECT note FROM ci_persistence") == "kept", "the row did not survive")
        self.health_ok(f"{self.api}/health")

    def runtime_image(self) -> None:
        """runtime image: non-root, read-only to it, lean, no curl or uv, healthy, /health connected"""
        image = f"{self.runtime}:latest"
        # Through compose, whose builder handles the Dockerfile's cache mounts without the buildx
        # plugin, which `docker build` would need for them.
        compose = f"services:\n  runtime:\n    build: backend\n    image: {image}\n"
        self.run("docker", "compose", "-p", self.runtime, "-f", "-", "build", stdin=compose)
        check(self.quiet("docker", "image", "inspect", "-f", "{{.Config.User}}", image) == "1000:1000", "its user")
        # Installed as root, so its user cannot rewrite the environment or the code; and lean.
        self.run("docker", "run", "--rm", "--name", f"{self.runtime}-check", image, "python", "-c", RUNTIME_CHECK)
        url = f"DATABASE_URL=postgresql://{DB}:{self.password}@postgres:5432/{DB}"
        self.run(
            "docker", "run", "-d", "--name", self.runtime, "--network", f"{self.project}_default", "-e", url, image
        )
        for _ in range(60):
            status = self.quiet("docker", "inspect", "-f", "{{.State.Health.Status}}", self.runtime)
            if status != "starting":
                break
            time.sleep(1)
        check(status == "healthy", f"runtime container: {status}")
        fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/health').read().decode())"
        health = json.loads(self.run("docker", "exec", self.runtime, "python", "-c", fetch, out=True))
        check(health["database"] == "connected" and health["environment"] == "production", str(health))

    def compose_down(self) -> None:
        """docker compose down -v removes the data volume"""
        self.run("docker", "rm", "-f", self.runtime)
        self.run("docker", "compose", "down", "-v")
        check(not self.ok("docker", "volume", "inspect", f"{self.project}_pgdata"), "volume kept")

    def devcontainer_up(self) -> None:
        """cold devcontainer up (updateContentCommand, postCreateCommand)"""
        # devcontainer.json as it is, with a third compose file that makes the CLI's build as cold as
        # compose_up's (the CLI passes no build arguments).
        config = json.loads(
            self.run(sys.executable, ".ci/jsonc.py", "--print", ".devcontainer/devcontainer.json", out=True)
        )
        cold = self.work / "cold-build.yml"
        cold.write_text(
            json.dumps({"services": {"app": {"build": {"no_cache": True, "args": self.cold_build_args()}}}})
        )
        files = [str((self.clone / ".devcontainer" / f).resolve()) for f in config["dockerComposeFile"]]
        Path(self.dc_args[-1]).write_text(json.dumps({**config, "dockerComposeFile": [*files, str(cold)]}))
        t0 = time.monotonic()
        self.run("devcontainer", "up", *self.dc_args, user=True)
        self.timing(f"cold devcontainer up (host user uid {self.uid})", t0, 30)
        # Nothing published (8000 is left to the editor's forwarding), so it can run beside compose.
        label = f"label=com.docker.compose.project={self.dc_project}"
        ports = self.run("docker", "ps", "--filter", label, "--format", "{{.Names}}: {{.Ports}}", out=True)
        check("->" not in ports, "a published port")

    def devcontainer_remap(self) -> None:
        """devcontainer uid remap: the user's uid, owns its writes, updates the environment, image <= 1.1x"""
        check(self.dc("id", "-u", out=True) == str(self.uid), "the container user's uid")
        # What the user writes in the workspace is the host user's.
        self.dc("touch", ".ci-owner-check")
        check((self.clone / ".ci-owner-check").stat().st_uid == self.uid, "the owner of a file it wrote")
        (self.clone / ".ci-owner-check").unlink()
        # The environment stays the user's to update: every file of a package rewritten in place.
        self.dc("uv", "pip", "sync", "--require-hashes", "--reinstall-package", "idna", "backend/requirements-dev.txt")
        # The remap (a chown -R of the user's home) did not copy the environment.
        label = f"label=devcontainer.local_folder={self.clone}"
        image = self.quiet("docker", "ps", "--filter", label, "--format", "{{.Image}}")
        size, base = (
            int(self.quiet("docker", "image", "inspect", "-f", "{{.Size}}", i))
            for i in (image, f"{self.dc_project}-app")
        )
        self.note(f"image after the uid remap: {size / 1e6:.0f} MB, {size / base:.3f} times the dev image")
        check(size <= 1.1 * base, "the remapped image is more than 1.1 times the dev image")

    def devcontainer_migrate(self) -> None:
        """devcontainer exec invoke migrate (no warnings)"""
        no_warnings(self.dc("invoke", "migrate", merge=True))
        self.dc_psql("SELECT version_num FROM alembic_version")

    def devcontainer_test(self) -> None:
        """devcontainer exec invoke test (no warnings; development data untouched)"""
        # A row in the development database that a test run must not touch.
        self.dc_psql("CREATE TABLE ci_dev_marker (note text); INSERT INTO ci_dev_marker VALUES ('dev')")
        output = self.dc("invoke", "test", merge=True)
        no_warnings(output)
        check(self.dc_psql("SELECT note FROM ci_dev_marker") == "dev", "the development database changed")
        self.note(next((line for line in reversed(output.splitlines()) if re.match(r"=+ .*(passed|failed)", line)), ""))

    def devcontainer_tools(self) -> None:
        """devcontainer exec pre-commit run --all-files; git works on the workspace"""
        self.dc("pre-commit", "run", "--all-files")
        self.dc("git", "status", "--short")

    def devcontainer_serve(self) -> None:
        """devcontainer exec invoke serve; /health from inside is connected"""
        self.dc("bash", "-c", SERVE_CHECK)

    def journey(self) -> None:
        self.announce()
        for step in (self.toolchain, *([self.host_user] if os.getuid() == 0 else []), self.fresh_clone):
            self.step(step)
        for step in (self.static_checks, self.compose_up, self.compose_exec_tasks, self.hot_reload, self.rebuilds):
            self.step(step)
        for step in (self.docs_rendered, self.data_persists, self.runtime_image, self.compose_down):
            self.step(step)
        for step in (self.devcontainer_up, self.devcontainer_remap, self.devcontainer_migrate):
            self.step(step)
        for step in (self.devcontainer_test, self.devcontainer_tools, self.devcontainer_serve):
            self.step(step)

    # --- the end

    def objects(self) -> list[tuple[str, str]]:
        """This run's containers, networks, volumes and images: by its names and compose projects only."""
        names = self.quiet("docker", "ps", "-a", "--format", "{{.ID}} {{.Names}}").splitlines()
        found = [("container", c) for c, name in map(str.split, names) if name.startswith(f"{self.project}-")]
        for project in (self.project, self.dc_project, self.runtime):
            label = f"label=com.docker.compose.project={project}"
            for kind, ls in (("container", ("ps", "-a")), ("network", ("network", "ls")), ("volume", ("volume", "ls"))):
                found += [(kind, i) for i in self.quiet("docker", *ls, "-q", "--filter", label).split()]
            # The images it built, those its rebuilds replaced and the CLI's vsc-...-uid image (built on
            # the service's, whose labels it inherits) included.
            found += [("image", i) for i in self.quiet("docker", "images", "-q", "--filter", label).split()]
        return list(dict.fromkeys(found))

    def report(self) -> str:
        """What the run measured, printed after its steps."""
        if not self.timings:
            return ""
        heading = f"Timings on this machine ({os.cpu_count()} cores; a busy machine is slower):"
        return "\n".join([heading, *self.timings])

    def met(self) -> bool:
        """Whether the measured figures met their targets (timings are reported, not held)."""
        return True

    def teardown(self) -> list[str]:
        """Remove what the run made; what is left, if anything."""
        remove = {"container": ("rm", "-f", "-v"), "network": ("network", "rm"), "volume": ("volume", "rm")}
        with (self.work / "teardown.log").open("w") as self.log:
            for _ in range(3):  # an image goes once the images built on it have gone
                for kind, command in (*remove.items(), ("image", ("rmi", "-f"))):
                    if ids := [i for k, i in self.objects() if k == kind]:
                        self.ok("docker", *command, *ids)
            left = [" ".join(o) for o in self.objects()]
            if self.dockerd:
                self.ok(*(() if os.getuid() == 0 else ("sudo",)), "kill", str(self.dockerd))
                for _ in range(60):
                    if not Path(f"/proc/{self.dockerd}").exists():
                        break
                    time.sleep(1)
                else:
                    left.append(f"dockerd {self.dockerd}")
        shutil.rmtree(self.work, ignore_errors=True)
        return left + ([str(self.work)] if self.work.exists() else [])


def run_checks(journey: Journey, checks: Callable[[], None], title: str, name: str, success: str) -> int:
    """`checks`, then the teardown however they end (a failure, Ctrl-C, SIGTERM, SIGHUP), then the
    results under `title`, the journey's report, and one line: `name`, then `success` or FAILED."""

    def stop(signum: int, _frame: object) -> NoReturn:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    started, passed = time.monotonic(), False
    try:
        checks()
        passed = True
    except (Failed, KeyboardInterrupt):
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the teardown runs to its end
        print("--- teardown", flush=True)
        left = journey.teardown()
        print(f"\n{title} ({time.monotonic() - started:.0f}s in all):")
        print("\n".join(f"  {line}" for line in journey.results))
        if report := journey.report():
            print(f"\n{report}")
        if left:
            print("left behind: " + ", ".join(left))
        passed = passed and not left and journey.met()
        print(f"{name}: {success if passed else 'FAILED'}")
    return 0 if passed else 1


def main() -> int:
    journey = Journey()
    return run_checks(journey, journey.journey, "Container checks", "containers", "all checks passed")


if __name__ == "__main__":
    sys.exit(main())
