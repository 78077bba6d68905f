"""A user's project for CLI tests: made by ``rung init`` (once per process, then copied),
with migrations written as files and registered in lib.py, and the real ``rung`` command
run in a subprocess against it.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

RUNG = [sys.executable, "-m", "rung"]
SCRIPT = Path(sys.executable).with_name("rung")
TIMEOUT = 60
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
        result = run([*RUNG, "init"], folder)
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
        root = base / "project"
        shutil.copytree(template(base.parent), root)
        return cls(root, url)

    def rung(self, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> Result:
        return run(
            [*RUNG, *args], self.root, env or clean_environment(DATABASE_URL=self.url), stdin
        )

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
        return asyncio.run(_tables(self.url))

    def execute(self, *statements: str) -> None:
        asyncio.run(_execute(self.url, statements))


def _body(code: str | list[str]) -> str:
    if isinstance(code, list):
        code = "\n".join(f"await conn.execute(text({s!r}))" for s in code)
    return textwrap.indent(textwrap.dedent(code).strip() or "pass", "    ")


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _execute(url: str, statements: tuple[str, ...]) -> None:
    engine = create_async_engine(url)
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
