"""The ``rung`` command in a project made by ``rung init``, against SQLite, PostgreSQL and
MariaDB: every command, exit codes, JSON, refusals. Commands run in this process
(``rung.cli.main``, as a new process would); what only a process shows (the console
script, ``python -m rung``, a closed pipe, SIGTERM, a terminal, import cost) runs as one."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli_support import (
    CONNECT_TIMEOUT,
    RUNG,
    SCRIPT,
    TIMEOUT,
    Project,
    clean_environment,
    cli,
    driverless,
    run,
    run_on_terminal,
)
from conftest import within
from safety_nets import exists

TRANSACTIONAL_DDL = {"sqlite": True, "postgresql": True, "mariadb": False}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def todos(project: Project) -> Project:
    return add_todos(project)


def add_todos(project: Project) -> Project:
    """Two migrations: a table, then a column."""
    project.add(
        "create_todos",
        ["CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)"],
        ["DROP TABLE todos"],
    )
    project.add(
        "add_priority",
        ["ALTER TABLE todos ADD priority INTEGER"],
        ["ALTER TABLE todos DROP COLUMN priority"],
    )
    return project


def test_up_status_down(todos: Project) -> None:
    first, second = todos.names
    gate = todos.rung("status", "--exit-code")
    assert gate.code == 1 and f"pending   {first}" in gate.out

    up = todos.rung("up")
    assert up.code == 0, up.text
    assert re.search(rf"^applying {first} \.\.\. ok \(\d+ ms\)$", up.out, re.MULTILINE)
    assert re.search(rf"^applying {second} \.\.\. ok \(\d+ ms\)$", up.out, re.MULTILINE)
    assert "2 migrations applied" in up.out and up.err == ""
    assert "\x1b[" not in up.text  # no colour when not on a terminal
    assert todos.rung("up").out.strip() == "nothing to apply: the database is up to date"

    status = todos.rung("status", "--json", "--exit-code")
    assert status.code == 0
    data = status.json()
    assert [m["state"] for m in data["migrations"]] == ["applied", "applied"]
    assert data["counts"] == {"applied": 2} and data["migrations"][0]["applied_at"]

    down = todos.rung("down", "--json")  # one step by default; progress on stderr
    assert down.code == 0 and [m["name"] for m in down.json()["migrations"]] == [second]
    assert f"reverting {second} ... ok" in down.err
    assert todos.rung("down", "--all", "-q").out == ""
    assert todos.tables() <= {"rung_migrations", "rung_migrations_lock", "rung_migrations_meta"}


def test_driver_notes_show_only_with_verbose(project: Project) -> None:
    """MariaDB answers DROP TABLE IF EXISTS on a missing table with a note that asyncmy logs:
    not a bare line on stderr, but shown with -v (other databases say nothing)."""
    project.add("drop_nothing", ["DROP TABLE IF EXISTS nothing_here"], ["SELECT 1"])
    up = project.rung("up")
    assert up.code == 0 and up.err == "", up.text
    down = project.rung("down")
    assert down.code == 0, down.text
    verbose = project.rung("up", "-v")
    assert verbose.code == 0, verbose.text
    if project.url.startswith("mysql"):
        assert re.search(r"^rung: asyncmy: Unknown table .*nothing_here", verbose.err, re.M)


def test_a_closed_output_pipe_does_not_stop_a_run(sqlite_project: Project) -> None:
    """``rung up | head -1``: when the reader goes away, the migrations still complete (the
    output's concern, alike on every database)."""
    todos = add_todos(sqlite_project)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before rung writes its first line
    env = clean_environment(DATABASE_URL=todos.url)
    with subprocess.Popen([*RUNG, "up"], cwd=todos.root, env=env, stdout=write_end) as proc:
        os.close(write_end)
        assert proc.wait(timeout=TIMEOUT) == 0
    status = todos.rung("status", "--json")
    assert [m["state"] for m in status.json()["migrations"]] == ["applied", "applied"]


def test_reading_commands_never_create_a_sqlite_file(sqlite_project: Project) -> None:
    """A mistyped path: status says the file is not there (and that all is pending) without
    making it; show and drift refuse; refresh's JSON keeps both directions."""
    todos = add_todos(sqlite_project)
    typo = todos.root / "tpyo.db"
    env = clean_environment(DATABASE_URL=f"sqlite:///{typo}")
    status = todos.rung("status", "--json", env=env)
    assert status.code == 0 and f"{typo} does not exist yet" in status.err
    assert status.json()["counts"] == {"pending": 2}
    for command in (["show", todos.names[0]], ["drift"]):
        refused = todos.rung(*command, env=env)
        assert refused.code == 2 and f"SQLite database file {typo} does not exist" in refused.err
    assert not typo.exists()
    assert todos.rung("up").code == 0
    refresh = todos.rung("refresh", "--yes", "--json")
    assert [(m["name"], m["direction"]) for m in refresh.json()["migrations"]] == [
        (todos.names[1], "down"),
        (todos.names[0], "down"),
        (todos.names[0], "up"),
        (todos.names[1], "up"),
    ]


def test_steps_targets_and_usage_errors(sqlite_project: Project) -> None:
    todos = add_todos(sqlite_project)
    third = todos.add(
        "add_done", ["ALTER TABLE todos ADD done INTEGER"], ["ALTER TABLE todos DROP COLUMN done"]
    )
    first, second, _ = todos.names
    assert todos.rung("up", "-n", "1").code == 0
    assert todos.rung("up", "--to", second).code == 0
    assert todos.states() == {first: "applied", second: "applied", third: "pending"}
    assert todos.rung("up").code == 0
    assert todos.rung("down", "--to", first).code == 0
    assert todos.states() == {first: "applied", second: "pending", third: "pending"}

    unknown = todos.rung("up", "--to", "m20990101_000001_nope")
    assert unknown.code == 2 and unknown.err.startswith("rung: error: --to m20990101_000001_nope")
    for args in (
        ["down", "-n", "1", "--all"],
        ["up", "-n", "0"],
        ["up", "-n", "-2"],
        ["repair", first, "--applied", "--not-applied"],
        ["up", "--bogus"],
    ):
        refused = todos.rung(*args)
        assert refused.code == 2, (args, refused.text)
        assert refused.err.startswith("rung: error: ") and "Traceback" not in refused.err
    assert todos.states()[first] == "applied"


def test_show(project: Project) -> None:
    name = project.add(
        "seed",
        """
        await conn.execute(text("CREATE TABLE tags (name VARCHAR(50))"))
        await conn.execute(text("INSERT INTO tags (name) VALUES (:n)"), {"n": "urgent"})
        """,
        ["DROP TABLE tags"],
    )
    assert project.rung("up").code == 0
    shown = project.rung("show", "seed")  # a unique part of the name will do
    assert shown.code == 0, shown.text
    assert shown.out.startswith(name) and "state       applied" in shown.out
    assert "CREATE TABLE tags (name VARCHAR(50))" in shown.out and "urgent" in shown.out
    data = project.rung("show", name, "--json").json()
    assert data["state"] == "applied" and len(data["checksum"]) == 64
    assert [s["sql"] for s in data["statements"]][1].startswith("INSERT INTO tags")
    missing = project.rung("show", "nothing_like_it")
    assert missing.code == 2 and "rung status" in missing.err


def test_fresh_refresh_reset(todos: Project) -> None:
    todos.execute(
        "CREATE TABLE stray (id INTEGER)",
        "CREATE VIEW stray_ids AS SELECT id FROM stray",
        "CREATE VIEW stray_ids_again AS SELECT id FROM stray_ids",  # a view on a view
    )
    refused = todos.rung("fresh")  # stdin is not a terminal: --yes is required
    assert refused.code == 2 and "--yes" in refused.err
    assert "stray" in todos.tables()

    fresh = todos.rung("fresh", "--yes")
    assert fresh.code == 0, fresh.text
    assert {"todos", "rung_migrations"} <= todos.tables() and "stray" not in todos.tables()
    assert "view stray_ids_again" in fresh.out and "table stray" in fresh.out

    refresh = todos.rung("refresh", "-y")
    assert refresh.code == 0 and refresh.out.count("reverting") == 2
    assert refresh.out.count("applying") == 2
    assert todos.rung("reset", "--yes").code == 0
    assert set(todos.states().values()) == {"pending"} and "todos" not in todos.tables()


def test_baseline_adopts_an_existing_database(todos: Project) -> None:
    first, second = todos.names
    todos.execute("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)")
    baseline = todos.rung("baseline", "--to", first)
    assert (
        baseline.code == 0 and f"recorded as applied, without running it: {first}" in baseline.out
    )
    assert todos.states() == {first: "applied", second: "pending"}
    up = todos.rung("up")
    assert up.code == 0 and first not in up.out and f"applying {second}" in up.out


def test_changed_migration_is_refused_until_repaired(todos: Project) -> None:
    first, _ = todos.names
    assert todos.rung("up").code == 0
    todos.write(
        first,
        ["CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT, x INTEGER)"],
        ["DROP TABLE todos"],
    )
    refused = todos.rung("up")
    assert refused.code == 1 and f"rung repair {first}" in refused.err
    assert "Traceback" not in refused.err
    gate = todos.rung("status", "--exit-code")
    assert gate.code == 1 and f"modified  {first}" in gate.out and f"rung show {first}" in gate.out
    repaired = todos.rung("repair")
    assert repaired.code == 0 and f"{first}: accept the changed checksum" in repaired.out
    assert todos.rung("up", "--json").json() == {"migrations": []}  # accepted: nothing to do


def test_failed_migration(project: Project, backend: str) -> None:
    first = project.add("create_notes", ["CREATE TABLE notes (id INTEGER)"], ["DROP TABLE notes"])
    second = project.add(
        "broken",
        ["CREATE TABLE labels (id INTEGER)", "INSERT INTO nowhere VALUES (1)"],
        ["DROP TABLE labels"],
    )
    failed = project.rung("up")
    assert failed.code == 1
    assert f"applying {second} ... failed" in failed.out
    error = failed.err.splitlines()
    assert error[0].startswith(f"rung: error: migration {second} failed (up)")
    assert error[1].startswith("rung: hint: raised at") and f"{second}.py" in error[1]
    assert "Traceback" not in failed.err
    assert "Traceback" in project.rung("up", "-v").err  # -v: the traceback too

    if TRANSACTIONAL_DDL[backend]:  # one transaction: nothing of the run is kept
        assert project.states() == {first: "pending", second: "pending"}
        assert project.rung("up", "--per-migration").code == 1
        assert project.states() == {first: "applied", second: "pending"}
        assert "labels" not in project.tables()
        return
    # MariaDB commits DDL at once: the CREATE TABLE stayed, and rung says so.
    assert "kept 1 statement(s)" in failed.err and "CREATE TABLE labels" in failed.err
    assert project.states() == {first: "applied", second: "failed"}
    assert project.rung("status", "--exit-code").code == 1
    refused = project.rung("up")
    assert refused.code == 1 and f"rung repair {second} --applied" in refused.err
    shown = project.rung("show", second)
    assert "state       failed" in shown.out and "nowhere" in shown.out
    project.execute("DROP TABLE labels")  # a person undoes what was kept ...
    repaired = project.rung("repair", second, "--not-applied")
    assert repaired.code == 0 and f"{second}: mark as not applied" in repaired.out
    project.write(second, ["CREATE TABLE labels (id INTEGER)"], ["DROP TABLE labels"])
    assert project.rung("up").code == 0  # ... and the fixed migration goes through
    assert project.states() == {first: "applied", second: "applied"}


def test_out_of_order_and_irreversible(sqlite_project: Project) -> None:
    project = sqlite_project
    early = project.add("early", ["CREATE TABLE early (id INTEGER)"], ["DROP TABLE early"])
    late = project.add("late", ["CREATE TABLE late (id INTEGER)"], None)  # no down
    project.register([late])
    assert project.rung("up").code == 0
    project.register([early, late])
    refused = project.rung("up")
    assert refused.code == 1 and "--out-of-order" in refused.err
    assert project.rung("up", "--out-of-order").code == 0
    irreversible = project.rung("down")
    assert irreversible.code == 1 and f"migration {late} has no down" in irreversible.err
    assert project.states() == {early: "applied", late: "applied"}


def test_configuration_sources(todos: Project, db_url: str) -> None:
    env = clean_environment()  # no DATABASE_URL: the flag, before or after the command
    assert todos.rung("--url", db_url, "up", "-n", "1", env=env).code == 0
    assert todos.rung("status", "--url", driverless(db_url), env=env).code == 0
    bad = "sqlite+aiosqlite:////nonexistent/folder/x.db"
    pyproject = todos.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("./app.db", "/nonexistent/folder/x.db"))
    unreachable = todos.rung("status", env=env)  # [tool.rung] url
    assert unreachable.code == 2 and "/nonexistent/folder/x.db" in unreachable.err
    assert "[tool.rung] url" in unreachable.err  # the hint says where the URL came from
    assert todos.rung("status", env=clean_environment(DATABASE_URL=driverless(db_url))).code == 0
    flagged = todos.rung("--url", db_url, "status", env=clean_environment(DATABASE_URL=bad))
    assert flagged.code == 0 and "1 applied, 1 pending" in flagged.out


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)  # SQLite: none
def test_password_is_masked(todos: Project, db_url: str, backend: str) -> None:
    secret = "Sup3rSecretPw"
    url = db_url.replace("://root@", f"://root:{secret}@").replace(
        "://postgres@", f"://postgres:{secret}@"
    )
    result = todos.rung("status", "-v", env=clean_environment(DATABASE_URL=url))
    assert secret not in result.text and "***" in result.text
    if backend == "postgresql":  # trust authentication: any password gets in
        assert result.code == 0
    else:  # MariaDB's root has no password: access denied, a configuration error
        assert result.code == 2 and "Access denied" in result.err


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_urls_as_platforms_hand_them_out(todos: Project, db_url: str, backend: str) -> None:
    """libpq's query options in a postgres:// URL (Heroku, Neon, Render write sslmode), the
    mariadb:// scheme, and a password given as a query option, which is masked too."""
    if backend == "postgresql":
        url = driverless(db_url) + "?sslmode=disable&connect_timeout=5"
    else:
        url = db_url.replace("mysql+asyncmy://", "mariadb://")
    status = todos.rung("status", env=clean_environment(DATABASE_URL=url))
    assert status.code == 0 and "2 pending" in status.out, status.text
    secret = "Qu3ryPassw0rd"
    bad = (
        sa.make_url(db_url)
        .set(database=f"rung_no_such_db_{uuid.uuid4().hex[:12]}")
        .update_query_dict({"password": secret})
    )
    refused = todos.rung("status", "-v", env=clean_environment(DATABASE_URL=str(bad)))
    assert refused.code == 2 and "password=***" in refused.err
    assert secret not in refused.text


