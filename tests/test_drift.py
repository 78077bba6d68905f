"""``drift`` on SQLite, PostgreSQL and MariaDB, against the stored snapshot and against a
replay of the history: what it names, what it leaves alone, and what only replay sees."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from conftest import MigrationPackage
from rung import errors
from rung.api import drift
from rung.drifting import check_drift
from safety_nets import (
    assert_scratch_dropped,
    execute,
    history_of,
    listen,
    statements,
    upgrade_and_store,
)

ITEMS = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, status VARCHAR(20) NOT NULL DEFAULT 'a')",
    "CREATE INDEX ix_items_status ON items (status)",
)
NEW_DEFAULT = {
    "postgresql": ("ALTER TABLE items ALTER COLUMN status SET DEFAULT 'b'",),
    "mariadb": ("ALTER TABLE items ALTER COLUMN status SET DEFAULT 'b'",),
    "sqlite": (  # SQLite cannot alter a column: rebuild the table, as people do
        "DROP TABLE items",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, status VARCHAR(20) NOT NULL DEFAULT 'b')",
        "CREATE INDEX ix_items_status ON items (status)",
    ),
}
DROP_INDEX = {
    "postgresql": "DROP INDEX ix_items_status",
    "mariadb": "DROP INDEX ix_items_status ON items",
    "sqlite": "DROP INDEX ix_items_status",
}
IN_DB = "(in the database, not in the migrations)"


async def both(engine: AsyncEngine, registry: object, **kwargs: object) -> list[list[str]]:
    """The lines of drift against the stored snapshot and against a replay."""
    stored = await drift(engine, registry, **kwargs)  # type: ignore[arg-type]
    replayed = await drift(engine, registry, replay=True, **kwargs)  # type: ignore[arg-type]
    assert (stored.baseline, replayed.baseline) == ("stored", "replay")
    return [[str(d) for d in r.differences] for r in (stored, replayed)]


async def test_the_template_example_names_todos_temp_flag(engine: AsyncEngine) -> None:
    from server.migration.src.lib import Migrator

    await upgrade_and_store(engine, Migrator)
    assert await both(engine, Migrator) == [[], []]

    await execute(engine, "ALTER TABLE todos ADD COLUMN temp_flag TEXT")

    line = f"+ column todos.temp_flag TEXT NULL {IN_DB}"
    assert await both(engine, Migrator) == [[line], [line]]
    assert (await drift(engine, Migrator)).has_drift


CHANGES = {
    "added column": lambda backend: ["ALTER TABLE items ADD COLUMN note VARCHAR(20)"],
    "dropped index": lambda backend: [DROP_INDEX[backend]],
    "changed default": lambda backend: list(NEW_DEFAULT[backend]),
    "extra table": lambda backend: ["CREATE TABLE extra (id INTEGER)"],
}
EXPECTED = {
    "added column": f"+ column items.note VARCHAR(20) NULL {IN_DB}",
    "dropped index": "- index ix_items_status on items (status) "
    "(in the migrations, not in the database)",
    "changed default": "~ column items.status: default 'a' -> 'b'",
    "extra table": f"+ table extra {IN_DB}",
}


@pytest.mark.parametrize("change", CHANGES)
async def test_drift_names_a_change_made_by_hand(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage, change: str
) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    await upgrade_and_store(engine, migrations.registry())

    await execute(engine, *CHANGES[change](backend))

    assert await both(engine, migrations.registry()) == [[EXPECTED[change]]] * 2


async def test_replay_also_finds_drift_made_before_the_last_run(
    engine: AsyncEngine, migrations: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    listen(caplog)
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    await upgrade_and_store(engine, migrations.registry())
    await execute(engine, "ALTER TABLE items ADD COLUMN note VARCHAR(20)")
    migrations.add("tags", statements("CREATE TABLE tags (id INTEGER)"), "pass")
    await upgrade_and_store(engine, migrations.registry())  # stores the drifted schema

    stored, replayed = await both(engine, migrations.registry())

    assert stored == []
    assert replayed == [f"+ column items.note VARCHAR(20) NULL {IN_DB}"]
    await assert_scratch_dropped(caplog)


async def test_replay_applies_only_what_the_history_records(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    applied = migrations.registry()
    migrations.add("tags", statements("CREATE TABLE tags (id INTEGER)"), "pass")
    await rung.upgrade(engine, applied)

    report = await drift(engine, migrations.registry(), replay=True)

    assert not report.has_drift  # tags is pending, so not part of the expected schema


async def test_excluded_tables_are_not_drift(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    await upgrade_and_store(engine, migrations.registry())
    await execute(engine, "CREATE TABLE audit_log (id INTEGER)")

    assert await both(engine, migrations.registry(), exclude=["audit_*"]) == [[], []]


async def test_without_a_stored_snapshot_stored_drift_says_what_to_do(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    with pytest.raises(errors.NoSnapshot, match="--replay"):
        await drift(engine, migrations.registry())  # nothing there at all
    await rung.upgrade(engine, migrations.registry())
    history = history_of(engine)
    async with engine.begin() as conn:  # as if an older rung had run the upgrade
        await conn.execute(history.meta.delete().where(history.meta.c.key == "snapshot"))
    async with engine.connect() as conn:
        assert await history.stored_snapshot(conn) is None

    with pytest.raises(errors.NoSnapshot, match="run an upgrade first"):
        await drift(engine, migrations.registry())
    async with engine.connect() as conn:
        with pytest.raises(errors.NoSnapshot):
            await check_drift(conn, history)
    assert not (await drift(engine, migrations.registry(), replay=True)).has_drift


async def test_check_drift_for_upgrade(engine: AsyncEngine, migrations: MigrationPackage) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    history = history_of(engine)
    async with engine.connect() as conn:
        assert await check_drift(conn, history) == []  # rung never ran here: nothing to drift from

    await upgrade_and_store(engine, migrations.registry())
    await execute(engine, "CREATE TABLE extra (id INTEGER)", "CREATE TABLE audit_x (id INTEGER)")

    async with engine.connect() as conn:
        found = await check_drift(conn, history, exclude=["audit_*"])
    assert [str(d) for d in found] == [f"+ table extra {IN_DB}"]


async def test_upgrade_and_downgrade_store_the_snapshot_they_leave(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    await rung.upgrade(engine, migrations.registry())
    assert not (await drift(engine, migrations.registry())).has_drift
    await rung.downgrade(engine, migrations.registry())
    assert not (await drift(engine, migrations.registry())).has_drift


async def test_a_run_that_fails_part_way_stores_what_it_committed(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    """Per-migration commits (MariaDB always, the others with per_migration): the snapshot
    stored after a failure holds what the run committed, so drift does not report rung's
    own work; statements MariaDB kept from the failed migration are rung's work too."""
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    migrations.add(
        "broken",
        statements("CREATE TABLE half (id INTEGER)", "SELECT * FROM no_such_table"),
        statements("DROP TABLE half"),
    )
    with pytest.raises(errors.MigrationFailed):
        await rung.upgrade(engine, migrations.registry(), per_migration=True)
    assert (await drift(engine, migrations.registry())).differences == ()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)  # DDL that rolls back
