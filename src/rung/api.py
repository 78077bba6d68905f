"""The public API: each function loads the registry, asks the planner, runs, and stores
the schema snapshot that ``drift`` compares with. Every error it raises is a ``RungError``.

Options are the same keywords everywhere: ``table`` (the tracking table, default
``rung_migrations``), ``lock_timeout`` (seconds to wait for another run's lock, default 60),
``lock_lease`` (seconds a dead holder can keep others waiting, default 30) and
``per_migration`` (commit each migration on its own).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rung import drifting, dryrun, lock, verifying
from rung.connection import check_engine, connect
from rung.dialects import dialect_named
from rung.errors import RungError, UsageError
from rung.failures import one_line
from rung.history import DEFAULT_TABLE, History
from rung.lock import DEFAULT_LEASE, Holder
from rung.plan import (
    Direction,
    MigrationState,
    Repair,
    Request,
    Resolution,
    plan_baseline,
    plan_repair,
    states,
)
from rung.registry import Migrations, migrations_of
from rung.runner import (
    DEFAULT_LOCK_TIMEOUT,
    Executed,
    Settings,
    bookkeeping,
    database_errors,
    run,
)

logger = logging.getLogger("rung")


async def upgrade(
    engine: AsyncEngine,
    migrator: Migrations,
    *,
    steps: int | None = None,
    to: str | None = None,
    out_of_order: bool = False,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_lease: float = DEFAULT_LEASE,
    per_migration: bool = False,
    snapshot: bool = True,
) -> list[Executed]:
    """Apply pending migrations in registry order (all, ``steps`` of them, or up to and
    including ``to``); return what was applied. Nothing pending: ``[]``. ``snapshot=False``
    stores no schema snapshot for ``drift`` (a fleet of schemas: it would see them all)."""
    if steps is not None and to is not None:
        raise UsageError("give one of steps and to to upgrade, not both")
    settings = Settings(table, lock_timeout, lock_lease, per_migration)
    request = Request(Direction.UP, steps, to, out_of_order)
    epilogue = _store_snapshot if snapshot else None
    async with _public(engine):
        return await run(engine, migrations_of(migrator), request, settings, epilogue)


async def downgrade(
    engine: AsyncEngine,
    migrator: Migrations,
    *,
    steps: int | None = None,
    to: str | None = None,
    all: bool = False,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_lease: float = DEFAULT_LEASE,
    per_migration: bool = False,
    snapshot: bool = True,
) -> list[Executed]:
    """Revert applied migrations, newest first: one by default, ``steps`` of them, those
    after ``to`` (which stays applied), or every one with ``all=True``. ``snapshot``: as
    ``upgrade``'s."""
    if sum((steps is not None, to is not None, all)) > 1:
        raise UsageError("give one of steps, to and all to downgrade, not several")
    if steps is None and to is None and not all:
        steps = 1
    settings = Settings(table, lock_timeout, lock_lease, per_migration)
    request = Request(Direction.DOWN, steps, to)
    epilogue = _store_snapshot if snapshot else None
    async with _public(engine):
        return await run(engine, migrations_of(migrator), request, settings, epilogue)


async def status(
    engine: AsyncEngine, migrator: Migrations, *, table: str = DEFAULT_TABLE
) -> list[MigrationState]:
    """Every migration's state; never writes, so it works for a read-only user and on a
    read replica."""
    migrations = migrations_of(migrator)
    async with _public(engine), _reading(engine, table) as (conn, history):
        records = await history.read(conn)
    return states(migrations, records)


async def lock_holder(engine: AsyncEngine, *, table: str = DEFAULT_TABLE) -> Holder | None:
    """Who holds rung's lock on this database and since when; None when it is free."""
    async with _public(engine), _reading(engine, table) as (conn, history):
        return await lock.holder(conn, history)


async def unlock(engine: AsyncEngine, *, table: str = DEFAULT_TABLE) -> Holder | None:
    """Free the lock of a holder that is provably gone (its lease expired, or it was a
    process of this host that no longer exists); raises ``LockHeld`` while it may be
    alive. Returns the holder it freed, None when the lock was free."""
    async with _public(engine), _reading(engine, table) as (conn, history):
        return await lock.clear(conn, history)


async def repair(
    engine: AsyncEngine,
    migrator: Migrations,
    name: str | None = None,
    *,
    applied: bool | None = None,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_lease: float = DEFAULT_LEASE,
) -> list[Repair]:
    """Accept changed checksums (all, or ``name``'s), or mark ``name`` as applied
    (``applied=True``) or not applied (``applied=False``); return what changed. A repair
    that changes what is applied makes the stored snapshot stale: ``drift`` says so."""
    migrations = migrations_of(migrator)
    settings = Settings(table, lock_timeout, lock_lease)
    async with _public(engine), _reading(engine, table) as (conn, history):
        # Refused before the lock, so that a refusal leaves everything as it was.
        plan_repair(migrations, await history.read(conn, journals=False), name, applied)
    async with _public(engine), bookkeeping(engine, settings) as books:
        conn, history = books.conn, books.history
        async with books.writing():
            records = await history.read(conn, journals=False)
            recorded = {r.name for r in records}
            repairs = plan_repair(migrations, records, name, applied)
            for r in repairs:
                if r.resolution is Resolution.MARK_NOT_APPLIED:
                    await history.remove(conn, r.name)
                elif r.name in recorded:  # keeps its timing and journal
                    fields = {"checksum": r.checksum, "state": "applied", "direction": "up"}
                    await history.update(conn, r.name, **fields)
                else:
                    assert r.checksum is not None
                    await history.insert(conn, r.name, r.checksum, state="applied")
                logger.info("%s: %s", r.name, r.resolution.value)
            changed = [r for r in repairs if r.resolution is not Resolution.ACCEPT_CHECKSUM]
            if changed:
                how = (
                    "applied" if changed[0].resolution is Resolution.MARK_APPLIED else "not applied"
                )
                await history.set_stale(conn, f"'rung repair {changed[0].name}' marked it {how}")
    return repairs


