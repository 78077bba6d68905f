"""A kill at every statement boundary of a five-statement migration, DDL and DML mixed: the
record says exactly which statements the database kept (at most the one it names as in
flight is uncertain), the next run refuses naming them, and following its message by hand
converges to the fully migrated database.

The migration runs between two others, so that the records of its neighbours (which may
share a commit with it on MariaDB) are checked too. Its code kills its own process with
SIGKILL where ``RUNG_TEST_KILL_AT`` says: at the start, or just before or just after its
statement N is sent (listeners registered after rung's own, so "before" comes after rung
wrote what it writes before that statement). On MariaDB it runs in rung's transaction,
which its DDL statements commit piece by piece; on SQLite and PostgreSQL, where such a
migration would be all or nothing, outside any transaction, each statement committing on
its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import connection

from cli_support import RUNG, TIMEOUT, Project, clean_environment

UP = [
    "CREATE TABLE j (id INTEGER PRIMARY KEY, v INTEGER)",
    "ALTER TABLE j ADD COLUMN w INTEGER",
    "INSERT INTO j (id, v) VALUES (1, 1)",
    "CREATE TABLE k (id INTEGER)",
    "UPDATE j SET w = 2",
]
DOWN = [  # each undoes the up statement in the mirror position
    "UPDATE j SET w = NULL",
    "DROP TABLE k",
    "DELETE FROM j",
    "ALTER TABLE j DROP COLUMN w",
    "DROP TABLE j",
]
KILL_POINTS = ["start"] + [f"{when}:{n}" for n in range(1, 6) for when in ("before", "after")]

KILLER = """
import os, signal
from sqlalchemy import event

mine = {statements!r}
at = os.environ.get("RUNG_TEST_KILL_AT", "")
if at == "{direction}:start":
    os.kill(os.getpid(), signal.SIGKILL)
if at.startswith("{direction}:"):
    when, number = at.split(":")[1:]
    target = mine[int(number) - 1]

    def kill(conn_, cursor, sql, *rest):
        if sql == target:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(conn.sync_connection, when + "_cursor_execute", kill)
for statement in mine:
    await conn.execute(text(statement))
