"""``drift``: name every difference between the live schema and what rung left behind.

Two baselines. 'stored' (the default): the snapshot the last ``upgrade`` or ``downgrade``
that changed something stored in rung's meta table; comparing costs a handful of catalog
queries on the live database and writes nothing, so it is safe against production.
'replay': the migrations recorded as applied, replayed on a scratch database; it also finds
drift older than the stored snapshot, and works where none was stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rung.connection import connect
from rung.dialects import dialect_named
from rung.errors import NoSnapshot
from rung.history import History
from rung.migration import Migration
from rung.runner import database_errors
from rung.schema import Difference, diff
from rung.scratch import replay_history, scratch_database


@dataclass(frozen=True)
class DriftReport:
    baseline: str  # 'stored' or 'replay'
    differences: tuple[Difference, ...]

    @property
    def has_drift(self) -> bool:
        return bool(self.differences)


async def drift(
    engine: AsyncEngine,
    migrations: Sequence[Migration],
    *,
    replay: bool = False,
    scratch_url: str | None = None,
    exclude: Sequence[str] = (),
    table: str,
) -> DriftReport:
    """Compare the live schema with the stored snapshot, or (``replay=True``) with the
    recorded history replayed on a scratch database. Tables matching ``exclude`` (fnmatch
    patterns) are left out on both sides. Never writes to the live database."""
    history = History(table, dialect_named(engine.dialect.name))
    async with connect(engine) as conn, database_errors(engine, history):
        if not replay:
            stored = await history.stored_snapshot(conn)
            if stored is None:
                raise _no_snapshot(history)
            live = await history.read_schema(conn, exclude)
            return DriftReport("stored", tuple(diff(stored.excluding(exclude), live)))
        records = await history.read(conn)
        await conn.rollback()
        live = await history.read_schema(conn, exclude)
    async with scratch_database(engine.url, scratch_url, purpose="drift") as scratch:
        await replay_history(scratch, migrations, records, table)
        async with scratch.connect() as scratch_conn:
            expected = await history.read_schema(scratch_conn, exclude)
    return DriftReport("replay", tuple(diff(expected, live)))


async def check_drift(
    conn: AsyncConnection, history: History, exclude: Sequence[str] = ()
) -> list[Difference]:
    """For ``upgrade --check-drift``: the live schema against the stored snapshot. Only
    reads. A database rung never ran on has nothing to drift from (``[]``); one rung ran
    on without storing a snapshot raises ``NoSnapshot``."""
    if await history.get_meta(conn, "format") is None:
        return []
    stored = await history.stored_snapshot(conn)
    if stored is None:
        raise _no_snapshot(history)
    return diff(stored.excluding(exclude), await history.read_schema(conn, exclude))


def _no_snapshot(history: History) -> NoSnapshot:
    return NoSnapshot(
        f"no schema snapshot is stored in {history.meta.name!r} yet (rung stores one after "
        "each upgrade or downgrade that changes something); run 'rung drift --replay', or "
        "run an upgrade first"
    )
