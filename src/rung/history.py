"""The tracking table, defined once as SQLAlchemy Core tables: no SQL strings per dialect.

``<table>`` holds one row per applied (or failed, or interrupted) migration with its
checksum, timing and journal. ``<table>_meta`` holds the table format version, so the
layout can evolve, and the schema snapshot the last run left behind (for ``drift``).
Reading never writes: on a database rung has never touched, the history is empty.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rung.dialects import mysql
from rung.errors import HistoryError, UsageError
from rung.plan import Record, Statement

FORMAT_VERSION = 1
DEFAULT_TABLE = "rung_migrations"
MAX_SQL_CHARS = 20_000  # per journaled statement; a bulk INSERT is kept in part, and says so


_LongText = sa.Text().with_variant(mysql.LONG_TEXT, "mysql", "mariadb")
_Moment = sa.DateTime().with_variant(mysql.MICROSECONDS, "mysql", "mariadb")


class History:
    """The tracking table named ``table`` (quoted as needed) and its meta table."""

    def __init__(self, table: str = DEFAULT_TABLE) -> None:
        if not table or len(table) > 58 or "\x00" in table or table != table.strip():
            raise UsageError(
                f"tracking table name {table!r} must be 1 to 58 characters without NUL or "
                "leading/trailing spaces; pass another --table"
            )
        self.name = table
        metadata = sa.MetaData()
        self.table = sa.Table(
            table,
            metadata,
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("checksum", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("direction", sa.String(4), nullable=False),
            sa.Column("applied_at", _Moment, nullable=False),
            sa.Column("duration_ms", sa.Float, nullable=False),
            sa.Column("error", _LongText),
            sa.Column("journal", _LongText),
        )
        self.meta = sa.Table(
            f"{table}_meta",
            metadata,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", _LongText, nullable=False),
        )
        self._select = sa.select(self.table)
        self._insert = self.table.insert()  # built once: a long run records many rows
        self._delete = self.table.delete().where(self.table.c.name == sa.bindparam("row"))
        # What planning needs: the journals of applied migrations stay in the database (a
        # no-op upgrade over a long history would otherwise fetch and parse every one).
        unfinished = sa.case((self.table.c.state != "applied", self.table.c.journal))
        self._select_for_plan = sa.select(
            *(c for c in self.table.c if c.name != "journal"), unfinished.label("journal")
        )

    async def read(self, conn: AsyncConnection, *, journals: bool = True) -> list[Record]:
        """Every row, or [] where the table does not exist yet. Never writes. Without
        ``journals``, only failed and running rows carry their statements."""
        query = self._select if journals else self._select_for_plan
        for attempt in range(2):  # the table may appear between a failed read and the check
            try:
                rows = (await conn.execute(query)).all()
                break
            except (ValueError, TypeError) as exc:  # a value SQLAlchemy cannot convert
                raise self._unreadable(exc) from exc
            except sa.exc.DBAPIError as exc:
                await conn.rollback()
                if not await conn.run_sync(lambda c: sa.inspect(c).has_table(self.name)):
                    return []
                if attempt:
                    raise HistoryError(
                        f"table {self.name!r} exists but is not a rung history "
                        f"({_first_line(exc)}); rename that table or give rung another one "
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
            f"{row} cannot be read ({type(exc).__name__}: {_first_line(exc)}); it was changed "
            "by hand or by another tool: restore or delete that row"
        )

    async def ensure(self, conn: AsyncConnection) -> None:
        """Create the tables on first write; refuse a format this rung does not know."""
        exists = await conn.run_sync(lambda c: sa.inspect(c).has_table(self.name))
        if not exists:
            await conn.run_sync(self.table.metadata.create_all)
            await conn.execute(self.meta.insert().values(key="format", value=str(FORMAT_VERSION)))
            return
        found = await self.get_meta(conn, "format")
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

    async def get_meta(self, conn: AsyncConnection, key: str) -> str | None:
        try:
            query = sa.select(self.meta.c.value).where(self.meta.c.key == key)
            return (await conn.execute(query)).scalar_one_or_none()
        except sa.exc.DBAPIError:
            return None

    async def set_meta(self, conn: AsyncConnection, key: str, value: str | None) -> None:
        """Store ``value`` under ``key``; None removes the key."""
        await conn.execute(self.meta.delete().where(self.meta.c.key == key))
        if value is not None:
            await conn.execute(self.meta.insert().values(key=key, value=value))

    async def write(
        self,
        conn: AsyncConnection,
        name: str,
        checksum: str,
        *,
        state: str,
        direction: str = "up",
        duration_ms: float = 0.0,
        error: str | None = None,
        statements: Sequence[Statement] = (),
        new: bool = False,
    ) -> None:
        """Insert or replace the row of ``name``; ``new``: the caller knows there is none."""
        if not new:
            await self.remove(conn, name)
        row = {
            "name": name,
            "checksum": checksum,
            "state": state,
            "direction": direction,
            "applied_at": datetime.now(timezone.utc).replace(tzinfo=None),
            "duration_ms": round(duration_ms, 3),
            "error": error,
            "journal": _journal(statements),
        }
        await conn.execute(self._insert, row)

    async def mark(
        self,
        conn: AsyncConnection,
        name: str,
        checksum: str,
        *,
        state: str,
        direction: str,
        exists: bool | None = None,
    ) -> None:
        """Set the state of ``name``, keeping its timing and journal if it has a row
        (``exists``: whether it has, when the caller knows)."""
        row = self.table.c.name == name
        if exists is None:
            exists = bool(await conn.scalar(sa.select(sa.func.count()).where(row)))
        if exists:
            update = self.table.update().where(row)
            await conn.execute(update.values(checksum=checksum, state=state, direction=direction))
        else:
            await self.write(conn, name, checksum, state=state, direction=direction)

    async def accept(self, conn: AsyncConnection, name: str, checksum: str) -> None:
        """Mark ``name`` applied with ``checksum``, keeping its timing and journal if recorded."""
        await self.mark(conn, name, checksum, state="applied", direction="up")

    def journal_update(self, name: str, statements: Sequence[Statement]) -> sa.Update:
        """The statement that replaces the journal of ``name``'s row."""
        journal = _journal(statements)
        return self.table.update().where(self.table.c.name == name).values(journal=journal)

    async def remove(self, conn: AsyncConnection, name: str) -> None:
        await conn.execute(self._delete, {"row": name})


def _journal(statements: Sequence[Statement]) -> str | None:
    if not statements:
        return None
    return json.dumps(
        [
            {"sql": s.sql[:MAX_SQL_CHARS], "params": s.params, "ms": s.duration_ms}
            for s in statements
        ]
    )


def _record(row: sa.Row[tuple[object, ...]]) -> Record:
    m = row._mapping
    statements = tuple(
        Statement(item["sql"], item.get("params"), item["ms"])
        for item in json.loads(m["journal"] or "[]")
    )
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
    )


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc)) or type(exc).__name__
    return text.strip().splitlines()[0][:200]
