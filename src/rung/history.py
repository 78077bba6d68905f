"""rung's own tables, defined once as SQLAlchemy Core tables: no SQL strings per backend.

``<table>`` holds one row per applied (or failed, or running) migration with its checksum,
timing and journal. ``<table>_meta`` holds the table format version, so the layout can
evolve, and the schema snapshot the last run left behind (for ``drift``). ``<table>_lock``
holds the lease of the run migrating now (``rung.lock``). Reading never writes: on a
database rung has never touched, the history is empty.

Every write that must be atomic is one statement: a running migration becomes applied
with one UPDATE, an applied one is reverted with one DELETE. Creating the tables tolerates
a concurrent creator, and a first run killed between creating the tables and writing the
format marker leaves tables the next run recognises as its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rung.dialects.base import Dialect
from rung.errors import HistoryError, NoSnapshot, SchemaError, UsageError
from rung.migration import Statement
from rung.plan import Record
from rung.schema import Snapshot

FORMAT_VERSION = 1
DEFAULT_TABLE = "rung_migrations"
MAX_SQL_CHARS = 20_000  # per journaled statement; a bulk INSERT is kept in part
SNAPSHOT_KEY = "snapshot"
STALE_KEY = "snapshot_stale"  # why there is no snapshot: a repair changed what is applied
LOCK_ROW = "lock"
NOTHING_SENT = "[]"  # a running mark's journal before its migration sends a statement


class History:
    """The tracking table named ``table`` (quoted as needed), its meta and lock tables."""

    @classmethod
    def of(cls, table: str, dialect: Dialect) -> History:
        """The one ``History`` of this process for ``table`` on ``dialect``: its tables
        and statements are built once, not for every run (a fleet makes thousands)."""
        found = _histories.get((table, dialect.name))
        if found is None or found.dialect is not dialect:
            found = _histories[table, dialect.name] = cls(table, dialect)
        return found

    def __init__(self, table: str, dialect: Dialect) -> None:
        if not table or len(table) > 58 or "\x00" in table or table != table.strip():
            raise UsageError(
                f"tracking table name {table!r} must be 1 to 58 characters without NUL or "
                "leading/trailing spaces; pass another --table"
            )
        self.name, self.dialect = table, dialect
        metadata = sa.MetaData()
        self.table = sa.Table(
            table,
            metadata,
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("checksum", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("direction", sa.String(4), nullable=False),
            sa.Column("applied_at", dialect.moment, nullable=False),
            sa.Column("duration_ms", sa.Float, nullable=False),
            sa.Column("error", dialect.long_text),
            sa.Column("journal", dialect.long_text),
        )
        self.meta = sa.Table(
            f"{table}_meta",
            metadata,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", dialect.long_text, nullable=False),
        )
        self.lock = sa.Table(
            f"{table}_lock",
            metadata,
            sa.Column("name", sa.String(16), primary_key=True),
            sa.Column("holder", sa.String(255)),  # host, pid and a random part; NULL: free
            sa.Column("acquired_at", sa.Double),  # the server's clock, in seconds since 1970
            sa.Column("expires_at", sa.Double),
        )
        self.own_tables = (self.table.name, self.meta.name, self.lock.name)
        self._row = self.table.c.name == sa.bindparam("row")
        self.insert_row = self.table.insert()  # built once: a long run records many rows
        self._delete = self.table.delete().where(self._row)
        self._updates: dict[tuple[str, ...], sa.Update] = {}
        # What planning needs: the journals of applied migrations stay in the database (a
        # no-op upgrade over a long history would otherwise fetch and parse every one).
        unfinished = sa.case((self.table.c.state != "applied", self.table.c.journal))
        self._select_for_plan = sa.select(
            *(c for c in self.table.c if c.name != "journal"), unfinished.label("journal")
        )

    # -- reading ------------------------------------------------------------------------------

    async def read(self, conn: AsyncConnection, *, journals: bool = True) -> list[Record]:
        """Every row, or [] where the table does not exist yet. Never writes. Without
        ``journals``, only failed and running rows carry their statements."""
        query = sa.select(self.table) if journals else self._select_for_plan
        for attempt in range(2):  # the table may appear between a failed read and the check
            try:
                rows = (await conn.execute(query)).all()
                break
            except (ValueError, TypeError) as exc:  # a value SQLAlchemy cannot convert
                raise self._unreadable(exc) from exc
            except sa.exc.DBAPIError as exc:
                if _lost(exc) or self.dialect.conflict(exc):
                    raise  # not a sign of a missing table: the caller may try again
                await conn.rollback()
                if not await self._exists(conn, self.name):
                    return []
                if attempt:
                    raise HistoryError(
                        f"table {self.name!r} exists but is not a rung history "
                        f"({first_line(exc)}); rename that table or give rung another one "
                        "with --table"
                    ) from exc
        records = []
        for row in rows:
            try:
                records.append(_record(row))
            except (ValueError, TypeError, KeyError) as exc:  # a journal not in rung's JSON
                raise self._unreadable(exc, row._mapping["name"]) from exc
        return records

    def _unreadable(self, exc: Exception, name: str | None = None) -> HistoryError:
        row = f"the row of {name!r} in {self.name!r}" if name else f"a row of {self.name!r}"
        return HistoryError(
            f"{row} cannot be read ({type(exc).__name__}: {first_line(exc)}); it was changed "
            "by hand or by another tool: restore or delete that row"
        )

    async def end_read(self, conn: AsyncConnection) -> None:
        """Roll back a transaction that only read. On Galera, DDL from another node aborts
        a transaction holding the table it changes, and the server may say so only at the
        rollback (error 1213): the transaction is over all the same."""
        try:
            await conn.rollback()
        except sa.exc.DBAPIError as exc:
            if not self.dialect.conflict(exc):
                raise

    async def _exists(self, conn: AsyncConnection, name: str) -> bool:
        return bool(await conn.run_sync(self.dialect.has_table, name))

    async def get_meta(self, conn: AsyncConnection, key: str) -> str | None:
        """The value under ``key``; None when there is none, or no meta table at all."""
        if not await self._exists(conn, self.meta.name):
            return None
        query = sa.select(self.meta.c.value).where(self.meta.c.key == key)
        return (await conn.execute(query)).scalar_one_or_none()

    # -- creating -----------------------------------------------------------------------------

    async def ensure_lock_table(self, conn: AsyncConnection) -> None:
        """Create the lock table unless it exists, in a transaction of its own, tolerating
        another process creating it at the same moment. Asked first, so that a cluster
        never replicates DDL on a table another node's transaction is using."""
        if await self._exists(conn, self.lock.name):
            await self.end_read(conn)
            return
        try:
            await conn.run_sync(lambda c: self.lock.create(c, checkfirst=False))
            await conn.commit()
        except sa.exc.DBAPIError:
            await conn.rollback()
            if not await self._exists(conn, self.lock.name):
                raise
            await conn.rollback()

    async def ensure(self, conn: AsyncConnection) -> None:
        """Under the lock, in the run's transaction: create the history and meta tables on
        the first write; refuse a table rung did not make, or a newer format."""
        if not await self._exists(conn, self.name):
            await conn.run_sync(lambda c: self.table.create(c))
            await self._mark_format(conn)
            return
        found = await self.get_meta(conn, "format")
        if found is None and await self._is_ours(conn):
            await self._mark_format(conn)  # a first run died between the two steps
            return
        if found is None or not found.isdigit():
            raise HistoryError(
                f"table {self.name!r} has no rung format marker in {self.meta.name!r}; "
                "it was not made by rung: give rung another table with --table"
            )
        if int(found) > FORMAT_VERSION:
            raise HistoryError(
                f"table {self.name!r} has format {found}, newer than this rung knows "
                f"({FORMAT_VERSION}); upgrade rung"
            )

    async def _mark_format(self, conn: AsyncConnection) -> None:
        if not await self._exists(conn, self.meta.name):
            await conn.run_sync(lambda c: self.meta.create(c, checkfirst=False))
        await self.set_meta(conn, "format", str(FORMAT_VERSION))

    async def _is_ours(self, conn: AsyncConnection) -> bool:
        """Whether the history table has exactly rung's columns (the marker is missing)."""
        columns = await conn.run_sync(lambda c: sa.inspect(c).get_columns(self.name))
        return {c["name"] for c in columns} == set(self.table.c.keys())

    # -- writing ------------------------------------------------------------------------------

    async def set_meta(self, conn: AsyncConnection, key: str, value: str | None) -> None:
        """Store ``value`` under ``key`` (None removes it), in the caller's transaction."""
        await conn.execute(self.meta.delete().where(self.meta.c.key == key))
        if value is not None:
            await conn.execute(self.meta.insert().values(key=key, value=value))

    async def insert(
        self,
        conn: AsyncConnection,
        name: str,
        checksum: str,
        *,
        state: str,
        direction: str = "up",
        duration_ms: float = 0.0,
        statements: Sequence[Statement] = (),
        sent: str | None = None,
    ) -> None:
        """A row for ``name``, which has none (``sent``: its journal, as text)."""
        row = {
            "name": name,
            "checksum": checksum,
            "state": state,
            "direction": direction,
            "applied_at": now(),
            "duration_ms": round(duration_ms, 3),
            "error": None,
            "journal": sent if sent is not None else journal_text(statements),
        }
        await conn.execute(self.insert_row, row)

    async def applied_many(
        self, conn: AsyncConnection, done: Sequence[tuple[str, str, float, Sequence[Statement]]]
    ) -> None:
        """New rows, applied, for ``done`` (name, checksum, duration, statements): one round
        trip for a whole batch."""
        rows = [
            {
                "name": name,
                "checksum": checksum,
                "state": "applied",
                "direction": "up",
                "applied_at": now(),
                "duration_ms": round(duration_ms, 3),
                "error": None,
                "journal": journal_text(statements),
            }
            for name, checksum, duration_ms, statements in done
        ]
        if rows:
            await conn.execute(self.insert_row, rows)

    async def remove_many(self, conn: AsyncConnection, names: Sequence[str]) -> None:
        if names:
            await conn.execute(self._delete, [{"row": name} for name in names])

    async def update(self, conn: AsyncConnection, name: str, **values: object) -> bool:
        """Change ``name``'s row in one statement (``statements`` becomes its journal, with
        ``in_flight`` last); False when there is no such row."""
        if "statements" in values:
            in_flight = values.pop("in_flight", None)
            values["journal"] = journal_text(values.pop("statements"), in_flight)  # type: ignore[arg-type]
        if values.get("state") == "applied" and "applied_at" not in values:
            values["applied_at"] = now()
        if "duration_ms" in values:
            values["duration_ms"] = round(float(values["duration_ms"]), 3)  # type: ignore[arg-type]
        keys = tuple(sorted(values))
        query = self._updates.get(keys)
        if query is None:  # built once per set of columns: a long run updates many rows
            bound: dict[str, Any] = {key: sa.bindparam(f"new_{key}") for key in keys}
            query = self._updates[keys] = self.table.update().where(self._row).values(bound)
        params = {f"new_{key}": value for key, value in values.items()}
        return bool((await conn.execute(query, {"row": name, **params})).rowcount)

    async def mark(
        self, conn: AsyncConnection, name: str, checksum: str, direction: str, *, exists: bool
    ) -> None:
        """Mark ``name`` running in ``direction``, its journal saying nothing was sent yet
        (a down's mark replaces the journal of the up)."""
        if exists:
            await self.update(
                conn,
                name,
                checksum=checksum,
                state="running",
                direction=direction,
                journal=NOTHING_SENT,
            )
        else:
            await self.insert(
                conn, name, checksum, state="running", direction=direction, sent=NOTHING_SENT
            )

    async def remove(self, conn: AsyncConnection, name: str) -> None:
        await conn.execute(self._delete, {"row": name})

    def journal_update(self, guard: sa.ColumnElement[bool]) -> sa.Update:
        """A statement that sets a row's journal, state and direction (parameters from
        ``journal_values``), where ``guard`` holds too; built once, executed many times."""
        return (
            self.table.update()
            .where(self._row, guard)
            .values(
                journal=sa.bindparam("journal"),
                state=sa.bindparam("new_state"),
                direction=sa.bindparam("new_direction"),
            )
        )

    def journal_values(
        self, name: str, direction: str, statements: Sequence[Statement], in_flight: Statement
    ) -> dict[str, object]:
        """For ``journal_update``: ``name`` running in ``direction``, with ``statements``
        kept and ``in_flight`` about to be sent."""
        return {
            "row": name,
            "journal": journal_text(statements, in_flight),
            "new_state": "running",
            "new_direction": direction,
        }

    def guarded_insert(self, guard: sa.ColumnElement[bool]) -> sa.Insert:
        """A statement that inserts a row (parameters from ``running_row``) where ``guard``
        holds."""
        columns = [c.name for c in self.table.c]
        values = sa.select(*(sa.bindparam(name, type_=self.table.c[name].type) for name in columns))
        return self.table.insert().from_select(columns, values.where(guard))

    def running_row(
        self, name: str, checksum: str, direction: str, in_flight: Statement
    ) -> dict[str, object]:
        """A new row for ``name``, running, about to send its first statement."""
        return {
            "name": name,
            "checksum": checksum,
            "state": "running",
            "direction": direction,
            "applied_at": now(),
            "duration_ms": 0.0,
            "error": None,
            "journal": journal_text((), in_flight),
        }

    # -- the schema snapshot, for drift ------------------------------------------------------

    async def read_schema(
        self, conn: AsyncConnection, exclude: Iterable[str] = (), *, own: bool = False
    ) -> Snapshot:
        """The schema ``conn`` sees, without rung's own tables (unless ``own``) and without
        tables matching ``exclude`` (fnmatch patterns). Only reads."""
        found: Snapshot = await conn.run_sync(self.dialect.read_schema)
        return found.excluding(exclude, () if own else self.own_tables)

    async def store_snapshot(self, conn: AsyncConnection) -> str | None:
        """Store the schema ``conn`` sees as the baseline of ``drift``, in the caller's
        transaction. A schema that cannot be read now removes the stored snapshot, which
        no longer describes it, and returns why as a warning."""
        try:
            found = await self.read_schema(conn)
        except SchemaError as exc:
            await self.set_meta(conn, SNAPSHOT_KEY, None)
            return (
                f"{exc.message}; the stored snapshot is removed, so until the next run changes "
                "the schema 'rung drift' needs --replay"
            )
        await self.set_meta(conn, SNAPSHOT_KEY, found.to_json())
        await self.set_meta(conn, STALE_KEY, None)
        return None

    async def set_stale(self, conn: AsyncConnection, why: str) -> None:
        """The stored snapshot no longer describes the history (``why``): remove it, and
        keep why for ``drift`` to say."""
        await self.set_meta(conn, SNAPSHOT_KEY, None)
        await self.set_meta(conn, STALE_KEY, f"{why} at {now():%Y-%m-%d %H:%M:%S} UTC")

    async def stored_snapshot(self, conn: AsyncConnection) -> Snapshot | None:
        """The stored snapshot, None when there is none. Only reads."""
        text = await self.get_meta(conn, SNAPSHOT_KEY)
        if text is None:
            stale = await self.get_meta(conn, STALE_KEY)
            if stale is not None:
                raise NoSnapshot(
                    f"the stored schema snapshot was dropped because {stale}, so it no longer "
                    "matched the history; run 'rung drift --replay' (the next upgrade or "
                    "downgrade that changes something stores a new one)"
                )
            return None
        try:
            return Snapshot.from_json(text)
        except ValueError as exc:
            raise NoSnapshot(
                f"the schema snapshot stored in {self.meta.name!r} cannot be read ({exc}); "
                "run 'rung drift --replay' (the next upgrade or downgrade that changes "
                "something stores a new one)"
            ) from exc


