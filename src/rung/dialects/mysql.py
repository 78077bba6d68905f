"""MySQL and MariaDB: DDL commits at once, so each migration commits on its own and a
failure part-way is recorded as failed. The lock is ``GET_LOCK``, which is server-wide:
its name includes the database and the tracking table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from rung.dialects.base import checked_database_name
from rung.errors import LockTimeout
from rung.plan import Statement

# Statements that make MySQL/MariaDB commit the open transaction before they run (the DDL
# family and friends; a TEMPORARY table's CREATE or DROP does not), after leading comments.
_IMPLICIT_COMMIT = re.compile(
    r"(?:\s+|/\*.*?\*/|(?:--\s|\#)[^\n]*(?:\n|$))*"
    r"(?!(?:CREATE|DROP)\s+TEMPORARY\b)"
    r"(?:CREATE|ALTER|DROP|RENAME|TRUNCATE|GRANT|REVOKE|LOCK|UNLOCK|ANALYZE|OPTIMIZE|REPAIR"
    r"|CHECK|FLUSH|RESET|CACHE|COMMIT|BEGIN|START\s+TRANSACTION|SET\s+(?:@@(?:SESSION\.)?)?"
    r"AUTOCOMMIT)\b",
    re.IGNORECASE | re.DOTALL,
)


class _ColumnType(sa.types.UserDefinedType[Any]):
    """A column type by its DDL: the tracking table's MySQL types without importing
    SQLAlchemy's MySQL dialect (a tenth of a no-op run's imports on other databases)."""

    cache_ok = True

    def __init__(self, ddl: str) -> None:
        self.ddl = ddl

    def get_col_spec(self, **kw: Any) -> str:
        return self.ddl


# MySQL's TEXT holds 64 KB and its DATETIME whole seconds, unless told otherwise.
LONG_TEXT = _ColumnType("LONGTEXT")
MICROSECONDS = _ColumnType("DATETIME(6)")

_HOLDER = sa.text(
    "SELECT ID, USER, HOST, DB, TIME FROM information_schema.PROCESSLIST "
    "WHERE ID = IS_USED_LOCK(:n)"
)


class MySQL:
    name = "mysql"
    transactional_ddl = False

    async def lock(self, conn: AsyncConnection, key: str, timeout: float) -> None:
        got = await conn.scalar(sa.text("SELECT GET_LOCK(:n, :t)"), {"n": key, "t": timeout})
        if got != 1:
            row = (await conn.execute(_HOLDER, {"n": key})).first()
            await conn.rollback()
            holder = (
                f"held by connection {row[0]}, user {row[1]}@{row[2]}, database {row[3]}, "
                f"for {row[4]} s"
                if row
                else ""
            )
            raise LockTimeout(
                f"another rung run held the migration lock for more than {timeout:g} s"
                f"{holder and f' ({holder})'}; wait for it to finish or raise --lock-timeout",
                holder=holder or None,
            )
        await conn.commit()

    async def unlock(self, conn: AsyncConnection, key: str) -> None:
        await conn.rollback()
        await conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": key})
        await conn.commit()

    async def begin(self, conn: AsyncConnection) -> None:
        pass

    async def drop_everything(self, conn: AsyncConnection) -> list[str]:
        from rung.dialects import mysql_schema  # here: it imports rung.schema

        return await conn.run_sync(mysql_schema.drop_everything)

    def kept_after_failure(
        self, statements: Sequence[Statement], in_transaction: bool, failing: str | None = None
    ) -> list[Statement]:
        """Everything up to the last statement that committed; a failing DDL statement
        committed all the completed ones before it failed."""
        if not in_transaction or (failing is not None and _IMPLICIT_COMMIT.match(failing)):
            return list(statements)
        last_commit = max(
            (i for i, s in enumerate(statements) if _IMPLICIT_COMMIT.match(s.sql)), default=-1
        )
        return list(statements[: last_commit + 1])

    async def create_database(self, url: sa.URL) -> None:
        await _admin(url, f"CREATE DATABASE `{checked_database_name(url)}`")

    async def drop_database(self, url: sa.URL) -> None:
        await _admin(url, f"DROP DATABASE IF EXISTS `{checked_database_name(url)}`")


async def _admin(url: sa.URL, statement: str) -> None:
    engine = create_async_engine(url.set(database=""), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()
