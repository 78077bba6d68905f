"""The behavioural suite: the same scenarios on a SQLite file, PostgreSQL and MariaDB."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import rung
from conftest import MigrationPackage, sql
from rung import State, errors
from rung.dialects import dialect_named
from safety_nets import history_of, holding_the_lock, statements

CREATE_A = sql("CREATE TABLE a (id INTEGER PRIMARY KEY)")
DROP_A = sql("DROP TABLE a")


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    return set(names)


async def history_rows(
    engine: AsyncEngine, table: str = "rung_migrations"
) -> list[tuple[str, str]]:
    if table not in await tables(engine):
        return []
    t = sa.table(table, sa.column("name"), sa.column("state"))
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(t.c.name, t.c.state).order_by(t.c.name))).all()
    return [(r[0], r[1]) for r in rows]


def ladder(migrations: MigrationPackage, n: int) -> list[str]:
    return [
        migrations.add(
            f"t{i}", sql(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY)"), sql(f"DROP TABLE t{i}")
        )
        for i in range(1, n + 1)
    ]


def is_transactional(backend: str) -> bool:
    return dialect_named(backend).transactional_ddl


async def test_template_bootstraps_and_second_run_does_nothing(engine: AsyncEngine) -> None:
    from server.migration.src.lib import Migrator

    done = await rung.upgrade(engine, Migrator)
    assert [d.name for d in done] == ["m20260408_000001_create_todos_table"]
    assert done[0].statements and "CREATE TABLE" in done[0].statements[0].sql
    async with engine.connect() as conn:
        columns = await conn.run_sync(lambda c: sa.inspect(c).get_columns("todos"))
    assert [c["name"] for c in columns] == [
        "id",
        "title",
        "description",
        "status",
        "created_at",
        "updated_at",
    ]
    assert await rung.upgrade(engine, Migrator) == []
    await rung.downgrade(engine, Migrator)
    assert "todos" not in await tables(engine)


async def test_status_never_writes_on_an_untouched_database(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    ladder(migrations, 2)
    states = await rung.status(engine, migrations.registry())
    assert [s.state for s in states] == [State.PENDING, State.PENDING]
    assert await tables(engine) == set()


async def test_steps_and_to(engine: AsyncEngine, migrations: MigrationPackage) -> None:
    names = ladder(migrations, 5)
    reg = migrations.registry()
    assert [d.name for d in await rung.upgrade(engine, reg, steps=2)] == names[:2]
    assert [d.name for d in await rung.upgrade(engine, reg, to=names[3])] == names[2:4]
    assert [d.name for d in await rung.upgrade(engine, reg, to=names[1])] == []
    assert [d.name for d in await rung.downgrade(engine, reg)] == [names[3]]
    assert [d.name for d in await rung.downgrade(engine, reg, steps=2)] == [names[2], names[1]]
    assert [d.name for d in await rung.upgrade(engine, reg)] == names[1:]
    assert [d.name for d in await rung.downgrade(engine, reg, to=names[1])] == names[:1:-1]
    assert [d.name for d in await rung.downgrade(engine, reg, all=True)] == names[1::-1]
    assert await tables(engine) == {
        "rung_migrations",
        "rung_migrations_lock",
        "rung_migrations_meta",
    }
    assert await history_rows(engine) == []


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"steps": -1}, {"steps": 1, "all": True}, {"to": "x", "steps": 2}]
)
async def test_bad_downgrade_arguments(
    engine: AsyncEngine, migrations: MigrationPackage, kwargs: dict[str, object]
) -> None:
    ladder(migrations, 1)
    await rung.upgrade(engine, migrations.registry())
    with pytest.raises(errors.UsageError):
        await rung.downgrade(engine, migrations.registry(), **kwargs)  # type: ignore[arg-type]
    assert len(await history_rows(engine)) == 1


async def test_unknown_target_is_refused(engine: AsyncEngine, migrations: MigrationPackage) -> None:
    ladder(migrations, 1)
    with pytest.raises(errors.UnknownTarget, match="m20991231_000001_nope"):
        await rung.upgrade(engine, migrations.registry(), to="m20991231_000001_nope")
    assert await tables(engine) == set()


async def test_changed_checksum_refused_until_repaired(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    a = migrations.add("a", CREATE_A, DROP_A)
    await rung.upgrade(engine, migrations.registry())
    # Comments and formatting are not changes...
    migrations.write(a, "# a comment\n" + CREATE_A, DROP_A)
    assert await rung.upgrade(engine, migrations.registry()) == []
    # ...behaviour is.
    migrations.write(a, sql("CREATE TABLE a (id INTEGER PRIMARY KEY, x INTEGER)"), DROP_A)
    migrations.add("b", sql("CREATE TABLE b (id INTEGER PRIMARY KEY)"))
    reg = migrations.registry()
    assert (await rung.status(engine, reg))[0].state is State.MODIFIED
    with pytest.raises(errors.ChecksumMismatch, match=f"{a}.*rung repair {a}"):
        await rung.upgrade(engine, reg)
    assert "b" not in await tables(engine)
    repairs = await rung.repair(engine, reg)
    assert [(r.name, r.resolution) for r in repairs] == [(a, rung.plan.Resolution.ACCEPT_CHECKSUM)]
    assert [d.name for d in await rung.upgrade(engine, reg)] == [migrations.names[1]]


async def test_failure_in_the_middle(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    first = migrations.add("first", CREATE_A, DROP_A)
    await rung.upgrade(engine, migrations.registry())
    migrations.add("b", sql("CREATE TABLE b (id INTEGER PRIMARY KEY)"), sql("DROP TABLE b"))
    broken = migrations.add(
        "broken",
        sql("CREATE TABLE c (id INTEGER PRIMARY KEY)")
        + "\n"
        + sql("INSERT INTO c VALUES (1)")
        + "\n"
        + sql("SELECT * FROM no_such_table"),
        sql("DROP TABLE c"),
    )
    migrations.add("d", sql("CREATE TABLE d (id INTEGER PRIMARY KEY)"))
    reg = migrations.registry()
    with pytest.raises(errors.MigrationFailed, match=f"migration {broken} failed") as failure:
        await rung.upgrade(engine, reg)
    assert "no_such_table" in str(failure.value)
    if is_transactional(backend):
        # All or nothing: schema and history exactly as before the run.
        assert "rolled back" in str(failure.value)
        assert "committed before it" not in str(failure.value)  # b went with it, and says so
        assert f"nor of {migrations.names[1]}, which ran before it" in str(failure.value)
        assert failure.value.rolled_back == (migrations.names[1],)
        own = {"rung_migrations", "rung_migrations_lock", "rung_migrations_meta"}
        assert await tables(engine) == {"a", *own}
        assert await history_rows(engine) == [(first, "applied")]
        return
    # MariaDB commits DDL: b stays, c stays (created and committed), d never ran.
    message = str(failure.value)
    assert "kept 1 statement(s)" in message and "CREATE TABLE c" in message
    assert "INSERT" not in message.split("kept")[1]  # rolled back with the transaction
    assert "rung repair" in message
    assert {"b", "c"} <= await tables(engine) and "d" not in await tables(engine)
    assert await history_rows(engine) == [
        (first, "applied"),
        (migrations.names[1], "applied"),
        (broken, "failed"),
    ]
    state = {s.name: s for s in await rung.status(engine, reg)}[broken]
    assert state.state is State.FAILED and "no_such_table" in (state.error or "")
    assert [s.sql for s in state.statements] == ["CREATE TABLE c (id INTEGER PRIMARY KEY)"]
    with pytest.raises(errors.NeedsRepair, match=f"{broken}.*rung repair {broken} --applied"):
        await rung.upgrade(engine, reg)
    # A person undoes what was kept, fixes the migration and tells rung.
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE c"))
    migrations.write(broken, sql("CREATE TABLE c (id INTEGER PRIMARY KEY)"), sql("DROP TABLE c"))
    reg = migrations.registry()
    await rung.repair(engine, reg, broken, applied=False)
    assert [d.name for d in await rung.upgrade(engine, reg)] == migrations.names[2:]


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
async def test_a_failing_ddl_statement_first_commits_what_came_before_it(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    """MariaDB commits the open transaction before it runs a DDL statement, even one that
    then fails: the INSERT before the failing ALTER is kept, and the journal says so."""
    broken = migrations.add(
        "broken",
        statements(
            "CREATE TABLE half (id INTEGER PRIMARY KEY)",
            "INSERT INTO half VALUES (1)",
            "ALTER TABLE no_such_table ADD x INTEGER",
        ),
    )
    with pytest.raises(errors.MigrationFailed, match="kept 2 statement") as failure:
        await rung.upgrade(engine, migrations.registry())
    assert "INSERT INTO half VALUES (1)" in str(failure.value)
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT id FROM half"))).scalars().all() == [1]
    state = (await rung.status(engine, migrations.registry()))[0]
    assert (state.name, state.state) == (broken, State.FAILED)
    assert [s.sql for s in state.statements] == [
        "CREATE TABLE half (id INTEGER PRIMARY KEY)",
        "INSERT INTO half VALUES (1)",
    ]


async def test_per_migration_mode_keeps_what_succeeded(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    names = ladder(migrations, 2)
    broken = migrations.add("broken", sql("SELECT * FROM no_such_table"))
    with pytest.raises(errors.MigrationFailed, match=broken):
        await rung.upgrade(engine, migrations.registry(), per_migration=True)
    rows = await history_rows(engine)
    assert rows[:2] == [(names[0], "applied"), (names[1], "applied")]
    assert {"t1", "t2"} <= await tables(engine)


async def test_sqlite_rollback_really_removes_ddl(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    """Python's sqlite3 does not BEGIN before DDL by itself: rung must, or this table stays."""
    name = migrations.add("a", CREATE_A + "\n" + "raise RuntimeError('boom')", DROP_A)
    with pytest.raises(errors.MigrationFailed, match="RuntimeError: boom"):
        await rung.upgrade(engine, migrations.registry())
    if is_transactional(backend):
        assert "a" not in await tables(engine)
        assert await history_rows(engine) == []
    else:  # MariaDB committed the CREATE TABLE and says so
        assert "a" in await tables(engine)
        assert await history_rows(engine) == [(name, "failed")]


