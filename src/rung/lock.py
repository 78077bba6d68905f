"""rung's lock: a lease in one row of ``<table>_lock``, the same protocol on every database.

Taking it is one UPDATE that succeeds only where the lease is free or expired, compared on
the server's clock, in a short transaction of its own on a connection of its own. So a
waiter never sits in an open transaction (``CREATE INDEX CONCURRENTLY`` waits for every
older one), every statement stands alone (a transaction pooler may send the next one to
another server connection), and on a Galera cluster two nodes' attempts meet in
certification, where one wins and the other tries again. A session lock could do none of
this: a pooler moves the session, and Galera does not replicate ``GET_LOCK``.

While a run works its lease is renewed every third of its length; a holder that dies stops
renewing, and at most one lease after its last renewal the next waiter takes over. Each
commit of the run's own writes first renews the lease in the same transaction and fails
unless it is still this run's (a fence), so a holder that stalled past its lease records
nothing once another has taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rung.connection import connect
from rung.dialects.base import Dialect
from rung.errors import LockHeld, LockLost, LockTimeout
from rung.history import LOCK_ROW, History, first_line

logger = logging.getLogger("rung")
_Step = Callable[[AsyncConnection], Awaitable[bool]]

DEFAULT_LEASE = 30.0  # seconds; how long a dead holder can keep others waiting
ATTEMPTS = 8  # tries of one lock write that keeps losing to concurrent ones


def _process() -> tuple[str, str]:
    """This process's pid namespace and start time (Linux; empty elsewhere): with the host
    name and pid they tell a process apart from any other, even after its pid is reused."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
        with open(f"/proc/{os.getpid()}/stat", encoding="ascii") as f:
            start = f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return "", ""
    return namespace, start


