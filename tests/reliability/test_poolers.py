"""Replicas racing through PgBouncer in transaction pooling mode, and straight on
PostgreSQL, with a non-transactional ``CREATE INDEX CONCURRENTLY`` migration in the middle
of the history: each migration is applied exactly once and every replica exits 0, in each
of five trials. After the race nothing is left to do and no lock is left behind; a holder
SIGKILLed mid-migration frees the lock within its lease; and a URL that does not say it
goes through a pooler gets one error line naming the setting.

Through PgBouncer, rung is told about the pooler by the URL (``?pgbouncer=true``): the CLI
gets it with ``--url``, the API racers make their engine from it as an application does.
The database itself is checked on the real server, not through the pooler.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import (
    RACE_TIMEOUT,
    api,
    assert_error,
    cli,
    consistent_state,
    counted_project,
    executed,
    race,
    rows,
)

from cli_support import Project, Result
from conftest import create_database, drop_database, fresh_url, require
from servers.pgbouncer import PgBouncer

MIGRATIONS = 30
CONCURRENTLY = MIGRATIONS // 2  # the non-transactional migration, in the middle
REPLICAS = 16  # half `rung up`, half rung.upgrade
TRIALS = 5
LEASE = 3  # seconds: the lock lease of the SIGKILL test (--lock-lease, lock_lease=)
# From the SIGKILL to the last replica's end: the lease running out, then the whole run
# again; generous, as the machine is shared (a lock that waits for its timeout takes 120 s).
FINISH_WITHIN = 10 * LEASE

TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
LOGGED_TWICE = "SELECT name FROM applied_log GROUP BY name HAVING count(*) > 1"

Databases = Callable[[], AbstractContextManager[tuple[str, str]]]
Killed = tuple[list[Result], float]  # the racers' results, seconds from SIGKILL to the end


def replicas(
    url: str, *cli_args: str, count: int = REPLICAS, **api_options: object
) -> list[list[str]]:
    """``count`` racers on ``url``: odd ones the real ``rung up``, even ones the API."""
    return [cli(url, "up", *cli_args) if i % 2 else api(url, **api_options) for i in range(count)]


def first_error(result: Result) -> str:
    """The line of a failed racer's stderr that says why (rung's error, or a traceback's
    last line), shortened, with database names and ports made alike so that equal causes
    count together."""
    lines = result.err.strip().splitlines() or ["(nothing on stderr)"]
    said = next((line for line in lines if line.startswith("rung: error: ")), None)
    if said is None:  # a traceback: its exception line
        said = ([line for line in lines if re.match(r"[A-Za-z_][\w.]*: ", line)] or lines)[-1]
    said = re.sub(r"rung_\w+_[0-9a-f]{12}", "DB", re.sub(r":\d{4,5}/", ":PORT/", said))
    return said[:240]


def problems(project: Project, results: list[Result]) -> list[str]:
    """What went wrong in one race: failed racers (counted by cause), migrations reported
    other than once, a history, counter or schema that disagree with the registry; [] when
    it was clean."""
    failed = Counter(
        f"{'cli' if i % 2 else 'api'} exit {r.code}: {first_error(r)}"
        for i, r in enumerate(results)
        if r.code != 0
    )
    found = [f"{n} x {cause}" for cause, n in failed.most_common()]
    ran = Counter(name for r in results if r.code == 0 for name, _ in executed(r))
    if not found and ran != Counter(project.names):
        found.append(f"the replicas together reported {dict(ran)}, not each migration once")
    try:
        applied = consistent_state(project)
    except (AssertionError, sa.exc.SQLAlchemyError):
        found.append(f"history, counter and tables disagree: {kept(project.url)}")
    else:
        if applied != project.names:
            found.append(f"{len(applied)} of {len(project.names)} migrations applied")
    return found


def kept(url: str) -> str:
    """What the database holds, in short: history rows by state, counter rows logged more
    than once, tables."""
    tables = asyncio.run(rows(url, TABLES))
    if ("rung_migrations",) not in tables:
        return f"no history table; {len(tables)} tables"
    states = asyncio.run(rows(url, "SELECT state, count(*) FROM rung_migrations GROUP BY state"))
    twice: list[tuple[object, ...]] = []
    if ("applied_log",) in tables:
        twice = asyncio.run(rows(url, LOGGED_TWICE))
    return f"history {dict(states)}, logged twice {[n for (n,) in twice]}, {len(tables)} tables"


def trials(databases: Databases, tmp_path: Path) -> None:
    """TRIALS races of REPLICAS replicas, each on a fresh database (``databases()`` yields
    its URL on the server and the URL the replicas use); every trial must be clean."""
    report = []
    for trial in range(1, TRIALS + 1):
        with databases() as (direct, used):
            base = tmp_path / f"trial{trial}"
            project = counted_project(base, direct, MIGRATIONS, concurrently={CONCURRENTLY})
            results = race(project.root, replicas(used), base / "race")
            report.append((trial, problems(project, results)))
    failed = [(trial, found) for trial, found in report if found]
    assert not failed, f"{len(failed)} of {TRIALS} trials failed:\n" + "\n".join(
        f"trial {trial}: " + "\n    ".join(found) for trial, found in failed
    )


@contextmanager
def postgres_database(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh database on the PostgreSQL server, used directly; dropped afterwards."""
    url = fresh_url("postgresql", tmp_path)
    asyncio.run(create_database(url))
    try:
        yield url, url
    finally:
        asyncio.run(drop_database(url))