"""


FIRST, FIRST_DOWN = ["CREATE TABLE f (id INTEGER)"], ["DROP TABLE f"]
LAST, LAST_DOWN = ["CREATE TABLE l (id INTEGER)"], ["DROP TABLE l"]


def project(tmp_path: Path, url: str, backend: str) -> Project:
    p = Project.create(tmp_path, url)
    p.add("first", FIRST, FIRST_DOWN)
    up = KILLER.format(statements=UP, direction="up")
    down = KILLER.format(statements=DOWN, direction="down")
    p.add("five", up, down, transactional=backend == "mariadb")
    p.add("last", LAST, LAST_DOWN)
    return p


async def effects(url: str) -> dict[str, int]:
    """How many of each migration's up statements have their effect in the database (a
    prefix of them, always)."""
    async with connection(url) as conn:

        def read(c: sa.Connection) -> dict[str, int]:
            inspector = sa.inspect(c)
            tables = set(inspector.get_table_names())
            found = {"first": int("f" in tables), "last": int("l" in tables), "five": 0}
            if "j" in tables:
                columns = {column["name"] for column in inspector.get_columns("j")}
                rows = c.execute(sa.text("SELECT * FROM j")).mappings().all()
                if "w" not in columns:
                    found["five"] = 1
                elif not rows:
                    found["five"] = 2
                elif "k" not in tables:
                    found["five"] = 3
                else:
                    found["five"] = 5 if rows[0]["w"] == 2 else 4
            return found

        return await conn.run_sync(read)


async def records(url: str) -> dict[str, tuple[str, str, list[str], str | None, str]]:
    """Each row of the history: state, direction, the statements kept, the one in flight,
    and the journal as stored."""
    async with connection(url) as conn:
        if not await conn.run_sync(lambda c: sa.inspect(c).has_table("rung_migrations")):
            return {}
        query = sa.text("SELECT name, state, direction, journal FROM rung_migrations")
        rows = (await conn.execute(query)).all()
    found = {}
    for name, state, direction, journal in rows:
        entries = json.loads(journal or "[]")
        kept = [e["sql"] for e in entries if not e.get("in_flight")]
        in_flight = next((e["sql"] for e in entries if e.get("in_flight")), None)
        found[str(name)] = (str(state), str(direction), kept, in_flight, str(journal))
    return found


def killed(p: Project, direction: str, point: str, *args: str) -> None:
    env = clean_environment(DATABASE_URL=p.url, RUNG_TEST_KILL_AT=f"{direction}:{point}")
    result = subprocess.run(
        [*RUNG, *args], cwd=p.root, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == -9, f"not killed at {point}: {result.stderr}"


@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_kill_at_every_statement_boundary_leaves_an_exact_record(
    backend: str, db_url: str, tmp_path: Path, direction: str
) -> None:
    p = project(tmp_path, db_url, backend)
    slugs = dict(zip(p.names, ("first", "five", "last"), strict=True))
    statements = {"first": (FIRST, FIRST_DOWN), "five": (UP, DOWN), "last": (LAST, LAST_DOWN)}
    if direction == "down":
        assert p.rung("up").code == 0
    for point in KILL_POINTS:
        if direction == "up":
            killed(p, "up", point, "up")
        else:
            killed(p, "down", point, "down", "-n", "2")
        held = asyncio.run(effects(db_url))
        found = asyncio.run(records(db_url))
        states = p.states()
        at = f"killed {direction} at {point}: {found}, effects {held}, states {states}"

        # Every record says what the database holds: all, nothing, or what it kept and
        # at most the one statement it names as in flight.
        interrupted = []
        for name, slug in slugs.items():
            up, down = statements[slug]
            state, went, kept, in_flight, journal = found.get(name, ("none", "up", [], None, ""))
            if state == "running" and journal == "[]":  # marked, and nothing sent since
                assert held[slug] == (0 if went == "up" else len(up)), at
                assert states[name] == ("pending" if went == "up" else "applied"), at
            elif state == "none":
                assert held[slug] == 0, at
            elif state == "applied":
                assert held[slug] == len(up), at
            else:
                assert state == "running", at
                done = held[slug] if went == "up" else len(up) - held[slug]
                listed = up if went == "up" else down
                assert kept == listed[: len(kept)], at
                assert in_flight == (listed[len(kept)] if in_flight else None), at
                assert done in (len(kept), len(kept) + (in_flight is not None)), at
                assert kept or in_flight, at
                interrupted.append((name, went, kept, in_flight, done))
        assert len(interrupted) <= 1 or backend == "mariadb", at

        # The next run refuses, naming what was kept; the person follows the message: looks
        # whether the statement in flight went through, finishes or undoes by hand, repairs.
        for name, went, kept, in_flight, done in interrupted:
            refused = p.rung("up")
            assert refused.code != 0, at
            assert f"migration {name} was interrupted part-way ({went})" in refused.err, at
            for sql in kept[:3]:
                assert sql in refused.err, at
            if in_flight is not None:
                assert f"it had sent {in_flight} when it stopped" in refused.err, at
            up, down = statements[slugs[name]]
            if went == "up":  # undo what took effect
                p.execute(*down[len(down) - done :])
            else:  # finish what the down began
                p.execute(*down[done:])
            assert p.rung("repair", name, "--not-applied").code == 0, at

        # Converged: the next run completes, and the database is fully migrated.
        again = p.rung("up")
        assert again.code == 0, f"{at}: {again.text}"
        assert set(p.states().values()) == {"applied"}, at
        assert asyncio.run(effects(db_url)) == {"first": 1, "five": 5, "last": 1}, at
        if direction == "up":
            assert p.rung("down", "--all").code == 0, at


@pytest.mark.parametrize("command", [["down"], ["down", "--all"]])
def test_a_killed_down_of_the_oldest_migration_is_named_not_done(
    backend: str, db_url: str, tmp_path: Path, command: list[str]
) -> None:
    """A down killed in the oldest applied migration leaves it running: the next down
    must refuse naming it, not find "nothing to revert" in a plan made without the lock."""
    p = Project.create(tmp_path, db_url)
    up = KILLER.format(statements=UP, direction="up")
    five = p.add("five", up, KILLER.format(statements=DOWN, direction="down"))
    if backend != "mariadb":  # outside a transaction, as MariaDB's DDL is in effect
        p.write(five, up, KILLER.format(statements=DOWN, direction="down"), transactional=False)
    assert p.rung("up").code == 0
    killed(p, "down", "after:2", *command)
    assert p.states() == {five: "running"}
    refused = p.rung(*command)
    assert refused.code == 1, refused.text
    assert f"migration {five} was interrupted part-way (down)" in refused.err
    kept = "the database kept: UPDATE j SET w = NULL; it had sent DROP TABLE k when it stopped"
    assert kept in refused.err
    assert p.states() == {five: "running"}
    shown = p.rung("show", five)
    assert "in flight" in shown.out and "DROP TABLE k" in shown.out, shown.text
    listed = p.rung("status", "--json").json()["migrations"][0]
    assert listed["state"] == "running"


def test_a_statement_that_fails_to_parse_keeps_the_migration_before_it_applied(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    """On MariaDB a migration's applied record commits with the next one's first DDL
    statement; one that fails to parse commits nothing, and the rollback takes that record
    with it: rung writes it again, and the failed migration kept nothing. (SQLite and
    PostgreSQL roll both back.)"""
    p = Project.create(tmp_path, db_url)
    first = p.add("first", FIRST, FIRST_DOWN)
    broken = p.add("broken", ["CREATE TABLE (oops"], ["DROP TABLE nothing"])
    result = p.rung("up")
    assert result.code == 1, result.text
    assert f"migration {broken} failed (up)" in result.err
    assert "kept none" in result.err or "rolled back" in result.err, result.err
    if backend == "mariadb":
        assert p.states() == {first: "applied", broken: "pending"}
        assert "f" in p.tables()
    else:  # one transaction: rolled back together
        assert p.states() == {first: "pending", broken: "pending"}
        assert "f" not in p.tables()


TAKES_THE_LOCK = """
import os
from sqlalchemy.ext.asyncio import create_async_engine
await conn.execute(text("CREATE TABLE a (id INTEGER)"))
other = create_async_engine(os.environ["RUNG_TEST_URL"], isolation_level="AUTOCOMMIT")
async with other.connect() as thief:
    await thief.execute(text("UPDATE rung_migrations_lock SET holder = 'another run'"))
await other.dispose()
await conn.execute(text("CREATE TABLE b (id INTEGER)"))
"""


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_a_run_that_lost_the_lock_commits_nothing_more(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    """Another run takes the lock over in the middle of a migration: the next statement
    that would commit (on MariaDB, the next DDL statement) is refused, and nothing of it
    reaches the database. (SQLite lets no one write while a run's transaction is open.)"""
    p = Project.create(tmp_path, db_url)
    p.add("steals", TAKES_THE_LOCK, ["DROP TABLE b", "DROP TABLE a"])
    env = clean_environment(DATABASE_URL=db_url, RUNG_TEST_URL=db_url)
    result = p.rung("up", env=env)
    assert result.code != 0, result.text
    assert "lock was taken over" in result.err, result.err
    tables = p.tables()
    assert "b" not in tables
    assert ("a" in tables) == (backend == "mariadb")  # committed by its own DDL there