def _started(pid: int) -> str | None:
    """When process ``pid`` of this namespace started; None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[19]
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        return ""


def identity() -> str:
    """How a holder is written down: ``host:pid:token:pid-namespace:start-time``."""
    namespace, start = _process()
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}:{namespace}:{start}"


@dataclass(frozen=True)
class Holder:
    """Who holds the lock (``identity()``), since when, until when (the server's clock)."""

    holder: str
    acquired_at: datetime
    expires_at: datetime
    server_now: datetime

    @property
    def host(self) -> str:
        return self.holder.split(":")[0]

    @property
    def pid(self) -> int | None:
        parts = self.holder.split(":")
        return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None

    @property
    def expired(self) -> bool:
        return self.expires_at <= self.server_now

    @property
    def gone(self) -> bool:
        """Provably not running: its lease expired, or it was a process of this host and
        pid namespace that no longer exists (none with its pid, or one started later)."""
        if self.expired:
            return True
        parts = self.holder.split(":")
        namespace, start = _process()
        if len(parts) < 5 or self.pid is None or not start:
            return False
        if (parts[0], parts[3]) != (socket.gethostname(), namespace):
            return False  # another host or container: only its lease can tell
        now = _started(self.pid)
        return now is None or (now != "" and now != parts[4])

    def describe(self) -> str:
        held = (self.server_now - self.acquired_at).total_seconds()
        left = (self.expires_at - self.server_now).total_seconds()
        lease = (
            f"its lease expired {-left:.0f} s ago" if left <= 0 else f"renewed, {left:.0f} s left"
        )
        pid = f", pid {self.pid}" if self.pid is not None else ""
        return (
            f"held by host {self.host}{pid} since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC "
            f"({held:.0f} s), {lease}"
        )


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


async def holder(conn: AsyncConnection, history: History) -> Holder | None:
    """The lock's holder as the server sees it now; None when it is free. Only reads."""
    if not await conn.run_sync(history.dialect.has_table, history.lock.name):
        return None
    t = history.lock.c
    row = (
        await conn.execute(
            sa.select(t.holder, t.acquired_at, t.expires_at, history.dialect.clock()).where(
                t.name == LOCK_ROW
            )
        )
    ).first()
    await history.end_read(conn)
    if row is None or row[0] is None:
        return None
    return Holder(row[0], _moment(row[1]), _moment(row[2]), _moment(row[3]))


async def clear(conn: AsyncConnection, history: History) -> Holder | None:
    """Free a lock whose holder is provably gone; refuse while it may be alive. Returns the
    holder it cleared, None when the lock was free."""
    found = await holder(conn, history)
    if found is None:
        return None
    if not found.gone:
        raise LockHeld(
            f"the lock is {found.describe()}: its holder is alive, so it is not cleared; wait "
            "for it to finish (a holder that dies frees it when its lease runs out)",
            holder=found.holder,
        )
    t = history.lock.c
    free = sa.update(history.lock).where(t.name == LOCK_ROW, t.holder == found.holder)
    await conn.execute(free.values(holder=None, acquired_at=None, expires_at=None))
    await conn.commit()
    return found


class Lease:
    """The lock for one run: ``async with Lease(...)`` takes it, renews it while the body
    runs, and frees it after, on a connection of its own."""

    def __init__(
        self,
        engine: AsyncEngine,
        history: History,
        *,
        timeout: float,
        lease: float = DEFAULT_LEASE,
        needed: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``needed``, asked while waiting: False when another run has done the work, so
        that this one stops waiting (``held`` stays False) instead of taking the lock."""
        self.engine, self.history, self.needed = engine, history, needed
        self.held = False
        self.dialect: Dialect = history.dialect
        self.timeout, self.lease = timeout, max(lease, 1.0)
        self.me = identity()
        self._conn: AsyncConnection | None = None
        self._renewing: asyncio.Task[None] | None = None
        t = history.lock.c
        clock = self.dialect.clock()
        self._take = (
            sa.update(history.lock)
            .where(t.name == LOCK_ROW, sa.or_(t.holder.is_(None), t.expires_at < clock))
            .values(holder=self.me, acquired_at=clock, expires_at=clock + self.lease)
        )
        self._first = sa.insert(history.lock).values(
            name=LOCK_ROW, holder=self.me, acquired_at=clock, expires_at=clock + self.lease
        )
        self._exists = sa.select(sa.func.count()).where(t.name == LOCK_ROW)
        self._renew = (
            sa.update(history.lock)
            .where(t.name == LOCK_ROW, t.holder == self.me)
            .values(expires_at=clock + self.lease)
        )
        self._holding = sa.exists().where(
            t.name == LOCK_ROW, t.holder == self.me, t.expires_at > clock + self.lease / 3
        )
        self._free = (
            sa.update(history.lock)
            .where(t.name == LOCK_ROW, t.holder == self.me)
            .values(holder=None, acquired_at=None, expires_at=None)
        )

    async def __aenter__(self) -> Lease:
        async with contextlib.AsyncExitStack() as stack:
            conn = await stack.enter_async_context(connect(self.engine))
            await self.history.ensure_lock_table(conn)
            self.held = await self._acquire(conn)
            if not self.held:
                return self
            self._stack = stack.pop_all()
        self._conn = conn
        self._renewing = asyncio.ensure_future(self._keep_renewed())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self.held:
            return
        failed = exc_info[0] is not None
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewing
        try:
            await self._retrying(self._release)
        except Exception as exc:  # never hide the error that came first
            log = logger.debug if failed else logger.warning
            log(
                "could not release rung's lock (%s); it frees itself within %g s",
                first_line(exc),
                self.lease,
            )
        finally:
            with contextlib.suppress(Exception):
                await self._stack.aclose()  # the first connection
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()  # a later one, if the first was lost

    async def fence(self, conn: AsyncConnection) -> None:
        """In the caller's transaction, before it commits: renew the lease, and raise
        ``LockLost`` (so the transaction rolls back) unless it is still this run's."""
        if (await conn.execute(self._renew)).rowcount != 1:
            raise self.lost()

    def fence_sync(self, conn: sa.Connection) -> None:
        """``fence`` from inside a statement's event: before a MySQL DDL statement commits
        the open transaction."""
        if conn.execute(self._renew).rowcount != 1:
            raise self.lost()

    def holding(self) -> sa.ColumnElement[bool]:
        """True while this run holds the lease with a third of it left (it is renewed every
        third): a condition for a write that must not happen once the lock is lost."""
        return self._holding

    def lost(self) -> LockLost:
        return LockLost(
            f"rung's lock was taken over while this run held it: its lease of "
            f"{self.lease:g} s ran out without renewal (the process stalled, or lost its "
            "connection), so this run stops here and records nothing more; 'rung status' "
            "shows the state"
        )

    async def _acquire(self, conn: AsyncConnection) -> bool:
        """True once the lock is this run's; False when ``needed`` says it no longer is."""
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        found: Holder | None = None
        while True:
            try:
                if await self._try(conn):
                    return True
                found = await holder(conn, self.history)
                if found is not None and found.gone and await self._clear(conn, found):
                    logger.warning(
                        "took over the lock of a run that is gone (%s)", found.describe()
                    )
                    continue
                if self.needed is not None and not await self.needed():
                    return False
            except sa.exc.DBAPIError as exc:
                # Any read of this round may lose too: on Galera, DDL on the lock table
                # from another node aborts every transaction holding it (error 1213).
                await self.history.end_read(conn)
                if not (self.dialect.conflict(exc) or isinstance(exc, sa.exc.IntegrityError)):
                    raise
            left = deadline - time.monotonic()
            if left <= 0:
                held = f" ({found.describe()})" if found else ""
                raise LockTimeout(
                    f"another rung run held the migration lock for more than "
                    f"{self.timeout:g} s{held}; wait for it to finish or raise --lock-timeout",
                    holder=found.holder if found else None,
                )
            await asyncio.sleep(min(left, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 1.0, self.lease / 4)

    async def _clear(self, conn: AsyncConnection, gone: Holder) -> bool:
        t = self.history.lock.c
        free = sa.update(self.history.lock).where(t.name == LOCK_ROW, t.holder == gone.holder)
        try:
            async with conn.begin():
                result = await conn.execute(free.values(holder=None))
            return bool(result.rowcount == 1)
        except sa.exc.DBAPIError as exc:
            if not self.dialect.conflict(exc):
                raise
            return False

    async def _try(self, conn: AsyncConnection) -> bool:
        async with conn.begin():
            if (await conn.execute(self._take)).rowcount == 1:
                return True
            if await conn.scalar(self._exists):
                return False
            await conn.execute(self._first)  # the first run ever: the row is not there yet
            return True

    async def _keep_renewed(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                renewed = await self._retrying(self._renew_once)
            except Exception as exc:  # the next tick tries again
                if isinstance(exc, sa.exc.DBAPIError) and self.dialect.conflict(exc):
                    # The run itself is writing (SQLite lets one writer at a time): each of
                    # its commits renews the lease anyway.
                    logger.debug("lock not renewed this time (%s)", first_line(exc))
                else:
                    logger.warning("could not renew rung's lock (%s)", first_line(exc))
                    with contextlib.suppress(Exception):  # the next tick tries again
                        await self._reconnect()
                continue
            if not renewed:
                logger.error(
                    "rung's lock was taken over (its lease of %g s ran out without renewal); "
                    "this run will record nothing more",
                    self.lease,
                )
                return

    async def _renew_once(self, conn: AsyncConnection) -> bool:
        async with conn.begin():
            return bool((await conn.execute(self._renew)).rowcount == 1)

    async def _release(self, conn: AsyncConnection) -> bool:
        async with conn.begin():
            await conn.execute(self._free)
        return True

    async def _retrying(self, step: _Step) -> bool:
        """``step`` on the lease's connection, again while it loses to a concurrent write."""
        for attempt in range(ATTEMPTS):
            conn = self._conn
            if conn is None or conn.invalidated or conn.closed:
                conn = await self._reconnect()
            try:
                return await step(conn)
            except sa.exc.DBAPIError as exc:
                if not self.dialect.conflict(exc) or attempt == ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _reconnect(self) -> AsyncConnection:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = await self.engine.connect()
        return self._conn
