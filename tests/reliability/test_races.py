"""Sixteen processes start at once on an empty database with 50 migrations, half the real
``rung up`` command and half ``rung.upgrade`` from the API: each migration is applied exactly
once (each inserts its row into a counter table), every process succeeds. Then ``rung down
-n 5`` races ``rung up``: whatever the order the lock gives them, history, tables and counter
agree. On SQLite (a file), PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness import api, cli, consistent_state, counted_project, executed, race

MIGRATIONS = 50


def test_sixteen_processes_then_downs_racing_ups(db_url: str, tmp_path: Path) -> None:
    project = counted_project(tmp_path, db_url, MIGRATIONS)
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
