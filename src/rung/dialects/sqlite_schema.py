"""SQLite's schema reader: four queries, however many tables.

SQLite's table-valued PRAGMA functions joined with ``sqlite_master`` read the columns
(``pragma_table_xinfo``), indexes (``pragma_index_list``, ``pragma_index_info``) and foreign
keys (``pragma_foreign_key_list``) of every table at once; through aiosqlite each statement
is a thread round trip, so reading table by table (the inspector) took seconds on a
database of a thousand tables. The ``CREATE`` text in ``sqlite_master`` gives the rest:
CHECK constraints, constraint names, generated columns' expressions, expression indexes'
keys and views.

Normalised as the inspector-based reader did: a column's type is its declared text,
upper-cased (an unknown type stays itself instead of becoming its affinity; no type reads
``UNKNOWN``), defaults and checks are squeezed and unwrapped, ``NO ACTION`` is None. The
indexes behind UNIQUE constraints and primary keys are reported as those; an index on
expressions has one key, its text; a partial index's WHERE is not read.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from rung.dialects.reflection import action, drop_in_order, squeeze, unwrap
from rung.schema import Check, Column, ForeignKey, Index, Snapshot, Table, Unique, View

_OWN = "m.name NOT LIKE 'sqlite~_%' ESCAPE '~'"  # SQLite's internal tables are not the schema
_MASTER = f"SELECT m.type, m.name, m.sql FROM sqlite_master m WHERE {_OWN}"
_TABLES = f"sqlite_master m JOIN {{}} WHERE m.type = 'table' AND {_OWN}"
_COLUMNS = "SELECT m.name, p.name, p.type, p.[notnull], p.dflt_value, p.pk, p.hidden FROM " + (
    _TABLES.format("pragma_table_xinfo(m.name, 'main') p")
)
_INDEXES = (
    "SELECT m.name, i.name, i.[unique], i.origin, k.name FROM "
    + _TABLES.format("pragma_index_list(m.name, 'main') i JOIN pragma_index_info(i.name, 'main') k")
    + " ORDER BY i.name, k.seqno"
)
_FOREIGN_KEYS = "SELECT m.name, f.id, f.[table], f.[from], f.[to], f.on_delete, f.on_update " + (
    "FROM " + _TABLES.format("pragma_foreign_key_list(m.name, 'main') f") + " ORDER BY f.id, f.seq"
)

# An identifier, quoted in any of SQLite's four ways, or bare.
_NAME = r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'|`(?:[^`]|``)*`|\[[^\]]*\]|[\w$]+'
_CONSTRAINT = re.compile(
    rf"(?<![\w$])(?:CONSTRAINT\s+({_NAME})\s+)?(CHECK|UNIQUE|FOREIGN\s+KEY)\s*\(", re.I
)
_REFERENCES = re.compile(rf"\s*REFERENCES\s+({_NAME})", re.I)
_INDEX_KEY = re.compile(rf"\sON\s+(?:{_NAME})\s*\(", re.I)
_PAREN_OR_QUOTED = re.compile(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'|`(?:[^`]|``)*`|\[[^\]]*\]|[()]')


def read(conn: sa.Connection) -> Snapshot:
    def rows(query: str) -> list[Any]:
        return list(conn.exec_driver_sql(query))

    ddl = {(kind, name): sql or "" for kind, name, sql in rows(_MASTER)}
    columns: dict[str, list[Column]] = {}
    keys: dict[str, list[tuple[int, str]]] = {}
    for table, name, type_, notnull, default, pk, hidden in rows(_COLUMNS):
        if hidden == 1:  # a virtual table's hidden column
            continue
        columns.setdefault(table, []).append(
            Column(
                name=name,
                type=squeeze(type_).upper() or "UNKNOWN",
                nullable=not notnull,
                default=None if default is None else unwrap(squeeze(str(default))),
                generated=_generated(ddl[("table", table)], name) if hidden else None,
            )
        )
        if pk:
            keys.setdefault(table, []).append((pk, name))
    primary_keys = {table: [name for _, name in sorted(pk)] for table, pk in keys.items()}
    indexes: dict[str, dict[str, tuple[bool, str, list[str | None]]]] = {}
    for table, index, unique, origin, column in rows(_INDEXES):
        found = indexes.setdefault(table, {}).setdefault(index, (bool(unique), origin, []))
        found[2].append(column)
    fks: dict[str, dict[int, tuple[str, list[str], list[str], str, str]]] = {}
    for table, fk_id, referred, column, to, on_delete, on_update in rows(_FOREIGN_KEYS):
        # A key naming no columns of the referred table refers to its primary key.
        cols = [] if to else list(primary_keys.get(referred, []))
        fk = fks.setdefault(table, {}).setdefault(fk_id, (referred, [], cols, on_delete, on_update))
        fk[1].append(column)
        if to:
            fk[2].append(to)
    return Snapshot(
        dialect=conn.dialect.name,
        tables=tuple(
            _table(name, tuple(cols), primary_keys, indexes, fks, ddl)
            for name, cols in columns.items()
        ),
        views=tuple(
            View(name, squeeze(sql)) for (kind, name), sql in ddl.items() if kind == "view"
        ),
    )


def _table(
    name: str,
    columns: tuple[Column, ...],
    primary_keys: dict[str, list[str]],
    indexes: dict[str, dict[str, tuple[bool, str, list[str | None]]]],
    fks: dict[str, dict[int, tuple[str, list[str], list[str], str, str]]],
    ddl: dict[tuple[str, str], str],
) -> Table:
    checks, unique_names, fk_names = _constraints(ddl[("table", name)])
    own, uniques = [], []
    for index, (unique, origin, keys) in indexes.get(name, {}).items():
        if origin == "u":  # the index of a UNIQUE constraint
            cols = tuple(str(k) for k in keys)
            uniques.append(Unique(cols, unique_names.get(cols)))
        elif origin == "c" and None in keys:  # on expressions: its key is the text
            own.append(_expression_index(index, ddl[("index", index)]))
        elif origin == "c":
            own.append(Index(index, tuple(squeeze(str(k)) for k in keys), unique))
    return Table(
        name=name,
        columns=columns,
        primary_key=tuple(primary_keys.get(name, ())),
        indexes=tuple(own),
        foreign_keys=tuple(
            ForeignKey(
                tuple(cols),
                referred,
                tuple(referred_cols),
                action(on_delete),
                action(on_update),
                fk_names.get((tuple(cols), referred)),
            )
            for referred, cols, referred_cols, on_delete, on_update in fks.get(name, {}).values()
        ),
        uniques=tuple(uniques),
        checks=tuple(checks),
    )


def _constraints(
    sql: str,
) -> tuple[list[Check], dict[tuple[str, ...], str], dict[tuple[tuple[str, ...], str], str]]:
    """A CREATE TABLE's CHECK constraints, and the names of its UNIQUE and FOREIGN KEY ones
    by their columns (and referred table)."""
    checks: list[Check] = []
    uniques: dict[tuple[str, ...], str] = {}
    fks: dict[tuple[tuple[str, ...], str], str] = {}
    for match in _CONSTRAINT.finditer(sql):
        close = _closing(sql, match.end() - 1)
        if close is None:
            continue
        name = _unquote(match[1]) if match[1] else None
        body, kind = sql[match.end() : close], match[2].upper()
        if kind == "CHECK":
            checks.append(Check(unwrap(squeeze(body)), name))
        elif name and kind == "UNIQUE":
            uniques.setdefault(_column_names(body), name)
        elif name and (referred := _REFERENCES.match(sql, close + 1)):
            fks.setdefault((_column_names(body), _unquote(referred[1])), name)
    return checks, uniques, fks


def _generated(sql: str, column: str) -> str:
    """A generated column's expression, from its definition in the CREATE TABLE text."""
    at = rf"(?<![\w$]){re.escape(column)}(?![\w$])[^,]*?\s(?:GENERATED\s+ALWAYS\s+)?AS\s*\("
    match = re.search(at, sql, re.I)
    close = _closing(sql, match.end() - 1) if match else None
    return "" if match is None or close is None else unwrap(squeeze(sql[match.end() : close]))


