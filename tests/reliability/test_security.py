"""Security: no password in anything rung prints, identifiers quoted or validated, and the
files rung writes never overwrite existing ones.

Passwords matter on PostgreSQL and MariaDB only (SQLite has none). PostgreSQL runs with
trust authentication here, so a URL may carry any password and still get in; on MariaDB
the tests make an account with a password.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from harness import assert_error, files, mariadb_account, rows, state

from cli_support import Project, Result, clean_environment, cli
from safety_nets import holding_the_lock

SECRET = "Sekr1t-Pw_q7"
WRONG = "Wr0ng-Pw_z9"

FAILS_ON_DEMAND = """
import os
how = os.environ.get("RUNG_TEST_FAIL")
if how == "sql":
    await conn.execute(text("SELECT * FROM no_such_table_q"))
if how == "leak":  # the migration's own error carries the URL, password and all
    raise RuntimeError(f"cannot use {conn.engine.url.render_as_string(hide_password=False)}")
await conn.execute(text("CREATE TABLE a (id INTEGER)"))
"""


@pytest.fixture
def secret_url(backend: str, db_url: str) -> Iterator[str]:
    """The test's database, reached with a URL that carries SECRET as its password."""
    if backend == "mariadb":
        with mariadb_account(db_url, SECRET) as url:
            yield url
    else:  # trust authentication: the password is carried, and accepted
        yield sa.make_url(db_url).set(password=SECRET).render_as_string(hide_password=False)


def with_password(
    url: str, password: str, *, database: str | None = None, port: int | None = None
) -> str:
    parsed = sa.make_url(url).set(password=password)
    parsed = parsed.set(database=database or parsed.database, port=port or parsed.port)
    return parsed.render_as_string(hide_password=False)


def both_ways(project: Project, url: str, *args: str, **env: str) -> list[Result]:
    """``rung ARGS`` with ``url``, without and with -v (which adds tracebacks)."""
    environment = clean_environment(DATABASE_URL=url, **env)
    return [project.rung(*args, env=environment), project.rung("-v", *args, env=environment)]


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_no_password_in_anything_a_failing_run_prints(
    backend: str, db_url: str, secret_url: str, tmp_path: Path
) -> None:
    project = Project.create(tmp_path, secret_url)
    project.add("fails_on_demand", FAILS_ON_DEMAND, ["DROP TABLE a"])
    nowhere = f"rung_no_such_db_{uuid.uuid4().hex[:12]}"
    missing = with_password(secret_url, SECRET, database=nowhere)
    runs: dict[str, tuple[int, list[Result]]] = {
        "database that does not exist": (2, both_ways(project, missing, "status")),
        "failing migration": (1, both_ways(project, secret_url, "up", RUNG_TEST_FAIL="sql")),
        "lock timeout": (1, asyncio.run(lock_timeout(project, secret_url, db_url))),
    }
    if backend == "mariadb":
        wrong = with_password(secret_url, WRONG)
        runs["wrong password"] = (2, both_ways(project, wrong, "status"))
    else:  # what rung does not depend on the database (one server is enough)
        scratch = with_password(secret_url, SECRET, port=1, database=f"{nowhere}_scratch")
        runs |= {
            "verify, scratch unreachable": (
                2,
                both_ways(project, secret_url, "verify", "--scratch-url", scratch),
            ),
            "drift, scratch unreachable": (
                2,
                both_ways(project, secret_url, "drift", "--replay", "--scratch-url", scratch),
            ),
        }
    assert [
        leak for what, (code, results) in runs.items() for leak in leaks(what, code, results)
    ] == []
    assert asyncio.run(database_named(db_url, nowhere)) == []  # not created either


def leaks(what: str, code: int, results: list[Result]) -> list[str]:
    """What is wrong with ``results`` (without and with -v): a password shown, another exit
    code than ``code``, no error line."""
    found = []
    for result, flag in zip(results, ("", " -v"), strict=True):
        if result.code != code or "rung: error: " not in result.err:
            found.append(f"{what}{flag}: exit {result.code}, {result.err!r}")
        for password in {SECRET, WRONG, quote(SECRET, safe="")}:
            if password in result.text:
                found.append(f"{what}{flag}: shows {password}: {result.text}")
    return found


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # rung's code, not the server's
def test_no_password_in_a_traceback_either(secret_url: str, tmp_path: Path) -> None:
    """A migration's own error may quote the URL: masked in the error line, and in the
    traceback -v prints too."""
    project = Project.create(tmp_path, secret_url)
    project.add("fails_on_demand", FAILS_ON_DEMAND, ["DROP TABLE a"])
    results = both_ways(project, secret_url, "up", RUNG_TEST_FAIL="leak")
    assert "Traceback" in results[1].err  # -v shows it
    assert leaks("migration error quoting the URL", 1, results) == []


