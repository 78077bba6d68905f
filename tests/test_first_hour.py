"""The first hour of a new user (issue 12): what tripped one, from an empty folder to the
third migration, each item tested where it applies, through the ``rung`` command run in
this process against SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from cli_support import Project, Result, cli, execute
from conftest import MYSQL_URL, SERVERS, MigrationPackage, require
from rung.errors import MigrationFailed, RungError, UsageError

TRANSACTIONAL_DDL = {"sqlite": True, "postgresql": True, "mariadb": False}


def backend_of(url: str) -> str:
    name = sa.make_url(url).get_backend_name()
    return "mariadb" if name == "mysql" else name


# -- 1. a failed all-or-nothing run says which "ok" migrations it rolled back ----------------


def test_migrations_rolled_back_with_a_failure_are_named(project: Project) -> None:
    first = project.add("create_notes", ["CREATE TABLE notes (id INTEGER PRIMARY KEY)"])
    second = project.add("add_tags", ["CREATE TABLE tags (id INTEGER PRIMARY KEY)"])
    broken = project.add("broken", ["UPDATE notes SET no_such_column = 1"])
    result = project.rung("up")
    assert result.code == 1, result.text
    assert f"applying {first} ... ok" in result.out
    assert f"applying {broken} ... failed" in result.out
    states = project.states()
    if TRANSACTIONAL_DDL[backend_of(project.url)]:
        line = f"rolled back with it: {first}, {second} (applied above in the same transaction"
        assert line in result.out, result.text
        assert set(states.values()) == {"pending"}
    else:  # MariaDB committed each one: nothing was rolled back, and nothing says so
        assert "rolled back with it" not in result.text
        assert states == {first: "applied", second: "applied", broken: "pending"}


def test_per_migration_commits_are_not_called_rolled_back(sqlite_project: Project) -> None:
    first = sqlite_project.add("create_notes", ["CREATE TABLE notes (id INTEGER PRIMARY KEY)"])
    sqlite_project.add("broken", ["UPDATE notes SET no_such_column = 1"])
    result = sqlite_project.rung("up", "--per-migration")
    assert result.code == 1 and "rolled back with it" not in result.text
    assert sqlite_project.states()[first] == "applied"


async def test_migration_failed_carries_the_rolled_back_names(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    transactional = TRANSACTIONAL_DDL[backend_of(str(engine.url))]
    first = migrations.add("one", "await conn.execute(text('CREATE TABLE one (id INTEGER)'))")
    migrations.add("two", "raise RuntimeError('boom')")
    with pytest.raises(MigrationFailed) as failed:
        await rung.upgrade(engine, migrations.registry())
    # MariaDB commits each migration: the first stays, and nothing is rolled back with another
    assert failed.value.rolled_back == ((first,) if transactional else ())
    assert failed.value.done == (() if transactional else (first,))


# -- 3. an empty folder: rung init, before anything about a database -------------------------


@pytest.mark.parametrize("command", ["status", "up", "down", "check", "verify", "drift"])
def test_no_project_suggests_rung_init(tmp_path: Path, command: str) -> None:
    result = cli(command, cwd=tmp_path)
    assert result.code == 2, result.text
    assert result.out == ""
    (line,) = result.err.splitlines()
    assert line.startswith(f"rung: error: no rung project in {tmp_path}")
    assert "'rung init'" in line
    assert list(tmp_path.iterdir()) == []  # no app.db made on the way


def test_a_project_with_a_broken_registry_is_not_told_to_init(sqlite_project: Project) -> None:
    (sqlite_project.src / "lib.py").unlink()
    result = sqlite_project.rung("status")
    assert result.code == 2 and "does not import" in result.err
    assert "rung init" not in result.err


# -- 4. a forgotten registration is named by status and up -----------------------------------


def test_unregistered_files_are_warned_about_in_one_line(sqlite_project: Project) -> None:
    sqlite_project.add("create_notes", ["CREATE TABLE notes (id INTEGER PRIMARY KEY)"])
    sqlite_project.write("m20260408_000002_forgotten", ["CREATE TABLE f (id INTEGER)"])
    for command in ("status", "up", "status"):
        result = sqlite_project.rung(command)
        assert result.code == 0, result.text
        (warning,) = result.err.splitlines()
        assert warning.startswith(
            "rung: warning: 1 migration file in server/migration/src is not registered"
        )
        assert "m20260408_000002_forgotten.py" in warning and "rung check" in warning
    sqlite_project.register([*sqlite_project.names, "m20260408_000002_forgotten"])
    assert sqlite_project.rung("status").err == ""


# -- 6. irreversible migrations: the refusal suggests what works -----------------------------


def test_irreversible_refusal_suggests_what_works(sqlite_project: Project) -> None:
    p = sqlite_project
    p.add("one", ["CREATE TABLE one (id INTEGER)"], ["DROP TABLE one"])
    keep = p.add("irreversible", ["CREATE TABLE two (id INTEGER)"], None)
    last = p.add("three", ["CREATE TABLE three (id INTEGER)"], ["DROP TABLE three"])
    assert p.rung("up").code == 0
    refused = p.rung("down", "--all")
    assert refused.code == 1 and refused.out == ""
    assert f"'rung down --to {keep}' reverts only the 1 migration after it" in refused.err
    assert "write its down" in refused.err and "'rung fresh'" in refused.err
    followed = p.rung("down", "--to", keep)  # the suggestion works
    assert followed.code == 0 and f"reverting {last} ... ok" in followed.out
    again = p.rung("down")
    assert again.code == 1 and "'rung fresh'" in again.err and "--to" not in again.err
    assert p.states() == {p.names[0]: "applied", keep: "applied", last: "pending"}


# -- 13. CLI polish -------------------------------------------------------------------------


def test_did_you_mean_for_commands_and_options(tmp_path: Path) -> None:
    command = cli("stauts", cwd=tmp_path)
    assert command.code == 2
    assert "rung: error: invalid choice: 'stauts'; did you mean 'status'?" in command.err
    alembic = cli("upgrade", cwd=tmp_path)  # another tool's word
    assert alembic.code == 2 and "invalid choice: 'upgrade'; did you mean 'up'?" in alembic.err
    option = cli("up", "--dryrun", cwd=tmp_path)
    assert option.code == 2
    assert option.err.splitlines() == [
        "rung: error: unknown option --dryrun for rung up; did you mean --dry-run?",
        "rung: hint: see 'rung up --help'",
    ]
    nothing_close = cli("status", "--frobnicate", cwd=tmp_path)
    assert nothing_close.code == 2 and "did you mean" not in nothing_close.err
    assert "--frobnicate" in nothing_close.err


def test_each_command_help_lists_only_the_options_it_uses(tmp_path: Path) -> None:
    def help_of(*command: str) -> str:
        result = cli(*command, "--help", cwd=tmp_path)
        assert result.code == 0, result.text
        return result.out

    status = help_of("status")
    assert "--url" in status and "--wait" in status
    for unused in ("--lock-timeout", "--lock-lease", "--per-migration"):
        assert unused not in status
    check = help_of("check")
    assert "--migrator" in check and "--url" not in check and "--wait" not in check
    up = help_of("up")
    assert "--lock-timeout" in up and "--per-migration" in up
    assert "only the next N pending migrations" in up
    down = re.sub(r"\s+", " ", help_of("down"))
    assert "the newest N applied migrations" in down and "next N" not in down
    assert "fnmatch-style" in re.sub(r"\s+", " ", help_of("drift"))
    everything = help_of()  # rung --help still lists every global option
    assert "--lock-timeout" in everything and "--per-migration" in everything
    # an option a command does not use is still accepted there, as a global option
    assert cli("check", "--lock-timeout", "5", cwd=tmp_path).code == 2  # (no project)


def test_up_refuses_steps_and_to_together(sqlite_project: Project) -> None:
    first = sqlite_project.add("one", ["CREATE TABLE one (id INTEGER)"])
    result = sqlite_project.rung("up", "-n", "1", "--to", first)
    assert result.code == 2
    assert result.err.startswith("rung: error: rung up: give one of -n, --to, not several")
    assert sqlite_project.states() == {first: "pending"}


async def test_upgrade_refuses_steps_and_to_together(
    engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    name = migrations.add("one", "pass")
    with pytest.raises(UsageError, match="give one of steps and to"):
        await rung.upgrade(engine, migrations.registry(), steps=1, to=name)
    assert [s.state for s in await rung.status(engine, migrations.registry())] == ["pending"]


def test_to_accepts_a_unique_part_of_a_name(sqlite_project: Project) -> None:
    p = sqlite_project
    one = p.add("create_one", ["CREATE TABLE one (id INTEGER)"], ["DROP TABLE one"])
    two = p.add("create_two", ["CREATE TABLE two (id INTEGER)"], ["DROP TABLE two"])
    up = p.rung("up", "--to", "create_one")
    assert up.code == 0, up.text
    assert p.states() == {one: "applied", two: "pending"}
    assert p.rung("up").code == 0
    down = p.rung("down", "--to", "one")
    assert down.code == 0, down.text
    assert p.states() == {one: "applied", two: "pending"}
    vague = p.rung("down", "--to", "create")
    assert vague.code == 2 and "--to create is part of 2 names" in vague.err


def test_an_empty_dry_run_says_nothing_to_apply(sqlite_project: Project) -> None:
    sqlite_project.add("one", ["CREATE TABLE one (id INTEGER)"], ["DROP TABLE one"])
    assert sqlite_project.rung("up").code == 0
    up = sqlite_project.rung("up", "--dry-run")
    assert up.code == 0 and up.out.strip() == (
        "dry run: nothing to apply: the database is up to date"
    )
    assert sqlite_project.rung("down", "--all").code == 0
    down = sqlite_project.rung("down", "--dry-run")
    assert down.code == 0 and down.out.strip() == "dry run: nothing to revert"


# -- 14. JSON values and plain strings -------------------------------------------------------


def test_states_and_directions_print_as_their_values() -> None:
    from rung.plan import Direction, Resolution, State

    assert str(State.APPLIED) == "applied" and f"{State.PENDING}" == "pending"
    assert f"{State.FAILED:<8}|" == "failed  |"
    assert str(Direction.DOWN) == "down" and str(Resolution.MARK_APPLIED) == "mark as applied"
    assert State("applied") is State.APPLIED and State.APPLIED.value == "applied"


def test_show_json_gives_parameters_as_json_values(project: Project) -> None:
    name = project.add(
        "seed",
        """
        await conn.execute(text("CREATE TABLE statuses (name VARCHAR(32) PRIMARY KEY, n INT)"))
        await conn.execute(
            text("INSERT INTO statuses (name, n) VALUES (:name, :n)"),
            [{"name": "pending", "n": 1}, {"name": "done", "n": 2}],
        )
        await conn.execute(
            text("UPDATE statuses SET n = :n WHERE name = :name"), {"n": 3, "name": "done"}
        )
        """,
        ["DROP TABLE statuses"],
    )
    assert project.rung("up").code == 0
    shown = project.rung("show", "seed", "--json")
    assert shown.code == 0, shown.text
    statements = shown.json()["statements"]
    assert shown.json()["name"] == name and len(statements) == 3
    inserted, updated = statements[1]["params"], statements[2]["params"]
    assert isinstance(inserted, (list, dict)) and isinstance(updated, (list, dict))
    assert "pending" in str(inserted) and "done" in str(inserted)
    flat = updated if isinstance(updated, list) else list(updated.values())
    assert 3 in flat and "done" in flat


# -- 2. permanent connection errors fail at once; transient ones are waited for --------------


def _unreachable(project: Project, url: str, wait: str = "30") -> tuple[Result, float]:
    started = time.monotonic()
    result = project.rung("status", "--wait", wait, "--url", url)
    return result, time.monotonic() - started


def _one_line_error(result: Result) -> str:
    assert result.code == 2, result.text
    assert result.out == ""
    lines = [x for x in result.err.splitlines() if not x.startswith("rung: hint:")]
    assert len(lines) == 1, result.err
    return lines[0]


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_a_missing_database_or_role_fails_at_once(
    server: str, sqlite_project: Project, tmp_path: Path
) -> None:
    require(server)
    base = sa.make_url(SERVERS[server])
    cases = {
        "no such database": base.set(database=f"rung_nowhere_{uuid.uuid4().hex[:8]}"),
        "no such role": base.set(username=f"rung_nobody_{uuid.uuid4().hex[:8]}"),
    }
    for what, url in cases.items():
        result, seconds = _unreachable(sqlite_project, url.render_as_string(False))
        line = _one_line_error(result)
        assert "waiting will not help" in line, (what, line)
        assert "check the user, password and database name" in line
        assert "waiting for" not in result.text and "--wait" not in line
        assert seconds < 15, (what, seconds)  # not the 30 s of --wait


def test_a_wrong_password_fails_at_once_on_mariadb(sqlite_project: Project) -> None:
    require("mariadb")
    user, secret = f"rung_pw_{uuid.uuid4().hex[:8]}", "Right-Pw-4812"
    execute(
        MYSQL_URL,
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'",
        f"GRANT SELECT ON test.* TO '{user}'@'%'",
    )
    try:
        url = sa.make_url(MYSQL_URL).set(username=user, password="Wrong-Pw-7305")
        result, seconds = _unreachable(sqlite_project, url.render_as_string(False))
        line = _one_line_error(result)
        assert "wrong user name or password" in line and "waiting will not help" in line
        assert "Wrong-Pw-7305" not in result.text and f"{user}:***@" in line
        assert seconds < 15
        right = url.set(password=secret).render_as_string(False)
        assert sqlite_project.rung("status", "--url", right).code == 0
    finally:
        execute(MYSQL_URL, f"DROP USER IF EXISTS '{user}'@'%'")


@pytest.mark.xdist_group("password_postgres")
def test_a_wrong_password_fails_at_once_on_postgresql(
    password_postgres: str, sqlite_project: Project
) -> None:
    url = sa.make_url(password_postgres).set(password="Wrong-Pw-7305")
    result, seconds = _unreachable(sqlite_project, url.render_as_string(False))
    line = _one_line_error(result)
    assert "wrong password" in line and "waiting will not help" in line, line
    assert "Wrong-Pw-7305" not in result.text
    assert seconds < 15
    assert sqlite_project.rung("status", "--url", password_postgres).code == 0


def test_a_refused_port_is_waited_for(sqlite_project: Project) -> None:
    for scheme in ("postgres", "mysql"):
        url = f"{scheme}://someone@127.0.0.1:1/x"
        result, seconds = _unreachable(sqlite_project, url, wait="1.5")
        assert result.code == 2
        assert "waiting for" in result.out and "Connect call failed" in result.out
        line = _one_line_error(dataclasses.replace(result, out=""))
        assert "within 1.5 s" in line and "wait longer with --wait SECONDS" in line
        assert 1.2 < seconds < 15
        at_once = sqlite_project.rung("status", "--url", url)
        assert "or wait for it with --wait SECONDS" in _one_line_error(at_once)


@pytest.fixture(scope="session")
def password_postgres() -> Iterator[str]:
    """A PostgreSQL server of our own that asks for passwords (the shared one trusts
    every local connection): the URL of its ``postgres`` user, with the right password."""
    from servers.lifecycle import owned_folder, start_or_skip
    from servers.process import free_port
    from servers.standby import BIN, postgres, tool

    secret = "Right-Pw-4812"

    def start(folder: Path) -> tuple[object, int]:
        (folder / "pw").write_text(secret)
        os.chmod(folder / "pw", 0o644)
        tool(str(BIN / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
             "--auth=scram-sha-256", f"--pwfile={folder / 'pw'}", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        port = free_port()
        return postgres("password", folder / "data", port, folder), port

    with owned_folder("rung-password-pg-") as folder:
        server, port = start_or_skip("a PostgreSQL server with passwords", lambda: start(folder))
        try:
            yield f"postgresql+asyncpg://postgres:{secret}@127.0.0.1:{port}/postgres"
        finally:
            server.stop()  # type: ignore[attr-defined]


# -- 5. branch collisions: check names them; 'time' numbering avoids them --------------------


def test_check_flags_numbers_made_on_two_branches(sqlite_project: Project) -> None:
    p = sqlite_project
    ours = p.add("add_owner", ["CREATE TABLE owners (id INTEGER)"])
    assert p.rung("check").code == 0
    theirs = "m20260408_000001_add_labels"  # the same day and number, on another branch
    p.write(theirs, ["CREATE TABLE labels (id INTEGER)"])
    p.register([ours, theirs])
    result = p.rung("check")
    assert result.code == 1, result.text
    assert (
        f"problem: migrations {theirs} and {ours} share the number 20260408_000001 (made on "
        "two branches?)"
    ) in result.out
    older = "m20260407_000001_add_colour"  # merged after ours, but older
    p.write(older, ["CREATE TABLE colours (id INTEGER)"])
    p.register([ours, older])
    (p.src / f"{theirs}.py").unlink()
    result = p.rung("check")
    assert result.code == 1
    assert f"migration {older} is registered after {ours} but its name sorts before it" in (
        result.out
    )


def test_time_numbering_does_not_collide_across_branches(tmp_path: Path) -> None:
    from rung import scaffold

    branches = [Project.create(tmp_path / b, "sqlite:///unused.db") for b in ("main", "feature")]
    noon = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
    names = []
    for seconds, branch in enumerate(branches):
        made = scaffold.new(
            branch.root,
            "server.migration.src.lib:Migrator",
            "add_thing",
            numbering="time",
            now=noon + timedelta(minutes=3, seconds=seconds),
        )
        names.append(made.path.stem)
    assert names == ["m20261125_120300_add_thing", "m20261125_120301_add_thing"]
    sequence = [scaffold.new(b.root, "server.migration.src.lib:Migrator", "x") for b in branches]
    assert sequence[0].path.stem.split("_")[1] == sequence[1].path.stem.split("_")[1]


def test_time_numbering_is_set_in_pyproject(sqlite_project: Project) -> None:
    pyproject = sqlite_project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'numbering = "time"\n')
    before = datetime.now(timezone.utc)
    first = sqlite_project.rung("new", "add_owner")
    second = sqlite_project.rung("new", "add_labels")
    assert first.code == 0 and second.code == 0, first.text + second.text
    made = [Path(r.out.splitlines()[0]).stem for r in (first, second)]
    stamps = [datetime.strptime(m[1:16], "%Y%m%d_%H%M%S") for m in made]
    assert made[0] < made[1]  # in order, even within one second
    assert abs(stamps[0] - before.replace(tzinfo=None)) < timedelta(seconds=30)
    assert sqlite_project.rung("check").code == 0


# -- 9. the public API names its misuse, and raises only RungError ---------------------------


API_CALLS: dict[str, Callable[[Any, Any], Awaitable[object]]] = {
    "upgrade": lambda e, m: rung.upgrade(e, m),
    "downgrade": lambda e, m: rung.downgrade(e, m),
    "status": lambda e, m: rung.status(e, m),
    "repair": lambda e, m: rung.repair(e, m),
    "baseline": lambda e, m: rung.baseline(e, m),
    "fresh": lambda e, m: rung.fresh(e, m),
    "dry_run": lambda e, m: rung.dry_run(e, m),
    "verify": lambda e, m: rung.verify(e, m),
    "drift": lambda e, m: rung.drift(e, m),
    "lock_holder": lambda e, m: rung.lock_holder(e),
    "unlock": lambda e, m: rung.unlock(e),
}


@pytest.mark.parametrize("call", sorted(API_CALLS))
async def test_a_wrong_engine_is_named(call: str, tmp_path: Path) -> None:
    sync = sa.create_engine(f"sqlite:///{tmp_path / 'sync.db'}")
    wrong: list[tuple[object, str]] = [
        (sync, "rung needs an AsyncEngine, and this is a synchronous Engine; create it with "
               "sqlalchemy.ext.asyncio.create_async_engine(...) or rung.create_engine(url)"),
        ("sqlite+aiosqlite:///app.db", "rung needs an AsyncEngine, not str; create one with "
                                       "rung.create_engine(url)"),
        (None, "rung needs an AsyncEngine, not NoneType; create one with rung.create_engine(url)"),
    ]  # fmt: skip
    for engine, message in wrong:
        with pytest.raises(UsageError) as raised:
            await API_CALLS[call](engine, [])
        assert str(raised.value) == message
    assert not (tmp_path / "sync.db").exists()
    sync.dispose()


async def test_api_misuse_raises_rung_errors(engine: AsyncEngine) -> None:
    misuse: list[Callable[[], Awaitable[object]]] = [
        lambda: rung.upgrade(engine, "not a registry"),  # type: ignore[arg-type]
        lambda: rung.upgrade(engine, {"a": 1}),  # type: ignore[arg-type]
        lambda: rung.upgrade(engine, [object()]),  # type: ignore[list-item]
        lambda: rung.upgrade(engine, [], steps=0),
        lambda: rung.upgrade(engine, [], to="m20260101_000001_nowhere"),
        lambda: rung.downgrade(engine, [], steps=1, all=True),
        lambda: rung.dry_run(engine, [], "sideways"),
        lambda: rung.repair(engine, [], "m20260101_000001_nowhere", applied=True),
    ]
    for number, call in enumerate(misuse):
        with pytest.raises(RungError):
            await call()
            pytest.fail(f"misuse {number} raised nothing")


# -- 16. a repair that changes the history makes stored drift say the snapshot is stale ------


def test_drift_after_repair_not_applied_says_the_snapshot_is_stale(project: Project) -> None:
    project.add(
        "create_todos", ["CREATE TABLE todos (id INTEGER PRIMARY KEY)"], ["DROP TABLE todos"]
    )
    flag = project.add(
        "add_flag",
        ["ALTER TABLE todos ADD temp_flag VARCHAR(8)"],
        ["ALTER TABLE todos DROP COLUMN temp_flag"],
    )
    assert project.rung("up").code == 0
    clean = project.rung("drift")
    assert clean.code == 0 and "no drift from rung's last run" in clean.out
    repaired = project.rung("repair", "add_flag", "--not-applied")  # a part of the name will do
    assert repaired.code == 0 and f"{flag}: mark as not applied" in repaired.out, repaired.text
    stored = project.rung("drift")
    assert stored.code == 2 and "no drift" not in stored.text
    assert (
        f"the stored schema snapshot was dropped because 'rung repair {flag}' marked it not applied"
    ) in _one_line_error(stored)
    assert "rung drift --replay" in stored.err
    as_json = project.rung("drift", "--json")
    assert as_json.code == 2 and as_json.out == ""
    replay = project.rung("drift", "--replay")
    assert replay.code == 1 and "column todos.temp_flag" in replay.out
    assert "temp_flag" in project.columns("todos")


# -- 10. a cut statement is marked as cut; rung show keeps it whole --------------------------

LONG_ALTER = (
    "ALTER TABLE todos\n"
    "    ADD COLUMN a_rather_long_column_name_for_the_priority_of_each_todo INTEGER NULL,\n"
    "    ADD COLUMN another_rather_long_column_name_for_the_owner VARCHAR(64) NULL"
)


def test_kept_statements_are_cut_with_a_mark_and_shown_whole(project: Project) -> None:
    if TRANSACTIONAL_DDL[backend_of(project.url)]:
        result = project.rung("status")  # nothing is kept part-way where DDL rolls back
        assert result.code == 0
        return
    project.add("create_todos", ["CREATE TABLE todos (id INTEGER PRIMARY KEY)"])
    name = project.add("add_columns", [LONG_ALTER, "UPDATE todos SET no_such_column = 1"])
    failed = project.rung("up")
    assert failed.code == 1
    error = _one_line_error_of(failed)
    start = "ALTER TABLE todos ADD COLUMN a_rather_long_column_name_for_the_priority_of_each_todo"
    assert f"kept 1 statement(s) it had run before the failure: {start}" in error
    assert " ... ;" in error or " ...;" in error, error
    assert "VARCHAR(64) NULL" not in error  # the end was cut, and the cut is marked
    refused = project.rung("up")
    assert refused.code == 1 and f"the database kept: {start}" in refused.err
    assert "VARCHAR(64) NULL" not in refused.err and " ..." in refused.err
    shown = project.rung("show", name, "--json")
    assert shown.json()["statements"][0]["sql"] == LONG_ALTER  # whole, as it ran


def test_a_huge_statement_is_journaled_with_its_cut_marked(project: Project) -> None:
    huge = f"SELECT 1 /* {'x' * 25_000} */"
    name = project.add("huge", [huge])
    assert project.rung("up").code == 0
    (statement,) = project.rung("show", name, "--json").json()["statements"]
    assert len(statement["sql"]) == 20_000
    assert statement["sql"].endswith(f" ... (cut: {len(huge):,} characters in all)")


def test_clip_marks_the_cut_and_keeps_one_line() -> None:
    from rung.errors import clip

    assert clip("SELECT 1", 120) == "SELECT 1"
    assert clip("CREATE TABLE t (\n    id INTEGER\n)", 120) == "CREATE TABLE t ( id INTEGER )"
    assert clip("x" * 200, 20) == "x" * 16 + " ..."


def _one_line_error_of(result: Result) -> str:
    errors = [x for x in result.err.splitlines() if x.startswith("rung: error:")]
    assert len(errors) == 1, result.err
    return errors[0]


# -- 11. verify: the failure before what it stopped, and every round trip counted ------------


def test_verify_prints_failures_first_and_counts_what_it_ran(project: Project) -> None:
    project.add("create_one", ["CREATE TABLE one (id INTEGER)"], ["DROP TABLE one"])
    project.add("create_two", ["CREATE TABLE two (id INTEGER)"], None)
    broken = project.add(
        "create_three", ["CREATE TABLE three (id INTEGER)"], "raise RuntimeError('no')"
    )
    later = project.add("create_four", ["CREATE TABLE four (id INTEGER)"], ["DROP TABLE four"])
    result = project.rung("verify")
    assert result.code == 1, result.text
    lines = result.out.splitlines()
    assert lines[0].startswith(f"problem: down of {broken} fails: RuntimeError: no"), lines
    assert lines[1:] == [
        f"not reversible, so applied without a round trip: {project.names[1]}",
        "rebuilt the state after up of 1 migration that left the scratch database "
        "elsewhere, and went on",
        "checked 3 migrations: 1 problem",  # create_one, create_three that failed, create_four
    ]
    fast = project.rung("verify", "--fail-fast").out.splitlines()
    assert fast[-2:] == [
        f"not checked, after the failure above: 1 migration ({later} to {later})",
        "checked 2 migrations: 1 problem",
    ]
    clean = project.names[:2]
    project.register(clean)
    ok = project.rung("verify")
    assert ok.code == 0 and ok.out.splitlines()[-1] == (
        "checked 1 migration: every down reverses its up"
    )


# -- 15. packaging: no benchmark peers among the package's extras; three quick starts --------

REPOSITORY = Path(__file__).resolve().parent.parent


def test_benchmark_peers_are_not_extras_of_the_package() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"postgres", "mysql", "test"}  # Poetry resolves every one of them
    named = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for e in extras.values() for r in e}
    bench = (REPOSITORY / "benchmarks" / "requirements.txt").read_text()
    for peer in ("alembic", "yoyo-migrations", "psycopg", "pymysql", "pyinstrument"):
        assert peer not in named and re.search(rf"^{peer}\b", bench, re.M), peer
    # A requirement that needs a newer Python than rung does is marked, or Poetry refuses it.
    (linter,) = [r for r in extras["test"] if r.startswith("import-linter")]
    assert "python_version >= '3.11'" in linter
    assert "'.[bench]'" not in (REPOSITORY / "benchmarks" / "README.md").read_text()


def test_the_readme_has_a_quick_start_for_pip_poetry_and_uv() -> None:
    readme = (REPOSITORY / "README.md").read_text()
    commands = {
        m[1]: m[2].strip()
        for m in re.finditer(r"<!-- quick-start: (\w+) -->\n```sh\n(.*?)```", readme, re.S)
    }
    assert commands == {
        "pip": "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
        ".venv/bin/python scripts/init_db.py",
        "poetry": "poetry install && poetry run python scripts/init_db.py",
        "uv": "uv sync && uv run python scripts/init_db.py",
    }


def test_repair_takes_a_full_name_as_it_is(sqlite_project: Project) -> None:
    """An unknown history entry whose name is part of a registered one is the one meant."""
    p = sqlite_project
    gone = p.add("a", ["CREATE TABLE a (id INTEGER)"])
    assert p.rung("up").code == 0
    longer = "m20260408_000001_ab"
    p.write(longer, ["CREATE TABLE ab (id INTEGER)"])
    p.register([longer])
    result = p.rung("repair", gone, "--not-applied")
    assert result.code == 0 and f"{gone}: mark as not applied" in result.out, result.text
    assert p.states() == {longer: "pending"}
