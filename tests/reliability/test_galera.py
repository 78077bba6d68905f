"""Replicas spread over a 3-node MariaDB Galera cluster (started by the suite, see
``servers/galera.py``): the cluster replicates; sixteen replicas racing over its nodes apply
each migration exactly once and all succeed; a lock holder SIGKILLed mid-migration frees
the lock within its lease, while a living holder keeps it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from harness import assert_error, connection, race
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import rung
from cli_support import RUNG, Project, Result, clean_environment, execute
from rung.dialects import dialect_named
from rung.history import DEFAULT_TABLE, History
from rung.lock import Lease
from rung.migration import Migration
from rung.runner import Executed
from servers.galera import Galera

pytestmark = pytest.mark.xdist_group("galera")  # one worker, one cluster per run

REPLICAS = 16
MIGRATIONS = 30
TRIALS = 5
MIGRATOR = "server.migration.src.lib:Migrator"
LOCK_TIMEOUT = 120  # seconds: generous, a race must never end in a lock timeout
LEASE = 3.0  # seconds: the lock's lease in the killed-holder test
# After the holder dies: its lease runs out, a waiter's next look at the lock may come up
# to one more lease later, then five processes take the lock in turn on a loaded machine.
KILLED_HOLDER_BOUND = 2 * LEASE + 30
WAITERS = 6
DDL_ROUNDS = 200  # schema changes on rung's tables while replicas wait for the lock
FIRST, WAITED = "m20261130_000001_first", "m20261130_000002_waited"
WAITER_LOCK_TIMEOUT = 60  # above the bound: a waiter that timed out cannot pass for one served


async def causal_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """``query``'s rows, read once this node has applied every commit of the cluster
    (``wsrep_sync_wait``)."""
    async with connection(url) as conn:
        await conn.execute(sa.text("SET SESSION wsrep_sync_wait = 1"))
        return [tuple(row) for row in await conn.execute(sa.text(query))]


def counted_project(tmp_path: Path, count: int, sleeper: Path | None = None) -> Project:
    """Migration i creates table t_i and logs 'm_i' in applied_log (as in test_races). With
    ``sleeper``, migration 2 creates that file after its CREATE TABLE and sleeps in ``SELECT
    SLEEP`` if the file was not there yet: only the first run to reach it sleeps."""
    project = Project.create(tmp_path, "")  # the racers name their node's URL themselves
    project.add(
        "create_log",
        [
            "CREATE TABLE applied_log (name VARCHAR(16) NOT NULL)",
            "CREATE TABLE t_1 (id INTEGER)",
            "INSERT INTO applied_log (name) VALUES ('m_1')",
        ],
        ["DROP TABLE t_1", "DROP TABLE applied_log"],
    )
    for i in range(2, count + 1):
        steps = [
            f"await conn.execute(text('CREATE TABLE t_{i} (id INTEGER)'))",
            f"await conn.execute(text(\"INSERT INTO applied_log (name) VALUES ('m_{i}')\"))",
        ]
        if i == 2 and sleeper is not None:
            steps[1:1] = [
                "import pathlib",
                f"flag = pathlib.Path({str(sleeper)!r})",
                "if not flag.exists():",
                "    flag.touch()",
                "    await conn.execute(text('SELECT SLEEP(600)'))",
            ]
        down = [f"DELETE FROM applied_log WHERE name = 'm_{i}'", f"DROP TABLE t_{i}"]
        project.add(f"step_{i}", "\n".join(steps), down)
    return project


def replicas(
    urls: Sequence[str], indexes: range, lock_timeout: float = LOCK_TIMEOUT, **more: float
) -> list[list[str]]:
    """Racers for replicas ``indexes``: replica i on node i % 3, the odd ones the ``rung up``
    command, the even ones the API, each with ``lock_timeout`` and ``more`` options."""
    options = {"lock_timeout": lock_timeout, **more}
    flags = [f"--{name.replace('_', '-')}={value:g}" for name, value in options.items()]
    return [
        ["cli", "--url", urls[i % 3], "--migrator", MIGRATOR, *flags, "up", "--json"]
        if i % 2
        else ["api", urls[i % 3], MIGRATOR, json.dumps(options)]
        for i in indexes
    ]


def reported(result: Result) -> list[str]:
    """The migrations a racer says it applied (none if it printed no JSON)."""
    try:
        return [m["name"] for m in json.loads(result.out)["migrations"]]
    except (ValueError, KeyError, TypeError):
        return []


def error_line(result: Result) -> str:
    """What a failed racer said: rung's error line, else the last line (a traceback's)."""
    lines = [line for line in result.err.splitlines() if line.strip()] or ["(no output)"]
    line = next((x for x in lines if x.startswith("rung: error: ")), lines[-1])
    return line if len(line) <= 240 else line[:240] + "..."


def cluster_problems(names: Sequence[str], urls: Sequence[str]) -> list[str]:
    """What is wrong with every node's history and counter, given that ``names`` should be
    applied once each (empty: nothing)."""
    problems = []
    expected = sorted((n, "applied") for n in names)
    logged_once = Counter(f"m_{i}" for i in range(1, len(names) + 1))
    for node, url in enumerate(urls, 1):
        try:
            history = asyncio.run(causal_rows(url, "SELECT name, state FROM rung_migrations"))
            counter = asyncio.run(causal_rows(url, "SELECT name FROM applied_log"))
        except sa.exc.DBAPIError as exc:
            problems.append(f"node {node}: {exc.orig}")
            continue
        if sorted(history) != expected:
            states = Counter(state for _, state in history)
            problems.append(f"node {node}: history of {len(names)} holds {dict(states)}")
        logged = Counter(name for (name,) in counter)
        if logged != logged_once:
            twice = sorted(n for n, c in logged.items() if c > 1)
            missing = set(logged_once) - set(logged)
            problems.append(
                f"node {node}: counter: {len(twice)} migrations ran twice {twice[:3]}, "
                f"{len(missing)} never"
            )
    return problems


def test_the_cluster_replicates(galera: Galera) -> None:
    with galera.database() as urls:
        asyncio.run(execute_on(urls[0], "CREATE TABLE smoke (id INTEGER PRIMARY KEY)"))
        asyncio.run(execute_on(urls[0], "INSERT INTO smoke VALUES (7)"))
        for url in urls:
            assert asyncio.run(causal_rows(url, "SELECT id FROM smoke")) == [(7,)]
            on = asyncio.run(causal_rows(url, "SHOW VARIABLES LIKE 'wsrep_on'"))
            assert on == [("wsrep_on", "ON")]
            size = asyncio.run(causal_rows(url, "SHOW STATUS LIKE 'wsrep_cluster_size'"))
            assert size == [("wsrep_cluster_size", "3")]


async def execute_on(url: str, statement: str) -> None:
    async with connection(url) as conn:
        await conn.execute(sa.text(statement))
        await conn.commit()


def test_sixteen_replicas_over_three_nodes(galera: Galera, tmp_path: Path) -> None:
    """Every trial on a new empty database: 16 replicas (8 commands, 8 API calls) spread
    over the nodes start at once on 30 migrations. All trials run; then each one's
    problems are reported together."""
    project = counted_project(tmp_path, MIGRATIONS)
    problems: list[str] = []
    for trial in range(1, TRIALS + 1):
        with galera.database() as urls:
            racers = replicas(urls, range(REPLICAS))
            results = race(project.root, racers, tmp_path / f"trial{trial}")
            failed = [
                f"#{i} ({racers[i][0]}, node {i % 3 + 1}) exit {r.code}: {error_line(r)}"
                for i, r in enumerate(results)
                if r.code != 0
            ]
            found = [f"{len(failed)} of {REPLICAS} replicas failed", *failed]
            ran = Counter(name for r in results for name in reported(r))
            if ran != Counter(project.names):
                twice = sorted(n for n, c in ran.items() if c > 1)
                never = set(project.names) - set(ran)
                found.append(
                    f"the replicas report {len(twice)} migrations applied twice {twice[:3]}, "
                    f"{len(never)} never"
                )
            found += cluster_problems(project.names, urls)
            if failed or len(found) > 1:
                problems += [f"trial {trial}: {p}" for p in found]
    assert not problems, "\n".join(problems)


def test_holder_killed_mid_migration_frees_the_lock_within_its_lease(
    galera: Galera, tmp_path: Path
) -> None:
    """A ``rung up`` on node 1 sleeps inside migration 2 (its server session in ``SELECT
    SLEEP``); five replicas over the three nodes wait, and keep waiting through three leases
    while the holder lives. SIGKILL the holder: within the lease and slack every waiter has
    taken the lock and refused, as MariaDB must after a run killed mid-migration, naming
    migration 2 as interrupted part-way; once repaired, the next run applies the rest, each
    migration exactly once on every node."""
    flag = tmp_path / "sleeping"
    project = counted_project(tmp_path, 5, sleeper=flag)
    first, sleeper = project.names[:2]
    lease = f"--lock-lease={LEASE:g}"
    with galera.database() as urls, ThreadPoolExecutor(1) as pool:
        racers = replicas(urls, range(1, 6), WAITER_LOCK_TIMEOUT, lock_lease=LEASE)
        holder = subprocess.Popen(
            [*RUNG, "--url", urls[0], "--migrator", MIGRATOR, lease, "up"],
            cwd=project.root,
            env=clean_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        waiting = tmp_path / "waiters"
        asleep = lived = False
        early: list[int] = []
        try:
            asleep = _wait_for(flag, holder)
            if asleep:
                waiters = pool.submit(race, project.root, racers, waiting)
                time.sleep(3 * LEASE)  # the holder lives on through three of its leases
                early = [i for i in range(len(racers)) if _ended(waiting, i)]
                lived = holder.poll() is None
        finally:
            if holder.poll() is None:
                holder.send_signal(signal.SIGKILL)
            said = "".join(holder.communicate(timeout=30))
        killed = time.monotonic()
        assert asleep, f"the holder never reached migration 2's sleep: {said}"
        assert lived, f"the holder ended by itself: {said}"
        assert not early, "waiters ended while the holder lived: " + "; ".join(
            f"#{i + 1} (node {(i + 1) % 3 + 1}): {error_line(_so_far(waiting, i))}" for i in early
        )
        results = waiters.result()
        took = time.monotonic() - killed
        assert took <= KILLED_HOLDER_BOUND, (
            f"the waiters took {took:.1f} s after the holder died; lease {LEASE:g} s, "
            f"bound {KILLED_HOLDER_BOUND:g} s"
        )
        for racer, result in zip(racers, results, strict=True):
            if racer[0] == "cli":
                assert_error(result, 1, f"migration {sleeper} was interrupted part-way")
            else:
                assert result.code == 1, result.text
                expected = f"NeedsRepair: migration {sleeper} was interrupted part-way"
                assert expected in result.err, result.err
        for url in urls:
            history = asyncio.run(causal_rows(url, "SELECT name, state FROM rung_migrations"))
            assert sorted(history) == [(first, "applied"), (sleeper, "running")]

        # The sleeper's record names its CREATE TABLE as sent when it stopped: the person
        # finds it went through, undoes it, says so, and the next run completes.
        execute(urls[1], "DROP TABLE t_2")
        on_node_2 = [*RUNG, "--url", urls[1], "--migrator", MIGRATOR]
        repair = _run([*on_node_2, "repair", sleeper, "--not-applied"], project.root)
        assert repair.returncode == 0, repair.stdout + repair.stderr
        up = _run([*on_node_2, lease, "up", "--json"], project.root)
        assert up.returncode == 0, up.stdout + up.stderr
        assert reported(Result(0, up.stdout, "")) == project.names[1:]
        assert cluster_problems(project.names, urls) == []


def _wait_for(flag: Path, holder: subprocess.Popen[str]) -> bool:
    """Whether ``flag`` appeared while ``holder`` ran (within a generous bound)."""
    deadline = time.monotonic() + 60
    while not flag.exists():
        if holder.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _so_far(folder: Path, i: int) -> Result:
    """What racer i has printed so far (it prints when it ends); its code is not known."""
    out, err = folder / f"out{i}", folder / f"err{i}"
    return Result(
        -1, out.read_text() if out.exists() else "", err.read_text() if err.exists() else ""
    )


def _ended(folder: Path, i: int) -> bool:
    """Whether racer i has ended, by what it printed: ``--json`` output or an error."""
    said = _so_far(folder, i)
    return bool(said.out.strip()) or "rung: error:" in said.err or "Traceback" in said.err


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=clean_environment(), capture_output=True, text=True, timeout=60
    )


async def _create_first(conn: AsyncConnection) -> None:
    await conn.execute(sa.text("CREATE TABLE first (id INTEGER)"))


async def _drop_first(conn: AsyncConnection) -> None:
    await conn.execute(sa.text("DROP TABLE first"))


async def _create_waited(conn: AsyncConnection) -> None:
    await conn.execute(sa.text("CREATE TABLE waited (id INTEGER)"))


async def _drop_waited(conn: AsyncConnection) -> None:
    await conn.execute(sa.text("DROP TABLE waited"))


def test_waiters_ride_out_ddl_on_rungs_tables(galera: Galera) -> None:
    """A DDL statement replicates in total order and, on every node, aborts each transaction
    that holds the table it changes (a brute-force abort: error 1213 at that transaction's
    next statement). At a first start, replicas racing to create rung's lock table send
    such statements while others already read it. Replicas waiting for the lock on every
    node while node 3 changes rung's tables over and over lose some of their reads that
    way: each is a lost round of waiting, never a replica's failure."""
    with galera.database() as urls:
        asyncio.run(_wait_through_ddl(urls))


