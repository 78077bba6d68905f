"""Bad input, table-driven, through the ``rung`` command (run in this process, as a new
one would run it) against a real database.

Each case gets its documented exit code (0 done, 1 failed or problems found, 2 usage or
configuration), one ``rung: error: ...`` line naming the problem (and maybe one ``rung:
hint: ...``), no traceback without -v, and leaves everything as it was: the database's
schema and every row of every table, rung's history included, and every file under the
test's folder (project, SQLite file: a file that was not there is still not there).

Most cases run on a SQLite file (what they exercise happens before or above the database);
the ones about a server run there too.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import assert_error, connection, files, mariadb_account, silent_server, state

from cli_support import CONNECT_TIMEOUT, Project, clean_environment
from conftest import within

TODOS = "CREATE TABLE todos (id INTEGER PRIMARY KEY, title VARCHAR(200))"
PLAIN = "from rung import Migration\n\n\nclass Migrator:\n"


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path]:
    """A project with three migrations, and a SQLite file where rung applied them."""
    base = tmp_path_factory.mktemp("base")
    project = Project.create(base, f"sqlite+aiosqlite:///{base / 'applied.db'}")
    project.add("create_todos", [TODOS], ["DROP TABLE todos"])
    project.add("add_priority", ["ALTER TABLE todos ADD priority INTEGER"], ["SELECT 1"])
    project.add("create_tags", ["CREATE TABLE tags (id INTEGER)"], ["DROP TABLE tags"])
    assert project.rung("up").code == 0
    return project, base / "applied.db"


@pytest.fixture
def project(applied: tuple[Project, Path], backend: str, db_url: str, tmp_path: Path) -> Project:
    """A copy of the applied project on this test's database (empty: nothing applied)."""
    base, _ = applied
    shutil.copytree(base.root, tmp_path / "project")
    copy = Project(tmp_path / "project", db_url)
    copy.names = list(base.names)
    return copy


def apply(project: Project, database: Path) -> None:
    """The three migrations applied: on SQLite a copy of the applied file, else rung up."""
    url = sa.make_url(project.url)
    if url.get_backend_name() == "sqlite":
        shutil.copy(database, url.database or "")
    else:
        assert project.rung("up").code == 0


# -- what a case sets up ---------------------------------------------------------------------

Setup = Callable[[Project], None]


def lib(body: str) -> Setup:
    """lib.py replaced by ``body``."""

    def setup(p: Project) -> None:
        (p.src / "lib.py").write_text(body)

    return setup


def extra(name: str, source: str, at: int | None = None) -> Setup:
    """Migration module ``name`` written and registered at position ``at`` (default last)."""

    def setup(p: Project) -> None:
        (p.src / f"{name}.py").write_text(source)
        names = list(p.names)
        names.insert(len(names) if at is None else at, name)
        p.register(names)

    return setup


def registered(*positions: int) -> Setup:
    """The registry holds only the migrations at ``positions``, in that order."""
    return lambda p: p.register([p.names[i] for i in positions])


def edited(p: Project) -> None:
    p.write(p.names[0], [TODOS.replace(")", ", done INTEGER)")], ["DROP TABLE todos"])


def odd_history_table(p: Project) -> None:
    p.execute(
        "CREATE TABLE rung_migrations (id INTEGER, note VARCHAR(20))",
        "INSERT INTO rung_migrations (id, note) VALUES (1, 'not rung''s')",
    )


def bad_pyproject(p: Project) -> None:
    (p.root / "pyproject.toml").write_text("[tool.rung\nurl = 1\n")


ASYNC_DOWN = "\n\nasync def down(conn):\n    pass\n"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    says: str  # the error line names the problem with these words
    setup: Setup | None = None
    applied: bool = True  # the migrations are applied first; False: an empty database
    backends: tuple[str, ...] = ("sqlite",)
    secret: str | None = None  # appears nowhere in what rung prints
    timeout: float | None = None  # seconds it is configured to give up after


