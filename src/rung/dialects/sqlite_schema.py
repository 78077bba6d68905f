"""SQLite's schema reader and ``rung fresh``'s drop: four queries, however many tables.

SQLite's table-valued PRAGMA functions joined with ``sqlite_master`` read the columns
(``pragma_table_xinfo``), index keys (``pragma_index_list``, ``pragma_index_xinfo``) and
foreign keys (``pragma_foreign_key_list``) of every table at once; through aiosqlite each
statement is a thread round trip, so reading table by table took seconds on a database of
a thousand tables. The ``CREATE`` text in ``sqlite_master`` gives the rest, parsed by
``sqlite_ddl``: CHECK constraints, constraint names, collations, ``AUTOINCREMENT``,
generated columns, deferrable foreign keys, ``WITHOUT ROWID`` and ``STRICT``, partial
indexes' WHERE, expression indexes' keys, views and triggers.

Normalised: a column's type is its declared text, upper-cased (an unknown type stays itself,
never its affinity; no type declared reads as the empty text); defaults and checks are
squeezed and unwrapped; ``NO ACTION`` is None; a double-quoted plain identifier reads bare
(``ALTER TABLE ... RENAME`` quotes the names it rewrites, so a table rebuilt by the 12-step
procedure compares equal to the original). The indexes behind UNIQUE constraints and
primary keys are reported as those; an index key's collation only where it differs from
its column's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from rung.dialects import sqlite_ddl as ddl
from rung.dialects.reflection import action, drop_each, squeeze, unwrap
from rung.schema import Column, ForeignKey, Index, Snapshot, Table, Trigger, Unique, View

_OWN = "m.name NOT LIKE 'sqlite~_%' ESCAPE '~'"  # SQLite's internal tables are not the schema
_MASTER = f"SELECT m.type, m.name, m.tbl_name, m.sql FROM sqlite_master m WHERE {_OWN}"
_TABLES = f"sqlite_master m JOIN {{}} WHERE m.type = 'table' AND {_OWN}"
_COLUMNS = "SELECT m.name, p.name, p.type, p.[notnull], p.dflt_value, p.pk, p.hidden FROM " + (
    _TABLES.format("pragma_table_xinfo(m.name, 'main') p")
)
_INDEXES = (
    "SELECT m.name, i.name, i.[unique], i.origin, i.partial, k.name, k.[desc], k.coll FROM "
    + _TABLES.format(
        "pragma_index_list(m.name, 'main') i JOIN pragma_index_xinfo(i.name, 'main') k"
    )
    + " AND k.key = 1 ORDER BY i.name, k.seqno"
)
_FOREIGN_KEYS = "SELECT m.name, f.id, f.[table], f.[from], f.[to], f.on_delete, f.on_update " + (
    "FROM " + _TABLES.format("pragma_foreign_key_list(m.name, 'main') f") + " ORDER BY f.id, f.seq"
)
# An index's rows: unique, origin (c: CREATE INDEX, u: UNIQUE, pk), partial, and its keys.
_IndexRows = tuple[bool, str, bool, list[str | None]]
_DROPS = (
    "SELECT upper(type), name FROM sqlite_master WHERE type IN ('view', 'table') "
    "AND name NOT LIKE 'sqlite~_%' ESCAPE '~' ORDER BY type = 'view' DESC, name"
)


def read(conn: sa.Connection) -> Snapshot:
    def rows(query: str) -> list[Any]:
        return list(conn.exec_driver_sql(query))

    sql: dict[tuple[str, str], str] = {}
    triggers = []
    for kind, name, table, text in rows(_MASTER):
        sql[kind, name] = text or ""
        if kind == "trigger":
            triggers.append(Trigger(table, name, ddl.trigger_text(text or "")))
    parsed = {name: ddl.parse_table(text) for (kind, name), text in sql.items() if kind == "table"}
    columns: dict[str, list[Column]] = {}
    keys: dict[str, list[tuple[int, str]]] = {}
    for table, name, type_, notnull, default, pk, hidden in rows(_COLUMNS):
        if hidden == 1:  # a virtual table's hidden column
            continue
        found = parsed[table].columns.get(name, ddl.ColumnDdl())
        columns.setdefault(table, []).append(
            Column(
                name=name,
                type=squeeze(type_).upper(),  # '' where none was declared
                nullable=not notnull,
                default=None if default is None else unwrap(squeeze(str(default))),
                autoincrement=found.autoincrement,
                generated=found.generated if hidden else None,
                generated_kind={2: "VIRTUAL", 3: "STORED"}.get(hidden),
                collation=found.collation,
            )
        )
        if pk:
            keys.setdefault(table, []).append((pk, name))
    primary_keys = {table: [name for _, name in sorted(pk)] for table, pk in keys.items()}
    indexes: dict[str, dict[str, _IndexRows]] = {}
    for table, index, unique, origin, partial, column, desc, coll in rows(_INDEXES):
        rows_of: _IndexRows = (bool(unique), origin, bool(partial), [])
        indexes.setdefault(table, {}).setdefault(index, rows_of)[3].append(
            _key(column, desc, coll, parsed[table])
        )
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
            _table(name, tuple(cols), primary_keys, indexes, fks, parsed[name], sql)
            for name, cols in columns.items()
        ),
        views=tuple(
            View(name, ddl.bare(squeeze(text)))
            for (kind, name), text in sql.items()
            if kind == "view"
        ),
        triggers=tuple(triggers),
    )


def drop_everything(conn: sa.Connection) -> list[str]:
    """For ``rung fresh``: every view and table (a table's indexes and triggers go with it);
    foreign keys are checked at the commit, when nothing refers to anything any more."""
    quote = conn.dialect.identifier_preparer.quote
    found = [(kind, quote(name)) for kind, name in conn.exec_driver_sql(_DROPS)]
    conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    return drop_each(conn, found)


def _key(column: str | None, desc: int, collation: str, table: ddl.TableDdl) -> str | None:
    """An index key as written: the column, its collation where not the column's, DESC.
    None for an expression (its text is read from the CREATE INDEX)."""
    if column is None:
        return None
    declared = table.columns.get(column, ddl.ColumnDdl()).collation or "BINARY"
    key = column if collation.upper() == declared else f"{column} COLLATE {collation.upper()}"
    return f"{key} DESC" if desc else key


def _table(
    name: str,
    columns: tuple[Column, ...],
    primary_keys: dict[str, list[str]],
    indexes: dict[str, dict[str, _IndexRows]],
    fks: dict[str, dict[int, tuple[str, list[str], list[str], str, str]]],
    parsed: ddl.TableDdl,
    sql: dict[tuple[str, str], str],
) -> Table:
    own, uniques = [], []
    for index, (unique, origin, partial, keys) in indexes.get(name, {}).items():
        if origin == "u":  # the index of a UNIQUE constraint
            cols = tuple(str(k) for k in keys)
            uniques.append(Unique(cols, parsed.uniques.get(cols)))
        elif origin == "c":
            own.append(_index(index, unique, partial, keys, sql["index", index]))
    return Table(
        name=name,
        columns=columns,
        primary_key=tuple(primary_keys.get(name, ())),
        primary_key_name=parsed.primary_key_name,
        indexes=tuple(own),
        foreign_keys=tuple(
            ForeignKey(
                tuple(cols),
                referred,
                tuple(referred_cols),
                action(on_delete),
                action(on_update),
                *parsed.foreign_keys.get((tuple(cols), referred.lower()), (None, None)),
            )
            for referred, cols, referred_cols, on_delete, on_update in fks.get(name, {}).values()
        ),
        uniques=tuple(uniques),
        checks=tuple(parsed.checks),
        options=parsed.options,
    )


def _index(name: str, unique: bool, partial: bool, keys: list[str | None], sql: str) -> Index:
    """An index from the PRAGMAs' keys; an expression's key and a partial index's WHERE
    from its CREATE INDEX text."""
    if not partial and None not in keys:
        return Index(name, tuple(str(k) for k in keys), unique)
    written, where = ddl.parse_index(sql)
    columns = tuple(written) if None in keys else tuple(str(k) for k in keys)
    return Index(name, columns, unique, where=where)