async def _wait_through_ddl(urls: Sequence[str]) -> None:
    history = History(DEFAULT_TABLE, dialect_named("mysql"))
    migrations = [
        Migration(FIRST, _create_first, _drop_first),
        Migration(WAITED, _create_waited, _drop_waited),
    ]
    engines = [create_async_engine(urls[i % 3]) for i in range(WAITERS + 1)]
    assert len(await rung.upgrade(engines[0], migrations[:1])) == 1  # the history exists
    options: dict[str, Any] = {"lock_timeout": LOCK_TIMEOUT, "lock_lease": 1}
    waiters: list[asyncio.Future[list[Executed]]] = []
    try:
        async with Lease(engines[0], history, timeout=30), connection(urls[2]) as ddl:
            waiters += [
                asyncio.ensure_future(rung.upgrade(e, migrations, **options)) for e in engines[1:]
            ]
            for i in range(DDL_ROUNDS):
                table = (history.lock, history.table)[i % 2]
                await ddl.execute(sa.text(f"ALTER TABLE {table.name} COMMENT = 'round {i}'"))
            ended = [repr(w.exception() or w.result()) for w in waiters if w.done()]
            assert not ended, f"{len(ended)} waiters ended while the lock was held: {ended}"
        applied = await asyncio.wait_for(asyncio.gather(*waiters), LOCK_TIMEOUT)
        assert sorted(len(a) for a in applied) == [0] * (WAITERS - 1) + [1]
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        for engine in engines:
            await engine.dispose()
