"""Schema coverage per database: of the kinds of objects in issue 11's list that exist on a
database, how many does a snapshot see change? One case per kind, from tests/test_coverage.py.

For each backend: a new database, every case's base made, one snapshot; then each case in
turn: its change, a snapshot and its diff against the base one (what drift and verify
compare), then its undo. A kind counts as seen when the diff is not empty. Runs against
whichever ``rung`` is importable, so the same script measures an older checkout too:

    python benchmarks/schema_coverage.py                       # this checkout
    PYTHONPATH=/path/to/old/src python benchmarks/schema_coverage.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_coverage import CASES

from rung.dialects import dialect_named
from rung.schema import Snapshot, diff

SERVERS = {
    "postgresql": os.environ.get(
        "RUNG_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get("RUNG_BENCH_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/"),
}


async def snapshot(conn: AsyncConnection) -> Snapshot:
    """The schema as rung's reader for ``conn``'s database sees it."""
    return await conn.run_sync(dialect_named(conn.dialect.name).read_schema)


async def run(engine: AsyncEngine, statements: list[str]) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))


async def read(engine: AsyncEngine) -> object:
    async with engine.connect() as conn:
        return await snapshot(conn)


async def measure(backend: str) -> list[tuple[str, bool, str]]:
    if backend == "sqlite":
        url = sa.make_url(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/coverage.db")
    else:
        url = sa.make_url(SERVERS[backend]).set(database=f"rung_cov_{secrets.token_hex(4)}")
    dialect = dialect_named(url.get_backend_name())
    await dialect.create_database(url)
    engine = create_async_engine(url)
    try:
        await run(engine, [s for c in CASES[backend] for s in c.base])
        base = await read(engine)
        found = []
        for case in CASES[backend]:
            await run(engine, list(case.change))
            lines = [str(d) for d in diff(base, await read(engine))]  # type: ignore[arg-type]
            await run(engine, list(case.undo))
            found.append((case.kind, bool(lines), "; ".join(lines)))
        return found
    finally:
        await engine.dispose()
        await dialect.drop_database(url)


async def main() -> None:
    for backend in CASES:
        found = await measure(backend)
        seen = sum(1 for _, ok, _ in found if ok)
        print(f"## {backend}: {seen}/{len(found)} kinds seen ({100 * seen // len(found)}%)")
        for kind, ok, lines in found:
            print(f"{'seen  ' if ok else 'MISSED'} {kind}: {lines}")
        print()


if __name__ == "__main__":
    asyncio.run(main())
