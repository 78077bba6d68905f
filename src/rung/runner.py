"""Executing plans: the connection, the lock, transactions, the journal, timing and logging.

A run reads the history without a lock; when the planner finds nothing to do it returns
at once (what every app start pays: one query). Otherwise it takes the lock, and reads
the history again inside each batch's transaction before running it, so that of many
replicas starting together exactly one applies each migration.
"""

from __future__ import annotations

import dataclasses
import logging
import textwrap
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rung.dialects import Dialect, dialect_named, lock_id
from rung.errors import DatabaseUnreachable, HistoryError, MigrationFailed, RungError, UsageError
from rung.history import DEFAULT_TABLE, History
from rung.migration import Migration
from rung.plan import (
    Batch,
    Direction,
    MigrationState,
    Plan,
    Record,
    Repair,
    Request,
    Resolution,
    Statement,
    plan,
    plan_baseline,
    plan_repair,
    states,
)
from rung.registry import Registry, migrations_of

logger = logging.getLogger("rung")

DEFAULT_LOCK_TIMEOUT = 60.0
MAX_PARAMS_CHARS = 2_000


@dataclass(frozen=True)
class Executed:
    """One migration a run applied or reverted, with the statements it executed."""

    name: str
    direction: Direction
    duration_ms: float
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class Options:
    table: str = DEFAULT_TABLE
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    per_migration: bool = False
    out_of_order: bool = False
    store_snapshot: bool = True  # for drift; runs on a scratch database need none


class Journal:
    """Records the statements a migration executes on one connection: attached once per
    connection (adding and removing SQLAlchemy listeners for every migration cost more than
    a small migration's SQL), recording only inside ``recording()``."""

    _attached: ClassVar[weakref.WeakKeyDictionary[sa.Connection, Journal]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, conn: AsyncConnection) -> Journal:
        sync = conn.sync_connection
        assert sync is not None
        journal = cls._attached.get(sync)
        if journal is None:
            journal = cls._attached[sync] = cls()
            event.listen(sync, "before_cursor_execute", journal._before)
            event.listen(sync, "after_cursor_execute", journal._after)
        return journal

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        self.pending: str | None = None  # the statement being executed, until it completes
        self._started = 0.0
        self._on_statement: Callable[[list[Statement]], None] | None = None
        self._active = False

    @contextmanager
    def recording(
        self, on_statement: Callable[[list[Statement]], None] | None = None
    ) -> Iterator[Journal]:
        """Record from now on, afresh. ``on_statement`` is told what has completed when the
        next statement starts: a running migration's record is then exact while that
        statement runs, and a migration's last statement costs no update (its final record
        holds everything)."""
        self.statements, self.pending, self._on_statement = [], None, on_statement
        self._active = True
        try:
            yield self
        finally:
            self._active = False

    def _before(self, conn: Any, cursor: Any, sql: str, *rest: Any) -> None:
        if self._active:
            if self._on_statement is not None and self.statements:
                self._on_statement(self.statements)
            self.pending = sql
            self._started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
        if not self._active:
            return
        self.pending = None
        elapsed = (time.perf_counter() - self._started) * 1000
        shown = repr(params)[:MAX_PARAMS_CHARS] if params else None
        self.statements.append(Statement(textwrap.dedent(sql).strip(), shown, round(elapsed, 3)))


