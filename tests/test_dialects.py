"""The shared conformance suite every dialect passes (see ``rung.dialects.base.Dialect``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import rung
from conftest import SERVERS, MigrationPackage, require, sql
from rung import errors
from rung.dialects import BACKENDS, dialect_named
from rung.dialects.base import checked_database_name
from rung.migration import Statement
from safety_nets import read_schema


async def test_create_and_drop_database(backend: str, tmp_path: Path) -> None:
    require(backend)
    if backend == "sqlite":
        url = sa.make_url(f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}")
    else:
        url = sa.make_url(SERVERS[backend]).set(database=f"rung_t_{uuid.uuid4().hex[:12]}")
    dialect = dialect_named(backend)
    await dialect.create_database(url)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE x (id INTEGER)"))
    finally:
        await engine.dispose()
    await dialect.drop_database(url)
    await dialect.drop_database(url)  # twice is fine
    if backend == "sqlite":
        assert not (tmp_path / "scratch.db").exists()
    else:
        admin = create_async_engine(SERVERS[backend])
        try:
            async with admin.connect() as conn:
                query = (
                    "SELECT datname FROM pg_database"
                    if backend == "postgresql"
                    else "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"
                )
                names = (await conn.execute(sa.text(query))).scalars().all()
        finally:
            await admin.dispose()
        assert url.database not in names


@pytest.mark.parametrize("name", ["x; DROP DATABASE test", 'a"b', "a`b", "", "x" * 64])
def test_scratch_database_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError):
        checked_database_name(sa.make_url("postgresql+asyncpg://h/").set(database=name))


def test_kept_after_failure() -> None:
    create = Statement("CREATE TABLE c (id INTEGER)", None, 1.0)
    insert = Statement("INSERT INTO c VALUES (1)", None, 1.0)
    alter = Statement("  alter table c add x int", None, 1.0)
    for backend in BACKENDS:
        name = backend.name
        dialect = dialect_named(name)
        assert dialect.kept_after_failure([create, insert], in_transaction=False) == [
            create,
            insert,
        ], name
        kept = dialect.kept_after_failure([create, insert, alter, insert], in_transaction=True)
        if dialect.transactional_ddl:
            assert kept == [], name
        else:  # MySQL/MariaDB: everything up to the last statement that commits implicitly
            assert kept == [create, insert, alter], name
            assert dialect.kept_after_failure([insert], in_transaction=True) == []
            # A DDL statement that fails has first committed what came before it.
            failed_ddl = dialect.kept_after_failure([create, insert], True, "DROP TABLE x")
            assert failed_ddl == [create, insert]
            assert dialect.kept_after_failure([create, insert], True, "SELECT 1") == [create]


@pytest.mark.parametrize(
    ("sql", "commits"),
    [
        ("/* why */ ALTER TABLE t ADD x INT", True),
        ("-- why\n  drop index i on t", True),
        ("# why\nRENAME TABLE a TO b", True),
        ("START  TRANSACTION", True),
        ("COMMIT", True),
        ("SET autocommit = 1", True),
        ("set @@session.autocommit=1", True),
        ("CREATE TEMPORARY TABLE tmp (id INT)", False),
        ("drop temporary table tmp", False),
        ("INSERT INTO created_log VALUES (1)", False),
        ("UPDATE t SET dropped = 1", False),
        ("/* CREATE */ SELECT 1", False),
    ],
)
def test_which_statements_commit_implicitly_on_mysql(sql: str, commits: bool) -> None:
    insert = Statement("INSERT INTO c VALUES (1)", None, 1.0)
    done = [insert, Statement(sql, None, 1.0)]
    assert dialect_named("mysql").kept_after_failure(done, in_transaction=True) == (
        done if commits else []
    )


async def test_status_works_for_a_read_only_user(
    backend: str, db_url: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    """status never writes: an account that may only read sees the history."""
    migrations.add("a", sql("CREATE TABLE a (id INTEGER PRIMARY KEY)"))
    await rung.upgrade(engine, migrations.registry())
    url = sa.make_url(db_url)
    user = f"rung_ro_{uuid.uuid4().hex[:8]}"
    grants = {
        "postgresql": [
            f"CREATE ROLE {user} LOGIN",
            f'GRANT CONNECT ON DATABASE "{url.database}" TO {user}',
            f"GRANT USAGE ON SCHEMA public TO {user}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}",
        ],
        "mariadb": [
            f"CREATE USER '{user}'@'%'",
            f"CREATE USER '{user}'@'localhost'",
            f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%'",
            f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'localhost'",
        ],
    }
    revokes = {  # IF EXISTS: run even when a grant above failed part-way
        "postgresql": [f"DROP OWNED BY {user}", f"DROP ROLE IF EXISTS {user}"],
        "mariadb": [
            f"DROP USER IF EXISTS '{user}'@'%'",
            f"DROP USER IF EXISTS '{user}'@'localhost'",
        ],
    }
    if backend == "sqlite":
        reader_url = sa.make_url(f"sqlite+aiosqlite:///file:{url.database}?mode=ro&uri=true")
    else:
        reader_url = url.set(username=user, password=None)
    admin = create_async_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            for statement in grants.get(backend, []):
                await conn.execute(sa.text(statement))
        reader = create_async_engine(reader_url)
        try:
            states = await rung.status(reader, migrations.registry())
            assert [s.state for s in states] == [rung.State.APPLIED]
            with pytest.raises(errors.HistoryError, match="may write"):  # it really cannot write
                await rung.downgrade(reader, migrations.registry())
        finally:
            await reader.dispose()
    finally:
        async with admin.connect() as conn:
            for statement in revokes.get(backend, []):
                await conn.execute(sa.text(statement))
        await admin.dispose()


async def test_drop_everything_leaves_an_empty_schema(backend: str, engine: AsyncEngine) -> None:
    """What ``rung fresh`` relies on: views on views, foreign keys, and on PostgreSQL the
    types, sequences and extensions a migration makes all go, so every migration applies
    again."""
    made = [
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id))",
        "INSERT INTO parent VALUES (1)",
        "INSERT INTO child VALUES (1, 1)",
        "CREATE VIEW v1 AS SELECT id FROM parent",
        "CREATE VIEW v2 AS SELECT id FROM v1",
    ]
    if backend == "postgresql":
        made += [
            "CREATE TYPE mood AS ENUM ('sad', 'happy')",
            "CREATE TABLE feelings (id SERIAL PRIMARY KEY, m mood)",
            "CREATE SEQUENCE tickets",
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE MATERIALIZED VIEW mv AS SELECT id FROM v2",
        ]
    async with engine.begin() as conn:
        for statement in made:
            await conn.execute(sa.text(statement))
        if backend == "sqlite":
            await conn.execute(sa.text("PRAGMA foreign_keys = ON"))

    async with engine.begin() as conn:
        dropped = await conn.run_sync(dialect_named(backend).drop_everything)

    assert {"table parent", "table child", "view v1", "view v2"} <= set(dropped)
    async with engine.connect() as conn:
        empty = await read_schema(conn)
    assert (empty.tables, empty.views, empty.enums, empty.sequences) == ((), (), (), ())
    assert [e for e in empty.extensions if e != "plpgsql"] == []
    async with engine.begin() as conn:  # and the same migrations apply again
        for statement in made:
            await conn.execute(sa.text(statement))


async def test_has_table_sees_exactly_that_table(backend: str, engine: AsyncEngine) -> None:
    """rung's own existence check (no inspector cache): the name as given, with its case
    and odd characters; another name is missing."""
    dialect = dialect_named(engine.dialect.name)
    name = "Rung Odd-Table"
    quoted = engine.dialect.identifier_preparer.quote(name)
    async with engine.begin() as conn:
        assert not await conn.run_sync(dialect.has_table, name)
        await conn.execute(sa.text(f"CREATE TABLE {quoted} (id INTEGER)"))
        assert await conn.run_sync(dialect.has_table, name)
        assert not await conn.run_sync(dialect.has_table, "rung odd-table_x")
        await conn.execute(sa.text(f"DROP TABLE {quoted}"))
