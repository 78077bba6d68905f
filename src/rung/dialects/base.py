"""The one interface every backend implements, and the small pieces backends share.

How to add a backend:
1. Add its facts to ``BACKENDS`` in ``dialects/__init__.py``: URL schemes, async drivers.
2. Write ``dialects/<name>.py`` ending in ``DIALECT = <an object satisfying Dialect>``; each
   member's docstring below says when rung uses it and what it must do. Its schema reader
   and ``drop_everything`` live in ``<name>_schema.py``.
3. Add a URL for it to ``BACKENDS`` in ``tests/conftest.py``: the conformance suite
   (``tests/test_dialects.py``) and the behavioural suite (``tests/test_runner.py``) then
   run against it, with no branch per backend.

rung's lock is one protocol for every backend (``rung.lock``: a lease row in a table, taken
by a compare-and-set on the server's clock); a backend gives it its clock and says which
errors mean that a concurrent write won.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rung.migration import Statement
from rung.schema import Snapshot


@dataclass(frozen=True)
class Server:
    """What rung learns of a server before it writes there."""

    refusal: str | None = None  # why rung must not write there (a hot standby, read_only = ON)
    cluster: bool = False  # a multi-primary cluster (Galera): reads must wait for its commits


class Dialect(Protocol):
    name: str
    transactional_ddl: bool  # True: a failed batch rolls back schema and history together
    copies_databases: bool  # True: copy_database can make a scratch database from another
    long_text: sa.types.TypeEngine[Any]  # the history's journal and error columns
    moment: sa.types.TypeEngine[Any]  # the history's applied_at, to the microsecond

    # -- connecting --------------------------------------------------------------------------

    def connect_args(self, url: sa.URL, *, pooler: bool) -> tuple[sa.URL, dict[str, Any]]:
        """When an engine is made: the URL SQLAlchemy gets and the driver's connect arguments.
        Map options platforms write in URLs to the driver's (libpq's ``sslmode``), and with
        ``pooler`` turn off what a transaction pooler breaks (named prepared statements)."""

    def check_location(self, url: sa.URL, *, must_exist: bool) -> None:
        """Before connecting: raise ``DatabaseUnreachable`` for a location that cannot work
        (a SQLite file whose folder is missing; with ``must_exist``, a file not there)."""

    def permanent_error(self, exc: BaseException) -> str | None:
        """When connecting failed: a short reason if waiting cannot help (wrong password, no
        such database or role), None when it may (refused, reset, the server starting up)."""

    def pooler_error(self, exc: BaseException) -> bool:
        """True when ``exc`` shows a transaction pooler breaking the driver's session state."""

    # -- writing -----------------------------------------------------------------------------

    async def server(self, conn: AsyncConnection) -> Server:
        """Before a run that writes (not before a no-op): can this server be written, and is
        it a cluster? One round trip. Leave no transaction open."""

    def session(
        self, conn: AsyncConnection, server: Server, lock_timeout: float
    ) -> AbstractAsyncContextManager[None]:
        """Around a run, on each connection it writes with: session settings (how long to
        wait for the database's own locks, causal reads on a cluster), restored after."""

    def clock(self) -> sa.ColumnElement[float]:
        """The server's time in seconds since 1970, as SQL: leases are compared on it."""

    def conflict(self, exc: BaseException) -> bool:
        """True when a write failed only because a concurrent one won (a deadlock, a
        certification conflict, a busy file): the same step may simply be tried again."""

    async def begin(self, conn: AsyncConnection) -> None:
        """Right after the runner opens a transaction that will write (SQLite takes the
        database write lock here, so DDL really is inside the transaction)."""

    def kept_after_failure(
        self, statements: Sequence[Statement], in_transaction: bool, failing: str | None = None
    ) -> list[Statement]:
        """Of the statements a failed non-atomic migration completed, those the database
        kept after the rollback; ``failing`` is the statement that raised, if one did."""

    def has_table(self, conn: sa.Connection, name: str) -> bool:
        """Whether a table ``name`` is visible to ``conn``: one plain query (SQLAlchemy's
        inspector caches per dialect and schema, which a fleet of tenants would fill)."""

    def commits_implicitly(self, sql: str) -> bool:
        """Whether ``sql`` commits the open transaction before it runs (MySQL's DDL)."""

    async def half_made(self, conn: AsyncConnection) -> frozenset[str]:
        """Objects that a failed statement outside a transaction can leave half-made and in
        the way of a second try (PostgreSQL's INVALID indexes); empty where there are none."""

    async def drop_half_made(self, conn: AsyncConnection, name: str) -> None:
        """Drop one object ``half_made`` named."""

    # -- scratch databases -------------------------------------------------------------------

    def scratch_url(self, target: sa.URL, name: str) -> sa.URL:
        """A new database ``name`` beside ``target`` (on its server, or a file in a fresh
        temporary folder): ``create_database`` makes it, ``drop_database`` removes it all."""

    def scratch_problem(self, url: sa.URL) -> str | None:
        """Why a user-given scratch URL cannot be used (it exists already), else None."""

    async def create_database(self, url: sa.URL) -> None:
        """Create the database ``url`` names; the server account needs the right."""

    async def drop_database(self, url: sa.URL) -> None:
        """Drop the database ``url`` names if it exists, with whatever ``scratch_url`` made."""

    def scratch_session(self) -> tuple[str, ...]:
        """Statements that set up a session of a scratch database: commits that do not
        wait for the disk (what a crash would lose is thrown away anyway), and what else
        makes verify's reads there faster."""

    async def copy_database(self, source: sa.URL, target: sa.URL) -> None:
        """Make ``target`` a copy of ``source`` (to neither is a connection open), in place
        of what ``target`` held, where ``copies_databases`` says the server can."""

    # -- the schema --------------------------------------------------------------------------

    def read_schema(self, conn: sa.Connection) -> Snapshot:
        """The schema of the connection's database as a value (run through ``run_sync``):
        every object a migration can make, in a number of queries that does not grow with
        the number of tables, normalised so that equal schemas give equal snapshots."""

    def fingerprints(self) -> Fingerprint:
        """Something to take fingerprints of one database with, again and again: a digest
        of what ``read_schema`` reads, cheaper to take than a snapshot (it may remember
        what it read, to read only what changed the next time). Two equal fingerprints
        always mean equal snapshots; two different ones may not mean different snapshots
        (a full read decides)."""

    def drop_everything(self, conn: sa.Connection) -> list[str]:
        """For ``rung fresh``: drop every object ``read_schema`` can see (rung's own tables
        too), so that every migration applies again; return them as ``"<kind> <name>"``."""


