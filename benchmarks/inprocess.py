"""In-process no-op upgrade: ``rung.upgrade`` on an engine that is already connected.

    python benchmarks/inprocess.py URL PROJECT_DIR REPS

The database must hold the project's migrations, all applied. Prints one JSON object:
the median time of a no-op ``upgrade`` (after a first call, reported on its own: it is the
one that reads the migration files for their checksums), the median time of one
``SELECT`` of the history table on the same engine (with and without the pool checkout),
and what one steady no-op upgrade did: the statements SQLAlchemy executed, the
transaction events, the requests the process wrote to the database socket, and the files
it opened or stat-ed (those of the migrations counted apart). The counters patch
``open``, ``io.open``, ``os.stat`` and the asyncio socket transport's ``write`` in this
process only.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import os
import statistics
import sys
import time
from asyncio import selector_events
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Counters:
    """Counts what the code under ``watching()`` does to files and the database socket."""

    def __init__(self, project: str) -> None:
        self.project = os.path.realpath(project)
        self.counts: Counter[str] = Counter()
        self.statements: list[str] = []
        self.active = False

    def _file(self, kind: str, path: Any) -> None:
        if not self.active:
            return
        try:
            where = os.path.realpath(os.fspath(path))
        except TypeError:  # a file descriptor
            where = ""
        inside = where.startswith(self.project + os.sep)
        self.counts[f"{kind} (migration files)" if inside else f"{kind} (other)"] += 1

    @contextmanager
    def watching(self) -> Iterator[None]:
        real_open, real_io_open, real_stat = builtins.open, io.open, os.stat
        transport = selector_events._SelectorSocketTransport
        real_write = transport.write

        def counted_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            self._file("open", file)
            return real_open(file, *args, **kwargs)

        def counted_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
            self._file("stat", path)
            return real_stat(path, *args, **kwargs)

        def counted_write(this: Any, data: Any) -> None:
            if self.active:
                self.counts["socket writes"] += 1
            real_write(this, data)

        builtins.open = io.open = counted_open  # type: ignore[assignment]
        os.stat = counted_stat  # type: ignore[assignment]
        transport.write = counted_write  # type: ignore[method-assign]
        self.counts.clear()
        self.statements.clear()
        self.active = True
        try:
            yield
        finally:
            self.active = False
            builtins.open, io.open, os.stat = real_open, real_io_open, real_stat
            transport.write = real_write  # type: ignore[method-assign]

    def listen(self, engine: Any) -> None:
        from sqlalchemy import event

        def on_statement(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if self.active:
                self.counts["statements"] += 1
                self.statements.append(" ".join(statement.split())[:100])

        def on_transaction(kind: str) -> Callable[..., None]:
            def handler(*args: Any) -> None:
                if self.active:
                    self.counts[f"transaction: {kind}"] += 1
                    self.statements.append(kind.upper())

            return handler

        event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
        for kind in ("begin", "commit", "rollback"):
            event.listen(engine.sync_engine, kind, on_transaction(kind))
        event.listen(engine.sync_engine.pool, "reset", on_transaction("pool reset"))


async def main(url: str, project: str, reps: int) -> dict[str, Any]:
    sys.path.insert(0, project)
    import sqlalchemy as sa
    from ladder.lib import Migrator
    from sqlalchemy.ext.asyncio import create_async_engine

    import rung

    engine = create_async_engine(url)
    counters = Counters(project)
    counters.listen(engine)
    history = sa.text("SELECT * FROM rung_migrations")
    try:
        async with engine.connect() as conn:  # the engine is connected: the pool holds one
            n = len((await conn.execute(history)).all())

        with counters.watching():
            started = time.perf_counter()
            done = await rung.upgrade(engine, Migrator)
            first_ms = (time.perf_counter() - started) * 1000
        first_counts = dict(counters.counts)
        assert done == [], f"expected a no-op, applied {len(done)}"

        upgrade_ms = []
        for _ in range(reps):
            with counters.watching():
                started = time.perf_counter()
                done = await rung.upgrade(engine, Migrator)
                upgrade_ms.append((time.perf_counter() - started) * 1000)
            assert done == []
        steady_counts, steady_statements = dict(counters.counts), list(counters.statements)

        select_ms, select_conn_ms = [], []
        for _ in range(reps):
            started = time.perf_counter()
            async with engine.connect() as conn:
                rows = (await conn.execute(history)).all()
            select_ms.append((time.perf_counter() - started) * 1000)
        async with engine.connect() as conn:
            for _ in range(reps):
                started = time.perf_counter()
                rows = (await conn.execute(history)).all()
                select_conn_ms.append((time.perf_counter() - started) * 1000)
        assert len(rows) == n
    finally:
        await engine.dispose()
    return {
        "applied": n,
        "reps": reps,
        "first_upgrade_ms": round(first_ms, 3),
        "first_counts": first_counts,
        "upgrade_ms": round(statistics.median(upgrade_ms), 3),
        "select_with_checkout_ms": round(statistics.median(select_ms), 3),
        "select_on_connection_ms": round(statistics.median(select_conn_ms), 3),
        "counts": steady_counts,
        "statements": steady_statements,
    }


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
