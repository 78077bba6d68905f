"""Crashes, lost connections, a held lock and a failing migration mid-run: what each
database keeps, what rung says, and that the next run completes.

SQLite has no server to lose a connection to, nor one to end it from: the lost-connection
cases run on PostgreSQL and MariaDB only. A SIGKILL, a held lock and a failing migration
are meaningful everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest
import sqlalchemy as sa
from harness import assert_error, connection, database_state, state
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import rung
from cli_support import RUNG, TIMEOUT, Project, Result, clean_environment
from conftest import MigrationPackage, sql, within
from rung import State, errors
from safety_nets import holding_the_lock

WORKER = Path(__file__).parent.parent / "race_worker.py"
# Whether a failed run leaves nothing behind: MariaDB commits each DDL statement at once.
TRANSACTIONAL_DDL = {"sqlite": True, "postgresql": True, "mariadb": False}

SLEEPS_MIDWAY = """
import asyncio, os, pathlib
await conn.execute(text("CREATE TABLE b (id INTEGER)"))
await conn.execute(text("INSERT INTO b VALUES (1)"))
if os.environ.get("RUNG_TEST_SIGNAL"):
    pathlib.Path(os.environ["RUNG_TEST_SIGNAL"]).touch()
    await asyncio.sleep(60)
"""

LOSES_ITS_CONNECTION = """
import os
if os.environ.get("RUNG_TEST_LOSE_CONNECTION"):
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    else:
        me = (await conn.execute(text("SELECT CONNECTION_ID()"))).scalar()
        await conn.execute(text(f"KILL {me}"))
await conn.execute(text("CREATE TABLE b (id INTEGER)"))
"""


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


def three(migrations: MigrationPackage, middle: str) -> list[str]:
    migrations.add("a", sql("CREATE TABLE a (id INTEGER)"), sql("DROP TABLE a"))
    migrations.add("b", middle, sql("DROP TABLE b"))
    migrations.add("c", sql("CREATE TABLE c (id INTEGER)"), sql("DROP TABLE c"))
    return migrations.names


async def test_sigkill_mid_migration(
    backend: str,
    db_url: str,
    engine: AsyncEngine,
    migrations: MigrationPackage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = three(migrations, SLEEPS_MIDWAY)
    flag = tmp_path / "sleeping"
    worker = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            db_url,
            str(migrations.folder.parent),
            migrations.name,
            ",".join(names),
            "0",
            "0",
        ],
        env={**os.environ, "RUNG_TEST_SIGNAL": str(flag)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not flag.exists():
        assert worker.poll() is None and time.monotonic() < deadline, "worker never got mid-way"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    reg = migrations.registry()
    if TRANSACTIONAL_DDL[backend]:
        # Nothing of the interrupted run: not a, not b, not even the history table; only
        # rung's lock table, made before the run (its lease is the killed process's).
        assert await table_names(engine) == {"rung_migrations_lock"}
        # The holder was a process of this host that is gone: taken over at once, without
        # waiting for its lease to run out.
        caplog.set_level(logging.WARNING, logger="rung")
        done = await rung.upgrade(engine, reg, lock_timeout=60)
        assert "took over the lock of a run that is gone" in caplog.text
        assert [d.name for d in done] == names
        return
    # MariaDB committed a, and b's CREATE TABLE; b is marked running, and the next run says so.
    assert {"a", "b"} <= await table_names(engine)
    states = {s.name: s.state for s in await rung.status(engine, reg)}
    assert states == {names[0]: State.APPLIED, names[1]: State.RUNNING, names[2]: State.PENDING}
    # The record, written just before the CREATE TABLE committed the transaction, names it
    # as the statement in flight; the INSERT after it was rolled back with the killed
    # transaction, and is not named.
    running = next(s for s in await rung.status(engine, reg) if s.name == names[1])
    assert running.statements == ()
    assert running.in_flight is not None
    assert running.in_flight.sql == "CREATE TABLE b (id INTEGER)"
    with pytest.raises(errors.NeedsRepair, match=f"{names[1]} was interrupted part-way") as caught:
        await rung.upgrade(engine, reg, lock_timeout=10)
    assert "it had sent CREATE TABLE b (id INTEGER) when it stopped, which may or may not" in (
        str(caught.value)
    )
    # The person undoes what was kept and tells rung; the next run completes.
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE b"))
    await rung.repair(engine, reg, names[1], applied=False)
    assert [d.name for d in await rung.upgrade(engine, reg)] == names[1:]


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
async def test_server_ends_the_connection_mid_run(
    engine: AsyncEngine, migrations: MigrationPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = three(migrations, LOSES_ITS_CONNECTION)
    reg = migrations.registry()
    monkeypatch.setenv("RUNG_TEST_LOSE_CONNECTION", "1")
    with pytest.raises(errors.MigrationFailed, match=names[1]) as caught:
        await rung.upgrade(engine, reg, lock_timeout=10)
    assert "kept none" in str(caught.value) or "rolled back" in str(caught.value)
    # Nothing half-recorded: b is not marked anything.
    states = {s.name: s.state for s in await rung.status(engine, reg)}
    assert states[names[1]] is State.PENDING
    monkeypatch.delenv("RUNG_TEST_LOSE_CONNECTION")
    await engine.dispose()  # drop the pooled connection the server killed
    done = await rung.upgrade(engine, reg, lock_timeout=10)
    assert names[1] in [d.name for d in done]
    assert [s.state for s in await rung.status(engine, reg)] == [State.APPLIED] * 3


SLEEPS_ON_DEMAND = """
import os
await conn.execute(text("CREATE TABLE b (id INTEGER)"))
if os.environ.get("RUNG_TEST_SLEEP"):
    sleep = "SELECT pg_sleep(30)" if conn.dialect.name == "postgresql" else "SELECT SLEEP(30)"
    await conn.execute(text(sleep))
