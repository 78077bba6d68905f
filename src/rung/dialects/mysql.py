"""MySQL and MariaDB, also as a Galera cluster: DDL commits at once, so each migration
commits on its own and a failure part-way is recorded as failed.

On Galera (``wsrep_on``), rung's connections wait for the cluster's earlier commits before
they read or write (``wsrep_sync_wait``), so that a replica taking the lock on one node sees
what another node's replica applied; a write that loses a certification conflict fails with
error 1213 and is tried again. Schema changes must replicate in total order (TOI, Galera's
default); a session in rolling schema upgrade mode (RSU) is refused, because its DDL would
change this node only.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from rung.dialects import mysql_changes, mysql_schema
from rung.dialects.base import (
    Fingerprint,
    Server,
    checked_database_name,
    error_number,
    message_of,
)
from rung.migration import Statement
from rung.schema import Snapshot

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
_PERMANENT = {
    1044: "access denied to the database",
    1045: "wrong user name or password",
    1049: "no such database",
    1698: "access denied",
}
# 1213: deadlock, also Galera's certification conflict; 1205: lock wait timeout;
# 1047 and 1180: a Galera node not yet synced, or a commit it refused.
_CONFLICTS = {1213, 1205, 1047, 1180}
_SERVER = sa.text(
    "SHOW VARIABLES WHERE Variable_name IN ('read_only', 'wsrep_on', 'wsrep_osu_method')"
)


class _ColumnType(sa.types.UserDefinedType[Any]):
    """A column type by its DDL: the tracking table's MySQL types without importing
    SQLAlchemy's MySQL dialect (a tenth of a no-op run's imports on other databases)."""

    cache_ok = True

    def __init__(self, ddl: str) -> None:
        self.ddl = ddl

    def get_col_spec(self, **kw: Any) -> str:
        return self.ddl


class MySQL:
    name = "mysql"
    copies_databases = False
    transactional_ddl = False
    # MySQL's TEXT holds 64 KB and its DATETIME whole seconds, unless told otherwise.
    long_text: sa.types.TypeEngine[Any] = _ColumnType("LONGTEXT")
    moment: sa.types.TypeEngine[Any] = _ColumnType("DATETIME(6)")

    def connect_args(self, url: sa.URL, *, pooler: bool) -> tuple[sa.URL, dict[str, Any]]:
        return url, {}

    def check_location(self, url: sa.URL, *, must_exist: bool) -> None:
        pass

    def permanent_error(self, exc: BaseException) -> str | None:
        reason = _PERMANENT.get(error_number(exc) or 0)
        return f"{reason}: {message_of(exc)}" if reason else None

    def pooler_error(self, exc: BaseException) -> bool:
        return False

    async def server(self, conn: AsyncConnection) -> Server:
        found = {
            str(name).lower(): str(value).upper() for name, value in await conn.execute(_SERVER)
        }
        await conn.rollback()
        if found.get("read_only") in ("ON", "1"):
            return Server(
                refusal="the server is read-only (read_only = ON, as on a replica); run rung "
                "against the primary"
            )
        cluster = found.get("wsrep_on") in ("ON", "1")
        if cluster and found.get("wsrep_osu_method") != "TOI":
            return Server(
                refusal=f"this Galera session changes schemas in "
                f"{found.get('wsrep_osu_method')} mode, where DDL changes one node only; rung "
                "needs TOI (SET GLOBAL wsrep_OSU_method = 'TOI')",
                cluster=True,
            )
        return Server(cluster=cluster)

    @asynccontextmanager
    async def session(
        self, conn: AsyncConnection, server: Server, lock_timeout: float
    ) -> AsyncIterator[None]:
        if not server.cluster:
            yield
            return
        previous = await conn.scalar(sa.text("SELECT @@SESSION.wsrep_sync_wait"))
        # 1 reads, 2 updates and deletes, 4 inserts: each waits for the cluster's commits.
        await conn.execute(sa.text("SET SESSION wsrep_sync_wait = 7"))
        await conn.commit()
        try:
            yield
        finally:
            if not conn.invalidated and not conn.closed:
                await conn.rollback()
                await conn.execute(
                    sa.text("SET SESSION wsrep_sync_wait = :v"), {"v": int(previous or 0)}
                )
                await conn.commit()

    def clock(self) -> sa.ColumnElement[float]:
        return sa.literal_column("UNIX_TIMESTAMP(NOW(6))", sa.Double())

    def conflict(self, exc: BaseException) -> bool:
        return error_number(exc) in _CONFLICTS

    async def begin(self, conn: AsyncConnection) -> None:
        pass

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

    def has_table(self, conn: sa.Connection, name: str) -> bool:
        query = sa.text(
            "SELECT 1 FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :name"
        )
        return conn.execute(query, {"name": name}).first() is not None

    def commits_implicitly(self, sql: str) -> bool:
        return _IMPLICIT_COMMIT.match(sql) is not None

    async def half_made(self, conn: AsyncConnection) -> frozenset[str]:
        return frozenset()

    async def drop_half_made(self, conn: AsyncConnection, name: str) -> None:
        raise NotImplementedError("MySQL leaves nothing half-made")

    def scratch_url(self, target: sa.URL, name: str) -> sa.URL:
        return target.set(database=name)

    def scratch_problem(self, url: sa.URL) -> str | None:
        return None  # creating it fails if it exists

    async def create_database(self, url: sa.URL) -> None:
        await _admin(url, f"CREATE DATABASE `{checked_database_name(url)}`")

    async def drop_database(self, url: sa.URL) -> None:
        await _admin(url, f"DROP DATABASE IF EXISTS `{checked_database_name(url)}`")

    def scratch_session(self) -> tuple[str, ...]:
        return ()  # innodb_flush_log_at_trx_commit is the server's, not a session's

    async def copy_database(self, source: sa.URL, target: sa.URL) -> None:
        raise NotImplementedError("MariaDB and MySQL cannot copy a database on the server")

    def read_schema(self, conn: sa.Connection) -> Snapshot:
        return mysql_schema.read(conn)

    def fingerprints(self) -> Fingerprint:
        return mysql_changes.Fingerprints()

    def drop_everything(self, conn: sa.Connection) -> list[str]:
        return mysql_schema.drop_everything(conn)


async def _admin(url: sa.URL, statement: str) -> None:
    engine = create_async_engine(url.set(database=""), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


DIALECT = MySQL()
