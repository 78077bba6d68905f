"""Helpers shared by the safety-net tests (schema, verify, drift, dry runs)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import rung
from conftest import sql
from rung.drifting import store_snapshot
from rung.history import History
from rung.registry import Registry
from rung.schema import Snapshot, snapshot


def statements(*sqls: str) -> str:
    """Body of a migration that executes each statement in turn."""
    return "\n".join(sql(s) for s in sqls)


async def live_snapshot(engine: AsyncEngine, **kwargs: Sequence[str]) -> Snapshot:
    async with engine.connect() as conn:
        return await snapshot(conn, **kwargs)


async def execute(engine: AsyncEngine, *sqls: str) -> None:
    """Change the schema by hand, as a person would, outside rung."""
    async with engine.begin() as conn:
        for s in sqls:
            await conn.execute(sa.text(s))


async def upgrade_and_store(engine: AsyncEngine, registry: Registry) -> None:
    """An upgrade, then the snapshot store the runner does at the end of a run that changed
    something (kept explicit here so these tests do not depend on that wiring)."""
    await rung.upgrade(engine, registry)
    async with engine.begin() as conn:
        await store_snapshot(conn, History())


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