"""
# The backend running the sleeping statement, and how another session ends it.
SLEEPER = {
    "postgresql": "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' "
    "AND datname = current_database() AND pid <> pg_backend_pid()",
    "mariadb": "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(30)' "
    "AND DB = DATABASE() AND ID <> CONNECTION_ID()",
}
TERMINATE = {"postgresql": "SELECT pg_terminate_backend({})", "mariadb": "KILL {}"}


async def sleeper(conn: AsyncConnection, backend: str, run: subprocess.Popen[str]) -> object:
    deadline = time.monotonic() + 30
    while True:
        found = await conn.scalar(sa.text(SLEEPER[backend]))
        await conn.rollback()  # PostgreSQL's statistics are read once per transaction
        if found is not None:
            return found
        assert run.poll() is None and time.monotonic() < deadline, "rung never got to the sleep"
        await asyncio.sleep(0.05)


# Every other session on this database: rung's own, the lock's and the journal's included.
EVERYONE = {
    "postgresql": "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid()",
    "mariadb": "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
    "AND ID <> CONNECTION_ID()",
}


async def end_the_sleeper(
    db_url: str, backend: str, run: subprocess.Popen[str], *, everyone: bool = False
) -> None:
    async with connection(db_url) as conn:
        victims = [await sleeper(conn, backend, run)]
        if everyone:  # as a server restart would
            victims = [row[0] for row in await conn.execute(sa.text(EVERYONE[backend]))]
        for victim in victims:
            await conn.execute(sa.text(TERMINATE[backend].format(victim)))


@pytest.mark.parametrize("everyone", [False, True], ids=["its-connection", "every-connection"])
@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_server_ends_the_connection_from_outside(
    backend: str, db_url: str, tmp_path: Path, everyone: bool
) -> None:
    """Another session ends rung's connection (pg_terminate_backend, KILL) while a migration
    runs, or every connection rung has (its lock's too, as a server restart would): the
    error is one line, the migration's, and nothing is half-recorded."""
    project = Project.create(tmp_path, db_url)
    project.add("a", ["CREATE TABLE a (id INTEGER)"], ["DROP TABLE a"])
    b = project.add("b", SLEEPS_ON_DEMAND, ["DROP TABLE b"])
    project.add("c", ["CREATE TABLE c (id INTEGER)"], ["DROP TABLE c"])
    before = state(db_url)
    env = clean_environment(DATABASE_URL=db_url, RUNG_TEST_SLEEP="1")
    run = subprocess.Popen(
        [*RUNG, "up"], cwd=project.root, env=env, stdout=PIPE, stderr=PIPE, text=True
    )
    try:
        asyncio.run(end_the_sleeper(db_url, backend, run, everyone=everyone))
        out, err = run.communicate(timeout=TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)
    error = assert_error(Result(run.returncode, out, err), 1, f"migration {b} failed (up)")
    assert "history table" not in error
    assert "the connection to the database was lost" in error, error
    assert "fix the migration" not in error and "cannot switch to state" not in error
    assert "[SQL:" not in err and "Background on this error" not in err, err
    if backend == "postgresql":  # one transaction, rolled back by the server
        assert state(db_url) == before
    else:  # a committed, and b's CREATE TABLE: kept, recorded, and refused until repaired
        assert "CREATE TABLE b" in error
        states = ["applied", "failed", "pending"]
        assert project.states() == dict(zip(project.names, states, strict=True))
        assert_error(project.rung("up"), 1, f"migration {b} failed", "CREATE TABLE b")
        project.execute("DROP TABLE b")
        assert project.rung("repair", b, "--not-applied").code == 0
    again = project.rung("up")
    assert again.code == 0, again.text
    assert set(project.states().values()) == {"applied"}


async def test_lock_held_by_another_session(backend: str, db_url: str, tmp_path: Path) -> None:
    project = Project.create(tmp_path, db_url)
    project.add("a", ["CREATE TABLE a (id INTEGER)"], ["DROP TABLE a"])
    timeout = 2.0
    async with holding_the_lock(db_url) as holder:
        before = await database_state(db_url)
        started = time.monotonic()
        result = project.rung("up", "--lock-timeout", f"{timeout:g}")
        elapsed = time.monotonic() - started
        assert await database_state(db_url) == before
    assert 0.75 * timeout < elapsed < within(timeout)  # it waited, and not without end
    error = assert_error(result, 1, f"lock for more than {timeout:g} s", "--lock-timeout")
    host, pid = holder.split(":")[:2]
    assert f"held by host {host}, pid {pid} since" in error


# What each database says about the 11th migration's statement, in rung's error.
NO_SUCH_TABLE = {
    "sqlite": "no such table: no_such_table_k",
    "postgresql": 'relation "no_such_table_k" does not exist',
    "mariadb": "no_such_table_k' doesn't exist",
}


def test_failing_migration_in_the_middle_of_twenty(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    project = Project.create(tmp_path, db_url)
    for i in range(1, 21):
        fails = ["SELECT * FROM no_such_table_k"] if i == 11 else []
        project.add(f"step{i}", [f"CREATE TABLE t{i} (id INTEGER)", *fails], [f"DROP TABLE t{i}"])
    eleventh = project.names[10]
    project.execute()  # the database exists (a SQLite file too): up may create nothing else
    before = state(db_url)
    result = project.rung("up")
    assert_error(result, 1, f"migration {eleventh} failed (up)", NO_SUCH_TABLE[backend])
    if TRANSACTIONAL_DDL[backend]:  # one transaction: nothing kept
        assert state(db_url) == before
        assert set(project.states().values()) == {"pending"}
        return
    # MariaDB: ten committed, the 11th's CREATE TABLE kept and the 11th recorded failed.
    states = ["applied"] * 10 + ["failed"] + ["pending"] * 9
    assert project.states() == dict(zip(project.names, states, strict=True))
    assert project.tables() >= {f"t{i}" for i in range(1, 12)}
    assert_error(project.rung("up"), 1, f"migration {eleventh} failed", "CREATE TABLE t11")