NOT_A_SCHEME = "does not start with a scheme"
CASES: dict[str, Case] = {
    # The database URL
    "malformed-url": Case(("up", "--url", "not a url"), 2, NOT_A_SCHEME),
    "unknown-driver": Case(("up", "--url", "nosuchdb://u@h/d"), 2, "nosuchdb"),
    "driver-not-installed": Case(
        ("up", "--url", "mysql+aiomysql://u@127.0.0.1/x"), 2, "pip install 'aiomysql'"
    ),
    "sync-driver": Case(
        ("up", "--url", "postgresql+psycopg2://u:Pw1234x@127.0.0.1/x"),
        2,
        "not async",
        secret="Pw1234x",
    ),
    "unreachable-postgresql": Case(
        ("up", "--url", "postgresql://postgres:Pw1234x@127.0.0.1:1/x"),
        2,
        "cannot connect to postgresql+asyncpg://postgres:***@127.0.0.1:1/x",
        secret="Pw1234x",
        timeout=CONNECT_TIMEOUT,
    ),
    "unreachable-mariadb": Case(
        ("up", "--url", "mysql://root:Pw1234x@127.0.0.1:1/x"),
        2,
        "cannot connect to mysql+asyncmy://root:***@127.0.0.1:1/x",
        secret="Pw1234x",
        timeout=CONNECT_TIMEOUT,
    ),
    "sqlite-folder-missing": Case(
        ("up", "--url", "sqlite:////nonexistent_rung_folder/x.db"),
        2,
        "folder of SQLite database /nonexistent_rung_folder/x.db does not exist",
    ),
    "password-with-at": Case(
        ("up", "--url", "postgresql://postgres:Se@cr3tPw@127.0.0.1/x"),
        2,
        "has an '@' in it",
        secret="cr3tPw",
    ),
    # Malformed URLs with a password: never echoed.
    "url-scheme-without-colon": Case(
        ("up", "--url", "postgresql//postgres:Secr3tPw@127.0.0.1/x"),
        2,
        NOT_A_SCHEME,
        secret="Secr3tPw",
    ),
    "url-scheme-without-slashes": Case(
        ("up", "--url", "postgresql:postgres:Secr3tPw@127.0.0.1/x"),
        2,
        NOT_A_SCHEME,
        secret="Secr3tPw",
    ),
    "url-without-scheme": Case(
        ("up", "--url", "postgres:Secr3tPw@127.0.0.1:5432/x"), 2, NOT_A_SCHEME, secret="Secr3tPw"
    ),
    # The migrator and its registry: refused before any connection.
    "migrator-does-not-import": Case(
        ("up", "--migrator", "no.such.module:Migrator"), 2, "does not import", applied=False
    ),
    "migrator-attribute-missing": Case(
        ("up", "--migrator", "server.migration.src.lib:Nope"), 2, "has no attribute 'Nope'"
    ),
    "migrator-without-migrations": Case(
        ("up",), 1, "has no migrations() method", lib(f"{PLAIN}    pass\n"), applied=False
    ),
    "migrator-raises-on-import": Case(
        ("up",), 1, "raised while importing (RuntimeError: boom)", lib("raise RuntimeError('boom')")
    ),
    "migrations-returns-a-set": Case(
        ("up",),
        1,
        "returned set, not a sequence",
        lib(f"{PLAIN}    @staticmethod\n    def migrations():\n        return set()\n"),
    ),
    "duplicate-names": Case(("up",), 1, "is registered twice", registered(0, 1, 1, 2)),
    "bad-name": Case(
        ("up",),
        1,
        "'m20260408_000004_BadName' is not m{YYYYMMDD}_{NNNNNN}_{slug}",
        extra("m20260408_000004_BadName", "async def up(conn):\n    pass\n" + ASYNC_DOWN),
        applied=False,
    ),
    "sync-up": Case(
        ("up",),
        1,
        "up of migration m20260408_000004_sync_up is a plain function",
        extra("m20260408_000004_sync_up", "def up(conn):\n    pass\n" + ASYNC_DOWN),
        applied=False,
    ),
    "up-not-callable": Case(
        ("up",),
        1,
        "up of migration m20260408_000004_up_42 is not callable (int)",
        extra("m20260408_000004_up_42", "up = 42\n" + ASYNC_DOWN),
    ),
    # Arguments
    "unknown-to": Case(
        ("up", "--to", "m20260408_000099_nope"), 2, "--to m20260408_000099_nope names no"
    ),
    "unknown-to-on-a-new-database": Case(
        ("up", "--to", "m20260408_000099_nope"), 2, "names no registered migration", applied=False
    ),
    "steps-zero": Case(("up", "-n", "0"), 2, "1 or more, not '0'"),
    "steps-negative": Case(("up", "-n", "-1"), 2, "1 or more, not '-1'"),
    "steps-and-all": Case(("down", "-n", "1", "--all"), 2, "give one of -n, --all"),
    "negative-lock-timeout": Case(("up", "--lock-timeout=-5"), 2, "must be a number of seconds"),
    "empty-table-name": Case(("up", "--table", ""), 2, "must be a non-empty string"),
    "unknown-command": Case(("upgrade",), 2, "invalid choice: 'upgrade'"),
    "repair-unknown": Case(
        ("repair", "m20260408_000099_nope", "--applied"), 2, "is neither registered nor"
    ),
    "pyproject-not-toml": Case(("up",), 2, "pyproject.toml is not valid TOML", bad_pyproject),
    "fresh-without-yes": Case(("fresh",), 2, "pass --yes"),
    "reset-without-yes": Case(("reset",), 2, "pass --yes"),
    "refresh-without-yes": Case(("refresh",), 2, "pass --yes"),
    # rung new (no database involved: nothing may be written anywhere)
    "new-path": Case(("new", "../x"), 2, "looks like a path"),
    "new-empty-name": Case(("new", ""), 2, "has no letters or digits"),
    "new-300-characters": Case(("new", "a" * 300), 2, "300 characters long"),
    # The history and the code disagree.
    "edited-applied-migration": Case(
        ("up",), 1, "m20260408_000001_create_todos was changed after it was applied", edited
    ),
    "unknown-interleaved-entry": Case(
        ("up",),
        1,
        "m20260408_000002_add_priority is recorded as applied but is not in the registry",
        registered(0, 2),
    ),
    "out-of-order-pending": Case(
        ("up",),
        1,
        "m20260408_000001_merged_branch is pending but older than applied migration",
        extra("m20260408_000001_merged_branch", "async def up(conn):\n    pass\n", at=1),
    ),
    "history-table-of-another-shape": Case(
        ("up",),
        1,
        "'rung_migrations' exists but is not a rung history",
        odd_history_table,
        applied=False,
        backends=("sqlite", "postgresql", "mariadb"),
    ),
}