def _expression_index(name: str, sql: str) -> Index:
    """An index from its CREATE INDEX text: the parenthesised part after ON is its key."""
    match = _INDEX_KEY.search(sql)
    close = _closing(sql, match.end() - 1) if match else None
    key = sql[match.end() : close] if match and close else sql
    return Index(name, (squeeze(key),), sql.lstrip().upper().startswith("CREATE UNIQUE"))


def _closing(sql: str, start: int) -> int | None:
    """Where the parenthesis opened at ``start`` closes, quotes skipped; None if it never does."""
    depth = 0
    for token in _PAREN_OR_QUOTED.finditer(sql, start):
        depth += {"(": 1, ")": -1}.get(token[0], 0)
        if depth == 0:
            return token.start()
    return None


def _column_names(text: str) -> tuple[str, ...]:
    """The columns of a constraint's column list (each item's first word, unquoted)."""
    return tuple(_unquote(m[1]) for m in re.finditer(rf"(?:^|,)\s*({_NAME})", text))


def _unquote(name: str) -> str:
    if name[0] == "[":
        return name[1:-1]
    if name[0] in "\"'`":
        return name[1:-1].replace(name[0] * 2, name[0])
    return name


_OBJECTS = (
    "SELECT upper(type), name FROM sqlite_master WHERE type IN ('view', 'table') "
    "AND name NOT LIKE 'sqlite~_%' ESCAPE '~' ORDER BY type = 'view' DESC, name"
)


def drop_everything(conn: sa.Connection) -> list[str]:
    found = [(kind, name) for kind, name in conn.exec_driver_sql(_OBJECTS)]
    conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")  # until the commit
    return drop_in_order(conn, found)
