"""What rung's lock costs: round trips and time of a no-op ``upgrade`` (nothing pending: no
lock is taken at all) and of an ``upgrade`` that applies one migration (the lock taken and
freed), over a history of N applied migrations, on each database.

Round trips are counted from SQLAlchemy's events: statements sent, plus commits and
rollbacks (each a round trip of its own), plus connections opened. Run it on two trees to
compare them (the results section of RESULTS.md has before and after):

    python benchmarks/lock_cost.py                       # this tree's rung
    PYTHONPATH=/path/to/other/src python benchmarks/lock_cost.py

It imports ``rung`` from wherever Python finds it first, so PYTHONPATH picks the tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import rung

SERVERS = {
    "postgresql": os.environ.get(
        "RUNG_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get("RUNG_BENCH_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/"),
}


def ladder(folder: Path, n: int) -> list[rung.Migration]:
    """``n`` migrations in a fresh package, each creating one table."""
    package = f"lockcost_{uuid.uuid4().hex[:8]}"
    (folder / package).mkdir()
    (folder / package / "__init__.py").write_text("")
    sys.path.insert(0, str(folder))
    names = []
    for i in range(1, n + 1):
        name = f"m20260101_{i:06d}_t{i}"
        body = f"""
            from sqlalchemy import text

            async def up(conn):
                await conn.execute(text("CREATE TABLE t{i} (id INTEGER PRIMARY KEY)"))

            async def down(conn):
                await conn.execute(text("DROP TABLE t{i}"))
            """
        (folder / package / f"{name}.py").write_text(textwrap.dedent(body))
        names.append(name)
    import importlib

    return [rung.Migration.from_module(importlib.import_module(f"{package}.{n}")) for n in names]


class RoundTrips:
    """Counts what an engine sends: statements, commits, rollbacks, new connections."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.counts: Counter[str] = Counter()
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", lambda *a: self.counts.update(["statement"]))
        event.listen(sync, "commit", lambda *a: self.counts.update(["commit"]))
        event.listen(sync, "rollback", lambda *a: self.counts.update(["rollback"]))
        event.listen(sync.pool, "connect", lambda *a: self.counts.update(["connect"]))

    def take(self) -> dict[str, int]:
        found = dict(self.counts)
        self.counts.clear()
        return found


async def measure(url: str, migrations: list[rung.Migration], repeats: int) -> dict[str, Any]:
    engine = create_async_engine(url)
    trips = RoundTrips(engine)
    try:
        await rung.upgrade(engine, migrations[:-1])
        trips.take()
        noop_times, one_times = [], []
        noop_trips: dict[str, int] = {}
        one_trips: dict[str, int] = {}
        for _ in range(repeats):
            started = time.perf_counter()
            assert await rung.upgrade(engine, migrations[:-1]) == []
            noop_times.append(time.perf_counter() - started)
            noop_trips = trips.take()
            started = time.perf_counter()
            assert len(await rung.upgrade(engine, migrations)) == 1
            one_times.append(time.perf_counter() - started)
            one_trips = trips.take()
            await rung.downgrade(engine, migrations)
            trips.take()
        return {
            "noop": {"round_trips": noop_trips, "ms": statistics.median(noop_times) * 1000},
            "apply_one": {"round_trips": one_trips, "ms": statistics.median(one_times) * 1000},
        }
    finally:
        await engine.dispose()


async def on_server(base: str, migrations: list[rung.Migration], repeats: int) -> dict[str, Any]:
    name = f"rung_lockcost_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    url = sa.make_url(base).set(database=name)
    quote = '"' if url.get_backend_name() == "postgresql" else "`"
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
        return await measure(url.render_as_string(hide_password=False), migrations, repeats)
    finally:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        await admin.dispose()


async def main(n: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        migrations = ladder(Path(folder), n + 1)
        results = {
            "sqlite": await measure(
                f"sqlite+aiosqlite:///{Path(folder) / 'lockcost.db'}", migrations, repeats
            )
        }
        for backend, base in SERVERS.items():
            results[backend] = await on_server(base, migrations, repeats)
    return {"rung": rung.__version__, "n": n, "repeats": repeats, "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="applied migrations (default 100)")
    parser.add_argument("--repeats", type=int, default=7, help="runs per cell (default 7)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.n, args.repeats)), indent=2))