@pytest.mark.parametrize(
    ("case", "backend"),
    [
        pytest.param(case, b, id=f"{name}-{b}")
        for name, case in CASES.items()
        for b in case.backends
    ],
    indirect=["backend"],
)
def test_bad_input(
    case: Case, project: Project, applied: tuple[Project, Path], tmp_path: Path
) -> None:
    if case.applied:
        apply(project, applied[1])
    if case.setup:
        case.setup(project)
    before, tree = state(project.url), files(tmp_path)
    started = time.monotonic()
    result = project.rung(*case.args)
    assert_error(result, case.code, case.says)
    if case.timeout is not None:
        assert time.monotonic() - started < within(case.timeout)
    if case.secret is not None:
        assert case.secret not in result.text
    assert state(project.url) == before
    assert files(tmp_path) == tree


# -- cases on a server, and the one that must work ---------------------------------------------

WRONG = "Wr0ngPassw0rd"


# PostgreSQL is configured with trust authentication (DESIGN.md): it accepts any password,
# so a wrong password cannot be refused there; the case runs on MariaDB only. SQLite has no
# passwords.
@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_wrong_password(project: Project, applied: tuple[Project, Path], db_url: str) -> None:
    apply(project, applied[1])
    before = state(db_url)
    with mariadb_account(db_url, "rightpw") as right:
        asyncio.run(can_connect(right))  # so the password, and only it, is what is wrong
        user = sa.make_url(right).username
        wrong = sa.make_url(right).set(password=WRONG).render_as_string(hide_password=False)
        started = time.monotonic()
        result = project.rung("up", env=clean_environment(DATABASE_URL=wrong))
        assert time.monotonic() - started < within(CONNECT_TIMEOUT)  # a login is not retried
    error = assert_error(result, 2, f"Access denied for user '{user}'")
    assert f"{user}:***@" in error and WRONG not in result.text
    assert state(db_url) == before


async def can_connect(url: str) -> None:
    async with connection(url) as conn:
        assert await conn.scalar(sa.text("SELECT 1")) == 1


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_silent_server(scheme: str, tmp_path: Path) -> None:
    """A server that accepts the connection and then says nothing: refused after the
    connect timeout (10 s), not never."""
    project = Project.create(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    with silent_server() as port:
        started = time.monotonic()
        result = project.rung("up", "--url", f"{scheme}://u:Pw1234x@127.0.0.1:{port}/x")
        elapsed = time.monotonic() - started
    assert_error(
        result,
        2,
        "cannot connect to",
        f":***@127.0.0.1:{port}/x",
        f"no answer within {CONNECT_TIMEOUT:g} s",
    )
    assert elapsed < within(CONNECT_TIMEOUT) and "Pw1234x" not in result.text
    assert not (tmp_path / "app.db").exists()
