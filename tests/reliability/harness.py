"""What the reliability tests share: a database's whole state as a value, rung's error
format, another session holding rung's lock, a MariaDB account with a password, a server
that never answers, many processes started at the same instant, and the counted project
they race on (each migration logs itself, so "applied exactly once" can be checked).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from cli_support import Project, Result, clean_environment
from safety_nets import read_schema

RACER = Path(__file__).with_name("racer.py")
RACE_TIMEOUT = 120.0  # seconds, for every process of a race together
MIGRATOR = "server.migration.src.lib:Migrator"


@asynccontextmanager
async def connection(url: str, **options: Any) -> AsyncIterator[AsyncConnection]:
    """One connection of its own (its engine is disposed afterwards)."""
    engine = create_async_engine(url, **options)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    async with connection(url) as conn:
        return [tuple(row) for row in await conn.execute(sa.text(query))]


async def database_state(url: str) -> object:
    """The schema (rung's history tables included) and every row of every table, as a
    value; a SQLite file that is not there is ``"no file"`` (reading it must not create it).
    rung's lock table is left out: a run that took the lock leaves it there, free (the
    lock tests check it)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return "no file"
    async with connection(url) as conn:
        schema = (await read_schema(conn, own=True)).excluding(["rung*_lock"])
        quote = conn.dialect.identifier_preparer.quote
        contents = {
            t.name: sorted(map(repr, await conn.execute(sa.text(f"SELECT * FROM {quote(t.name)}"))))
            for t in schema.tables
        }
        return schema, contents


def state(url: str) -> object:
    """``database_state``, from a test that is not a coroutine."""
    return asyncio.run(database_state(url))


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a digest of its bytes (caches in __pycache__ aside)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def assert_error(result: Result, code: int | None, *says: str) -> str:
    """Exit ``code`` (None: any but 0), and stderr exactly ``rung: error: ...`` naming
    ``says`` (maybe followed by one ``rung: hint: ...`` line), without a traceback; returns
    the error line. Warnings before it (``rung: warning: ...``) are allowed: a run may say
    what it saw on the way, such as taking over the lock of a run that died."""
    assert result.code == code if code is not None else result.code != 0, result.text
    lines = [line for line in result.err.splitlines() if not line.startswith("rung: warning: ")]
    assert 1 <= len(lines) <= 2, result.err
    assert lines[0].startswith("rung: error: "), result.err
    assert len(lines) == 1 or lines[1].startswith("rung: hint: "), result.err
    for text in says:
        assert text in lines[0], (text, result.err)
    assert "Traceback" not in result.text
    return lines[0]


@contextmanager
def mariadb_account(url: str, password: str) -> Iterator[str]:
    """A MariaDB account of this test's own (a unique name: accounts are server-wide, and
    other runs share the server) with ``password`` and every right on ``url``'s database,
    dropped afterwards; yields ``url`` as that account."""
    user = f"rung_u_{uuid.uuid4().hex[:12]}"
    database = sa.make_url(url).database
    try:
        asyncio.run(
            _admin(
                url,
                f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
                f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'",
            )
        )
        account = sa.make_url(url).set(username=user, password=password)
        yield account.render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(url, f"DROP USER IF EXISTS '{user}'@'%'"))


async def _admin(url: str, *statements: str) -> None:
    async with connection(url, isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))


@contextmanager
def silent_server() -> Iterator[int]:
    """A port where the kernel accepts TCP connections that nothing ever answers."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        yield listening.getsockname()[1]


def counted_project(
    base: Path,
    url: str,
    migrations: int = 50,
    *,
    concurrently: Collection[int] = (),
    then: Mapping[int, str] | None = None,
) -> Project:
    """A project in ``base`` whose migration i creates table t_i and logs 'm_i' in
    applied_log (the first creates applied_log too); its down undoes both. The migrations
    numbered in ``concurrently`` are non-transactional and build an index on t_i with
    ``CREATE INDEX CONCURRENTLY`` (PostgreSQL) between the two; ``then[i]`` is Python code
    that migration i's up runs last."""
    project = Project.create(base, url)
    for i in range(1, migrations + 1):
        up = [f"CREATE TABLE t_{i} (id INTEGER)"]
        if i == 1:
            up.insert(0, "CREATE TABLE applied_log (name VARCHAR(16) NOT NULL)")
        if i in concurrently:
            up.append(f"CREATE INDEX CONCURRENTLY ix_{i} ON t_{i} (id)")
        up.append(f"INSERT INTO applied_log (name) VALUES ('m_{i}')")
        down = [f"DELETE FROM applied_log WHERE name = 'm_{i}'", f"DROP TABLE t_{i}"]
        if i == 1:
            down = [f"DROP TABLE t_{i}", "DROP TABLE applied_log"]
        code = "\n".join(f"await conn.execute(text({s!r}))" for s in up)
        code += "\n" + textwrap.dedent((then or {}).get(i, ""))
        slug = "create_log" if i == 1 else f"step_{i}"
        project.add(slug, code, down, transactional=i not in concurrently)
    return project


def consistent_state(project: Project) -> list[str]:
    """The applied migrations, once history, tables and counter are shown to agree: each
    applied migration's table exists and it logged itself exactly once, and the applied
    ones are a prefix of the registry."""
    history = asyncio.run(rows(project.url, "SELECT name, state FROM rung_migrations"))
    counter = asyncio.run(rows(project.url, "SELECT name FROM applied_log"))
    applied = [n for n in project.names if (n, "applied") in history]
    assert len(history) == len(applied), history  # only applied rows, each a known name
    logged = Counter(name for (name,) in counter)
    assert logged == Counter(f"m_{i}" for i in range(1, len(applied) + 1)), logged  # once each
    assert applied == project.names[: len(applied)]  # a prefix of the registry
    tables = {t for t in project.tables() if t.startswith("t_")}
    assert tables == {f"t_{i}" for i in range(1, len(applied) + 1)}
    return applied


def cli(url: str, *args: str) -> list[str]:
    """A racer running the real command ``rung --url URL ... ARGS --json``."""
    return ["cli", "--url", url, "--migrator", MIGRATOR, "--lock-timeout", "120", *args, "--json"]


def api(url: str, **options: object) -> list[str]:
    """A racer calling ``rung.upgrade(create_async_engine(url), Migrator, **options)``."""
    return ["api", url, MIGRATOR, *([json.dumps(options)] if options else [])]


def race(cwd: Path, racers: Sequence[Sequence[str]], folder: Path) -> list[Result]:
    """Run ``racers`` (each ``["cli", ARG, ...]`` or ``["api", URL, MIGRATOR[, OPTIONS]]``)
    as OS processes leaving one gate together, from ``cwd`` (see racer.py); their results,
    in order."""
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, str(RACER), str(folder), json.dumps([list(r) for r in racers])],
        cwd=cwd,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=RACE_TIMEOUT + 30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [
        Result(code, (folder / f"out{i}").read_text(), (folder / f"err{i}").read_text())
        for i, code in enumerate(json.loads(done.stdout))
    ]


def executed(result: Result) -> list[tuple[str, str]]:
    """(name, direction) of each migration a racer's ``--json`` output says it ran."""
    return [(m["name"], m["direction"]) for m in json.loads(result.out)["migrations"]]
