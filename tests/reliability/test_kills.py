"""SIGKILL at random instants of a run that mixes transactional and non-transactional
migrations: whatever the instant, rung's record matches the database, and the next run
either completes or refuses naming the one migration a person must look at.

Each migration i creates table t_i and logs 'm_i' in ``applied_log``, a statement at a
time with a short sleep between, so that a kill can land before, between and after
statements, and while rung writes its own records. Its record must then say:

- no row: nothing of it happened (no t_i, not logged);
- applied: all of it happened, once (t_i there, logged exactly once);
- running (interrupted): every statement its journal lists as kept happened, and the one
  it names as in flight may have; nothing else did. The next run refuses, naming it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import connection, rows

from cli_support import clean_environment
from conftest import MigrationPackage, create_database, drop_database, fresh_url, within

TRIALS = 6
MIGRATIONS = 6
RUN_SECONDS = 1.5  # about how long a run takes once started: the window the kill falls in
WORKER = Path(__file__).parent.parent / "race_worker.py"


def migration_code(i: int, flag: Path) -> str:
    statements = [f"CREATE TABLE t_{i} (id INTEGER)"]
    if i == 1:
        statements.insert(0, "CREATE TABLE applied_log (name VARCHAR(16) NOT NULL)")
    statements.append(f"INSERT INTO applied_log (name) VALUES ('m_{i}')")
    code = [f"open({str(flag)!r}, 'a').close()", "import asyncio"]
    for s in statements:
        code += [f"await conn.execute(text({s!r}))", "await asyncio.sleep(0.05)"]
    return "\n".join(code)


def project(migrations: MigrationPackage, flag: Path) -> list[str]:
    """Odd migrations non-transactional, even ones transactional."""
    for i in range(1, MIGRATIONS + 1):
        down = f'await conn.execute(text("DROP TABLE t_{i}"))'
        migrations.add(f"step_{i}", migration_code(i, flag), down, transactional=i % 2 == 0)
    return migrations.names


async def record_and_database(url: str, names: list[str]) -> list[str]:
    """Every disagreement between what rung recorded and what the database holds."""
    async with connection(url) as conn:
        tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    history: dict[str, tuple[str, list[str], int]] = {}
    if "rung_migrations" in tables:
        for name, state, journal in await rows(
            url, "SELECT name, state, journal FROM rung_migrations"
        ):
            entries = json.loads(journal or "[]")
            kept = [s["sql"] for s in entries if not s.get("in_flight")]
            history[str(name)] = (str(state), kept, len(entries) - len(kept))
    logged: dict[str, int] = {}
    if "applied_log" in tables:
        for (name,) in await rows(url, "SELECT name FROM applied_log"):
            logged[str(name)] = logged.get(str(name), 0) + 1
    found = []
    for i, name in enumerate(names, start=1):
        statements = [f"t_{i} created", f"m_{i} logged"]
        happened = [f"t_{i} created"] if f"t_{i}" in tables else []
        happened += [f"m_{i} logged"] * logged.get(f"m_{i}", 0)
        if i == 1:
            statements.insert(0, "applied_log created")
            happened += ["applied_log created"] if "applied_log" in tables else []
        state, journal, in_flight = history.get(name, ("none", [], 0))
        if state == "none" and happened:
            found.append(f"{name}: no record, yet the database holds {happened}")
        elif state == "applied" and sorted(happened) != sorted(statements):
            found.append(f"{name}: applied, yet the database holds {happened}")
        elif state in ("running", "failed") and not (
            0 <= len(happened) - len(journal) <= in_flight
        ):
            found.append(
                f"{name}: {state} with {journal} and {in_flight} in flight, yet the database "
                f"holds {happened}"
            )
    return found


@pytest.mark.parametrize("trial", range(1, TRIALS + 1))
def test_a_kill_at_any_instant_leaves_a_true_record(
    backend: str, tmp_path: Path, migrations: MigrationPackage, trial: int
) -> None:
    url = fresh_url(backend, tmp_path)
    asyncio.run(create_database(url))
    try:
        flag = tmp_path / "started"
        names = project(migrations, flag)
        upgrade = [sys.executable, str(WORKER), url, str(migrations.folder.parent)]
        upgrade += [migrations.name, ",".join(names), "0", "0"]  # race_worker.py's arguments
        worker = subprocess.Popen(
            upgrade,
            env=clean_environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + within(RUN_SECONDS)
        while not flag.exists():
            assert worker.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.01)
        time.sleep(random.Random(f"{backend}{trial}").uniform(0, RUN_SECONDS))
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

        assert asyncio.run(record_and_database(url, names)) == []
        again = subprocess.run(
            upgrade,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=within(30),
        )
        interrupted = [
            n
            for n, state in asyncio.run(rows(url, "SELECT name, state FROM rung_migrations"))
            if state != "applied"
        ]
        if again.returncode == 0:
            assert asyncio.run(record_and_database(url, names)) == []
            assert not interrupted
        else:  # one migration was cut off where the database cannot roll back: named
            assert len(interrupted) == 1, again.stderr
            assert f"migration {interrupted[0]} was interrupted part-way" in again.stderr
    finally:
        asyncio.run(drop_database(url))