NON_TRANSACTIONAL = {
    "sqlite": "VACUUM",
    "postgresql": "CREATE INDEX CONCURRENTLY ix_a_id ON a (id)",
    "mariadb": "CREATE INDEX ix_a_id ON a (id)",
}


async def test_non_transactional_migration(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("a", CREATE_A, DROP_A)
    idx = migrations.add("idx", sql(NON_TRANSACTIONAL[backend]), transactional=False)
    migrations.add("b", sql("CREATE TABLE b (id INTEGER PRIMARY KEY)"))
    done = await rung.upgrade(engine, migrations.registry())
    assert [d.name for d in done] == migrations.names
    assert await history_rows(engine) == [(n, "applied") for n in migrations.names]
    assert [s.sql for s in done[1].statements] == [NON_TRANSACTIONAL[backend]]
    assert idx in {s.name for s in await rung.status(engine, migrations.registry())}


async def test_non_transactional_failure_is_recorded_failed(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("a", CREATE_A, DROP_A)
    bad = migrations.add(
        "bad",
        sql("CREATE TABLE kept (id INTEGER PRIMARY KEY)") + "\n" + sql("SELECT * FROM nope"),
        transactional=False,
    )
    with pytest.raises(errors.MigrationFailed, match="kept 1 statement"):
        await rung.upgrade(engine, migrations.registry())
    assert "kept" in await tables(engine)
    assert (await history_rows(engine))[-1] == (bad, "failed")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_failed_concurrent_index_build_leaves_no_invalid_index(
    engine: AsyncEngine, migrations: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    """CREATE UNIQUE INDEX CONCURRENTLY over duplicate values fails and leaves an INVALID
    index; it is certainly the migration's own (new, and named by the failing statement),
    so rung drops it: the migration stays pending, and once the data is fixed it applies."""
    migrations.add(
        "t",
        sql("CREATE TABLE t (v INTEGER)") + "\n" + sql("INSERT INTO t VALUES (1), (1)"),
        sql("DROP TABLE t"),
    )
    index = migrations.add(
        "unique_v",
        sql("CREATE UNIQUE INDEX CONCURRENTLY ix_t_v ON t (v)"),
        sql("DROP INDEX CONCURRENTLY ix_t_v"),
        transactional=False,
    )
    caplog.set_level(logging.WARNING, logger="rung")
    with pytest.raises(errors.MigrationFailed, match="kept none of its statements") as caught:
        await rung.upgrade(engine, migrations.registry())
    assert "could not create unique index" in str(caught.value)
    assert "dropped ix_t_v, which the failed statement left half-made" in caplog.text
    invalid = "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
    async with engine.connect() as conn:
        assert await conn.scalar(sa.text(invalid)) == 0
        assert await conn.scalar(sa.text("SELECT to_regclass('ix_t_v')")) is None
    assert (await history_rows(engine))[-1] == (migrations.names[0], "applied")
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM t"))
    assert [d.name for d in await rung.upgrade(engine, migrations.registry())] == [index]


async def test_unknown_future_and_out_of_order_histories(
    engine: AsyncEngine, migrations: MigrationPackage, caplog: pytest.LogCaptureFixture
) -> None:
    names = ladder(migrations, 3)
    reg = migrations.registry()
    # A newer release applied all three; this older one knows only the first two: warn, go on.
    await rung.upgrade(engine, reg)
    with caplog.at_level(logging.WARNING, logger="rung"):
        assert await rung.upgrade(engine, reg[:2]) == []
    assert names[2] in caplog.text
    # Unknown and interleaved: refused.
    with pytest.raises(errors.UnknownApplied, match=names[1]):
        await rung.upgrade(engine, [reg[0], reg[2]])
    # A merged branch: pending but older than an applied one.
    await rung.downgrade(engine, reg, all=True)
    await rung.upgrade(engine, [reg[0], reg[2]])
    with pytest.raises(errors.OutOfOrder, match=f"{names[1]}.*--out-of-order"):
        await rung.upgrade(engine, reg)
    done = await rung.upgrade(engine, reg, out_of_order=True)
    assert [d.name for d in done] == [names[1]]


async def test_irreversible_downgrade_refused_before_anything_runs(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    a = migrations.add("a", CREATE_A, None)
    migrations.add("b", sql("CREATE TABLE b (id INTEGER PRIMARY KEY)"), sql("DROP TABLE b"))
    reg = migrations.registry()
    await rung.upgrade(engine, reg)
    with pytest.raises(errors.Irreversible, match=a):
        await rung.downgrade(engine, reg, all=True)
    assert {"a", "b"} <= await tables(engine)
    assert len(await history_rows(engine)) == 2


async def test_journal_records_statements_with_parameters(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    name = migrations.add(
        "data",
        CREATE_A.replace("id INTEGER PRIMARY KEY", "id INTEGER PRIMARY KEY, v VARCHAR(10)")
        + "\n"
        + "await conn.execute(text('INSERT INTO a (id, v) VALUES (:i, :v)'), {'i': 1, 'v': 'x'})",
    )
    await rung.upgrade(engine, migrations.registry())
    state = (await rung.status(engine, migrations.registry()))[0]
    assert state.name == name and len(state.statements) == 2
    assert "INSERT INTO a" in state.statements[1].sql
    assert state.statements[1].params in ([1, "x"], {"i": 1, "v": "x"})
    assert all(s.duration_ms >= 0 for s in state.statements)


async def test_history_table_with_unexpected_shape(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    ladder(migrations, 1)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE rung_migrations (version INTEGER)"))
    with pytest.raises(errors.HistoryError, match=r"not a rung history.*--table"):
        await rung.upgrade(engine, migrations.registry())
    with pytest.raises(errors.HistoryError):
        await rung.status(engine, migrations.registry())
    assert await tables(engine) == {"rung_migrations"}


@pytest.mark.parametrize("made", ["history only", "history and empty meta"])
async def test_a_first_run_killed_before_its_format_marker_is_not_refused(
    engine: AsyncEngine, migrations: MigrationPackage, made: str
) -> None:
    """On MariaDB each CREATE TABLE commits at once: a first run killed after creating the
    history table (and perhaps the meta table) but before writing the format marker leaves
    tables that are rung's own; the next run recognises them by their columns and goes on.
    A table of another shape is still refused (test above)."""
    names = ladder(migrations, 2)
    history = history_of(engine)
    async with engine.begin() as conn:
        await conn.run_sync(history.table.create)
        if made == "history and empty meta":
            await conn.run_sync(history.meta.create)
    assert [d.name for d in await rung.upgrade(engine, migrations.registry())] == names
    async with engine.connect() as conn:
        assert await history.get_meta(conn, "format") == "1"


async def test_history_rows_changed_by_hand_are_named_not_crashed_on(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    ladder(migrations, 1)
    reg = migrations.registry()
    await rung.upgrade(engine, reg)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE rung_migrations SET journal = 'not json'"))
    with pytest.raises(errors.HistoryError, match=r"the row of '.*' in 'rung_migrations' cannot"):
        await rung.status(engine, reg)
    assert await rung.upgrade(engine, reg) == []  # planning reads no applied journal


async def test_repair_marks_applied_and_not_applied(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    names = ladder(migrations, 2)
    reg = migrations.registry()
    await rung.repair(engine, reg, names[0], applied=True)
    assert [s.state for s in await rung.status(engine, reg)] == [State.APPLIED, State.PENDING]
    await rung.repair(engine, reg, names[0], applied=False)
    assert [s.state for s in await rung.status(engine, reg)] == [State.PENDING, State.PENDING]
    assert await rung.repair(engine, reg) == []


async def test_baseline_records_without_running(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    from server.migration.src.lib import Migrator

    # A database the template's earlier runner created, with no history table.
    await rung.upgrade(engine, Migrator, table="scratch_history")
    assert await rung.baseline(engine, Migrator) == ["m20260408_000001_create_todos_table"]
    assert await rung.upgrade(engine, Migrator) == []
    assert [s.state for s in await rung.status(engine, Migrator)] == [State.APPLIED]


async def test_lock_timeout_names_the_holder(
    db_url: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    ladder(migrations, 1)
    async with holding_the_lock(db_url) as holder:
        with pytest.raises(errors.LockTimeout, match="--lock-timeout") as caught:
            await rung.upgrade(engine, migrations.registry(), lock_timeout=0.5)
        assert caught.value.holder == holder
        assert f"pid {holder.split(':')[1]}" in caught.value.message
    assert len(await rung.upgrade(engine, migrations.registry())) == 1


async def test_unreachable_database_masks_the_password() -> None:
    engine = create_async_engine(
        "postgresql+asyncpg://someone:s3cret-pw@127.0.0.1:1/db", connect_args={"timeout": 2}
    )
    try:
        with pytest.raises(errors.DatabaseUnreachable) as caught:
            await rung.status(engine, [])
    finally:
        await engine.dispose()
    assert "s3cret-pw" not in str(caught.value) and "***" in str(caught.value)
    assert caught.value.exit_code == 2
