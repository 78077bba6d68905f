"""``drift``: name every difference between the live schema and what rung left behind.

Two baselines. 'stored' (the default): the snapshot the last ``upgrade`` or ``downgrade``
that changed something stored in rung's meta table (``store_snapshot``); comparing costs a
handful of catalog queries on the live database and writes nothing, so it is safe against
production. 'replay': the migrations recorded as applied, replayed on a scratch database;
it also finds drift older than the stored snapshot, and works where none was stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rung.errors import NoSnapshot, SchemaError
from rung.history import DEFAULT_TABLE, History
from rung.registry import Registry, migrations_of
from rung.runner import connect
from rung.schema import Difference, Snapshot, diff, snapshot
from rung.scratch import replay_history, scratch_database

SNAPSHOT_KEY = "snapshot"
logger = logging.getLogger("rung")


@dataclass(frozen=True)
class DriftReport:
    baseline: str  # 'stored' or 'replay'
    differences: tuple[Difference, ...]

    @property
    def has_drift(self) -> bool:
        return bool(self.differences)


async def drift(
    engine: AsyncEngine,
    migrator: Registry,
    *,
    replay: bool = False,
    scratch_url: str | None = None,
    exclude: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
) -> DriftReport:
    """Compare the live schema with the stored snapshot, or (``replay=True``) with the
    recorded history replayed on a scratch database. Tables matching ``exclude`` (fnmatch
    patterns) are left out on both sides. Never writes to the live database."""
    migrations = migrations_of(migrator)
    history = History(table)
    async with connect(engine) as conn:
        if not replay:
            stored = await stored_snapshot(conn, history)
            if stored is None:
                raise _no_snapshot(history)
            return DriftReport("stored", tuple(await _compare(conn, history, stored, exclude)))
        records = await history.read(conn)
        await conn.rollback()
        live = await _snapshot(conn, history, exclude)
    async with scratch_database(engine.url, scratch_url, purpose="drift") as scratch:
        await replay_history(scratch, migrations, records, table)
        async with scratch.connect() as scratch_conn:
            expected = await _snapshot(scratch_conn, history, exclude)
    return DriftReport("replay", tuple(diff(expected, live)))


async def store_snapshot(conn: AsyncConnection, history: History) -> None:
    """Store the schema ``conn`` sees as the baseline of ``drift``. The runner calls it in a
    write transaction at the end of a run that changed the schema. A schema that cannot be
    read now removes the stored snapshot, which no longer describes it, with a warning:
    the run itself succeeded."""
    try:
        found = await snapshot(conn, ignore_tables=(history.name, history.meta.name))
    except SchemaError as exc:
        logger.warning(
            "%s; the stored snapshot is removed, so until the next run changes the schema "
            "'rung drift' needs --replay",
            exc.message,
        )
        await history.set_meta(conn, SNAPSHOT_KEY, None)
        return
    await history.set_meta(conn, SNAPSHOT_KEY, found.to_json())


async def stored_snapshot(conn: AsyncConnection, history: History) -> Snapshot | None:
    """The stored snapshot, None when there is none. Only reads, in the caller's transaction."""
    if not await _has_meta(conn, history):
        return None
    text = await history.get_meta(conn, SNAPSHOT_KEY)
    if text is None:
        return None
    try:
        return Snapshot.from_json(text)
    except ValueError as exc:
        raise NoSnapshot(
            f"the schema snapshot stored in {history.meta.name!r} cannot be read ({exc}); run "
            "'rung drift --replay', or run an upgrade to store a new one"
        ) from exc


async def check_drift(
    conn: AsyncConnection, history: History, exclude: Sequence[str] = ()
) -> list[Difference]:
    """For ``upgrade --check-drift``: the live schema against the stored snapshot. Only
    reads, in the caller's transaction. A database rung never ran on has nothing to drift
    from (``[]``); one rung ran on without storing a snapshot raises ``NoSnapshot``."""
    if not await _has_meta(conn, history):
        return []
    stored = await stored_snapshot(conn, history)
    if stored is None:
        raise _no_snapshot(history)
    return await _compare(conn, history, stored, exclude)


async def _compare(
    conn: AsyncConnection, history: History, stored: Snapshot, exclude: Sequence[str]
) -> list[Difference]:
    return diff(stored.excluding(exclude), await _snapshot(conn, history, exclude))


async def _snapshot(conn: AsyncConnection, history: History, exclude: Sequence[str]) -> Snapshot:
    return await snapshot(conn, exclude=exclude, ignore_tables=(history.name, history.meta.name))


async def _has_meta(conn: AsyncConnection, history: History) -> bool:
    """Asked first, so that a missing table never fails (and so aborts) the transaction."""
    name = history.meta.name
    return bool(await conn.run_sync(lambda c: sa.inspect(c).has_table(name)))


def _no_snapshot(history: History) -> NoSnapshot:
    return NoSnapshot(
        f"no schema snapshot is stored in {history.meta.name!r} yet (rung stores one after "
        "each upgrade or downgrade that changes something); run 'rung drift --replay', or "
        "run an upgrade first"
    )
