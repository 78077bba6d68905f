"""A user's project for CLI tests: made by ``rung init`` (once per process, then copied),
with migrations written as files and registered in lib.py, and the ``rung`` command run
against it: in this process (``cli``, ``Project.rung``), or as a real process (``run``) for
what only a process shows (the console script, pipes, signals, a terminal, import cost).
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import importlib
import io
import json
import logging
import os
import pty
import runpy
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import sqlalchemy as sa

import rung

RUNG = [sys.executable, "-m", "rung"]
REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("rung")
TIMEOUT = 300  # seconds: only a backstop against a hang, never a measure of speed
CONNECT_TIMEOUT = 10.0  # seconds: rung's own, when --wait is not given ("no answer within 10 s")
_template: Path | None = None


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        return json.loads(self.out)


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment of the test process without rung's settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNG_") and k not in ("DATABASE_URL", "NO_COLOR", "PYTHONPATH")
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # migrations edited within a second must not go stale
    return env | extra


def cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None, stdin: str = "") -> Result:
    """``rung ARGS`` run in this process by ``rung.cli.main``, as if it were a new one."""
    from rung.cli import main

    return in_process(lambda: main(list(args)), cwd, env, stdin)


def script(path: Path, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
    """``python PATH`` run in this process, as a new one would run it."""

    def main() -> int:
        runpy.run_path(str(path), run_name="__main__")  # its sys.exit(...) is its exit code
        return 0

    return in_process(main, cwd, env)


def in_process(
    command: Callable[[], int | None],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
) -> Result:
    """Run ``command`` (a program's main) in this process, as a process of its own would:
    in ``cwd``, with exactly the environment ``env`` (default: ``clean_environment()``),
    ``stdin`` as its input, its output captured and its exit code returned. What it
    imports from the project (whose modules have the same names in every test project)
    and what it adds to ``sys.path`` are gone afterwards, and what the test process had
    loaded under those names is hidden from it and back afterwards."""
    out, err = io.StringIO(), io.StringIO()
    with _isolated(cwd, clean_environment() if env is None else env, stdin, out, err):
        # asyncio.run refuses to start inside a running loop: there, the command gets a thread
        code = _in_thread(command) if _loop_running() else _exit_code(command)
    return Result(code, out.getvalue(), err.getvalue())


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _exit_code(command: Callable[[], int | None]) -> int:
    try:
        code = command()
    except SystemExit as end:  # argparse, --help, --version, sys.exit
        if end.code is None or isinstance(end.code, int):
            code = end.code
        else:  # sys.exit("text"): printed on stderr, exit 1
            print(end.code, file=sys.stderr)
            code = 1
    return code or 0


def _in_thread(command: Callable[[], int | None]) -> int:
    codes: list[int] = []
    failures: list[BaseException] = []

    def target() -> None:
        try:
            codes.append(_exit_code(command))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, name="rung-in-process")
    thread.start()
    thread.join()
    if failures:
        raise failures[0]
    return codes[0]


@contextmanager
def _isolated(
    cwd: Path, env: Mapping[str, str], stdin: str, out: io.StringIO, err: io.StringIO
) -> Iterator[None]:
    root = _project_root(cwd)
    path, modules = list(sys.path), set(sys.modules)
    start = [str(SCRIPT.parent), *_site_path()]  # the console script's, in a new process
    hidden = _shadowed(root)
    environment = dict(os.environ)
    streams = sys.stdin, sys.stdout, sys.stderr
    logs = _logging_state()
    sigterm = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    bytecode = sys.dont_write_bytecode
    here = os.getcwd()
    try:
        for name in hidden:
            del sys.modules[name]
        # A hang ends the test process with every thread's traceback, instead of never ending.
        faulthandler.dump_traceback_later(TIMEOUT, exit=True, file=sys.__stderr__ or sys.stderr)
        os.environ.clear()
        os.environ.update(env)
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
        sys.dont_write_bytecode = True  # a migration rewritten within a second must not go stale
        sys.path[:] = start
        importlib.invalidate_caches()
        os.chdir(cwd)
        yield
    finally:
        os.chdir(here)
        faulthandler.cancel_dump_traceback_later()
        sys.dont_write_bytecode = bytecode
        sys.stdin, sys.stdout, sys.stderr = streams
        os.environ.clear()
        os.environ.update(environment)
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
        _restore_logging(logs)
        added = [Path(p) for p in sys.path if p not in start]
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if _loaded_from(sys.modules[name], [root, cwd.resolve(), *added]):
                del sys.modules[name]
        for key in [k for k in sys.path_importer_cache if _under(Path(k), root)]:
            del sys.path_importer_cache[key]
        sys.modules.update(hidden)


@functools.cache
def _site_path() -> tuple[str, ...]:
    """``sys.path`` of a new process of this Python, without its first entry (the folder of
    the script or ``-c``): no test folders, no repository root, no test's package."""
    probe = "import json, sys; print(json.dumps(sys.path[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    return tuple(json.loads(done.stdout))


def _project_root(cwd: Path) -> Path:
    """Where rung finds the project: the nearest folder up with a pyproject.toml."""
    cwd = cwd.resolve()
    return next((d for d in (cwd, *cwd.parents) if (d / "pyproject.toml").is_file()), cwd)


def _shadowed(root: Path) -> dict[str, ModuleType]:
    """Loaded modules that a new process in ``root`` would not have: the project's own names
    loaded from elsewhere, and this repository's example (``server``, when a test imported
    its registry), which a new process outside the repository cannot import at all."""
    tops = {name.partition(".")[0] for name in sys.modules}
    mine = {t for t in tops if (root / t).is_dir() or (root / f"{t}.py").is_file()}
    example = [REPOSITORY / "server"] if not _under(root, REPOSITORY) else []
    return {
        name: module
        for name, module in sys.modules.items()
        if (name.partition(".")[0] in mine and not _loaded_from(module, [root]))
        or _loaded_from(module, example)
    }


def _loaded_from(module: ModuleType | None, folders: list[Path]) -> bool:
    places = [getattr(module, "__file__", None), *getattr(module, "__path__", [])]
    return any(place and _under(Path(place), folder) for place in places for folder in folders)


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


LoggingState = list[tuple[logging.Logger, list[logging.Handler], int]]


def _logging_state() -> LoggingState:
    return [
        (logger, list(logger.handlers), logger.level)
        for logger in (logging.getLogger(), logging.getLogger("rung"))
    ]


def _restore_logging(state: LoggingState) -> None:
    for logger, handlers, level in state:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: str = "") -> Result:
    done = subprocess.run(
        args,
        cwd=cwd,
        env=env if env is not None else clean_environment(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def run_on_terminal(args: list[str], cwd: Path, env: dict[str, str], typed: str = "") -> Result:
    """Run with stdin, stdout and stderr on a pseudo-terminal (output is merged)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    if typed:
        os.write(main, typed.encode())
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    code = proc.wait(timeout=TIMEOUT)
    return Result(code, b"".join(chunks).decode(errors="replace"), "")


def template(base: Path) -> Path:
    """A project made by the real ``rung init``, once per test process."""
    global _template
    if _template is None:
        folder = base / "template"
        folder.mkdir()
        result = cli("init", cwd=folder)
        assert result.code == 0, result.text
        _template = folder
    return _template


class Project:
    """A copy of the ``rung init`` project, its database ``url`` in DATABASE_URL."""

    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url = root, url
        self.src = root / "server" / "migration" / "src"
        self.names: list[str] = []

    @classmethod
    def create(cls, base: Path, url: str) -> Project:
        """The project in ``base / "project"`` (the template is made beside ``base``)."""
        root = base / "project"
        shutil.copytree(template(base.parent), root)
        return cls(root, url)

    def rung(self, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> Result:
        """``rung ARGS`` in the project, in this process (``run`` starts a real one)."""
        env = clean_environment(DATABASE_URL=self.url) if env is None else env
        return cli(*args, cwd=self.root, env=env, stdin=stdin)

    def add(
        self, slug: str, up: str | list[str], down: str | list[str] | None = "", **kw: Any
    ) -> str:
        """Write migration ``m20260408_{n}_{slug}`` (statements or code) and register it."""
        name = f"m20260408_{len(self.names) + 1:06d}_{slug}"
        self.write(name, up, down, **kw)
        self.names.append(name)
        self.register(self.names)
        return name

    def write(
        self,
        name: str,
        up: str | list[str],
        down: str | list[str] | None = "",
        *,
        transactional: bool = True,
    ) -> None:
        lines = [
            "from sqlalchemy import text",
            "from sqlalchemy.ext.asyncio import AsyncConnection",
            f"TRANSACTIONAL = {transactional}",
            "",
            "",
            "async def up(conn: AsyncConnection) -> None:",
            _body(up),
        ]
        if down is None:
            lines += ["", "", "down = None"]
        else:
            lines += ["", "", "async def down(conn: AsyncConnection) -> None:", _body(down)]
        (self.src / f"{name}.py").write_text("\n".join(lines) + "\n")

    def register(self, names: list[str]) -> None:
        """Rewrite lib.py to register exactly ``names``, in that order."""
        imports = "".join(f"from server.migration.src import {n}\n" for n in names)
        entries = "".join(f"            Migration.from_module({n}),\n" for n in names)
        (self.src / "lib.py").write_text(
            "from rung import Migration\n\n"
            f"{imports}\n\n"
            "class Migrator:\n"
            "    @staticmethod\n"
            "    def migrations() -> tuple[Migration, ...]:\n"
            f"        return (\n{entries}        )\n"
        )

    def states(self, *args: str) -> dict[str, str]:
        result = self.rung("status", "--json", *args)
        assert result.code == 0, result.text
        return {m["name"]: m["state"] for m in result.json()["migrations"]}

    def tables(self) -> set[str]:
        return asyncio.run(_inspect(self.url, lambda i: set(i.get_table_names())))

    def columns(self, table: str) -> set[str]:
        """The names of ``table``'s columns; none when there is no such table."""

        def names(inspector: sa.Inspector) -> set[str]:
            if not inspector.has_table(table):
                return set()
            return {column["name"] for column in inspector.get_columns(table)}

        return asyncio.run(_inspect(self.url, names))

    def execute(self, *statements: str) -> None:
        execute(self.url, *statements)


def _body(code: str | list[str]) -> str:
    if isinstance(code, list):
        code = "\n".join(f"await conn.execute(text({s!r}))" for s in code)
    return textwrap.indent(textwrap.dedent(code).strip() or "pass", "    ")


def execute(url: str, *statements: str) -> None:
    """Run ``statements`` in one transaction on ``url``, past rung."""
    asyncio.run(_execute(url, statements))


T = TypeVar("T")


async def _inspect(url: str, read: Callable[[sa.Inspector], T]) -> T:
    engine = rung.create_engine(url)  # a driverless URL too, as the command takes it
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: read(sa.inspect(c)))
    finally:
        await engine.dispose()


async def _execute(url: str, statements: tuple[str, ...]) -> None:
    engine = rung.create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


def driverless(url: str) -> str:
    """The URL as a platform hands it out, without the async driver."""
    return (
        url.replace("postgresql+asyncpg://", "postgres://")
        .replace("mysql+asyncmy://", "mysql://")
        .replace("sqlite+aiosqlite://", "sqlite://")
    )
