"""What the reliability tests share: a database's whole state as a value, rung's error
format, another session holding rung's lock, a MariaDB account with a password, a server
that never answers, and many processes started at the same instant.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from cli_support import Result, clean_environment
from rung.dialects import dialect_named, lock_id
from rung.schema import snapshot

RACER = Path(__file__).with_name("racer.py")
RACE_TIMEOUT = 120.0  # seconds, for every process of a race together


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
    """The schema (rung's tables included) and every row of every table, as a value; a
    SQLite file that is not there is ``"no file"`` (reading it must not create it)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return "no file"
    async with connection(url) as conn:
        schema = await snapshot(conn, ignore_tables=())
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


def assert_error(result: Result, code: int, *says: str) -> str:
    """Exit ``code``, and stderr exactly ``rung: error: ...`` naming ``says`` (maybe followed
    by one ``rung: hint: ...`` line), without a traceback; returns the error line."""
    assert result.code == code, result.text
    lines = result.err.splitlines()
    assert 1 <= len(lines) <= 2, result.err
    assert lines[0].startswith("rung: error: "), result.err
    assert len(lines) == 1 or lines[1].startswith("rung: hint: "), result.err
    for text in says:
        assert text in lines[0], (text, result.err)
    assert "Traceback" not in result.text
    return lines[0]


@asynccontextmanager
async def holding_the_lock(url: str, table: str = "rung_migrations") -> AsyncIterator[str]:
    """Another session holds rung's lock for ``table`` on ``url``'s database, taken with the
    dialect's own API; yields its backend pid or connection id (on SQLite, which has no
    such lock, an open ``BEGIN IMMEDIATE`` write transaction: "")."""
    async with connection(url) as conn:
        name = conn.dialect.name
        if name == "sqlite":
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield ""
            await conn.exec_driver_sql("ROLLBACK")
            return
        await dialect_named(name).lock(conn, lock_id(conn.engine.url, table), 1)
        me = "SELECT pg_backend_pid()" if name == "postgresql" else "SELECT CONNECTION_ID()"
        yield str(await conn.scalar(sa.text(me)))


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


def race(cwd: Path, racers: Sequence[Sequence[str]], folder: Path) -> list[Result]:
    """Run ``racers`` (each ``["cli", ARG, ...]`` or ``["api", URL, MIGRATOR]``) as OS
    processes leaving one gate together, from ``cwd`` (see racer.py); their results, in order."""
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
