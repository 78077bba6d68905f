"""Executing a plan: the lock, transactions, history records, timing and logging.

``run`` reads the history without the lock; when the planner finds nothing to do it returns
at once (what every app start pays: one query). Otherwise it checks that the server can be
written, takes the lease (``rung.lock``), and plans again before each batch, inside that
batch's transaction, so that of many replicas starting together exactly one applies each
migration. A migration the database cannot roll back is marked ``running`` first and its
record finished in one statement, so a kill at any instant leaves a record that says what
happened. The runner knows no safety net: the API hands it an ``epilogue`` to run under
the lock after a run that changed the schema.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rung.connection import connect, pooler_error, shown
from rung.dialects import dialect_named
from rung.dialects.base import Dialect
from rung.errors import ConnectionLost, HistoryError, MigrationFailed, NotWritable
from rung.failures import Failed, failure, in_flight_kept, is_lost, one_line
from rung.history import DEFAULT_TABLE, History
from rung.journal import Before, Journal
from rung.lock import ATTEMPTS, DEFAULT_LEASE, Lease
from rung.migration import Migration, Statement
from rung.plan import Batch, Direction, Plan, Record, Request, plan

logger = logging.getLogger("rung")

DEFAULT_LOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    """How a run writes: its tracking table, and how long it waits for and holds the lock."""

    table: str = DEFAULT_TABLE
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    lock_lease: float = DEFAULT_LEASE
    per_migration: bool = False


@dataclass(frozen=True)
class Executed:
    """One migration a run applied or reverted, with the statements it executed."""

    name: str
    direction: Direction
    duration_ms: float
    statements: tuple[Statement, ...]


Epilogue = Callable[[AsyncConnection, History], Awaitable[None]]


class Books:
    """A connection holding the lock, for writes to rung's own tables."""

    def __init__(self, conn: AsyncConnection, history: History, lease: Lease) -> None:
        self.conn, self.history, self.lease = conn, history, lease

    @asynccontextmanager
    async def writing(self, conn: AsyncConnection | None = None) -> AsyncIterator[None]:
        """A write transaction on ``conn`` (the run's, by default): the lease is checked and
        renewed just before it commits, and a rollback that fails too (the server ended
        the connection) never hides the error that came first."""
        conn = conn or self.conn
        transaction = await conn.begin()
        try:
            await self.history.dialect.begin(conn)
            yield
            await self.lease.fence(conn)
        except BaseException:
            try:
                await transaction.rollback()
            except Exception as exc:
                logger.debug("rollback failed after the error below (%s)", one_line(exc))
            raise
        await transaction.commit()


