"""The contenders: how each tool is invoked for each action, as a whole process.

Actions: ``apply`` (everything, on an empty database), ``noop`` (``up`` with everything
applied), ``status``, ``rollback`` (everything), ``help`` (``--help`` cold start),
``mark`` (record everything as applied without running it: the untimed preparation of the
10,000-migration cells) and ``verify`` (rung only, once ``rung verify`` exists).
A tool answers ``None`` for an action it does not have.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path

from benchlib import generate
from benchlib.databases import Database
from benchlib.workload import rung_name, short_id

BENCH_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
FLOOR_HELP = [PYTHON, "-c", "import argparse"]
# What the ``rung`` console script pip installs runs (``python -m rung`` adds runpy's cost).
RUNG = [PYTHON, "-c", "import sys; from rung.cli import main; sys.exit(main())"]


@dataclass(frozen=True)
class Run:
    argv: list[str]
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    expect: str | None = None  # must appear in the output (stdout or stderr)
    timeout: float | None = None  # seconds; None: the harness's generous default


class Tool:
    name = ""
    family = ""  # tools of one family share a history format (and a "mark" preparation)
    packages: tuple[str, ...] = ()

    def __init__(self, work: Path) -> None:
        self.work = work

    def available(self) -> str | None:
        """None when the tool can run here, else why not."""
        for package in self.packages:
            try:
                metadata.version(package)
            except metadata.PackageNotFoundError:
                return f"{package} is not installed (pip install -r benchmarks/requirements.txt)"
        return None

    def versions(self) -> dict[str, str]:
        return {p: metadata.version(p) for p in self.packages}

    def run(self, action: str, db: Database, n: int) -> Run | None:
        raise NotImplementedError


class Floor(Tool):
    """benchmarks/floor.py: the 1.0 of every ratio (``via="driver"``) or the same
    statements through SQLAlchemy's async engine (``via="sqlalchemy"``, a reference)."""

    family = "raw"

    def __init__(self, work: Path, via: str = "driver") -> None:
        super().__init__(work)
        self.via = via
        self.name = "raw" if via == "driver" else "raw-sa"
        self.packages = () if via == "driver" else ("sqlalchemy",)

    def run(self, action: str, db: Database, n: int) -> Run | None:
        if action == "help":
            return Run(FLOOR_HELP) if self.via == "driver" else None
        if action == "verify":
            return None
        command = {
            "apply": "apply",
            "noop": "noop",
            "status": "status",
            "rollback": "rollback",
            "mark": "mark",
        }[action]
        slot = "floor" if self.via == "driver" else "tool"
        argv = [PYTHON, str(BENCH_DIR / "floor.py"), command, str(n), db.async_url(slot)]
        if self.via != "driver":
            argv += ["--via", self.via]
        return Run(argv, expect=rung_name(n) if action == "status" else None)


# The copy of rung's source every child process imports (``use_rung_source``): a run
# measures one fixed version even while someone edits src/rung.
RUNG_SOURCE: list[Path] = []


def use_rung_source(work: Path, rev: str) -> str:
    """Copy rung's source (the working tree, or ``git archive`` of ``rev``) under
    ``work/rung-src/`` and make every child process import it. Returns a description."""
    repo = BENCH_DIR.parent
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD" if rev == "working" else rev],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = work / "rung-src" / ("working" if rev == "working" else head)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if rev == "working":
        shutil.copytree(
            repo / "src" / "rung", target / "rung", ignore=shutil.ignore_patterns("__pycache__")
        )
    else:
        archive = subprocess.run(
            ["git", "archive", head, "src/rung"], cwd=repo, capture_output=True, check=True
        ).stdout
        subprocess.run(
            ["tar", "-x", "--strip-components=1", "-C", str(target)], input=archive, check=True
        )
    compileall.compile_dir(str(target), quiet=1)
    digest = hashlib.sha256()
    for path in sorted((target / "rung").rglob("*.py")):
        digest.update(path.relative_to(target).as_posix().encode() + b"\0" + path.read_bytes())
    RUNG_SOURCE[:] = [target]
    if rev == "working":
        return f"working tree on top of {head} (sources sha256 {digest.hexdigest()[:12]})"
    return f"commit {head}"


def rung_cli_present() -> bool:
    if RUNG_SOURCE:
        return (RUNG_SOURCE[0] / "rung" / "cli.py").exists()
    return importlib.util.find_spec("rung.cli") is not None


