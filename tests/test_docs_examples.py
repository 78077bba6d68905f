"""Every example in the README and the guide runs as written on SQLite, PostgreSQL and
MariaDB (issue 12): the code blocks are read out of the Markdown and run.

- Python blocks, each sorted by what it is: a migration (applied, reverted and applied
  again after the template's todos table), a registry (imported with the modules it
  names, checked and applied), a FastAPI application (its lifespan run, with
  ``DATABASE_URL`` as platforms hand it out, ``postgres://...``; and under uvicorn in a
  process of its own, whose default logging must show what was applied), calls of the
  API, a logging set-up. A block that fits none fails the test: a new kind of example
  needs a way to run here.
- The guide's five-minute tour, command by command: on SQLite its output must be the
  guide's, timings, dates and paths aside; on the servers every command must succeed.
- TOML blocks: valid, and only keys rung knows.

The other console transcripts show states a single run cannot reach in order (a changed
migration, a MariaDB failure part-way, unreachable servers); the tests of those features
check the same messages. A block marked ``<!-- runs on: postgresql -->`` runs only there.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from cli_support import Project, clean_environment, cli, driverless, in_process
from rung.config import PYPROJECT_KEYS, read_section
from servers.process import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "guide.md")
TEMPLATE_TODOS = ROOT / "server" / "migration" / "src" / "m20260408_000001_create_todos_table.py"
FENCE = re.compile(
    r"(?:<!--\s*(?P<note>[^>]*?)\s*-->\n+)?^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.S | re.M
)
IMPORTS = "from sqlalchemy import text\nfrom sqlalchemy.ext.asyncio import AsyncConnection\n\n"


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    body: str
    note: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def kind(self) -> str:
        for kind, marker in KINDS:
            if marker in self.body:
                return kind
        return "unknown"

    def runs_on(self, backend: str) -> bool:
        found = re.fullmatch(r"runs on: ([\w, ]+)", self.note)
        return found is None or backend in re.split(r"[, ]+", found[1])


# What a Python block is, by the first of these it contains.
KINDS = (
    ("app", "FastAPI("),
    ("migration", "async def up("),
    ("registry", "class Migrator"),
    ("fleet", "rung.upgrade_fleet("),
    ("calls", "await rung."),
    ("logging", "logging.basicConfig("),
)


def blocks(lang: str | None = None) -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if lang is None or m["lang"] == lang:
                line = text[: m.start("body")].count("\n")
                name = str(doc.relative_to(ROOT))
                found.append(Block(name, line, m["lang"], m["body"], m["note"] or ""))
    return found


def python_blocks(kind: str) -> list[Block]:
    return [b for b in blocks("python") if b.kind == kind]


def backend_of(url: str) -> str:
    name = sa.make_url(url).get_backend_name()
    return "mariadb" if name == "mysql" else name


def as_module(code: str) -> str:
    """A migration block as a module: the usual imports when it has none."""
    code = textwrap.dedent(code)
    return code if "import" in code.split("async def", 1)[0] else IMPORTS + code


def test_every_python_block_is_run_here() -> None:
    unknown = [b.where for b in blocks("python") if b.kind == "unknown"]
    assert unknown == [], f"examples no test runs: {unknown}"
    assert {b.kind for b in blocks("python")} == {k for k, _ in KINDS}


def test_toml_blocks_are_valid_with_known_keys(tmp_path: Path) -> None:
    tomls = blocks("toml")
    assert tomls
    for block in tomls:
        (tmp_path / "pyproject.toml").write_text(block.body)
        section = read_section(tmp_path / "pyproject.toml")
        assert section and set(section) <= set(PYPROJECT_KEYS), block.where


# -- migrations -----------------------------------------------------------------------------


@pytest.mark.parametrize("block", python_blocks("migration"), ids=lambda b: b.where)
def test_migration_examples_run_up_and_down(block: Block, db_url: str, tmp_path: Path) -> None:
    if not block.runs_on(backend_of(db_url)):
        return
    project = Project.create(tmp_path, driverless(db_url))
    shutil.copy(TEMPLATE_TODOS, project.src)
    example = "m20260409_000001_example"
    (project.src / f"{example}.py").write_text(as_module(block.body))
    project.register(["m20260408_000001_create_todos_table", example])
    steps = [("up",), ("down",), ("up",)] if "def down(" in block.body else [("up",)]
    for step in steps:
        result = project.rung(*step)
        assert result.code == 0, f"{block.where}: rung {step[0]}\n{result.text}"
    assert set(project.states().values()) == {"applied"}


def test_the_readme_layout_runs(db_url: str, tmp_path: Path) -> None:
    """The README's migration and its registry, as the files they say they are."""
    (registry,) = [b for b in python_blocks("registry") if b.doc == "README.md"]
    (migration,) = [b for b in python_blocks("migration") if b.doc == "README.md"]
    project = Project.create(tmp_path, driverless(db_url))
    shutil.copy(TEMPLATE_TODOS, project.src)
    (project.src / "m20260409_000001_create_tags.py").write_text(migration.body)
    (project.src / "lib.py").write_text(registry.body)
    for step in (("check",), ("up",), ("down", "--all"), ("up",)):
        result = project.rung(*step)
        assert result.code == 0, f"rung {' '.join(step)}\n{result.text}"
    assert project.columns("tags") == {"id", "name"}


