"""``verify`` on SQLite, PostgreSQL and MariaDB: a correct history passes; a down that
forgets something, or an up that cannot run again after its down, is caught and named;
the scratch database is always dropped, also after a failure or a cancellation."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import MigrationPackage, sql
from rung import errors
from rung.api import verify
from rung.dialects import dialect_named
from safety_nets import (
    assert_scratch_dropped,
    exists,
    listen,
    live_snapshot,
    scratch_urls,
    statements,
)

BASE_UP = statements(
    "CREATE TABLE owners (id INTEGER PRIMARY KEY)",
    "CREATE TABLE items (id INTEGER PRIMARY KEY, owner_id INTEGER, name VARCHAR(50), "
    "status VARCHAR(20) DEFAULT 'a', qty INTEGER)",
    "CREATE TABLE settings (k VARCHAR(20) PRIMARY KEY)",
)
BASE_DOWN = statements("DROP TABLE settings", "DROP TABLE items", "DROP TABLE owners")


def rebuild_items(default: str = "'a'", extra: str = "") -> str:
    """Recreate items: the one way to change a default or a constraint on all three."""
    return statements(
        "DROP TABLE items",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, owner_id INTEGER, name VARCHAR(50), "
        f"status VARCHAR(20) DEFAULT {default}, qty INTEGER{extra})",
    )


GOOD = (
    "add_notes",
    statements(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL, "
        "body TEXT, FOREIGN KEY (item_id) REFERENCES items (id))",
        "CREATE INDEX ix_notes_item ON notes (item_id)",
    ),
    statements("DROP TABLE notes"),
)


async def test_a_correct_history_passes(engine: AsyncEngine, migrations: MigrationPackage) -> None:
    first = migrations.add("base", BASE_UP, BASE_DOWN)
    second = migrations.add(*GOOD)
    before = await live_snapshot(engine)

    report = await verify(engine, migrations.registry())

    assert report.ok, [str(f) for f in report.failures]
    assert report.checked == (first, second)
    assert await live_snapshot(engine) == before  # the target was never touched


async def test_the_template_history_passes(engine: AsyncEngine) -> None:
    from server.migration.src.lib import Migrator

    report = await verify(engine, Migrator)

    assert report.ok and report.checked == ("m20260408_000001_create_todos_table",)


FORGETFUL_DOWNS = {
    "column": (
        "add_priority",
        sql("ALTER TABLE items ADD COLUMN priority INTEGER"),
        "down of {} leaves column items.priority behind",
    ),
    "index": (
        "index_names",
        sql("CREATE INDEX ix_items_name ON items (name)"),
        "down of {} leaves index ix_items_name behind",
    ),
    "default": (
        "status_defaults_to_b",
        rebuild_items(default="'b'"),
        "down of {} leaves column items.status changed (default 'a' -> 'b')",
    ),
    "foreign key": (
        "items_belong_to_owners",
        rebuild_items(extra=", FOREIGN KEY (owner_id) REFERENCES owners (id) ON DELETE CASCADE"),
        "down of {} leaves foreign key items (owner_id) -> owners (id) behind",
    ),
    "check constraint": (
        "qty_not_negative",
        rebuild_items(extra=", CONSTRAINT ck_qty CHECK (qty >= 0)"),
        "down of {} leaves check constraint items (",
    ),
}


@pytest.mark.parametrize("forgotten", FORGETFUL_DOWNS)
async def test_a_down_that_forgets_something_is_caught_and_named(
    engine: AsyncEngine, migrations: MigrationPackage, forgotten: str
) -> None:
    slug, up, message = FORGETFUL_DOWNS[forgotten]
    migrations.add("base", BASE_UP, BASE_DOWN)
    buggy = migrations.add(slug, up, "pass")
    last = migrations.add(*GOOD)

    report = await verify(engine, migrations.registry())

    assert not report.ok
    failure = report.failures[0]
    assert (failure.name, failure.step) == (buggy, "down")
    assert failure.message.startswith(message.format(buggy))
    lines = [str(d) for d in failure.differences]
    assert any(forgotten in line for line in lines), lines
    assert report.checked == (*migrations.names[:2], last)  # every verdict, in one run
    assert report.not_checked == ()
    if len(report.failures) == 1:  # up ran again over the leftover: no rebuild was needed
        assert report.rebuilt == ()
    else:  # the leftover made up fail when run again: reported, and the state rebuilt
        assert report.failures[1].step == "up again"
        assert report.rebuilt == (buggy,)


async def test_an_up_that_cannot_run_again_after_its_down_is_caught(
    engine: AsyncEngine, migrations: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    listen(caplog)
    migrations.add("base", BASE_UP, BASE_DOWN)
    seeds = migrations.add(
        "seed_mode",
        statements("CREATE TABLE extra (id INTEGER)", "INSERT INTO settings (k) VALUES ('mode')"),
        statements("DROP TABLE extra"),  # forgets the row: the second INSERT collides
    )
    later = migrations.add(*GOOD)

    report = await verify(engine, migrations.registry())

    [failure] = report.failures
    assert (failure.name, failure.step) == (seeds, "up again")
    assert failure.message.startswith(f"up of {seeds} fails when run again after its down: ")
    assert report.checked == tuple(migrations.names) and report.not_checked == ()
    assert report.rebuilt == (seeds,)  # the checks of `later` went on from "after up seeds"
    assert later not in {f.name for f in report.failures}
    await assert_scratch_dropped(caplog)


async def test_start_after_skips_the_known_good_part(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    old = migrations.add("base", BASE_UP, "pass")  # broken, but long since accepted
    new = migrations.add(*GOOD)

    assert not (await verify(engine, migrations.registry())).ok
    report = await verify(engine, migrations.registry(), start_after=old)

    assert report.ok and report.checked == (new,)
    with pytest.raises(errors.UnknownTarget, match="m20990101_000001_nope"):
        await verify(engine, migrations.registry(), start_after="m20990101_000001_nope")


async def test_an_irreversible_migration_is_applied_and_the_final_downgrade_stops_there(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("base", BASE_UP, BASE_DOWN)
    one_way = migrations.add("drop_settings", sql("DROP TABLE settings"), None)
    last = migrations.add(*GOOD)

    report = await verify(engine, migrations.registry())

    assert report.ok, [str(f) for f in report.failures]
    assert report.irreversible == (one_way,)
    assert last in report.checked


async def test_the_final_downgrade_catches_what_single_round_trips_cannot(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    archiving = migrations.add(
        "counters",
        sql("CREATE TABLE counters (n INTEGER)"),
        """
        rows = (await conn.execute(text("SELECT COUNT(*) FROM counters"))).scalar()
        if rows:  # keeps the data it would lose: a table no round trip of its own sees
            await conn.execute(text("CREATE TABLE counters_archive (n INTEGER)"))
        await conn.execute(text("DROP TABLE counters"))
        """,
    )
    migrations.add("count_once", sql("INSERT INTO counters (n) VALUES (1)"), "pass")

    report = await verify(engine, migrations.registry())

    assert report.checked == tuple(migrations.names)
    [failure] = report.failures
    assert (failure.name, failure.step) == (archiving, "final downgrade")
    assert failure.message == (
        f"the full downgrade (down to before {archiving}) leaves table counters_archive behind"
    )


async def test_a_cancelled_verify_drops_its_scratch_database(
    engine: AsyncEngine, migrations: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    listen(caplog)
    migrations.add("base", BASE_UP, BASE_DOWN)
    slow = migrations.add("slow", "import asyncio\nawait asyncio.sleep(3600)", "pass")
    task = asyncio.create_task(verify(engine, migrations.registry()))
    for _ in range(600):  # until the slow migration runs (at most a minute)
        if any(f"applying {slow}" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the slow migration never started")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await assert_scratch_dropped(caplog)


async def test_scratch_url_must_be_a_new_database_and_is_dropped_after(
    backend: str,
    db_url: str,
    engine: AsyncEngine,
    migrations: MigrationPackage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listen(caplog)
    migrations.add("base", BASE_UP, BASE_DOWN)
    with pytest.raises(errors.UsageError, match="already exists"):
        await verify(engine, migrations.registry(), scratch_url=db_url)

    if backend == "sqlite":
        mine = sa.make_url(f"sqlite+aiosqlite:///{tmp_path / 'mine.db'}")
    else:
        mine = sa.make_url(db_url).set(database=f"rung_verify_mine_{uuid.uuid4().hex[:8]}")
    url = mine.render_as_string(hide_password=False)

    assert (await verify(engine, migrations.registry(), scratch_url=url)).ok
    assert scratch_urls(caplog)[0].database == mine.database
    assert not await exists(mine)


# The false negatives issue 11 found on real histories: a down that strips a login column's
# binary collation (under a unique index, it changes what counts as a duplicate), and one
# that recreates a partial index without its WHERE.
PARTIAL = (
    "CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT, active BOOLEAN)",
    "CREATE UNIQUE INDEX uq_login ON users (login) WHERE active",
)
LOST_BY_A_DOWN = {
    "mariadb": (
        (
            "CREATE TABLE users (id INTEGER PRIMARY KEY, "
            "login VARCHAR(50) COLLATE utf8mb4_bin NOT NULL, UNIQUE KEY uq_login (login))",
        ),
        ("ALTER TABLE users MODIFY login VARCHAR(100) COLLATE utf8mb4_bin NOT NULL",),
        ("ALTER TABLE users MODIFY login VARCHAR(50) NOT NULL",),
        "column users.login changed (collation utf8mb4_bin -> (default))",
    ),
    **{
        backend: (
            PARTIAL,
            (
                "DROP INDEX uq_login",
                "CREATE UNIQUE INDEX uq_login ON users (login, id) WHERE active",
            ),
            ("DROP INDEX uq_login", "CREATE UNIQUE INDEX uq_login ON users (login)"),
            "index uq_login changed "
            "(UNIQUE on users (login) WHERE active -> UNIQUE on users (login))",
        )
        for backend in ("postgresql", "sqlite")
    },
}


async def test_a_down_that_loses_a_collation_or_a_where_is_caught(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    base, up, down, change = LOST_BY_A_DOWN[backend]
    migrations.add("users", statements(*base), sql("DROP TABLE users"))
    lossy = migrations.add("widen_login", statements(*up), statements(*down))

    report = await verify(engine, migrations.registry())

    assert [f.message for f in report.failures] == [f"down of {lossy} leaves {change}"]


def ladder(migrations: MigrationPackage, size: int) -> dict[str, str]:
    """A history of ``size`` tables, one per migration, whose downs are wrong in three
    different ways at three places; returns the broken ones' names and how each breaks."""
    broken: dict[str, str] = {}
    for i in range(1, size + 1):
        table = f"rung_t{i}"
        up = statements(
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(20))",
            f"CREATE INDEX ix_{table} ON {table} (name)",
        )
        down, how = {
            3: ("await conn.execute(text('SELECT * FROM no_such_table'))", "down raises"),
            6: ("pass", "down forgets its table"),  # and up again then fails
            9: (statements(f"DROP TABLE {table}", f"CREATE TABLE {table}_old (id INTEGER)"), "x"),
        }.get(i, (statements(f"DROP TABLE {table}"), ""))
        name = migrations.add(f"t{i}", up, down)
        if how:
            broken[name] = how
    return broken


