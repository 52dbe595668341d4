"""Applies backend/README.md's "Adding a feature" to a scratch clone of the repository and checks it.

The section's fenced blocks titled with a path are written to that path (a `python` block) or
applied to it (a `diff` block: lines of context, `-` removed, `+` added, `@@` between hunks).
Then, in the clone, as a developer would: `invoke makemigration`, `invoke lint` and the
feature's test with the migration tests (`alembic check` among them). So the example cannot rot.

    python .ci/example.py    (with the dev environment's tools on PATH)
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r'^ *```(\w+) title="([^"]+)"\n(.*?)^ *```$', re.DOTALL | re.MULTILINE)


def section(readme: str, heading: str) -> str:
    start = readme.index(f"## {heading}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def dedent(body: str, indent: int) -> str:
    return "".join(line[indent:] if line.strip() else "\n" for line in body.splitlines(keepends=True))


def patch(text: str, diff: str) -> str:
    """`text` with each hunk of `diff` applied; a hunk's context and removed lines must be in it."""
    for hunk in diff.split("@@\n"):
        lines = [line if line != "\n" else " \n" for line in hunk.splitlines(keepends=True)]  # a blank line is context
        before = "".join(line[1:] for line in lines if line[0] in " -")
        after = "".join(line[1:] for line in lines if line[0] in " +")
        if text.count(before) != 1:
            raise SystemExit(f"example: this hunk does not match the file once:\n{hunk}")
        text = text.replace(before, after)
    return text


def run(command: str, cwd: Path) -> None:
    print(f"example: {command}", flush=True)
    if subprocess.run(command, shell=True, cwd=cwd, check=False).returncode != 0:  # noqa: S602  (a fixed command)
        raise SystemExit(f"example: `{command}` failed")


def main() -> None:
    readme = (ROOT / "backend" / "README.md").read_text()
    blocks = [
        (match, len(match.group(0)) - len(match.group(0).lstrip(" ")))
        for match in BLOCK.finditer(section(readme, "Adding a feature"))
    ]
    if not blocks:
        raise SystemExit("example: no titled code block in backend/README.md's 'Adding a feature'")
    with tempfile.TemporaryDirectory(prefix="lifebalance-example-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
        Path(scratch).chmod(0o755)  # the embedded PostgreSQL runs as nobody when this runs as root
        for cache in (".mypy_cache", "backend/.pgcache"):  # what a developer's checkout has: seconds saved
            if (ROOT / cache).is_dir():
                shutil.copytree(ROOT / cache, clone / cache, symlinks=True)
        for match, indent in blocks:
            language, path, body = match.group(1), clone / match.group(2), dedent(match.group(3), indent)
            print(f"example: {'patched' if language == 'diff' else 'wrote'} {match.group(2)}")
            path.write_text(patch(path.read_text(), body) if language == "diff" else body)
        run('invoke makemigration -m "add areas"', clone)
        run("invoke lint", clone)
        run("invoke test -- backend/tests/test_areas.py backend/tests/test_migrations.py", clone)
    print("example: backend/README.md's 'Adding a feature' works as written")


if __name__ == "__main__":
    main()
