"""Schema snapshots on SQLite, PostgreSQL and MariaDB: what they read, that equal schemas
give equal values (also in another database), the JSON round trip, the lines of a diff,
and a catalog query count that does not grow with the number of tables."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from conftest import MigrationPackage
from rung.dialects import dialect_named
from rung.errors import SchemaError
from rung.history import SNAPSHOT_KEY, History
from rung.schema import (
    Check,
    Column,
    Domain,
    EnumType,
    Exclusion,
    ForeignKey,
    Index,
    Policy,
    Routine,
    SequenceDef,
    Snapshot,
    Table,
    Trigger,
    Unique,
    UserType,
    View,
    diff,
)
from rung.scratch import scratch_database
from safety_nets import execute, live_snapshot, read_schema, statements

SCHEMA = (
    "CREATE TABLE owners (id INTEGER PRIMARY KEY, email VARCHAR(100) NOT NULL, UNIQUE (email))",
    "CREATE TABLE items (id INTEGER PRIMARY KEY, owner_id INTEGER, name VARCHAR(50) NOT NULL, "
    "status VARCHAR(20) NOT NULL DEFAULT 'open', qty INTEGER, "
    "CONSTRAINT ck_items_qty CHECK (qty >= 0), "
    "FOREIGN KEY (owner_id) REFERENCES owners (id) ON DELETE CASCADE)",
    "CREATE INDEX ix_items_status ON items (status)",
    "CREATE VIEW open_items AS SELECT id, name FROM items WHERE status = 'open'",
)


def unique_keys(table: Table) -> set[tuple[str, ...]]:
    """Unique constraints, or unique indexes where that is what the database makes of them."""
    return {u.columns for u in table.uniques} | {i.columns for i in table.indexes if i.unique}


async def test_snapshot_reads_tables_columns_constraints_and_views(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("schema", statements(*SCHEMA))
    await rung.upgrade(engine, migrations.registry())  # the tracking tables exist now

    found = await live_snapshot(engine)

    assert [t.name for t in found.tables] == ["items", "owners"]
    items, owners = found.tables
    columns = {c.name: c for c in items.columns}
    assert set(columns) == {"id", "owner_id", "name", "status", "qty"}
    status = columns["status"]
    assert (status.type, status.nullable, status.default) == ("VARCHAR(20)", False, "'open'")
    assert columns["qty"].nullable and columns["qty"].default is None
    assert items.primary_key == ("id",)
    [fk] = items.foreign_keys
    assert (fk.columns, fk.referred_table, fk.ondelete) == (("owner_id",), "owners", "CASCADE")
    assert [c.sqltext.replace("`", "") for c in items.checks] == ["qty >= 0"]
    assert Index("ix_items_status", ("status",)) in items.indexes
    assert unique_keys(owners) == {("email",)}
    assert [v.name for v in found.views] == ["open_items"]


async def test_equal_schemas_give_equal_snapshots_in_another_database_and_through_json(
    engine: AsyncEngine,
) -> None:
    await execute(engine, *SCHEMA)
    first = await live_snapshot(engine)

    async with scratch_database(engine.url) as other:
        await execute(other, *SCHEMA)
        elsewhere = await live_snapshot(other)

    assert elsewhere == first
    assert diff(first, elsewhere) == []
    assert Snapshot.from_json(first.to_json()) == first
    assert await live_snapshot(engine) == first


async def test_exclude_patterns_and_tracking_tables_are_left_out(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("t", statements("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    await rung.upgrade(engine, migrations.registry(), table="app_history")
    await execute(
        engine, "CREATE TABLE audit_log (id INTEGER)", "CREATE TABLE audit_x (id INTEGER)"
    )

    async with engine.connect() as conn:
        history = History("app_history", dialect_named(engine.dialect.name))
        everything = await history.read_schema(conn, own=True)
        kept = await history.read_schema(conn, exclude=["audit_*"])
    assert [t.name for t in everything.tables] == [
        "app_history",
        "app_history_lock",
        "app_history_meta",
        "audit_log",
        "audit_x",
        "t",
    ]
    assert [t.name for t in kept.tables] == ["t"]


def test_diff_prints_one_readable_line_per_difference() -> None:
    status = Column("status", "VARCHAR(32)", False, "'pending'")
    todos = Table(
        "todos",
        (Column("id", "VARCHAR(36)", False), status),
        ("id",),
        (Index("ix_todos_status", ("status",)),),
        (ForeignKey(("owner_id",), "owners", ("id",), name="fk_a"),),
        (Unique(("id", "status")),),
        (Check("length(status) > 0", "ck"),),
    )
    expected = Snapshot("postgresql", (todos,), (View("v", "SELECT 1"),), (EnumType("m", ("a",)),))
    changed = Table(
        "todos",
        (
            todos.columns[0],
            Column("status", "VARCHAR(32)", False, "'open'"),
            Column("temp_flag", "TEXT"),
        ),
        ("id",),
        (),
        (ForeignKey(("owner_id",), "owners", ("id",), "CASCADE", name="fk_a"),),
        (Unique(("id", "status"), "renamed"),),
        (Check("length(status) > 0", "ck"),),
    )
    actual = Snapshot(
        "postgresql",
        (changed, Table("extra", (Column("id", "INTEGER"),))),
        (View("v", "SELECT 2"),),
        (EnumType("m", ("a", "b")),),
        extensions=("pg_trgm",),
    )

    assert [str(d) for d in diff(expected, actual)] == [
        "+ table extra (in the database, not in the migrations)",
        "~ column todos.status: default 'pending' -> 'open'",
        "+ column todos.temp_flag TEXT NULL (in the database, not in the migrations)",
        "~ foreign key todos (owner_id) -> owners (id): no actions -> ON DELETE CASCADE",
        "~ unique constraint todos (id, status): name (none) -> renamed",
        "- index ix_todos_status on todos (status) (in the migrations, not in the database)",
        "~ view v: SELECT 1 -> SELECT 2",
        "~ enum m: ('a') -> ('a', 'b')",
        "+ extension pg_trgm (in the database, not in the migrations)",
    ]
    assert diff(expected, expected) == []
    assert Snapshot.from_json(actual.to_json()) == actual


def test_each_kind_differs_in_one_readable_line() -> None:
    """The kinds beyond tables, columns and keys: one line each, saying what changed."""
    key = Column("id", "INTEGER", False)
    before = Snapshot(
        "postgresql",
        (
            Table(
                "t",
                (key, Column("name", "TEXT", collation="C", comment="a name")),
                ("id",),
                (Index("ix", ("name",), where="id > 0"),),
                primary_key_name="t_pkey",
                exclusions=(Exclusion("EXCLUDE USING gist (id WITH =)", "t_excl"),),
                policies=(Policy("own", "AS PERMISSIVE FOR ALL TO public USING (id > 0)"),),
                comment="things",
            ),
        ),
        (View("v", "SELECT 1"),),
        sequences=(SequenceDef("s", "BIGINT", increment=1),),
        schemas=("audit",),
        triggers=(Trigger("t", "trg", "BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()"),),
        routines=(Routine("function", "f()", "BEGIN RETURN NEW; END"),),
        domains=(Domain("posint", "INTEGER", checks=(Check("VALUE > 0", "posint_check"),)),),
        types=(UserType("pair", "composite", "a integer, b text"),),
    )
    after = Snapshot(
        "postgresql",
        (
            Table(
                "t",
                (
                    Column("id", "INTEGER", False, identity="ALWAYS"),
                    Column("name", "TEXT", comment="the name"),
                ),
                ("id",),
                (Index("ix", ("name",), method="hash"),),
                primary_key_name="pk_t",
                exclusions=(Exclusion("EXCLUDE USING gist (id WITH =)", "renamed"),),
                policies=(Policy("own", "AS PERMISSIVE FOR ALL TO public USING (id > 1)"),),
                options=("UNLOGGED",),
                comment="things",
            ),
        ),
        (View("v", "SELECT 1", materialized=True),),
        sequences=(SequenceDef("s", "BIGINT", increment=5, cycle=True),),
        triggers=(Trigger("t", "trg", "AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()"),),
        routines=(Routine("function", "f()", "BEGIN RETURN NULL; END"),),
        domains=(Domain("posint", "INTEGER", checks=(Check("VALUE >= 0", "posint_check"),)),),
        types=(UserType("pair", "composite", "a integer, b varchar"),),
    )

    assert [str(d) for d in diff(before, after)] == [
        "- schema audit (in the migrations, not in the database)",
        "~ table t: options () -> (UNLOGGED)",
        "~ column t.id: identity (none) -> ALWAYS",
        "~ column t.name: collation C -> (default), comment 'a name' -> 'the name'",
        "~ primary key t: (id) (named t_pkey) -> (id) (named pk_t)",
        "~ exclusion constraint t EXCLUDE USING gist (id WITH =): name t_excl -> renamed",
        "~ index ix: on t (name) WHERE id > 0 -> on t USING hash (name)",
        "~ policy t.own: AS PERMISSIVE FOR ALL TO public USING (id > 0) -> "
        "AS PERMISSIVE FOR ALL TO public USING (id > 1)",
        "~ view v: view -> materialized view",
        "~ trigger t.trg: BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f() -> "
        "AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        "~ function f(): BEGIN RETURN NEW; END -> BEGIN RETURN NULL; END",
        "~ domain posint: INTEGER NULL CHECK (VALUE > 0) -> INTEGER NULL CHECK (VALUE >= 0)",
        "~ type pair: composite a integer, b text -> composite a integer, b varchar",
        "~ sequence s: increment 1 -> 5, cycle false -> true",
    ]
    assert Snapshot.from_json(after.to_json()) == after
    assert Snapshot.from_json(before.to_json()) == before


def test_a_long_definition_shows_where_it_differs() -> None:
    body = "BEGIN " + "PERFORM 1; " * 20
    old = Snapshot("postgresql", routines=(Routine("function", "f()", body + "RETURN 1; END"),))
    new = Snapshot("postgresql", routines=(Routine("function", "f()", body + "RETURN 2; END"),))

    [line] = [str(d) for d in diff(old, new)]

    assert line == (
        "~ function f(): ...PERFORM 1; PERFORM 1; RETURN 1; END -> "
        "...PERFORM 1; PERFORM 1; RETURN 2; END"
    )


def test_a_stored_snapshot_of_another_format_is_refused_clearly() -> None:
    old = '{"format": 1, "dialect": "sqlite", "tables": [], "views": [], "enums": [], '
    old += '"sequences": [], "extensions": []}'

    with pytest.raises(ValueError, match="snapshot format 1, from another version of rung"):
        Snapshot.from_json(old)
    with pytest.raises(ValueError, match="not a rung schema snapshot"):
        Snapshot.from_json('{"format": 2, "dialect": "sqlite", "tables": [{"nme": "t"}]}')


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_postgresql_enums_sequences_and_extensions_are_part_of_the_schema(
    engine: AsyncEngine,
) -> None:
    before = await live_snapshot(engine)
    await execute(
        engine,
        "CREATE TYPE mood AS ENUM ('sad', 'happy')",
        "CREATE SEQUENCE ticket_numbers",
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "CREATE TABLE serials (id SERIAL PRIMARY KEY, m mood DEFAULT 'sad')",
    )

    lines = [
        str(d)
        for d in diff(before, await live_snapshot(engine), actual_as="now", expected_as="before")
    ]

    assert lines == [
        "+ table serials (now, not before)",
        "+ enum mood ('sad', 'happy') (now, not before)",
        "+ sequence serials_id_seq (now, not before)",
        "+ sequence ticket_numbers (now, not before)",
        "+ extension pg_trgm (now, not before)",
    ]
    serials = (await live_snapshot(engine)).tables[0]
    assert {c.name: (c.type, c.default, c.autoincrement) for c in serials.columns} == {
        "id": ("INTEGER", "nextval('serials_id_seq')", True),
        "m": ("mood", "'sad'", False),
    }


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
async def test_snapshot_query_count_does_not_grow_with_the_number_of_tables(
    engine: AsyncEngine,
) -> None:
    async def tables_upto(first: int, last: int) -> None:
        await execute(
            engine,
            *(
                f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, ref INTEGER, "
                f"v VARCHAR(10) DEFAULT 'x', CONSTRAINT ck_t{i} CHECK (ref > 0), "
                "FOREIGN KEY (ref) REFERENCES t0 (id), UNIQUE (v))"
                for i in range(first, last)
            ),
        )

    async def statements_of_a_snapshot() -> tuple[int, int]:
        seen: list[str] = []
        async with engine.connect() as conn:
            listener = lambda *args: seen.append(args[2])  # noqa: E731
            sa.event.listen(conn.sync_connection, "before_cursor_execute", listener)
            found = await read_schema(conn)
        return len(seen), len(found.tables)

    await execute(engine, "CREATE TABLE t0 (id INTEGER PRIMARY KEY)")
    await tables_upto(1, 5)
    await statements_of_a_snapshot()  # SQLAlchemy caches a few catalog lookups once per engine
    few = await statements_of_a_snapshot()
    await tables_upto(5, 200)
    many = await statements_of_a_snapshot()

    assert (few[1], many[1]) == (5, 200)
    assert many[0] == few[0]


async def _while_creating_a_table(
    engine: AsyncEngine, name: str, seconds: float
) -> asyncio.Task[None]:
    """Start ``CREATE TABLE <name> AS SELECT SLEEP(seconds)`` on a connection of its own and
    return once MariaDB is inside it: the table exists, under an exclusive metadata lock."""

    async def create() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text(f"CREATE TABLE {name} AS SELECT SLEEP({seconds}) AS x"))

    task = asyncio.create_task(create())
    async with engine.connect() as watcher:
        while not task.done():  # no fixed number of tries: a loaded machine starts it late
            busy = await watcher.scalar(
                sa.text(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE INFO LIKE :create AND STATE = 'User sleep'"
                ),
                {"create": f"CREATE TABLE {name} AS%"},
            )
            if busy:
                return task
            await asyncio.sleep(0.02)
    await task
    raise AssertionError(f"CREATE TABLE {name} ended before it was seen sleeping")


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
async def test_a_table_being_created_meanwhile_is_waited_for_not_silently_left_out(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """In a transaction that holds metadata locks (as the runner's does when it stores its
    snapshot), information_schema skips a table another session is changing, with warning
    1684. The reader notices and reads again; when the change outlasts its attempts, the
    run's stored snapshot is removed rather than left describing another schema."""
    await execute(engine, "CREATE TABLE todos (id INTEGER PRIMARY KEY)")
    history = History("rung_migrations", dialect_named("mariadb"))
    async with engine.begin() as conn:
        await history.ensure(conn)
        assert await history.store_snapshot(conn) is None

    creating = await _while_creating_a_table(engine, "quick", 0.3)
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT * FROM todos"))  # hold a metadata lock
        found = await read_schema(conn)
    await creating
    assert [t.name for t in found.tables] == ["quick", "todos"]

    creating = await _while_creating_a_table(engine, "slow", 3)
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT * FROM todos"))
        with pytest.raises(SchemaError, match=r"Table '.*'\.'slow' was skipped"):
            await read_schema(conn)
        warning = await history.store_snapshot(conn)
        assert await history.get_meta(conn, SNAPSHOT_KEY) is None
    await creating
    assert warning and "the stored snapshot is removed" in warning