Fingerprint = Callable[[sa.Connection], str]  # run through ``run_sync``

SAFE_DATABASE_NAME = re.compile(r"[A-Za-z0-9_]{1,63}")


def digest(value: object) -> str:
    """A fingerprint of ``value``'s text (rows, a snapshot)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()


def checked_database_name(url: sa.URL) -> str:
    """Scratch database names are built by rung: refuse anything that would need quoting."""
    name = url.database or ""
    if not SAFE_DATABASE_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r} must match {SAFE_DATABASE_NAME.pattern}")
    return name


def all_kept(statements: Sequence[Statement], in_transaction: bool) -> list[Statement]:
    """Transactional DDL: a rollback undoes everything, unless nothing was in a transaction."""
    return [] if in_transaction else list(statements)


def error_code(exc: BaseException) -> str:
    """The SQLSTATE of a driver error, else ''."""
    orig = getattr(exc, "orig", None) or exc
    return str(getattr(orig, "sqlstate", None) or "")


def error_number(exc: BaseException) -> int | None:
    """MySQL's number for a driver error (the first argument of its exceptions), else None."""
    args = getattr(getattr(exc, "orig", None) or exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def message_of(exc: BaseException) -> str:
    """The driver's own message for ``exc``, without SQLAlchemy's wrapping."""
    return str(getattr(exc, "orig", None) or exc)
