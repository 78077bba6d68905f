"""SQLite: transactional DDL, if the driver is kept from managing transactions itself.

Python's sqlite3 (and so aiosqlite) does not BEGIN before DDL, so a "rolled back" CREATE
TABLE would stay. During a run rung puts its connections in autocommit mode and issues
``BEGIN IMMEDIATE`` itself, which takes the database's write lock up front; the busy
timeout (how long SQLite waits for another writer) is the run's lock timeout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rung.dialects import sqlite_schema
from rung.dialects.base import Fingerprint, Server, all_kept, message_of
from rung.errors import DatabaseUnreachable, LockTimeout
from rung.migration import Statement
from rung.schema import Snapshot

_SCRATCH_PREFIX = "rung_scratch_"


class SQLite:
    name = "sqlite"
    copies_databases = True
    transactional_ddl = True
    long_text: sa.types.TypeEngine[Any] = sa.Text()
    moment: sa.types.TypeEngine[Any] = sa.DateTime()

    def connect_args(self, url: sa.URL, *, pooler: bool) -> tuple[sa.URL, dict[str, Any]]:
        return url, {}

    def check_location(self, url: sa.URL, *, must_exist: bool) -> None:
        path = _file(url)
        if path is None:
            return
        if not os.path.isdir(os.path.dirname(path) or "."):
            raise DatabaseUnreachable(
                f"the folder of SQLite database {path} does not exist; check the URL, or "
                "create the folder"
            )
        if must_exist and not os.path.exists(path):
            raise DatabaseUnreachable(
                f"SQLite database file {path} does not exist; check the URL (rung up creates it)"
            )

    def permanent_error(self, exc: BaseException) -> str | None:
        return message_of(exc)  # no server to wait for: a file that cannot be opened stays so

    def pooler_error(self, exc: BaseException) -> bool:
        return False

    async def server(self, conn: AsyncConnection) -> Server:
        path = _file(conn.engine.url)
        if path and os.path.exists(path) and not os.access(path, os.W_OK):
            return Server(refusal=f"the database file {path} is read-only for this user")
        if await conn.scalar(sa.text("PRAGMA query_only")):
            return Server(refusal="the connection is read-only (PRAGMA query_only = ON)")
        return Server()

    @asynccontextmanager
    async def session(
        self, conn: AsyncConnection, server: Server, lock_timeout: float
    ) -> AsyncIterator[None]:
        await conn.rollback()
        # Until the connection goes back to the pool: rung opens transactions itself.
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        previous = await conn.scalar(sa.text("PRAGMA busy_timeout"))
        await conn.execute(sa.text(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}"))
        await conn.commit()
        conn.info["rung_lock_timeout"] = lock_timeout
        try:
            yield
        finally:
            if not conn.invalidated and not conn.closed:
                await conn.rollback()
                await conn.execute(sa.text(f"PRAGMA busy_timeout = {int(previous or 0)}"))
                await conn.commit()

    def clock(self) -> sa.ColumnElement[float]:
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Double())

    def conflict(self, exc: BaseException) -> bool:
        return "database is locked" in message_of(exc)

    async def begin(self, conn: AsyncConnection) -> None:
        try:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc.orig):
                raise
            waited = conn.info.get("rung_lock_timeout", 0.0)
            raise LockTimeout(
                f"another process held the SQLite database's write lock for more than "
                f"{waited:g} s (SQLite cannot tell which); wait for it or raise --lock-timeout"
            ) from None

    def kept_after_failure(
        self, statements: Sequence[Statement], in_transaction: bool, failing: str | None = None
    ) -> list[Statement]:
        return all_kept(statements, in_transaction)

    def has_table(self, conn: sa.Connection, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return conn.exec_driver_sql(query, (name,)).first() is not None

    def commits_implicitly(self, sql: str) -> bool:
        return False

    async def half_made(self, conn: AsyncConnection) -> frozenset[str]:
        return frozenset()

    async def drop_half_made(self, conn: AsyncConnection, name: str) -> None:
        raise NotImplementedError("SQLite leaves nothing half-made")

    def scratch_url(self, target: sa.URL, name: str) -> sa.URL:
        folder = tempfile.mkdtemp(prefix=_SCRATCH_PREFIX)
        return target.set(database=os.path.join(folder, f"{name}.db"))

    def scratch_problem(self, url: sa.URL) -> str | None:
        path = _file(url)
        if path is None:
            return "a scratch SQLite database must be a file, given by its path"
        return "it already exists: a file is there" if os.path.exists(path) else None

    async def create_database(self, url: sa.URL) -> None:
        pass  # the file appears on first connect

    async def drop_database(self, url: sa.URL) -> None:
        path = _file(url)
        if path is None:
            return
        for suffix in ("", "-journal", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        folder = os.path.dirname(path)
        if os.path.basename(folder).startswith(_SCRATCH_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)

    def scratch_session(self) -> tuple[str, ...]:
        return ("PRAGMA synchronous = OFF",)

    async def copy_database(self, source: sa.URL, target: sa.URL) -> None:
        origin, path = _file(source), _file(target)
        if origin is None or path is None:
            raise ValueError("only a SQLite file can be copied")
        for suffix in ("-journal", "-wal", "-shm"):  # none after a clean close; never stale
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        shutil.copyfile(origin, path)

    def read_schema(self, conn: sa.Connection) -> Snapshot:
        return sqlite_schema.read(conn)

    def fingerprints(self) -> Fingerprint:
        return _fingerprint

    def drop_everything(self, conn: sa.Connection) -> list[str]:
        return sqlite_schema.drop_everything(conn)


def _file(url: sa.URL) -> str | None:
    """The file of a SQLite URL; None for memory and ``file:`` URIs."""
    path = url.database or ""
    return None if path in ("", ":memory:") or path.startswith("file:") else path


_SCHEMA_TEXT = (
    "SELECT group_concat(type || char(31) || name || char(31) || ifnull(sql, ''), char(30)) "
    "FROM (SELECT type, name, sql FROM sqlite_master ORDER BY type, name)"
)

DIALECT = SQLite()


def _fingerprint(conn: sa.Connection) -> str:
    # SQLite keeps a schema as the text of its CREATE statements and nothing else
    text = conn.exec_driver_sql(_SCHEMA_TEXT).scalar() or ""
    return hashlib.sha256(text.encode()).hexdigest()
