"""SQLite: transactional DDL, if the driver is kept from managing transactions itself.

Python's sqlite3 (and so aiosqlite) does not BEGIN before DDL, so a "rolled back" CREATE
TABLE would stay. During a run rung puts the connection in autocommit mode and issues
``BEGIN IMMEDIATE`` itself: that takes the database write lock (rung's lock on SQLite),
waiting up to the lock timeout. A migration with ``transactional=False`` runs without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rung.dialects.base import all_kept
from rung.errors import LockTimeout
from rung.plan import Statement


class SQLite:
    name = "sqlite"
    transactional_ddl = True

    def __init__(self) -> None:
        self._timeout = 0.0
        self._previous = 0

    async def lock(self, conn: AsyncConnection, key: str, timeout: float) -> None:
        await conn.rollback()
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        self._previous = await conn.scalar(sa.text("PRAGMA busy_timeout"))
        await conn.execute(sa.text(f"PRAGMA busy_timeout = {int(timeout * 1000)}"))
        await conn.commit()
        self._timeout = timeout

    async def unlock(self, conn: AsyncConnection, key: str) -> None:
        await conn.rollback()
        await conn.execute(sa.text(f"PRAGMA busy_timeout = {int(self._previous or 0)}"))
        await conn.commit()

    async def begin(self, conn: AsyncConnection) -> None:
        try:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc.orig):
                raise
            raise LockTimeout(
                f"another process held the SQLite database's write lock for more than "
                f"{self._timeout:g} s (SQLite cannot tell which); wait for it or raise "
                "--lock-timeout"
            ) from None

    async def drop_everything(self, conn: AsyncConnection) -> list[str]:
        from rung.dialects import sqlite_schema  # here: it imports rung.schema

        return await conn.run_sync(sqlite_schema.drop_everything)

    def kept_after_failure(
        self, statements: Sequence[Statement], in_transaction: bool, failing: str | None = None
    ) -> list[Statement]:
        return all_kept(statements, in_transaction)

    async def create_database(self, url: sa.URL) -> None:
        pass  # the file appears on first connect

    async def drop_database(self, url: sa.URL) -> None:
        path = url.database or ""
        for suffix in ("", "-journal", "-wal", "-shm"):
            if path and path != ":memory:" and os.path.exists(path + suffix):
                os.remove(path + suffix)