async def baseline(
    engine: AsyncEngine,
    migrator: Migrations,
    *,
    to: str | None = None,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_lease: float = DEFAULT_LEASE,
) -> list[str]:
    """Record pending migrations (up to and including ``to``) as applied without running
    them, for a database whose schema they already describe. Returns their names."""
    migrations = migrations_of(migrator)
    settings = Settings(table, lock_timeout, lock_lease)
    async with _public(engine), _reading(engine, table) as (conn, history):
        # Refused before the lock, so that a refusal leaves everything as it was.
        if not plan_baseline(migrations, await history.read(conn, journals=False), to):
            return []
    async with _public(engine), bookkeeping(engine, settings) as books:
        conn, history = books.conn, books.history
        async with books.writing():
            chosen = plan_baseline(migrations, await history.read(conn, journals=False), to)
            for m in chosen:
                await history.insert(conn, m.name, m.checksum, state="applied")
            if chosen:
                await _store_snapshot(conn, history)
    return [m.name for m in chosen]


async def fresh(
    engine: AsyncEngine,
    migrator: Migrations,
    *,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_lease: float = DEFAULT_LEASE,
    per_migration: bool = False,
) -> tuple[list[str], list[Executed]]:
    """Drop everything in the database (rung's own tables too), then apply every
    migration: for a database you can throw away. Returns what was dropped, as
    ``"<kind> <name>"``, and what was applied."""
    migrations = migrations_of(migrator)
    async with _public(engine):
        dialect = dialect_named(engine.dialect.name)
        history = History(table, dialect)
        async with connect(engine) as conn, database_errors(engine, history), conn.begin():
            dropped: list[str] = await conn.run_sync(dialect.drop_everything)
    applied = await upgrade(
        engine,
        migrations,
        table=table,
        lock_timeout=lock_timeout,
        lock_lease=lock_lease,
        per_migration=per_migration,
    )
    return dropped, applied


async def dry_run(
    engine: AsyncEngine,
    migrator: Migrations,
    direction: str = "up",
    *,
    steps: int | None = None,
    to: str | None = None,
    out_of_order: bool = False,
    table: str = DEFAULT_TABLE,
    scratch_url: str | None = None,
) -> list[Executed]:
    """What ``upgrade`` (or ``downgrade`` with ``direction="down"``) would execute, run for
    real on a scratch database brought to this database's recorded state; the database
    itself is only read. Nothing to do: ``[]``."""
    if direction not in ("up", "down"):
        raise UsageError(f"dry_run's direction is 'up' or 'down', not {direction!r}")
    request = Request(Direction(direction), steps, to, out_of_order)
    async with _public(engine):
        return await dryrun.dry_run(
            engine, migrations_of(migrator), request, table=table, scratch_url=scratch_url
        )


async def verify(
    engine: AsyncEngine,
    migrator: Migrations,
    *,
    scratch_url: str | None = None,
    start_after: str | None = None,
    fail_fast: bool = False,
    table: str = DEFAULT_TABLE,
) -> verifying.VerifyReport:
    """Prove on a scratch database that every ``down`` exactly reverses its ``up``."""
    async with _public(engine):
        return await verifying.verify(
            engine,
            migrations_of(migrator),
            scratch_url=scratch_url,
            start_after=start_after,
            fail_fast=fail_fast,
            table=table,
        )


async def drift(
    engine: AsyncEngine,
    migrator: Migrations,
    *,
    replay: bool = False,
    scratch_url: str | None = None,
    exclude: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
) -> drifting.DriftReport:
    """Name every difference between the live schema and the stored snapshot (or, with
    ``replay=True``, the recorded history replayed on a scratch database)."""
    async with _public(engine):
        return await drifting.drift(
            engine,
            migrations_of(migrator),
            replay=replay,
            scratch_url=scratch_url,
            exclude=exclude,
            table=table,
        )


async def _store_snapshot(conn: AsyncConnection, history: History) -> None:
    """The epilogue of a run that changed the schema: what ``drift`` compares with."""
    warning = await history.store_snapshot(conn)
    if warning:
        logger.warning(warning)


@asynccontextmanager
async def _reading(
    engine: AsyncEngine, table: str
) -> AsyncIterator[tuple[AsyncConnection, History]]:
    history = History(table, dialect_named(engine.dialect.name))
    async with connect(engine) as conn, database_errors(engine, history):
        yield conn, history
        await conn.rollback()


@asynccontextmanager
async def _public(engine: object) -> AsyncIterator[None]:
    """Every error out of the public API is a ``RungError``: a wrong engine is named, and
    database errors that escaped a narrower net are turned into one."""
    check_engine(engine)
    try:
        yield
    except RungError:
        raise
    except sa.exc.DBAPIError as exc:
        raise RungError(
            f"the database refused what rung asked ({one_line(exc)}); run with -v for the "
            "traceback, and 'rung status' for the state"
        ) from exc
