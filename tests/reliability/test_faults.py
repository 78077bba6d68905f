"""Crashes and lost connections mid-run: what each database keeps, and that the next run completes.

SQLite has no server to lose a connection to: the lost-connection cases run on PostgreSQL
and MariaDB only. A SIGKILL is meaningful everywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from conftest import MigrationPackage, sql
from rung import State, errors
from rung.dialects import dialect_named

WORKER = Path(__file__).parent.parent / "race_worker.py"

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
    if dialect_named(backend).transactional_ddl:
        # Nothing of the interrupted run: not a, not b, not even the history table.
        assert await table_names(engine) == set()
        done = await rung.upgrade(engine, reg, lock_timeout=10)  # the lock is free
        assert [d.name for d in done] == names
        return
    # MariaDB committed a, and b's CREATE TABLE; b is marked running, and the next run says so.
    assert {"a", "b"} <= await table_names(engine)
    states = {s.name: s.state for s in await rung.status(engine, reg)}
    assert states == {names[0]: State.APPLIED, names[1]: State.RUNNING, names[2]: State.PENDING}
    # The journal kept on the side says precisely what was committed: the CREATE TABLE, not
    # the INSERT after it (rolled back with the killed transaction).
    running = next(s for s in await rung.status(engine, reg) if s.name == names[1])
    assert [s.sql for s in running.statements] == ["CREATE TABLE b (id INTEGER)"]
    with pytest.raises(errors.NeedsRepair, match=f"{names[1]} was interrupted part-way") as caught:
        await rung.upgrade(engine, reg, lock_timeout=10)
    assert "the database kept: CREATE TABLE b (id INTEGER);" in str(caught.value)
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