@pytest.mark.xdist_group("pgbouncer")
def test_race_through_pgbouncer(pgbouncer: PgBouncer, tmp_path: Path) -> None:
    trials(pgbouncer.database, tmp_path)


def test_race_with_create_index_concurrently(tmp_path: Path) -> None:
    """The same race straight on PostgreSQL: waiters that sit in an open transaction make
    ``CREATE INDEX CONCURRENTLY`` wait for them while they wait for its lock."""
    require("postgresql")
    trials(lambda: postgres_database(tmp_path), tmp_path)


@pytest.mark.xdist_group("pgbouncer")
def test_after_the_race_nothing_to_do_and_no_lock_left(
    pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    """After a race through PgBouncer, later runs through it and straight on the server
    apply nothing and find the lock free (a lock left on a pooled server connection would
    keep the direct run waiting its 5 s and failing)."""
    with pgbouncer.database() as (direct, pooled):
        project = counted_project(tmp_path, direct, MIGRATIONS, concurrently={CONCURRENTLY})
        found = problems(project, race(project.root, replicas(pooled), tmp_path / "race"))
        assert not found, "\n".join(found)
        for url in (pooled, direct, pooled):
            again = project.rung("--url", url, "up", "--lock-timeout", "5", "--json")
            assert again.code == 0, again.text
            assert executed(again) == []
        (alone,) = race(project.root, [api(pooled, lock_timeout=5)], tmp_path / "api")
        assert alone.code == 0, alone.text
        assert executed(alone) == []
        states = project.rung("--url", pooled, "status", "--json")
        assert states.code == 0, states.text
        assert {m["state"] for m in states.json()["migrations"]} == {"applied"}
        assert consistent_state(project) == project.names


@pytest.mark.xdist_group("pgbouncer")
def test_without_the_pooler_setting_the_error_names_it(
    pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    """``rung up`` through PgBouncer with a URL that does not say so: one error line that
    names ``pgbouncer=true``, each time (not only once the pool's server connections carry
    another client's prepared statements)."""
    with pgbouncer.database() as (direct, _):
        unsaid = pgbouncer.url(direct, setting=False)
        project = counted_project(tmp_path, direct, 3)
        for _ in range(3):
            assert_error(project.rung("--url", unsaid, "up"), None, "pgbouncer=true")


# Migration 3's up: the first process to get here writes its pid to HOLDER and sleeps
# (still inside the run's one transaction); whoever runs it after the SIGKILL goes on.
SLEEPS_ONCE = """
import asyncio, os
try:
    claim = os.open({holder!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    claim = -1
if claim >= 0:
    os.write(claim, str(os.getpid()).encode())
    os.close(claim)
    await asyncio.sleep(300)
"""


def kill_the_holder(project: Project, racers: list[list[str]], holder: Path) -> Killed:
    """Race ``racers``; SIGKILL the one that wrote its pid to ``holder``; their results and
    the seconds from the SIGKILL to the end of the last one."""
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(race, project.root, racers, holder.with_suffix(".race"))
        deadline = time.monotonic() + 60
        while not (holder.exists() and holder.read_text()):
            if running.done() or time.monotonic() > deadline:
                results = running.result(timeout=RACE_TIMEOUT + 60)
                summary = "; ".join(problems(project, results))
                pytest.fail(f"no replica slept in the migration within 60 s: {summary}")
            time.sleep(0.05)
        os.kill(int(holder.read_text()), signal.SIGKILL)
        killed_at = time.monotonic()
        results = running.result(timeout=RACE_TIMEOUT + 60)
        return results, time.monotonic() - killed_at


@pytest.mark.xdist_group("pgbouncer")
def test_sigkilled_lock_holder_through_pgbouncer(pgbouncer: PgBouncer, tmp_path: Path) -> None:
    """Eight replicas through PgBouncer with a 3 s lock lease; the one that holds the lock
    is SIGKILLed while it sleeps inside a migration. The others take over once the lease
    has run out and finish, each migration applied once; ``rung status`` shows all applied."""
    holder = tmp_path / f"holder-{uuid.uuid4().hex[:8]}"
    with pgbouncer.database() as (direct, pooled):
        project = counted_project(
            tmp_path, direct, 6, then={3: SLEEPS_ONCE.format(holder=str(holder))}
        )
        racers = replicas(pooled, "--lock-lease", str(LEASE), count=8, lock_lease=LEASE)
        results, took = kill_the_holder(project, racers, holder)
        assert sorted(r.code for r in results) == [-9] + [0] * 7, problems(project, results)
        assert took < FINISH_WITHIN, f"the others finished {took:.1f} s after the SIGKILL"
        ran = Counter(name for r in results if r.code == 0 for name, _ in executed(r))
        assert ran == Counter(project.names)
        assert consistent_state(project) == project.names
        states = project.rung("--url", pooled, "status", "--json")
        assert states.code == 0, states.text
        assert [m["state"] for m in states.json()["migrations"]] == ["applied"] * 6
