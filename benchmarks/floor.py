"""The floor ("raw"): the ladder-N statements through the same async driver, nothing else.

    python benchmarks/floor.py COMMAND N URL [--via driver|sqlalchemy]

COMMAND is apply, noop, status, rollback or mark (record all N as applied without running
them: the preparation of the 10,000-migration cells). URL is an SQLAlchemy async URL
(sqlite+aiosqlite, postgresql+asyncpg, mysql+asyncmy).

One connection, one transaction for apply and rollback, each statement sent on its own
(as any migration tool must: migrations are code), one INSERT or DELETE per migration in
the tracking table ``raw_migrations``. ``--via driver`` (the default, and the faster: it
does not import SQLAlchemy) uses asyncpg, asyncmy or aiosqlite directly; ``--via
sqlalchemy`` sends the same statements through SQLAlchemy's async engine ("raw-sa" in the
results), to show what SQLAlchemy itself costs. Names are generated ([a-z0-9_]) so they are
inlined as literals: no statement has parameters.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

from benchlib.workload import down_statements, rung_name, up_statements

CREATE_TRACKING = (
    "CREATE TABLE IF NOT EXISTS raw_migrations (name VARCHAR(255) PRIMARY KEY, "
    "applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)
SELECT_APPLIED = "SELECT name, applied_at FROM raw_migrations"


class Connection:
    """The four things the floor needs from a connection."""

    async def execute(self, sql: str) -> None:
        raise NotImplementedError

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Asyncpg(Connection):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql)  # simple query protocol: one round trip, no prepare

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.conn.fetch(sql)]

    async def close(self) -> None:
        await self.conn.close()


class Asyncmy(Connection):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cursor = conn.cursor()

    async def execute(self, sql: str) -> None:
        await self.cursor.execute(sql)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        await self.cursor.execute(sql)
        return list(await self.cursor.fetchall())

    async def close(self) -> None:
        await self.cursor.close()
        await self.conn.ensure_closed()


class Aiosqlite(Connection):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return list(await self.conn.execute_fetchall(sql))

    async def close(self) -> None:
        await self.conn.close()


class SQLAlchemy(Connection):
    def __init__(self, engine: Any, conn: Any) -> None:
        self.engine = engine
        self.conn = conn

    async def execute(self, sql: str) -> None:
        await self.conn.exec_driver_sql(sql)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in (await self.conn.exec_driver_sql(sql)).all()]

    async def close(self) -> None:
        await self.conn.close()
        await self.engine.dispose()


async def connect(url: str, via: str) -> Connection:
    """Autocommit connections: the floor sends BEGIN and COMMIT itself, on every driver."""
    if via == "sqlalchemy":
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        return SQLAlchemy(engine, await engine.connect())
    parts = urlsplit(url)
    scheme = parts.scheme.partition("+")[0]
    if scheme == "sqlite":
        import aiosqlite

        return Aiosqlite(await aiosqlite.connect(unquote(parts.path[1:]), isolation_level=None))
    login = {
        "host": parts.hostname,
        "port": parts.port,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    if scheme == "postgresql":
        import asyncpg

        return Asyncpg(await asyncpg.connect(database=parts.path[1:], **login))
    if scheme in ("mysql", "mariadb"):
        import asyncmy

        return Asyncmy(await asyncmy.connect(db=parts.path[1:], autocommit=True, **login))
    raise SystemExit(f"floor: unsupported URL scheme {parts.scheme!r}")


async def applied_names(conn: Connection) -> dict[str, Any]:
    try:
        return {name: at for name, at in await conn.rows(SELECT_APPLIED)}
    except Exception:  # no tracking table yet: nothing applied
        return {}


async def main(command: str, n: int, url: str, via: str) -> None:
    conn = await connect(url, via)
    try:
        if command == "noop":
            applied = await applied_names(conn)
            pending = [i for i in range(1, n + 1) if rung_name(i) not in applied]
            if pending:
                raise SystemExit(f"floor: {len(pending)} pending in a no-op run")
        elif command == "status":
            applied = await applied_names(conn)
            lines = []
            for i in range(1, n + 1):
                name = rung_name(i)
                at = applied.get(name)
                lines.append(f"{name}  {'applied ' + str(at) if at else 'pending'}")
            print("\n".join(lines))
        elif command in ("apply", "mark"):
            await conn.execute("BEGIN")
            await conn.execute(CREATE_TRACKING)
            applied = await applied_names(conn)
            for i in range(1, n + 1):
                name = rung_name(i)
                if name in applied:
                    continue
                if command == "apply":
                    for statement in up_statements(i):
                        await conn.execute(statement)
                await conn.execute(f"INSERT INTO raw_migrations (name) VALUES ('{name}')")
            await conn.execute("COMMIT")
        elif command == "rollback":
            await conn.execute("BEGIN")
            applied = await applied_names(conn)
            for i in range(n, 0, -1):
                name = rung_name(i)
                if name not in applied:
                    continue
                for statement in down_statements(i):
                    await conn.execute(statement)
                await conn.execute(f"DELETE FROM raw_migrations WHERE name = '{name}'")
            await conn.execute("COMMIT")
        else:
            raise SystemExit(f"floor: unknown command {command!r}")
    finally:
        await conn.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    via = "driver"
    if "--via" in args:
        at = args.index("--via")
        via = args[at + 1]
        del args[at : at + 2]
    if len(args) != 3 or via not in ("driver", "sqlalchemy"):
        raise SystemExit(__doc__)
    asyncio.run(main(args[0], int(args[1]), args[2], via))
