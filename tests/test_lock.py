"""rung's lock, the same on every database: one holder at a time, per tracking table; a
waiter that times out names the holder; a dead holder's lease runs out; a holder whose
lease was taken over records nothing more; ``unlock`` frees only a holder that is gone."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import rung
from conftest import MigrationPackage, sql
from rung import errors
from rung.cli import main
from rung.dialects import dialect_named
from rung.history import History
from rung.lock import Lease

SLACK = 10.0  # seconds on top of any configured bound: the machine may be loaded


def history(engine: AsyncEngine, table: str = "rung_migrations") -> History:
    return History(table, dialect_named(engine.dialect.name))


async def abandon(lease: Lease) -> None:
    """What a killed holder leaves: a lease nobody renews or releases."""
    assert lease._renewing is not None
    lease._renewing.cancel()
    await lease._stack.aclose()


async def test_one_holder_at_a_time_and_a_waiter_names_it(db_url: str, engine: AsyncEngine) -> None:
    other = create_async_engine(db_url)
    try:
        async with Lease(engine, history(engine), timeout=5) as first:
            started = time.monotonic()
            with pytest.raises(errors.LockTimeout, match="--lock-timeout") as caught:
                async with Lease(other, history(other), timeout=0.5):
                    pass
            assert 0.4 < time.monotonic() - started < 0.5 + SLACK
            assert caught.value.holder == first.me
            pid = first.me.split(":")[1]
            assert f"pid {pid} since" in caught.value.message
            assert "renewed" in caught.value.message
        async with Lease(other, history(other), timeout=5):  # free now, at once
            pass
    finally:
        await other.dispose()


async def test_the_lock_is_per_tracking_table(db_url: str, engine: AsyncEngine) -> None:
    other = create_async_engine(db_url)
    try:
        async with (
            Lease(engine, history(engine, "history_a"), timeout=0.5),
            Lease(other, history(other, "history_b"), timeout=0.5),
        ):
            pass
    finally:
        await other.dispose()


async def test_a_waiter_holds_no_transaction(db_url: str, engine: AsyncEngine) -> None:
    """While it waits, the waiter's connection is idle between attempts: a CREATE INDEX
    CONCURRENTLY on PostgreSQL would otherwise wait for it."""
    other = create_async_engine(db_url)
    try:
        async with Lease(engine, history(engine), timeout=5):
            waiter = Lease(other, history(other), timeout=1.0)
            task = asyncio.ensure_future(waiter.__aenter__())
            await asyncio.sleep(0.3)
            assert not task.done()
            with pytest.raises(errors.LockTimeout):
                await task
            assert waiter._conn is None  # its connection was closed, not left in a transaction
    finally:
        await other.dispose()


async def test_a_dead_holders_lease_runs_out(db_url: str, engine: AsyncEngine) -> None:
    other = create_async_engine(db_url)
    try:
        dead = Lease(engine, history(engine), timeout=5, lease=1.0)
        await dead.__aenter__()
        await abandon(dead)
        started = time.monotonic()
        async with Lease(other, history(other), timeout=30) as next_one:
            assert time.monotonic() - started < 1.0 + SLACK
            async with other.begin() as conn:  # the survivor writes; the dead one cannot
                await next_one.fence(conn)
        async with engine.connect() as conn:
            with pytest.raises(errors.LockLost, match="taken over"):
                async with conn.begin():
                    await dead.fence(conn)
    finally:
        await other.dispose()


async def test_a_live_holder_keeps_renewing(db_url: str, engine: AsyncEngine) -> None:
    other = create_async_engine(db_url)
    try:
        async with Lease(engine, history(engine), timeout=5, lease=1.0) as alive:
            await asyncio.sleep(2.5)  # more than two leases: only renewal keeps it
            with pytest.raises(errors.LockTimeout):
                async with Lease(other, history(other), timeout=0.3):
                    pass
            async with engine.begin() as conn:
                await alive.fence(conn)
    finally:
        await other.dispose()


async def test_unlock_frees_only_a_holder_that_is_gone(db_url: str, engine: AsyncEngine) -> None:
    assert await rung.unlock(engine) is None  # nothing to free
    async with Lease(engine, history(engine), timeout=5) as alive:
        with pytest.raises(errors.LockHeld, match="alive"):
            await rung.unlock(engine)
        holder = await rung.lock_holder(engine)
        assert holder is not None and holder.holder == alive.me and not holder.expired
    assert await rung.lock_holder(engine) is None
    dead = Lease(engine, history(engine), timeout=5, lease=1.0)
    await dead.__aenter__()
    await abandon(dead)
    await asyncio.sleep(1.5)
    freed = await rung.unlock(engine)
    assert freed is not None and freed.holder == dead.me and freed.gone
    assert await rung.lock_holder(engine) is None


async def test_the_lock_row_is_made_once_by_racing_first_runs(
    db_url: str, engine: AsyncEngine
) -> None:
    engines = [create_async_engine(db_url) for _ in range(4)]
    got: list[str] = []

    async def take(e: AsyncEngine) -> None:
        async with Lease(e, history(e), timeout=30) as lease:
            got.append(lease.me)
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(take(e) for e in engines))
    finally:
        for e in engines:
            await e.dispose()
    assert len(got) == 4
    t = history(engine).lock
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(t.c.name, t.c.holder))).all()
    assert [tuple(r) for r in rows] == [("lock", None)]


async def test_status_names_the_holder_and_unlock_frees_only_a_gone_one(
    db_url: str,
    engine: AsyncEngine,
    migrations: MigrationPackage,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command line: ``rung status`` says who holds the lock and since when; ``rung
    unlock`` refuses while the holder lives (exit 1, one line) and frees a dead one."""
    migrations.add("a", sql("CREATE TABLE a (id INTEGER)"), sql("DROP TABLE a"))
    (migrations.folder / "lib.py").write_text(
        "import importlib\nfrom rung import Migration\n"
        f"MIGRATIONS = [Migration.from_module(importlib.import_module('{migrations.name}.' + n))"
        f" for n in {migrations.names!r}]\n"
    )
    args = ["--url", db_url, "--migrator", f"{migrations.name}.lib:MIGRATIONS"]

    def rung_(*command: str) -> tuple[int, str, str]:
        code = main([*command, *args])
        out, err = capsys.readouterr()
        return code, out, err

    async with Lease(engine, history(engine), timeout=5) as alive:
        code, out, _ = await asyncio.to_thread(rung_, "status")
        pid = alive.me.split(":")[1]
        assert code == 0 and f"lock: held by host {socket.gethostname()}, pid {pid} since" in out
        code, _, err = await asyncio.to_thread(rung_, "unlock")
        assert code == 1 and err.startswith("rung: error: the lock is held by host"), err
        assert "holder is alive" in err and len(err.strip().splitlines()) == 1
    code, out, _ = await asyncio.to_thread(rung_, "status", "--json")
    assert code == 0 and json.loads(out)["lock"] is None
    dead = Lease(engine, history(engine), timeout=5)
    await dead.__aenter__()
    await abandon(dead)
    dead_pid = dead.me.split(":")[1]
    dead_me = dead.me.replace(f":{dead_pid}:", ":999999999:", 1)  # a process that is gone
    async with engine.begin() as conn:
        lock_table = history(engine).lock
        await conn.execute(sa.update(lock_table).values(holder=dead_me))
    code, out, _ = await asyncio.to_thread(rung_, "unlock")
    assert code == 0 and "cleared the lock, which was held by host" in out, out
    assert await rung.lock_holder(engine) is None
