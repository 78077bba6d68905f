"""The one small interface every backend implements, and the shared pieces they use.

How to add a dialect:
1. Write ``dialects/<name>.py`` with a class satisfying ``Dialect`` (each method's docstring
   says when the runner calls it and what it must do).
2. Add it to ``DIALECTS`` in ``dialects/__init__.py`` under SQLAlchemy's dialect name.
3. Add its URL to the dialect list in ``tests/conftest.py``: the shared behavioural suite
   (tests/test_runner.py, tests/test_dialects.py) then runs against it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rung.plan import Statement


class Dialect(Protocol):
    name: str
    transactional_ddl: bool  # True: a failed batch rolls back schema and history together

    async def lock(self, conn: AsyncConnection, key: str, timeout: float) -> None:
        """Before the first write of a run: take rung's lock named ``key`` for this
        connection, waiting at most ``timeout`` seconds, else raise ``LockTimeout`` saying who
        holds it where the database can tell. Leave no transaction open."""

    async def unlock(self, conn: AsyncConnection, key: str) -> None:
        """At the end of a run (also after errors): release what ``lock`` took."""

    async def begin(self, conn: AsyncConnection) -> None:
        """Right after the runner opens a transaction that will write (SQLite takes the
        database write lock here)."""

    def kept_after_failure(
        self, statements: Sequence[Statement], in_transaction: bool, failing: str | None = None
    ) -> list[Statement]:
        """Of the statements a failed non-atomic migration completed, those the database
        kept after the rollback; ``failing`` is the statement that raised, if one did."""

    async def drop_everything(self, conn: AsyncConnection) -> list[str]:
        """For ``rung fresh``: drop every object of the connection's default schema that a
        migration could have made (tables, views, and what else the backend has), so that
        every migration applies again; return what was dropped as ``"<kind> <name>"``."""

    async def create_database(self, url: sa.URL) -> None:
        """Create the (scratch) database ``url`` names; the server account needs the right."""

    async def drop_database(self, url: sa.URL) -> None:
        """Drop the database ``url`` names if it exists."""


def lock_id(url: sa.URL, table: str) -> str:
    """A lock name per database and tracking table, so that apps sharing a server or a
    database with another tracking table never block each other."""
    digest = hashlib.sha256(f"{url.database}\x00{table}".encode()).hexdigest()
    return f"rung_{digest[:40]}"


SAFE_DATABASE_NAME = re.compile(r"[A-Za-z0-9_]{1,63}")


def checked_database_name(url: sa.URL) -> str:
    """Scratch database names are built by rung: refuse anything that would need quoting."""
    name = url.database or ""
    if not SAFE_DATABASE_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r} must match {SAFE_DATABASE_NAME.pattern}")
    return name


async def drop_in_order(
    conn: AsyncConnection, found: Sequence[tuple[str, str]], cascade: str = ""
) -> list[str]:
    """Drop each ``(kind, name)`` if it still exists (an earlier CASCADE may have taken it)."""
    quote = conn.dialect.identifier_preparer.quote
    for kind, name in found:
        await conn.execute(sa.text(f"DROP {kind} IF EXISTS {quote(name)}{cascade}"))
    return [f"{kind.lower()} {name}" for kind, name in found]


def all_kept(statements: Sequence[Statement], in_transaction: bool) -> list[Statement]:
    """Transactional DDL: a rollback undoes everything, unless nothing was in a transaction."""
    return [] if in_transaction else list(statements)