def test_sigterm_cancels_like_ctrl_c_and_drops_the_scratch_database(
    project: Project, tmp_path: Path
) -> None:
    """``kill``, ``timeout`` and a stopping container send SIGTERM: verify still drops its
    scratch database on the way out."""
    slow = """
    import asyncio, os, pathlib
    await conn.execute(text("CREATE TABLE slow (id INTEGER)"))
    pathlib.Path(os.environ["RUNG_TEST_SLEEPING"]).touch()
    await asyncio.sleep(60)
    """
    project.add("slow", slow, ["DROP TABLE slow"])
    sleeping = tmp_path / "sleeping"
    env = clean_environment(DATABASE_URL=project.url, RUNG_TEST_SLEEPING=str(sleeping))
    with subprocess.Popen(
        [*RUNG, "verify", "-v"], cwd=project.root, env=env, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        created = ""
        while not created:
            line = proc.stderr.readline()
            assert line, "verify ended before creating its scratch database"
            if "created scratch database " in line:
                created = line.split("created scratch database ", 1)[1].strip()
        while not sleeping.exists():  # inside the slow migration on the scratch database
            assert proc.poll() is None, "verify ended before the slow migration"
            time.sleep(0.05)
        proc.terminate()
        rest = proc.communicate(timeout=TIMEOUT)[1]
    # 130 and "interrupted": cancelled by rung's handler (SIGTERM's default ends with -15)
    assert proc.returncode == 130 and "rung: error: interrupted" in rest, rest
    assert "dropped scratch database" in rest
    scratch = sa.make_url(created.replace("***", "x"))
    assert not asyncio.run(exists(scratch)), f"{created} was left behind"


def test_safety_net_commands(todos: Project) -> None:
    verify = todos.rung("verify", "--json")
    assert verify.code == 0, verify.text
    assert verify.json()["ok"] is True

    dry = todos.rung("up", "--dry-run")
    assert dry.code == 0, dry.text
    assert f"would apply {todos.names[0]}" in dry.out and "CREATE TABLE todos" in dry.out
    assert "todos" not in todos.tables()

    assert todos.rung("up", "-n", "1").code == 0
    todos.execute("ALTER TABLE todos ADD temp_flag TEXT")
    drift = todos.rung("drift", "--replay", "--json")
    assert drift.code == 1 and any("temp_flag" in d for d in drift.json()["differences"])


def test_up_checks_drift_first(todos: Project) -> None:
    assert todos.rung("up", "-n", "1").code == 0
    todos.execute("ALTER TABLE todos ADD temp_flag TEXT")
    warned = todos.rung("up", "--check-drift", "--to", todos.names[0])
    assert warned.code == 0 and "rung: warning: drift:" in warned.err and "temp_flag" in warned.err
    strict = todos.rung("up", "--check-drift", "--strict")
    assert strict.code == 1 and "temp_flag" in strict.err and "--strict" in strict.err
    assert todos.states()[todos.names[1]] == "pending"


# -- without a database -------------------------------------------------------------------------


COMMANDS = [
    "init",
    "new",
    "up",
    "down",
    "status",
    "show",
    "fresh",
    "refresh",
    "reset",
    "baseline",
    "repair",
    "check",
    "verify",
    "drift",
]


def test_help_and_version(tmp_path: Path) -> None:
    help = cli("--help", cwd=tmp_path)
    assert help.code == 0
    assert all(re.search(rf"^    {c} ", help.out, re.MULTILINE) for c in COMMANDS)
    up_help = cli("up", "--help", cwd=tmp_path)
    assert "--dry-run" in up_help.out and "--lock-timeout" in up_help.out
    # Only the named command's options are built: an option's value is never taken for it.
    status_help = cli("--table", "up", "status", "--help", cwd=tmp_path)
    assert status_help.out.startswith("usage: rung status") and "--exit-code" in status_help.out
    bare = cli(cwd=tmp_path)
    assert bare.code == 2 and "COMMAND" in bare.err
    version = cli("--version", cwd=tmp_path)
    assert version.code == 0 and version.out.startswith("rung ")


def test_help_and_new_do_not_import_sqlalchemy(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['rung', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('rung', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'sqlalchemy', 'asyncpg', 'asyncmy', 'aiosqlite', 'aiomysql', 'greenlet'}\n"
        "print('IMPORTED', sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    for args in (["--help"], ["new", "add_things"], ["up", "--help"]):
        result = run([RUNG[0], "-c", probe, *args], tmp_path)
        assert "IMPORTED []" in result.out, (args, result.text)
    assert len(list((tmp_path / "server/migration/src").glob("m*_add_things.py"))) == 1


def test_bad_urls_are_configuration_errors(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    cases = {
        "not a url": "does not start with a scheme",
        "nosuchdb://u@h/d": "rung works with SQLite, PostgreSQL, MySQL and MariaDB",
        "oracle://u:Pw1234@h/d": "rung works with SQLite, PostgreSQL, MySQL and MariaDB",
        "mysql+aiomysql://u:Pw1234@h/d": "not installed; install it with: pip install 'aiomysql'",
        "postgresql+psycopg2://u:Pw1234@h/d": "not async",
        "postgresql+pg8000://u:Pw1234@h/d": "not async",
        "sqlite+pysqlite:///x.db": "not async",
        "postgresql://u:Pw1234@127.0.0.1:notaport/d": "not a valid URL",
        "postgresql//u:Pw1234@127.0.0.1/d": "does not start with a scheme",
        "postgresql:u:Pw1234@127.0.0.1/d": "does not start with a scheme",
        "postgres:Pw1234@127.0.0.1:5432/d": "does not start with a scheme",
    }
    for url, expected in cases.items():
        result = cli("status", "--url", url, cwd=tmp_path)
        assert result.code == 2, (url, result.text)
        assert result.err.startswith("rung: error: ") and expected in result.err, result.err
        assert "Pw1234" not in result.text and "Traceback" not in result.text
    # A URL given where no URL belongs is a usage error, still without its password.
    misplaced = cli("status", "postgres://u:Pw1234@127.0.0.1/d", cwd=tmp_path)
    assert misplaced.code == 2 and "u:***@" in misplaced.err and "Pw1234" not in misplaced.text


def test_a_server_that_never_answers_fails_within_the_wait(tmp_path: Path) -> None:
    """A listener that accepts connections and never speaks: asyncmy's connect_timeout
    does not cover the handshake, so rung bounds every attempt itself."""
    assert cli("init", cwd=tmp_path).code == 0
    wait = 1.0
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        for scheme in ("mysql", "postgres"):
            started = time.monotonic()
            url = f"{scheme}://u@127.0.0.1:{port}/d"
            result = cli("status", "--wait", f"{wait:g}", "--url", url, cwd=tmp_path)
            assert result.code == 2 and "no answer within 1 s" in result.err, result.text
            assert time.monotonic() - started < within(wait)


def test_missing_driver_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if not installed
    result = cli("status", "--url", "postgres://u@h/d", cwd=tmp_path)
    assert result.code == 2 and "pip install 'rung[postgres]'" in result.err


def test_unreachable_database_fails_fast_and_wait_retries(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    url = "postgresql://postgres:Pw1234@127.0.0.1:1/x"  # nothing listens on port 1
    started = time.monotonic()
    result = cli("status", "--url", url, cwd=tmp_path)
    assert result.code == 2 and "cannot connect to postgresql+asyncpg://postgres:***@" in result.err
    assert "--wait" in result.err and "Pw1234" not in result.text
    assert "waiting for" not in result.text  # one attempt: no retry without --wait
    assert time.monotonic() - started < within(CONNECT_TIMEOUT)
    wait = 1.5
    started = time.monotonic()
    waited = cli("up", "--wait", f"{wait:g}", "--url", url, cwd=tmp_path)
    assert waited.code == 2 and "within 1.5 s" in waited.err and "waiting for" in waited.out
    # It gives up when its next pause would end past the wait: near the end, not at it.
    assert wait / 2 < time.monotonic() - started < within(wait)


def test_migrator_problems(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    lib = tmp_path / "server/migration/src/lib.py"
    missing = cli("status", "--migrator", "no.such.module:Migrator", cwd=tmp_path)
    assert missing.code == 2 and "does not import" in missing.err and "hint:" in missing.err
    lib.write_text("class Migrator:\n    pass\n")
    assert cli("status", cwd=tmp_path).code == 1  # RegistryError: no migrations()
    lib.write_text("class Migrator:\n    def migrations():\n        raise RuntimeError('boom')\n")
    crash = cli("check", cwd=tmp_path)
    assert (
        crash.code == 1
        and crash.err.splitlines()[0] == "rung: error: unexpected RuntimeError: boom"
    )
    assert "Traceback" not in crash.err and "-v" in crash.err
    assert "Traceback" in cli("check", "-v", cwd=tmp_path).err
    (tmp_path / "pyproject.toml").write_text("[tool.rung\nurl = 1\n")
    broken = cli("status", cwd=tmp_path)
    assert broken.code == 2 and "pyproject.toml is not valid TOML" in broken.err


def test_check(tmp_path: Path) -> None:
    project = Project(tmp_path, "postgresql://nobody@127.0.0.1:1/none")  # never connected
    assert cli("init", cwd=tmp_path).code == 0
    project.add("create_a", ["CREATE TABLE a (id INTEGER)"])
    ok = project.rung("check")
    assert ok.code == 0 and ok.out.startswith("ok, server.migration.src.lib:Migrator: 1 migration")
    (project.src / "m20260408_000009_stray.py").write_text("async def up(conn): pass\n")
    project.add("sync_up", "pass")
    sync = project.src / f"{project.names[-1]}.py"
    sync.write_text(sync.read_text().replace("async def up", "def up"))
    found = project.rung("check", "--json")
    assert found.code == 1
    problems = found.json()["problems"]
    assert any("m20260408_000009_stray.py is not registered" in p for p in problems)
    assert any(
        "up of migration m20260408_000002_sync_up is a plain function" in p for p in problems
    )
    text = project.rung("check")
    assert text.code == 1 and text.out.count("problem: ") == 2


def test_colour_and_confirmation_on_a_terminal(tmp_path: Path) -> None:
    project = Project(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert cli("init", cwd=tmp_path).code == 0
    project.add("create_a", ["CREATE TABLE a (id INTEGER)"], ["DROP TABLE a"])
    env = clean_environment(DATABASE_URL=project.url, TERM="xterm")
    coloured = run_on_terminal([*RUNG, "up"], tmp_path, env)
    assert coloured.code == 0 and "\x1b[32mok\x1b[0m" in coloured.out
    plain = run_on_terminal([*RUNG, "status"], tmp_path, env | {"NO_COLOR": "1"})
    assert plain.code == 0 and "applied" in plain.out and not ANSI.search(plain.out)

    declined = run_on_terminal([*RUNG, "reset"], tmp_path, env, typed="no\n")
    assert declined.code == 1 and "Type 'yes' to go on" in declined.out
    assert "cancelled: nothing was changed" in declined.out
    accepted = run_on_terminal([*RUNG, "reset"], tmp_path, env, typed="yes\n")
    assert accepted.code == 0 and "reverting" in accepted.out
    assert project.states() == {project.names[0]: "pending"}


def test_console_script_and_python_m_agree(tmp_path: Path) -> None:
    project = Project(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert run([str(SCRIPT), "init"], tmp_path).code == 0
    project.add("create_a", ["CREATE TABLE a (id INTEGER)"])
    env = clean_environment(DATABASE_URL=project.url)
    script = run([str(SCRIPT), "up"], tmp_path, env)
    assert script.code == 0 and "applying m20260408_000001_create_a ... ok" in script.out
    assert run([*RUNG, "status", "--json"], tmp_path, env).json()["counts"] == {"applied": 1}
    version = run([str(SCRIPT), "--version"], tmp_path)
    assert version.code == 0 and version.out.startswith("rung ")


def test_unknown_pyproject_key_warns(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'urll = "typo"\n')
    result = cli("check", cwd=tmp_path)
    assert result.code == 0 and "unknown key 'urll' in [tool.rung]" in result.err


def test_bad_settings_are_usage_errors(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    flag = cli("up", "--lock-timeout", "soon", cwd=tmp_path)
    assert flag.code == 2 and "--lock-timeout" in flag.err
    env = cli("status", cwd=tmp_path, env=clean_environment(RUNG_LOCK_TIMEOUT="-1"))
    assert env.code == 2 and "lock_timeout from RUNG_LOCK_TIMEOUT" in env.err
    at = cli("status", "--url", "postgres://u:p@ss@127.0.0.1:1/d", cwd=tmp_path)
    assert at.code == 2 and "%40" in at.err and "p@ss" not in at.text


def test_verify_names_a_down_that_does_not_undo_its_up(sqlite_project: Project) -> None:
    name = sqlite_project.add(
        "add_tags",
        ["CREATE TABLE t (id INTEGER)", "ALTER TABLE t ADD tags TEXT"],
        ["ALTER TABLE t RENAME TO t_old"],
    )
    later = sqlite_project.add("add_more", ["CREATE TABLE more (id INTEGER)"], None)
    sqlite_project.write(
        name, ["CREATE TABLE t (id INTEGER)", "ALTER TABLE t ADD tags TEXT"], ["SELECT * FROM x"]
    )
    verify = sqlite_project.rung("verify")
    assert verify.code == 1 and f"problem: down of {name} fails" in verify.out, verify.text
    assert "rebuilt the state after up of 1 migration" in verify.out  # and went on
    assert f"not reversible, so applied without a round trip: {later}" in verify.out
    fast = sqlite_project.rung("verify", "--fail-fast")
    assert fast.code == 1 and f"problem: down of {name} fails" in fast.out, fast.text
    assert f"not checked, after the failure above: 1 migration ({later} to {later})" in fast.out
    sqlite_project.write(
        name,
        ["CREATE TABLE t (id INTEGER)", "ALTER TABLE t ADD tags TEXT"],
        ["ALTER TABLE t RENAME TO t_old"],
    )
    verify = sqlite_project.rung("verify", "--json")
    assert verify.code == 1, verify.text
    report = verify.json()
    assert report["checked"] == [name] and report["irreversible"] == [later]
    assert report["rebuilt"] == [name] and report["not_checked"] == []  # t_old stayed
    assert [(f["name"], f["step"]) for f in report["failures"]] == [
        (name, "down"),  # leaves t_old behind ...
        (name, "up again"),  # ... which the second up then does not match
    ]
    assert "+ table t_old" in report["failures"][0]["differences"][0]
    text = sqlite_project.rung("verify")
    assert f"problem: down of {name}" in text.out
    assert f"not reversible, so applied without a round trip: {later}" in text.out
    assert text.out.splitlines()[-1] == "checked 1 migration: 2 problems"


# -- the in-process runner itself ---------------------------------------------------------------


def test_in_process_runs_are_like_new_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every project's registry is ``server.migration.src.lib``: each call imports its own
    project's, sees only the environment it is given, and leaves the test process as it
    was (modules, sys.path, environment, folder, logging handlers)."""
    from server.migration.src import lib  # this repository's, as some tests import it

    monkeypatch.setenv("RUNG_TABLE", "leaked_from_the_test_process")
    one = Project.create(tmp_path / "one", f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    two = Project.create(tmp_path / "two", f"sqlite+aiosqlite:///{tmp_path / 'two.db'}")
    one.add("create_a", ["CREATE TABLE a (id INTEGER)"])
    two.add("create_b", ["CREATE TABLE b (id INTEGER)"])
    two.add("create_c", ["CREATE TABLE c (id INTEGER)"])
    mine = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "server"}
    before = _process_state()
    for project in (one, two, one, two):
        assert project.states() == dict.fromkeys(project.names, "pending")
    assert one.rung("up").code == 0 and "rung_migrations" in one.tables()  # not RUNG_TABLE's
    assert _process_state() == before
    assert {n: m for n, m in sys.modules.items() if n.split(".")[0] == "server"} == mine
    assert mine["server.migration.src.lib"] is lib
    files = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
    assert [f for f in files if f.startswith(str(tmp_path))] == []


def _process_state() -> tuple[object, ...]:
    """What an in-process run must leave as it found it, besides the modules."""
    return (
        list(sys.path),
        dict(os.environ),
        os.getcwd(),
        list(logging.getLogger().handlers),
        list(logging.getLogger("rung").handlers),
    )