async def test_a_run_rolled_back_stores_nothing(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    """One transaction rolled back changed nothing: the stored snapshot stays the one of the
    last run that did, so drift made by hand before it is still named."""
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    await rung.upgrade(engine, migrations.registry())
    await execute(engine, "CREATE TABLE by_hand (id INTEGER)")
    migrations.add("broken", statements("SELECT * FROM no_such_table"))
    with pytest.raises(errors.MigrationFailed):
        await rung.upgrade(engine, migrations.registry())
    found = await drift(engine, migrations.registry())
    assert [str(d) for d in found.differences] == [f"+ table by_hand {IN_DB}"]


async def test_a_snapshot_stored_by_an_older_rung_is_refused_saying_what_to_do(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    await rung.upgrade(engine, migrations.registry())
    older = '{"format": 1, "dialect": "x", "tables": [], "views": [], "enums": [], '
    older += '"sequences": [], "extensions": []}'
    async with engine.begin() as conn:
        await history_of(conn).set_meta(conn, "snapshot", older)

    with pytest.raises(errors.NoSnapshot) as refused:
        await drift(engine, migrations.registry())

    assert "snapshot format 1, from another version of rung" in refused.value.message
    assert "run 'rung drift --replay'" in refused.value.message
    assert "the next upgrade or downgrade that changes something stores" in refused.value.message
    assert not (await drift(engine, migrations.registry(), replay=True)).has_drift


DRIFT_IN_NEW_KINDS = {  # one per database, as drift prints it (test_coverage has them all)
    "sqlite": (
        "CREATE TRIGGER items_touch AFTER UPDATE ON items BEGIN SELECT 1; END",
        f"+ trigger items.items_touch {IN_DB}",
    ),
    "postgresql": (
        "COMMENT ON COLUMN items.status IS 'workflow state'",
        "~ column items.status: comment (none) -> 'workflow state'",
    ),
    "mariadb": (
        "ALTER TABLE items MODIFY status VARCHAR(20) COLLATE utf8mb4_bin NOT NULL DEFAULT 'a'",
        "~ column items.status: collation (default) -> utf8mb4_bin",
    ),
}


async def test_drift_names_a_change_to_a_kind_the_snapshot_did_not_see_before(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("items", statements(*ITEMS), statements("DROP TABLE items"))
    await upgrade_and_store(engine, migrations.registry())
    change, line = DRIFT_IN_NEW_KINDS[backend]

    await execute(engine, change)

    assert await both(engine, migrations.registry()) == [[line], [line]]