class RungCli(Tool):
    """The ``rung`` command, run as its console script runs it."""

    name = "rung"
    family = "rung"
    packages = ("rung",)

    def available(self) -> str | None:
        if not rung_cli_present():
            return "rung's CLI (src/rung/cli.py) does not exist yet"
        return super().available()

    def supports_verify(self) -> bool:
        probe = subprocess.run([*RUNG, "verify", "--help"], capture_output=True, env=child_env({}))
        return probe.returncode == 0

    @cached_property
    def down_all(self) -> list[str]:
        """``down --all``, with ``--yes`` if this version of the CLI asks for confirmation."""
        probe = subprocess.run(
            [*RUNG, "down", "--help"],
            capture_output=True,
            text=True,
            env=child_env({}),
        )
        return ["down", "--all", "--yes"] if "--yes" in probe.stdout else ["down", "--all"]

    def run(self, action: str, db: Database, n: int) -> Run | None:
        if action == "help":
            return Run([*RUNG, "--help"])
        if action == "mark":
            return RungApi(self.work).run("mark", db, n)
        project = generate.ensure("rung", n, self.work)
        command = {
            "apply": ["up"],
            "noop": ["up"],
            "status": ["status"],
            "rollback": self.down_all,
            "verify": ["verify"],
            "drift": ["drift", "--replay"],
        }[action]
        argv = [
            *RUNG,
            *command,
            "--url",
            db.async_url("tool"),
            "--migrator",
            f"{generate.RUNG_PACKAGE}.lib:Migrator",
        ]
        return Run(
            argv,
            cwd=project,
            env={"PYTHONPATH": str(project)},
            expect=rung_name(n) if action == "status" else None,
        )


class RungApi(Tool):
    """benchmarks/rung_api.py: ``rung.upgrade``/``downgrade``/``status`` in a fresh process."""

    name = "rung-api"
    family = "rung"
    packages = ("rung",)

    def run(self, action: str, db: Database, n: int) -> Run | None:
        if action in ("help", "verify"):
            return None
        project = generate.ensure("rung", n, self.work)
        command = {
            "apply": "up",
            "noop": "up",
            "status": "status",
            "rollback": "down",
            "mark": "baseline",
        }[action]
        argv = [PYTHON, str(BENCH_DIR / "rung_api.py"), command, db.async_url("tool"), str(project)]
        return Run(argv, expect=rung_name(n) if action == "status" else None)


class Alembic(Tool):
    """The ``alembic`` command, with the sync env.py or the async template's."""

    family = "alembic"
    packages = ("alembic",)

    def __init__(self, work: Path, is_async: bool = False) -> None:
        super().__init__(work)
        self.is_async = is_async
        self.name = "alembic-async" if is_async else "alembic"

    def run(self, action: str, db: Database, n: int) -> Run | None:
        if action == "help":
            return None if self.is_async else Run([str(BIN / "alembic"), "--help"])
        if action == "verify":
            return None
        versions = generate.ensure("alembic", n, self.work)
        if self.is_async:
            project = generate.ensure("alembic-async", n, self.work)
            ini_text = generate.alembic_ini(project, db.async_url("tool"), versions / "versions")
        else:
            project = versions
            ini_text = generate.alembic_ini(project, db.sync_url("tool"))
        ini = project / f"alembic-{db.name}.ini"
        if not ini.exists() or ini.read_text() != ini_text:
            ini.write_text(ini_text)
        command = {
            "apply": ["upgrade", "head"],
            "noop": ["upgrade", "head"],
            "status": ["current"],
            "rollback": ["downgrade", "base"],
            "mark": ["stamp", "head"],
        }[action]
        return Run(
            [str(BIN / "alembic"), "-c", str(ini), *command],
            expect=f"r{short_id(n)} (head)" if action == "status" else None,
        )


class Yoyo(Tool):
    """The ``yoyo`` command over one SQL file (and its .rollback.sql) per migration."""

    name = "yoyo"
    family = "yoyo"
    packages = ("yoyo-migrations",)

    def run(self, action: str, db: Database, n: int) -> Run | None:
        if action == "help":
            return Run([str(BIN / "yoyo"), "--help"])
        if action == "verify":
            return None
        project = generate.ensure("yoyo", n, self.work)
        command = {
            "apply": ["apply"],
            "noop": ["apply"],
            "status": ["list"],
            "rollback": ["rollback", "--all"],
            "mark": ["mark"],
        }[action]
        argv = [
            str(BIN / "yoyo"),
            *command,
            "--batch",
            "--no-config-file",
            "--database",
            db.yoyo_url("tool"),
            str(project),
        ]
        return Run(argv, expect=f"m{short_id(n)}_create_t_{n}" if action == "status" else None)


def all_tools(work: Path) -> dict[str, Tool]:
    tools: list[Tool] = [
        RungCli(work),
        RungApi(work),
        Alembic(work),
        Alembic(work, is_async=True),
        Yoyo(work),
        Floor(work, via="sqlalchemy"),
    ]
    return {t.name: t for t in tools}


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The harness's environment without anything that would point a tool elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "DATABASE_URL")
        and not (k.startswith("RUNG_") and "BENCH" not in k)
    }
    env.update(extra)
    paths = [*map(str, RUNG_SOURCE), *filter(None, [extra.get("PYTHONPATH")])]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env
