"""The three databases: URLs for every driver a tool uses, resets and checks.

Each server gets two databases the harness creates and drops: ``rung_bench`` (the tool
under test) and ``rung_bench_floor`` (the floor that runs in turn with it), so that both
stay applied for the no-op and status runs between an apply and a rollback. SQLite gets two
files under ``benchmarks/.work/db/``. Server URLs are overridable with
``RUNG_BENCH_POSTGRES_URL`` and ``RUNG_BENCH_MYSQL_URL`` (any database name in them is
ignored).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from benchlib.workload import TABLE_PATTERN

SLOTS = {"tool": "rung_bench", "floor": "rung_bench_floor"}
DEFAULT_SERVERS = {
    "postgresql": "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    "mariadb": "mysql+asyncmy://root@127.0.0.1:3306/",
}
SERVER_ENV = {"postgresql": "RUNG_BENCH_POSTGRES_URL", "mariadb": "RUNG_BENCH_MYSQL_URL"}
# Per database: the async driver (rung, the floor, Alembic's async template) and the sync
# one Alembic's classic template and yoyo use.
SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "mariadb": "mysql+pymysql"}
YOYO_SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "mariadb": "mysql"}


@dataclass(frozen=True)
class Database:
    name: str  # sqlite, postgresql, mariadb
    work: Path

    def _server(self) -> sa.URL:
        return sa.make_url(os.environ.get(SERVER_ENV[self.name], DEFAULT_SERVERS[self.name]))

    def url(self, slot: str) -> sa.URL:
        """The async URL (asyncpg, asyncmy, aiosqlite) of ``slot`` ("tool" or "floor")."""
        if self.name == "sqlite":
            return sa.make_url(
                f"sqlite+aiosqlite:///{self.work / 'db' / (SLOTS[slot] + '.sqlite')}"
            )
        return self._server().set(database=SLOTS[slot])

    def async_url(self, slot: str) -> str:
        return self.url(slot).render_as_string(hide_password=False)

    def sync_url(self, slot: str) -> str:
        url = self.url(slot).set(drivername=SYNC_DRIVERS[self.name])
        return url.render_as_string(hide_password=False)

    def yoyo_url(self, slot: str) -> str:
        url = self.url(slot).set(drivername=YOYO_SCHEMES[self.name])
        return url.render_as_string(hide_password=False)

    def describe(self) -> str:
        """A password-free description for the report."""
        if self.name == "sqlite":
            return "SQLite file (aiosqlite / sqlite3)"
        url = self._server()
        return f"{self.name} at {url.host}:{url.port}"

    # --- administration (never timed) ------------------------------------------------------

    def reset(self, slot: str) -> None:
        """Drop and recreate ``slot``'s database: empty, no tracking tables."""
        if self.name == "sqlite":
            path = Path(self.url(slot).database or "")
            path.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        name = SLOTS[slot]
        if self.name == "postgresql":
            statements = [
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'CREATE DATABASE "{name}"',
            ]
        else:
            statements = [f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}`"]
        asyncio.run(self._admin(statements))

    def drop(self, slot: str) -> None:
        if self.name == "sqlite":
            self.reset(slot)
            return
        name = SLOTS[slot]
        quote = '"' if self.name == "postgresql" else "`"
        force = " WITH (FORCE)" if self.name == "postgresql" else ""
        asyncio.run(self._admin([f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}"]))

    async def _admin(self, statements: list[str]) -> None:
        server = self._server()
        if self.name == "postgresql":
            server = server.set(database=server.database or "postgres")
        engine = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    def reachable(self) -> str | None:
        """None when the server answers, else why not."""
        if self.name == "sqlite":
            return None
        try:
            asyncio.run(self._admin(["SELECT 1"]))
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return None

    def server_version(self) -> str:
        if self.name == "sqlite":
            import sqlite3

            return f"SQLite {sqlite3.sqlite_version}"
        return asyncio.run(self._version())

    async def _version(self) -> str:
        server = self._server()
        if self.name == "postgresql":
            server = server.set(database=server.database or "postgres")
        engine = create_async_engine(server, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                found = str(await conn.scalar(sa.text("SELECT version()")))
        finally:
            await engine.dispose()
        return found.split(" on ")[0] if self.name == "postgresql" else f"MariaDB {found}"

    def ladder_tables(self, slot: str) -> int:
        """How many ladder tables (t_<i>) ``slot``'s database holds."""
        return len([t for t in asyncio.run(self._tables(slot)) if TABLE_PATTERN.fullmatch(t)])

    async def _tables(self, slot: str) -> list[str]:
        engine = create_async_engine(self.url(slot), poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        finally:
            await engine.dispose()


DATABASES = ("sqlite", "postgresql", "mariadb")

# asyncmy logs the server's notes ("Can't drop database ...; database doesn't exist") as
# warnings; for DROP ... IF EXISTS they are expected.
logging.getLogger("asyncmy").setLevel(logging.ERROR)
