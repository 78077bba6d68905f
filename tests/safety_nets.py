"""Helpers shared by the safety-net tests (schema, verify, drift, dry runs)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

import rung
from conftest import sql
from rung.dialects import dialect_named
from rung.history import DEFAULT_TABLE, History
from rung.lock import Lease
from rung.registry import Migrations
from rung.schema import Snapshot


def statements(*sqls: str) -> str:
    """Body of a migration that executes each statement in turn."""
    return "\n".join(sql(s) for s in sqls)


def history_of(conn: AsyncConnection | AsyncEngine, table: str = DEFAULT_TABLE) -> History:
    return History(table, dialect_named(conn.dialect.name))


async def read_schema(
    conn: AsyncConnection, exclude: Sequence[str] = (), *, own: bool = False
) -> Snapshot:
    """The schema ``conn`` sees; ``own``: with rung's own tables."""
    return await history_of(conn).read_schema(conn, exclude, own=own)


async def live_snapshot(
    engine: AsyncEngine, exclude: Sequence[str] = (), *, own: bool = False
) -> Snapshot:
    async with engine.connect() as conn:
        return await read_schema(conn, exclude, own=own)


async def execute(engine: AsyncEngine, *sqls: str) -> None:
    """Change the schema by hand, as a person would, outside rung."""
    async with engine.begin() as conn:
        for s in sqls:
            await conn.execute(sa.text(s))


async def upgrade_and_store(engine: AsyncEngine, registry: Migrations) -> None:
    """An upgrade, then the snapshot store the API does at the end of a run that changed
    something (kept explicit here so these tests do not depend on that wiring)."""
    await rung.upgrade(engine, registry)
    async with engine.begin() as conn:
        assert await history_of(conn).store_snapshot(conn) is None


def scratch_urls(caplog: pytest.LogCaptureFixture) -> list[sa.URL]:
    """The scratch databases rung said it created while ``caplog`` listened."""
    found = []
    for record in caplog.records:
        match = re.fullmatch(r"created scratch database (.+)", record.getMessage())
        if match:
            found.append(sa.make_url(match[1]))
    return found


def listen(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rung")


async def database_names(url: sa.URL, like: str) -> list[str]:
    """Databases on ``url``'s server whose names match the SQL pattern ``like``."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        raise ValueError("SQLite has files, not databases on a server")
    query = {
        "postgresql": "SELECT datname FROM pg_database WHERE datname LIKE :p",
        "mysql": "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :p",
    }[backend]
    admin = url.set(database="postgres" if backend == "postgresql" else "")
    engine = create_async_engine(admin)
    try:
        async with engine.connect() as conn:
            return [row[0] for row in await conn.execute(sa.text(query), {"p": like})]
    finally:
        await engine.dispose()


async def exists(url: sa.URL) -> bool:
    if url.get_backend_name() == "sqlite":
        return os.path.exists(url.database or "")
    return bool(await database_names(url, url.database or ""))


async def assert_scratch_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Every scratch database this test made is gone. (Not "no ``rung_<purpose>_%`` database
    is left on the server": other runs share the server and have theirs.)"""
    urls = scratch_urls(caplog)
    assert urls, "the test made no scratch database"
    for url in urls:
        assert not await exists(url), f"scratch database {url.database} was left behind"


@asynccontextmanager
async def holding_the_lock(url: str, table: str = "rung_migrations") -> AsyncIterator[str]:
    """Another run holds rung's lock for ``table`` on ``url``'s database (its lease renewed
    while it is held); yields the holder as ``status`` and errors name it (host:pid:token)."""
    engine = create_async_engine(url)
    try:
        history = History(table, dialect_named(engine.dialect.name))
        async with Lease(engine, history, timeout=5) as lease:
            yield lease.me
    finally:
        await engine.dispose()
