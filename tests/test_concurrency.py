"""Many replicas start at once: exactly one applies each migration, and every one succeeds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import MigrationPackage, sql

PROCESSES = 8
MIGRATIONS = 12
WORKER = Path(__file__).with_name("race_worker.py")


async def test_racing_processes_apply_each_migration_exactly_once(
    db_url: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add(
        "counter", sql("CREATE TABLE counter (n INTEGER NOT NULL)"), sql("DROP TABLE counter")
    )
    for i in range(2, MIGRATIONS + 1):
        migrations.add(
            f"step{i}",
            sql(f"INSERT INTO counter (n) VALUES ({i})")
            + "\n"
            + sql(f"CREATE TABLE t{i} (id INTEGER)"),
            sql(f"DROP TABLE t{i}") + "\n" + sql(f"DELETE FROM counter WHERE n = {i}"),
        )
    start = time.time() + 3.0  # every process imported and ready before the gun
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                db_url,
                str(migrations.folder.parent),
                migrations.name,
                ",".join(migrations.names),
                str(start),
                str(i % 2),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    applied: Counter[str] = Counter()
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        applied.update(json.loads(out))
    assert applied == Counter(migrations.names)  # each exactly once, across all processes
    async with engine.connect() as conn:
        counted = (await conn.execute(sa.text("SELECT n FROM counter ORDER BY n"))).scalars().all()
        history = (await conn.execute(sa.text("SELECT COUNT(*) FROM rung_migrations"))).scalar()
    assert counted == list(range(2, MIGRATIONS + 1))
    assert history == MIGRATIONS
