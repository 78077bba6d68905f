"""A user's project made by ``rung init``, and the ``rung`` command run in this process
against it (``rung.cli.main``), for the first-hour tests (issue 12).

Every project has the same package names (``server.migration.src...``), so each run starts
and ends without them in ``sys.modules``, and without the project on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import rung
from rung import scaffold

PROJECT_PACKAGES = ("server", "scripts")
REPOSITORY = Path(__file__).resolve().parent.parent  # has a server package of its own


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


def forget_project_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in PROJECT_PACKAGES:
            del sys.modules[name]
    importlib.invalidate_caches()


@contextlib.contextmanager
def isolated(cwd: Path, env: Mapping[str, str]) -> Iterator[None]:
    """In ``cwd``, with rung's settings from ``env`` only, and the project's modules and
    ``sys.path`` entries gone afterwards."""
    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    saved_cwd = os.getcwd()
    saved_bytecode = sys.dont_write_bytecode
    for key in list(os.environ):
        if key.startswith("RUNG_") or key in ("DATABASE_URL", "NO_COLOR"):
            del os.environ[key]
    os.environ.update(env)
    # as a new process in ``cwd`` would: the repository's own server package out of sight
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != REPOSITORY]
    sys.dont_write_bytecode = True  # a migration edited within a second must not go stale
    forget_project_modules()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        sys.dont_write_bytecode = saved_bytecode
        forget_project_modules()


def cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
    """``rung ARGS`` in this process, its output captured."""
    from rung.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        isolated(cwd, env or {}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as end:
            code = end.code if isinstance(end.code, int) else 1
    return Result(code or 0, out.getvalue(), err.getvalue())


class Project:
    """A folder made by ``rung init``; its database ``url`` is given as DATABASE_URL."""

    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url = root, url
        self.src = root / "server" / "migration" / "src"
        self.names: list[str] = []

    @classmethod
    def create(cls, root: Path, url: str) -> Project:
        root.mkdir(parents=True, exist_ok=True)
        scaffold.init(root)
        return cls(root, url)

    def rung(self, *args: str, **env: str) -> Result:
        return cli(*args, cwd=self.root, env={"DATABASE_URL": self.url, **env})

    def add(self, slug: str, up: str | list[str], down: str | list[str] | None = "") -> str:
        """Write migration ``m20260408_{n}_{slug}`` (statements or code) and register it."""
        name = f"m20260408_{len(self.names) + 1:06d}_{slug}"
        self.write(name, up, down)
        self.names.append(name)
        self.register(self.names)
        return name

    def write(self, name: str, up: str | list[str], down: str | list[str] | None = "") -> None:
        lines = [
            "from sqlalchemy import text",
            "from sqlalchemy.ext.asyncio import AsyncConnection",
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

    def states(self) -> dict[str, str]:
        result = self.rung("status", "--json")
        assert result.code == 0, result.text
        return {m["name"]: m["state"] for m in result.json()["migrations"]}

    def columns(self, table: str) -> set[str]:
        return asyncio.run(_columns(self.url, table))


def _body(code: str | list[str]) -> str:
    if isinstance(code, list):
        code = "\n".join(f"await conn.execute(text({s!r}))" for s in code)
    return textwrap.indent(textwrap.dedent(code).strip() or "pass", "    ")


async def _columns(url: str, table: str) -> set[str]:
    engine = rung.create_engine(url)  # a driverless URL too
    try:
        async with engine.connect() as conn:

            def read(c: sa.Connection) -> set[str]:
                inspector = sa.inspect(c)
                if not inspector.has_table(table):
                    return set()
                return {col["name"] for col in inspector.get_columns(table)}

            return await conn.run_sync(read)
    finally:
        await engine.dispose()