async def lock_timeout(project: Project, url: str, db_url: str) -> list[Result]:
    async with holding_the_lock(db_url):
        return both_ways(project, url, "up", "--lock-timeout", "1")


async def database_named(url: str, name: str) -> list[tuple[object, ...]]:
    if url.startswith("postgresql"):
        return await rows(url, f"SELECT datname FROM pg_database WHERE datname = '{name}'")
    return await rows(url, f"SHOW DATABASES LIKE '{name}'")


# Quote, backtick, semicolon, space, single quote: each quoting style rung could get wrong.
ODD_TABLE = "rung \"q\" `b`; 'x'"


def test_tracking_table_names_are_quoted(db_url: str, tmp_path: Path) -> None:
    """A tracking table whose name needs quoting, given as --table or RUNG_TABLE: exactly
    that table and its _meta and _lock are made, and rung's default table stays another history."""
    project = Project.create(tmp_path, db_url)
    first = project.add("create_todos", ["CREATE TABLE todos (id INTEGER)"], ["DROP TABLE todos"])
    second = project.add("create_tags", ["CREATE TABLE tags (id INTEGER)"], ["DROP TABLE tags"])
    up = project.rung("up", "--table", ODD_TABLE)
    assert up.code == 0, up.text
    own = {ODD_TABLE, f"{ODD_TABLE}_meta", f"{ODD_TABLE}_lock"}
    assert project.tables() == {*own, "todos", "tags"}  # nothing else
    down = project.rung(
        "down", env=clean_environment(DATABASE_URL=project.url, RUNG_TABLE=ODD_TABLE)
    )
    assert down.code == 0, down.text
    assert project.states("--table", ODD_TABLE) == {first: "applied", second: "pending"}
    assert project.states() == {first: "pending", second: "pending"}  # another history
    assert project.tables() == {*own, "todos"}
    assert project.rung("down", "--all", "--table", ODD_TABLE).code == 0
    assert set(project.states("--table", ODD_TABLE).values()) == {"pending"}
    assert project.tables() == own


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_scratch_database_names_are_validated(db_url: str, tmp_path: Path) -> None:
    """A scratch database name goes into CREATE/DROP DATABASE: anything but [A-Za-z0-9_]
    is refused before any SQL is sent."""
    project = Project.create(tmp_path, db_url)
    project.add("create_todos", ["CREATE TABLE todos (id INTEGER)"], ["DROP TABLE todos"])
    before = state(db_url)
    scratch = sa.make_url(db_url).set(database='rung_q"; DROP DATABASE x; --`')
    result = project.rung("verify", "--scratch-url", scratch.render_as_string(hide_password=False))
    assert_error(result, 2, "must match [A-Za-z0-9_]")
    assert state(db_url) == before


def test_init_and_new_never_overwrite(tmp_path: Path) -> None:
    # rung init where a file of its layout exists: refuses before writing anything.
    lib = tmp_path / "server/migration/src/lib.py"
    lib.parent.mkdir(parents=True)
    lib.write_text("MINE = True\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    tree = files(tmp_path)
    assert_error(cli("init", cwd=tmp_path), 1, "already exists", "never overwrites")
    assert files(tmp_path) == tree
    # In a project, init extends pyproject.toml, keeping what was there.
    lib.unlink()
    assert cli("init", cwd=tmp_path).code == 0
    assert (tmp_path / "pyproject.toml").read_text().startswith('[project]\nname = "mine"\n\n')
    assert_error(cli("init", cwd=tmp_path), 1, "already exists")  # twice: refused
    # rung new, twice with the same name: two files, the first one left as it was.
    first = cli("new", "add_things", cwd=tmp_path)
    assert first.code == 0, first.text
    made = tmp_path / first.out.splitlines()[0]
    made.write_text(made.read_text() + "# edited by hand\n")
    edited = made.read_bytes()
    second = cli("new", "add_things", cwd=tmp_path)
    assert second.code == 0, second.text
    assert second.out != first.out and made.read_bytes() == edited
    day = date.today().strftime("%Y%m%d")
    assert sorted(p.name for p in lib.parent.glob("m*.py")) == [
        f"m{day}_000001_add_things.py",
        f"m{day}_000002_add_things.py",
    ]
