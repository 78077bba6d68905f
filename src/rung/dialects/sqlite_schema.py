"""SQLite's schema reader: the inspector (its PRAGMAs run in-process, so reading table by
table costs little), with two corrections from SQLite's own catalog.

Column types are the declared text (``PRAGMA table_xinfo``), upper-cased: SQLAlchemy maps
names it does not know to a type affinity, which would hide a change from one unknown type
to another. Indexes on expressions, which the inspector skips, come from ``sqlite_master``.
"""

from __future__ import annotations

import dataclasses
import warnings

import sqlalchemy as sa

from rung.dialects.reflection import read_with_inspector, squeeze
from rung.schema import Index, Snapshot, Table

_INDEXES = sa.text(
    "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
)


def read(conn: sa.Connection) -> Snapshot:
    with warnings.catch_warnings():  # read below instead
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        found = read_with_inspector(conn)
    indexes: dict[str, list[Index]] = {}
    for name, table, sql in conn.execute(_INDEXES):
        indexes.setdefault(table, []).append(_index(name, sql))
    return dataclasses.replace(
        found, tables=tuple(_corrected(conn, t, indexes.get(t.name, [])) for t in found.tables)
    )


def _corrected(conn: sa.Connection, table: Table, indexes: list[Index]) -> Table:
    quoted = conn.dialect.identifier_preparer.quote(table.name)
    declared = {
        row[1]: squeeze(row[2]).upper()
        for row in conn.exec_driver_sql(f"PRAGMA table_xinfo({quoted})")
    }
    known = {i.name for i in table.indexes}
    return dataclasses.replace(
        table,
        columns=tuple(
            dataclasses.replace(c, type=declared.get(c.name) or c.type) for c in table.columns
        ),
        indexes=table.indexes + tuple(i for i in indexes if i.name not in known),
    )


def _index(name: str, sql: str) -> Index:
    """An index from its CREATE INDEX text: the parenthesised part after ON is its key."""
    start = sql.index("(")
    depth = 0
    for end in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            break
    unique = sql.lstrip().upper().startswith("CREATE UNIQUE")
    return Index(name, (squeeze(sql[start + 1 : end]),), unique)
