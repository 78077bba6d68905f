"""Read replicas: ``rung up`` and ``rung down`` against a PostgreSQL hot standby and against
a MariaDB running with ``read_only = ON`` refuse before doing anything, in one
``rung: error:`` line naming the cause; ``rung status`` works there.

The history is made on the writer (the standby's primary; MariaDB's root, whom read_only
does not bind): migration ``a`` applied, ``b`` pending, so that both ``up`` and ``down``
have something to do on the replica. Each migration touches a file before its SQL: a
refusal "before doing anything" leaves no file behind, nor any change in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from harness import assert_error, state

from cli_support import Project, clean_environment
from servers.readonly_mariadb import ReadOnlyMariaDB
from servers.standby import Standby


def touches(marker: Path, *statements: str) -> str:
    """A migration body that creates ``marker`` and then executes ``statements``."""
    code = [f"open({str(marker)!r}, 'w').close()"]
    code += [f"await conn.execute(text({s!r}))" for s in statements]
    return "\n".join(code)


def refuses_writes(
    tmp_path: Path,
    writer: str,
    reader: str,
    names_the_cause: Callable[[str], bool],
    caught_up: Callable[[], None] = lambda: None,
    writing: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> None:
    """On ``reader``, which shows what ``writer`` wrote once ``caught_up()`` returns: up and
    down each fail with one line that ``names_the_cause``, running no migration and changing
    nothing; status reports a applied and b pending."""
    project = Project.create(tmp_path, reader)
    ran = tmp_path / "ran"
    ran.mkdir()
    a = project.add(
        "create_a",
        touches(ran / "a.up", "CREATE TABLE a (id INTEGER)"),
        touches(ran / "a.down", "DROP TABLE a"),
    )
    with writing():
        applied = project.rung("up", env=clean_environment(DATABASE_URL=writer))
    assert applied.code == 0, applied.text
    (ran / "a.up").unlink()
    caught_up()
    b = project.add(
        "create_b",
        touches(ran / "b.up", "CREATE TABLE b (id INTEGER)"),
        touches(ran / "b.down", "DROP TABLE b"),
    )
    before = state(reader)
    for command in ("up", "down"):
        line = assert_error(project.rung(command), None)
        assert names_the_cause(line), line
        assert sorted(p.name for p in ran.iterdir()) == [], f"{command} ran a migration"
    caught_up()
    assert state(reader) == before
    assert state(writer) == before
    assert project.states() == {a: "applied", b: "pending"}


@pytest.mark.xdist_group("standby")
def test_hot_standby_refuses_up_and_down(standby: Standby, tmp_path: Path) -> None:
    with standby.database() as (primary, replica):
        refuses_writes(tmp_path, primary, replica, lambda line: "standby" in line, standby.catch_up)


@pytest.mark.xdist_group("readonly_mariadb")
def test_read_only_mariadb_refuses_up_and_down(
    readonly_mariadb: ReadOnlyMariaDB, tmp_path: Path
) -> None:
    with readonly_mariadb.database() as (root, account):
        refuses_writes(
            tmp_path,
            root,
            account,
            lambda line: "read-only" in line or "read_only" in line,
            writing=readonly_mariadb.writable,
        )