async def test_one_run_names_every_failing_down_and_blames_no_good_one(
    engine: AsyncEngine, migrations: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    listen(caplog)
    broken = ladder(migrations, 12)
    three, six, nine = broken

    report = await verify(engine, migrations.registry())

    assert report.checked == tuple(migrations.names) and report.not_checked == ()
    assert {f.name for f in report.failures} == set(broken)  # no good migration blamed
    steps = [(f.name, f.step) for f in report.failures]
    assert (three, "down") in steps and (six, "down") in steps and (nine, "down") in steps
    assert (six, "up again") in steps  # its table was still there
    assert report.rebuilt == (three, six, nine)  # each left the scratch database elsewhere
    assert [f.rebuilt_after for f in report.failures if f.name == three] == [None]
    assert {f.rebuilt_after for f in report.failures if f.name == nine} == {six}
    [left] = [f for f in report.failures if (f.name, f.step) == (nine, "down")]
    assert "rung_t9_old" in left.message
    await assert_scratch_dropped(caplog)  # the reference database too

    fast = await verify(engine, migrations.registry(), fail_fast=True)

    assert [(f.name, f.step) for f in fast.failures] == [(three, "down")]
    assert fast.not_checked == tuple(migrations.names[3:]) and fast.rebuilt == ()


async def test_non_transactional_migrations_are_verified_and_rebuilt_after(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    """Migrations run with ``transactional=False`` (CREATE INDEX CONCURRENTLY on
    PostgreSQL) take the runner's other path: marked running, then recorded."""
    concurrently = "CONCURRENTLY " if backend == "postgresql" else ""
    on_items = " ON items" if backend == "mariadb" else ""

    def index(name: str, column: str) -> str:
        return sql(f"CREATE INDEX {concurrently}{name} ON items ({column})")

    migrations.add("base", BASE_UP, BASE_DOWN)
    good = migrations.add(
        "index_name",
        index("ix_name", "name"),
        sql(f"DROP INDEX ix_name{on_items}"),
        transactional=False,
    )
    forgetful = migrations.add("index_qty", index("ix_qty", "qty"), "pass", transactional=False)
    later = migrations.add(*GOOD)

    report = await verify(engine, migrations.registry())

    assert report.checked == tuple(migrations.names)
    assert [(f.name, f.step) for f in report.failures] == [
        (forgetful, "down"),  # leaves ix_qty behind ...
        (forgetful, "up again"),  # ... so creating it again fails
    ]
    assert "ix_qty" in report.failures[0].message
    assert report.rebuilt == (forgetful,)
    assert (
        good not in {f.name for f in report.failures} and report.failures[1].rebuilt_after is None
    )
    assert later not in {f.name for f in report.failures}


async def test_fingerprints_are_equal_for_a_remade_schema_and_differ_for_another(
    backend: str, engine: AsyncEngine
) -> None:
    """Verify skips the full read when two fingerprints are equal: they must be equal for
    the same schema made again (new object ids), and differ when it is not the same; one
    kept for the whole run (PostgreSQL's reads only what changed) gives what a new one
    gives. On MariaDB the fingerprint asks every ``information_schema`` view the reader
    asks (and ``test_mariadb_fingerprints`` that it sees what a full read sees)."""
    dialect = dialect_named(engine.dialect.name)
    kept = dialect.fingerprints()
    make = (
        "CREATE TABLE fp_a (id INTEGER PRIMARY KEY, name VARCHAR(20) DEFAULT 'x')",
        "CREATE TABLE fp_b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES fp_a (id))",
        "CREATE INDEX ix_fp_b ON fp_b (a_id)",
    )
    drop = ("DROP TABLE fp_b", "DROP TABLE fp_a")

    async def run(*statements: str) -> str:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
        async with engine.connect() as conn:
            fresh = await conn.run_sync(dialect.fingerprints())
            assert await conn.run_sync(kept) == fresh
            return fresh

    first = await run(*make)
    assert await run(*drop, *make) == first
    changed = await run("CREATE INDEX ix_fp_name ON fp_a (name)")
    assert changed != first
    await run(*drop)

    if backend == "mariadb":
        seen: list[str] = []

        def listen_on(conn: sa.Connection) -> None:
            sa.event.listen(conn, "before_cursor_execute", lambda *a: seen.append(a[2]))

        async with engine.connect() as conn:
            await conn.run_sync(listen_on)
            await conn.run_sync(dialect.read_schema)
            read, seen[:] = list(seen), []
            await conn.run_sync(dialect.fingerprints())
        views = re.compile(r"information_schema\.(\w+)")
        asked = set(views.findall(" ".join(seen)))
        assert asked - {"SESSION_STATUS"} == set(views.findall(" ".join(read)))
