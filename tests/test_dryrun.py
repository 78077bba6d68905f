"""Dry runs on SQLite, PostgreSQL and MariaDB: the statements an upgrade or a downgrade
would execute, with their parameters, while the live database and its history stay as
they were."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from conftest import MigrationPackage, sql
from rung import errors
from rung.api import dry_run
from rung.plan import Direction
from rung.registry import Migrations
from safety_nets import assert_scratch_dropped, listen, live_snapshot, scratch_urls, statements

SETTINGS = (
    "CREATE TABLE settings (k VARCHAR(20) PRIMARY KEY, v VARCHAR(20))",
    "CREATE TABLE items (id INTEGER PRIMARY KEY)",
)
SEED = (
    'await conn.execute(text("INSERT INTO settings (k, v) VALUES (:k, :v)"), '
    '{"k": "mode", "v": "fast"})'
)


async def state(engine: AsyncEngine, registry: Migrations) -> object:
    """Everything a dry run must leave alone: the schema and the history, timings included."""
    return await live_snapshot(engine), await rung.status(engine, registry)


@pytest.fixture
def three(migrations: MigrationPackage) -> MigrationPackage:
    migrations.add(
        "base", statements(*SETTINGS), statements("DROP TABLE items", "DROP TABLE settings")
    )
    migrations.add(
        "add_priority",
        sql("ALTER TABLE items ADD COLUMN priority INTEGER"),
        sql("ALTER TABLE items DROP COLUMN priority"),
    )
    migrations.add("seed_mode", SEED, sql("DELETE FROM settings WHERE k = 'mode'"))
    return migrations


async def test_an_upgrade_dry_run_shows_the_statements_and_changes_nothing(
    engine: AsyncEngine, three: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    listen(caplog)
    priority, seed = three.names[1:]
    await rung.upgrade(engine, three.registry(), steps=1)
    before = await state(engine, three.registry())

    done = await dry_run(engine, three.registry(), "up")

    assert [(e.name, e.direction) for e in done] == [(priority, Direction.UP), (seed, Direction.UP)]
    assert [s.sql for s in done[0].statements] == ["ALTER TABLE items ADD COLUMN priority INTEGER"]
    [insert] = done[1].statements
    assert insert.sql.startswith("INSERT INTO settings (k, v) VALUES")
    assert "mode" in str(insert.params) and "fast" in str(insert.params)
    assert await state(engine, three.registry()) == before
    await assert_scratch_dropped(caplog)


async def test_a_downgrade_dry_run_shows_the_statements_and_changes_nothing(
    engine: AsyncEngine, three: MigrationPackage
) -> None:
    await rung.upgrade(engine, three.registry())
    before = await state(engine, three.registry())

    done = await dry_run(engine, three.registry(), "down", steps=2)

    assert [(e.name, e.direction) for e in done] == [
        (three.names[2], Direction.DOWN),
        (three.names[1], Direction.DOWN),
    ]
    assert [s.sql for s in done[0].statements] == ["DELETE FROM settings WHERE k = 'mode'"]
    assert [s.sql for s in done[1].statements] == ["ALTER TABLE items DROP COLUMN priority"]
    assert await state(engine, three.registry()) == before


async def test_nothing_to_do_is_empty_and_needs_no_scratch_database(
    engine: AsyncEngine, three: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    listen(caplog)
    await rung.upgrade(engine, three.registry())

    assert await dry_run(engine, three.registry(), "up") == []
    assert scratch_urls(caplog) == []


async def test_a_dry_run_refuses_what_the_real_run_would_refuse(
    engine: AsyncEngine, three: MigrationPackage
) -> None:
    await rung.upgrade(engine, three.registry(), steps=1)
    three.write(three.names[0], statements(*SETTINGS, "CREATE TABLE more (id INTEGER)"))

    with pytest.raises(errors.ChecksumMismatch, match=three.names[0]):
        await dry_run(engine, three.registry(), "up")


async def test_a_dry_run_goes_on_past_a_newer_release_s_migrations(
    engine: AsyncEngine, three: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    """During a rolling deploy the history holds a migration only the newer release knows:
    upgrade warns and goes on, and so does its dry run."""
    base, priority, seed = three.names
    future = three.add("future", sql("CREATE TABLE f (id INTEGER)"), sql("DROP TABLE f"))
    await rung.upgrade(engine, three.registry([base, future]))
    older = three.registry([base, priority, seed])
    listen(caplog)
    would = await dry_run(engine, older, "up")
    assert [e.name for e in would] == [priority, seed]
    assert "newer than this registry" in caplog.text
    assert [e.name for e in await rung.upgrade(engine, older)] == [priority, seed]
