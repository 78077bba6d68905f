"""PostgreSQL: transactional DDL; the lock is a session-level advisory lock."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from rung.dialects.base import all_kept, checked_database_name
from rung.errors import LockTimeout
from rung.plan import Statement

_HOLDER = sa.text(
    "SELECT a.pid, a.usename, a.application_name, a.client_addr, a.backend_start "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
)


def _key(lock: str) -> int:
    return int.from_bytes(bytes.fromhex(lock[5:21]), "big", signed=True)


class PostgreSQL:
    name = "postgresql"
    transactional_ddl = True

    async def lock(self, conn: AsyncConnection, key: str, timeout: float) -> None:
        await conn.execute(
            sa.text("SELECT set_config('lock_timeout', :t, true)"),
            {"t": f"{max(1, int(timeout * 1000))}ms"},
        )
        try:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _key(key)})
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":
                raise
            await conn.rollback()
            holder = await self._holder(conn, _key(key))
            raise LockTimeout(
                f"another rung run held the migration lock for more than {timeout:g} s"
                f"{holder and f' ({holder})'}; wait for it to finish or raise --lock-timeout",
                holder=holder,
            ) from None
        await conn.commit()

    async def _holder(self, conn: AsyncConnection, key: int) -> str:
        row = (
            await conn.execute(_HOLDER, {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF})
        ).first()
        await conn.rollback()
        if row is None:
            return ""
        pid, user, app, addr, started = row
        return f"held by backend pid {pid}, user {user}, application {app or '?'}, " + (
            f"from {addr or 'a local socket'}, connected since {started:%Y-%m-%d %H:%M:%S}"
        )

    async def unlock(self, conn: AsyncConnection, key: str) -> None:
        await conn.rollback()
        await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _key(key)})
        await conn.commit()

    async def begin(self, conn: AsyncConnection) -> None:
        pass

    async def drop_everything(self, conn: AsyncConnection) -> list[str]:
        from rung.dialects import postgresql_schema  # here: it imports rung.schema

        return await conn.run_sync(postgresql_schema.drop_everything)

    def kept_after_failure(
        self, statements: Sequence[Statement], in_transaction: bool, failing: str | None = None
    ) -> list[Statement]:
        return all_kept(statements, in_transaction)

    async def create_database(self, url: sa.URL) -> None:
        await _admin(url, f'CREATE DATABASE "{checked_database_name(url)}"')

    async def drop_database(self, url: sa.URL) -> None:
        await _admin(url, f'DROP DATABASE IF EXISTS "{checked_database_name(url)}" WITH (FORCE)')


async def _admin(url: sa.URL, statement: str) -> None:
    engine = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()