_histories: dict[tuple[str, str], History] = {}  # by table and dialect name: a few


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def journal_text(statements: Sequence[Statement], in_flight: Statement | None = None) -> str | None:
    """The journal column: the statements kept, then the one in flight, marked as such."""
    items: list[dict[str, object]] = [
        {"sql": s.sql[:MAX_SQL_CHARS], "params": s.params, "ms": s.duration_ms} for s in statements
    ]
    if in_flight is not None:
        items.append({"sql": in_flight.sql[:MAX_SQL_CHARS], "params": in_flight.params})
        items[-1]["in_flight"] = True
    return json.dumps(items) if items else None


def _record(row: sa.Row[tuple[object, ...]]) -> Record:
    m = row._mapping
    journal = m["journal"]
    items = json.loads(journal or "[]")
    in_flight = None
    if items and items[-1].get("in_flight"):
        last = items.pop()
        in_flight = Statement(last["sql"], last.get("params"), 0.0)
    statements = tuple(Statement(item["sql"], item.get("params"), item["ms"]) for item in items)
    applied_at = m["applied_at"]
    if isinstance(applied_at, datetime) and applied_at.tzinfo is None:
        applied_at = applied_at.replace(tzinfo=timezone.utc)
    return Record(
        name=m["name"],
        checksum=m["checksum"],
        state=m["state"],
        applied_at=applied_at,
        duration_ms=m["duration_ms"],
        direction=m["direction"],
        error=m["error"],
        statements=statements,
        in_flight=in_flight,
        untouched=m["state"] == "running" and journal == NOTHING_SENT,
    )


def _lost(exc: sa.exc.DBAPIError) -> bool:
    return bool(exc.connection_invalidated)


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:200]