# -- the guide's tour -----------------------------------------------------------------------


def tour() -> tuple[list[Block], Block, Block]:
    """The tour's console blocks, its registry and its migration's bodies."""
    guide = (ROOT / "docs" / "guide.md").read_text()
    start = guide.index("## A five-minute tour")
    end = guide.index("\n## ", start + 1)
    inside = [b for b in blocks() if b.doc == "docs/guide.md" and start < _offset(guide, b) < end]
    consoles = [b for b in inside if b.lang == "console"]
    (registry,) = [b for b in inside if b.lang == "python" and b.kind == "registry"]
    (bodies,) = [b for b in inside if b.lang == "python" and b.kind == "migration"]
    return consoles, registry, bodies


def _offset(text: str, block: Block) -> int:
    return sum(len(x) + 1 for x in text.splitlines()[: block.line])


def transcript(block: Block) -> list[tuple[list[str], list[str]]]:
    """(command words, expected output lines) for each ``$ rung ...`` of a console block."""
    steps: list[tuple[list[str], list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            steps.append((shlex.split(line[2:].split("#")[0]), []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def normalized(lines: list[str], root: Path, today: str) -> list[str]:
    text = "\n".join(lines)
    text = text.replace(str(root), "/tmp/todo-app")  # where the guide's run was
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "YYYY-MM-DD hh:mm:ss", text)
    text = re.sub(r"\d+ ms", "N ms", text)
    text = text.replace(f"m{today}_", "mYYYYMMDD_")
    text = re.sub(r"m2026\d{4}_", "mYYYYMMDD_", text)
    return [x.rstrip() for x in text.splitlines()]


def test_the_tour_runs_as_the_guide_shows(db_url: str, tmp_path: Path) -> None:
    consoles, registry, bodies = tour()
    backend = backend_of(db_url)
    root = tmp_path / "todo-app"
    root.mkdir()
    url = {"DATABASE_URL": driverless(db_url)} if backend != "sqlite" else {}  # else app.db
    env = clean_environment(**url)
    today = time.strftime("%Y%m%d")
    ran = 0
    for block in consoles:
        for words, expected in transcript(block):
            assert words[0] == "rung", block.where
            result = cli(*words[1:], cwd=root, env=env)
            assert result.code == 0, f"{block.where}: {' '.join(words)}\n{result.text}"
            ran += 1
            if backend == "sqlite":
                assert normalized((result.out + result.err).splitlines(), root, today) == (
                    normalized(expected, root, today)
                ), f"{block.where}: {' '.join(words)}"
            if words[1:] == ["new", "add priority to todos"]:
                _write_the_tour_migrations(root, registry, bodies, today)
    assert ran >= 6


def _write_the_tour_migrations(root: Path, registry: Block, bodies: Block, today: str) -> None:
    """What the tour says to do between its commands: lib.py as shown, the bodies
    written (the todos table's is the template's)."""
    src = root / "server" / "migration" / "src"
    lib = (src / "lib.py").read_text()
    shown = re.sub(r"m2026\d{4}_", f"m{today}_", registry.body)
    assert lib.split('"""\n\n', 1)[-1].strip() == shown.strip()
    todos = src / f"m{today}_000001_create_todos_table.py"
    todos.write_text(TEMPLATE_TODOS.read_text())
    priority = src / f"m{today}_000002_add_priority_to_todos.py"
    priority.write_text(as_module(bodies.body))


# -- applications and API calls -------------------------------------------------------------


def app_project(tmp_path: Path, db_url: str) -> Project:
    """The guide's tour project: todos, priority and due date, registered."""
    project = Project.create(tmp_path, driverless(db_url))
    shutil.copy(TEMPLATE_TODOS, project.src / "m20261125_000001_create_todos_table.py")
    _, _, bodies = tour()
    (project.src / "m20261125_000002_add_priority_to_todos.py").write_text(as_module(bodies.body))
    (project.src / "m20261125_000003_add_due_date.py").write_text(
        IMPORTS
        + "async def up(conn: AsyncConnection) -> None:\n"
        + '    await conn.execute(text("ALTER TABLE todos ADD COLUMN due_at TIMESTAMP NULL"))\n\n\n'
        + "async def down(conn: AsyncConnection) -> None:\n"
        + '    await conn.execute(text("ALTER TABLE todos DROP COLUMN due_at"))\n'
    )
    project.register(
        [
            "m20261125_000001_create_todos_table",
            "m20261125_000002_add_priority_to_todos",
            "m20261125_000003_add_due_date",
        ]
    )
    return project


@pytest.mark.parametrize("block", python_blocks("app"), ids=lambda b: b.where)
def test_app_examples_start_with_platform_urls(block: Block, db_url: str, tmp_path: Path) -> None:
    """Each FastAPI example's lifespan, with DATABASE_URL as a platform gives it."""
    project = app_project(tmp_path, db_url)
    (project.root / "main.py").write_text(block.body)

    def serve() -> None:
        sys.path.insert(0, str(project.root))  # as ``uvicorn main:app`` there has it
        asyncio.run(_start_and_stop(importlib.import_module("main")))

    env = clean_environment(DATABASE_URL=driverless(db_url))
    result = in_process(serve, project.root, env)
    assert result.code == 0, result.text
    assert set(project.states().values()) == {"applied"}


async def _start_and_stop(main: Any) -> None:
    async with main.lifespan(main.app):
        pass


@pytest.mark.parametrize("block", python_blocks("calls"), ids=lambda b: b.where)
def test_api_call_examples_run(block: Block, db_url: str, tmp_path: Path) -> None:
    project = app_project(tmp_path, db_url)
    code = "async def example(engine):\n" + textwrap.indent(block.body, "    ")

    def call() -> None:
        sys.path.insert(0, str(project.root))  # as ``python`` there has it
        namespace: dict[str, Any] = {}
        exec(compile(code, block.where, "exec"), namespace)
        asyncio.run(_with_engine(namespace["example"], driverless(db_url)))

    result = in_process(call, project.root)
    assert result.code == 0, result.text


@pytest.mark.parametrize("block", python_blocks("fleet"), ids=lambda b: b.where)
def test_fleet_examples_run(block: Block, tmp_path: Path) -> None:
    """On the SQLite files its glob names; every tenant ends up migrated."""
    project = app_project(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    tenants = project.root / "data" / "tenants"
    tenants.mkdir(parents=True)
    for name in ("acme.db", "globex.db"):
        (tenants / name).touch()
    code = "async def example():\n" + textwrap.indent(block.body, "    ")

    def call() -> None:
        sys.path.insert(0, str(project.root))
        namespace: dict[str, Any] = {}
        exec(compile(code, block.where, "exec"), namespace)
        asyncio.run(namespace["example"]())

    result = in_process(call, project.root)
    assert result.code == 0, result.text
    assert result.out.count("applied ['m20261125_000001_create_todos_table',") == 2, result.out


async def _with_engine(example: Callable[[AsyncEngine], Awaitable[None]], url: str) -> None:
    engine = rung.create_engine(url)
    try:
        await example(engine)
    finally:
        await engine.dispose()


# -- under uvicorn, with its default logging ------------------------------------------------


def uvicorn(project: Project, env: dict[str, str], workers: int = 1) -> str:
    """Start ``main:app`` under uvicorn, wait for its start-up, stop it; its log."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)]
    command += ["--workers", str(workers)] if workers > 1 else []
    proc = subprocess.Popen(
        command,
        cwd=project.root,
        env=clean_environment(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if sum("Application startup complete" in x for x in lines) >= workers:
                break
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
    return "".join(lines) + rest


def test_the_guide_app_logs_what_it_applied_under_uvicorn(db_url: str, tmp_path: Path) -> None:
    (block,) = [b for b in python_blocks("app") if b.doc == "docs/guide.md"]
    project = app_project(tmp_path, db_url)
    (project.root / "main.py").write_text(block.body)
    log = uvicorn(project, {"DATABASE_URL": driverless(db_url)}, workers=2)
    applied = re.findall(r"INFO: +applied migration (m\w+) \(\d+ ms\)", log)
    assert applied == [
        "m20261125_000001_create_todos_table",
        "m20261125_000002_add_priority_to_todos",
        "m20261125_000003_add_due_date",
    ], log  # once, by one of the two workers
    assert log.count("Application startup complete") == 2, log


def test_basic_config_shows_the_rung_logger_under_uvicorn(tmp_path: Path) -> None:
    (setup,) = python_blocks("logging")
    project = app_project(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    quiet = (
        "from contextlib import asynccontextmanager\n\n"
        "import rung\nfrom fastapi import FastAPI\n\n"
        "from server.migration.src.runner import upgrade\n\n"
        "engine = rung.create_engine()\n\n\n"
        "@asynccontextmanager\nasync def lifespan(app):\n"
        "    await upgrade(engine)\n    yield\n    await engine.dispose()\n\n\n"
        "app = FastAPI(lifespan=lifespan)\n"
    )
    (project.root / "main.py").write_text(quiet)
    env = {"DATABASE_URL": project.url}
    assert "m20261125_000001" not in uvicorn(project, env)  # uvicorn shows none of rung's
    assert project.rung("reset", "--yes").code == 0
    (project.root / "main.py").write_text(setup.body + "\n" + quiet)
    log = uvicorn(project, env)
    assert "INFO:rung:applying m20261125_000001_create_todos_table ok" in log, log
