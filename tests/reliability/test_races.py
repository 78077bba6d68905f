"""Sixteen processes start at once on an empty database with 50 migrations, half the real
``rung up`` command and half ``rung.upgrade`` from the API: each migration is applied exactly
once (each inserts its row into a counter table), every process succeeds. Then ``rung down
-n 5`` races ``rung up``: whatever the order the lock gives them, history, tables and counter
agree. On SQLite (a file), PostgreSQL and MariaDB.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from harness import executed, race, rows

from cli_support import Project

MIGRATIONS = 50
MIGRATOR = "server.migration.src.lib:Migrator"


def counted_project(tmp_path: Path, url: str) -> Project:
    """Migration i creates table t_i and logs 'm_i' in applied_log; its down undoes both."""
    project = Project.create(tmp_path, url)
    project.add(
        "create_log",
        [
            "CREATE TABLE applied_log (name VARCHAR(16) NOT NULL)",
            "CREATE TABLE t_1 (id INTEGER)",
            "INSERT INTO applied_log (name) VALUES ('m_1')",
        ],
        ["DROP TABLE t_1", "DROP TABLE applied_log"],
    )
    for i in range(2, MIGRATIONS + 1):
        project.add(
            f"step_{i}",
            [
                f"CREATE TABLE t_{i} (id INTEGER)",
                f"INSERT INTO applied_log (name) VALUES ('m_{i}')",
            ],
            [f"DELETE FROM applied_log WHERE name = 'm_{i}'", f"DROP TABLE t_{i}"],
        )
    return project


def cli(url: str, *args: str) -> list[str]:
    return ["cli", "--url", url, "--migrator", MIGRATOR, "--lock-timeout", "120", *args, "--json"]


def api(url: str) -> list[str]:
    return ["api", url, MIGRATOR]


def consistent_state(project: Project) -> list[str]:
    """The applied migrations, once history, tables and counter are shown to agree."""
    history = asyncio.run(rows(project.url, "SELECT name, state FROM rung_migrations"))
    counter = asyncio.run(rows(project.url, "SELECT name FROM applied_log"))
    applied = [n for n in project.names if (n, "applied") in history]
    assert len(history) == len(applied), history  # only applied rows, each a known name
    logged = Counter(name for (name,) in counter)
    assert logged == Counter(f"m_{i}" for i in range(1, len(applied) + 1)), logged  # once each
    assert applied == project.names[: len(applied)]  # a prefix of the registry
    tables = {t for t in project.tables() if t.startswith("t_")}
    assert tables == {f"t_{i}" for i in range(1, len(applied) + 1)}
    return applied


def test_sixteen_processes_then_downs_racing_ups(db_url: str, tmp_path: Path) -> None:
    project = counted_project(tmp_path, db_url)
    racers = [cli(db_url, "up") if i % 2 else api(db_url) for i in range(16)]
    results = race(project.root, racers, tmp_path / "race1")
    for result in results:
        assert result.code == 0, result.text
    ran = Counter(name for r in results for name, _ in executed(r))
    assert ran == Counter(project.names)  # exactly once each, across all sixteen
    assert consistent_state(project) == project.names

    # Four 'rung down -n 5' and four upgrades (two commands, two API calls) at once.
    downs, ups = [cli(db_url, "down", "-n", "5")] * 4, [cli(db_url, "up"), api(db_url)] * 2
    results = race(project.root, [*downs, *ups], tmp_path / "race2")
    for result in results:
        assert result.code == 0, result.text
    reverted = [executed(r) for r in results[:4]]
    applied = [executed(r) for r in results[4:]]
    for steps in reverted:  # each reverted five, newest first, whatever it found applied
        names = [name for name, direction in steps if direction == "down"]
        assert len(steps) == len(names) == 5
        end = project.names.index(names[0]) + 1
        assert names == project.names[end - 5 : end][::-1]
    remaining = consistent_state(project)
    assert len(remaining) in (30, 35, 40, 45, 50)  # 5 fewer per down after the last up
    assert MIGRATIONS - 20 + sum(len(steps) for steps in applied) == len(remaining)
