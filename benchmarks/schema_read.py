"""Time to read a 1,000-table schema into a snapshot, per database, and the statements
it takes. Each table has a primary key, a foreign key, a default, a CHECK, a UNIQUE
constraint and an index. The first read of a process is shown apart (SQLAlchemy's
first-use lookups; SQLite's reader parses each CREATE statement once); later reads give
their fastest, the figure least disturbed by other work on the machine.

The databases (``rung_read_bench`` on each server, a SQLite file in the temp folder) are
made on first use and kept, so that another checkout's reader can be timed on the same
schema; ``--drop`` removes them.

    python benchmarks/schema_read.py                            # this checkout
    PYTHONPATH=/path/to/old/src python benchmarks/schema_read.py
    python benchmarks/schema_read.py --drop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from rung.dialects import dialect_named
from rung.schema import Snapshot


async def snapshot(conn: AsyncConnection) -> Snapshot:
    """The schema as rung's reader for ``conn``'s database sees it."""
    return await conn.run_sync(dialect_named(conn.dialect.name).read_schema)


TABLES = 1000
READS = 7
URLS = {
    "sqlite": f"sqlite+aiosqlite:///{tempfile.gettempdir()}/rung_read_bench.db",
    "postgresql": os.environ.get(
        "RUNG_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get("RUNG_BENCH_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/"),
}


def url_of(backend: str) -> sa.URL:
    url = sa.make_url(URLS[backend])
    return url if backend == "sqlite" else url.set(database="rung_read_bench")


async def ensure(engine: AsyncEngine) -> None:
    """The 1,000 tables, unless an earlier run made them."""
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda c: sa.inspect(c).has_table(f"t{TABLES - 1}"))
    if found:
        return
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t0 (id INTEGER PRIMARY KEY)"))
        for i in range(1, TABLES):
            await conn.execute(
                sa.text(
                    f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, ref INTEGER, "
                    f"v VARCHAR(10) DEFAULT 'x', CONSTRAINT ck_t{i} CHECK (ref > 0), "
                    f"FOREIGN KEY (ref) REFERENCES t0 (id), UNIQUE (v))"
                )
            )
            await conn.execute(sa.text(f"CREATE INDEX ix_t{i}_ref ON t{i} (ref)"))


async def measure(backend: str) -> tuple[float, float, int, int]:
    url = url_of(backend)
    if backend != "sqlite":
        with contextlib.suppress(sa.exc.DBAPIError):  # made by an earlier run
            await dialect_named(backend).create_database(url)
    engine = create_async_engine(url)
    try:
        await ensure(engine)
        seen: list[str] = []
        times = []
        async with engine.connect() as conn:
            start = time.perf_counter()
            await snapshot(conn)
            first = time.perf_counter() - start
            sa.event.listen(
                conn.sync_connection, "before_cursor_execute", lambda *a: seen.append(a[2])
            )
            for _ in range(READS):
                start = time.perf_counter()
                found = await snapshot(conn)
                times.append(time.perf_counter() - start)
        return first, min(times), len(seen) // READS, len(found.tables)
    finally:
        await engine.dispose()


async def drop() -> None:
    for backend in URLS:
        url = url_of(backend)
        await dialect_named(url.get_backend_name()).drop_database(url)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drop", action="store_true", help="drop the benchmark databases")
    if parser.parse_args().drop:
        await drop()
        return
    for backend in URLS:
        first, fastest, statements, tables = await measure(backend)
        print(
            f"{backend:10} {tables} tables: first read {first * 1000:5.0f} ms, then "
            f"{fastest * 1000:5.0f} ms (fastest of {READS}), {statements} statements"
        )


if __name__ == "__main__":
    asyncio.run(main())
