"""PostgreSQL: transactional DDL, so a run is all or nothing unless a migration opts out
(``CREATE INDEX CONCURRENTLY``). Through a transaction pooler (PgBouncer), asyncpg's named
prepared statements are turned off; a hot standby is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from rung.dialects import postgresql_schema
from rung.dialects.base import (
    Fingerprint,
    Server,
    all_kept,
    checked_database_name,
    error_code,
    message_of,
)
from rung.dialects.postgresql_changes import Fingerprints
from rung.migration import Statement
from rung.schema import Snapshot

# libpq's query options, as platforms write them into URLs, in asyncpg's terms.
_LIBPQ_OPTIONS = {"sslmode": ("ssl", str), "connect_timeout": ("timeout", float)}
# SQLSTATEs of a failed connection that waiting does not fix.
_PERMANENT = {
    "28P01": "wrong password",
    "28000": "login refused",
    "3D000": "no such database",
    "42501": "permission denied",
}
_CONFLICTS = {"40001", "40P01"}  # serialization failure, deadlock
_POOLER_STATES = {"42P05", "26000"}  # a prepared statement that exists already, or not at all
_INVALID_INDEXES = sa.text(
    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace"
)


class PostgreSQL:
    name = "postgresql"
    copies_databases = True
    transactional_ddl = True
    long_text: sa.types.TypeEngine[Any] = sa.Text()
    moment: sa.types.TypeEngine[Any] = sa.DateTime()

    def connect_args(self, url: sa.URL, *, pooler: bool) -> tuple[sa.URL, dict[str, Any]]:
        """``?pgbouncer=true`` (Prisma's spelling) means ``pooler``; the URL returned says
        so as SQLAlchemy's ``prepared_statement_cache_size=0``, so that every URL derived
        from it (a scratch database's) keeps the pooler's settings."""
        pooler = pooler or str(url.query.get("pgbouncer", "")).lower() in ("true", "1", "yes")
        pooler = pooler or str(url.query.get("prepared_statement_cache_size")) == "0"
        url = url.difference_update_query(["pgbouncer"])
        args: dict[str, Any] = {}
        if url.get_driver_name() != "asyncpg":
            return url, args
        for option, (argument, kind) in _LIBPQ_OPTIONS.items():
            if option in url.query:
                args[argument] = kind(url.query[option])
        url = url.difference_update_query(_LIBPQ_OPTIONS)
        if pooler:
            # Unnamed statements only: a named one lives on one server connection, which a
            # transaction pooler shares among clients (they clash on __asyncpg_stmt_1__), and
            # outside a transaction the next message may go to another one.
            args["statement_cache_size"] = 0
            url = url.update_query_dict({"prepared_statement_cache_size": "0"})
        return url, args

    def check_location(self, url: sa.URL, *, must_exist: bool) -> None:
        pass

    def permanent_error(self, exc: BaseException) -> str | None:
        reason = _PERMANENT.get(error_code(exc))
        return f"{reason}: {message_of(exc)}" if reason else None

    def pooler_error(self, exc: BaseException) -> bool:
        return error_code(exc) in _POOLER_STATES and "__asyncpg_stmt_" in message_of(exc)

    async def server(self, conn: AsyncConnection) -> Server:
        standby, read_only, pid = (
            await conn.execute(
                sa.text(
                    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), "
                    "pg_backend_pid()"
                )
            )
        ).one()
        await conn.rollback()
        given = await _given_pid(conn)
        pooled = str(conn.engine.url.query.get("prepared_statement_cache_size")) == "0"
        if given is not None and given != pid and not pooled:
            return Server(
                refusal=f"a connection pooler sits between rung and the server (the server "
                f"process is {pid}, the connection was told {given}), and a transaction "
                "pooler such as PgBouncer breaks named prepared statements; " + POOLER_FIX
            )
        if standby:
            return Server(
                refusal="the server is a hot standby (in recovery), which cannot be written; "
                "run rung against the primary"
            )
        if read_only == "on":
            return Server(
                refusal="the session is read-only (default_transaction_read_only is on for "
                "this user or database)"
            )
        return Server()

    @asynccontextmanager
    async def session(
        self, conn: AsyncConnection, server: Server, lock_timeout: float
    ) -> AsyncIterator[None]:
        yield  # nothing to set: a session setting would not survive a transaction pooler

    def clock(self) -> sa.ColumnElement[float]:
        return sa.literal_column("extract(epoch from clock_timestamp())::float8", sa.Double())

    def conflict(self, exc: BaseException) -> bool:
        return error_code(exc) in _CONFLICTS

    async def begin(self, conn: AsyncConnection) -> None:
        pass

    def kept_after_failure(
        self, statements: Sequence[Statement], in_transaction: bool, failing: str | None = None
    ) -> list[Statement]:
        return all_kept(statements, in_transaction)

    def has_table(self, conn: sa.Connection, name: str) -> bool:
        query = sa.text("SELECT to_regclass(quote_ident(:name)) IS NOT NULL")
        return bool(conn.scalar(query, {"name": name}))

    def commits_implicitly(self, sql: str) -> bool:
        return False

    async def half_made(self, conn: AsyncConnection) -> frozenset[str]:
        found = frozenset((await conn.execute(_INVALID_INDEXES)).scalars())
        await conn.rollback()
        return found

    async def drop_half_made(self, conn: AsyncConnection, name: str) -> None:
        quoted = conn.dialect.identifier_preparer.quote(name)
        await conn.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {quoted}"))

    def scratch_url(self, target: sa.URL, name: str) -> sa.URL:
        return target.set(database=name)

    def scratch_problem(self, url: sa.URL) -> str | None:
        return None  # creating it fails if it exists

    async def create_database(self, url: sa.URL) -> None:
        await _admin(url, f'CREATE DATABASE "{checked_database_name(url)}"')

    async def drop_database(self, url: sa.URL) -> None:
        await _admin(url, f'DROP DATABASE IF EXISTS "{checked_database_name(url)}" WITH (FORCE)')

    def scratch_session(self) -> tuple[str, ...]:
        # JIT would compile verify's catalog queries (the planner's guess for their
        # subqueries is high) for 10 to 90 ms, where they run in 1 to 5
        return ("SET synchronous_commit = off", "SET jit = off")

    async def copy_database(self, source: sa.URL, target: sa.URL) -> None:
        name, template = checked_database_name(target), checked_database_name(source)
        await self.drop_database(target)
        await _admin(target, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def read_schema(self, conn: sa.Connection) -> Snapshot:
        return postgresql_schema.read(conn)

    def fingerprints(self) -> Fingerprint:
        return Fingerprints()

    def drop_everything(self, conn: sa.Connection) -> list[str]:
        return postgresql_schema.drop_everything(conn)


POOLER_FIX = (
    'add ?pgbouncer=true to the URL, or set pooler = "transaction" in [tool.rung] '
    "(in Python, make the engine with rung.create_engine(url, pooler=True))"
)


async def _given_pid(conn: AsyncConnection) -> int | None:
    """The server process id the driver was given when it connected (a pooler gives its
    own), where the driver tells."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if hasattr(driver, "get_server_pid"):  # asyncpg
        return int(driver.get_server_pid())
    info = getattr(driver, "info", None)  # psycopg
    return int(info.backend_pid) if info is not None else None


async def _admin(url: sa.URL, statement: str) -> None:
    url, args = DIALECT.connect_args(url.set(database="postgres"), pooler=False)
    engine = create_async_engine(url, connect_args=args, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


DIALECT = PostgreSQL()