def masked(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


@asynccontextmanager
async def connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    try:
        conn = await engine.connect()
    except (sa.exc.DBAPIError, OSError) as exc:
        raise DatabaseUnreachable(
            f"cannot connect to {masked(engine.url)} ({_one_line(exc)}); "
            "check the URL and that the server is running"
        ) from None
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def _locked(conn: AsyncConnection, dialect: Dialect, options: Options) -> AsyncIterator[None]:
    key = lock_id(conn.engine.url, options.table)
    await dialect.lock(conn, key, options.lock_timeout)
    try:
        yield
    finally:
        try:
            await dialect.unlock(conn, key)
        except Exception as exc:  # never hide the error that came first
            logger.warning(
                "could not release rung's lock (%s); closing the connection frees it", exc
            )


@asynccontextmanager
async def _writing(conn: AsyncConnection, dialect: Dialect) -> AsyncIterator[None]:
    """A write transaction: committed at the end, rolled back on an error. A rollback that
    fails too (the server ended the connection) never hides the error that came first."""
    transaction = await conn.begin()
    try:
        await dialect.begin(conn)
        yield
    except BaseException:
        try:
            await transaction.rollback()
        except Exception as exc:
            logger.debug("rollback failed after the error below (%s)", _one_line(exc))
        raise
    await transaction.commit()


@asynccontextmanager
async def _bookkeeping(
    engine: AsyncEngine, history: History, lock_timeout: float
) -> AsyncIterator[AsyncConnection]:
    """A connection holding the lock, in a write transaction, with the history table there."""
    dialect = dialect_named(engine.dialect.name)
    options = Options(history.name, lock_timeout)
    async with (
        connect(engine) as conn,
        _locked(conn, dialect, options),
        _bookkeeping_errors(history),
        _writing(conn, dialect),
    ):
        await history.ensure(conn)
        yield conn


@asynccontextmanager
async def _bookkeeping_errors(history: History) -> AsyncIterator[None]:
    """Database errors outside a migration's own code happen while rung keeps its books."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise HistoryError(
            f"could not read or write the history table {history.name!r} ({_one_line(exc)}); "
            "check that this account may write there, then 'rung status' to see the state"
        ) from exc


async def run(
    engine: AsyncEngine, registry: Registry, request: Request, options: Options
) -> list[Executed]:
    """Apply or revert what ``request`` asks for; return what ran, in order."""
    migrations = migrations_of(registry)
    history = History(options.table)
    dialect = dialect_named(engine.dialect.name)
    async with connect(engine) as conn:
        records = await history.read(conn, journals=False)
        await conn.rollback()
        first = _plan(migrations, records, request, dialect, options, locked=False)
        for warning in first.warnings:
            logger.warning(warning)
        if not first.batches:
            return []
        async with _locked(conn, dialect, options), _bookkeeping_errors(history):
            return await _Run(conn, dialect, history, migrations, request, options).batches()


def _plan(
    migrations: Sequence[Migration],
    records: Sequence[Record],
    request: Request,
    dialect: Dialect,
    options: Options,
    *,
    locked: bool = True,
) -> Plan:
    return plan(
        migrations,
        records,
        request,
        transactional_ddl=dialect.transactional_ddl,
        per_migration=options.per_migration,
        locked=locked,
    )


class _Run:
    """One run under the lock: it plans and runs batch after batch on the connection that
    holds the lock, re-reading the history before each, and remembers what it did."""

    def __init__(
        self,
        conn: AsyncConnection,
        dialect: Dialect,
        history: History,
        migrations: Sequence[Migration],
        request: Request,
        options: Options,
    ) -> None:
        self.conn, self.dialect, self.history = conn, dialect, history
        self.migrations, self.request, self.options = migrations, request, options
        self.done: list[Executed] = []
        self._side: AsyncConnection | None = None  # journals non-atomic migrations as they go
        self._ensured = False

    async def batches(self) -> list[Executed]:
        """Run every batch; return what ran, in order."""
        try:
            while await self._next_batch():
                pass
        except BaseException as exc:
            # A failed run may still have changed the schema: migrations committed before
            # the failure, or statements a database without transactional DDL kept.
            kept = isinstance(exc, MigrationFailed) and bool(exc.committed)
            if (self.done or kept) and not self.conn.invalidated:
                try:
                    await self._store_snapshot()
                except Exception as late:  # never hide the error that came first
                    logger.warning("could not store the schema snapshot (%s)", _one_line(late))
            raise
        finally:
            if self._side is not None:
                await self._side.close()
        if self.done:
            await self._store_snapshot()
        return self.done

    async def _store_snapshot(self) -> None:
        """What 'rung drift' compares the live schema with."""
        if self.options.store_snapshot:
            async with _writing(self.conn, self.dialect):
                await store_snapshot(self.conn, self.history)

    async def _next_batch(self) -> bool:
        """Plan and run the next batch; False when there is none left."""
        steps = self.request.steps
        if steps is not None and len(self.done) >= steps:
            return False
        remaining = None if steps is None else steps - len(self.done)
        committed = len(self.done)  # a failure rolls back this batch's migrations, not those
        conn, history = self.conn, self.history
        try:
            async with _writing(conn, self.dialect):
                if not self._ensured:  # once a run: the run holds the lock
                    await history.ensure(conn)
                    self._ensured = True
                records = await history.read(conn, journals=False)
                request = dataclasses.replace(self.request, steps=remaining)
                planned = _plan(self.migrations, records, request, self.dialect, self.options)
                if not planned.batches:
                    return False
                batch = planned.batches[0]
                if batch.atomic:
                    for m in batch.migrations:
                        self.done.append(
                            await _execute(conn, history, m, batch.direction, new=True)
                        )
                    return True
                # Not atomic: leave a mark first, so an interrupted run is never mistaken
                # for one that did not start.
                m = batch.migrations[0]
                await history.mark(
                    conn,
                    m.name,
                    m.checksum,
                    state="running",
                    direction=batch.direction.value,
                    exists=any(r.name == m.name for r in records),
                )
        except _Failed as failed:
            del self.done[committed:]  # rolled back with their batch
            raise _failure(failed, rolled_back=True, done=self.done) from failed.cause
        self.done.append(await self._alone(batch))
        return True

    async def _alone(self, batch: Batch) -> Executed:
        """A migration the database cannot roll back: in its own transaction, or in none."""
        conn, dialect, history = self.conn, self.dialect, self.history
        migration = batch.migrations[0]
        if self._side is None:
            self._side = await conn.engine.connect()
            await self._side.execution_options(isolation_level="AUTOCOMMIT")
        side = self._side.sync_connection
        assert side is not None and conn.sync_connection is not None
        progress = [0]

        def journal_kept(statements: list[Statement]) -> None:
            """Keep the running mark's journal up to date with what the database has kept,
            on the side connection, so that even a killed process leaves a precise record."""
            kept = dialect.kept_after_failure(statements, batch.in_transaction)
            if len(kept) > progress[0]:
                progress[0] = len(kept)
                side.execute(history.journal_update(migration.name, kept))

        try:
            if batch.in_transaction:
                async with _writing(conn, dialect):
                    return await _execute(conn, history, migration, batch.direction, journal_kept)
            previous = conn.sync_connection.get_execution_options().get("isolation_level")
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                # History writes go through the same autocommit connection: one statement each.
                return await _execute(conn, history, migration, batch.direction, journal_kept)
            finally:
                await conn.commit()  # ends SQLAlchemy's logical transaction
                await conn.execution_options(
                    isolation_level=previous or conn.default_isolation_level
                )
        except _Failed as failed:
            kept = dialect.kept_after_failure(
                failed.statements, batch.in_transaction, failed.failing
            )
            try:
                await _record_failure(conn, dialect, history, failed, kept)
            except Exception as exc:
                logger.error(
                    "could not record the failure of %s (%s); it stays marked as running",
                    migration.name,
                    _one_line(exc),
                )
            raise _failure(failed, rolled_back=False, done=self.done, kept=kept) from failed.cause


class _Failed(Exception):
    def __init__(
        self,
        migration: Migration,
        direction: Direction,
        cause: BaseException,
        statements: list[Statement],
        duration_ms: float,
        failing: str | None = None,
    ) -> None:
        super().__init__(migration.name)
        self.migration = migration
        self.direction = direction
        self.cause = cause
        self.statements = statements  # those that completed
        self.duration_ms = duration_ms
        self.failing = failing  # the statement the database refused, if that was the failure


async def _execute(
    conn: AsyncConnection,
    history: History,
    migration: Migration,
    direction: Direction,
    on_statement: Callable[[list[Statement]], None] | None = None,
    *,
    new: bool = False,
) -> Executed:
    """Run one migration's code on ``conn`` and record the result, in the current transaction.
    ``new``: the history has no row of it yet (no running mark), so recording is an insert."""
    verb = "applying" if direction is Direction.UP else "reverting"
    logger.info(
        "%s %s",
        verb,
        migration.name,
        extra={
            "rung_event": "start",
            "rung_name": migration.name,
            "rung_direction": direction.value,
        },
    )
    fn = migration.up if direction is Direction.UP else migration.down
    assert fn is not None  # the planner refuses irreversible downgrades
    started = time.perf_counter()
    with Journal.of(conn).recording(on_statement) as journal:
        try:
            await fn(conn)
        except Exception as exc:
            elapsed = (time.perf_counter() - started) * 1000
            failing = journal.pending if isinstance(exc, sa.exc.DBAPIError) else None
            raise _Failed(migration, direction, exc, journal.statements, elapsed, failing) from exc
    elapsed = (time.perf_counter() - started) * 1000
    if direction is Direction.UP:
        await history.write(
            conn,
            migration.name,
            migration.checksum,
            state="applied",
            duration_ms=elapsed,
            statements=journal.statements,
            new=new,
        )
    else:
        await history.remove(conn, migration.name)
    logger.info(
        "%s %s ok (%.0f ms)",
        verb,
        migration.name,
        elapsed,
        extra={
            "rung_event": "done",
            "rung_name": migration.name,
            "rung_direction": direction.value,
            "rung_ms": elapsed,
        },
    )
    return Executed(migration.name, direction, round(elapsed, 3), tuple(journal.statements))


async def _record_failure(
    conn: AsyncConnection,
    dialect: Dialect,
    history: History,
    failed: _Failed,
    kept: Sequence[Statement],
) -> None:
    """Replace the running mark: failed with what the database kept, or, when it kept
    nothing, the state from before the attempt. A lost connection gets a fresh one."""
    if conn.in_transaction() and not conn.invalidated:
        await conn.rollback()
    fresh = await conn.engine.connect() if conn.invalidated else None
    target = fresh or conn
    m = failed.migration
    try:
        async with _writing(target, dialect):
            if kept:
                await history.write(
                    target,
                    m.name,
                    m.checksum,
                    state="failed",
                    direction=failed.direction.value,
                    duration_ms=failed.duration_ms,
                    error=_one_line(failed.cause),
                    statements=kept,
                )
            elif failed.direction is Direction.UP:
                await history.remove(target, m.name)
            else:
                await history.mark(target, m.name, m.checksum, state="applied", direction="up")
    finally:
        if fresh is not None:
            await fresh.close()


def _failure(
    failed: _Failed, *, rolled_back: bool, done: Sequence[Executed], kept: Sequence[Statement] = ()
) -> MigrationFailed:
    name, direction = failed.migration.name, failed.direction.value
    cause = failed.cause.message if isinstance(failed.cause, RungError) else _one_line(failed.cause)
    earlier = [e.name for e in done]
    if rolled_back:
        outcome = "rolled back: the database holds nothing of it"
        if earlier:
            outcome += f"; committed before it in this run: {', '.join(earlier)}"
        hint = "fix the migration and run again"
    elif not kept:
        before = "pending" if direction == "up" else "applied"
        outcome = f"the database kept none of its statements, so it stays {before}"
        hint = "fix the migration and run again"
    else:
        statements = "; ".join(s.sql.splitlines()[0][:120] for s in kept)
        outcome = (
            f"the database kept {len(kept)} statement(s) it had run before the failure: "
            f"{statements}"
        )
        hint = (
            f"undo or finish those by hand, then 'rung repair {name} --applied' or '--not-applied'"
        )
    return MigrationFailed(
        f"migration {name} failed ({direction}): {cause}; {outcome}; {hint}",
        name=name,
        direction=direction,
        cause=failed.cause,
        committed=[s.sql for s in kept],
    )


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(orig if orig is not None else exc).__name__}: {first}"[:500]


async def store_snapshot(conn: AsyncConnection, history: History) -> None:
    from rung.drifting import store_snapshot as store  # drift builds on the runner

    await store(conn, history)


async def upgrade(
    engine: AsyncEngine,
    migrator: Registry,
    *,
    steps: int | None = None,
    to: str | None = None,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    per_migration: bool = False,
    out_of_order: bool = False,
) -> list[Executed]:
    """Apply pending migrations in registry order (all, ``steps`` of them, or up to and
    including ``to``); return what was applied. Nothing pending: ``[]``."""
    options = Options(table, lock_timeout, per_migration, out_of_order)
    return await run(engine, migrator, Request(Direction.UP, steps, to, out_of_order), options)


async def downgrade(
    engine: AsyncEngine,
    migrator: Registry,
    *,
    steps: int | None = None,
    to: str | None = None,
    all: bool = False,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    per_migration: bool = False,
) -> list[Executed]:
    """Revert applied migrations, newest first: one by default, ``steps`` of them, those
    after ``to`` (which stays applied), or every one with ``all=True``."""
    if sum((steps is not None, to is not None, all)) > 1:
        raise UsageError("give one of steps, to and all to downgrade, not several")
    if steps is None and to is None and not all:
        steps = 1
    options = Options(table, lock_timeout, per_migration)
    return await run(engine, migrator, Request(Direction.DOWN, steps, to), options)


async def status(
    engine: AsyncEngine, migrator: Registry, *, table: str = DEFAULT_TABLE
) -> list[MigrationState]:
    """Every migration's state; never writes, so it works for a read-only user."""
    migrations = migrations_of(migrator)
    async with connect(engine) as conn:
        records = await History(table).read(conn)
        await conn.rollback()
    return states(migrations, records)


async def repair(
    engine: AsyncEngine,
    migrator: Registry,
    name: str | None = None,
    *,
    applied: bool | None = None,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[Repair]:
    """Accept changed checksums (all, or ``name``'s), or mark ``name`` as applied
    (``applied=True``) or not applied (``applied=False``); return what changed."""
    migrations = migrations_of(migrator)
    history = History(table)
    async with _bookkeeping(engine, history, lock_timeout) as conn:
        repairs = plan_repair(migrations, await history.read(conn, journals=False), name, applied)
        for r in repairs:
            if r.resolution is Resolution.MARK_NOT_APPLIED:
                await history.remove(conn, r.name)
            else:
                assert r.checksum is not None
                await history.accept(conn, r.name, r.checksum)
            logger.info("%s: %s", r.name, r.resolution.value)
    return repairs


async def baseline(
    engine: AsyncEngine,
    migrator: Registry,
    *,
    to: str | None = None,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> list[str]:
    """Record pending migrations (up to and including ``to``) as applied without running
    them, for a database whose schema they already describe. Returns their names."""
    migrations = migrations_of(migrator)
    history = History(table)
    async with _bookkeeping(engine, history, lock_timeout) as conn:
        chosen = plan_baseline(migrations, await history.read(conn, journals=False), to)
        for m in chosen:
            await history.write(conn, m.name, m.checksum, state="applied")
        if chosen:
            await store_snapshot(conn, history)
    return [m.name for m in chosen]
