"""Fleets: one registry applied to many tenant databases or schemas, ``jobs`` at a time.

Each tenant gets the single-database run as it is (``rung.api``): its own engine, its own
lock, its own transactions, so a fleet run and a single-tenant run never collide and every
guarantee of one database holds per tenant. The results are an async iterator, yielded as
tenants finish. A failing tenant is a result, not an exception: the others go on, unless
``fail_fast``. ``stop`` (a ``Stop``) is Ctrl-C: no new tenant starts, and the running
ones finish, or are cancelled on a second press. Only ``jobs`` engines exist at
a time, so memory does not grow with the fleet.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from rung import api
from rung import config as configuration
from rung.dialects import backend_named, dialect_named
from rung.errors import RungError, UsageError, clip
from rung.failures import one_line
from rung.history import DEFAULT_TABLE
from rung.lock import DEFAULT_LEASE
from rung.migration import Migration
from rung.passwords import mask
from rung.plan import MigrationState, states
from rung.registry import Migrations, migrations_of
from rung.runner import DEFAULT_LOCK_TIMEOUT, Executed
from rung.tenants import Tenant, engine_for, find, own_history

T = TypeVar("T")
DEFAULT_JOBS = 8
DONE, FAILED, CANCELLED, NOT_STARTED = "done", "failed", "cancelled", "not started"
Tenants = str | Iterable[str | Tenant]


@dataclass(frozen=True)
class TenantResult(Generic[T]):
    """What happened to one tenant: ``done`` with its ``value`` (what ran, its states),
    ``failed`` with the one-line ``error`` (and its class's name, ``error_type``), ``cancelled`` or
    ``not started``."""

    tenant: Tenant
    outcome: str
    value: T | None = None
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == DONE


class Stop:
    """Ctrl-C for a fleet. ``stop()``: no new tenant starts, the running ones finish, the
    rest are ``not started``. ``cancel()``: the running ones are cancelled too, each as a
    single run cancelled mid-way (rolled back; on MariaDB the migration it was in stays
    ``running``), and reported as ``cancelled``."""

    def __init__(self) -> None:
        self.stopped = self.cancelled = False
        self._running: set[asyncio.Future[Any]] = set()

    def stop(self) -> None:
        self.stopped = True

    def cancel(self) -> None:
        self.stopped = self.cancelled = True
        for task in self._running:
            task.cancel()

    async def run(
        self, tenant: Tenant, work: Awaitable[TenantResult[T]], kept: Kept | None, pooler: bool
    ) -> TenantResult[T]:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if not (self.cancelled and task.cancelled()):
                raise
        finally:
            self._running.discard(task)
        # Cancelled before its commit, a run is rolled back; after it (while it freed its
        # lock), it is kept. Only the database can say which.
        found = await _one(tenant, kept, pooler) if kept else None
        now = found.value if found and found.ok else "what it kept could not be read"
        error = f"cancelled while it ran; {now}"
        return TenantResult(tenant, CANCELLED, error=error, error_type="CancelledError")


Kept = Callable[[Tenant, AsyncEngine], Awaitable[str]]


async def each(
    tenants: Sequence[Tenant],
    work: Callable[[Tenant, AsyncEngine], Awaitable[T]],
    *,
    jobs: int = DEFAULT_JOBS,
    fail_fast: bool = False,
    stop: Stop | None = None,
    pooler: bool = False,
    kept: Kept | None = None,
) -> AsyncIterator[TenantResult[T]]:
    """``work`` on every tenant, ``jobs`` at a time; each result as it comes. ``kept`` says
    what a tenant holds after its work was cancelled."""
    if jobs < 1:
        raise UsageError(f"jobs must be 1 or more, not {jobs}; pass --jobs N")
    halt = stop or Stop()
    results: asyncio.Queue[TenantResult[T]] = asyncio.Queue()
    todo = iter(tenants)

    async def worker() -> None:
        for tenant in todo:  # shared by the workers: each tenant is taken once
            if halt.stopped:
                result: TenantResult[T] = TenantResult(tenant, NOT_STARTED)
            else:
                result = await halt.run(tenant, _one(tenant, work, pooler), kept, pooler)
                if fail_fast and result.outcome == FAILED:
                    halt.stop()
            results.put_nowait(result)

    workers = [asyncio.create_task(worker()) for _ in range(min(jobs, len(tenants)))]
    try:
        for _ in tenants:
            yield await results.get()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


class _Named(logging.Filter):
    """Prefixes what the ``rung`` logger says during a tenant's run with that tenant."""

    def filter(self, record: logging.LogRecord) -> bool:
        tenant = _tenant.get()
        if tenant is not None and not getattr(record, "rung_tenant", None):
            text = mask(f"{tenant.name}: {record.getMessage()}", tenant.url)
            record.msg, record.args, record.rung_tenant = text, (), tenant.name
        return True


_tenant: contextvars.ContextVar[Tenant | None] = contextvars.ContextVar("tenant", default=None)
logging.getLogger("rung").addFilter(_Named())


async def _one(
    tenant: Tenant, work: Callable[[Tenant, AsyncEngine], Awaitable[T]], pooler: bool
) -> TenantResult[T]:
    started = time.perf_counter()
    _tenant.set(tenant)  # in this tenant's task only

    def ms() -> float:
        return round((time.perf_counter() - started) * 1000, 3)

    try:
        engine = engine_for(tenant, pooler=pooler)
        try:
            value = await work(tenant, engine)
        finally:
            await engine.dispose()
    except Exception as exc:  # one tenant's failure, not the fleet's
        text = one_line(exc) if isinstance(exc, RungError) else f"unexpected {one_line(exc)}"
        error = clip(mask(text, tenant.url), 1000)
        return TenantResult(tenant, FAILED, None, error, type(exc).__name__, ms())
    return TenantResult(tenant, DONE, value, duration_ms=ms())


async def resolve(tenants: Tenants) -> list[Tenant]:
    """A spec (as ``--fleet`` takes it, from the current folder and its configuration),
    or URLs and ``Tenant`` values, as a list of tenants."""
    if isinstance(tenants, str):
        cfg = configuration.load({}, os.environ, Path.cwd())
        section = configuration.read_section(cfg.root / "pyproject.toml").get("fleet", {})
        return await find(tenants, cwd=Path.cwd(), url=cfg.url, section=section, root=cfg.root)
    found = [t if isinstance(t, Tenant) else Tenant(mask(t, t), t) for t in tenants]
    if not found:
        raise UsageError("the fleet has no tenant; give at least one URL")
    return found


async def upgrade_fleet(
    tenants: Tenants,
    migrator: Migrations,
    *,
    jobs: int = DEFAULT_JOBS,
    fail_fast: bool = False,
    stop: Stop | None = None,
    steps: int | None = None,
    to: str | None = None,
    out_of_order: bool = False,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_lease: float = DEFAULT_LEASE,
    per_migration: bool = False,
    pooler: bool = False,
) -> AsyncIterator[TenantResult[list[Executed]]]:
    """``rung.upgrade`` on every tenant, ``jobs`` at a time; yields each tenant's result
    (``value``: what was applied) as it finishes. ``tenants``: a ``--fleet`` spec, or URLs."""
    migrations = migrations_of(migrator)

    async def work(tenant: Tenant, engine: AsyncEngine) -> list[Executed]:
        located(engine, must_exist=False)
        if tenant.schema:
            await own_history(engine, tenant, table, make=True)
        return await api.upgrade(
            engine,
            migrations,
            steps=steps,
            to=to,
            out_of_order=out_of_order,
            table=table,
            lock_timeout=lock_timeout,
            lock_lease=lock_lease,
            per_migration=per_migration,
            snapshot=tenant.schema is None,
        )

    found = await resolve(tenants)
    holds = functools.partial(_holds, migrations, table)
    async for result in each(
        found, work, jobs=jobs, fail_fast=fail_fast, stop=stop, pooler=pooler, kept=holds
    ):
        yield result


async def downgrade_fleet(
    tenants: Tenants,
    migrator: Migrations,
    *,
    jobs: int = DEFAULT_JOBS,
    fail_fast: bool = False,
    stop: Stop | None = None,
    steps: int | None = None,
    to: str | None = None,
    all: bool = False,
    table: str = DEFAULT_TABLE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_lease: float = DEFAULT_LEASE,
    per_migration: bool = False,
    pooler: bool = False,
) -> AsyncIterator[TenantResult[list[Executed]]]:
    """``rung.downgrade`` on every tenant (one step by default), as ``upgrade_fleet``."""
    migrations = migrations_of(migrator)

    async def work(tenant: Tenant, engine: AsyncEngine) -> list[Executed]:
        located(engine, must_exist=True)  # reverting never makes a SQLite file
        if tenant.schema and not await own_history(engine, tenant, table, make=False):
            return []
        return await api.downgrade(
            engine,
            migrations,
            steps=steps,
            to=to,
            all=all,
            table=table,
            lock_timeout=lock_timeout,
            lock_lease=lock_lease,
            per_migration=per_migration,
            snapshot=tenant.schema is None,
        )

    found = await resolve(tenants)
    holds = functools.partial(_holds, migrations, table)
    async for result in each(
        found, work, jobs=jobs, fail_fast=fail_fast, stop=stop, pooler=pooler, kept=holds
    ):
        yield result


async def status_fleet(
    tenants: Tenants,
    migrator: Migrations,
    *,
    jobs: int = DEFAULT_JOBS,
    table: str = DEFAULT_TABLE,
    pooler: bool = False,
) -> AsyncIterator[TenantResult[list[MigrationState]]]:
    """``rung.status`` of every tenant; it never writes (a SQLite file that is not there
    yet is not created: every migration is pending there)."""
    migrations = migrations_of(migrator)

    async def work(tenant: Tenant, engine: AsyncEngine) -> list[MigrationState]:
        backend = backend_named(engine.url.get_backend_name())
        path = engine.url.database
        if backend and backend.file_based and path and not Path(path).exists():
            return states(migrations, [])
        if tenant.schema and not await own_history(engine, tenant, table, make=False):
            return states(migrations, [])
        return await api.status(engine, migrations, table=table)

    found = await resolve(tenants)
    async for result in each(found, work, jobs=jobs, pooler=pooler):
        yield result


async def _holds(
    migrations: Sequence[Migration], table: str, tenant: Tenant, engine: AsyncEngine
) -> str:
    """What ``engine``'s tenant holds: its newest applied migration and how many are
    pending (the planner's own words are in ``rung status``)."""
    found = await api.status(engine, migrations, table=table)
    newest = newest_applied(found)
    pending = sum(s.state.value == "pending" for s in found)
    return f"it holds {newest or 'nothing applied'} now, with {pending} pending"


def located(engine: AsyncEngine, *, must_exist: bool) -> None:
    """Refuse a SQLite tenant whose folder (or, with ``must_exist``, file) is not there."""
    dialect_named(engine.dialect.name).check_location(engine.url, must_exist=must_exist)


def newest_applied(states: Sequence[MigrationState]) -> str | None:
    """The newest applied migration in registry order (None when none is)."""
    applied = [s.name for s in states if s.state.value in ("applied", "modified")]
    return applied[-1] if applied else None