@asynccontextmanager
async def locked(
    engine: AsyncEngine,
    conn: AsyncConnection,
    settings: Settings,
    needed: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[Books]:
    """Under the lock, on ``conn``: the server checked first (it can be written), the run's
    session settings, database errors of rung's own bookkeeping named as such. ``needed``
    is asked while waiting for the lock (``Lease``); ``books.lease.held`` says whether it
    was taken."""
    dialect = dialect_named(engine.dialect.name)
    history = History.of(settings.table, dialect)
    async with database_errors(engine, history):
        server = await dialect.server(conn)
        if server.refusal:
            raise NotWritable(f"cannot migrate {shown(engine)}: {server.refusal}")
        async with (
            dialect.session(conn, server, settings.lock_timeout),
            Lease(
                engine,
                history,
                timeout=settings.lock_timeout,
                lease=settings.lock_lease,
                needed=needed,
            ) as lease,
        ):
            yield Books(conn, history, lease)


@asynccontextmanager
async def bookkeeping(engine: AsyncEngine, settings: Settings) -> AsyncIterator[Books]:
    """For ``repair`` and ``baseline``: a connection under the lock, the tables there."""
    async with connect(engine) as conn, locked(engine, conn, settings) as books:
        async with books.writing():
            await books.history.ensure(conn)
        yield books


@asynccontextmanager
async def database_errors(engine: AsyncEngine, history: History) -> AsyncIterator[None]:
    """Database errors outside a migration's own code, each named for what it is."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        dialect = history.dialect
        if dialect.pooler_error(exc):
            raise pooler_error(engine, exc) from exc
        if is_lost(exc):
            raise ConnectionLost(
                f"the connection to {shown(engine)} was lost ({one_line(exc)}); check the "
                "server, then 'rung status' shows what was applied"
            ) from exc
        raise HistoryError(
            f"could not read or write the history table {history.name!r} ({one_line(exc)}); "
            "check that this account may write there, then 'rung status' to see the state"
        ) from exc


async def run(
    engine: AsyncEngine,
    migrations: Sequence[Migration],
    request: Request,
    settings: Settings,
    epilogue: Epilogue | None = None,
) -> list[Executed]:
    """Apply or revert what ``request`` asks for; return what ran, in order."""
    dialect = dialect_named(engine.dialect.name)
    history = History.of(settings.table, dialect)
    async with connect(engine) as conn:
        async with database_errors(engine, history):
            records = await _records(conn, history)
        first = _plan(migrations, records, request, dialect, settings, locked=False)
        for warning in first.warnings:
            logger.warning(warning)
        if not _needed(first, records):
            return []

        async def needed() -> bool:
            """While waiting for the lock: is there still something to do? (Another
            replica may have done it all, and this one can start at once.)"""
            records = await _records(conn, history)
            planned = _plan(migrations, records, request, dialect, settings, locked=False)
            return _needed(planned, records)

        async with locked(engine, conn, settings, needed) as books:
            if not books.lease.held:
                return []
            return await _Run(books, migrations, request, settings).batches(epilogue)


async def _records(conn: AsyncConnection, history: History) -> list[Record]:
    """The history read outside the lock, in a transaction of its own. A read may lose to
    a concurrent write: on Galera, DDL on the table from another node aborts every
    transaction holding it (error 1213); such a read is tried again."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await history.read(conn, journals=False)
        except sa.exc.DBAPIError as exc:
            if conn.invalidated or not history.dialect.conflict(exc) or attempt == ATTEMPTS:
                raise
        finally:
            if not conn.invalidated:
                await history.end_read(conn)
        await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _needed(planned: Plan, records: Sequence[Record]) -> bool:
    """Whether a run must take the lock: work is planned, or a migration is marked running
    (planned without the lock, it counts as not applied; under the lock, it is an
    interrupted run that must be named, or cleared when it sent nothing)."""
    return bool(planned.batches) or any(r.state == "running" for r in records)


class Runs:
    """Runs in a row under one lock, on one connection (``runs``)."""

    def __init__(self, books: Books, settings: Settings) -> None:
        self.books, self.settings = books, settings
        self.conn = books.conn  # between runs, free for reads and writes of the caller's

    async def run(self, migrations: Sequence[Migration], request: Request) -> list[Executed]:
        """What ``run`` does under the lock, for this registry and request."""
        executor = _Run(self.books, migrations, request, self.settings, ensured=True)
        return await executor.batches(None)


@asynccontextmanager
async def runs(engine: AsyncEngine, settings: Settings) -> AsyncIterator[Runs]:
    """Many runs in a row under one lock, on one connection, without taking the lock
    again (verify makes three runs per migration on its scratch database)."""
    async with connect(engine) as conn, locked(engine, conn, settings) as books:
        async with books.writing():
            await books.history.ensure(conn)
        yield Runs(books, settings)


def _plan(
    migrations: Sequence[Migration],
    records: Sequence[Record],
    request: Request,
    dialect: Dialect,
    settings: Settings,
    *,
    locked: bool = True,
) -> Plan:
    return plan(
        migrations,
        records,
        request,
        transactional_ddl=dialect.transactional_ddl,
        per_migration=settings.per_migration,
        locked=locked,
    )


class _Run:
    """One run under the lock: it plans and runs batch after batch on the connection that
    holds the lock, re-reading the history before each, and remembers what it did."""

    def __init__(
        self,
        books: Books,
        migrations: Sequence[Migration],
        request: Request,
        settings: Settings,
        *,
        ensured: bool = False,
    ) -> None:
        self.books, self.conn, self.history = books, books.conn, books.history
        self.dialect = books.history.dialect
        self.migrations, self.request, self.settings = migrations, request, settings
        self.done: list[Executed] = []
        self._queue: list[Batch] | None = None  # the batches still to run, once planned
        self._rows: set[str] = set()  # the migrations with a row in the history
        self._ensured = ensured  # rung's tables made by an earlier run under this lock

    async def batches(self, epilogue: Epilogue | None) -> list[Executed]:
        """Run every batch, then the epilogue if the schema changed; return what ran."""
        try:
            while await self._retrying(self._next_batch):
                pass
        except BaseException as exc:
            # A failed run may still have changed the schema: migrations committed before
            # the failure, or statements a database without transactional DDL kept.
            changed = isinstance(exc, MigrationFailed) and exc.changed_schema
            if epilogue and changed and not self.conn.invalidated:
                try:
                    async with self.books.writing():
                        await epilogue(self.conn, self.history)
                except Exception as late:  # never hide the error that came first
                    logger.warning("after the failure: %s", one_line(late))
            raise
        if epilogue and self.done:
            await self._retrying(self._epilogue, epilogue)
        return self.done

    async def _epilogue(self, epilogue: Epilogue) -> bool:
        async with self.books.writing():
            await epilogue(self.conn, self.history)
        return True

    async def _retrying(self, step: Callable[..., Awaitable[bool]], *args: object) -> bool:
        """``step``: a transaction of rung's own (no migration code has committed in it),
        tried again while it loses to a concurrent write (a Galera certification conflict,
        a deadlock), so that such a loss is never reported as the user's failure."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await step(*args)
            except sa.exc.DBAPIError as exc:
                lost = self.conn.invalidated or not self.dialect.conflict(exc)
                if lost or attempt == ATTEMPTS:
                    raise
                logger.debug("rung's own write lost to a concurrent one; again (%s)", exc)
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def _next_batch(self) -> bool:
        """Run the next batch; False when there is none left. The history is read and the
        plan made once, in the first batch's transaction: under the lock no one else
        writes it, and every commit of this run checks that the lock is still its own."""
        if self._queue == []:  # planned, and all done: no transaction to learn it in
            return False
        if self._queue and not self._queue[0].atomic:
            if self._queue[0].in_transaction:
                await self._in_a_row()
            else:
                self.done.append(await self._alone(self._queue.pop(0)))
            return True
        committed = len(self.done)  # a failure rolls back this batch's migrations, not those
        planning = self._queue is None
        try:
            async with self.books.writing():
                if self._queue is None:
                    await self._first_plan()
                assert self._queue is not None
                if not self._queue:
                    return False
                atomic = self._queue[0].atomic
                if atomic:
                    batch = self._queue[0]
                    for m in batch.migrations:
                        self.done.append(await self._execute(m, batch.direction, record=False))
                    await self._record_batch(batch, self.done[committed:])
        except Failed as failed:
            rolled_back = [e.name for e in self.done[committed:]]
            del self.done[committed:]
            raise failure(failed, self.dialect, rolled_back=rolled_back, done=self.done) from (
                failed.cause
            )
        except BaseException:
            del self.done[committed:]  # what ran in a transaction that did not commit
            if planning:
                self._queue = None  # its writes are gone: plan again if tried again
            raise
        if atomic:
            self._queue.pop(0)
        elif self._queue[0].in_transaction:
            await self._in_a_row()
        else:
            self.done.append(await self._alone(self._queue.pop(0)))
        return True

    async def _first_plan(self) -> None:
        """In the first transaction: rung's tables, the history, marks cleared where a run
        stopped before sending anything, and the plan."""
        conn, history = self.conn, self.history
        if not self._ensured:
            await history.ensure(conn)
            self._ensured = True
        records = await history.read(conn, journals=False)
        for r in records:
            if r.untouched:
                await self._clear_untouched(r)
        planned = _plan(self.migrations, records, self.request, self.dialect, self.settings)
        self._queue = list(planned.batches)
        self._rows = {r.name for r in records if not (r.untouched and r.direction == "up")}

    async def _clear_untouched(self, record: Record) -> None:
        """A mark left by a run stopped before its migration sent any statement: the
        database holds nothing of that attempt, so the migration is as it was before."""
        before = "pending" if record.direction == "up" else "applied"
        logger.warning(
            "migration %s was interrupted (%s) before it sent any statement; the database "
            "holds nothing of that attempt, so it stays %s",
            record.name,
            record.direction,
            before,
        )
        if record.direction == "up":
            await self.history.remove(self.conn, record.name)
        else:
            await self.history.update(
                self.conn, record.name, state="applied", direction="up", statements=()
            )

    async def _in_a_row(self) -> None:
        """MySQL: the migrations in transactions that their DDL statements commit piece by
        piece, one after another in one transaction of the run. Just before a statement
        commits implicitly, the record of the running migration says which statements the
        database kept and which one is in flight (and the lease is checked); so a run
        killed at any instant leaves a record exact but for that one statement. A
        migration's "applied" record commits with the next one's first DDL statement,
        unless something of its own is still uncommitted (DML after its last DDL)."""
        conn, history = self.conn, self.history
        sync = conn.sync_connection
        assert sync is not None
        assert self._queue is not None
        unflushed: list[Executed] = []  # applied records no commit has carried yet
        lease = self.books.lease
        migration, direction = self._queue[0].migrations[0], self._queue[0].direction
        journal = history.journal_update(lease.holding())  # only while the lock is held
        start = history.guarded_insert(lease.holding())

        def before_each(completed: list[Statement], upcoming: Statement) -> None:
            if self.dialect.commits_implicitly(upcoming.sql):
                m = migration
                if m.name not in self._rows:  # its first record: a new row
                    row = history.running_row(m.name, m.checksum, direction.value, upcoming)
                    written = sync.execute(start, row).rowcount
                    self._rows.add(m.name)
                else:
                    values = history.journal_values(m.name, direction.value, completed, upcoming)
                    written = sync.execute(journal, values).rowcount
                if written != 1:
                    raise lease.lost()
            elif unflushed:  # never leave an earlier migration unrecorded for long
                lease.fence_sync(sync)
                sync.connection.commit()
                unflushed.clear()

        try:
            async with self.books.writing():
                while self._queue and self._queue[0].in_transaction and not self._queue[0].atomic:
                    batch = self._queue[0]
                    migration, direction = batch.migrations[0], batch.direction
                    done = await self._execute(migration, direction, before_each, record=False)
                    exists = migration.name in self._rows  # made by its first DDL statement
                    await self._record(migration, direction, done, exists=exists)
                    self._queue.pop(0)
                    self.done.append(done)
                    self._applied(done)
                    last = done.statements[-1].sql if done.statements else None
                    if last is None or self.dialect.commits_implicitly(last):
                        unflushed.append(done)
                    else:
                        await lease.fence(conn)
                        await conn.run_sync(lambda c: c.connection.commit())
                        unflushed.clear()
        except Failed as failed:
            # The rollback may have taken the records of those in ``unflushed`` with it (a
            # DDL statement that fails to parse commits nothing): they are written again.
            await self._failed(failed, in_transaction=True, unflushed=unflushed)

    async def _alone(self, batch: Batch) -> Executed:
        """A migration outside any transaction: marked running first; before each
        statement, its record says what the database kept and which one is in flight."""
        conn, dialect, history = self.conn, self.dialect, self.history
        migration, direction = batch.migrations[0], batch.direction
        sync = conn.sync_connection
        assert sync is not None

        lease = self.books.lease
        journal = history.journal_update(lease.holding())  # only while the lock is held

        def before_each(completed: list[Statement], upcoming: Statement) -> None:
            values = history.journal_values(migration.name, direction.value, completed, upcoming)
            if sync.execute(journal, values).rowcount != 1:
                raise lease.lost()

        before = await dialect.half_made(conn)
        try:
            exists = migration.name in self._rows
            await self._retrying(self._mark, migration, direction, exists)
            async with _autocommit(conn):
                done = await self._execute(migration, direction, before_each, record=False)
            await self._retrying(self._record_alone, migration, direction, done)
        except Failed as failed:
            await self._failed(failed, in_transaction=False, before=before)
        self._applied(done)
        return done

    def _applied(self, done: Executed) -> None:
        if done.direction is Direction.UP:
            self._rows.add(done.name)
        else:
            self._rows.discard(done.name)

    async def _failed(
        self,
        failed: Failed,
        *,
        in_transaction: bool,
        before: frozenset[str] = frozenset(),
        unflushed: Sequence[Executed] = (),
    ) -> NoReturn:
        """Record a non-atomic migration's failure, with what the database kept, and raise
        it as ``MigrationFailed``."""
        dialect = self.dialect
        kept = dialect.kept_after_failure(failed.statements, in_transaction, failed.failing)
        in_flight = None
        if in_flight_kept(dialect, failed, in_transaction):
            in_flight = Statement(failed.failing or "?", None, 0.0)
        left = [] if in_transaction else await self._clear_half_made(failed, before)
        if left:
            kept = [*kept, Statement(failed.failing or "?", None, 0.0)]
        try:
            await self._retrying(self._record_failure, failed, kept, in_flight, unflushed)
        except Exception as exc:
            logger.error(
                "could not record the failure of %s (%s); it stays marked as running",
                failed.migration.name,
                one_line(exc),
            )
        raise failure(
            failed, dialect, done=self.done, kept=kept, in_flight=in_flight, half_made=left
        ) from failed.cause

    async def _mark(self, m: Migration, direction: Direction, exists: bool) -> bool:
        async with self.books.writing():
            await self.history.mark(self.conn, m.name, m.checksum, direction.value, exists=exists)
        return True

    async def _clear_half_made(self, failed: Failed, before: frozenset[str]) -> list[str]:
        """After a failed statement outside a transaction: drop what it left half-made when
        it is certainly its own (new since the migration started, and named by the failing
        statement); return what is left in the way, by name."""
        try:
            async with connect(self.conn.engine) as conn:
                new = await self.dialect.half_made(conn) - before
                left = []
                for name in sorted(new):
                    if failed.failing and name in failed.failing:
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                        await self.dialect.drop_half_made(conn, name)
                        logger.warning(
                            "dropped %s, which the failed statement left half-made", name
                        )
                    else:
                        left.append(name)
                return left
        except Exception as exc:
            logger.warning("could not look for what the failure left half-made (%s)", one_line(exc))
            return []

    async def _execute(
        self,
        migration: Migration,
        direction: Direction,
        before_each: Before | None = None,
        *,
        exists: bool = False,
        record: bool = True,
    ) -> Executed:
        """Run one migration's code on the run's connection and (with ``record``) record the
        result in the current transaction; ``exists``: it has a row (its running mark)."""
        conn = self.conn
        verb = "applying" if direction is Direction.UP else "reverting"
        event = {"rung_name": migration.name, "rung_direction": direction.value}
        logger.info("%s %s", verb, migration.name, extra={"rung_event": "start", **event})
        fn = migration.up if direction is Direction.UP else migration.down
        assert fn is not None  # the planner refuses irreversible downgrades
        started = time.perf_counter()
        with Journal.of(conn).recording(before_each) as journal:
            try:
                await fn(conn)
            except Exception as exc:
                elapsed = (time.perf_counter() - started) * 1000
                failing = journal.pending if isinstance(exc, sa.exc.DBAPIError) else None
                raise Failed(
                    migration, direction, exc, journal.statements, elapsed, failing
                ) from exc
        elapsed = (time.perf_counter() - started) * 1000
        done = Executed(migration.name, direction, round(elapsed, 3), tuple(journal.statements))
        if record:
            await self._record(migration, direction, done, exists=exists)
        logger.info(
            "%s %s ok (%.0f ms)",
            verb,
            migration.name,
            elapsed,
            extra={"rung_event": "done", "rung_ms": elapsed, **event},
        )
        return done

    async def _record_alone(
        self, migration: Migration, direction: Direction, done: Executed
    ) -> bool:
        async with self.books.writing():
            await self._record(migration, direction, done, exists=True)
        return True

    async def _record_batch(self, batch: Batch, done: Sequence[Executed]) -> None:
        """The records of an atomic batch, in its transaction, in one round trip."""
        if batch.direction is Direction.DOWN:
            await self.history.remove_many(self.conn, [e.name for e in done])
            return
        checksums = {m.name: m.checksum for m in batch.migrations}
        rows = [(e.name, checksums[e.name], e.duration_ms, e.statements) for e in done]
        await self.history.applied_many(self.conn, rows)

    async def _record(
        self,
        migration: Migration,
        direction: Direction,
        done: Executed,
        *,
        exists: bool | None,
        conn: AsyncConnection | None = None,
    ) -> None:
        """One statement: applied (a new row, or the running mark updated), or reverted.
        ``exists=None``: the row may or may not be there (a rollback may have taken it)."""
        conn, history = conn or self.conn, self.history
        if direction is Direction.DOWN:
            await history.remove(conn, migration.name)
            return
        if exists is not False:
            updated = await history.update(
                conn,
                migration.name,
                checksum=migration.checksum,
                state="applied",
                direction="up",
                duration_ms=done.duration_ms,
                error=None,
                statements=done.statements,
            )
            if updated or exists:
                return
        await history.insert(
            conn,
            migration.name,
            migration.checksum,
            state="applied",
            duration_ms=done.duration_ms,
            statements=done.statements,
        )

    async def _record_failure(
        self,
        failed: Failed,
        kept: Sequence[Statement],
        in_flight: Statement | None,
        unflushed: Sequence[Executed] = (),
    ) -> bool:
        """Replace the running mark in one statement: failed with what the database kept
        (and the statement in flight when the connection was lost), or, when it kept
        nothing, the state from before the attempt. A lost connection gets a fresh one."""
        conn = self.conn
        if conn.in_transaction() and not conn.invalidated:
            await conn.rollback()
        fresh = await conn.engine.connect() if conn.invalidated else None
        target = fresh or conn
        m, history = failed.migration, self.history
        try:
            async with self.books.writing(target):
                for done in unflushed:  # whether or not the rollback took their records
                    again = next(m for m in self.migrations if m.name == done.name)
                    await self._record(again, done.direction, done, exists=None, conn=target)
                if kept or in_flight:
                    values = {
                        "state": "failed",
                        "direction": failed.direction.value,
                        "duration_ms": failed.duration_ms,
                        "error": one_line(failed.cause),
                        "statements": kept,
                        "in_flight": in_flight,
                    }
                    if not await history.update(target, m.name, **values):
                        # the mark went with the rolled-back transaction
                        await history.insert(target, m.name, m.checksum, state="running")
                        await history.update(target, m.name, **values)
                elif failed.direction is Direction.UP:
                    await history.remove(target, m.name)
                else:
                    await history.update(
                        target, m.name, state="applied", direction="up", statements=()
                    )
        finally:
            if fresh is not None:
                await fresh.close()
        return True


@asynccontextmanager
async def _autocommit(conn: AsyncConnection) -> AsyncIterator[None]:
    """No transaction at all while the body runs, then the connection as it was."""
    assert conn.sync_connection is not None
    previous = conn.sync_connection.get_execution_options().get("isolation_level")
    await conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield
    finally:
        if not conn.invalidated:
            await conn.commit()  # ends SQLAlchemy's logical transaction
            await conn.execution_options(isolation_level=previous or conn.default_isolation_level)
